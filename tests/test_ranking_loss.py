"""The loss terms that teach order: Pearson and pairwise margin ranking over a batch."""
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from nnqc.training.loss import QCLoss, margin_ranking_loss, pearson_loss


def test_pearson_loss_is_one_minus_scipy_pearson_per_column():
    rng = np.random.default_rng(0)
    predicted, true = rng.random((6, 2)), rng.random((6, 2))
    loss = pearson_loss(torch.tensor(predicted), torch.tensor(true))
    expected = [1 - pearsonr(predicted[:, k], true[:, k])[0] for k in range(2)]
    assert loss.numpy() == pytest.approx(expected, abs=1e-5)
    # targets that do not vary carry no order: no loss, and no NaN
    flat = pearson_loss(torch.tensor(predicted), torch.full((6, 2), .7, dtype=torch.float64))
    assert torch.equal(flat, torch.zeros(2, dtype=torch.float64))


def test_margin_ranking_loss_by_hand():
    true = torch.tensor([[.9], [.5], [.5]])
    predicted = torch.tensor([[.60], [.61], [.40]])
    # ordered pairs (gap >= 0.01): (0, 1) and (0, 2), each wanting a predicted gap of min(0.4, 0.02) = 0.02
    # (0, 1): relu(0.02 - (-0.01)) = 0.03; (0, 2): relu(0.02 - 0.20) = 0
    assert margin_ranking_loss(predicted, true).item() == pytest.approx(0.015, abs=1e-7)
    assert margin_ranking_loss(predicted, torch.full((3, 1), .5)).item() == 0.0


@pytest.mark.parametrize("term", ["pearson", "margin"])
def test_the_ranking_gradient_orders_a_pair_correctly(term):
    """A batch predicted in the wrong order: one gradient step on the ranking term alone moves the better sample's
    prediction up and the worse one's down."""
    true = torch.tensor([[.9, .8], [.6, .5], [.3, .2]])
    predicted = torch.tensor([[.5, .5], [.6, .6], [.55, .55]], requires_grad=True)
    loss = QCLoss(sem_weight=0.0, ranking=term, ranking_weight=1.0)
    terms = loss(predicted, None, true, torch.zeros(3, 1, 2, 2, 2))
    terms["ranking"].backward()
    step = -predicted.grad
    assert torch.all(step[0] > 0) and torch.all(step[0] > step[1]) and torch.all(step[0] > step[2])
    before = (predicted[0] - predicted[1]).detach()
    after = (predicted[0] + 0.1 * step[0] - predicted[1] - 0.1 * step[1]).detach()
    assert torch.all(after > before)


def test_the_ranking_term_adds_to_the_total_with_its_weight():
    true = torch.tensor([[.9, .8], [.6, .5], [.3, .2]])
    predicted = torch.tensor([[.5, .5], [.6, .6], [.55, .55]])
    plain = QCLoss(sem_weight=0.0)(predicted, None, true, None)
    ranked = QCLoss(sem_weight=0.0, ranking="pearson", ranking_weight=0.5)(predicted, None, true, None)
    assert "ranking" not in plain
    assert ranked["loss"].item() == pytest.approx(plain["loss"].item() + 0.5 * ranked["ranking"].item())
    with pytest.raises(ValueError, match="unknown ranking term 'spearman'"):
        QCLoss(ranking="spearman")
