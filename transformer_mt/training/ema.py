"""An exponential moving average (EMA) of the model's weights (``training.ema_decay``).

After every optimizer update each averaged weight moves towards the trained one:
``average = decay * average + (1 - decay) * weight``. The average is what validation
scores and what every checkpoint's ``model`` entry holds; the trained (raw) weights go on
being optimised and are saved beside it in ``checkpoint_last.pt`` (``raw_model``) so that a
resumed run continues exactly.

As in OpenNMT-py/Eole (``average_decay``) and TensorFlow's ExponentialMovingAverage with
``num_updates``, the decay is warmed up: update n uses ``min(decay, (1 + n) / (10 + n))``, so
the average forgets the random initial weights within a few hundred updates instead of
~1 / (1 - decay) of them. fairseq (``--ema-decay``) and Marian (``--exponential-smoothing``)
keep the same kind of average.

The averages are float32 tensors on the model's device (the model's parameters are float32:
mixed precision runs under autocast), updated by one fused ``torch._foreach_lerp_`` call.
With decay 0 the average is the raw weights exactly (lerp with weight 1 returns its end).
"""

from __future__ import annotations

import contextlib

import torch


class ExponentialMovingAverage:
    """The moving average of ``model``'s parameters (tied parameters once)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        # named_parameters lists a tied matrix once; state_dict names it under each of its keys.
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.params = [param for _, param in named]
        self.average = [param.detach().to(torch.float32, copy=True) for param in self.params]

    def current_decay(self) -> float:
        """The decay the next update uses (warmed up, see the module docstring)."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self.params], weight)

    def state_dict_of(self, model: torch.nn.Module) -> dict:
        """``model.state_dict()`` with the averaged weights in place of the parameters (buffers as they are)."""
        by_storage = {param.data_ptr(): average for param, average in zip(self.params, self.average)}
        return {key: by_storage.get(value.data_ptr(), value) if value.is_floating_point() else value
                for key, value in model.state_dict().items()}

    def load(self, averaged_state: dict, updates: int) -> None:
        """Continue from a checkpoint: ``averaged_state`` is what ``state_dict_of`` gave when it was saved."""
        missing = [name for name in self.names if name not in averaged_state]
        if missing:
            raise KeyError(f"the averaged weights lack {', '.join(missing[:3])}")
        for average, name in zip(self.average, self.names):
            average.copy_(averaged_state[name])
        self.updates = int(updates)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block (validation), its own ones again after it.

        The weights are copied in place, so the optimizer, a compiled model and DDP keep their references.
        """
        with torch.no_grad():
            raw = [param.detach().clone() for param in self.params]
            torch._foreach_copy_([p.detach() for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.params], raw)
