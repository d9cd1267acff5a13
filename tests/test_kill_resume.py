"""``kill -9`` a real build process, rerun the same command: the index equals a clean build."""
import os
import signal
import subprocess
import sys
import time

from indexes import build_index
from indexes.build import partial_dir

from conftest import write_corpus


def index_command(corpus, out, model_dir):
    return [sys.executable, "-m", "starbucks_cli", "-q", "index", str(corpus), "--out", str(out),
            "--model", str(model_dir), "--shortlist", "1x8", "--rerank", "2x16,4x48", "--chunk-size", "40"]


def wait_for(predicate, process, timeout=300.0) -> bool:
    """Poll until ``predicate()``; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("build made no progress")


def contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_9_during_encoding_and_assembly_then_resume(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 2400)
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    clean = build_index(corpus, tmp_path / "clean", model=str(tiny_model_dir), shortlist="1x8",
                        rerank="2x16,4x48", chunk_size=40, progress=False)

    out = tmp_path / "idx"
    chunks = partial_dir(out) / "chunks"
    killed = []
    for ready in (lambda: len(list(chunks.glob("*.npz"))) >= 5,
                  lambda: (partial_dir(out) / "final").exists()):
        process = subprocess.Popen(index_command(corpus, out, tiny_model_dir), env=env)
        if wait_for(ready, process):
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed.append(len(list(chunks.glob("*.npz"))))
            assert not out.exists()  # no half-written index is ever visible
        else:
            assert process.wait() == 0
    assert killed, "the build finished before it could be killed"
    assert 5 <= killed[0] < 60
    subprocess.run(index_command(corpus, out, tiny_model_dir), check=True, env=env)
    assert contents(out) == contents(clean)
    assert not partial_dir(out).exists()
