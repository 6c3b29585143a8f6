"""bf16 autocast in CPU training: used only where the CPU computes bf16 natively, and close to fp32."""
import copy

import pytest
import torch
from conftest import QC_ID, TRAINER
from torch import nn

from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.training.data_loader import iterate_batches

NO_BF16 = "this CPU has no native bf16 (AMX / AVX-512 BF16), so nnQC trains it in fp32 and the bf16 path is unused"


def _trainer_and_batch(tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    trainer.initialize()
    samples = trainer.balanced_validation_samples().iloc[:2]
    _, val_keys = trainer.do_split()
    batch = next(iterate_batches(trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys), samples,
                                 trainer.preprocessed_dataset_folder, 2, trainer.configuration_manager.patch_size,
                                 trainer.quality_columns()))
    return trainer, batch


def test_precision_follows_the_cpu_and_the_opt_out(pipeline_env, tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    assert trainer.uses_cpu_bf16() == cpu_has_native_bf16()
    assert ("bf16 autocast" in trainer.precision_description()) == cpu_has_native_bf16()
    trainer.cpu_bf16_autocast = False
    assert not trainer.uses_cpu_bf16() and trainer.precision_description() == "fp32"


@pytest.mark.skipif(not cpu_has_native_bf16(), reason=NO_BF16)
def test_bf16_training_step_runs_in_bf16_and_matches_fp32_loosely(pipeline_env, tmp_path, monkeypatch):
    trainer, batch = _trainer_and_batch(tmp_path, monkeypatch)
    network = trainer.network
    network.train()
    for module in network.modules():  # the same step twice: no random dropout masks
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    start = copy.deepcopy(network.state_dict())
    conv_dtypes = []
    hook = next(m for m in network.modules() if isinstance(m, nn.Conv3d)).register_forward_hook(
        lambda module, args, output: conv_dtypes.append(output.dtype))
    results = {}
    for bf16 in (False, True):
        network.load_state_dict(start)
        trainer.optimizer = trainer.configure_optimizers()[0]
        trainer.cpu_bf16_autocast = bf16
        loss = float(trainer.train_step(batch)["loss"])
        grads = torch.cat([p.grad.double().flatten() for p in network.parameters() if p.grad is not None])
        results[bf16] = loss, grads
    hook.remove()
    assert conv_dtypes == [torch.float32, torch.bfloat16]  # autocast really ran the convolutions in bf16
    (loss32, grad32), (loss16, grad16) = results[False], results[True]
    # measured on this network: gradient cosine 0.93 under bf16 rounding
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) > 0.8
