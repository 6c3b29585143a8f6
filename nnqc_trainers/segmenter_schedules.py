"""Short nnU-Net trainer schedules for the segmenters of nnQC_make_candidates: tests and quick CPU trials."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_2epochs_2iterations(nnUNetTrainer):
    """2 epochs of 2 training and 1 validation iterations, batches of 2 (tests on CPU)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1


class nnUNetTrainer_10epochs_25iterations(nnUNetTrainer):
    """10 epochs of 25 iterations: a quick segmenter of middling quality on a CPU."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 5
