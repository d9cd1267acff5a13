"""The paper's comparison on this machine: one data set, step count and seed for every method.

Trains each method from ``experiments/configs/compare-<method>.json`` (skipped when its
output already exists; a config whose base model is another compare run's output trains
that one first, as SMAE pre-training before SMAE+SRL), evaluates every size, and writes
``results/compare/<method>.json`` plus the table ``results/compare.md``. The ``adapt-*``
rows (``experiments.training.compare_adaptors``) train per-layer maps on a frozen backbone
from the same train files, steps and seed.

    OMP_NUM_THREADS=1 python -m experiments.training.compare --datasets scifact nfcorpus dl19 stsb sickr
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.runtime import record
from experiments.training import compare_adaptors
from experiments.training.per_size import STS, evaluate
from starbucks.model import BASE_MODEL_NAME, StarbucksModel
from starbucks.sizes import Size, diagonal
from training.config import TrainConfig
from training.loop import CONFIG_COPY, train

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
RESULTS = HERE / "results" / "compare"
SEPARATE = ["1x16", "2x32", "3x64", "4x128", "5x256"]
METHODS = (["base", "full", "mrl", "2dmse", "srl", "smae-srl"] + [f"separate-{s}" for s in SEPARATE]
           + list(compare_adaptors.METHODS))
LABELS = {"base": "base model, truncated", "full": "full-size fine-tune, truncated", "mrl": "MRL (last layer)",
          "2dmse": "2DMSE", "srl": "Starbucks SRL", "smae-srl": "Starbucks SMAE + SRL",
          **{f"separate-{s}": f"separate {s}" for s in SEPARATE},
          **{m: compare_adaptors.label(m) for m in compare_adaptors.METHODS}}
EVAL_SIZES = sorted(set(diagonal(6, 384)) | {Size(6, s.dim) for s in diagonal(6, 384)})


TABLE_DATASETS = ["scifact", "nfcorpus", "dl19", "stsb", "sickr"]


def trained(name: str) -> TrainConfig:
    """The config ``compare-<name>.json``, its run trained (after the run it starts from, if any)."""
    cfg = TrainConfig.load(CONFIGS / f"compare-{name}.json")
    for other in CONFIGS.glob("compare-*.json"):
        if other.stem != f"compare-{name}" and TrainConfig.load(other).output == cfg.model:
            trained(other.stem.removeprefix("compare-"))
    if not (Path(cfg.output) / "config.json").is_file() or not cfg.matches(Path(cfg.output) / CONFIG_COPY):
        train(cfg)  # missing, or trained from another version of the config
    return cfg


def config_of(method: str) -> dict | None:
    if method in compare_adaptors.METHODS:
        return compare_adaptors.config(method)
    return None if method == "base" else TrainConfig.load(CONFIGS / f"compare-{method}.json").to_dict()


def same_config(saved: dict | None, method: str) -> bool:
    if method in compare_adaptors.METHODS:
        return saved == config_of(method)
    return (saved and TrainConfig.as_read_now(saved)) == config_of(method)


def run(method: str, datasets: list[str], passage_max_length: int) -> dict:
    if method in compare_adaptors.METHODS:
        if compare_adaptors.METHODS[method].backbone == "srl":
            trained("srl")
        result = compare_adaptors.run(method, datasets, passage_max_length, EVAL_SIZES)
        result["config"] = config_of(method)
        return result
    if method == "base":
        path = BASE_MODEL_NAME
        sizes = None
    else:
        cfg = trained(method)
        path = cfg.output
        model = StarbucksModel.load(path, device="cpu")
        sizes = list(model.config.sizes) if cfg.method == "separate" else None
    sizes = sizes or EVAL_SIZES
    result = evaluate(path, datasets, passage_max_length, sizes)
    result["config"] = config_of(method)
    return result


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


def ordering(results: dict[str, dict], datasets: list[str]) -> str:
    """The paper's claims, checked per diagonal size: SRL against 2DMSE and against a separate model."""
    if "srl" not in results:
        return ""
    lines = ["### SRL against 2DMSE and separately trained models (diagonal sizes)", "",
             "| data set | size | SRL | 2DMSE | SRL - 2DMSE | separate | SRL - separate |", "|---|---|---|---|---|---|---|"]
    wins = {"2dmse": [0, 0], "separate": [0, 0]}
    for name in datasets:
        srl = results["srl"]["scores"].get(name, {})
        for size in sorted(Size.parse(s) for s in srl):
            if size not in diagonal(6, 384):
                continue
            cells = [f"{srl[str(size)]:.3f}"]
            for other in ("2dmse", f"separate-{size}"):
                theirs = results.get(other, {}).get("scores", {}).get(name, {}).get(str(size))
                if theirs is None:
                    cells += ["", ""]
                    continue
                cells += [f"{theirs:.3f}", f"{srl[str(size)] - theirs:+.3f}"]
                key = "2dmse" if other == "2dmse" else "separate"
                wins[key][0] += srl[str(size)] > theirs
                wins[key][1] += 1
            lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    lines += ["", f"SRL is above 2DMSE in {wins['2dmse'][0]} of {wins['2dmse'][1]} (data set, size) pairs "
              f"and above a separately trained model in {wins['separate'][0]} of {wins['separate'][1]}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--datasets", nargs="+", default=TABLE_DATASETS)
    ap.add_argument("--passage-max-length", type=int, default=128, help="evaluation passage length")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results do not depend on it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        out = RESULTS / f"{method}.json"
        done = json.loads(out.read_text()) if out.exists() else {"scores": {}}
        if not same_config(done.get("config"), method):
            done = {"scores": {}}  # scores of another version of the config
        todo = [d for d in args.datasets if d not in done["scores"]
                and not (method in compare_adaptors.TRANSDUCTIVE and d in STS)]  # no corpus to adapt on
        if todo:
            result = {**record("experiments.training.compare", args.threads), **run(method, todo, args.passage_max_length)}
            result["scores"] = {**done["scores"], **result["scores"]}
            result["seconds"] = {**done.get("seconds", {}), **result["seconds"]}
            out.write_text(json.dumps(result, indent=2) + "\n")
    results = {m: json.loads((RESULTS / f"{m}.json").read_text()) for m in METHODS if (RESULTS / f"{m}.json").exists()}
    shown = [d for d in TABLE_DATASETS if any(d in r["scores"] for r in results.values())]  # every set scored
    apart = {m: results.pop(m) for m in compare_adaptors.TRANSDUCTIVE if m in results}
    transductive = ("## Transductive, apart: adapted label-free on the evaluation corpus itself\n\n"
                    + table(apart, [d for d in shown if any(d in r["scores"] for r in apart.values())])) if apart else ""
    (RESULTS.parent / "compare.md").write_text(
        f"Evaluation passage length {args.passage_max_length}; configs `experiments/configs/compare-*.json`; "
        f"adaptor rows `experiments/training/compare_adaptors.py` ({compare_adaptors.STEPS} steps, seed "
        f"{compare_adaptors.SEED}, the same train files).\n\n"
        + table(results, shown) + "\n" + ordering(results, shown) + transductive)


if __name__ == "__main__":
    main()
