"""Short schedules, for tests, the demo and quick experiments on CPU."""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_2epochs(nnQCTrainer):
    """2 epochs of 4 iterations (tests)."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8}


class nnQCTrainer_CPUDemo(nnQCTrainer):
    """A short CPU schedule for small phantom datasets: 40 epochs of 25 iterations, no spatial dropout (it
    slows convergence, and a schedule this short does not overfit), lr 5e-4 decaying × 0.95 per epoch."""
    network_kwargs_overrides = {"dropout_p": 0.0}
    hyperparameters = {"num_epochs": 40, "num_iterations_per_epoch": 25, "num_val_samples_per_epoch": 20,
                       "initial_lr": 5e-4, "lr_decay": 0.95}
