"""Short schedules, for tests, the demo and quick experiments on CPU."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_2epochs(nnQCTrainer):
    """2 epochs of 4 iterations (tests)."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8}


class nnQCTrainer_CPUDemo(nnQCTrainer):
    """A short CPU schedule for small phantom datasets: 20 epochs of 25 iterations with a higher learning rate."""
    hyperparameters = {"num_epochs": 20, "num_iterations_per_epoch": 25, "num_val_samples_per_epoch": 40,
                       "initial_lr": 1e-3}
