"""QCResUNet and the paper's baselines and ablations; torch only, built from plan-style keyword arguments."""
from nnqc.network_architecture.baselines import (
    QCResUNetNoAttention,
    QCResUNetNoRegression,
    ResNet34Regressor,
    ResNet50Regressor,
    ResNetRegressor,
    UNetRegressor,
)
from nnqc.network_architecture.build import build_network
from nnqc.network_architecture.qcresunet import QCResUNet

__all__ = ["QCResUNet", "QCResUNetNoAttention", "QCResUNetNoRegression", "ResNetRegressor", "ResNet34Regressor",
           "ResNet50Regressor", "UNetRegressor", "build_network"]
