"""The ``starbucks`` command: its own package, flags wired to the library, checks before torch."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import starbucks_cli
from starbucks_cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, **kwargs):
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-m", "starbucks_cli", *args], capture_output=True, text=True,
                          env=env, cwd=kwargs.get("cwd", ROOT), timeout=300)


def torch_after(argv) -> tuple[int, bool, str]:
    """Run main(argv) in a fresh interpreter: (status, was torch imported, stderr)."""
    code = ("import sys\nfrom starbucks_cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\nsys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return p.returncode, "NO-TORCH" not in p.stdout, p.stderr


def test_the_cli_is_its_own_package_and_imports_training_plainly():
    source = Path(starbucks_cli.__file__).read_text()
    assert "except ImportError" not in source
    assert "from training import cli" in source
    assert "starbucks_cli:main" in (ROOT / "pyproject.toml").read_text()
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"index", "search", "evaluate", "bm25", "calibrate", "demo", "verify", "train", "merge"} <= names


@pytest.mark.parametrize("argv", [
    ["search", "no-such-index", "coffee"],
    ["index", "no-such-corpus.jsonl", "--out", "x"],
    ["evaluate", "starbucks/data/cacm", "--topics", "t", "--qrels", "q"],
    ["calibrate", "no-such-index", "--topics", "t", "--qrels", "q"],
    ["search", "idx", "q", "--threads", "0"],
    ["index", "starbucks/data/cacm", "--out", "x", "--model", "./no-such-model"],
    ["index", "starbucks/data/cacm", "--out", "starbucks/data"],  # exists, no --overwrite
    ["search", "idx", "q", "--budget", "-5"],
    ["search", "idx", "q", "--k", "0"],
    ["evaluate", "idx", "--topics", "t", "--qrels", "q", "--batch", "0"],
    ["index", "starbucks/data/cacm", "--out", "x", "--encoder", "tensorrt"],
    ["index", "starbucks/data/cacm", "--out", "x", "--device", "gpu7"],
])
def test_argument_errors_answer_before_torch_is_imported(argv):
    status, torch_loaded, err = torch_after(argv)
    assert status == 2, err
    assert not torch_loaded
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def parsed(*argv):
    return build_parser().parse_args(list(argv))


def test_encoder_threads_device_bm25_and_remeasure_flags():
    for cmd in (["index", "c", "--out", "o"], ["search", "i", "q"], ["demo"],
                ["evaluate", "i", "--topics", "t", "--qrels", "q"], ["calibrate", "i", "--topics", "t", "--qrels", "q"]):
        args = parsed(*cmd)
        assert (args.encoder, args.threads, args.device) == ("auto", None, "auto")
        args = parsed(*cmd, "--encoder", "onnx-int8", "--threads", "2", "--device", "cuda:1")
        assert (args.encoder, args.threads, args.device) == ("onnx-int8", 2, "cuda:1")
    assert parsed("index", "c", "--out", "o", "--bm25").bm25 is True
    assert parsed("index", "c", "--out", "o").bm25 is False
    assert parsed("calibrate", "i", "--topics", "t", "--qrels", "q", "--remeasure").remeasure is True


def test_flags_reach_the_library(monkeypatch, tmp_path, capsys):
    import indexes
    import indexes.build
    import retrieval.calibrate
    import starbucks_cli.common as common

    seen = {}

    def fake_build(corpus, out, **kw):
        seen["build"] = kw
        raise indexes.build.StarbucksError("stop here")

    monkeypatch.setattr(indexes, "build_index", fake_build)
    assert main(["-q", "index", "starbucks/data/cacm", "--out", str(tmp_path / "o"), "--encoder", "torch",
                 "--threads", "1", "--bm25", "--device", "cpu"]) == 2
    kw = seen["build"]
    assert (kw["encoder"], kw["threads"], kw["bm25"], kw["device"]) == ("torch", 1, True, "cpu")

    class FakeSearcher:
        def __init__(self, index, model=None, encoder="auto", threads=None, rerank_tier="mmap"):
            seen["searcher"] = (encoder, threads, rerank_tier)
            raise indexes.build.StarbucksError("stop here")

    monkeypatch.setattr("retrieval.Searcher", FakeSearcher)
    monkeypatch.setattr("indexes.Index", lambda path, verify=False: seen.setdefault("verify", verify))
    monkeypatch.setattr(common, "load_model", lambda args, index=None: None)
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "manifest.json").write_text("{}")
    assert main(["-q", "search", str(tmp_path / "idx"), "q", "--encoder", "onnx", "--threads", "1", "--verify"]) == 2
    assert seen["searcher"] == ("onnx", 1, "mmap") and seen["verify"] is True
    (tmp_path / "topics.tsv").write_text("q1\tcoffee\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    for command in (["search", str(tmp_path / "idx"), "q"],
                    ["evaluate", str(tmp_path / "idx"), "--topics", str(tmp_path / "topics.tsv"),
                     "--qrels", str(tmp_path / "qrels.txt")]):
        assert main(["-q", *command, "--rerank-tier", "int8"]) == 2
        assert seen["searcher"][2] == "int8"
        seen.pop("searcher")


def test_help_defaults_match_the_readme():
    readme = (ROOT / "README.md").read_text()
    index_help = " ".join(build_parser()._subparsers._group_actions[0].choices["index"].format_help().split())
    for size_list in ("3x64,6x32,6x64", "4x128,5x256,6x384"):
        assert size_list in index_help
        assert size_list.replace(",", " ") in " ".join(readme.split())


def test_search_json_says_whether_a_query_stopped_early(built_index, tiny_model_dir, capsys):
    assert main(["-q", "search", str(built_index), "coffee", "--k", "3", "--plan", "1x8:20,4x48:3", "--json",
                 "--model", str(tiny_model_dir)]) == 0
    hit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert hit["stopped_early"] is False and len(hit["hits"]) == 3


def test_device_line_says_which_device(built_index, tiny_model_dir, capsys):
    assert main(["search", str(built_index), "coffee", "--k", "2", "--plan", "1x8:20", "--device", "cpu",
                 "--model", str(tiny_model_dir)]) == 0
    assert re.search(r"^device: cpu \(CPU; --device\)$", capsys.readouterr().err, re.M)


def test_python_m_retrieval_cli_still_works():
    p = subprocess.run([sys.executable, "-m", "retrieval.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and "verify" in p.stdout
