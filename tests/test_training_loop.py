"""The training loop on a tiny model: learning, checkpoints, resume, outputs."""
import json

import pytest
import torch

import training.data
from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.checkpoint import latest_checkpoint, list_checkpoints, load_state, save_checkpoint
from training.config import TrainConfig
from training.loop import LOG_NAME, train
from training_fixtures import groups_file, run_config, tiny_train_model, train_model_dir  # noqa: F401


def log_of(folder):
    return [json.loads(line) for line in (folder / LOG_NAME).read_text().splitlines()]


def weights(folder):
    return StarbucksModel.load(folder, device="cpu").backbone.state_dict()


def test_short_run_lowers_the_loss_and_writes_a_loadable_model(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "out", max_steps=30))
    out = train(cfg, progress=False)
    log = log_of(out)
    assert [r["step"] for r in log] == list(range(1, 31))
    assert set(log[0]["losses"]) == {str(s) for s in tiny_train_model().config.sizes}
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.8 * first
    model = StarbucksModel.load(out, device="cpu")
    assert model.config.sizes == tiny_train_model().config.sizes
    ids = model.tokenizer(["facts about jazz harmony"], return_tensors="pt")
    vectors = model.embed(ids["input_ids"], ids["attention_mask"], model.config.sizes)
    assert vectors[Size(4, 32)].shape == (1, 32)


def test_warmup_then_linear_decay(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "out",
                                           max_steps=10, warmup_ratio=0.2))
    lrs = [r["lr"] for r in log_of(train(cfg, progress=False))]
    peak = max(lrs)
    assert lrs.index(peak) == 1 and lrs[0] == pytest.approx(peak / 2)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < peak / 4


def test_gradient_accumulation_sees_every_micro_batch(train_model_dir, groups_file, tmp_path, monkeypatch):
    seen = []
    original = training.data.RetrievalBatches.__call__
    monkeypatch.setattr(training.data.RetrievalBatches, "__call__",
                        lambda self, i: seen.append(i) or original(self, i))
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "out",
                                           max_steps=3, grad_accum=2))
    train(cfg, progress=False)
    assert seen == [0, 1, 2, 3, 4, 5]


def test_checkpoint_round_trip(tmp_path):
    model = tiny_train_model()
    state = {"optimizer": {"lr": 0.5}, "torch_rng": torch.get_rng_state()}
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step, model, state, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000009"]
    ckpt = latest_checkpoint(tmp_path)
    loaded = StarbucksModel.load(ckpt / "model", device="cpu")
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, loaded.backbone.state_dict()[name]), name
    assert loaded.config == model.config
    restored = load_state(ckpt)
    assert restored["step"] == 9 and restored["optimizer"] == {"lr": 0.5}


def test_resume_continues_the_same_trajectory(train_model_dir, groups_file, tmp_path, monkeypatch):
    straight = train(TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "a", max_steps=6)),
                     progress=False)

    original = training.data.RetrievalBatches.__call__

    def crash_at_4(self, index):
        if index == 4:
            raise KeyboardInterrupt
        return original(self, index)

    cfg = run_config(train_model_dir, groups_file, tmp_path / "b", max_steps=6, save_every=2)
    monkeypatch.setattr(training.data.RetrievalBatches, "__call__", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig.from_dict(cfg), progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "step-00000004"

    seen = []
    monkeypatch.setattr(training.data.RetrievalBatches, "__call__",
                        lambda self, i: seen.append(i) or original(self, i))
    resumed = train(TrainConfig.from_dict(dict(cfg, resume=True)), progress=False)
    assert seen == [4, 5]  # it did not start over
    a, b = log_of(straight), log_of(resumed)
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
    wa, wb = weights(straight), weights(resumed)
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name


@pytest.mark.parametrize("method, expected", [
    ("full", ["4x32"]),
    ("mrl", ["4x8", "4x16", "4x32"]),
    ("srl", ["1x8", "2x16", "4x32"]),
])
def test_each_method_records_the_sizes_it_trained(train_model_dir, groups_file, tmp_path, method, expected):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / method, method=method,
                                           sizes=["1x8", "2x16", "4x32"], max_steps=2))
    out = train(cfg, progress=False)
    assert [str(s) for s in StarbucksModel.load(out, device="cpu").config.sizes] == expected
    assert set(log_of(out)[0]["losses"]) == set(expected)


def test_separate_baseline_trains_a_cut_encoder(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "sep", method="separate",
                                           separate_size="2x16", max_steps=2))
    model = StarbucksModel.load(train(cfg, progress=False), device="cpu")
    assert model.num_layers == 2 and [str(s) for s in model.config.sizes] == ["2x16"]


def test_float16_output(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "half", max_steps=1,
                                           save_dtype="float16"))
    out = train(cfg, progress=False)
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    # half-precision weights compute in float32 on CPU
    assert next(StarbucksModel.load(out, device="cpu").backbone.parameters()).dtype == torch.float32


def test_2dmse_run_samples_different_sizes_across_steps(train_model_dir, groups_file, tmp_path):
    cfg = TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "2d", method="2dmse",
                                           sizes=["1x8", "2x16", "4x32"], max_steps=6))
    log = log_of(train(cfg, progress=False))
    for record in log:
        sized = [Size.parse(k) for k in record["losses"] if k != "kl"]
        assert "kl" in record["losses"] and sorted(s.layer for s in sized)[-1] == 4 and len(sized) == 2
    assert len({tuple(sorted(r["losses"])) for r in log}) > 1


def test_gradient_checkpointing_gives_the_same_first_step(train_model_dir, groups_file, tmp_path):
    plain = log_of(train(TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "p", max_steps=1)),
                         progress=False))
    ckpt = log_of(train(TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path / "c", max_steps=1,
                                                         grad_checkpointing=True)), progress=False))
    assert ckpt[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_run_learns_and_checkpoints_its_scaler(train_model_dir, groups_file, tmp_path, precision):
    cfg = run_config(train_model_dir, groups_file, tmp_path / precision, max_steps=30, precision=precision,
                     save_every=10)
    out = train(TrainConfig.from_dict(cfg), progress=False)
    log = log_of(out)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert sum(r["loss"] for r in log[-5:]) < 0.8 * sum(r["loss"] for r in log[:5])
    scaler = load_state(latest_checkpoint(out))["scaler"]
    assert bool(scaler) == (precision == "fp16")  # loss scaling is on for fp16 only, and saved for resume
    assert next(StarbucksModel.load(out, device="cpu").backbone.parameters()).dtype == torch.float32


def test_autocast_is_off_on_cpu_unless_asked(train_model_dir, groups_file, tmp_path):
    from training.loop import precision_dtype
    cpu = torch.device("cpu")
    make = lambda p: TrainConfig.from_dict(run_config(train_model_dir, groups_file, tmp_path, precision=p))  # noqa: E731
    assert [precision_dtype(make(p), cpu) for p in ("auto", "fp32", "bf16", "fp16")] == \
        [None, None, torch.bfloat16, torch.float16]
