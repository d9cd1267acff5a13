"""Resumable checkpoints: the model folder plus optimiser, schedule, RNG and step."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from starbucks.model import StarbucksModel

PREFIX = "step-"


def checkpoint_dir(output: Path) -> Path:
    return Path(output) / "checkpoints"


def save_checkpoint(output: Path, step: int, model: StarbucksModel, state: dict, keep: int) -> Path:
    """Write atomically (a ``.partial`` folder renamed at the end), then drop all but the newest ``keep``."""
    root = checkpoint_dir(output)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{PREFIX}{step:08d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp / "model")
    torch.save(dict(state, step=step), tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(output)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output: Path) -> list[Path]:
    root = checkpoint_dir(output)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".partial"))


def latest_checkpoint(output: Path) -> Path | None:
    found = list_checkpoints(output)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
