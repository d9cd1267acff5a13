"""Adaptors on a frozen backbone: nDCG@10 of every diagonal size, exact search, for each way of
fitting the per-layer maps (issue 17).

Each collection is encoded once with the frozen model (pooled full-width vectors of every layer,
passages and queries, cached under ``experiments/indexes/adaptor-cache/``); every variant is then
trained and scored on those vectors alone, through the model's own ``pool`` (adaptor, truncation,
normalisation), so a variant costs seconds.

Variants, per evaluation set (SciFact test, NFCorpus dev, DL19 pool):

- ``base``: the model truncated, no maps;
- ``pca-other``: each layer's PCA rotation fitted on the other corpora, no training;
- ``labelfree-other``: maps trained label-free on the other corpora (passages as queries),
  last layer orthogonal; ``-free``: last layer free; ``-shared``: one free map for every layer;
  ``-mlp``: a residual MLP per layer (last layer kept a rotation);
- ``supervised``: trained on the SciFact and NFCorpus corpora with their train-split judgements
  (the train queries only: no test or dev query text), last layer orthogonal;
- transductive, reported apart: ``pca-self`` and ``labelfree-self``, fitted label-free on the
  evaluation corpus itself.

"The other corpora" are the SciFact, NFCorpus, Vaswani and CACM corpora minus the evaluation
set's own. No test or dev judgement, and no DL19 text, is ever trained on (outside the
transductive rows).

    python -m experiments.training.adaptors --threads 1
    python -m experiments.training.adaptors --time-adapt ../shared/data/scifact --threads 1

``--time-adapt CORPUS`` instead times ``starbucks adapt CORPUS`` end to end (encoding included,
a fresh output folder) with the default settings, into ``results/adapt-time.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import ir_measures
import torch

from experiments.datasets import COLLECTIONS, ROOT
from experiments.runtime import record, setup
from starbucks.corpus import iter_corpus
from starbucks.model import BASE_MODEL_NAME, StarbucksModel
from starbucks.sizes import Size, diagonal
from starbucks.topics import read_qrels, read_topics
from training.adapt import (AdaptSettings, TrainingSet, cached_pooled, initial_adaptors, plain_adaptors,
                            train_adaptors, vectors_from_pooled)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = ROOT / "experiments" / "indexes" / "adaptor-cache"
EVALUATION = {"scifact": "scifact", "nfcorpus": "nfcorpus-dev", "dl19": "dl19-pool"}  # name -> collection
TRAIN_CORPORA = {"scifact": "scifact", "nfcorpus": "nfcorpus-dev", "vaswani": "vaswani", "cacm": "cacm"}
TRAIN_QRELS = {"scifact": "scifact/qrels/train.tsv", "nfcorpus": "nfcorpus/qrels/train.tsv"}
TARGETS = {"2x32": 0.30, "3x64": 0.45, "4x128": 0.60, "5x256": 0.75}  # share of the full size to keep
VARIANTS = {
    "base": "base model, truncated",
    "pca-other": "PCA rotation only, fitted on the other corpora",
    "labelfree-other": "label-free maps, other corpora, last layer orthogonal",
    "labelfree-other-free": "label-free maps, other corpora, last layer free",
    "labelfree-other-shared": "label-free, other corpora, one shared free map",
    "labelfree-other-mlp": "label-free residual MLPs, other corpora, last layer orthogonal",
    "supervised": "SciFact + NFCorpus train labels, last layer orthogonal",
}
TRANSDUCTIVE = {
    "pca-self": "PCA rotation only, fitted on the evaluation corpus",
    "labelfree-self": "label-free maps on the evaluation corpus, last layer orthogonal",
}


@dataclasses.dataclass
class Collection:
    """One collection's cached vectors: passages and queries of every layer, with their ids."""

    docids: list[str]
    passages: dict[int, torch.Tensor]
    qids: list[str]
    queries: dict[int, torch.Tensor]


def load_collection(model: StarbucksModel, key: str, layers: list[int], cache: Path) -> Collection:
    c = COLLECTIONS[key]
    docs = list(iter_corpus(c.corpus))
    topics = read_topics(c.topics)
    name = Path(c.corpus).name or key
    passages = cached_pooled(model, [d.text for d in docs], layers, cache, f"{name}-passages")
    queries = cached_pooled(model, list(topics.values()), layers, cache, f"{name}-queries")
    return Collection([d.docid for d in docs], passages, list(topics), queries)


def training_set(collections: dict[str, Collection], names: list[str], labelled: bool) -> TrainingSet:
    """The passages of the named corpora; with ``labelled``, their train-split queries and positives."""
    layers = list(collections[names[0]].passages)
    passages = {layer: torch.cat([collections[n].passages[layer] for n in names]) for layer in layers}
    if not labelled:
        return TrainingSet(passages)
    rows_by_name, positives, offset = {}, [], 0
    from experiments.datasets import DATA

    for n in names:
        col = collections[n]
        if n in TRAIN_QRELS:
            qrels = read_qrels(DATA / TRAIN_QRELS[n])
            row = {d: i + offset for i, d in enumerate(col.docids)}
            judged = [i for i, q in enumerate(col.qids) if q in qrels]
            rows_by_name[n] = judged
            positives += [sorted(row[d] for d, g in qrels[col.qids[i]].items() if g > 0 and d in row) for i in judged]
        offset += len(col.docids)
    queries = {layer: torch.cat([collections[n].queries[layer][rows] for n, rows in rows_by_name.items()])
               for layer in layers}
    return TrainingSet(passages, queries, positives)


def pca_only(model: StarbucksModel, data: TrainingSet, layers: list[int]):
    return plain_adaptors(initial_adaptors(model, data.passages, AdaptSettings(), layers))


def evaluate(model: StarbucksModel, adaptors, qrels_path: str | Path, col: Collection,
             sizes: list[Size]) -> dict[str, float]:
    """nDCG@10 of every size by exact dot-product search over the whole collection."""
    qrels = read_qrels(qrels_path)
    rows = [i for i, q in enumerate(col.qids) if q in qrels]
    model.set_adaptors(adaptors)
    try:
        with torch.no_grad():
            d = vectors_from_pooled(model, col.passages, sizes)
            q = vectors_from_pooled(model, col.queries, sizes, torch.tensor(rows))
    finally:
        model.set_adaptors(None)
    out = {}
    for size in sizes:
        top = torch.topk(q[size] @ d[size].T, 10, dim=1)
        run = {col.qids[r]: {col.docids[j]: float(s) for j, s in zip(ix.tolist(), sc.tolist())}
               for r, ix, sc in zip(rows, top.indices, top.values)}
        out[str(size)] = float(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10])
    return out


def variant_settings(name: str, steps: int, seed: int, **tuned) -> AdaptSettings:
    common = dict(steps=steps, seed=seed, **tuned)
    if name.endswith("-free"):
        return AdaptSettings(orthogonal_last=False, **common)
    if name.endswith("-shared"):
        return AdaptSettings(shared=True, orthogonal_last=False, **common)
    if name.endswith("-mlp"):
        return AdaptSettings(kind="mlp", mlp_hidden=384, **common)
    return AdaptSettings(**common)


def shares(scores: dict[str, float]) -> dict[str, float]:
    full = max(scores, key=lambda s: Size.parse(s))
    return {s: scores[s] / scores[full] if scores[full] else 0.0 for s in TARGETS}


def markdown(results: dict) -> str:
    sizes = results["sizes"]
    lines = [f"# Adaptors on a frozen {results['model_name']}: nDCG@10 per size, exact search", "",
             f"Command: `{results['command']}`  ", f"Commit: {results['git_commit']}  ",
             f"Threads: {results['machine']['threads']}, load average {results['machine']['load_average']}, "
             f"{results['steps']} steps per trained variant", ""]
    for title, table in (("Inductive (no evaluation-corpus text)", results["scores"]),
                         ("Transductive (fitted label-free on the evaluation corpus), apart", results["transductive"])):
        lines += [f"## {title}", "", "| set | variant | " + " | ".join(sizes) + " | kept 2x32/3x64/4x128/5x256 | targets met |",
                  "|---|---|" + "---|" * len(sizes) + "---|---|"]
        for dataset, variants in table.items():
            for name, scores in variants.items():
                kept = shares(scores)
                met = sum(kept[s] >= t for s, t in TARGETS.items())
                lines.append(f"| {dataset} | {name} | " + " | ".join(f"{scores[s]:.3f}" for s in sizes)
                             + " | " + " / ".join(f"{100 * kept[s]:.0f} %" for s in TARGETS) + f" | {met} of 4 |")
        lines.append("")
    lines += ["Targets: 2x32..5x256 keep 30 / 45 / 60 / 75 % of the set's full-size nDCG@10.", "",
              "Variants: " + "; ".join(f"`{k}` {v}" for k, v in {**VARIANTS, **TRANSDUCTIVE}.items()) + ".", ""]
    if results.get("full_size_equal_to_base"):
        lines.append("Full size equal to the base's (within 1e-9) for: "
                     + ", ".join(f"{d} {', '.join(v)}" for d, v in results["full_size_equal_to_base"].items()) + ".")
    return "\n".join(lines) + "\n"


def time_adapt(corpus: str, model: str, threads: int) -> None:
    """``starbucks adapt CORPUS`` from scratch, timed: encoding, training and saving."""
    import shutil

    from training.adapt import adapt, read_corpus_texts

    out = ROOT / "experiments" / "indexes" / "adapt-time"
    shutil.rmtree(out, ignore_errors=True)
    passages = len(read_corpus_texts(corpus)[1])
    settings = AdaptSettings()
    start = time.time()
    adapt(corpus, out, model=model, settings=settings, progress=False)
    seconds = time.time() - start
    log = torch.load(out / "adapt" / "state.pt", weights_only=False)["log"]
    result = {**record("experiments.training.adaptors", threads), "corpus": corpus, "passages": passages,
              "settings": settings.to_dict(), "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2),
              "loss_first_10_steps": sum(e["loss"] for e in log[:10]) / 10,
              "loss_last_10_steps": sum(e["loss"] for e in log[-10:]) / 10}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "adapt-time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("passages", "seconds", "minutes")}))


VALIDATION_GRID = [(1e-3, 0.05, 300), (3e-3, 0.05, 300), (1e-3, 0.02, 300)]  # (learning rate, temperature, steps)


def validate(model: StarbucksModel, collections: dict[str, Collection], sizes: list[Size], args) -> None:
    """Label-free maps on the other corpora, scored on the SciFact and NFCorpus train-split judgements
    (never a test or dev split) for each setting of the grid; the best mean nDCG@10 over 2x32..5x256."""
    from experiments.datasets import DATA

    results = {**record("experiments.training.adaptors", args.threads), "model_name": str(args.model),
               "sizes": [str(s) for s in sizes], "validation": {}, "seed": args.seed}
    for lr, temperature, steps in VALIDATION_GRID:
        key = f"lr={lr:g} temperature={temperature:g} steps={steps}"
        row = {}
        for name in TRAIN_QRELS:
            others = [n for n in TRAIN_CORPORA if n != name]
            settings = AdaptSettings(learning_rate=lr, temperature=temperature, steps=steps, seed=args.seed)
            adaptors, _ = train_adaptors(model, training_set(collections, others, labelled=False), settings,
                                         progress=False)
            row[name] = evaluate(model, adaptors, DATA / TRAIN_QRELS[name], collections[name], sizes)
        row["mean_2x32_5x256"] = sum(row[n][s] for n in TRAIN_QRELS for s in TARGETS) / (len(TARGETS) * len(TRAIN_QRELS))
        results["validation"][key] = row
        print(key, json.dumps({n: {k: round(v, 3) for k, v in row[n].items()} for n in TRAIN_QRELS}),
              round(row["mean_2x32_5x256"], 4), flush=True)
    results["chosen"] = max(results["validation"], key=lambda k: results["validation"][k]["mean_2x32_5x256"])
    lines = ["# Adaptor settings chosen on train-split judgements (label-free maps, other corpora)", "",
             f"Command: `{results['command']}`  ", f"Commit: {results['git_commit']}  ",
             f"Threads: {results['machine']['threads']}, load average {results['machine']['load_average']}", "",
             "| setting | set | " + " | ".join(results["sizes"]) + " | mean 2x32..5x256 (both sets) |",
             "|---|---|" + "---|" * len(sizes) + "---|"]
    for key, row in results["validation"].items():
        for name in TRAIN_QRELS:
            lines.append(f"| {key} | {name} train | " + " | ".join(f"{row[name][s]:.3f}" for s in results["sizes"])
                         + f" | {row['mean_2x32_5x256']:.4f} |")
    lines += ["", f"Chosen: {results['chosen']}", ""]
    (RESULTS / "adaptors-validation.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "adaptors-validation.md").write_text("\n".join(lines))
    print("chosen:", results["chosen"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=BASE_MODEL_NAME, help="the frozen model (default: all-MiniLM-L6-v2)")
    ap.add_argument("--tag", default="", help="suffix of the results files (adaptors[-TAG].json)")
    ap.add_argument("--datasets", nargs="+", default=list(EVALUATION), choices=list(EVALUATION))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS) + list(TRANSDUCTIVE),
                    choices=list(VARIANTS) + list(TRANSDUCTIVE))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--learning-rate", type=float, default=AdaptSettings.learning_rate)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--validate", action="store_true",
                    help="only choose learning rate, temperature and steps on held-out train-split queries")
    ap.add_argument("--time-adapt", metavar="CORPUS", help="only time 'starbucks adapt CORPUS' end to end")
    args = ap.parse_args()
    setup(args.threads)
    if args.time_adapt:
        time_adapt(args.time_adapt, args.model, args.threads)
        return
    started = time.time()
    tuned = {"learning_rate": args.learning_rate, "temperature": args.temperature}
    model = StarbucksModel.load(args.model, device="cpu")
    layers = list(range(1, model.num_layers + 1))
    diag = diagonal(model.num_layers, model.hidden_size)
    sizes = sorted(set(diag) | {Size(model.num_layers, 32), Size(model.num_layers, 64)})
    cache = CACHE / (args.tag or "base")
    needed = set(TRAIN_CORPORA) | set(args.datasets)
    keys = {**TRAIN_CORPORA, **EVALUATION}
    collections = {n: load_collection(model, keys[n], layers, cache) for n in sorted(needed)}
    if args.validate:
        validate(model, collections, sizes, args)
        return
    results = {**record("experiments.training.adaptors", args.threads), "model_name": str(args.model),
               "fingerprint": model.fingerprint(), "sizes": [str(s) for s in sizes], "steps": args.steps,
               "seed": args.seed, "settings": tuned, "variants": {**VARIANTS, **TRANSDUCTIVE}, "trained_on": {}, "scores": {},
               "transductive": {}, "seconds": {}}
    supervised = None
    for dataset in args.datasets:
        others = [n for n in TRAIN_CORPORA if n != dataset]
        results["trained_on"][dataset] = others
        for name in args.variants:
            t0 = time.time()
            transductive = name in TRANSDUCTIVE
            if name == "base":
                adaptors = None
            elif name == "supervised":
                if supervised is None:
                    data = training_set(collections, list(TRAIN_QRELS), labelled=True)
                    supervised, _ = train_adaptors(model, data, variant_settings(name, args.steps, args.seed, **tuned),
                                                   progress=False)
                adaptors = supervised
            else:
                data = training_set(collections, [dataset] if transductive else others, labelled=False)
                if name.startswith("pca-"):
                    adaptors = pca_only(model, data, layers)
                else:
                    adaptors, _ = train_adaptors(model, data, variant_settings(name, args.steps, args.seed, **tuned),
                                                 progress=False)
            scores = evaluate(model, adaptors, COLLECTIONS[EVALUATION[dataset]].qrels, collections[dataset], sizes)
            (results["transductive"] if transductive else results["scores"]).setdefault(dataset, {})[name] = scores
            results["seconds"][f"{dataset}/{name}"] = round(time.time() - t0, 1)
            print(dataset, name, json.dumps({k: round(v, 3) for k, v in scores.items()}), flush=True)
    full = str(max(sizes))
    results["full_size_equal_to_base"] = {
        d: [n for n, s in {**results["scores"].get(d, {}), **results["transductive"].get(d, {})}.items()
            if "base" in results["scores"].get(d, {}) and abs(s[full] - results["scores"][d]["base"][full]) < 1e-9]
        for d in args.datasets}
    results["seconds"]["total"] = round(time.time() - started, 1)
    stem = "adaptors" + (f"-{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(results))
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
