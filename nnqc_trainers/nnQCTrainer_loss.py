"""Loss variants: the other λ values of the paper's search (§3.5: {0.1, 1, 2}), and terms that teach the order
of the samples in a batch (nnqc.training.loss)."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_Lambda0_1(nnQCTrainer):
    hyperparameters = {"sem_loss_weight": 0.1}


class nnQCTrainer_Lambda2(nnQCTrainer):
    hyperparameters = {"sem_loss_weight": 2.0}


class nnQCTrainer_PearsonLoss(nnQCTrainer):
    """Adds 1 - Pearson r of predicted and true DSC and NSD over each batch (the authors' released recipe)."""
    hyperparameters = {"ranking_loss": "pearson", "ranking_loss_weight": 0.5}


class nnQCTrainer_MarginRankingLoss(nnQCTrainer):
    """Adds a pairwise margin-ranking term: of two samples in a batch, the better is predicted higher."""
    hyperparameters = {"ranking_loss": "margin", "ranking_loss_weight": 1.0}
