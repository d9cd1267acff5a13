"""``starbucks adapt``: trains adaptors on a cached corpus, lowers the loss, resumes, refuses bad input."""
import json

import pytest
import torch

import training.adapt as adapt_module
from conftest import make_tiny_model, write_corpus
from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.adapt import STATE_NAME, WORK, AdaptSettings, adapt

SHORT = dict(steps=24, queries_per_step=16, passages_per_step=48, checkpoint_every=8)


@pytest.fixture(scope="module")
def cosine_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-cosine"
    make_tiny_model(pooling="mean", similarity="cosine").save(folder)
    return folder


@pytest.fixture
def small_corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.jsonl", 80)


def log_of(out):
    return torch.load(out / WORK / STATE_NAME, weights_only=False)["log"]


def test_adapt_lowers_the_loss_and_writes_a_model(cosine_model_dir, small_corpus, tmp_path):
    torch.set_num_threads(1)
    out = adapt(small_corpus, tmp_path / "out", model=cosine_model_dir, settings=AdaptSettings(**SHORT),
                progress=False)
    log = log_of(out)
    assert len(log) == SHORT["steps"]
    first = sum(e["loss"] for e in log[:4]) / 4
    last = sum(e["loss"] for e in log[-4:]) / 4
    assert last < 0.7 * first
    model = StarbucksModel.load(out, device="cpu")
    assert model.adaptors is not None and model.adaptors.spec.orthogonal == (4,)
    assert Size(2, 16) in model.config.sizes and Size(4, 8) in model.config.sizes
    assert model.adaptors.spec.notes["passages"] == 80
    base = StarbucksModel.load(cosine_model_dir, device="cpu")
    assert model.fingerprint() != base.fingerprint()


def test_adapt_resumes_where_it_stopped(cosine_model_dir, small_corpus, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    settings = AdaptSettings(**SHORT)
    whole = adapt(small_corpus, tmp_path / "whole", model=cosine_model_dir, settings=settings, progress=False)

    real = adapt_module.step_losses

    def interrupted(model, data, sizes, settings, step):
        if step == 13:
            raise KeyboardInterrupt
        return real(model, data, sizes, settings, step)

    monkeypatch.setattr(adapt_module, "step_losses", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapt(small_corpus, tmp_path / "cut", model=cosine_model_dir, settings=settings, progress=False)
    assert len(log_of(tmp_path / "cut")) == 8  # the last checkpoint before the interruption

    steps_run = []

    def counting(model, data, sizes, settings, step):
        steps_run.append(step)
        return real(model, data, sizes, settings, step)

    monkeypatch.setattr(adapt_module, "step_losses", counting)
    encoded = []
    monkeypatch.setattr(adapt_module, "encode_pooled", lambda *a, **k: encoded.append(a) or None)
    resumed = adapt(small_corpus, tmp_path / "cut", model=cosine_model_dir, settings=settings, progress=False)
    assert steps_run == list(range(8, SHORT["steps"]))
    assert encoded == []  # the cached vectors were reused
    assert [e["loss"] for e in log_of(resumed)] == pytest.approx([e["loss"] for e in log_of(whole)], rel=1e-4)
    a, b = (StarbucksModel.load(p, device="cpu").adaptors.state_dict() for p in (whole, resumed))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5)


def test_resume_with_other_settings_is_refused(cosine_model_dir, small_corpus, tmp_path):
    adapt(small_corpus, tmp_path / "o", model=cosine_model_dir, settings=AdaptSettings(**SHORT), progress=False)
    with pytest.raises(StarbucksError, match="other settings"):
        adapt(small_corpus, tmp_path / "o", model=cosine_model_dir,
              settings=AdaptSettings(**dict(SHORT, learning_rate=0.5)), progress=False)


def test_judged_queries_add_a_cross_entropy(cosine_model_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 40)
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": d["text"][:30]}) + "\n"
                               for i, d in enumerate(docs[:10])))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(10)))
    settings = AdaptSettings(**dict(SHORT, steps=4))
    labelled = adapt(corpus, tmp_path / "l", model=cosine_model_dir, settings=settings, queries=queries,
                     qrels=qrels, progress=False)
    free = adapt(corpus, tmp_path / "f", model=cosine_model_dir, settings=settings, queries=queries, progress=False)
    # Step 0 starts from the same maps: the supervised run adds CE and KL terms on top.
    assert log_of(labelled)[0]["loss"] > log_of(free)[0]["loss"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\tnowhere\t1\n")
    with pytest.raises(InputError, match="no judged-relevant document") as e:
        adapt(corpus, tmp_path / "b", model=cosine_model_dir, settings=settings, queries=queries, qrels=bad,
              progress=False)
    assert str(bad) in str(e.value)


def test_corpus_without_text_is_refused(cosine_model_dir, tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": "  "}) + "\n" for i in range(5)))
    with pytest.raises(InputError, match="no document with text to adapt on") as e:
        adapt(corpus, tmp_path / "o", model=cosine_model_dir, settings=AdaptSettings(**SHORT), progress=False)
    assert str(corpus) in str(e.value)


@pytest.mark.parametrize("size, problem", [("5x16", "layer 5 is beyond the model's 4 layers"),
                                           ("2x64", "dim 64 is beyond the model's width 48")])
def test_sizes_beyond_the_model_are_refused_before_encoding(cosine_model_dir, small_corpus, tmp_path, size,
                                                            problem, monkeypatch):
    monkeypatch.setattr(adapt_module, "encode_pooled", lambda *a, **k: pytest.fail("encoded anyway"))
    with pytest.raises(StarbucksError, match=problem):
        adapt(small_corpus, tmp_path / "o", model=cosine_model_dir,
              settings=AdaptSettings(**dict(SHORT, sizes=("1x8", size))), progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_errors_are_one_line(cosine_model_dir, tmp_path, capsys):
    from starbucks_cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"_id": "d0", "text": ""}) + "\n")
    cases = [
        ([str(tmp_path / "absent.jsonl")], "no such file"),
        ([str(empty), "--model", str(cosine_model_dir)], "no document with text"),
        ([str(empty), "--model", str(cosine_model_dir), "--sizes", "9x8"], "layer 9 is beyond"),
        ([str(empty), "--qrels", str(empty)], "--qrels needs --queries"),
        ([str(empty), "--steps", "0"], "--steps must be at least 1"),
    ]
    for argv, problem in cases:
        assert main(["adapt", *argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and problem in err and "\n" not in err, err


def test_an_adapted_model_indexes_and_searches(cosine_model_dir, small_corpus, tmp_path):
    """The adapted folder is a model like any other: the index stores its mapped vectors, and the
    base model (another fingerprint) is refused for that index."""
    import numpy as np

    from indexes import build_index
    from retrieval import Searcher

    out = adapt(small_corpus, tmp_path / "adapted", model=cosine_model_dir,
                settings=AdaptSettings(**dict(SHORT, steps=8)), progress=False)
    index = build_index(small_corpus, tmp_path / "idx", model=str(out), shortlist="2x16", rerank="4x48",
                        progress=False)
    model = StarbucksModel.load(out, device="cpu")
    docs = [json.loads(line) for line in small_corpus.read_text().splitlines()]
    from starbucks.encoder import Encoder

    encoder = Encoder(model)
    passages = encoder.encode_passages([f"{d['title']} {d['text']}" for d in docs], [Size(2, 16), Size(4, 48)])
    stored = np.load(tmp_path / "idx" / "vectors" / "2x16.npy", mmap_mode="r")
    assert np.allclose(stored[:5].astype(np.float32), passages[Size(2, 16)][:5], atol=2e-3)
    query = "sourdough bread and jazz"
    result = Searcher(index, model=model).search(query, k=3, budget=None)
    exact = np.argsort(-(passages[Size(4, 48)] @ encoder.encode_queries([query], [Size(4, 48)])[Size(4, 48)][0]))
    assert list(result.docids) == [docs[i]["_id"] for i in exact[:3]]
    with pytest.raises(StarbucksError, match="fingerprint"):
        Searcher(index, model=StarbucksModel.load(cosine_model_dir, device="cpu"))
