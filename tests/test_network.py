"""QCResUNet and baselines: SPEC §3 facts (sizes, FLOPs, shapes, training behaviour)."""
import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from nnqc.network_architecture import (
    QCResUNet,
    QCResUNetNoAttention,
    QCResUNetNoRegression,
    ResNet34Regressor,
    ResNet50Regressor,
    UNetRegressor,
    build_network,
)
from nnqc.network_architecture.qcresunet import AttentionSEMAggregation
from nnqc.trusted_classes import UntrustedClassError

BRAIN = dict(input_channels=7, num_regions=3)
ISO = [[2, 2, 2]] * 5
ANISO = [[1, 2, 2], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
ANISO_KERNELS = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]
SMALL = dict(features_per_stage=(8, 16, 32, 64), decoder_features=(32, 16, 16, 8), blocks_per_stage=(1, 1, 1, 1),
             unet_features=(4, 8, 16, 32, 32, 32))


def small(cls) -> dict:
    """Narrow widths for fast tests; only UNetRegressor takes unet_features."""
    return SMALL if cls is UNetRegressor else {k: v for k, v in SMALL.items() if k != "unet_features"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls, expected_millions, tolerance", [
    (QCResUNet, 16.59, 0.005),
    (ResNet34Regressor, 8.36, 0.02),
    (ResNet50Regressor, 15.94, 0.02),
    (UNetRegressor, 16.60, 0.02),
])
def test_parameter_counts_of_brain_configuration(cls, expected_millions, tolerance):
    count = n_params(cls(**BRAIN)) / 1e6
    assert abs(count - expected_millions) <= tolerance * expected_millions, count


def test_flops_of_brain_configuration_on_meta_device():
    # the meta device gives the exact FLOP count of a 160x192x160 forward without computing it
    with torch.device("meta"):
        model = QCResUNet(**BRAIN).eval()
        x = torch.empty(1, 7, 160, 192, 160)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    gflops = counter.get_total_flops() / 1e9
    assert abs(gflops - 296) <= 0.03 * 296, gflops


@pytest.mark.parametrize("strides, kernels, stem, shape", [
    (ISO, [[3, 3, 3]] * 4, [7, 7, 7], (32, 64, 32)),
    (ANISO, ANISO_KERNELS, [1, 7, 7], (8, 64, 32)),
])
@pytest.mark.parametrize("cls", [QCResUNet, QCResUNetNoAttention, QCResUNetNoRegression, ResNet34Regressor,
                                 ResNet50Regressor, UNetRegressor])
def test_output_shapes(cls, strides, kernels, stem, shape):
    torch.manual_seed(0)
    model = cls(input_channels=5, num_regions=2, strides=strides, kernel_sizes=kernels, stem_kernel_size=stem,
                **small(cls)).eval()
    with torch.no_grad():
        regression, sem = model(torch.randn(2, 5, *shape))
    if cls is QCResUNetNoRegression:
        assert regression is None
    else:
        assert regression.shape == (2, 2 + 2 * 2)  # subject-level DSC and NSD, then both per region
    if cls in (ResNet34Regressor, ResNet50Regressor, UNetRegressor):
        assert sem is None
    else:
        assert sem.shape == (2, 2, *shape)


@pytest.mark.parametrize("cls", [QCResUNet, QCResUNetNoAttention, QCResUNetNoRegression, ResNet34Regressor,
                                 UNetRegressor])
@pytest.mark.parametrize("strides, kernels, stem", [(ISO, [[3, 3, 3]] * 4, [7, 7, 7]),
                                                    (ANISO, ANISO_KERNELS, [1, 7, 7])])
def test_every_parameter_gets_a_gradient(cls, strides, kernels, stem):
    torch.manual_seed(0)
    model = cls(input_channels=5, num_regions=2, strides=strides, kernel_sizes=kernels, stem_kernel_size=stem,
                **small(cls)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 5, 8 if strides is ANISO else 64, 64, 64)
    x[:, 3:] = (x[:, 3:] > 0).float()
    regression, sem = model(x)
    loss = sum(o.float().abs().mean() for o in (regression, sem) if o is not None)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_dropout_active_in_train_mode_only():
    torch.manual_seed(0)
    model = QCResUNet(input_channels=5, num_regions=2, **small(QCResUNet))
    x = torch.randn(1, 5, 64, 64, 64)
    with torch.no_grad():
        model.train()
        a, b = model(x), model(x)
        assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])
        model.eval()
        a, b = model(x), model(x)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert sum(isinstance(m, torch.nn.Dropout3d) and m.p == 0.3 for m in model.modules()) == 4  # one per block


def test_query_changes_sem_logits():
    torch.manual_seed(0)
    model = QCResUNet(input_channels=5, num_regions=2).eval()
    x = torch.randn(1, 5, 64, 64, 64)
    x[:, 3:] = 0
    x[:, 3, 16:40, 16:40, 16:40] = 1
    y = x.clone()
    y[:, 3, 16:40, 16:40, 16:28] = 0  # the query loses part of region 1
    with torch.no_grad():
        sem_x, sem_y = model(x)[1], model(y)[1]
    assert (sem_x - sem_y).abs().max() > 1e-4


def literal_aggregation(module: AttentionSEMAggregation, decoder_features, query):
    """The paper's order: concat -> ECA -> upsample every branch to the input -> sum -> 1x1x1 conv."""
    size = query.shape[2:]
    branches = []
    for attention, projection, features in zip(module.attentions, module.projections, decoder_features):
        projected = projection(features)
        q = F.interpolate(query, size=projected.shape[2:], mode="nearest")
        branches.append(F.interpolate(attention(torch.cat((projected, q), 1)), size=size, mode="nearest"))
    projected = F.interpolate(module.projections[-1](decoder_features[-1]), size=size, mode="nearest")
    branches.append(module.attentions[-1](torch.cat((projected, query), 1)))
    return module.aggregate(sum(branches))


@pytest.mark.parametrize("factors, final", [([(2, 2, 2), (2, 2, 2)], (2, 2, 2)), ([(1, 2, 2), (1, 2, 2)], (1, 2, 2))])
def test_attention_aggregation_equals_the_literal_order(factors, final):
    torch.manual_seed(0)
    module = AttentionSEMAggregation([16, 8, 8], 3, factors, final)
    for p in module.parameters():
        torch.nn.init.normal_(p)
    full = torch.tensor([16, 32, 32])
    steps = [torch.tensor(f) for f in (*factors, final)]
    shapes = [full // (steps[2] * steps[1] * steps[0]), full // (steps[2] * steps[1]), full // steps[2]]
    feats = [torch.randn(2, c, *s.tolist()) for c, s in zip([16, 8, 8], shapes)]
    query = (torch.rand(2, 3, *full.tolist()) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(module(feats, query), literal_aggregation(module, feats, query),
                                   rtol=1e-5, atol=1e-5)


def test_build_network_from_plans_entry():
    arch = {"network_class_name": "nnqc.network_architecture.qcresunet.QCResUNet",
            "arch_kwargs": {"input_channels": 5, "num_regions": 2, "strides": ANISO, "kernel_sizes": ANISO_KERNELS,
                            "stem_kernel_size": [1, 7, 7], "norm_op": "torch.nn.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "nonlin": "torch.nn.ReLU",
                            "nonlin_kwargs": {"inplace": True}, "decoder_nonlin": "torch.nn.LeakyReLU",
                            "decoder_nonlin_kwargs": {"negative_slope": 0.01, "inplace": True}},
            "_kw_requires_import": ["norm_op", "nonlin", "decoder_nonlin"]}
    model = build_network(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"])
    assert isinstance(model, QCResUNet)
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in model.modules())
    swapped = build_network("nnqc.network_architecture.baselines.ResNet34Regressor", arch["arch_kwargs"],
                            arch["_kw_requires_import"])
    assert isinstance(swapped, ResNet34Regressor)
    with pytest.raises(UntrustedClassError, match="nnqc.nothing.Here"):
        build_network("nnqc.nothing.Here", {}, [])


def test_rejects_inconsistent_configuration():
    with pytest.raises(ValueError, match="strides"):
        QCResUNet(7, 3, strides=[[2, 2, 2]] * 4)
    with pytest.raises(ValueError, match="region masks"):
        QCResUNet(3, 3)
