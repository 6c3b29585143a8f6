"""`nnQC_train DATASET CONFIGURATION FOLD`: nnU-Net's training command for QC trainers."""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.run.run_training import find_free_network_port, maybe_load_checkpoint
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME
from nnqc.paths import require
from nnqc.run.threads import set_thread_counts
from nnqc.trainer_lookup import get_trainer_class
from nnqc.trusted_classes import trust_classes


def get_trainer(dataset_name_or_id: str | int, configuration: str, fold: int | str,
                trainer_name: str | type = "nnQCTrainer", plans_identifier: str = DEFAULT_PLANS_NAME,
                continue_training: bool = False, device: torch.device = torch.device("cuda")):
    """Instantiate a trainer (name or class) for a preprocessed QC dataset, as nnU-Net's get_trainer_from_args."""
    trainer_class = trainer_name if isinstance(trainer_name, type) else get_trainer_class(trainer_name)
    dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
    folder = join(require("nnUNet_preprocessed"), dataset_name)
    plans_file = join(folder, plans_identifier + ".json")
    if not os.path.isfile(plans_file):
        raise FileNotFoundError(f"{plans_file} not found: run nnQC_plan_and_preprocess -d {dataset_name_or_id} first")
    plans = load_json(plans_file)
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration!r} is not in {plans_file} "
                         f"(has {list(plans['configurations'])})")
    plans["continue_training"] = continue_training
    return trainer_class(plans=plans, configuration=configuration, fold=fold,
                         dataset_json=load_json(join(folder, "dataset.json")), device=device)


def _train_and_validate(trainer, continue_training: bool, only_run_validation: bool, val_with_best: bool,
                        disable_checkpointing: bool, fp32: bool = False) -> None:
    if continue_training and only_run_validation:
        raise ValueError("--c and --val cannot be combined")
    trainer.disable_checkpointing = disable_checkpointing
    if fp32:
        trainer.cpu_bf16_autocast = False
        trainer.cuda_mixed_precision = False
    maybe_load_checkpoint(trainer, continue_training, only_run_validation)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    if not only_run_validation:
        trainer.run_training()
    if val_with_best:
        best = join(trainer.output_folder, "checkpoint_best.pth")
        if not os.path.isfile(best):
            raise FileNotFoundError(f"{best} does not exist: the fold's validation {trainer.best_checkpoint_metric} "
                                    f"was never finite (its training log says so); validate checkpoint_final.pth "
                                    f"(--val without --val_best)")
        trainer.load_checkpoint(best)
    trainer.perform_actual_validation()


def default_backend(device: torch.device) -> str:
    """torch.distributed backend for a device: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def _run_ddp(rank: int, world_size: int, kwargs: dict, run_kwargs: dict, backend: str, device_type: str) -> None:
    if device_type == "cuda":
        set_thread_counts("cuda")  # a spawned process starts with torch's defaults
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    if device_type == "cuda":
        torch.cuda.set_device(torch.device("cuda", rank))
        device = torch.device("cuda", rank)
    else:
        # the processes share the cores
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
        device = torch.device(device_type)
    try:
        _train_and_validate(get_trainer(**kwargs, device=device), **run_kwargs)
        # no rank tears its process group down while another is still in a collective call (gloo aborts then)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_training(dataset_name_or_id: str | int, configuration: str, fold: int | str,
                 trainer_name: str | type = "nnQCTrainer", plans_identifier: str = DEFAULT_PLANS_NAME,
                 num_gpus: int = 1, continue_training: bool = False, only_run_validation: bool = False,
                 val_with_best: bool = False, disable_checkpointing: bool = False,
                 device: torch.device = torch.device("cuda"), backend: str | None = None, fp32: bool = False) -> None:
    """Train (and then validate) one fold. With num_gpus > 1, DistributedDataParallel as nnU-Net does it: one
    process per GPU (NCCL), or on device cpu that many CPU processes (gloo; slower than one, for testing the
    multi-process path). `backend` overrides the choice; `fp32` turns off bf16 autocast on the CPU and mixed
    precision (autocast and gradient scaler) on CUDA."""
    if isinstance(fold, str) and fold != "all":
        fold = int(fold)
    kwargs = dict(dataset_name_or_id=dataset_name_or_id, configuration=configuration, fold=fold,
                  trainer_name=trainer_name, plans_identifier=plans_identifier, continue_training=continue_training)
    run_kwargs = dict(continue_training=continue_training, only_run_validation=only_run_validation,
                      val_with_best=val_with_best, disable_checkpointing=disable_checkpointing, fp32=fp32)
    if num_gpus > 1:
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"-num_gpus > 1 needs -device cuda (or cpu for gloo processes), not {device.type}")
        if device.type == "cuda" and torch.cuda.device_count() < num_gpus:
            raise ValueError(f"-num_gpus {num_gpus}: only {torch.cuda.device_count()} GPUs are visible")
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(find_free_network_port()))
        mp.spawn(_run_ddp, args=(num_gpus, kwargs, run_kwargs, backend or default_backend(device), device.type),
                 nprocs=num_gpus, join=True)
    else:
        _train_and_validate(get_trainer(**kwargs, device=device), **run_kwargs)


def train_entry() -> None:
    parser = argparse.ArgumentParser(description="Train a QC network (QCResUNet by default) on a preprocessed "
                                                 "QC dataset, one fold at a time.")
    parser.add_argument("dataset_name_or_id", help="dataset name or id, e.g. 501")
    parser.add_argument("configuration", help="configuration in the plans, e.g. 3d_fullres")
    parser.add_argument("fold", help="fold 0-4, or 'all'")
    parser.add_argument("-tr", default="nnQCTrainer", help="trainer class (default nnQCTrainer)")
    parser.add_argument("-p", default=DEFAULT_PLANS_NAME, help=f"plans identifier (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-num_gpus", type=int, default=1,
                        help="GPUs for DistributedDataParallel training (with -device cpu: CPU processes, gloo)")
    parser.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--val", action="store_true", help="only run the final validation (training must be done)")
    parser.add_argument("--val_best", action="store_true", help="validate with checkpoint_best instead of final")
    parser.add_argument("--disable_checkpointing", action="store_true", help="do not write checkpoints")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"),
                        help="device to train on (default cuda)")
    parser.add_argument("--fp32", action="store_true",
                        help="train in fp32: no fp16 autocast or gradient scaler on CUDA, no bf16 autocast on a "
                             "CPU with native bf16")
    parser.add_argument("--trust_class", nargs="+", default=[], metavar="package.module.Class",
                        help="classes a model's files may name besides nnQC's own and torch's layers (your own "
                             "trainer or network); also read from the environment variable nnQC_trusted_classes")
    args = parser.parse_args()
    try:
        trust_classes(args.trust_class)
    except ValueError as e:
        parser.error(str(e))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here; use -device cpu")
    set_thread_counts(device.type)
    run_training(args.dataset_name_or_id, args.configuration, args.fold, args.tr, args.p, args.num_gpus, args.c,
                 args.val, args.val_best, args.disable_checkpointing, device, fp32=args.fp32)


if __name__ == "__main__":
    train_entry()
