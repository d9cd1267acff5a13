"""Careless input: one line on stderr, status 2, no traceback, and nothing lost or left behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_corpus
from indexes import build_index
from indexes.build import lock_path, partial_dir
from starbucks_cli import main

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error:") and all(f in err for f in fragments), err
    return err


def test_non_utf8_query(built_index, capsys):
    query = b"caf\xe9 latte".decode("utf-8", "surrogateescape")  # what Python makes of a Latin-1 argv byte
    assert main(["-q", "search", str(built_index), query]) == 2
    one_line_error(capsys, "not valid UTF-8")


def test_non_utf8_query_in_a_real_process(built_index):
    p = subprocess.run([sys.executable.encode(), b"-m", b"starbucks_cli", b"-q", b"search",
                        str(built_index).encode(), b"caf\xe9"], capture_output=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and b"Traceback" not in p.stderr and b"UTF-8" in p.stderr


def test_out_under_a_file(tmp_path, corpus, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["-q", "index", str(corpus), "--out", str(tmp_path / "file" / "idx")]) == 2
    one_line_error(capsys, "is a file, not a folder")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a read-only place even for root")
def test_out_in_a_read_only_place(corpus, capsys):
    assert main(["-q", "index", str(corpus), "--out", "/proc/self/starbucks-idx"]) == 2
    one_line_error(capsys, "not writable")


def test_unwritable_results_and_runs(built_index, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    q = tmp_path / "q.tsv"
    q.write_text("1\tcoffee\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("1 0 d1 1\n")
    for flag in ("--output", "--runs"):
        assert main(["-q", "evaluate", str(built_index), "--topics", str(q), "--qrels", str(qrels),
                     flag, str(tmp_path / "file" / "out.json")]) == 2
        one_line_error(capsys, "is a file, not a folder")


def test_binary_corpus_names_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"_id": "a", "text": "fine"}\n\xff\xd8\xff\xe0\x00\x10JFIF' + bytes(range(256)))
    assert main(["-q", "index", str(corpus), "--out", str(tmp_path / "idx")]) == 2
    one_line_error(capsys, f"{corpus}:2:", "not UTF-8")
    assert not partial_dir(tmp_path / "idx").exists() and not lock_path(tmp_path / "idx").exists()


def test_binary_topics_and_qrels_name_file_and_line(tmp_path):
    from starbucks.errors import InputError
    from starbucks.topics import read_qrels, read_topics

    path = tmp_path / "q.tsv"
    path.write_bytes(b"1\tcoffee\n2\tcaf\xe9\n")
    with pytest.raises(InputError, match=r"q.tsv:2: not UTF-8"):
        read_topics(path)
    path.write_bytes(b"1 0 d1 1\n1 0 d\xe9 1\n")
    with pytest.raises(InputError, match=r"q.tsv:2: not UTF-8"):
        read_qrels(path)


@pytest.mark.parametrize("corpus_text", ["", "\n\n", '{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n'])
def test_a_build_that_fails_early_leaves_nothing(tmp_path, tiny_model, corpus_text):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(corpus_text)
    out = tmp_path / "idx"
    with pytest.raises(Exception):
        build_index(corpus, out, model=tiny_model, shortlist="1x8", rerank="4x48", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_a_failed_build_into_new_folders_leaves_none_of_them(tmp_path, tiny_model):
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(Exception, match="empty"):
        build_index(tmp_path / "corpus.jsonl", tmp_path / "a" / "b" / "idx", model=tiny_model, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_a_bad_irds_id_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["-q", "index", "irds:no-such-dataset/at-all", "--out", str(out), "--device", "cpu"]) == 2
    one_line_error(capsys, "no-such-dataset")
    assert list(tmp_path.iterdir()) == []


def test_two_builds_of_one_out_at_once(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 1500)
    out = tmp_path / "idx"
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    cmd = [sys.executable, "-m", "starbucks_cli", "-q", "index", str(corpus), "--out", str(out), "--model",
           str(tiny_model_dir), "--shortlist", "1x8", "--rerank", "4x48", "--chunk-size", "20", "--device", "cpu"]
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (partial_dir(out) / "chunks").is_dir():  # the first one is encoding, holding the lock
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # paused mid-build, holding the lock, however fast this machine is
    try:
        second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert "another build of" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert json.loads((out / "manifest.json").read_text())["num_docs"] == 1500
    assert not lock_path(out).exists() and not partial_dir(out).exists()


def test_qrels_of_another_collection_warn(built_index, tiny_model_dir, tmp_path, capsys):
    q = tmp_path / "q.tsv"
    q.write_text("1\tcoffee\n2\tjazz\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("1 0 elsewhere1 1\n1 0 d3 1\n2 0 elsewhere2 1\n2 0 elsewhere3 2\n")
    assert main(["-q", "evaluate", str(built_index), "--topics", str(q), "--qrels", str(qrels),
                 "--plan", "1x8:20", "--measures", "nDCG@10", "--model", str(tiny_model_dir)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "only 25% of the 4 relevant documents" in err
    assert "warnings.warn" not in err  # one plain line, no source line
