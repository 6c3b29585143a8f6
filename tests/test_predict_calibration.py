"""Calibrated output of nnQC_predict: intervals, decisions and the calibrated columns; models without calibration."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import TRAINER
from test_predict import cases  # noqa: F401  (the fixture: good, shifted and anisotropic-oblique phantom cases)

from nnqc.calibration.calibrated_quality import CALIBRATED_COLUMNS
from nnqc.calibration.calibration_file import CALIBRATION_FILE, OUT_OF_FOLD_PREDICTIONS, Calibration
from nnqc.calibration.decision import FAIL, PASS, REVIEW, decide
from nnqc.calibration.fold_coverage import TRAINING_RANGE_FILE
from nnqc.inference.predictor import nnQCPredictor
from nnqc.model_sharing.export import export_model_folder_to_zip


def write_out_of_fold(model: str, fold: int, rng: np.random.Generator, n: int = 200) -> None:
    """Out-of-fold predictions of a model that is 0.05 too pessimistic, with small errors: narrow intervals."""
    predicted = rng.uniform(0, 0.95, n)
    true = np.clip(predicted + 0.05 + rng.normal(0, 0.01, n), 0, 1)
    table = pd.DataFrame({"sample": [f"f{fold}_{i}" for i in range(n)],
                          "subject": [f"f{fold}_subject{i // 5}" for i in range(n)], "source": "seggen",
                          "generator": "seggen", "dsc": true, "nsd": true, "predicted_dsc": predicted,
                          "predicted_nsd": predicted})
    path = join(model, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table.to_csv(path, index=False)


@pytest.fixture(scope="module")
def calibrated_model(trained_pipeline, tmp_path_factory) -> str:
    """A copy of the tiny trained model (the shared one stays as it is) with out-of-fold predictions."""
    source = join(trained_pipeline.results, "Dataset701_PhantomQC", f"{TRAINER}__nnQCPlans__3d_fullres")
    model = str(tmp_path_factory.mktemp("calibrated") / os.path.basename(source))
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("validation"))
    rng = np.random.default_rng(5)
    for fold in (0, 1):
        write_out_of_fold(model, fold, rng)
    return model


def expected_decision(row, flag_below):
    reasons = [r for r in str(row["out_of_training_range"] or "").split("; ") if r and r != "nan"]
    decision = decide(row["dsc_lower"], row["dsc_upper"], flag_below, reasons, bool(row["interval_finite"]))
    return REVIEW if row["partial_view"] and decision != FAIL else decision


def test_intervals_decisions_and_calibrated_columns(calibrated_model, cases, tmp_path):  # noqa: F811
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "nnqc.run.predict", "-m", calibrated_model, "-device", "cpu", "-f", "0", "1",
               "-i", cases["images"], "-s", cases["segs"], "-o", out, "--alpha", "0.2", "--flag_below", "0.0",
               "--no_maps"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "dsc_interval" in result.stdout and "decision" in result.stdout
    assert "decisions at coverage 0.8 against DSC 0.0:" in result.stdout
    assert os.path.isfile(join(calibrated_model, CALIBRATION_FILE))
    table = pd.read_csv(join(out, "qc_summary.csv"), dtype={"case": str})
    assert set(CALIBRATED_COLUMNS) <= set(table.columns) and (table["status"] == "ok").all()
    calibration = Calibration(load_json(join(calibrated_model, CALIBRATION_FILE)))
    for _, row in table.iterrows():
        # the recalibration removes the model's pessimism (0.05) and the interval is about it
        assert row["calibrated_dsc"] == pytest.approx(calibration.point("dsc", [row["predicted_dsc"]])[0])
        assert 0 <= row["dsc_lower"] <= row["calibrated_dsc"] <= row["dsc_upper"] <= 1
        assert 0 <= row["nsd_lower"] <= row["calibrated_nsd"] <= row["nsd_upper"] <= 1
        assert row["interval_finite"] and row["dsc_upper"] - row["dsc_lower"] < 0.2
        assert row["decision"] == expected_decision(row, 0.0)
    by_case = table.set_index("case")
    _, shifted, oblique = cases["names"]
    assert "spacing" in by_case.loc[oblique, "out_of_training_range"] and by_case.loc[oblique, "decision"] == REVIEW
    # in range and seen whole, with every lower bound >= 0, a case passes: the shifted segmentation's case is such
    # a case (the good one's T1 and FLAIR medians lie outside its training subjects', and it is reviewed)
    assert not by_case.loc[shifted, "partial_view"] and by_case["out_of_training_range"].fillna("")[shifted] == ""
    assert by_case.loc[shifted, "decision"] == PASS
    settings = load_json(join(out, "predict_settings.json"))
    assert settings["alpha"] == 0.2 and settings["recalibration"] is True
    assert settings["calibration"]["available"] and settings["calibration"]["built_from"]["folds"] == [0, 1]
    summary = load_json(join(out, "qc_summary.json"))
    assert summary["settings"]["calibration"]["available"]
    assert {c["case"]: c["decision"] for c in summary["cases"]} == dict(zip(table["case"], table["decision"]))

    # another alpha is another run: --continue_prediction refuses it
    again = subprocess.run([*command[:command.index("--alpha") + 1], "0.1", *command[command.index("--alpha") + 2:],
                            "--continue_prediction"], capture_output=True, text=True)
    assert again.returncode == 1 and "alpha 0.2 -> 0.1" in again.stderr


def test_no_recalibration_centres_the_intervals_on_the_raw_prediction(calibrated_model, cases, tmp_path):  # noqa: F811
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(calibrated_model, (0,), recalibrate=False)
    table = predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / "raw"), save_maps=False,
                                         flag_below=1.0)
    np.testing.assert_allclose(table["calibrated_dsc"], table["predicted_dsc"])
    # threshold 1: every interval upper bound is below it unless it reaches 1 exactly
    for _, row in table.iterrows():
        assert row["decision"] == expected_decision(row, 1.0)
    assert load_json(join(str(tmp_path / "raw"), "predict_settings.json"))["recalibration"] is False


def test_model_without_calibration_predicts_and_says_so(trained_pipeline, cases, tmp_path, capsys):  # noqa: F811
    source = join(trained_pipeline.results, "Dataset701_PhantomQC", f"{TRAINER}__nnQCPlans__3d_fullres")
    older = str(tmp_path / "older_model")  # a model trained before folds stored their out-of-fold predictions
    shutil.copytree(source, older, ignore=shutil.ignore_patterns("validation", CALIBRATION_FILE))
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(older, (0,))
    assert predictor.calibration is None
    assert not os.path.exists(join(older, CALIBRATION_FILE))
    out = str(tmp_path / "out")
    table = predictor.predict_from_files(cases["images"], cases["segs"], out, save_maps=False)
    assert (table["status"] == "ok").all() and table["predicted_dsc"].notna().all()
    assert "WARNING: no calibration" in capsys.readouterr().out
    assert table["calibrated_dsc"].isna().all() and table["dsc_lower"].isna().all()
    assert table["decision"].fillna("").eq("").all()
    assert "spacing" in table.set_index("case").loc[cases["names"][2], "out_of_training_range"]
    settings = load_json(join(out, "qc_summary.json"))["settings"]
    assert settings["calibration"]["available"] is False
    assert OUT_OF_FOLD_PREDICTIONS in settings["calibration"]["reason"]


def test_exported_calibration_is_used_as_shipped(calibrated_model, tmp_path):
    shipped = str(tmp_path / "shipped")
    shutil.copytree(calibrated_model, shipped)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(shipped, (0, 1))
    built = json.loads(json.dumps(predictor.calibration.data["built_from"]))
    for fold in (0, 1):
        shutil.rmtree(join(shipped, f"fold_{fold}", "validation"))  # an exported model has no validation folder
    predictor.load_calibration()
    assert predictor.calibration is not None and predictor.calibration_status["built_from"] == built
    assert "as shipped" in predictor.calibration_status["how"]
    predictor.folds = [0]  # calibration.json was built from folds 0 and 1: not used for fold 0 alone
    predictor.load_calibration()
    assert predictor.calibration is None and "fold 0" in predictor.calibration_status["reason"]


def test_export_ships_the_calibration_of_the_exported_folds(calibrated_model, tmp_path):
    model = str(tmp_path / "results" / "Dataset701_PhantomQC" / os.path.basename(calibrated_model))
    shutil.copytree(calibrated_model, model)
    archive = str(tmp_path / "model.zip")
    metadata = export_model_folder_to_zip(model, archive, folds=["0"])
    assert metadata["calibration"] == CALIBRATION_FILE
    with zipfile.ZipFile(archive) as z:
        shipped = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/" + CALIBRATION_FILE))))
    assert shipped["built_from"]["folds"] == [0] and shipped["num_samples"] == 200


def test_labels_no_training_candidate_held_put_a_case_out_of_range(calibrated_model, cases, tmp_path):  # noqa: F811
    """A model whose fold 1 never saw label 3: every segmentation holding it is out of the training range (the
    ensemble has seen a label only when every fold has) and at most reviewed, never passed."""
    model = str(tmp_path / "model")
    shutil.copytree(calibrated_model, model)
    record = load_json(join(model, "fold_1", TRAINING_RANGE_FILE))
    assert record["labels"] == [1, 2, 3]
    with open(join(model, "fold_1", TRAINING_RANGE_FILE), "w") as f:
        json.dump({**record, "labels": [1, 2]}, f)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (0, 1))
    out = str(tmp_path / "out")
    table = predictor.predict_from_files(cases["images"], cases["segs"], out, save_maps=False, flag_below=0.0)
    holds_3 = {name: 3 in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(join(cases["segs"], name + ".nii.gz"))))
               for name in cases["names"]}
    assert any(holds_3.values())
    for _, row in table.iterrows():
        reasons = str(row["out_of_training_range"] or "")
        assert ("labels: label(s) 3 never present in a training segmentation" in reasons) == holds_3[row["case"]]
        assert "labels" not in str(row["not_checked"] or "")
        if holds_3[row["case"]]:
            assert row["decision"] == REVIEW  # flag_below 0: in range, it would pass
    assert load_json(join(out, "predict_settings.json"))["training_coverage"]["labels"] == [1, 2]

    # fold 0 trained before the labels were recorded: the check is not made, and says why
    os.remove(join(model, "fold_0", TRAINING_RANGE_FILE))
    predictor.initialize_from_trained_model_folder(model, (0, 1))
    table = predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / "out2"), save_maps=False,
                                         flag_below=0.0)
    assert not table["out_of_training_range"].fillna("").str.contains("labels|intensity").any()
    for check in ("labels", "intensity"):
        assert table["not_checked"].str.contains(f"{check}: .*fold_0/{TRAINING_RANGE_FILE} does not exist").all()


def test_unlike_images_are_out_of_range_whatever_the_segmentation(calibrated_model, cases, tmp_path):  # noqa: F811
    """Four times as bright images (the phantoms' brightness varies two-fold between subjects) are outside the
    training range on every channel; the same images as they are, with a segmentation shifted onto other tissue,
    are not (the check is of the image alone)."""
    images = tmp_path / "images"
    shutil.copytree(cases["images"], images)
    good, poor, _ = cases["names"]
    for c in range(4):
        path = str(images / f"{good}_{c:04d}.nii.gz")
        image = sitk.ReadImage(path)
        brighter = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) * 4)
        brighter.CopyInformation(image)
        sitk.WriteImage(brighter, path, True)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(calibrated_model, (0, 1))
    table = predictor.predict_from_files(str(images), cases["segs"], str(tmp_path / "out"), save_maps=False)
    reasons = table.set_index("case")["out_of_training_range"].fillna("")
    assert all(f"intensity: channel {name}: median image intensity" in reasons[good]
               for name in ("T1", "T1ce", "T2", "FLAIR")), reasons[good]
    assert table.set_index("case").loc[good, "decision"] == REVIEW
    assert "intensity" not in reasons[poor]  # its segmentation is shifted by 6 voxels: the images are fine
