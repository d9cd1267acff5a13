"""What every subcommand shares: its common options, and checks of arguments and paths that run
before torch is imported or a model is loaded, so a mistake costs milliseconds, not seconds."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from starbucks.errors import InputError, StarbucksError

ENCODERS = ("auto", "torch", "onnx", "onnx-int8")  # as starbucks.encoder.ENCODERS (which imports torch)


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import argparse

    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: choose auto, cpu, cuda or cuda:N")


def add_model_args(p, index_built: bool = True) -> None:
    """--model, --encoder, --threads and --device: how texts are encoded."""
    default = "the one that built the index" if index_built else "the shipped model"
    p.add_argument("--model", help=f"model folder or hub id (default: {default})")
    p.add_argument("--encoder", choices=ENCODERS, default="auto",
                   help="encoder implementation: torch, ONNX Runtime, or ONNX with int8 weights (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads for torch, FAISS and ONNX Runtime (default: every core this process may use)")
    p.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                   help="cpu, cuda or cuda:N for encoding (default: auto, a GPU when torch sees one)")


def positive_float(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, not {text}")
    return value


def check_model_arg(args) -> None:
    """A --model that names a path must be a folder (a hub id is checked when it loads)."""
    model = getattr(args, "model", None)
    if model and (Path(model).exists() or model.startswith((".", "/", "~"))) and not Path(model).expanduser().is_dir():
        raise InputError("not a model folder", model)


def check_index_args(args) -> None:
    """``args.index`` is an index folder, ``--model`` (if given) can be a model and ``--rerank-tier``
    (where the command has it) names a tier."""
    check_index_dir(args.index)
    check_model_arg(args)
    from starbucks.tiers import parse_tier

    parse_tier(getattr(args, "rerank_tier", "mmap"))


def add_rerank_tier_arg(p) -> None:
    p.add_argument("--rerank-tier", default="mmap", metavar="TIER",
                   help="where the rerank vectors live while rescoring: mmap (the memory-mapped files), float16 "
                        "(copied into RAM) or int8 (8-bit codes per dimension in RAM, half of float16's bytes; "
                        "scores shift slightly); float16 and int8 may name the sizes they hold, e.g. int8:6x384; "
                        "residual:SIZE holds, for a size with an IVF-PQ shortlist, what its codes leave out, "
                        "for the rerank right after that shortlist (default: %(default)s)")


def add_verify_arg(p) -> None:
    p.add_argument("--verify", action="store_true",
                   help="check every index file's SHA-256 against the manifest before use (reads the whole index)")


def check_text_arg(text: str, what: str) -> str:
    """Command-line text must be valid UTF-8 (Python keeps undecodable bytes as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise StarbucksError(f"{what} {shown!r} is not valid UTF-8 text") from None
    return text


def check_index_dir(path: Path) -> None:
    """An index folder with a manifest; read without importing the index code."""
    if not path.is_dir():
        raise InputError("no such index folder", path)
    if not (path / "manifest.json").is_file():
        hint = " (an unfinished build? rerun the same index command to resume)" \
            if path.with_name(path.name + ".partial").exists() else ""
        raise InputError(f"not an index: no manifest.json{hint}", path)


def check_input(spec, what: str) -> None:
    """A topics, qrels or corpus argument: an irds: id, or an existing file or folder."""
    from starbucks.corpus import resolve_corpus

    text = str(spec)
    if what == "corpus":
        resolve_corpus(spec)  # names the corpus.jsonl a folder lacks, and the irds: form
    elif not text.startswith("irds:") and not Path(spec).exists():
        raise InputError(f"no such file ({what})", spec)


def check_writable_file(path: Path, what: str) -> None:
    """A file we will write later: its folder exists or can be made, and can be written."""
    if path.is_dir():
        raise InputError(f"{what} is a folder, expected a file name", path)
    check_writable_dir(path.parent, what)


def check_writable_dir(path: Path, what: str) -> None:
    """A folder we will create or write into: every existing ancestor is a folder we can write in.

    Writes a temporary file into the nearest existing ancestor (and removes it), which also
    catches read-only file systems and a superuser's view of read-only folders.
    """
    path = Path(os.path.abspath(path))
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {what} here: {ancestor} is a file, not a folder", path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".starbucks-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write {what} here: {ancestor} is not writable ({e.strerror})", path) from None


def index_model_name(index: Path) -> str | None:
    """The model recorded in an index's manifest (None: the shipped default)."""
    try:
        name = json.loads((index / "manifest.json").read_text()).get("model_name")
    except (OSError, ValueError):
        return None
    return None if name in (None, "default") else name


def pick_device(requested: str, quiet: bool = False) -> str:
    """The torch device to encode on; says which one was picked."""
    import torch

    if requested == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        how = "auto"
    else:
        device = requested
        how = "--device"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise StarbucksError(f"--device {device}: torch sees no CUDA GPU (is the CUDA build of torch installed?)")
            number = int(device.partition(":")[2] or 0)
            if number >= torch.cuda.device_count():
                raise StarbucksError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s)")
    if not quiet:
        name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
        print(f"device: {device} ({name}; {how})", file=sys.stderr)
    return device


def load_model(args, index: Path | None = None):
    """The model on the picked device: --model, else the index's model, else the default."""
    from starbucks.model import StarbucksModel

    device = pick_device(args.device, args.quiet)
    name = args.model if args.model else (index_model_name(index) if index is not None else None)
    return StarbucksModel.load(name, device=device)


def open_searcher(args, index: Path):
    """A Searcher over ``index`` with the options of add_model_args (and --verify where present)."""
    from indexes import Index
    from retrieval import Searcher

    opened = Index(index, verify=getattr(args, "verify", False))
    return Searcher(opened, model=load_model(args, index), encoder=args.encoder, threads=args.threads,
                    rerank_tier=getattr(args, "rerank_tier", "mmap"))


def plain_warnings() -> None:
    """Print warnings as one line, ``warning: message``, without the source line that raised them."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
