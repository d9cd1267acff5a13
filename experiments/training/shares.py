"""What each base share of one training run gives on the test sets: the cost of holding the full size.

    python -m experiments.training.shares --config experiments/configs/starbucks-minilm-l6-anchor-general.json

A report, never an input to a choice: ``default_model``'s ``select`` stage picks the shipped share on
validation sets alone. This scores every share it tries (``BASE_SHARES``) on the test sets, so the
trade between the full size and the small sizes is visible where the validation sets cannot show it
(web search: no web validation set exists offline). The base model (share 1) and the recipe's chosen
share come from the results ``evaluate`` already wrote (the chosen share as float16, as it would
ship); the other shares are mixed as float32 and evaluated here. Writes
``results/<recipe>-shares.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.training.compare import table
from experiments.training.default_model import BASE_RESULTS, BASE_SHARES, EVAL_SETS, RESULTS, Recipe, _full
from experiments.training.per_size import evaluate
from training.merge import merge_folders


def shares_path(recipe: Recipe) -> Path:
    return RESULTS / f"{recipe.name}-shares.json"


def score_shares(recipe: Recipe) -> dict[str, dict]:
    """Per-share results, keyed "share S", each written as soon as it is known (a rerun skips them)."""
    out = shares_path(recipe)
    done = json.loads(out.read_text()) if out.exists() else {}
    chosen = recipe.chosen_share()
    done["share 1 (base)"] = json.loads((RESULTS / BASE_RESULTS).read_text())
    done[f"share {chosen:g} (chosen)"] = json.loads(recipe.results.read_text())
    for share in (s for s in BASE_SHARES if s != chosen):
        known = done.setdefault(f"share {share:g}", {"sizes": [], "scores": {}, "seconds": {}})
        todo = [d for d in EVAL_SETS if d not in known["scores"]]
        if not todo:
            continue
        mix = recipe.mix(share)
        if not (mix / "config.json").is_file():
            merge_folders(recipe.cfg.output, mix, base_weight=share, dtype="float32")
        result = evaluate(str(mix), todo)
        known["sizes"] = result["sizes"]
        known["scores"].update(result["scores"])
        known["seconds"].update(result["seconds"])
        out.write_text(json.dumps(done, indent=2) + "\n")
    done = {k: done[k] for k in sorted(done, key=lambda k: float(k.split()[1]))}
    out.write_text(json.dumps(done, indent=2) + "\n")
    return done


def summary(done: dict[str, dict], small: str) -> str:
    """One small size and the full size per test set, one row per share."""
    header = "| base share | " + " | ".join(f"{d} {small} | {d} full" for d in EVAL_SETS) + " |"
    lines = [header, "|---|" + "---|---|" * len(EVAL_SETS)]
    for key, r in done.items():
        cells = [f"{r['scores'][d][small]:.3f} | {_full(r['scores'][d]):.3f}" for d in EVAL_SETS]
        lines.append(f"| {key.removeprefix('share ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="a recipe already selected and evaluated")
    ap.add_argument("--size", default="3x64", help="the small size the summary shows beside the full size")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = Recipe(args.config)
    done = score_shares(recipe)
    command = f"python -m experiments.training.shares --config experiments/configs/{recipe.path.name}"
    shares_path(recipe).with_suffix(".md").write_text(
        f"Test sets at each base share of one run, nDCG@10 or Spearman (`{command}`). A report only: "
        "the shipped share is chosen on validation sets.\n\n" + summary(done, args.size) + "\n" + table(done, EVAL_SETS))


if __name__ == "__main__":
    main()
