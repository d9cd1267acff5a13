"""The benchmark collections: local copies in ../shared/data, and full ones through ir_datasets.

Set STARBUCKS_DATA to point at another copy of the local collections.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STARBUCKS_DATA", ROOT.parent / "shared" / "data"))


class Collection(NamedTuple):
    corpus: str
    topics: str
    qrels: str
    note: str = ""


def _local(corpus: str, topics: str, qrels: str, note: str = "") -> Collection:
    return Collection(str(DATA / corpus), str(DATA / topics), str(DATA / qrels), note)


COLLECTIONS: dict[str, Collection] = {
    "scifact": _local("scifact", "scifact", "scifact/qrels/test.tsv", "BEIR SciFact test"),
    "nfcorpus-dev": _local("nfcorpus", "nfcorpus", "nfcorpus/qrels/dev.tsv", "BEIR NFCorpus dev"),
    "dl19-pool": _local("msmarco-passage/dl19", "msmarco-passage/dl19/queries.jsonl",
                        "msmarco-passage/dl19/qrels/test.tsv",
                        "TREC DL 2019 over a 16,836-passage pool (easier than the full collection)"),
    "cacm": Collection(*(str(ROOT / "starbucks" / "data" / "cacm" / p) for p in ("", "", "qrels/test.tsv")), "CACM (bundled)"),
    "vaswani": _local("classic/vaswani", "classic/vaswani", "classic/vaswani/qrels/test.tsv", "Vaswani"),
    # Full collections, for a user with the data (ir_datasets downloads them) and a GPU.
    "msmarco-dev": Collection("irds:msmarco-passage", "irds:msmarco-passage/dev/small",
                              "irds:msmarco-passage/dev/small", "MS MARCO passage dev (small), 8.8M passages"),
    "dl19": Collection("irds:msmarco-passage", "irds:msmarco-passage/trec-dl-2019/judged",
                       "irds:msmarco-passage/trec-dl-2019/judged", "TREC DL 2019 passage, full collection"),
    "dl20": Collection("irds:msmarco-passage", "irds:msmarco-passage/trec-dl-2020/judged",
                       "irds:msmarco-passage/trec-dl-2020/judged", "TREC DL 2020 passage, full collection"),
    **{
        f"beir-{name}": Collection(f"irds:beir/{name}", f"irds:beir/{name}{split}", f"irds:beir/{name}{split}", f"BEIR {name}")
        for name, split in [("trec-covid", ""), ("nfcorpus", "/test"), ("fiqa", "/test"), ("arguana", ""),
                            ("webis-touche2020/v2", ""), ("dbpedia-entity", "/test"), ("scidocs", ""),
                            ("climate-fever", ""), ("scifact", "/test"), ("quora", "/test"),
                            ("nq", ""), ("hotpotqa", "/test")]
    },
}
