"""Mix a fine-tuned model's weights with its base model's (WiSE-FT, Wortsman et al. 2022).

Fine-tuning on a small collection makes the sub-sizes usable but can cost the full
size some of the base model's generality. A weighted average of the two weight sets
keeps most of the sub-sizes' gain and gives the full size back most of what it lost;
``base_weight`` sets the trade (0 keeps the fine-tuned weights, 1 the base model's).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from starbucks.errors import InputError
from starbucks.model import StarbucksModel
from training.loop import save_model


def merge_with_base(tuned: StarbucksModel, base: StarbucksModel, base_weight: float) -> StarbucksModel:
    """Replace ``tuned``'s weights by ``(1 - base_weight) * tuned + base_weight * base``, in place."""
    if not 0.0 <= base_weight <= 1.0:
        raise ValueError(f"base_weight must lie in [0, 1], not {base_weight}")
    ours, theirs = tuned.backbone.state_dict(), base.backbone.state_dict()
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    if shapes != {k: tuple(v.shape) for k, v in theirs.items()}:
        raise InputError(f"{base.name} and {tuned.name} are not the same architecture; cannot mix their weights")
    with torch.no_grad():
        for key, value in ours.items():
            if value.is_floating_point():
                mixed = (1 - base_weight) * value.float() + base_weight * theirs[key].float()
                value.copy_(mixed.to(value.dtype))
    tuned._fingerprint = None  # the weights changed; depth views share them, the cached fingerprint does not
    return tuned


def base_of(run: Path) -> str:
    """The base model a training run started from, as its saved config records it."""
    cfg = run / "train_config.json"
    if not cfg.is_file():
        raise InputError("no train_config.json: pass the base model explicitly", run)
    return json.loads(cfg.read_text(encoding="utf-8"))["model"]


def merge_folders(run: str | Path, out: str | Path, base: str | None = None, base_weight: float = 0.5,
                  dtype: str = "float16") -> Path:
    """Write the mix of a trained run and its base model as a model folder; ``out`` appears whole or not at all."""
    run, out = Path(run), Path(out)
    if out.exists():
        raise InputError("output folder exists; remove it or pick another", out)
    tuned = StarbucksModel.load(run, device="cpu")
    reference = StarbucksModel.load(base or base_of(run), device="cpu")
    merge_with_base(tuned, reference, base_weight)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_model(tuned, partial, dtype)
    (partial / "merge.json").write_text(json.dumps(
        {"run": str(run), "base": base or base_of(run), "base_weight": base_weight, "dtype": dtype}, indent=2) + "\n")
    partial.rename(out)
    return out
