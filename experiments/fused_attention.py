"""The ONNX encoder's self-attention, traced against fused: speed of one query, and agreement.

A BERT layer traced from torch attends through some 40 small nodes (projections, reshapes,
transposes, softmax, shape arithmetic); ``starbucks.onnx_encoder.export`` writes it as one
``com.microsoft`` Attention node over the joined query, key and value weights instead (int8:
QAttention). This compares the two exports of the same model, fp32 and int8: the median time
of one graph run encoding one topic up to each layer (one thread, the four graphs interleaved
per topic, so load from other work falls on all alike), and the largest difference between
their pooled vectors.

    python -m experiments.fused_attention --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/fused_attention/fused_attention.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments import runtime
from experiments.datasets import COLLECTIONS
from retrieval.evaluate import judged_topics
from starbucks import onnx_encoder
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

OUT = Path(__file__).resolve().parent / "results" / "fused_attention"
FORMS = ("traced", "fused")


def exports(model: StarbucksModel, root: Path) -> dict[tuple[str, str], Path]:
    """Both exports of ``model``, fp32 and int8, written under ``root``."""
    folders = {}
    for form in FORMS:
        fp32, int8 = root / f"{form}-fp32", root / f"{form}-int8"
        fp32.mkdir(), int8.mkdir()
        onnx_encoder.export(model, fp32, fused=form == "fused")
        onnx_encoder.quantize(fp32, int8)
        folders[form, "fp32"], folders[form, "int8"] = fp32, int8
    return folders


def sessions(folders: dict, exits: tuple[int, ...]) -> dict:
    """One-thread sessions of each export's exit graph at ``exits``, set up as the encoder sets its own."""
    import onnxruntime as ort

    options = onnx_encoder.session_options(1)
    return {key: ort.InferenceSession(onnx_encoder.exit_graph(folder, exits).SerializeToString(), options,
                                      providers=["CPUExecutionProvider"]) for key, folder in folders.items()}


def feed(model: StarbucksModel, texts: list[str]) -> dict:
    batch = model.tokenizer(texts, truncation=True, max_length=model.config.query_max_length, padding=True,
                            return_tensors="np")
    return {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}


def agreement(model: StarbucksModel, folders: dict, texts: list[str]) -> dict:
    """Largest absolute difference between the traced and fused exports' pooled vectors, per variant,
    over the topics in one padded batch (so masking is exercised)."""
    exits = tuple(range(1, model.num_layers + 1))
    outputs = {key: s.run(None, feed(model, texts)) for key, s in sessions(folders, exits).items()}
    return {variant: float(max(np.abs(a - b).max() for a, b in zip(outputs["traced", variant], outputs["fused", variant])))
            for variant in ("fp32", "int8")}


def latency(model: StarbucksModel, folders: dict, texts: list[str], repeats: int) -> dict:
    """Median ms of one graph run encoding one topic up to each layer, per export."""
    times = {f"{form} {variant}": {} for form, variant in folders}
    feeds = [feed(model, [t]) for t in texts]
    for layer in range(1, model.num_layers + 1):
        runs = sessions(folders, (layer,))
        for s in runs.values():
            for f in feeds[:5]:  # warm-up
                s.run(None, f)
        per = {key: [] for key in runs}
        for f in feeds:
            for key, s in runs.items():
                took = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    s.run(None, f)
                    took.append((time.perf_counter() - t) * 1000)
                per[key].append(statistics.median(took))
        for (form, variant), v in per.items():
            times[f"{form} {variant}"][str(layer)] = statistics.median(v)
    return times


def to_markdown(results: dict) -> str:
    p = results["provenance"]
    lines = ["# ONNX self-attention: traced against fused", "",
             f"`{p['command']}` at commit {p.get('git_commit', '?')[:10]}, model {results['model']}; "
             f"one thread, load average {p['machine']['load_average']}.", ""]
    for name, r in results["collections"].items():
        layers = list(r["latency_ms"]["traced fp32"])
        lines += [f"## {name}: median ms of one graph run, one topic up to each layer "
                  f"({r['queries']} topics, {r['mean_tokens']:.1f} tokens on average)", "",
                  "| export | " + " | ".join(f"{l} layers" for l in layers) + " |", "|---" * (len(layers) + 1) + "|"]
        for key, t in r["latency_ms"].items():
            lines.append(f"| {key} | " + " | ".join(f"{t[l]:.3f}" for l in layers) + " |")
        for variant in ("fp32", "int8"):
            lines.append(f"| fused / traced, {variant} | " + " | ".join(
                f"{r['latency_ms'][f'fused {variant}'][l] / r['latency_ms'][f'traced {variant}'][l]:.2f}" for l in layers) + " |")
        lines += ["", "Largest difference between the two exports' pooled vectors: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_difference"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"])
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--queries", type=int, default=100, help="topics timed per collection")
    parser.add_argument("--repeats", type=int, default=5, help="runs per topic and export; their median counts")
    args = parser.parse_args(argv)
    runtime.setup(1)
    model = StarbucksModel.load(args.model, device="cpu")
    results = {"provenance": runtime.record("experiments.fused_attention", 1, argv),
               "model": Path(model.name).name, "collections": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folders = exports(model, Path(tmp))
        for name in args.datasets:
            c = COLLECTIONS[name]
            topics = judged_topics(read_topics(c.topics), read_qrels(c.qrels))
            texts = list(topics.values())[: args.queries]
            tokens = [len(ids) for ids in model.tokenizer(texts, truncation=True,
                                                          max_length=model.config.query_max_length)["input_ids"]]
            results["collections"][name] = {
                "queries": len(texts), "mean_tokens": float(np.mean(tokens)),
                "max_abs_difference": agreement(model, folders, texts),
                "latency_ms": latency(model, folders, texts, args.repeats)}
            print(name, json.dumps(results["collections"][name]["latency_ms"]), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fused_attention.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "fused_attention.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
