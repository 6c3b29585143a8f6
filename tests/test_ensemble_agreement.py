"""Ensemble agreement: pairwise DSC by hand, member folders checked by name, fusion fitted and applied, and
nnQC_predict / nnQC_evaluate with ensemble members end to end."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from conftest import QC_ID, TRAINER
from helpers import write_like
from test_predict import cases  # noqa: F401  (the module fixture of the predict tests' inputs)

from nnqc.calibration.fusion import FEATURES, Fusion, cross_fitted_fusion
from nnqc.inference.ensemble_members import EnsembleMemberError, check_member_folders
from nnqc.inference.predictor import nnQCPredictor
from nnqc.metrics.agreement import dsc_to_members, mean_pairwise_dsc, pairwise_dsc
from nnqc.run.predict import model_folder


def test_pairwise_dsc_by_hand_with_empty_members():
    a = np.zeros((1, 2, 4), np.uint8)
    a[0, 0, :2] = 1                 # two voxels of label 1
    b = a.copy()
    b[0, 0, 2] = 1                  # three voxels of label 1: DSC(a, b) = 2*2 / (2 + 3) = 0.8
    c = a.copy()
    c[0, 0, 0] = 2                  # one voxel relabelled: with a, TP 1, FP 1, FN 1 -> 2/4 = 0.5; with b 2/5
    empty = np.zeros_like(a)
    matrix = pairwise_dsc([a, b, c])
    assert matrix == pytest.approx(np.array([[1, .8, .5], [.8, 1, .4], [.5, .4, 1]]))
    assert mean_pairwise_dsc([a, b, c]) == pytest.approx((.8 + .5 + .4) / 3)
    assert mean_pairwise_dsc([empty, empty]) == 1.0      # two empty members agree
    assert mean_pairwise_dsc([a, empty, empty]) == pytest.approx(1 / 3)  # a vs empty: 0, empty vs empty: 1
    assert dsc_to_members(a, [b, c]) == pytest.approx((.8 + .5) / 2)
    with pytest.raises(ValueError, match="at least two members"):
        mean_pairwise_dsc([a])
    with pytest.raises(ValueError, match="differ in shape"):
        mean_pairwise_dsc([a, a[:, :1]])


def _labelled_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({f: rng.uniform(.4, 1, n) for f in FEATURES}, index=[f"case_{i:03d}" for i in range(n)])
    true = np.clip(.1 + .3 * table["predicted_dsc"] + .5 * table["ensemble_agreement"]
                   + .05 * table["dsc_to_members"] + rng.normal(0, .01, n), 0, 1)
    return table, true.to_numpy()


def test_fusion_recovers_a_linear_truth_and_round_trips(tmp_path):
    table, true = _labelled_table(200)
    fusion = Fusion.fit(table, true)
    assert fusion.coefficients == pytest.approx([.1, .3, .5, .05], abs=.02)
    cross_fitted = cross_fitted_fusion(table, true)
    assert np.abs(cross_fitted - true).mean() < .02  # out-of-fold values, still close on a linear truth
    intervals = fusion.intervals(table, alpha=.1)
    assert .85 <= np.mean((intervals.lower <= true) & (true <= intervals.upper)) <= 1
    fusion.save(str(tmp_path / "qc_fusion.json"))
    again = Fusion.load(str(tmp_path / "qc_fusion.json"))
    assert np.array_equal(again.fuse(table), fusion.fuse(table))
    data = json.load(open(tmp_path / "qc_fusion.json"))
    data["features"] = ["predicted_dsc"]
    with open(tmp_path / "bad.json", "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=r"bad.json is not an nnQC fusion file"):
        Fusion.load(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="at least 20 labelled cases"):
        Fusion.fit(table.iloc[:5], true[:5])


def _member_folders(tmp_path, inputs, shifts=(0, 1, 2)):
    """Three member folders: each case's segmentation rolled by a different number of voxels."""
    folders = []
    for k, shift in enumerate(shifts):
        folder = tmp_path / f"member_{k}"
        folder.mkdir()
        for name in inputs["names"]:
            image = sitk.ReadImage(join(inputs["segs"], name + ".nii.gz"))
            write_like(np.roll(sitk.GetArrayFromImage(image), shift, axis=2), image, str(folder / (name + ".nii.gz")))
        folders.append(str(folder))
    return folders


def test_member_folders_missing_a_case_or_off_grid_are_refused_by_name(cases, tmp_path):  # noqa: F811
    folders = _member_folders(tmp_path, cases)
    segmentations = {n: join(cases["segs"], n + ".nii.gz") for n in cases["names"]}
    check_member_folders(folders, segmentations, ".nii.gz")
    missing = join(folders[1], cases["names"][0] + ".nii.gz")
    os.rename(missing, missing + ".away")
    with pytest.raises(EnsembleMemberError, match=f"{missing} is missing"):
        check_member_folders(folders, segmentations, ".nii.gz")
    os.rename(missing + ".away", missing)
    image = sitk.ReadImage(missing)
    write_like(sitk.GetArrayFromImage(image), image, missing, spacing=(2.0, 2.0, 2.0))
    with pytest.raises(EnsembleMemberError, match=f"{missing} is not on the grid"):
        check_member_folders(folders, segmentations, ".nii.gz")
    with pytest.raises(EnsembleMemberError, match="at least two member folders"):
        check_member_folders(folders[:1], segmentations, ".nii.gz")


def test_predict_and_evaluate_with_ensemble_members(pipeline_env, cases, tmp_path):  # noqa: F811
    from nnqc.evaluation.evaluate import evaluate_predictions
    from nnqc.evaluation.figures import format_figures

    folders = _member_folders(tmp_path, cases)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    out = str(tmp_path / "out")
    table = predictor.predict_from_files(cases["images"], cases["segs"], out, save_maps=False,
                                         ensemble_members=folders).set_index("case")
    for name in cases["names"]:
        segmentation = sitk.GetArrayFromImage(sitk.ReadImage(join(cases["segs"], name + ".nii.gz")))
        members = [np.roll(segmentation, s, axis=2) for s in (0, 1, 2)]
        assert table.loc[name, "ensemble_agreement"] == pytest.approx(mean_pairwise_dsc(members))
        assert table.loc[name, "dsc_to_members"] == pytest.approx(dsc_to_members(segmentation, members))
        assert table.loc[name, "ensemble_members"] == 3
    assert "fused_dsc" not in table
    # a fusion file (made by hand: weights on the agreement only) gives the fused DSC and the decision from it
    fusion = Fusion.fit(*_labelled_table(40))
    fusion.coefficients = np.array([0., 0., 1., 0.])
    fusion.save(str(tmp_path / "qc_fusion.json"))
    fused = predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / "fused"), save_maps=False,
                                         ensemble_members=folders,
                                         fusion_file=str(tmp_path / "qc_fusion.json")).set_index("case")
    assert fused["fused_dsc"].to_numpy() == pytest.approx(fused["ensemble_agreement"].to_numpy())
    assert (fused["decision_from"] == "fused").all()
    assert (fused["fused_dsc_lower"] <= fused["fused_dsc"]).all()
    assert (fused["fused_dsc"] <= fused["fused_dsc_upper"]).all()
    # references: the segmentations rolled by one voxel (a member folder), on their grids
    result = evaluate_predictions(out, folders[1], verbose=False)
    confidences = result["ensemble"]["confidences"]
    assert set(confidences) == {"nnqc", "agreement"}  # fewer than 20 cases: no fusion fitted
    assert "20 needed" in result["ensemble"]["note"] and not os.path.isfile(join(out, "qc_fusion.json"))
    text = format_figures(result)  # what nnQC_evaluate prints: the confidences side by side
    assert "nnQC predicted DSC" in text and "ensemble agreement" in text
    with pytest.raises(ValueError, match="--fusion needs --ensemble_members"):
        predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / "x"),
                                     fusion_file=str(tmp_path / "qc_fusion.json"))
