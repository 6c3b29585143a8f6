"""nnQC_predict's exit status says what happened, and its results stay tied to the files they were computed from."""
import os
import pickle
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID, TRAINER
from helpers import write_like

from nnqc.atomic_files import file_sha256
from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.inference.case_failures import DeviceUnusableError, device_is_unusable, unexpected
from nnqc.inference.predictor import nnQCPredictor
from nnqc.run.predict import EXIT_CASE_ERRORS, EXIT_FAILED, predict_entry
from nnqc.run.predict import model_folder as trained_model_folder


@pytest.fixture
def inputs(trained_pipeline, tmp_path) -> dict:
    """A private copy of the phantom test cases (tests here change files)."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    shutil.copytree(join(trained_pipeline.source_folder, "imagesTs"), images)
    shutil.copytree(join(trained_pipeline.source_folder, "labelsTs"), segs)
    names = sorted(f[:-len(".nii.gz")] for f in os.listdir(segs))
    return {"images": str(images), "segs": str(segs), "names": names}


def predict(monkeypatch, images: str, segs: str, out: str) -> int:
    """nnQC_predict in this process (so that a failure can be injected); its exit status."""
    monkeypatch.setattr(sys, "argv", ["nnQC_predict", "-i", images, "-s", segs, "-o", out, "-d", str(QC_ID),
                                      "-tr", TRAINER, "-f", "0", "-device", "cpu", "--no_maps"])
    try:
        predict_entry()
    except SystemExit as e:
        return e.code
    return 0


def test_exit_status_all_assessed_some_skipped_an_error_none_assessed(pipeline_env, inputs, tmp_path, monkeypatch,
                                                                      capsys):
    assert predict(monkeypatch, inputs["images"], inputs["segs"], str(tmp_path / "all")) == 0

    # a case whose inputs are wrong is skipped for its named reason; the run still succeeds
    with_bad = tmp_path / "with_bad"
    shutil.copytree(inputs["segs"], with_bad)
    shutil.copy(join(inputs["segs"], inputs["names"][0] + ".nii.gz"), with_bad / "no_images.nii.gz")
    assert predict(monkeypatch, inputs["images"], str(with_bad), str(tmp_path / "some_skipped")) == 0
    status = pd.read_csv(join(tmp_path, "some_skipped", "qc_summary.csv")).set_index("case")["status"]
    assert status["no_images"].startswith("skipped: no images") and (status[inputs["names"]] == "ok").all()

    # an unexpected error in one case: the others are assessed, the summary written, the status non-zero
    original = nnQCPredictor.predict_preprocessed
    calls = []

    def failing_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("injected bug")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nnQCPredictor, "predict_preprocessed", failing_once)
    capsys.readouterr()
    out = str(tmp_path / "error")
    assert predict(monkeypatch, inputs["images"], inputs["segs"], out) == EXIT_CASE_ERRORS
    monkeypatch.setattr(nnQCPredictor, "predict_preprocessed", original)
    status = pd.read_csv(join(out, "qc_summary.csv")).set_index("case")["status"]
    failed = inputs["names"][1]
    assert status[failed].startswith(f"error: {failed} (") and "IndexError: injected bug" in status[failed]
    assert (status.drop(failed) == "ok").all()
    assert "injected bug" in open(join(out, "qc_errors.log")).read()
    assert "qc_errors.log" in capsys.readouterr().err
    # --continue_prediction assesses the failed case again, and the run then succeeds
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--continue_prediction"])
    try:
        predict_entry()
    except SystemExit as e:
        pytest.fail(f"the continued run exited with {e.code}")
    assert (pd.read_csv(join(out, "qc_summary.csv"))["status"] == "ok").all()

    # no case assessed: every segmentation lacks its images
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(join(inputs["segs"], inputs["names"][0] + ".nii.gz"), only_bad / "no_images.nii.gz")
    capsys.readouterr()
    assert predict(monkeypatch, inputs["images"], str(only_bad), str(tmp_path / "none")) == EXIT_FAILED
    assert "no case was assessed" in capsys.readouterr().err
    assert os.path.isfile(join(tmp_path, "none", "qc_summary.csv"))


def test_a_device_that_fails_for_good_stops_the_run_with_the_cases_done_so_far(pipeline_env, inputs, tmp_path,
                                                                               monkeypatch):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(trained_model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"),
                                                   (0,))
    original, calls = predictor.predict_preprocessed, []

    def poisoned_after_first(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict_preprocessed", poisoned_after_first)
    out = str(tmp_path / "out")
    with pytest.raises(DeviceUnusableError, match="device-side assert.*stops here"):
        predictor.predict_from_files(inputs["images"], inputs["segs"], out, save_maps=False)
    assert len(calls) == 2  # the third case was not tried
    status = pd.read_csv(join(out, "qc_summary.csv")).set_index("case")["status"]
    first, second, third = inputs["names"]
    assert status[first] == "ok" and status[second].startswith("error: ") and third not in status.index


def test_which_errors_make_the_device_unusable():
    def raised(error):
        try:
            raise error
        except Exception as e:
            return unexpected(e, "case")

    fatal = raised(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert device_is_unusable(fatal) and device_is_unusable(pickle.loads(pickle.dumps(fatal)))  # from a worker
    assert not device_is_unusable(raised(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")))
    assert not device_is_unusable(raised(ValueError("device-side assert")))  # not a device error
    assert not device_is_unusable(raised(RuntimeError("shape mismatch")))


def replace_keeping_an_older_mtime(path: str, array: np.ndarray) -> None:
    """Rewrite a label file with other content and an mtime older than before (a restored backup, a copy with
    preserved times): a check of modification times would not notice."""
    stamp = os.stat(path)
    write_like(array, sitk.ReadImage(path), path)
    os.utime(path, (stamp.st_atime - 100, stamp.st_mtime - 100))


def test_an_input_replaced_after_prediction_is_noticed(pipeline_env, inputs, tmp_path, capsys):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(trained_model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"),
                                                   (0,))
    out = str(tmp_path / "out")
    predictor.predict_from_files(inputs["images"], inputs["segs"], out)
    replaced, kept = inputs["names"][0], inputs["names"][1]
    segmentation = join(inputs["segs"], replaced + ".nii.gz")
    assert load_json(join(out, "qc_cases", replaced + ".json"))["inputs"][segmentation]["size"] \
        == os.path.getsize(segmentation)
    array = sitk.GetArrayFromImage(sitk.ReadImage(segmentation))
    replace_keeping_an_older_mtime(segmentation, np.zeros_like(array))  # the segmentation is now empty

    # nnQC_evaluate refuses to compare predictions with files they were not computed from, naming the file
    with pytest.raises(ValueError, match=f"changed or were replaced .*{replaced}: {segmentation}"):
        evaluate_predictions(out, join(pipeline_env.source_folder, "labelsTs"), verbose=False)

    # --continue_prediction assesses exactly the changed case again
    kept_record = open(join(out, "qc_cases", kept + ".json")).read()
    before = pd.read_csv(join(out, "qc_summary.csv")).set_index("case")
    capsys.readouterr()
    after = predictor.predict_from_files(inputs["images"], inputs["segs"], out, continue_prediction=True)
    assert f"{segmentation} changed since it was assessed: assessed again" in capsys.readouterr().out
    assert open(join(out, "qc_cases", kept + ".json")).read() == kept_record
    assert load_json(join(out, "qc_cases", replaced + ".json"))["inputs"][segmentation]["sha256"] \
        == file_sha256(segmentation)
    assert sorted(after["case"]) == sorted(before.index)
    # and now the predictions describe the files again
    result = evaluate_predictions(out, join(pipeline_env.source_folder, "labelsTs"), verbose=False)
    assert result["num_evaluated"] == len(inputs["names"]) and result["inputs_not_verified"] == []
