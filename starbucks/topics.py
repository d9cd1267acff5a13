"""Topics (queries) and relevance judgements, from BEIR, TREC or ``ir_datasets``."""
from __future__ import annotations

import json
import re
from pathlib import Path

from starbucks.corpus import IRDS_PREFIX, _irds, decode_text, open_text, read_lines
from starbucks.errors import InputError

Qrels = dict[str, dict[str, int]]


def read_topics(spec: str | Path) -> dict[str, str]:
    """Queries as ``{qid: text}``: BEIR queries.jsonl (or its folder), qid<TAB>text, TREC topics, irds:ID."""
    text = str(spec)
    if text.startswith(IRDS_PREFIX):
        dataset = _irds(text[len(IRDS_PREFIX):])
        return {q.query_id: getattr(q, "text", None) or getattr(q, "title", "") for q in dataset.queries_iter()}
    path = Path(spec)
    if path.is_dir():
        path = path / "queries.jsonl"
    with open_text(path) as f:
        content = decode_text(f.buffer.read(), path)
    if "<top>" in content:
        return _trec_topics(content, path)
    topics: dict[str, str] = {}
    for n, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        if raw.lstrip().startswith("{"):
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON ({e.msg})", path, n) from None
            qid, query = obj.get("_id", obj.get("id", obj.get("query_id"))), obj.get("text", obj.get("query"))
        else:
            parts = raw.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise InputError("expected a JSON object or qid<TAB>text", path, n)
            qid, query = parts
        if qid is None or not str(qid).strip():
            raise InputError("query has no id", path, n)
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query {qid!r} has no text", path, n)
        if str(qid) in topics:
            raise InputError(f"duplicate query id {qid!r}", path, n)
        topics[str(qid)] = query.strip()
    if not topics:
        raise InputError("no queries found", path)
    return topics


def _trec_topics(content: str, path: Path) -> dict[str, str]:
    topics = {}
    for block in re.findall(r"<top>(.*?)</top>", content, flags=re.S):
        num = re.search(r"<num>\s*(?:Number:)?\s*(\S+)", block)
        title = re.search(r"<title>\s*(?:Topic:)?\s*(.*?)\s*(?=<|\Z)", block, flags=re.S)
        if not num or not title or not title.group(1).strip():
            raise InputError("TREC topic without <num> or <title>", path)
        topics[num.group(1)] = " ".join(title.group(1).split())
    return topics


def read_qrels(spec: str | Path) -> Qrels:
    """Judgements as ``{qid: {docid: relevance}}``: BEIR qrels TSV, TREC qrels, or irds:ID."""
    text = str(spec)
    if text.startswith(IRDS_PREFIX):
        dataset = _irds(text[len(IRDS_PREFIX):])
        qrels: Qrels = {}
        for q in dataset.qrels_iter():
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        return qrels
    path = Path(spec)
    qrels = {}
    for n, raw in read_lines(path):
        parts = raw.split()
        if not parts:
            continue
        if n == 1 and parts[0].lower() in ("query-id", "query_id", "qid"):
            continue  # BEIR header: query-id corpus-id score
        if len(parts) == 3:
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise InputError(f"expected 3 (BEIR) or 4 (TREC) columns, found {len(parts)}", path, n)
        try:
            qrels.setdefault(qid, {})[docid] = int(rel)
        except ValueError:
            raise InputError(f"relevance {rel!r} is not an integer", path, n) from None
    if not qrels:
        raise InputError("no judgements found", path)
    return qrels
