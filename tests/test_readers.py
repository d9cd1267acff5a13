"""Corpus, topic and qrels readers: every format, and clear errors naming file and line."""
import json

import pytest

from starbucks.corpus import count_docs, iter_corpus
from starbucks.errors import InputError
from starbucks.topics import read_qrels, read_topics


def write(path, text):
    path.write_text(text)
    return path


def test_jsonl_beir_folder_and_tsv(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    write(beir / "corpus.jsonl", '{"_id": "a", "title": "T", "text": "x y"}\n\n{"id": "b", "text": "z"}\n')
    assert [(d.docid, d.text, d.line) for d in iter_corpus(beir)] == [("a", "T x y", 1), ("b", "z", 3)]
    assert count_docs(beir) == 2
    tsv = write(tmp_path / "c.tsv", "1\tfirst passage\n2\tsecond\n")
    assert [(d.docid, d.text) for d in iter_corpus(tsv)] == [("1", "first passage"), ("2", "second")]


@pytest.mark.parametrize("content,message,line", [
    ('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n', "malformed JSON", 2),
    ('{"_id": "a", "text": "ok"}\n{"_id": "", "text": "x"}\n', "empty document id", 2),
    ('{"_id": "a b", "text": "x"}\n', "whitespace", 1),
    ('{"text": "x"}\n', "no id", 1),
    ('{"_id": "a"}\n', "no 'text'", 1),
    ('[1, 2]\n', "JSON object", 1),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, content, message, line):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(InputError, match=message) as e:
        list(iter_corpus(path))
    assert e.value.line == line and str(path) in str(e.value)


def test_bad_tsv_and_missing_files(tmp_path):
    with pytest.raises(InputError, match=r"bad.tsv:2: expected 2"):
        list(iter_corpus(write(tmp_path / "bad.tsv", "1\tok\n2\tx\ty\n")))
    with pytest.raises(InputError, match="no such file"):
        list(iter_corpus(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="no corpus.jsonl"):
        list(iter_corpus(tmp_path))
    with pytest.raises(InputError, match="unknown corpus format"):
        list(iter_corpus(write(tmp_path / "c.csv", "a,b\n")))


def test_topics_in_every_format(tmp_path):
    assert read_topics(write(tmp_path / "q.jsonl", '{"_id": "1", "text": "cats"}\n')) == {"1": "cats"}
    assert read_topics(write(tmp_path / "q.tsv", "1\tcats\n2\tdogs\n")) == {"1": "cats", "2": "dogs"}
    trec = "<top>\n<num> Number: 301\n<title> International Organized Crime\n<desc> Description:\nx\n</top>\n"
    assert read_topics(write(tmp_path / "t.txt", trec)) == {"301": "International Organized Crime"}
    with pytest.raises(InputError, match=r"dup.tsv:2: duplicate query id"):
        read_topics(write(tmp_path / "dup.tsv", "1\ta\n1\tb\n"))
    with pytest.raises(InputError, match=r"empty.jsonl:1: query '1' has no text"):
        read_topics(write(tmp_path / "empty.jsonl", json.dumps({"_id": "1", "text": " "}) + "\n"))


def test_qrels_beir_and_trec(tmp_path):
    beir = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\r\n1\td1\t1\r\n1\td2\t2\r\n")
    trec = write(tmp_path / "qrels.txt", "1 0 d1 1\n1 0 d2 2\n")
    assert read_qrels(beir) == read_qrels(trec) == {"1": {"d1": 1, "d2": 2}}
    with pytest.raises(InputError, match=r"bad.txt:1: relevance 'x'"):
        read_qrels(write(tmp_path / "bad.txt", "1 0 d1 x\n"))
    with pytest.raises(InputError, match=r"cols.txt:1: expected 3"):
        read_qrels(write(tmp_path / "cols.txt", "1 d1\n"))
