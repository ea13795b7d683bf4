"""The exponential moving average of the weights (training.ema_decay)."""

import torch
from conftest import tiny_config, tiny_model, write_reverse_corpus

from transformer_mt import train
from transformer_mt.checkpoint import load_checkpoint
from transformer_mt.training.ema import ExponentialMovingAverage


def perturb(model, generator):
    """What an optimizer step does to the weights, as far as the average is concerned: moves them."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator))


def test_decay_zero_is_the_raw_weights_exactly():
    model = tiny_model(share=True)  # tied embeddings: one parameter under several state_dict keys
    ema = ExponentialMovingAverage(model, 0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        perturb(model, generator)
        ema.update()
        averaged, raw = ema.state_dict_of(model), model.state_dict()
        assert list(averaged) == list(raw)
        assert all(torch.equal(averaged[key], raw[key]) for key in raw)


def test_average_follows_the_warmed_up_decay_and_applied_restores_the_weights():
    model = tiny_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ExponentialMovingAverage(model, 0.999)
    generator = torch.Generator().manual_seed(1)
    perturb(model, generator)
    ema.update()  # update 1: decay min(0.999, 2 / 11)
    decay = 2 / 11
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    averaged = ema.state_dict_of(model)
    for key, value in trained.items():
        if value.is_floating_point() and not torch.equal(value, start[key]):
            torch.testing.assert_close(averaged[key], decay * start[key] + (1 - decay) * value)
    with ema.applied():
        assert all(torch.equal(model.state_dict()[k], averaged[k]) for k in averaged)
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)


def test_checkpoints_hold_the_average_and_the_last_one_also_the_raw_weights(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=5, n_test=5)
    train(tiny_config(data, max_steps=4, validate_every=2, ema_decay=0.9), tmp_path / "run", show_progress=False)
    last = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    step = load_checkpoint(tmp_path / "run" / "checkpoint_step00000004.pt")
    assert last["ema_updates"] == 4
    assert "raw_model" not in step
    key = next(k for k, v in last["model"].items() if v.is_floating_point() and v.dim() == 2)
    assert torch.equal(step["model"][key], last["model"][key])  # the step checkpoint holds the average
    assert not torch.equal(last["raw_model"][key], last["model"][key])
