"""The paper's comparison on this machine: one data set, step count and seed for every method.

Trains each method from ``experiments/configs/compare-<method>.json`` (skipped when its
output already exists), evaluates every size, and writes ``results/compare/<method>.json``
plus the table ``results/compare.md``.

    OMP_NUM_THREADS=1 python -m experiments.training.compare --datasets scifact stsb
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.training.per_size import evaluate
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, diagonal
from training.config import TrainConfig, resolve_model_path
from training.loop import train

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
RESULTS = HERE / "results" / "compare"
METHODS = ["base", "full", "mrl", "2dmse", "srl", "separate-2x32", "separate-4x128"]
LABELS = {"base": "base model, truncated", "full": "full-size fine-tune, truncated", "mrl": "MRL (last layer)",
          "2dmse": "2DMSE", "srl": "Starbucks SRL", "separate-2x32": "separate 2x32",
          "separate-4x128": "separate 4x128"}


def run(method: str, datasets: list[str], passage_max_length: int) -> dict:
    if method == "base":
        path = resolve_model_path("all-MiniLM-L6-v2")
        sizes = None
    else:
        cfg = TrainConfig.load(CONFIGS / f"compare-{method}.json")
        if not (Path(cfg.output) / "config.json").is_file():
            train(cfg)
        path = cfg.output
        model = StarbucksModel.load(path, device="cpu")
        sizes = list(model.config.sizes) if cfg.method == "separate" else None
    sizes = sizes or sorted(set(diagonal(6, 384)) | {Size(6, s.dim) for s in diagonal(6, 384)})
    return evaluate(path, datasets, passage_max_length, sizes)


def table(results: dict[str, dict], datasets: list[str]) -> str:
    sizes = sorted({Size.parse(s) for r in results.values() for s in r["sizes"]})
    lines = []
    for name in datasets:
        lines += [f"### {name}", "", "| method | " + " | ".join(map(str, sizes)) + " |",
                  "|---|" + "---|" * len(sizes)]
        for method, r in results.items():
            scores = r["scores"].get(name, {})
            lines.append(f"| {LABELS.get(method, method)} | "
                         + " | ".join(f"{scores[str(s)]:.3f}" if str(s) in scores else "" for s in sizes) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--datasets", nargs="+", default=["scifact", "stsb"])
    ap.add_argument("--passage-max-length", type=int, default=128, help="evaluation passage length")
    args = ap.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        out = RESULTS / f"{method}.json"
        done = json.loads(out.read_text()) if out.exists() else {"scores": {}}
        todo = [d for d in args.datasets if d not in done["scores"]]
        if todo:
            result = run(method, todo, args.passage_max_length)
            result["scores"] = {**done["scores"], **result["scores"]}
            out.write_text(json.dumps(result, indent=2) + "\n")
    results = {m: json.loads((RESULTS / f"{m}.json").read_text()) for m in METHODS if (RESULTS / f"{m}.json").exists()}
    (RESULTS.parent / "compare.md").write_text(table(results, args.datasets))


if __name__ == "__main__":
    main()
