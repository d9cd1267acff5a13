"""Hard-negative mining, pseudo-queries and the build-train-data / train commands."""
import argparse
import json
import random

import pytest

from starbucks.errors import InputError
from starbucks.topics import read_qrels
from training.cli import add_parsers
from training.data import read_groups
from training.mining import bm25_rankings, pick_negatives
from training.pseudo import cut_query
from training_fixtures import TOPICS, run_config, train_model_dir  # noqa: F401


@pytest.fixture
def beir(tmp_path):
    """A small BEIR folder: three documents per topic, the first judged relevant."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for i, topic in enumerate(TOPICS):
            for k in range(3):
                f.write(json.dumps({"_id": f"d{i}-{k}", "title": topic,
                                    "text": f"Part {k} about {topic}. It has a second sentence on {topic} here."}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i, topic in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"q{i}", "text": f"what is {topic}"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}-0\t1\n" for i in range(len(TOPICS))))
    return folder


def cli(*argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_bm25_ranks_the_matching_topic_first():
    corpus = {f"d{i}": f"all about {t}" for i, t in enumerate(TOPICS)}
    ranking = bm25_rankings(corpus, {"q": "jazz harmony"}, depth=5)["q"]
    assert ranking[0] == f"d{TOPICS.index('jazz harmony')}" and len(ranking) == 5


def test_negatives_skip_relevant_and_top_ranks():
    ranking = ["a", "b", "c", "d", "e", "f"]
    negs = pick_negatives(ranking, {"c"}, count=10, skip_top=1, rng=random.Random(0))
    assert negs == ["b", "d", "e", "f"]
    assert len(pick_negatives(ranking, set(), count=2, skip_top=0, rng=random.Random(0))) == 2


def test_build_train_data_mines_hard_negatives(beir, tmp_path):
    out = tmp_path / "train.jsonl"
    cli("build-train-data", "--corpus", str(beir), "--queries", str(beir / "queries.jsonl"),
        "--qrels", str(beir / "qrels" / "train.tsv"), "--out", str(out), "--depth", "3")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(TOPICS)
    for r in records:
        i = int(r["query_id"][1:])
        assert [p["docid"] for p in r["positive_passages"]] == [f"d{i}-0"]
        negs = [p["docid"] for p in r["negative_passages"]]
        # from the top 3 ranks, the relevant passage left out: the same topic's unjudged ones
        assert sorted(negs) == [f"d{i}-1", f"d{i}-2"]
    assert len(read_groups(out)) == len(TOPICS)


def test_holdout_queries_stay_out_of_the_training_file(beir, tmp_path):
    def build(out):
        cli("build-train-data", "--corpus", str(beir), "--queries", str(beir / "queries.jsonl"),
            "--qrels", str(beir / "qrels" / "train.tsv"), "--out", str(out), "--holdout", "2")
        return {json.loads(line)["query_id"] for line in out.read_text().splitlines()}

    trained = build(tmp_path / "a" / "train.jsonl")
    held = read_qrels(tmp_path / "a" / "train.holdout.tsv")
    assert len(held) == 2 and len(trained) == len(TOPICS) - 2
    assert not trained & set(held) and trained | set(held) == {f"q{i}" for i in range(len(TOPICS))}
    assert held == {q: {f"d{q[1:]}-0": 1} for q in held}  # the judgements themselves, unchanged
    assert build(tmp_path / "b" / "train.jsonl") == trained  # the same split for the same seed


def test_holdout_of_every_query_is_an_error(beir, tmp_path):
    with pytest.raises(InputError, match="--holdout must be between 1 and"):
        cli("build-train-data", "--corpus", str(beir), "--queries", str(beir / "queries.jsonl"),
            "--qrels", str(beir / "qrels" / "train.tsv"), "--out", str(tmp_path / "x.jsonl"),
            "--holdout", str(len(TOPICS)))
    assert not (tmp_path / "x.jsonl").exists()


def test_build_train_data_rejects_qrels_for_unknown_documents(beir, tmp_path):
    qrels = tmp_path / "bad.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\tnope\t1\n")
    with pytest.raises(InputError, match="'nope'"):
        cli("build-train-data", "--corpus", str(beir), "--queries", str(beir / "queries.jsonl"),
            "--qrels", str(qrels), "--out", str(tmp_path / "x.jsonl"))


def test_cut_query_removes_the_sentence_from_the_positive():
    text = "Coral reefs host a quarter of marine species. Warming water bleaches them quickly. Some recover."
    seen_removed = False
    for seed in range(20):
        query, positive = cut_query(text, random.Random(seed))
        assert query in text and len(query.split()) >= 4
        seen_removed |= query not in positive
    assert seen_removed
    assert cut_query("too short", random.Random(0)) is None


def test_pseudo_mode_needs_no_labels_and_never_uses_the_source_as_negative(beir, tmp_path):
    out = tmp_path / "pseudo.jsonl"
    cli("build-train-data", "--corpus", str(beir), "--pseudo", "10", "--out", str(out), "--num-negatives", "3")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 10
    for r in records:
        source = r["positive_passages"][0]["docid"]
        assert r["query_id"] == f"pseudo-{source}"
        assert source not in {p["docid"] for p in r["negative_passages"]}


def test_train_command_with_teacher_on_pseudo_data(beir, train_model_dir, tmp_path):
    data = tmp_path / "pseudo.jsonl"
    cli("build-train-data", "--corpus", str(beir), "--pseudo", "12", "--out", str(data))
    config = tmp_path / "c.json"
    config.write_text(json.dumps(run_config(train_model_dir, data, tmp_path / "out", teacher="base", max_steps=50)))
    assert cli("train", str(config), "--max-steps", "2", "--no-progress") == 0
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2


def test_build_train_data_needs_labels_or_pseudo(beir, tmp_path):
    with pytest.raises(SystemExit, match="--pseudo"):
        cli("build-train-data", "--corpus", str(beir), "--out", str(tmp_path / "x.jsonl"))
