"""The paper's learning-rate schedule: × gamma per epoch, floored (paper §3.5: × 0.9 down to 1e-6)."""
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class ExponentialDecayLR(LRScheduler):
    """Stepped with the epoch number, like nnU-Net's PolyLRScheduler, so resuming needs no saved state."""

    def __init__(self, optimizer: Optimizer, initial_lr: float, gamma: float = 0.9, min_lr: float = 1e-6):
        self.initial_lr, self.gamma, self.min_lr = initial_lr, gamma, min_lr
        self.ctr = 0
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return max(self.initial_lr * self.gamma ** epoch, self.min_lr)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(current_step)
