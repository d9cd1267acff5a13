"""Picks the objective and the batch source a config's method calls for."""
from __future__ import annotations

from typing import Callable

from torch import nn

from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.config import TrainConfig
from training.data import RetrievalBatches, load_groups, read_texts
from training.setup import configured_sizes, temperature


def _teacher(cfg: TrainConfig, model: StarbucksModel, device):
    from training.losses.srl import Teacher

    if not cfg.teacher:
        return None
    teacher = StarbucksModel.load(cfg.model if cfg.teacher == "base" else cfg.teacher, device=str(device))
    if teacher.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ValueError("the teacher must share the student's tokenizer")
    return Teacher(teacher, temperature(cfg, teacher))


def build_objective(cfg: TrainConfig, model: StarbucksModel) -> tuple[nn.Module, Callable, int]:
    """(objective, batch source: index -> batch, batches per epoch)."""
    if cfg.method == "sts":
        from training.losses.sts import build_sts

        return build_sts(cfg, model)
    if cfg.method == "smae":
        from training.losses.smae import build_smae

        return build_smae(cfg, model)
    from training.losses.srl import RetrievalObjective
    from training.losses.twodmse import TwoDMSEObjective

    groups = load_groups(cfg.train_files, cfg.train_group_size)
    batches = RetrievalBatches(
        groups, model.tokenizer, cfg.batch_size, cfg.train_group_size, cfg.query_max_length,
        cfg.passage_max_length, cfg.seed, model.config.query_prefix, model.config.passage_prefix,
        [t for path in cfg.anchor_files for t in read_texts(path)], cfg.anchor_batch_size,
    )
    temp = temperature(cfg, model)
    if cfg.method == "2dmse":
        dims = [s.dim for s in configured_sizes(cfg, model)]
        objective = TwoDMSEObjective(model.num_layers, model.hidden_size, dims, temp,
                                     cfg.kl_weight, cfg.twodmse_kl_temperature)
    else:
        # srl, and with the model's trained sizes: full (one size), mrl (last layer), separate.
        sizes = [Size.parse(s) for s in model.config.sizes]
        kl = cfg.kl_weight if cfg.method == "srl" else 0.0
        objective = RetrievalObjective(sizes, temp, cfg.ce_weight, kl,
                                       _teacher(cfg, model, model.device), cfg.teacher_weight, cfg.anchor_weight)
    return objective, batches, len(batches)
