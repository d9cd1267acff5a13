"""Streaming corpus readers: BEIR folders, JSONL, TSV and ``ir_datasets`` ids.

A corpus is never loaded whole: every reader yields one :class:`Doc` at a time,
with the line it came from so errors can point at it.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Iterator, NamedTuple

from starbucks.errors import InputError

IRDS_PREFIX = "irds:"


class Doc(NamedTuple):
    docid: str
    text: str
    line: int  # 1-based line in the source file (0 for ir_datasets)


def open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly gzipped) UTF-8 text file, with a clear error if it is missing."""
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path) from None


def check_docid(docid: object, path: object, line: int) -> str:
    if docid is None:
        raise InputError("document has no id ('_id' or 'id')", path, line)
    docid = str(docid)
    if not docid.strip():
        raise InputError("empty document id", path, line)
    if any(c.isspace() for c in docid):
        raise InputError(f"document id {docid!r} contains whitespace", path, line)
    return docid


def resolve_corpus(spec: str | Path) -> str | Path:
    """A path to a corpus file (a BEIR folder resolves to its corpus.jsonl), or an irds id."""
    text = str(spec)
    if text.startswith(IRDS_PREFIX):
        return text
    path = Path(spec)
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        raise InputError("folder has no corpus.jsonl (expected a BEIR folder)", path)
    if not path.exists():
        raise InputError(f"no such file (for an ir_datasets corpus write {IRDS_PREFIX}<id>)", path)
    return path


def iter_corpus(spec: str | Path) -> Iterator[Doc]:
    """Yield every document of a corpus in order, validating as it goes."""
    source = resolve_corpus(spec)
    if isinstance(source, str):
        yield from _iter_irds(source[len(IRDS_PREFIX):])
        return
    name = source.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        yield from _iter_jsonl(source)
    elif name.endswith((".tsv", ".txt")):
        yield from _iter_tsv(source)
    else:
        raise InputError("unknown corpus format: expected .jsonl or .tsv", source)


def decode_line(raw: bytes, path: object, line: int) -> str:
    """One line of a text file as str; bytes that are not UTF-8 are an error naming the line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start + 1} of the line; a binary or other-encoding file?)",
                         path, line) from None


def decode_text(data: bytes, path: object) -> str:
    """A whole text file as str; bytes that are not UTF-8 are an error naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError("not UTF-8 text (a binary or other-encoding file?)", path, line) from None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line of a (possibly gzipped) UTF-8 file."""
    with open_text(path) as f:
        for n, raw in enumerate(f.buffer, 1):
            yield n, decode_line(raw, path, n)


def count_docs(spec: str | Path) -> int | None:
    """The number of documents, cheaply where possible (for progress bars)."""
    source = resolve_corpus(spec)
    if isinstance(source, str):
        dataset = _irds(source[len(IRDS_PREFIX):])
        try:  # known once ir_datasets has built its docstore, or from its published metadata
            return dataset.docs_count() or dataset.docs_metadata().get("count")
        except (AttributeError, KeyError, NotImplementedError, OSError):
            return None
    with open_text(source) as f:
        return sum(1 for line in f.buffer if line.strip())


def _doc(docid: object, title: str, text: str, path, line: int) -> Doc:
    """A document; an empty one (no title, no text, as Cranfield's 471 and 995) keeps text "",
    and the indexer decides what to do with it."""
    docid = check_docid(docid, path, line)
    return Doc(docid, f"{title or ''} {text or ''}".strip(), line)


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file, rejecting anything else."""
    for n, raw in read_lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg})", path, n) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", path, n)
        yield n, obj


def _iter_jsonl(path: Path) -> Iterator[Doc]:
    for n, obj in iter_json_objects(path):
        docid = obj.get("_id", obj.get("id", obj.get("docid")))
        title, text = obj.get("title") or "", obj.get("text", obj.get("contents"))
        if text is None:
            raise InputError("document has no 'text'", path, n)
        if not isinstance(text, str) or not isinstance(title, str):
            raise InputError("'title' and 'text' must be strings", path, n)
        yield _doc(docid, title, text, path, n)


def _iter_tsv(path: Path) -> Iterator[Doc]:
    for n, raw in read_lines(path):
        raw = raw.rstrip("\r\n")
        if not raw.strip():
            continue
        parts = raw.split("\t")
        if len(parts) != 2:
            raise InputError(f"expected 2 tab-separated columns (id, text), found {len(parts)}", path, n)
        yield _doc(parts[0], "", parts[1], path, n)


def _irds(dataset_id: str):
    try:
        import ir_datasets
    except ImportError:
        raise InputError("ir_datasets is not installed", dataset_id) from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise InputError("unknown ir_datasets id", dataset_id) from None


def _iter_irds(dataset_id: str) -> Iterator[Doc]:
    dataset = _irds(dataset_id)
    if not dataset.has_docs():
        raise InputError("this ir_datasets id has no documents", dataset_id)
    for n, doc in enumerate(dataset.docs_iter(), 1):
        title = getattr(doc, "title", "") or ""
        text = getattr(doc, "text", None) or getattr(doc, "body", "") or ""
        yield _doc(doc.doc_id, title, text, dataset_id, n)
