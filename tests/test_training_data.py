"""Training configs and training files: clear errors for bad input, deterministic batches."""
import json

import pytest
import torch

from starbucks.errors import InputError, StarbucksError
from training.config import TrainConfig
from training.data import RetrievalBatches, batch_items, load_groups, read_groups, read_texts
from training.loop import train
from training_fixtures import groups_file, run_config, tiny_train_model, train_model_dir  # noqa: F401


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("size, problem", [("5x16", "beyond the model's 4 layers"), ("2x64", "beyond the model's width 32")])
def test_sizes_beyond_the_model_are_rejected(train_model_dir, groups_file, tmp_path, size, problem):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "o", sizes=[size, "4x32"]))
    with pytest.raises(StarbucksError, match=problem):
        train(cfg, progress=False)


def test_separate_size_beyond_the_model_is_rejected(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "o", method="separate",
                                           separate_size="6x16"))
    with pytest.raises(StarbucksError, match="layer 6"):
        train(cfg, progress=False)


def test_empty_training_file(tmp_path):
    path = write(tmp_path / "empty.jsonl", "\n\n")
    with pytest.raises(InputError, match="no training records") as e:
        read_groups(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("line, problem", [
    ("{not json", "malformed JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"positive_passages": [{"text": "p"}]}', "no 'query'"),
    ('{"query": "q", "positive_passages": []}', "no positive_passages"),
    ('{"query": "q", "positive_passages": "p"}', "must be a list"),
    ('{"query": "q", "positive_passages": [{"title": "", "text": ""}]}', "empty passage"),
])
def test_malformed_record_names_file_and_line(tmp_path, line, problem):
    good = json.dumps({"query": "q", "positive_passages": [{"text": "p"}], "negative_passages": [{"text": "n"}]})
    path = write(tmp_path / "bad.jsonl", good + "\n" + line + "\n")
    with pytest.raises(InputError, match=problem) as e:
        read_groups(path)
    assert e.value.line == 2 and e.value.path == path


def test_missing_negatives_with_a_group_size_is_an_error(tmp_path):
    path = write(tmp_path / "noneg.jsonl", "\n" + json.dumps({"query": "q", "positive_passages": [{"text": "p"}]}) + "\n")
    assert len(load_groups([str(path)], group_size=1)) == 1
    with pytest.raises(InputError, match="no negative_passages") as e:
        load_groups([str(path)], group_size=4)
    assert e.value.line == 2


def test_missing_training_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_groups(tmp_path / "absent.jsonl")


def test_config_errors_name_the_file(tmp_path, train_model_dir, groups_file):
    good = run_config(train_model_dir, groups_file, tmp_path / "o")
    bad_json = write(tmp_path / "a.json", '{"model": "m",\n "output": }')
    with pytest.raises(InputError, match="cannot parse") as e:
        TrainConfig.load(bad_json)
    assert e.value.line == 2
    unknown = write(tmp_path / "b.json", json.dumps(dict(good, learnig_rate=1)))
    with pytest.raises(InputError, match="learnig_rate"):
        TrainConfig.load(unknown)
    for change, problem in [({"method": "magic"}, "method must be"), ({"train_files": []}, "train_files is empty"),
                            ({"epochs": 1}, "exactly one of max_steps and epochs"),
                            ({"sizes": ["4by32"]}, "bad size"), ({"batch_size": 0}, "batch_size"),
                            ({"anchor_weight": 1.0}, "anchor_weight needs a teacher"),
                            ({"anchor_files": ["t.jsonl"]}, "anchor_files need an anchor_weight")]:
        path = write(tmp_path / "c.json", json.dumps(dict(good, **change)))
        with pytest.raises(InputError, match=problem) as e:
            TrainConfig.load(path)
        assert str(path) in str(e.value)
    missing = write(tmp_path / "d.json", json.dumps({"model": "m"}))
    with pytest.raises(InputError, match="missing settings"):
        TrainConfig.load(missing)


def test_a_saved_config_matches_when_only_settings_added_since_are_missing(tmp_path, train_model_dir, groups_file):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "o"))
    older = cfg.to_dict()
    del older["anchor_weight"]  # written before the setting existed: it reads as its default
    assert cfg.matches(write(tmp_path / "old.json", json.dumps(older)))
    assert not cfg.matches(write(tmp_path / "other.json", json.dumps(dict(older, max_steps=5))))
    assert not cfg.matches(tmp_path / "absent.json")


def test_toml_config(tmp_path):
    path = write(tmp_path / "c.toml", 'model = "m"\noutput = "o"\ntrain_files = ["t.jsonl"]\nmax_steps = 3\n'
                                      'sizes = ["2x32", "1x16"]\n')
    cfg = TrainConfig.load(path)
    assert cfg.max_steps == 3 and cfg.sizes == ["1x16", "2x32"]


def test_batches_are_a_function_of_seed_and_index(groups_file):
    tokenizer = tiny_train_model().tokenizer
    groups = read_groups(groups_file)
    make = lambda seed: RetrievalBatches(groups, tokenizer, 4, 3, 16, 32, seed)  # noqa: E731
    assert make(1).texts(5) == make(1).texts(5)
    assert make(1).texts(5) != make(2).texts(5)
    queries, passages = make(1).texts(0)
    assert len(queries) == 4 and len(passages) == 12
    for i, q in enumerate(queries):
        topic = q.removeprefix("facts about ")
        assert topic in passages[3 * i]  # the positive leads its group
        assert all(topic not in p for p in passages[3 * i + 1: 3 * i + 3])


def test_anchor_texts_are_read_with_titles_and_bad_lines_named(tmp_path):
    good = write(tmp_path / "t.jsonl", '{"_id": "1", "title": "Bridges", "text": "trams cross them"}\n\n'
                                       '{"_id": "2", "text": "prices rose"}\n')
    assert read_texts(good) == ["Bridges trams cross them", "prices rose"]
    bad = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(InputError, match="no 'text'") as e:
        read_texts(bad)
    assert e.value.line == 2 and str(bad) in str(e.value)
    with pytest.raises(InputError, match="no texts"):
        read_texts(write(tmp_path / "empty.jsonl", "\n"))


def test_anchor_texts_are_drawn_by_seed_and_index(groups_file):
    tokenizer = tiny_train_model().tokenizer
    groups = read_groups(groups_file)
    texts = [f"text number {i}" for i in range(20)]
    make = lambda seed: RetrievalBatches(groups, tokenizer, 4, 3, 16, 32, seed, anchor_texts=texts,  # noqa: E731
                                         anchor_batch_size=5)
    assert torch.equal(make(1)(3).anchor_texts["input_ids"], make(1)(3).anchor_texts["input_ids"])
    assert not torch.equal(make(1)(3).anchor_texts["input_ids"], make(1)(4).anchor_texts["input_ids"])
    assert make(1)(0).anchor_texts["input_ids"].shape[0] == 5
    assert RetrievalBatches(groups, tokenizer, 4, 3, 16, 32, 1)(0).anchor_texts is None


def test_every_record_is_seen_once_per_epoch():
    n, bs = 10, 3
    first_epoch = [i for b in range(4) for i in batch_items(n, bs, seed=0, index=b)][:n]
    assert sorted(first_epoch) == list(range(n))


def test_hugging_face_datasets_are_read_as_tevatron_rows(monkeypatch):
    import sys
    import types

    calls = []
    rows = [{"query_id": "1", "query": "q", "positive_passages": [{"docid": "a", "title": "T", "text": "p"}],
             "negative_passages": [{"docid": "b", "title": "", "text": "n"}]}]
    fake = types.SimpleNamespace(load_dataset=lambda name, split: calls.append((name, split)) or rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    groups = load_groups(["hf:Tevatron/msmarco-passage"], group_size=2)
    assert calls == [("Tevatron/msmarco-passage", "train")]
    assert groups[0].positives == ["T p"] and groups[0].negatives == ["n"]
    load_groups(["hf:Tevatron/msmarco-passage:dev"], group_size=2)
    assert calls[-1] == ("Tevatron/msmarco-passage", "dev")


def test_hugging_face_without_the_datasets_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InputError, match="pip install datasets"):
        load_groups(["hf:Tevatron/msmarco-passage"], group_size=2)


def test_every_shipped_config_parses():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.json"))
    assert configs
    for path in configs:
        cfg = TrainConfig.load(path)
        assert cfg.output.startswith("runs/"), path  # scratch output stays out of the repository


def test_batch_items_at_scale_shuffle_each_epoch_once(monkeypatch):
    """At 100,003 items every epoch is a permutation, a batch spanning two epochs takes the tail of one
    and the head of the next, and a batch costs at most two shuffles (not one per item)."""
    import training.data as data

    n, size, seed = 100_003, 20_000, 7
    calls = []
    real = data.epoch_order

    def counted(*args):
        calls.append(args)
        if len(calls) > 2:
            raise AssertionError(f"epoch order computed {len(calls)} times for one batch")
        return real(*args)

    monkeypatch.setattr(data, "epoch_order", counted)
    batches = []
    for index in range(6):  # 120,000 items: all of epoch 0 and the start of epoch 1
        calls.clear()
        batches.append(data.batch_items(n, size, seed, index))
    assert all(len(b) == size for b in batches)
    flat = [i for b in batches for i in b]
    assert sorted(flat[:n]) == list(range(n))
    assert flat[:n] == list(real(n, seed, 0)) and flat[n:] == list(real(n, seed, 1)[: 6 * size - n])
    assert flat[:n] != list(range(n)) and real(n, seed, 0) != real(n, seed, 1)
    calls.clear()
    assert data.batch_items(n, size, seed, 5) == batches[5]  # a pure function of (seed, index)


def test_batch_items_larger_than_the_data_runs_over_epochs():
    items = batch_items(3, 8, 0, 0)
    assert len(items) == 8
    assert sorted(items[:3]) == sorted(items[3:6]) == [0, 1, 2]
