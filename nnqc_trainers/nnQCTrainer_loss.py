"""Loss-balance variants: the other λ values of the paper's search (§3.5: {0.1, 1, 2})."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_Lambda0_1(nnQCTrainer):
    hyperparameters = {"sem_loss_weight": 0.1}


class nnQCTrainer_Lambda2(nnQCTrainer):
    hyperparameters = {"sem_loss_weight": 2.0}
