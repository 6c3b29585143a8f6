"""Test-time mirroring: outputs averaged over every mirroring of the spatial axes, SEMs mirrored back; the final
validation predicts as nnQC_predict does by default, and a calibration made otherwise is said."""
import contextlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID
from helpers import use_nnunet_folders
from test_region_predict import model_source
from torch import nn

from nnqc.calibration.calibration_file import OUT_OF_FOLD_PREDICTIONS, predictions_mirroring
from nnqc.checkpoint_files import load_checkpoint
from nnqc.inference.forward import mirrored_forward, mirrorings
from nnqc.inference.predictor import nnQCPredictor
from nnqc.run.train import get_trainer
from nnqc.training.final_validation import mirroring_label
from nnqc_trainers.nnQCTrainer_schedules import nnQCTrainer_2epochs


class OrientedNetwork(nn.Module):
    """Regression that depends on orientation (a weighted sum with a ramp along every axis), and SEM logits that
    are a voxel-wise function of the input: mirroring the input mirrors them."""

    def forward(self, x):
        ramp = sum(torch.arange(n, dtype=x.dtype).view(*[n if a == d else 1 for a in range(3)])
                   for d, n in enumerate(x.shape[2:]))
        regression = torch.stack([(x[:, 0] * ramp).mean((1, 2, 3)), x[:, 1].mean((1, 2, 3))], 1)
        return regression, x[:, 1:2] * 2 - 1


def test_mirrorings_are_every_combination_identity_first():
    assert mirrorings((0, 1, 2)) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirrorings(()) == [()]
    assert mirrorings((2, 0)) == [(), (0,), (2,), (0, 2)]


def test_mirrored_forward_averages_the_mirrored_passes_and_mirrors_sems_back():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 4, 5, 6)
    network = OrientedNetwork()
    regression, sem = mirrored_forward(network, x, (0, 1, 2), contextlib.nullcontext)
    expected = torch.stack([network(torch.flip(x, [a + 2 for a in axes]))[0] for axes in mirrorings((0, 1, 2))])
    assert torch.allclose(regression, expected.mean(0))
    assert not torch.allclose(regression, network(x)[0])  # the network does depend on orientation
    assert torch.allclose(sem, network(x)[1])  # a voxel-wise map comes back where it was
    plain = mirrored_forward(network, x, (), contextlib.nullcontext)
    assert torch.equal(plain[0], network(x)[0]) and torch.equal(plain[1], network(x)[1])


def test_calibration_records_how_its_out_of_fold_predictions_were_mirrored():
    made = pd.DataFrame({"sample": ["a", "b"], "test_time_mirroring": [mirroring_label((2, 0, 1))] * 2})
    assert mirroring_label((2, 0, 1)) == "0 1 2" and mirroring_label(()) == "none"
    assert predictions_mirroring(made) == "0 1 2"
    assert predictions_mirroring(made.drop(columns="test_time_mirroring")) == "none"  # written before the column
    # folds validated before and after: the column is missing in one fold's rows
    pooled = pd.concat([made, pd.DataFrame({"sample": ["c"]})], ignore_index=True)
    assert predictions_mirroring(pooled) == "mixed"


def validation_sample_inputs(trained_pipeline, table: pd.DataFrame, folder: Path) -> tuple[str, str, pd.Series]:
    """One of a fold's validation samples as nnQC_predict's inputs (its subject's images, its candidate), with its
    row of the fold's out-of-fold predictions (`table`)."""
    row = table.iloc[len(table) // 2]
    images, segs = folder / "images", folder / "segs"
    images.mkdir()
    segs.mkdir()
    for c in range(4):
        os.link(join(trained_pipeline.qc_dataset, "imagesTr", f"{row['subject']}_{c:04d}.nii.gz"),
                images / f"{row['sample']}_{c:04d}.nii.gz")
    os.link(join(trained_pipeline.qc_dataset, "candidatesTr", f"{row['sample']}.nii.gz"),
            segs / f"{row['sample']}.nii.gz")
    return str(images), str(segs), row


def test_final_validation_mirrors_as_predict_does_and_a_mismatch_is_said(trained_pipeline, tmp_path, monkeypatch):
    """The out-of-fold predictions that calibrate a model are made as nnQC_predict makes its own by default
    (averaged over the mirrorings of the axes the model allows), recorded in the validation tables and the
    calibration; predicting otherwise, or with a model validated before, is said. The tests' trainer allows no
    mirroring (one pass); a copy of its model whose checkpoint allows all three axes is validated again."""
    source = model_source(trained_pipeline)
    assert load_checkpoint(join(source, "fold_0", "checkpoint_final.pth"))["inference_allowed_mirroring_axes"] is None
    assert set(pd.read_csv(join(source, "fold_0", OUT_OF_FOLD_PREDICTIONS))["test_time_mirroring"]) == {"none"}
    results = tmp_path / "results"
    model = results / "Dataset701_PhantomQC" / os.path.basename(source)
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("calibration.json"))
    for fold in (0, 1):
        path = join(model, f"fold_{fold}", "checkpoint_final.pth")
        checkpoint = load_checkpoint(path)
        checkpoint["inference_allowed_mirroring_axes"] = (0, 1, 2)
        torch.save(checkpoint, path)
    use_nnunet_folders(monkeypatch, nnUNet_raw=trained_pipeline.raw, nnUNet_results=results,
                       nnUNet_preprocessed=trained_pipeline.preprocessed)
    trainer = get_trainer(QC_ID, "3d_fullres", 0, nnQCTrainer_2epochs, device=torch.device("cpu"))
    trainer.load_checkpoint(join(trainer.output_folder, "checkpoint_final.pth"))
    trainer.perform_actual_validation()
    table = pd.read_csv(join(model, "fold_0", OUT_OF_FOLD_PREDICTIONS), dtype={"sample": str, "subject": str})
    assert set(table["test_time_mirroring"]) == {"0 1 2"}
    assert load_json(join(model, "fold_0", "validation", "summary.json"))["test_time_mirroring"] == [0, 1, 2]
    images, segs, row = validation_sample_inputs(trained_pipeline, table, tmp_path)
    predicted = {}
    for mirroring in (True, False):
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, use_mirroring=mirroring)
        predictor.initialize_from_trained_model_folder(str(model), (0,))
        assert predictor.calibration.mirroring == "0 1 2"
        warnings = [w for w in predictor.calibration_warnings(0.1) if "mirroring" in w]
        if mirroring:
            assert predictor.mirror_axes == (0, 1, 2) and warnings == []
        else:
            assert len(warnings) == 1 and "these without test-time mirroring" in warnings[0]
        predicted[mirroring] = predictor.predict_from_files(images, segs, str(tmp_path / f"out_{mirroring}"),
                                                            save_maps=False).set_index("case")
    # nnQC_predict's default prediction of the sample is the fold's out-of-fold prediction of it (same weights,
    # same mirrorings; bf16 CPUs run both in bf16)
    assert predicted[True].loc[row["sample"], "predicted_dsc"] == pytest.approx(row["predicted_dsc"], abs=0.02)
    assert predicted[True].loc[row["sample"], "predicted_nsd"] == pytest.approx(row["predicted_nsd"], abs=0.02)
    # fold 1 still holds predictions made without mirroring: the folds differ
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), (0, 1))
    assert predictor.calibration.mirroring == "mixed"
    assert "with test-time mirroring in some folds only" in predictor.calibration_warnings(0.1)[0]
    # a model validated before the final validation recorded mirroring: its predictions lack the column
    for fold in (0, 1):
        path = join(model, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
        pd.read_csv(path).drop(columns="test_time_mirroring").to_csv(path, index=False)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), (0, 1))
    assert predictor.calibration.mirroring == "none"
    warning = predictor.calibration_warnings(0.1)[0]
    assert "made without test-time mirroring, these with test-time mirroring over axes 0 1 2" in warning
    assert "--disable_tta" in warning and "--val" in warning
