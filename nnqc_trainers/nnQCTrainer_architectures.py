"""The paper's baselines and ablations (§3.3, §4.3), trained exactly like QCResUNet.

Learning rates of the regressors are the paper's tuned values (Table 3).
"""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_ResNet34(nnQCTrainer):
    """ResNet regressor, BasicBlock x[2, 2, 2, 2] (the paper's "ResNet-34")."""
    network_class_name = "nnqc.network_architecture.baselines.ResNet34Regressor"
    hyperparameters = {"initial_lr": 1.0e-4}


class nnQCTrainer_ResNet50(nnQCTrainer):
    """ResNet regressor, BasicBlock x[3, 4, 6, 3] (the paper's "ResNet-50")."""
    network_class_name = "nnqc.network_architecture.baselines.ResNet50Regressor"
    hyperparameters = {"initial_lr": 0.9e-4}


class nnQCTrainer_UNet(nnQCTrainer):
    """UNet + global average pooling + FC regressor."""
    network_class_name = "nnqc.network_architecture.baselines.UNetRegressor"
    hyperparameters = {"initial_lr": 0.8e-4}


class nnQCTrainer_NoAttention(nnQCTrainer):
    """Ablation: QCResUNet without attention-based SEM aggregation."""
    network_class_name = "nnqc.network_architecture.baselines.QCResUNetNoAttention"


class nnQCTrainer_NoRegression(nnQCTrainer):
    """Ablation: QCResUNet trained on the SEM task alone; checkpoint_best follows the validation DSC_SEM."""
    network_class_name = "nnqc.network_architecture.baselines.QCResUNetNoRegression"
    best_checkpoint_metric = "mean_fg_dice"
