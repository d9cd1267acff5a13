"""What real collections hold: empty documents (Cranfield 471 and 995), over-long queries and passages."""
import json

import numpy as np
import pytest

from indexes import Index, build_index
from indexes.build import EmptyDocsWarning
from starbucks_cli import main


def cranfield_like(path, n=30):
    """A corpus with Cranfield's quirk: documents 471 and 995 have an empty title and text."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": str(i), "title": f"flow {i}", "text": f"boundary layer {i} wing"}) + "\n")
        for docid in ("471", "995"):
            f.write(json.dumps({"_id": docid, "title": "", "text": ""}) + "\n")
    return path


def test_empty_documents_index_by_default_with_a_warning_and_a_record(tmp_path, tiny_model):
    corpus = cranfield_like(tmp_path / "corpus.jsonl")
    with pytest.warns(EmptyDocsWarning, match=r"2 document\(s\) have no text, indexed as empty text.*471, 995"):
        out = build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48", progress=False)
    index = Index(out)
    assert len(index) == 32 and list(index.docids)[-2:] == ["471", "995"]
    assert index.manifest.empty_docs == {"policy": "index", "count": 2, "ids": ["471", "995"]}
    empty = tiny_model  # the stored vector is the model's vector of the empty text
    from starbucks.encoder import make_encoder

    expected = make_encoder(empty, threads=1).encode_passages([""], ["4x48"])
    stored = np.asarray(index.vectors[index.sizes[-1]][-1], dtype=np.float32)
    assert np.allclose(stored, next(iter(expected.values()))[0], atol=1e-2)


def test_empty_documents_can_be_skipped(tmp_path, tiny_model):
    corpus = cranfield_like(tmp_path / "corpus.jsonl")
    with pytest.warns(EmptyDocsWarning, match="skipped"):
        out = build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48",
                          progress=False, empty_docs="skip")
    index = Index(out)
    assert len(index) == 30 and "471" not in set(index.docids)
    assert index.manifest.empty_docs == {"policy": "skip", "count": 2, "ids": ["471", "995"]}


def test_cli_indexes_cranfield_and_says_so_in_one_line(tmp_path, tiny_model_dir, capsys):
    corpus = cranfield_like(tmp_path / "corpus.jsonl")
    assert main(["-q", "index", str(corpus), "--out", str(tmp_path / "idx"), "--model", str(tiny_model_dir),
                 "--shortlist", "1x8", "--rerank", "4x48", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "471, 995" in warning[0]
    assert "32 documents" in captured.out and "docs/s" in captured.out and "MB on disk" in captured.out
    assert "1 x 8" not in captured.out and "1x8" in captured.out


def test_long_queries_and_passages_are_cut_and_said_once_with_counts(tiny_model):
    from starbucks.encoder import make_encoder
    from starbucks.truncation import TruncationWarning

    encoder = make_encoder(tiny_model, threads=1)
    limit = tiny_model.config.query_max_length
    huge = "coffee " * 2000  # past the model's 512 positions: was an error
    mid = "jazz " * (limit + 5)
    with pytest.warns(TruncationWarning, match=rf"2 of 3 queries were longer than {limit} tokens"):
        vectors = encoder.encode_queries([huge, mid, "short"], ["4x48"])
    assert all(np.isfinite(v).all() for v in vectors.values())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the next cut is only counted
        encoder.encode_queries([huge], ["4x48"])
    assert encoder.truncated["queries"] == {"cut": 3, "total": 4, "limit": limit}
    with pytest.warns(TruncationWarning, match=r"1 of 2 passages"):
        encoder.encode_passages(["volcano " * 300, "short"], ["4x48"])


def test_an_index_build_reports_cut_passages_once(tmp_path, tiny_model):
    from starbucks.truncation import TruncationWarning

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": "tide " * (10 if i % 2 else 200)}) + "\n"
                              for i in range(40)))
    with pytest.warns(TruncationWarning) as caught:
        build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48", chunk_size=8,
                    progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(messages) == 1 and messages[0].startswith("20 of 40 passages")
