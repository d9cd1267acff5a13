"""Mixing a trained run with its base model (WiSE-FT)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from retrieval.cli import main
from starbucks.errors import InputError
from starbucks.model import StarbucksModel
from training.merge import merge_with_base
from training_fixtures import tiny_train_model, train_model_dir  # noqa: F401


def _shifted(model: StarbucksModel, by: float) -> StarbucksModel:
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(by)
    return model


def _weights(model: StarbucksModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


@pytest.mark.parametrize("base_weight", [0.0, 0.25, 1.0])
def test_merge_is_the_weighted_average(base_weight):
    base = tiny_train_model()
    tuned = _shifted(tiny_train_model(), 0.4)
    before, reference = _weights(tuned), _weights(base)
    merge_with_base(tuned, base, base_weight)
    for key, value in tuned.backbone.state_dict().items():
        if value.is_floating_point():
            expected = (1 - base_weight) * before[key] + base_weight * reference[key]
            assert torch.allclose(value, expected, atol=1e-6), key


def test_merge_changes_every_size_and_the_fingerprint():
    base, tuned = tiny_train_model(), _shifted(tiny_train_model(), 0.1)
    batch = tuned.tokenizer(["a passage on tidal energy"], return_tensors="pt", return_token_type_ids=False)
    before = tuned.embed(**batch, sizes=tuned.config.sizes)
    fingerprint = tuned.fingerprint()
    merge_with_base(tuned, base, 0.5)
    after = tuned.embed(**batch, sizes=tuned.config.sizes)
    assert all(not torch.allclose(before[s], after[s]) for s in tuned.config.sizes)
    assert tuned.fingerprint() != fingerprint


def test_merge_refuses_another_architecture_and_a_weight_out_of_range():
    base, tuned = tiny_train_model(), tiny_train_model()
    with pytest.raises(ValueError, match="base_weight"):
        merge_with_base(tuned, base, 1.5)
    other = StarbucksModel(type(base.backbone)(base.backbone.config.__class__(
        vocab_size=base.backbone.config.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False),
        base.tokenizer, base.config.__class__(sizes=[base.config.sizes[0]]), name="three-layer")
    with pytest.raises(InputError, match="not the same architecture"):
        merge_with_base(tuned, other, 0.5)


def test_merge_command_writes_a_loadable_half_precision_folder(tmp_path, train_model_dir, capsys):  # noqa: F811
    run = tmp_path / "run"
    _shifted(StarbucksModel.load(train_model_dir, device="cpu"), 0.2).save(run)
    (run / "train_config.json").write_text(json.dumps({"model": str(train_model_dir)}))
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--out", str(out), "--base-weight", "0.5"]) == 0
    assert "merged model written" in capsys.readouterr().out
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert json.loads((out / "merge.json").read_text())["base"] == str(train_model_dir)
    merged = StarbucksModel.load(out, device="cpu")
    base, tuned = StarbucksModel.load(train_model_dir, device="cpu"), StarbucksModel.load(run, device="cpu")
    key = "embeddings.word_embeddings.weight"
    mid = 0.5 * (base.backbone.state_dict()[key] + tuned.backbone.state_dict()[key])
    assert torch.allclose(merged.backbone.state_dict()[key], mid, atol=2e-3)
    assert main(["merge", str(run), "--out", str(out)]) == 2  # never overwrites
    assert "output folder exists" in capsys.readouterr().err
