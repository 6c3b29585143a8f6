"""Multi-process training (DistributedDataParallel, gloo on CPU) on a validation set that two ranks cannot split
evenly: one short epoch, validation, final validation and checkpoints, without hanging, with the metrics a single
process computes on the same samples."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID

from nnqc.evaluation.qc_metrics import regression_summary
from nnqc.qc_data.targets_table import read_targets
from nnqc.sampling import balanced_subset
from nnqc.training.validation_shards import PADDING_COLUMN, drop_padding, shard_for_rank
from nnqc_trainers.nnQCTrainer_schedules import nnQCTrainer_2epochs

DATASET = f"Dataset{QC_ID}_PhantomQC"
TESTS_FOLDER = os.path.dirname(os.path.abspath(__file__))


class nnQCTrainer_DDPTest(nnQCTrainer_2epochs):
    """One epoch of 2 iterations; 5 validation samples per epoch (an odd number, so 2 ranks get 3 and 2)."""
    hyperparameters = {**nnQCTrainer_2epochs.hyperparameters, "num_epochs": 1, "num_iterations_per_epoch": 2,
                       "num_val_samples_per_epoch": 5}


def test_shards_pad_every_rank_to_the_same_length_and_cover_each_sample_once():
    samples = pd.DataFrame({"sample": [f"s{i}" for i in range(570)]})
    shards = [shard_for_rank(samples, rank, 4) for rank in range(4)]
    assert [len(s) for s in shards] == [143] * 4  # the 143/143/142/142 split, padded
    assert [int(s[PADDING_COLUMN].sum()) for s in shards] == [0, 0, 1, 1]
    real = [name for s in shards for name in s.loc[~s[PADDING_COLUMN], "sample"]]
    assert sorted(real) == sorted(samples["sample"])
    # fewer samples than ranks: the rank without a sample of its own still runs the same steps
    one = shard_for_rank(samples.iloc[:1], 1, 2)
    assert len(one) == 1 and bool(one[PADDING_COLUMN].iloc[0])
    kept = drop_padding({"samples": list(one["sample"]), "x": np.ones(1)}, one[PADDING_COLUMN].to_numpy())
    assert kept["samples"] == [] and kept["x"].shape == (0,)
    with pytest.raises(ValueError, match="rank 2"):
        shard_for_rank(samples, 2, 2)


@pytest.fixture
def uneven_copy(trained_pipeline, tmp_path, monkeypatch):
    """The tiny preprocessed QC dataset with one validation sample of fold 0 removed (an odd count), under
    separate nnU-Net folders."""
    preprocessed, results = tmp_path / "preprocessed", tmp_path / "results"
    shutil.copytree(join(trained_pipeline.preprocessed, DATASET), preprocessed / DATASET)
    results.mkdir()
    targets_file = str(preprocessed / DATASET / "qc_targets.csv")
    targets = read_targets(targets_file)
    val_subjects = load_json(str(preprocessed / DATASET / "splits_final.json"))[0]["val"]
    val = targets[targets["subject"].isin(val_subjects)]
    if len(val) % 2 == 0:
        targets = targets.drop(index=val.index[0])
        targets.to_csv(targets_file, index=False)
    for key, value in {"nnUNet_raw": trained_pipeline.raw, "nnUNet_preprocessed": str(preprocessed),
                       "nnUNet_results": str(results)}.items():
        monkeypatch.setenv(key, value)
    return targets[targets["subject"].isin(val_subjects)].reset_index(drop=True)


TOL = 1e-4


def test_gloo_ddp_trains_validates_and_matches_one_process(uneven_copy, tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer, run_training

    val = uneven_copy
    balanced = val.iloc[balanced_subset(val["dsc"].to_numpy())]
    assert len(val) % 2 == 1 and len(balanced) >= 5  # neither set splits evenly over 2 ranks
    env = {**os.environ, "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([TESTS_FOLDER, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "nnqc.run.train", str(QC_ID), "3d_fullres", "0", "-tr",
               "test_training_ddp.nnQCTrainer_DDPTest", "-device", "cpu", "-num_gpus", "2", "--fp32"]
    # a hang would block forever: the timeout turns it into a failure
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = join(os.environ["nnUNet_results"], DATASET, "nnQCTrainer_DDPTest__nnQCPlans__3d_fullres", "fold_0")
    checkpoint = torch.load(join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 1 and len(checkpoint["logging"]["val_dsc_r"]) == 1
    assert not any(k.startswith("module.") for k in checkpoint["network_weights"])  # saved unwrapped
    everything = pd.read_csv(join(folder, "validation", "qc_predictions_all.csv"), dtype={"sample": str})
    summary = load_json(join(folder, "validation", "summary.json"))
    # every validation sample exactly once, no padding counted
    assert sorted(everything["sample"]) == sorted(val["sample"])
    assert summary["all_samples"]["num_samples"] == len(val) and summary["num_samples"] == len(balanced)

    # one process, same weights, same samples: the same per-sample predictions and metrics. Tolerance TOL: fp32
    # kernels differ between batch compositions (padding changes them) and thread counts by up to ~1e-5 here,
    # while a padded duplicate counted, or a sample lost, moves these figures by about 1 / n (n < 40)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    ddp_folder = str(tmp_path / "ddp_validation")
    shutil.copytree(join(folder, "validation"), ddp_folder)
    run_training(QC_ID, "3d_fullres", 0, nnQCTrainer_DDPTest, only_run_validation=True,
                 device=torch.device("cpu"), fp32=True)
    single = pd.read_csv(join(folder, "validation", "qc_predictions_all.csv"), dtype={"sample": str})
    assert list(single["sample"]) == list(everything["sample"])
    for column in single.columns:
        if single[column].dtype.kind == "f":
            assert np.allclose(single[column], everything[column], atol=TOL, equal_nan=True), column
    single_summary = load_json(join(folder, "validation", "summary.json"))
    assert np.isfinite(summary["dsc"]["r"])  # the test trainer's fixed start keeps predictions apart
    assert single_summary["dsc"]["r"] == pytest.approx(summary["dsc"]["r"], abs=TOL)
    assert single_summary["dsc"]["mae"] == pytest.approx(summary["dsc"]["mae"], abs=TOL)
    assert single_summary["nsd"]["mae"] == pytest.approx(summary["nsd"]["mae"], abs=TOL)

    # the epoch's validation (5 of the balanced samples, split 3/2 with one padded) logged what one process
    # computes on those 5 samples with the same weights
    trainer = get_trainer(QC_ID, "3d_fullres", 0, nnQCTrainer_DDPTest, device=torch.device("cpu"))
    trainer.cpu_bf16_autocast = False
    trainer.load_checkpoint(join(folder, "checkpoint_final.pth"))
    _, validation_batches = trainer.get_dataloaders()
    trainer.network.eval()
    outputs = [trainer.validation_step(next(validation_batches)) for _ in range(trainer.num_val_iterations_per_epoch)]
    out = trainer._gather(outputs)
    assert len(out["samples"]) == 5
    logged = checkpoint["logging"]
    expected = regression_summary(out["true"][:, 0], out["predicted"][:, 0])
    assert logged["val_dsc_mae"][0] == pytest.approx(expected["mae"], abs=TOL)
    assert np.isfinite(expected["r"]) and logged["val_dsc_r"][0] == pytest.approx(expected["r"], abs=TOL)
    assert logged["val_nsd_mae"][0] == pytest.approx(
        regression_summary(out["true"][:, 1], out["predicted"][:, 1])["mae"], abs=TOL)
    assert logged["mean_fg_dice"][0] == pytest.approx(float(np.nanmean(np.nanmean(out["sem_dice"], 0))), abs=TOL)
