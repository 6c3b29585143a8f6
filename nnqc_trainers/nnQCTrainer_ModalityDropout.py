"""One model for cases with missing modalities (the limitation of paper Appendix E).

During training, each example loses a random non-empty, proper subset of its image channels with
probability `p_drop`; a dropped channel is set to 0, the mean of a z-scored image, which is also how
nnQC_predict fills a modality the user does not have. The query's region channels are never dropped.
"""
import torch

from nnqc_trainers.nnQCTrainer import nnQCTrainer


def drop_channels(images: torch.Tensor, p_drop: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random proper subset of the channels of each example (with probability p_drop)."""
    b, m = images.shape[:2]
    if m < 2:
        return images
    drop = torch.rand(b, m, generator=generator, device="cpu") < 0.5
    # keep at least one channel: examples where all would drop keep a random one
    all_dropped = drop.all(1)
    keep = torch.randint(0, m, (b,), generator=generator)
    drop[all_dropped, keep[all_dropped]] = False
    drop &= (torch.rand(b, generator=generator) < p_drop)[:, None]
    return images * (~drop).to(images.device, images.dtype)[:, :, None, None, None]


class nnQCTrainer_ModalityDropout(nnQCTrainer):
    p_modality_dropout = 0.5

    def perturb_images(self, images: torch.Tensor) -> torch.Tensor:
        return drop_channels(images, self.p_modality_dropout)
