"""nnQC trainers. Every variant is importable from here, so that a trainer name resolves by plain lookup."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer
from nnqc_trainers.nnQCTrainer_architectures import (
    nnQCTrainer_NoAttention,
    nnQCTrainer_NoRegression,
    nnQCTrainer_ResNet34,
    nnQCTrainer_ResNet50,
    nnQCTrainer_UNet,
)
from nnqc_trainers.nnQCTrainer_loss import (
    nnQCTrainer_Lambda0_1,
    nnQCTrainer_Lambda2,
    nnQCTrainer_MarginRankingLoss,
    nnQCTrainer_PearsonLoss,
)
from nnqc_trainers.nnQCTrainer_ModalityDropout import nnQCTrainer_ModalityDropout
from nnqc_trainers.nnQCTrainer_sampling import nnQCTrainer_TopBins
from nnqc_trainers.nnQCTrainer_schedules import nnQCTrainer_2epochs, nnQCTrainer_250it, nnQCTrainer_CPUDemo

__all__ = ["nnQCTrainer", "nnQCTrainer_NoAttention", "nnQCTrainer_NoRegression", "nnQCTrainer_ResNet34",
           "nnQCTrainer_ResNet50", "nnQCTrainer_UNet", "nnQCTrainer_Lambda0_1", "nnQCTrainer_Lambda2",
           "nnQCTrainer_PearsonLoss", "nnQCTrainer_MarginRankingLoss", "nnQCTrainer_TopBins",
           "nnQCTrainer_ModalityDropout", "nnQCTrainer_250it", "nnQCTrainer_2epochs", "nnQCTrainer_CPUDemo"]
