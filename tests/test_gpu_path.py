"""The CUDA training path's decisions, checked on the CPU: precision and --fp32, thread counts, loader memory and
background validation loading."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import QC_ID, TRAINER

from nnqc.training.loader_memory import (
    LoaderMemoryError,
    augmenter_need,
    batch_bytes,
    default_need,
    plan_loader,
)
from nnqc.training.precision import FP32, step_precision
from nnqc.training.validation_shards import PADDING_COLUMN

GB = 10 ** 9
BRAIN_BATCH = batch_bytes(4, (160, 192, 160), 4)


def test_step_precision_follows_device_and_fp32():
    mixed = step_precision("cuda", cuda_mixed_precision=True, cpu_bf16=False)
    assert (mixed.autocast_device, mixed.autocast_dtype, mixed.grad_scaler) == ("cuda", torch.float16, True)
    assert step_precision("cuda", cuda_mixed_precision=False, cpu_bf16=True) == FP32
    bf16 = step_precision("cpu", cuda_mixed_precision=True, cpu_bf16=True)
    assert (bf16.autocast_device, bf16.autocast_dtype, bf16.grad_scaler) == ("cpu", torch.bfloat16, False)
    assert step_precision("cpu", cuda_mixed_precision=True, cpu_bf16=False) == FP32
    assert step_precision("mps", cuda_mixed_precision=True, cpu_bf16=True) == FP32


def test_cuda_trainer_uses_autocast_and_scaler_unless_fp32(pipeline_env, tmp_path, monkeypatch):
    """A trainer object for device cuda (built without a GPU: nothing is moved there) chooses fp16 autocast and
    nnU-Net's gradient scaler; --fp32 (as nnQC_train sets it, after construction) chooses neither."""
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cuda"))
    context = trainer._autocast()
    assert isinstance(context, torch.autocast)
    assert (context.device, context.fast_dtype) == ("cuda", torch.float16)
    assert trainer.grad_scaler is not None and trainer.active_grad_scaler() is trainer.grad_scaler
    assert trainer.precision_description().startswith("mixed precision")

    trainer.cpu_bf16_autocast = False
    trainer.cuda_mixed_precision = False
    assert not isinstance(trainer._autocast(), torch.autocast)
    assert trainer.active_grad_scaler() is None
    assert trainer.precision_description().startswith("fp32")


def test_cuda_entry_point_sets_one_thread():
    code = ("import torch; from nnqc.run.threads import set_thread_counts; set_thread_counts('cuda'); "
            "print(torch.get_num_threads(), torch.get_num_interop_threads())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def test_batch_bytes_of_the_brain_configuration():
    # 4 × 160·192·160 × (4 float32 images + 2 int16 label maps)
    assert BRAIN_BATCH == 4 * 160 * 192 * 160 * 20 == 393_216_000


def test_augmenter_need_counts_queues_pinning_and_workers():
    shm, host = augmenter_need(100, workers=3, cached=6, pinned=True)
    assert shm == 100 * 7 and host == 700 + 100 * 8 + 3 * 2 * 100
    shm, host = augmenter_need(100, workers=3, cached=6, pinned=False)
    assert shm == 100 * 14 and host == 1400 + 600


def test_plan_keeps_nnunet_defaults_where_memory_suffices():
    plan = plan_loader(BRAIN_BATCH, 12, shm_free=64 * GB, memory_available=128 * GB, pinned=True)
    assert (plan.train_workers, plan.train_cached, plan.val_workers, plan.val_cached) == (12, 6, 1, 3)
    assert (plan.shm_bytes, plan.host_bytes) == default_need(BRAIN_BATCH, 12, pinned=True)


def test_plan_shortens_queues_for_shared_memory_then_drops_workers_for_host_memory():
    full_shm, full_host = default_need(BRAIN_BATCH, 12, pinned=True)
    plan = plan_loader(BRAIN_BATCH, 12, shm_free=full_shm - 1, memory_available=None, pinned=True)
    assert plan.train_workers == 12 and plan.train_cached < 6 and plan.shm_bytes <= full_shm - 1
    plan = plan_loader(BRAIN_BATCH, 12, shm_free=None, memory_available=full_host // 2, pinned=True)
    assert 1 <= plan.train_workers < 12 and plan.host_bytes <= full_host // 2


def test_plan_fails_at_once_with_the_need_and_the_fix():
    with pytest.raises(LoaderMemoryError) as error:  # docker's default /dev/shm
        plan_loader(BRAIN_BATCH, 12, shm_free=64 * 2 ** 20, memory_available=128 * GB, pinned=True)
    message = str(error.value)
    assert "\n" not in message and "shared memory" in message
    assert "--shm-size=5g" in message and "nnUNet_n_proc_DA=0" in message
    with pytest.raises(LoaderMemoryError, match="of memory"):
        plan_loader(BRAIN_BATCH, 12, shm_free=None, memory_available=GB, pinned=True)


@pytest.mark.time_limit(600)
def test_validation_batches_are_the_same_with_a_background_worker(pipeline_env, tmp_path, monkeypatch):
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

    from nnqc.run.train import get_trainer

    def two_epochs(workers: str):
        monkeypatch.setenv("nnUNet_n_proc_DA", workers)
        monkeypatch.setenv("nnUNet_results", str(tmp_path / workers))
        trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
        trainer.num_val_samples_per_epoch = 5  # batches of 2 (the plans' batch size): the last one is short
        trainer.initialize()
        train, val = trainer.get_dataloaders()
        try:
            kind = (type(train), type(val))
            batches = [next(val) for _ in range(2 * trainer.num_val_iterations_per_epoch)]
        finally:
            for augmenter in (train, val):
                if isinstance(augmenter, NonDetMultiThreadedAugmenter):
                    augmenter._finish()
        return kind, trainer.num_val_iterations_per_epoch, batches

    kind, n, synchronous = two_epochs("0")
    assert kind == (SingleThreadedAugmenter, SingleThreadedAugmenter)
    kind, n_bg, background = two_epochs("1")
    assert kind == (NonDetMultiThreadedAugmenter, NonDetMultiThreadedAugmenter)
    assert n == n_bg and len(synchronous) == len(background) == 2 * n
    first_epoch = [s for b in synchronous[:n] for s in b["samples"]]
    assert len(first_epoch) == len(set(first_epoch)) == 5
    assert [s for b in synchronous[n:] for s in b["samples"]] == first_epoch  # every epoch the same pass
    for a, b in zip(synchronous, background):
        assert a["samples"] == b["samples"]
        for key in ("data", "reference", "candidate", "quality"):
            assert torch.equal(a[key], b[key]), key
        assert np.array_equal(a[PADDING_COLUMN], b[PADDING_COLUMN])
