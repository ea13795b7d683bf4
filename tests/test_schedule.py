"""Learning-rate schedules."""

import math

from transformer_mt.config import TrainingConfig
from transformer_mt.trainer import learning_rate_factor


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
