"""nnQC_evaluate on hand-made prediction folders: exact figures, bit decoding, balancing, errors, no stray writes."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import surface_distance
from helpers import write_image, write_json

from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.metrics.sem import decode_sem_bits, encode_sem_bits

if not hasattr(np, "Inf"):
    np.Inf = np.inf  # the reference surface_distance package predates NumPy 2
ENDING = ".nii.gz"
DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "A": 1, "B": 2}, "file_ending": ENDING,
                "nsd_tolerance_mm": 1.5}
REGIONS = [(1,), (2,)]
SHAPE = (8, 12, 14)
SPACING_ZYX = (2.0, 0.8, 1.0)
ORIGIN = (3.0, -2.0, 5.0)
FLAG_BELOW = 0.7
A_CUBE = (slice(2, 6), slice(2, 6), slice(2, 6))
B_CUBE = (slice(2, 6), slice(6, 10), slice(8, 12))


def reference_volume() -> np.ndarray:
    reference = np.zeros(SHAPE, dtype=np.uint8)
    reference[A_CUBE] = 1
    reference[B_CUBE] = 2
    return reference


def case_volumes() -> dict:
    """case -> (assessed segmentation, predicted bit-encoded error map, true DSC by hand, DSC_SEM A/B by hand)."""
    reference = reference_volume()
    cases = {}
    # perfect segmentation; one voxel wrongly predicted as an A error -> DSC_SEM_A 0, B both empty -> 1
    error_map = np.zeros(SHAPE, dtype=np.uint8)
    error_map[0, 0, 0] = 1
    cases["perfect"] = (reference.copy(), error_map, 1.0, (0.0, 1.0))
    # B missing: TP 64, FN 64 -> 128 / 192; half of the B error predicted -> DSC_SEM_B = 64 / 96
    segmentation = reference.copy()
    segmentation[B_CUBE] = 0
    error_map = np.zeros(SHAPE, dtype=np.uint8)
    error_map[2:4, 6:10, 8:12] = 2
    cases["missing_b"] = (segmentation, error_map, 2 / 3, (1.0, 2 / 3))
    # B labelled as A: TP 64, FP 64, FN 64 -> 1 / 2; both regions wrong on B, predicted exactly (value 3)
    segmentation = reference.copy()
    segmentation[B_CUBE] = 1
    error_map = np.zeros(SHAPE, dtype=np.uint8)
    error_map[B_CUBE] = 3
    cases["swapped"] = (segmentation, error_map, 0.5, (1.0, 1.0))
    # A shifted by 2 voxels along x: TP 32 + 64, FP 32, FN 32 -> 192 / 256; A error predicted exactly
    segmentation = reference.copy()
    segmentation[A_CUBE] = 0
    segmentation[2:6, 2:6, 4:8] = 1
    error_map = ((segmentation == 1) ^ (reference == 1)).astype(np.uint8)
    cases["shifted"] = (segmentation, error_map, 0.75, (1.0, 1.0))
    for name in ("perfect2", "perfect3"):
        cases[name] = (reference.copy(), np.zeros(SHAPE, dtype=np.uint8), 1.0, (1.0, 1.0))
    return cases


PREDICTED = {"perfect": (0.9, 0.92), "missing_b": (0.6, 0.55), "swapped": (0.55, 0.4), "shifted": (0.8, 0.7),
             "perfect2": (0.95, 0.97), "perfect3": (0.85, 0.9), "noref": (0.3, 0.2)}


def write_volume(array: np.ndarray, path, spacing_zyx=SPACING_ZYX) -> None:
    """An image at this module's origin, its spacing given in the array's (z, y, x) order."""
    write_image(array, path, tuple(reversed(spacing_zyx)), ORIGIN)


def make_prediction_output(base, with_maps: bool = True) -> dict:
    """Images, segmentations, references and an nnQC_predict output folder as nnQC_predict writes it."""
    folders = {k: base / k for k in ("images", "segs", "refs", "out")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    reference = reference_volume()
    volumes = case_volumes()
    volumes["noref"] = (reference.copy(), np.zeros(SHAPE, dtype=np.uint8), None, None)
    rows = []
    voxel_ml = float(np.prod(SPACING_ZYX)) / 1000
    for case, (segmentation, error_map, _, _) in volumes.items():
        write_volume((rng.normal(0, 10, SHAPE) + 100 * (reference > 0)).astype(np.float32),
                     folders["images"] / f"{case}_0000{ENDING}")
        write_volume(segmentation, folders["segs"] / f"{case}{ENDING}")
        if case != "noref":
            write_volume(reference, folders["refs"] / f"{case}{ENDING}")
        if with_maps:
            write_volume(error_map, folders["out"] / f"{case}{ENDING}")
        dsc, nsd = PREDICTED[case]
        rows.append({"case": case, "predicted_dsc": dsc, "predicted_dsc_sd": 0.01, "predicted_nsd": nsd,
                     "predicted_nsd_sd": 0.02, "flagged": dsc < FLAG_BELOW,
                     "sem_volume_ml_A": float((error_map & 1).sum() * voxel_ml),
                     "sem_volume_ml_B": float(((error_map >> 1) & 1).sum() * voxel_ml), "status": "ok"})
    write_volume(reference, folders["images"] / f"broken_0000{ENDING}")
    write_volume(reference, folders["refs"] / f"broken{ENDING}")
    rows.append({"case": "broken", "status": "skipped: missing channel file(s) broken_0001.nii.gz"})
    table = pd.DataFrame(rows, columns=["case", "predicted_dsc", "predicted_dsc_sd", "predicted_nsd",
                                        "predicted_nsd_sd", "flagged", "sem_volume_ml_A", "sem_volume_ml_B", "status"])
    table["_ok"] = table["status"] == "ok"
    table = table.sort_values(["_ok", "predicted_dsc"], ascending=[False, True]).drop(columns="_ok")
    table.to_csv(folders["out"] / "qc_summary.csv", index=False)
    settings = {"images_folder": str(folders["images"]), "segmentations_folder": str(folders["segs"]),
                "dataset": "Dataset901_ToyQC", "configuration": "3d_fullres", "folds": [0, 1],
                "trainer": "nnQCTrainer", "plans": "nnQCPlans", "checkpoint": "checkpoint_final.pth",
                "flag_below": FLAG_BELOW, "file_ending": ENDING, "region_names": ["A", "B"],
                "regions": [list(r) for r in REGIONS], "nsd_tolerance_mm": 1.5, "dataset_json": DATASET_JSON}
    (folders["out"] / "predict_settings.json").write_text(json.dumps(settings))
    cases = json.loads(table.to_json(orient="records"))
    (folders["out"] / "qc_summary.json").write_text(json.dumps({"cases": cases, "settings": settings}))
    return {k: str(v) for k, v in folders.items()}


def reference_nsd(reference: np.ndarray, query: np.ndarray, tolerance: float) -> float:
    """Mean over regions of DeepMind's surface Dice (independent implementation)."""
    values = []
    for (label,) in REGIONS:
        distances = surface_distance.compute_surface_distances(reference == label, query == label, SPACING_ZYX)
        values.append(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance))
    return float(np.mean(values))


def tree_snapshot(root) -> dict:
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            found[path] = (os.path.getmtime(path), os.path.getsize(path))
    return found


def test_figures_match_hand_computed_values(tmp_path):
    folders = make_prediction_output(tmp_path)
    result = evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    expected = {case: v for case, v in case_volumes().items()}
    table = pd.read_csv(os.path.join(folders["out"], "qc_evaluation.csv")).set_index("case")
    assert sorted(table.index) == sorted(expected)
    reference = reference_volume()
    for case, (segmentation, _, true_dsc, (sem_a, sem_b)) in expected.items():
        row = table.loc[case]
        assert row["true_dsc"] == pytest.approx(true_dsc, abs=1e-12)
        assert row["true_nsd"] == pytest.approx(reference_nsd(reference, segmentation, 1.5), abs=1e-9)
        assert row["predicted_dsc"] == PREDICTED[case][0]
        assert row["abs_error_dsc"] == pytest.approx(abs(true_dsc - PREDICTED[case][0]), abs=1e-12)
        assert (row["dsc_sem_A"], row["dsc_sem_B"]) == pytest.approx((sem_a, sem_b), abs=1e-12)
        assert bool(row["flagged"]) == (PREDICTED[case][0] < FLAG_BELOW)
    assert table["in_summary"].all()
    # a case where NSD must differ from DSC: the tolerance matters
    assert 0 < table.loc["shifted", "true_nsd"] < 1

    cases = sorted(expected)
    true_dsc = np.array([expected[c][2] for c in cases])
    predicted_dsc = np.array([PREDICTED[c][0] for c in cases])
    assert result["dsc"]["r"] == pytest.approx(np.corrcoef(true_dsc, predicted_dsc)[0, 1], abs=1e-12)
    assert result["dsc"]["mae"] == pytest.approx(np.mean(np.abs(true_dsc - predicted_dsc)), abs=1e-12)
    assert result["dsc"]["n"] == 6 and result["num_cases"] == 6 and result["balanced"] is False
    true_nsd = table.loc[cases, "true_nsd"].to_numpy()
    predicted_nsd = np.array([PREDICTED[c][1] for c in cases])
    assert result["nsd"]["r"] == pytest.approx(np.corrcoef(true_nsd, predicted_nsd)[0, 1], abs=1e-12)
    assert result["nsd"]["mae_sd"] == pytest.approx(np.std(np.abs(true_nsd - predicted_nsd)), abs=1e-12)
    sem = np.array([expected[c][3] for c in cases])
    assert result["dsc_sem"]["A"]["mean"] == pytest.approx(sem[:, 0].mean(), abs=1e-12)
    assert result["dsc_sem"]["B"]["mean"] == pytest.approx(sem[:, 1].mean(), abs=1e-12)
    assert result["dsc_sem"]["mean"] == pytest.approx(sem.mean(), abs=1e-12)
    assert {c["case"] for c in result["not_evaluated"]} == {"noref", "broken"}
    reasons = {c["case"]: c["reason"] for c in result["not_evaluated"]}
    assert "no reference" in reasons["noref"] and "missing channel" in reasons["broken"]

    with open(os.path.join(folders["out"], "qc_evaluation.json")) as f:
        assert json.load(f) == result
    for name in ("scatter_dsc.png", "scatter_nsd.png"):
        with open(os.path.join(folders["out"], name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not any(n.startswith(".") for n in os.listdir(folders["out"]))


def test_without_maps_dsc_sem_is_absent(tmp_path):
    folders = make_prediction_output(tmp_path, with_maps=False)
    result = evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    assert result["dsc_sem"] == {"mean": None}
    assert result["dsc"]["n"] == 6
    with open(os.path.join(folders["out"], "qc_evaluation.json")) as f:
        assert "NaN" not in f.read()  # strict JSON


def test_bit_decoding():
    label_map = np.array([[0, 1, 2, 3, 4, 5, 6, 7]], dtype=np.uint8)
    decoded = decode_sem_bits(label_map, 3)
    assert decoded.shape == (3, 1, 8) and decoded.dtype == bool
    np.testing.assert_array_equal(decoded[0, 0], [0, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(decoded[1, 0], [0, 0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(decoded[2, 0], [0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="do not encode 2 region"):
        decode_sem_bits(label_map, 2)
    # the writer's encoding, decoded back
    sem = np.random.default_rng(1).random((3, 5, 6, 7)) > 0.6
    np.testing.assert_array_equal(decode_sem_bits(encode_sem_bits(sem), 3), sem)


def test_balanced_subset_is_deterministic_and_used(tmp_path):
    folders = make_prediction_output(tmp_path)
    result = evaluate_predictions(folders["out"], folders["refs"], balanced=True, verbose=False)
    # true DSCs 1, 1, 1, 2/3, 1/2, 3/4: four non-empty bins, the smallest holds one case
    table = pd.read_csv(os.path.join(folders["out"], "qc_evaluation.csv"))
    chosen = table[table["in_summary"]]
    assert result["num_cases"] == 4 and result["num_evaluated"] == 6 and result["balanced"] is True
    assert sorted(chosen["true_dsc"].round(6)) == [0.5, round(2 / 3, 6), 0.75, 1.0]
    assert result["dsc"]["mae"] == pytest.approx(chosen["abs_error_dsc"].mean(), abs=1e-12)
    assert result["dsc"]["r"] == pytest.approx(np.corrcoef(chosen["true_dsc"], chosen["predicted_dsc"])[0, 1])
    outputs = {}
    for name in ("qc_evaluation.csv", "qc_evaluation.json", "scatter_dsc.png", "scatter_nsd.png"):
        with open(os.path.join(folders["out"], name), "rb") as f:
            outputs[name] = f.read()
    evaluate_predictions(folders["out"], folders["refs"], balanced=True, verbose=False)
    for name, content in outputs.items():
        with open(os.path.join(folders["out"], name), "rb") as f:
            assert f.read() == content, name


def test_clear_errors(tmp_path):
    folders = make_prediction_output(tmp_path)
    empty = tmp_path / "not_an_output"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not an nnQC_predict output"):
        evaluate_predictions(str(empty), folders["refs"], verbose=False)
    with pytest.raises(FileNotFoundError, match="reference folder"):
        evaluate_predictions(folders["out"], str(tmp_path / "missing"), verbose=False)
    with pytest.raises(ValueError, match="must not be, contain or lie inside"):
        evaluate_predictions(folders["out"], str(tmp_path), verbose=False)
    other_regions = {**DATASET_JSON, "labels": {"background": 0, "A": 1}}
    with pytest.raises(ValueError, match="regions"):
        evaluate_predictions(folders["out"], folders["refs"], other_regions, verbose=False)
    assert not os.path.exists(os.path.join(folders["out"], "qc_evaluation.json"))  # nothing half-written


def test_bad_references_are_skipped_by_name_and_the_evaluation_is_written(tmp_path):
    """Per-case problems (geometry, labels not in dataset.json, 4D, truncated, unreadable) skip the case with its
    reason; the figures come from the other cases."""
    folders = make_prediction_output(tmp_path)
    refs = folders["refs"]
    write_volume(reference_volume(), os.path.join(refs, f"swapped{ENDING}"), (2.0, 0.8, 1.1))
    brats_style = reference_volume()
    brats_style[brats_style == 2] = 4  # a label dataset.json does not declare: no "true" DSC from it
    write_volume(brats_style, os.path.join(refs, f"missing_b{ENDING}"))
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(reference_volume())] * 2)
    sitk.WriteImage(four_d, os.path.join(refs, f"shifted{ENDING}"), True)
    with open(os.path.join(refs, f"perfect2{ENDING}"), "rb") as f:
        content = f.read()
    with open(os.path.join(refs, f"perfect2{ENDING}"), "wb") as f:
        f.write(content[:-12])  # an interrupted copy: the end of the stream is missing
    with open(os.path.join(refs, f"perfect3{ENDING}"), "wb") as f:
        f.write(b"not an image at all")
    result = evaluate_predictions(folders["out"], refs, verbose=False)
    reasons = {c["case"]: c["reason"] for c in result["not_evaluated"]}
    expected = {"swapped": r"case swapped.*swapped\.nii\.gz.*geometry.*spacing",
                "missing_b": r"case missing_b.*missing_b\.nii\.gz holds labels \[4\]; dataset.json allows \[0, 1, 2\]",
                "shifted": r"case shifted.*shifted\.nii\.gz is a 4D image",
                "perfect2": r"case perfect2.*perfect2\.nii\.gz.*(truncated|corrupt)",
                "perfect3": r"case perfect3.*perfect3\.nii\.gz"}
    for case, pattern in expected.items():
        assert re.search(pattern, reasons[case]), (case, reasons[case])
        assert "\n" not in reasons[case] and ".cxx" not in reasons[case]
    table = pd.read_csv(os.path.join(folders["out"], "qc_evaluation.csv"))
    assert list(table["case"]) == ["perfect"] and result["num_cases"] == 1
    with open(os.path.join(folders["out"], "qc_evaluation.json")) as f:
        assert json.load(f) == result


def test_command_line_and_no_writes_outside_output(tmp_path):
    folders = make_prediction_output(tmp_path / "data")
    before = tree_snapshot(tmp_path)
    before_out = {p for p in before if p.startswith(folders["out"] + os.sep)}
    raw = tmp_path / "raw" / "Dataset901_ToyQC"
    raw.mkdir(parents=True)
    write_json(raw / "dataset.json", {**DATASET_JSON, "nsd_tolerance_mm": 3.0})
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw")}
    env.pop("nnUNet_preprocessed", None)
    env.pop("nnUNet_results", None)
    command = [sys.executable, "-m", "nnqc.run.evaluate", "-o", folders["out"], "-ref", folders["refs"]]
    done = subprocess.run([*command, "-np", "2", "-d", "901"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "DSC" in done.stdout and "NSD" in done.stdout and "DSC_SEM" in done.stdout
    with open(os.path.join(folders["out"], "qc_evaluation.json")) as f:
        assert json.load(f)["nsd_tolerance_mm"] == 3.0
    after = tree_snapshot(tmp_path)
    changed = {p for p in after if before.get(p) != after[p]}
    allowed = {os.path.join(folders["out"], n) for n in ("qc_evaluation.csv", "qc_evaluation.json",
                                                         "scatter_dsc.png", "scatter_nsd.png", "risk_coverage.png")}
    assert changed - {str(raw / "dataset.json")} == allowed
    assert before_out <= set(after)

    failed = subprocess.run([*command[:-1], str(tmp_path / "missing")], capture_output=True, text=True, env=env)
    assert failed.returncode != 0 and "reference folder" in failed.stderr and "Traceback" not in failed.stderr
    failed = subprocess.run([*command, "-d", "902"], capture_output=True, text=True, env=env)
    assert failed.returncode != 0 and "902" in failed.stderr and "Traceback" not in failed.stderr
