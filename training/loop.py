"""The training loop shared by every method: AdamW, warm-up, accumulation, checkpoints, logs."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from starbucks.model import StarbucksModel
from training.checkpoint import latest_checkpoint, load_state, save_checkpoint
from training.config import TrainConfig
from training.data import batch_rng
from training.objectives import build_objective
from training.setup import load_student

LOG_NAME = "train_log.jsonl"
CONFIG_COPY = "train_config.json"


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / cfg.grad_accum))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up to the peak, then linear or cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)


def make_optimizer(cfg: TrainConfig, modules) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights, as BERT fine-tuning does."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )


def precision_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype. "auto" is fp32 on CPU (half precision is slower there) and bf16, or fp16
    where bf16 is unsupported, on a GPU; "bf16" and "fp16" are honoured on any device."""
    if cfg.precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def save_model(model: StarbucksModel, output: Path, dtype: str) -> None:
    """Write the trained model as a plain model folder the indexer and searcher load."""
    if dtype != "float32":
        model = copy.deepcopy(model).to(getattr(torch, dtype))
    model.save(output)


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Run (or resume) one training run; returns the output folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    output = Path(cfg.output)
    checkpoint = latest_checkpoint(output) if cfg.resume else None
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_student(cfg, checkpoint, device)
    objective, batches, per_epoch = build_objective(cfg, model)
    objective.to(model.device)
    steps = total_steps(cfg, per_epoch)
    warmup = max(1, math.ceil(cfg.warmup_ratio * steps))
    optimizer = make_optimizer(cfg, [model, objective])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, warmup, cfg.schedule))
    dtype = precision_dtype(cfg, model.device)
    scaler = torch.amp.GradScaler(model.device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
    if cfg.grad_checkpointing:
        model.backbone.activation_checkpointing_enable({"use_reentrant": False})

    start = 0
    output.mkdir(parents=True, exist_ok=True)
    log_path = output / LOG_NAME
    if checkpoint is not None:
        state = load_state(checkpoint)
        start = state["step"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        objective.load_state_dict(state["objective"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        _truncate_log(log_path, start)
    elif log_path.exists():
        log_path.unlink()
    (output / CONFIG_COPY).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    model.train()
    objective.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, desc=f"train {cfg.method}", unit="step")
    started = time.time()
    with open(log_path, "a") as log:
        for step in range(start, steps):
            sums: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                index = step * cfg.grad_accum + micro
                batch = batches(index).to(model.device)
                with torch.autocast(model.device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                    losses = objective(model, batch, batch_rng(cfg.seed + 1, index))
                loss = sum(losses.values()) / cfg.grad_accum
                scaler.scale(loss).backward()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / cfg.grad_accum
            scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if scaler.get_scale() >= scale:  # a step fp16 loss scaling skipped leaves the schedule where it was
                scheduler.step()
            done = step + 1
            record = {"step": done, "loss": sum(sums.values()), "losses": sums,
                      "lr": lr, "seconds": round(time.time() - started, 2)}
            if done % cfg.log_every == 0 or done == steps:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix({k: f"{v:.3f}" for k, v in sums.items()}, refresh=False)
            bar.update(1)
            if cfg.save_every and done % cfg.save_every == 0 and done < steps:
                state = {
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "objective": objective.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                }
                save_checkpoint(output, done, model, state, cfg.keep_checkpoints)
    bar.close()
    model.eval()
    save_model(model, output, cfg.save_dtype)
    return output


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
