"""Label-smoothed cross-entropy against a value computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from transformer_mt.training.loss import label_smoothed_nll_loss


def test_loss_equals_hand_computed_value_and_ignores_padding():
    # Two real positions and one padding position (target id 0 = pad), vocabulary of 3.
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [5.0, -1.0, 2.0]]])
    target = torch.tensor([[1, 2, 0]])
    eps = 0.1

    def log_softmax(row):
        z = math.log(sum(math.exp(v) for v in row))
        return [v - z for v in row]

    expected_loss = expected_nll = 0.0
    for row, y in ((logits[0, 0].tolist(), 1), (logits[0, 1].tolist(), 2)):
        lp = log_softmax(row)
        q = [eps / 3 + (1 - eps if k == y else 0.0) for k in range(3)]
        expected_loss += -sum(qk * lpk for qk, lpk in zip(q, lp))
        expected_nll += -lp[y]
    loss, nll = label_smoothed_nll_loss(logits, target, eps, pad_id=0)
    assert abs(loss.item() - expected_loss) < 1e-5
    assert abs(nll.item() - expected_nll) < 1e-5

    # Changing the logits of the padding position changes nothing.
    logits2 = logits.clone()
    logits2[0, 2] = torch.tensor([-7.0, 9.0, 0.0])
    loss2, _ = label_smoothed_nll_loss(logits2, target, eps, pad_id=0)
    assert loss2.item() == loss.item()


def test_loss_matches_torch_cross_entropy_with_label_smoothing():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 50, generator=g)
    target = torch.randint(1, 50, (4, 7), generator=g)
    target[:, 5:] = 0
    loss, nll = label_smoothed_nll_loss(logits, target, 0.2, pad_id=0)
    reference = F.cross_entropy(logits.view(-1, 50), target.view(-1), ignore_index=0, label_smoothing=0.2,
                                reduction="sum")
    assert torch.allclose(loss, reference, atol=1e-4)
    assert torch.allclose(nll, F.cross_entropy(logits.view(-1, 50), target.view(-1), ignore_index=0,
                                               reduction="sum"), atol=1e-4)


def test_no_smoothing_is_plain_nll():
    logits = torch.randn(3, 10)
    target = torch.tensor([1, 4, 9])
    loss, nll = label_smoothed_nll_loss(logits, target, 0.0, pad_id=0)
    assert torch.allclose(loss, nll)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_gradient_matches_torch_cross_entropy(eps):
    """The hand-written backward equals autograd through torch's label-smoothed cross-entropy."""
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 50, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, 50, (4, 6))
    target[1, 3:] = 0  # padding
    loss, _ = label_smoothed_nll_loss(logits, target, eps, pad_id=0)
    (2.5 * loss).backward()
    ours = logits.grad.clone()
    logits.grad = None
    reference = F.cross_entropy(logits.view(-1, 50), target.view(-1), ignore_index=0, label_smoothing=eps,
                                reduction="sum")
    (2.5 * reference).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-10)
    assert torch.count_nonzero(ours[1, 3:]) == 0


def test_loss_is_exact_where_the_target_probability_underflows():
    """A confidently wrong fp32 model: p(target) = e^-300 is 0 in fp32, yet its NLL is 300, not inf."""
    logits = torch.zeros(2, 20)
    logits[0, 5] = 300.0  # the model is sure of token 5; the reference is token 7
    logits[1, 7] = -300.0
    target = torch.tensor([7, 7])
    loss, nll = label_smoothed_nll_loss(logits, target, 0.1, pad_id=0)
    reference = F.cross_entropy(logits.double(), target, label_smoothing=0.1, reduction="sum")
    assert torch.isfinite(loss) and torch.isfinite(nll)
    assert abs(loss.item() - reference.item()) < 1e-3
    assert abs(nll.item() - F.cross_entropy(logits.double(), target, reduction="sum").item()) < 1e-3
