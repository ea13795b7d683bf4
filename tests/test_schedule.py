"""Learning-rate schedules."""

import json
import math

import pytest
import torch
from conftest import tiny_config, write_reverse_corpus

from transformer_mt import device as device_module
from transformer_mt.config import TrainingConfig
from transformer_mt.device import resolve_precision
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.schedule import learning_rate_factor
from transformer_mt.training.trainer import Trainer


def test_inverse_sqrt_warms_up_linearly_peaks_at_lr_then_decays():
    cfg = TrainingConfig(scheduler="inverse_sqrt", warmup_steps=100)
    assert learning_rate_factor(50, cfg, 256) == 0.5
    assert learning_rate_factor(100, cfg, 256) == 1.0
    assert abs(learning_rate_factor(400, cfg, 256) - 0.5) < 1e-12
    assert max(learning_rate_factor(s, cfg, 256) for s in range(1, 1000)) == 1.0


def test_noam_is_the_papers_formula():
    cfg = TrainingConfig(scheduler="noam", warmup_steps=4000, lr=1.0)
    for step in (1, 100, 4000, 10000):
        expected = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert math.isclose(learning_rate_factor(step, cfg, 512), expected)


def test_cosine_reaches_min_lr_at_max_steps():
    cfg = TrainingConfig(scheduler="cosine", warmup_steps=10, max_steps=110, lr=1e-3, min_lr=1e-5)
    assert learning_rate_factor(5, cfg, 256) == 0.5
    assert math.isclose(learning_rate_factor(10, cfg, 256), 1.0)
    assert math.isclose(learning_rate_factor(110, cfg, 256) * cfg.lr, 1e-5)
    assert math.isclose(learning_rate_factor(60, cfg, 256), 0.01 + 0.99 * 0.5)


def test_linear_decays_in_a_straight_line_to_min_lr():
    cfg = TrainingConfig(scheduler="linear", warmup_steps=10, max_steps=110, lr=1e-3, min_lr=1e-5)
    assert learning_rate_factor(5, cfg, 256) == 0.5
    assert math.isclose(learning_rate_factor(60, cfg, 256), 0.01 + 0.99 * 0.5)
    assert math.isclose(learning_rate_factor(110, cfg, 256) * cfg.lr, 1e-5)


@pytest.mark.parametrize("scheduler", ["cosine", "linear"])
def test_progress_given_replaces_the_steps_horizon(scheduler):
    """The minutes horizon passes the share of the budget spent; the step number then only times the warmup."""
    cfg = TrainingConfig(scheduler=scheduler, warmup_steps=10, max_steps=0, lr=1e-3, min_lr=1e-5)
    assert learning_rate_factor(5, cfg, 256, progress=0.9) == 0.5  # warmup is in updates
    assert math.isclose(learning_rate_factor(10_000, cfg, 256, progress=0.0), 1.0)
    assert math.isclose(learning_rate_factor(50, cfg, 256, progress=0.5), 0.01 + 0.99 * 0.5)
    assert math.isclose(learning_rate_factor(50, cfg, 256, progress=1.0) * cfg.lr, 1e-5)
    assert math.isclose(learning_rate_factor(50, cfg, 256, progress=1.7) * cfg.lr, 1e-5)  # stays at the floor
    factors = [learning_rate_factor(50, cfg, 256, progress=p / 100) for p in range(101)]
    assert all(a > b for a, b in zip(factors, factors[1:]))


# --- precision: auto --------------------------------------------------------------------------------

@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: native_bf16)
    chosen, reason = resolve_precision("auto", torch.device("cpu"))
    assert chosen == expected
    assert reason.startswith("auto:") and "bf16" in reason
    # A precision set in the config is kept as it is.
    assert resolve_precision("fp32", torch.device("cpu"))[0] == "fp32"
    assert resolve_precision("bf16", torch.device("cpu"))[0] == "bf16"


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_prefers_bf16_then_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    # bf16 tensor cores from compute capability 8 (Ampere); a T4 (7.5) only emulates bf16.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0) if bf16_supported else (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # counts emulation
    chosen, reason = resolve_precision("auto", torch.device("cuda"))
    assert chosen == expected and "a test GPU" in reason


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_training_with_auto_precision_logs_and_uses_the_choice(tmp_path, monkeypatch, native_bf16, expected):
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: native_bf16)
    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=10, n_test=10)
    trainer = Trainer(tiny_config(data, precision="auto", max_steps=2, validate_every=2), tmp_path / "run",
                      device="cpu", show_progress=False)
    assert trainer.precision == expected
    trainer.run()
    assert f"precision {expected} (auto: " in (tmp_path / "run" / "train.log").read_text()


# --- the minutes horizon, with a fake clock ---------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_minutes_horizon_reaches_the_floor_as_the_budget_ends(tmp_path):
    """Each update takes 1 fake second and each validation 7; the learning rate decays over the training
    seconds only and reaches min_lr as the 1-minute budget ends."""
    data = write_reverse_corpus(tmp_path / "data", n_train=400, n_valid=10, n_test=10)
    config = tiny_config(data, scheduler="cosine", schedule_horizon="minutes", max_minutes=1.0, max_steps=0,
                         warmup_steps=4, lr=0.003, min_lr=0.0003, validate_every=10, log_every=1)
    trainer = Trainer(config, tmp_path / "run", device="cpu", show_progress=False)
    clock = FakeClock()
    trainer.clock = clock
    train_update, validate = trainer.train_update, trainer.validate

    def timed_update(batches):
        stats = train_update(batches)
        clock.now += 1.0
        return stats

    def timed_validate():
        clock.now += 7.0
        return validate()

    trainer.train_update, trainer.validate = timed_update, timed_validate
    summary = trainer.run()

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["type"] == "train"]
    validations = [r for r in records if r["type"] == "valid"]
    assert summary["stop_reason"] == "reached training.max_minutes=1.0"
    # 60 s = 39 updates + 3 validations (after updates 10, 20, 30) of 7 s.
    assert summary["step"] == 39 and len(lrs) == 39
    assert len(validations) == 3 + 1  # and the final one at the end
    assert lrs[:3] == pytest.approx([0.003 * s / 4 for s in range(1, 4)])  # warmup in updates
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    # Update n runs after n-1 training seconds; warmup ended before update 4, after 3 seconds. The decay's
    # progress is (n - 1 - 3) / (60 - 3 - seconds validated so far): 0 at the end of warmup, 1 at the budget.
    validated_before = lambda n: 7 * ((n - 1) // 10)  # noqa: E731
    assert lrs[3] == pytest.approx(0.003)
    for n in (5, 11, 20, 25, 39):
        progress = (n - 1 - 3) / (60 - 3 - validated_before(n))
        expected = 0.0003 + (0.003 - 0.0003) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lrs[n - 1] == pytest.approx(expected), n
    # The last update ran at progress 35/36: within a hair of the floor.
    assert lrs[-1] == pytest.approx(0.0003, rel=0.03)
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "schedule_horizon: minutes" in log_text and "time spent validating does not count" in log_text


def test_minutes_horizon_continues_on_resume(tmp_path):
    """The elapsed and validation seconds are in the checkpoint: a resumed run continues the decay."""
    data = write_reverse_corpus(tmp_path / "data", n_train=400, n_valid=10, n_test=10)
    config = tiny_config(data, scheduler="linear", schedule_horizon="minutes", max_minutes=1.0, max_steps=10,
                         warmup_steps=0, lr=0.003, validate_every=5, log_every=1)
    first = Trainer(config, tmp_path / "run", device="cpu", show_progress=False)
    first.run()
    state = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert state["elapsed"] > 0 and 0 < state["validation_seconds"] <= state["elapsed"]
    config.training.max_steps = 11
    second = Trainer(config, tmp_path / "run", device="cpu", show_progress=False)
    assert second.validation_seconds == state["validation_seconds"]
    assert second.warmup_end_seconds == state["warmup_end_seconds"] < 0.5  # no warmup: it ended at the start
    warmup_end = state["warmup_end_seconds"]
    assert second.schedule_progress() == pytest.approx(
        (state["elapsed"] - state["validation_seconds"] - warmup_end) / (60 - state["validation_seconds"] - warmup_end),
        abs=0.01)
    second.close()


@pytest.mark.parametrize("training, fragment", [
    ({"schedule_horizon": "minutes", "scheduler": "cosine", "max_minutes": 0, "max_steps": 10},
     "'training.schedule_horizon: minutes' decays the learning rate over 'training.max_minutes', which is 0"),
    ({"schedule_horizon": "minutes", "scheduler": "inverse_sqrt", "max_minutes": 5},
     "but 'training.scheduler' is inverse_sqrt"),
    ({"scheduler": "linear", "max_steps": 0, "max_minutes": 5},
     "'training.scheduler: linear' decays over 'training.max_steps', which is 0"),
    ({"schedule_horizon": "hours"}, "'training.schedule_horizon' must be one of steps, minutes"),
])
def test_schedules_without_an_end_are_refused_at_load_time(tmp_path, training, fragment):
    with pytest.raises(TransformerMTError) as error:
        tiny_config(tmp_path, **training)
    assert fragment in str(error.value)
