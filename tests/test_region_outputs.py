"""Per-region regression outputs (2 + 2C): the networks' heads and the loss terms, for any number of regions."""
import pytest
import torch

from nnqc.network_architecture import (
    QCResUNet,
    QCResUNetNoAttention,
    QCResUNetNoRegression,
    ResNet34Regressor,
    UNetRegressor,
)
from nnqc.network_architecture.regression_outputs import (
    has_per_region_outputs,
    regression_output_count,
    regression_outputs_in_weights,
)
from nnqc.training.loss import QCLoss

SMALL = dict(features_per_stage=(8, 16, 32, 64), decoder_features=(32, 16, 16, 8), blocks_per_stage=(1, 1, 1, 1))
UNET_SMALL = dict(unet_features=(4, 8, 16, 32, 32, 32))


def small(cls) -> dict:
    return UNET_SMALL if cls is UNetRegressor else SMALL


@pytest.mark.parametrize("num_regions", [1, 3, 5])
@pytest.mark.parametrize("cls", [QCResUNet, QCResUNetNoAttention, QCResUNetNoRegression, ResNet34Regressor,
                                 UNetRegressor])
def test_regression_has_two_plus_two_outputs_per_region(cls, num_regions):
    torch.manual_seed(0)
    model = cls(input_channels=2 + num_regions, num_regions=num_regions, **small(cls)).eval()
    with torch.no_grad():
        regression, sem = model(torch.randn(2, 2 + num_regions, 64, 64, 64))
    if cls is QCResUNetNoRegression:
        assert regression is None
        return
    assert regression.shape == (2, 2 + 2 * num_regions)
    assert model.num_regression_outputs == regression_output_count(num_regions) == 2 + 2 * num_regions
    assert regression_outputs_in_weights(model.state_dict()) == 2 + 2 * num_regions
    if sem is not None:
        assert sem.shape == (2, num_regions, 64, 64, 64)


@pytest.mark.parametrize("cls", [QCResUNet, ResNet34Regressor, UNetRegressor])
def test_the_papers_two_output_head_stays_available(cls):
    model = cls(input_channels=5, num_regions=3, num_regression_outputs=2, **small(cls)).eval()
    with torch.no_grad():
        regression, _ = model(torch.randn(1, 5, 64, 64, 64))
    assert regression.shape == (1, 2) and not has_per_region_outputs(model.num_regression_outputs, 3)
    # the per-region head adds exactly 2C rows to the final FC layer and nothing else
    wide = cls(input_channels=5, num_regions=3, **small(cls))
    extra = sum(p.numel() for p in wide.parameters()) - sum(p.numel() for p in model.parameters())
    assert extra == 6 * (wide.regression.fc.in_features + 1)
    with pytest.raises(ValueError, match="num_regression_outputs must be 2 .* or 8"):
        cls(input_channels=5, num_regions=3, num_regression_outputs=4, **small(cls))


def targets(batch: int, num_regions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 2 + 2 * num_regions, generator=g), torch.rand(batch, 2 + 2 * num_regions, generator=g))


@pytest.mark.parametrize("num_regions", [1, 2, 4])
def test_loss_terms_per_region(num_regions):
    predicted, true = targets(6, num_regions, num_regions)
    sem_logits = torch.randn(6, num_regions, 4, 4, 4)
    sem_target = torch.rand(6, num_regions, 4, 4, 4) > 0.5
    loss = QCLoss(sem_weight=0.5, region_weight=0.25)
    terms = loss(predicted, sem_logits, true, sem_target)
    errors = (predicted - true).abs().mean(0)
    c = num_regions
    torch.testing.assert_close(terms["mae_dsc"], errors[0])
    torch.testing.assert_close(terms["mae_nsd"], errors[1])
    torch.testing.assert_close(terms["mae_region_dsc"], errors[2:2 + c].mean())
    torch.testing.assert_close(terms["mae_region_nsd"], errors[2 + c:].mean())
    expected = errors[0] + errors[1] + 0.5 * terms["sem"] + 0.25 * (errors[2:2 + c].mean() + errors[2 + c:].mean())
    torch.testing.assert_close(terms["loss"], expected)


def test_region_terms_weigh_as_much_whatever_the_number_of_regions():
    # every region off by 0.2 in DSC and 0.1 in NSD: the region terms do not grow with C
    for c in (1, 3, 7):
        true = torch.full((4, 2 + 2 * c), 0.5)
        predicted = true.clone()
        predicted[:, 2:2 + c] += 0.2
        predicted[:, 2 + c:] += 0.1
        terms = QCLoss()(predicted, None, true, None)
        assert float(terms["loss"]) == pytest.approx(0.3, abs=1e-6)
        assert float(terms["mae_dsc"]) == 0 and float(terms["mae_nsd"]) == 0


def test_two_output_networks_get_the_subject_level_terms_only():
    predicted, true = targets(5, 3, 0)
    terms = QCLoss()(predicted[:, :2], None, true, None)
    assert "mae_region_dsc" not in terms and "mae_region_nsd" not in terms
    torch.testing.assert_close(terms["loss"], (predicted[:, :2] - true[:, :2]).abs().mean(0).sum())
    with pytest.raises(ValueError, match="8 regression outputs but 2 quality targets"):
        QCLoss()(predicted, None, true[:, :2], None)


@pytest.mark.parametrize("ranking", ["pearson", "margin"])
def test_ranking_terms_stay_on_the_subject_level(ranking):
    predicted, true = targets(8, 2, 1)
    loss = QCLoss(ranking=ranking, ranking_weight=1.0)
    changed = predicted.clone()
    changed[:, 2:] = torch.rand(8, 4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(loss(predicted, None, true, None)["ranking"], loss(changed, None, true, None)["ranking"])
    subject_only = loss(predicted[:, :2], None, true[:, :2], None)["ranking"]
    torch.testing.assert_close(loss(predicted, None, true, None)["ranking"], subject_only)
