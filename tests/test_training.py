"""nnQCTrainer on a tiny phantom QC dataset: training, checkpoints, resuming, validation, data and augmentation."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID, TRAINER
from nnunetv2.run.run_training import maybe_load_checkpoint

from nnqc.metrics.regions import region_masks
from nnqc.network_architecture.inputs import network_input
from nnqc.sampling import TOP_WEIGHTED_EDGES, bins_by_edges, dsc_bins
from nnqc.training.loss import QCLoss
from nnqc.training.lr_schedule import ExponentialDecayLR
from nnqc.training.qc_inputs import sem_targets
from nnqc.training.transforms import qc_training_transforms
from nnqc_trainers.nnQCTrainer_ModalityDropout import drop_channels
from nnqc_trainers.nnQCTrainer_schedules import nnQCTrainer_2epochs

REGIONS = [(1, 2, 3), (2, 3), (3,)]
TEST_LR = nnQCTrainer_2epochs.hyperparameters["initial_lr"]


def fold_folder(pipeline, fold, trainer=TRAINER):
    return join(pipeline.results, f"Dataset{QC_ID}_PhantomQC", f"{trainer}__nnQCPlans__3d_fullres", f"fold_{fold}")


def test_training_writes_checkpoints_logs_and_validation(pipeline_env):
    folder = fold_folder(pipeline_env, 0)
    for name in ("checkpoint_final.pth", "progress.png", "debug.json"):
        assert os.path.isfile(join(folder, name)), name
    assert not os.path.exists(join(folder, "checkpoint_latest.pth"))  # removed once training is done
    checkpoint = torch.load(join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2 and checkpoint["trainer_name"] == TRAINER
    log = checkpoint["logging"]
    # the test trainer starts from a fixed point inside [0, 1] (nnQCTrainer_2epochs): its validation r is finite in
    # every epoch, and checkpoint_best holds the epoch of the best one (the run where r is never finite:
    # test_a_run_whose_r_is_never_finite_writes_no_checkpoint_best_and_says_so)
    assert len(log["val_dsc_r"]) == 2 and np.isfinite(log["val_dsc_r"]).all() and np.isfinite(log["val_nsd_r"]).all()
    best = torch.load(join(folder, "checkpoint_best.pth"), map_location="cpu", weights_only=False)
    assert best["_best_ema"] == max(log["val_dsc_r"])
    assert best["current_epoch"] == log["val_dsc_r"].index(max(log["val_dsc_r"])) + 1  # nnU-Net stores epochs done
    assert len(log["train_losses"]) == 2 and len(log["lrs"]) == 2
    assert log["lrs"] == pytest.approx([TEST_LR, TEST_LR * 0.9])  # the paper's schedule: x 0.9 per epoch
    summary = load_json(join(folder, "validation", "summary.json"))
    for key in ("dsc", "nsd"):
        assert np.isfinite(summary[key]["r"]) and np.isfinite(summary["all_samples"][key]["r"]), key
    predictions = pd.read_csv(join(folder, "validation", "qc_predictions.csv"), dtype={"subject": str})
    assert summary["num_samples"] == len(predictions) > 0
    assert set(summary["dsc"]) == {"r", "mae", "mae_sd", "n"}
    assert summary["dsc"]["mae"] == pytest.approx(np.mean(np.abs(predictions["dsc"] - predictions["predicted_dsc"])))
    assert set(summary["dsc_sem"]) == {"whole_tumor", "tumor_core", "enhancing_tumor", "mean"}
    # the final validation set is the balanced subset of the validation subjects' samples only
    splits = load_json(join(pipeline_env.preprocessed, f"Dataset{QC_ID}_PhantomQC", "splits_final.json"))
    assert set(predictions["subject"]) <= set(splits[0]["val"])
    counts = np.bincount(dsc_bins(predictions["dsc"].to_numpy()), minlength=10)
    assert len(set(counts[counts > 0])) == 1
    # ... and every validation sample, in its natural distribution, for calibration
    everything = pd.read_csv(join(folder, "validation", "qc_predictions_all.csv"),
                             dtype={"sample": str, "subject": str})
    assert list(everything.columns[:8]) == ["sample", "subject", "source", "generator", "dsc", "nsd", "predicted_dsc",
                                            "predicted_nsd"]
    assert {"dsc_whole_tumor", "dsc_sem_enhancing_tumor"} <= set(everything.columns)
    targets = pd.read_csv(join(pipeline_env.preprocessed, f"Dataset{QC_ID}_PhantomQC", "qc_targets.csv"),
                          dtype={"sample": str, "subject": str})
    expected = targets[targets["subject"].isin(splits[0]["val"])]
    assert sorted(everything["sample"]) == sorted(expected["sample"]) and len(everything) > len(predictions)
    assert summary["all_samples"]["num_samples"] == len(everything)
    same = everything.set_index("sample").loc[predictions["sample"]]
    assert np.allclose(same["predicted_dsc"], predictions["predicted_dsc"])
    assert np.allclose(same["dsc"], predictions["dsc"])
    assert np.allclose(everything["dsc"], expected.set_index("sample").loc[everything["sample"], "dsc"])


def test_each_fold_records_what_its_training_data_covered(pipeline_env):
    """fold_X/training_range.json against the raw files of the fold's training subjects: the labels of their
    candidates, and the range of the medians of their images' non-zero regions."""
    splits = load_json(join(pipeline_env.preprocessed, f"Dataset{QC_ID}_PhantomQC", "splits_final.json"))
    candidates, images = join(pipeline_env.qc_dataset, "candidatesTr"), join(pipeline_env.qc_dataset, "imagesTr")
    for fold in (0, 1):
        subjects = splits[fold]["train"]
        counts = {}
        files = [f for f in sorted(os.listdir(candidates)) if f.split("__")[0] in subjects]
        for name in files:
            present = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(join(candidates, name))))
            for label in present[present != 0]:
                counts[str(label)] = counts.get(str(label), 0) + 1
        record = load_json(join(fold_folder(pipeline_env, fold), "training_range.json"))
        assert record["num_training_samples"] == len(files) > 0
        assert record["candidates_per_label"] == counts and record["labels"] == sorted(map(int, counts))
        # empty and region-dropping degradations: not every candidate holds every label
        assert min(counts.values()) < len(files)
        medians = []
        for subject in subjects:
            channels = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(join(images, f"{subject}_{c:04d}.nii.gz")))
                                 for c in range(4)]).astype(np.float64)
            region = np.any(channels != 0, axis=0)
            medians.append([np.median(channel[region]) for channel in channels])
        for c, channel in record["image_intensities"].items():
            assert channel["num_subjects"] == len(subjects)
            assert channel["median_min"] == pytest.approx(min(m[int(c)] for m in medians))
            assert channel["median_max"] == pytest.approx(max(m[int(c)] for m in medians))
        assert sorted(record["image_intensities"]) == ["0", "1", "2", "3"]


def test_continue_training_resumes_where_it_stopped(pipeline_env, tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer

    # resume a copy of fold 1: the shared model's checkpoints stay those the other tests expect
    model = os.path.dirname(fold_folder(pipeline_env, 1))
    copy = join(str(tmp_path), os.path.relpath(model, pipeline_env.results))
    shutil.copytree(model, copy, ignore=lambda folder, names: [n for n in names if folder == model
                                                                and n.startswith("fold_") and n != "fold_1"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 1, TRAINER, continue_training=True, device=torch.device("cpu"))
    trainer.num_epochs = 3
    maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)
    assert trainer.current_epoch == 2
    trainer.run_training()
    checkpoint = torch.load(join(trainer.output_folder, "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    assert checkpoint["current_epoch"] == 3
    assert len(checkpoint["logging"]["train_losses"]) == 3
    # resuming restored the learning rate schedule, not restarted it
    assert checkpoint["logging"]["lrs"][2] == pytest.approx(TEST_LR * 0.9 ** 2)


def test_training_subjects_and_batches(pipeline_env):
    from nnqc.run.train import get_trainer

    trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    trainer.initialize()
    train_keys, val_keys = trainer.do_split()
    assert not set(train_keys) & set(val_keys)
    os.environ["nnUNet_n_proc_DA"] = "0"
    try:
        loader, _ = trainer.get_dataloaders()
    finally:
        del os.environ["nnUNet_n_proc_DA"]
    samples = loader.data_loader.samples
    assert set(samples["subject"]) == set(train_keys)
    bins_seen = []
    for _ in range(6):
        batch = next(loader)
        assert batch["data"].shape == (4, 4, *trainer.configuration_manager.patch_size)
        assert batch["reference"].shape == batch["candidate"].shape == (4, 1, *trainer.configuration_manager.patch_size)
        rows = samples.set_index("sample").loc[batch["samples"]]
        bins = dsc_bins(rows["dsc"].to_numpy())
        assert len(set(bins)) == len(bins)  # one sample per bin in each batch
        # subject-level DSC and NSD, then every region's DSC and NSD
        assert np.allclose(batch["quality"].numpy(), rows[trainer.quality_columns()].to_numpy())
        assert batch["quality"].shape == (4, 2 + 2 * len(trainer.region_names))
        bins_seen += list(bins)
    assert len(set(bins_seen)) > 4


def test_augmentation_keeps_images_reference_and_candidate_aligned():
    rng = np.random.default_rng(0)
    shape = (24, 32, 28)
    reference = np.zeros(shape, np.int16)
    reference[6:18, 8:24, 6:22] = 1
    reference[9:15, 12:20, 10:18] = 2
    reference[11:13, 14:18, 12:16] = 3
    candidate = np.roll(reference, 3, axis=1)
    candidate[candidate == 3] = 2
    sem = sem_targets(torch.from_numpy(reference)[None, None], torch.from_numpy(candidate)[None, None], REGIONS)[0]
    image = torch.from_numpy((reference + rng.normal(0, 0.1, shape)).astype(np.float32))[None]
    labels = torch.cat((torch.from_numpy(reference)[None], torch.from_numpy(candidate)[None], sem.to(torch.int16)))
    transforms = qc_training_transforms(shape)
    transforms.transforms[0].p_rotation = transforms.transforms[0].p_scaling = 1.0  # always deform
    for seed in range(4):
        torch.manual_seed(seed)
        np.random.seed(seed)
        out = transforms(image=image.clone(), segmentation=labels.clone())
        seg = out["segmentation"]
        assert not torch.equal(seg, labels)
        recomputed = sem_targets(seg[0:1][None], seg[1:2][None], REGIONS)[0]
        assert torch.equal(recomputed, seg[2:].bool())
        # the image moved with the labels: label 3 is the brightest structure before and after
        assert out["image"][0][seg[0] == 3].mean() > out["image"][0][seg[0] == 0].mean() + 1


def test_network_input_and_sem_targets_match_numpy_definitions():
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 4, (2, 1, 6, 7, 8))
    candidate = rng.integers(0, 4, (2, 1, 6, 7, 8))
    images = torch.from_numpy(rng.normal(size=(2, 4, 6, 7, 8)).astype(np.float32))
    x = network_input(images, torch.from_numpy(candidate), REGIONS)
    assert x.shape == (2, 7, 6, 7, 8) and torch.equal(x[:, :4], images)
    for b in range(2):
        assert np.array_equal(x[b, 4:].numpy().astype(bool), region_masks(candidate[b, 0], REGIONS))
        expected = region_masks(candidate[b, 0], REGIONS) ^ region_masks(reference[b, 0], REGIONS)
        got = sem_targets(torch.from_numpy(reference), torch.from_numpy(candidate), REGIONS)[b]
        assert np.array_equal(got.numpy(), expected)


def test_loss_terms():
    loss = QCLoss(sem_weight=2.0)
    regression = torch.tensor([[0.5, 0.2], [0.9, 0.4]])
    quality = torch.tensor([[0.7, 0.2], [0.6, 0.8]])
    sem_logits = torch.zeros(2, 3, 4, 4, 4)
    sem_target = torch.zeros(2, 3, 4, 4, 4, dtype=torch.bool)
    terms = loss(regression, sem_logits, quality, sem_target)
    assert terms["mae_dsc"] == pytest.approx((0.2 + 0.3) / 2)
    assert terms["mae_nsd"] == pytest.approx((0.0 + 0.4) / 2)
    assert terms["loss"] == pytest.approx(terms["mae_dsc"] + terms["mae_nsd"] + 2.0 * terms["sem"])
    assert set(loss(regression, None, quality, sem_target)) == {"mae_dsc", "mae_nsd", "loss"}
    assert set(loss(None, sem_logits, quality, sem_target)) == {"sem", "loss"}


def test_learning_rate_schedule_decays_to_the_floor():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2.1e-4)
    schedule = ExponentialDecayLR(optimizer, 2.1e-4, 0.9, 1e-6)
    for epoch, expected in ((0, 2.1e-4), (1, 2.1e-4 * 0.9), (10, 2.1e-4 * 0.9 ** 10), (99, 1e-6)):
        schedule.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_modality_dropout_drops_channels_but_never_all():
    images = torch.ones(64, 4, 2, 2, 2)
    generator = torch.Generator().manual_seed(0)
    out = drop_channels(images, 1.0, generator)
    kept = out[:, :, 0, 0, 0].sum(1)
    assert (kept >= 1).all() and (kept < 4).any()
    assert torch.equal(drop_channels(images, 0.0, generator), images)


def test_validation_with_best_needs_a_checkpoint_best(pipeline_env, tmp_path, monkeypatch):
    from nnqc.run.train import run_training

    # a copy of fold 0 as training leaves it when the validation DSC r was never finite: no checkpoint_best
    model = os.path.dirname(fold_folder(pipeline_env, 0))
    copy = join(str(tmp_path), os.path.relpath(model, pipeline_env.results))
    shutil.copytree(join(model, "fold_0"), join(copy, "fold_0"), ignore=shutil.ignore_patterns("checkpoint_best.pth"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    validation = join(copy, "fold_0", "validation")
    before = {name: os.stat(join(validation, name)).st_mtime_ns for name in os.listdir(validation)}
    with pytest.raises(FileNotFoundError, match="checkpoint_best.pth does not exist: the fold's validation "
                                                "val_dsc_r was never finite"):
        run_training(QC_ID, "3d_fullres", 0, TRAINER, only_run_validation=True, val_with_best=True,
                     device=torch.device("cpu"))
    assert {name: os.stat(join(validation, name)).st_mtime_ns for name in os.listdir(validation)} == before


def test_unknown_trainer_is_a_clear_error():
    from nnqc.trainer_lookup import get_trainer_class

    with pytest.raises(ValueError, match="nnQCTrainer_ResNet34"):
        get_trainer_class("nnQCTrainer_DoesNotExist")
    assert json.dumps(get_trainer_class("nnQCTrainer_ResNet34").hyperparameters)


def _log_epoch(trainer, epoch, dsc_r, dsc_sem):
    for key, value in (("epoch_start_timestamps", 0.0), ("lrs", 1e-4), ("train_losses", 1.0), ("val_losses", 1.0),
                       ("val_dsc_r", dsc_r), ("val_dsc_mae", 0.1), ("val_nsd_r", 0.5), ("val_nsd_mae", 0.1),
                       ("mean_fg_dice", dsc_sem), ("dice_per_class_or_region", [dsc_sem] * 3)):
        trainer.logger.log(key, value, epoch)


def test_a_run_whose_r_is_never_finite_writes_no_checkpoint_best_and_says_so(pipeline_env, tmp_path, monkeypatch):
    """What a barely trained network that predicts outside [0, 1] for every validation sample leaves: its clamped
    predictions are one value, r is NaN in every epoch."""
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    trainer.initialize()
    for epoch in range(trainer.num_epochs):
        trainer.current_epoch = epoch
        _log_epoch(trainer, epoch, float("nan"), 0.5)
        trainer.on_epoch_end()
    trainer.on_train_end()
    assert os.path.isfile(join(trainer.output_folder, "checkpoint_final.pth"))
    assert not os.path.exists(join(trainer.output_folder, "checkpoint_best.pth"))
    text = "".join(open(join(trainer.output_folder, name)).read() for name in os.listdir(trainer.output_folder)
                   if name.startswith("training_log"))
    assert "val_dsc_r was never finite, so no checkpoint_best.pth was written" in text


@pytest.mark.parametrize("trainer_name, metric", [("nnQCTrainer", "r"), ("nnQCTrainer_NoRegression", "sem")])
def test_checkpoint_best_follows_one_metric_and_nan_never_wins(pipeline_env, tmp_path, monkeypatch, trainer_name,
                                                               metric):
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = get_trainer(QC_ID, "3d_fullres", 0, trainer_name, device=torch.device("cpu"))
    trainer.disable_checkpointing = True
    # (DSC r, DSC_SEM) per epoch; the metric not followed is made to look better whenever it can mislead
    epochs = [(float("nan"), 0.9), (0.3, 0.2), (float("nan"), 0.99), (0.2, float("nan")), (0.5, 0.1)]
    if metric == "sem":
        epochs = [(s, r) for r, s in epochs]
    best = []
    for epoch, (dsc_r, dsc_sem) in enumerate(epochs):
        trainer.current_epoch = epoch
        _log_epoch(trainer, epoch, dsc_r, dsc_sem)
        trainer.on_epoch_end()
        best.append(trainer._best_score)
    assert best == [None, 0.3, 0.3, 0.3, 0.5]


def test_default_epoch_is_one_pass_over_the_balanced_training_samples(pipeline_env, tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    lengths, loaders = {}, {}
    for name in ("nnQCTrainer", "nnQCTrainer_250it", "nnQCTrainer_CPUDemo", "nnQCTrainer_TopBins"):
        trainer = get_trainer(QC_ID, "3d_fullres", 0, name, device=torch.device("cpu"))
        trainer.batch_size = trainer.configuration_manager.batch_size
        loaders[name] = trainer.get_dataloaders()[0]
        lengths[name] = trainer.num_iterations_per_epoch
        assert trainer.num_epochs == 100 or name == "nnQCTrainer_CPUDemo"
        assert trainer.initial_lr == 2.1e-4  # the paper's (the tests' tiny model starts lower)
    train_subjects, _ = trainer.do_split()
    targets = pd.read_csv(join(pipeline_env.preprocessed, f"Dataset{QC_ID}_PhantomQC", "qc_targets.csv"),
                          dtype={"subject": str})
    counts = np.bincount(dsc_bins(targets.loc[targets["subject"].isin(train_subjects), "dsc"].to_numpy()))
    balanced = counts[counts > 0].min() * (counts > 0).sum()  # every non-empty bin cut to the smallest
    # the top-weighted bins change how batches are drawn, not the epoch
    assert lengths == {"nnQCTrainer": -(-balanced // 4), "nnQCTrainer_250it": 250, "nnQCTrainer_CPUDemo": 100,
                       "nnQCTrainer_TopBins": -(-balanced // 4)}
    next(loaders["nnQCTrainer_TopBins"])  # the sampler is made at the first draw, in the process that draws
    top = loaders["nnQCTrainer_TopBins"].data_loader
    dscs = top.samples["dsc"].to_numpy()
    assert len(top._sampler.members) == np.unique(bins_by_edges(dscs, TOP_WEIGHTED_EDGES)).size
    assert len(top._sampler.members) > np.unique(dsc_bins(dscs)).size
