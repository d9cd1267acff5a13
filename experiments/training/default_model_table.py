"""The per-size table of the candidate default models against their base, from ``results/*.json``.

    python -m experiments.training.default_model_table > experiments/training/results/default-model.md
"""
from __future__ import annotations

import json
import sys

from experiments.training.compare import HERE, table

RUNS = {
    "all-MiniLM-L6-v2": "base all-MiniLM-L6-v2",
    "srl-lr5e-5": "SRL, SciFact+NFCorpus, lr 5e-5, 320 steps",
    "srl-lr2e-4-teacher": "SRL + base teacher, SciFact+NFCorpus, lr 2e-4, 300 steps",
    "srl-scifact-teacher": "SRL + base teacher, SciFact only, lr 2e-4, 160 steps",
}


def main() -> None:
    results = {}
    for name, label in RUNS.items():
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            results[label] = json.loads(path.read_text())
    datasets = [d for d in ("scifact", "nfcorpus", "stsb", "sickr") if any(d in r["scores"] for r in results.values())]
    sys.stdout.write(table(results, datasets))


if __name__ == "__main__":
    main()
