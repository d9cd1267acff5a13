"""Honest output: run files with real scores and a telling tag, one file per row, plain warnings,
the index summary, and checksums that catch a file changed in place."""
import shutil

import numpy as np
import pytest

from retrieval.evaluate import run_scores, write_trec
from starbucks_cli import main


@pytest.fixture
def judged(tmp_path):
    q = tmp_path / "q.tsv"
    q.write_text("1\tcoffee roasting\n2\tjazz harmony\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("1 0 d1 1\n2 0 d2 1\n2 0 d7 2\n")
    return q, qrels


def test_run_scores_are_real_and_keep_the_ranking_order():
    assert run_scores([3.5, 2.0, 1.0]) == [3.5, 2.0, 1.0]
    tied = run_scores([2.0, 2.0, 1.0])
    assert tied[0] == 2.0 and 1.0 < tied[1] < 2.0 and tied[2] == 1.0
    tail = run_scores([0.9, 0.8, 5.0, 4.0])  # a cascade's tail scored at a smaller size
    assert tail[:2] == [0.9, 0.8] and tail[1] > tail[2] > tail[3]


def test_trec_file_with_scores(tmp_path):
    write_trec(tmp_path / "run.trec", {"q1": ["d3", "d1"]}, "tag", {"q1": [0.75, 0.5]})
    assert (tmp_path / "run.trec").read_text() == "q1 Q0 d3 1 0.75 tag\nq1 Q0 d1 2 0.5 tag\n"


def test_evaluate_writes_real_scores_a_tag_and_one_file_per_row(built_index, tiny_model_dir, judged, tmp_path, capsys):
    q, qrels = judged
    runs = tmp_path / "runs"
    assert main(["-q", "evaluate", str(built_index), "--topics", str(q), "--qrels", str(qrels), "--model",
                 str(tiny_model_dir), "--plan", "1x8:20,4x48:10", "--plan", "1x8:20,4x48:10", "--budget", "100000",
                 "--measures", "nDCG@10", "--runs", str(runs)]) == 0
    err = capsys.readouterr().err
    names = sorted(p.name for p in runs.iterdir())
    assert len(names) == 3, names
    assert "1x8@20_4x48@10.trec" in names and "1x8@20_4x48@10_2.trec" in names
    assert any(n.startswith("budget100000ms_") for n in names)
    lines = [line.split() for line in (runs / "1x8@20_4x48@10.trec").read_text().splitlines()]
    assert {line[5] for line in lines} == {"starbucks_tiny_1x8:20,4x48:10"}
    scores = [float(line[4]) for line in lines if line[0] == "1"]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert not all(s == int(s) for s in scores)  # real scores, not 1000, 999, ...
    # the budget had no calibration: one plain warning line, no Python source line
    warning = [line for line in err.splitlines() if "cost model alone" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "warnings.warn" not in err and "UserWarning" not in err


def test_verify_catches_a_vectors_file_changed_without_changing_its_size(built_index, tmp_path, tiny_model_dir, capsys):
    index = tmp_path / "idx"
    shutil.copytree(built_index, index)
    assert main(["verify", str(index)]) == 0
    assert "every size and SHA-256 matches" in capsys.readouterr().out
    vectors = sorted((index / "vectors").glob("*.npy"))[-1]
    size = vectors.stat().st_size
    data = np.load(vectors, mmap_mode="r+")
    data[0] = -data[0] + 1  # same shape, same bytes on disk, different contents
    data.flush()
    del data
    assert vectors.stat().st_size == size
    assert main(["-q", "search", str(index), "coffee", "--plan", "1x8:20", "--model", str(tiny_model_dir)]) == 0
    capsys.readouterr()  # opening checks sizes only: the change goes unnoticed there
    assert main(["verify", str(index)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["-q", "search", str(index), "coffee", "--verify", "--model", str(tiny_model_dir)]) == 2
    assert f"{vectors.name}: index file is corrupt" in capsys.readouterr().err
