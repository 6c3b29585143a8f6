"""Short schedules, for tests, the demo and quick experiments on CPU."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_2epochs(nnQCTrainer):
    """2 epochs of 4 iterations (tests)."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8}
