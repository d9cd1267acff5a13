"""The docid duplicate check: 8 bytes a document, the first repeat named by file and line."""
import json

import numpy as np
import pytest

from indexes import build_index
from indexes.build import partial_dir
from indexes.unique import DocidSet
from starbucks.errors import InputError
from starbucks_cli import main

from conftest import write_corpus


def test_docid_set_matches_a_python_set():
    rng = np.random.default_rng(0)
    seen, reference = DocidSet(), set()
    for _ in range(300):
        batch = [f"x{v}" for v in rng.integers(0, 40000, rng.integers(0, 50))]
        at = seen.add(batch)
        expected = next((i for i, d in enumerate(batch) if d in reference or d in batch[:i]), None)
        assert at == expected
        if at is None:
            reference.update(batch)
    assert seen.count == len(reference) and len(seen._runs) < 20  # runs are merged as they grow


def test_a_duplicate_far_apart_names_its_line_before_its_chunk_is_encoded(tmp_path, tiny_model):
    corpus = write_corpus(tmp_path / "big.jsonl", 3000)
    lines = corpus.read_text().splitlines()
    lines[2899] = json.dumps({"_id": "d7", "text": "the same id again"})
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"big.jsonl:2900: duplicate document id 'd7'$"):
        build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48", chunk_size=500,
                    progress=False, encoder="torch")
    assert len(list((partial_dir(tmp_path / "idx") / "chunks").glob("*.npz"))) == 5  # rows 1-2500 encoded


def test_a_duplicate_among_skipped_empty_documents_and_at_the_end(tmp_path, tiny_model):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": ""}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": ""}\n')
    with pytest.raises(InputError, match=r"c.jsonl:3: duplicate document id 'a'"):
        build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48",
                    empty_docs="skip", progress=False)
    assert not partial_dir(tmp_path / "idx").exists()


def test_cli_duplicate_is_one_line_and_status_2(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n')
    assert main(["-q", "index", str(corpus), "--out", str(tmp_path / "o"), "--model", str(tiny_model_dir),
                 "--shortlist", "1x8", "--rerank", "4x48"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {corpus}:3: duplicate document id 'a'\n"
