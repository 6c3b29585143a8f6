"""nnQC_predict with a tiny trained model: outputs, geometry, ensembling, parts, bad input."""
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID, TRAINER
from helpers import tree_hashes, use_nnunet_folders, write_like

from nnqc.inference.case_failures import CaseError, UnexpectedCaseError
from nnqc.inference.predictor import nnQCPredictor
from nnqc.metrics.sem import decode_sem_bits
from nnqc.run.predict import model_folder

OBLIQUE = (0.8660254, -0.5, 0.0, 0.5, 0.8660254, 0.0, 0.0, 0.0, 1.0)


def snapshot(folder):
    return {f: (os.path.getmtime(join(folder, f)), os.path.getsize(join(folder, f)))
            for f in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def cases(trained_pipeline, tmp_path_factory):
    """Images/segmentations of the phantom test cases: good, degraded, anisotropic + oblique, and broken ones."""
    base = tmp_path_factory.mktemp("predict_inputs")
    images, segs = base / "images", base / "segs"
    images.mkdir()
    segs.mkdir()
    src = trained_pipeline.source_folder
    names = sorted(f[:-7] for f in os.listdir(join(src, "labelsTs")))
    good, poor, oblique = names
    for name in names:
        for c in range(4):
            shutil.copy(join(src, "imagesTs", f"{name}_{c:04d}.nii.gz"), images)
    label = sitk.ReadImage(join(src, "labelsTs", good + ".nii.gz"))
    sitk.WriteImage(label, str(segs / f"{good}.nii.gz"), True)
    poor_label = sitk.ReadImage(join(src, "labelsTs", poor + ".nii.gz"))
    arr = sitk.GetArrayFromImage(poor_label)
    write_like(np.roll(arr, 6, axis=1), poor_label, str(segs / f"{poor}.nii.gz"))
    # anisotropic spacing and a non-identity direction, for the images and the segmentation alike
    ob_label = sitk.ReadImage(join(src, "labelsTs", oblique + ".nii.gz"))
    for c in range(4):
        path = str(images / f"{oblique}_{c:04d}.nii.gz")
        img = sitk.ReadImage(path)
        write_like(sitk.GetArrayFromImage(img), img, path, (1.3, 0.9, 1.6), OBLIQUE)
    write_like(sitk.GetArrayFromImage(ob_label), ob_label, str(segs / f"{oblique}.nii.gz"), (1.3, 0.9, 1.6), OBLIQUE)
    return {"images": str(images), "segs": str(segs), "names": names}


def run_predict(env, *args):
    return subprocess.run([sys.executable, "-m", "nnqc.run.predict", "-d", str(QC_ID), "-tr", TRAINER,
                           "-device", "cpu", *args], capture_output=True, text=True, env={**os.environ, **env})


def test_outputs_and_geometry(trained_pipeline, cases, tmp_path):
    before = snapshot(cases["images"]), snapshot(cases["segs"])
    out = str(tmp_path / "out")
    result = run_predict(trained_pipeline.env(), "-i", cases["images"], "-s", cases["segs"], "-o", out, "-f", "0",
                         "--flag_below", "0.99")
    assert result.returncode == 0, result.stderr
    assert "case(s) assessed" in result.stdout
    table = pd.read_csv(join(out, "qc_summary.csv"))
    assert sorted(table["case"]) == cases["names"] and (table["status"] == "ok").all()
    assert list(table["predicted_dsc"]) == sorted(table["predicted_dsc"])  # worst first
    assert table["flagged"].all()  # every prediction is below 0.99 for this barely trained model
    assert ((table["predicted_dsc"] >= 0) & (table["predicted_dsc"] <= 1)).all()
    assert load_json(join(out, "qc_summary.json"))["cases"][0]["case"] == table["case"][0]
    for name in cases["names"]:
        sem = sitk.ReadImage(join(out, name + ".nii.gz"))
        seg = sitk.ReadImage(join(cases["segs"], name + ".nii.gz"))
        assert sem.GetSize() == seg.GetSize()
        assert np.allclose(sem.GetSpacing(), seg.GetSpacing()) and np.allclose(sem.GetOrigin(), seg.GetOrigin())
        assert np.allclose(sem.GetDirection(), seg.GetDirection())
        bits = sitk.GetArrayFromImage(sem)
        assert bits.max() < 8
        volumes = decode_sem_bits(bits, 3).sum((1, 2, 3)) * np.prod(seg.GetSpacing()) / 1000
        row = table.set_index("case").loc[name]
        assert np.allclose(volumes, row[["sem_volume_ml_whole_tumor", "sem_volume_ml_tumor_core",
                                         "sem_volume_ml_enhancing_tumor"]].to_numpy(float))
    assert (snapshot(cases["images"]), snapshot(cases["segs"])) == before
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_ensemble_is_the_mean_of_folds_and_arrays_match_files(pipeline_env, cases, tmp_path):
    folder = model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres")
    tables = {}
    for folds in ((0,), (1,), (0, 1)):
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(folder, folds)
        tables[folds] = predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / str(folds)),
                                                     save_maps=folds == (0, 1)).set_index("case")
    mean = (tables[(0,)]["predicted_dsc"] + tables[(1,)]["predicted_dsc"]) / 2
    assert np.allclose(tables[(0, 1)]["predicted_dsc"], mean.loc[tables[(0, 1)].index], atol=1e-6)
    sd = (tables[(0,)]["predicted_nsd"] - tables[(1,)]["predicted_nsd"]).abs() / 2
    assert np.allclose(tables[(0, 1)]["predicted_nsd_sd"], sd.loc[tables[(0, 1)].index], atol=1e-6)
    assert not any(f.endswith(".nii.gz") for f in os.listdir(tmp_path / "(0,)"))  # maps off
    # the array API gives the same answer as the file API
    name = cases["names"][1]
    reader = predictor.plans_manager.image_reader_writer_class()
    images, properties = reader.read_images([join(cases["images"], f"{name}_{c:04d}.nii.gz") for c in range(4)])
    seg, _ = reader.read_seg(join(cases["segs"], name + ".nii.gz"))
    result = predictor.predict_from_arrays(images, seg, properties)
    assert result["dsc"] == pytest.approx(tables[(0, 1)].loc[name, "predicted_dsc"], abs=1e-6)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "(0, 1)" / f"{name}.nii.gz")))
    assert np.array_equal(result["sem"], decode_sem_bits(written, 3))


def test_nan_in_an_image_is_refused(pipeline_env, cases):
    # the array API checks what it is given (files are checked with nibabel: see test_bad_input_matrix)
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    name = cases["names"][0]
    reader = predictor.plans_manager.image_reader_writer_class()
    images, properties = reader.read_images([join(cases["images"], f"{name}_{c:04d}.nii.gz") for c in range(4)])
    seg, _ = reader.read_seg(join(cases["segs"], name + ".nii.gz"))
    images[2, 5, 5, 5] = np.nan
    with pytest.raises(CaseError, match="NaN"):
        predictor.predict_from_arrays(images, seg, properties)


def test_parts_and_continue_merge_into_one_summary(pipeline_env, cases, tmp_path):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    out = str(tmp_path / "out")
    first = predictor.predict_from_files(cases["images"], cases["segs"], out, num_parts=2, part_id=0)
    assert len(first) == 2
    full = predictor.predict_from_files(cases["images"], cases["segs"], out, num_parts=2, part_id=1)
    assert sorted(full["case"]) == cases["names"]
    stamp = os.path.getmtime(join(out, "qc_cases", cases["names"][0] + ".json"))
    again = predictor.predict_from_files(cases["images"], cases["segs"], out, continue_prediction=True)
    assert os.path.getmtime(join(out, "qc_cases", cases["names"][0] + ".json")) == stamp
    pd.testing.assert_frame_equal(again, full)


def test_settings_are_a_contract(pipeline_env, cases, tmp_path):
    folder = model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres")
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(folder, (0,))
    out = str(tmp_path / "out")
    predictor.predict_from_files(cases["images"], cases["segs"], out)
    with open(join(out, "qc_evaluation.json"), "w") as f:
        f.write("{}")  # an evaluation of this run's predictions
    for changed in ({"flag_below": 0.5}, {"save_maps": False}):
        with pytest.raises(ValueError, match="--continue_prediction.*" + ("flag_below 0.7 -> 0.5" if "flag_below"
                                                                          in changed else "maps_written")):
            predictor.predict_from_files(cases["images"], cases["segs"], out, continue_prediction=True, **changed)
    other = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    other.initialize_from_trained_model_folder(folder, (1,))
    with pytest.raises(ValueError, match=r"folds \[0\] -> \[1\]"):
        other.predict_from_files(cases["images"], cases["segs"], out, continue_prediction=True)
    assert os.path.isfile(join(out, "qc_evaluation.json"))  # a refused run changes nothing

    # a new run with other inputs replaces the earlier run's cases, maps and evaluation
    one_case = tmp_path / "one_case"
    one_case.mkdir()
    kept = cases["names"][1]
    shutil.copy(join(cases["segs"], kept + ".nii.gz"), one_case)
    table = other.predict_from_files(cases["images"], str(one_case), out).set_index("case")
    assert sorted(table.index) == cases["names"]  # the others have images but no segmentation now
    assert list(table.index[table["status"] == "ok"]) == [kept]
    assert all("no segmentation" in table.loc[c, "status"] for c in cases["names"] if c != kept)
    assert sorted(f for f in os.listdir(out) if f.endswith(".nii.gz")) == [kept + ".nii.gz"]
    assert not os.path.exists(join(out, "qc_evaluation.json"))
    assert load_json(join(out, "predict_settings.json"))["folds"] == [1]
    summary = {c["case"]: c["status"] for c in load_json(join(out, "qc_summary.json"))["cases"]}
    assert summary == table["status"].to_dict()


def test_an_unexpected_failure_is_an_error_of_that_case_only_and_the_summary_is_written(pipeline_env, cases,
                                                                                        tmp_path, monkeypatch):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    first, second, third = cases["names"]
    predict, restore = predictor.predict_preprocessed, predictor.restore_to_input_geometry
    calls = {"predict": 0}

    def failing_predict(data, candidate, window=None):
        calls["predict"] += 1
        if calls["predict"] == 1:  # the first case in order
            raise MemoryError("out of memory on the first case")
        return predict(data, candidate, window)

    def failing_restore(label_map, properties):
        if properties.get("_fail"):
            raise OSError("No space left on device")
        return restore(label_map, properties)

    preprocess = predictor.preprocess_files

    def marking_preprocess(case):
        data, candidate, properties = preprocess(case)
        return data, candidate, {**properties, "_fail": case.case == third}

    monkeypatch.setattr(predictor, "predict_preprocessed", failing_predict)
    monkeypatch.setattr(predictor, "restore_to_input_geometry", failing_restore)
    monkeypatch.setattr(predictor, "preprocess_files", marking_preprocess)
    out = str(tmp_path / "out")
    table = predictor.predict_from_files(cases["images"], cases["segs"], out, num_threads_export=2)
    status = table.set_index("case")["status"]
    assert status[second] == "ok"
    assert re.fullmatch(rf"error: {first} \(.*{first}\.nii\.gz\): prediction failed: MemoryError: out of "
                        r"memory on the first case", status[first]), status[first]
    assert re.fullmatch(rf"error: {third}: writing its results failed: OSError: No space left on device",
                        status[third]), status[third]
    assert sorted(f for f in os.listdir(out) if f.endswith(".nii.gz")) == [second + ".nii.gz"]
    assert sorted(pd.read_csv(join(out, "qc_summary.csv"))["case"]) == cases["names"]
    log = open(join(out, "qc_errors.log")).read()  # where the bugs happened, for a report
    assert f"=== {first}: error:" in log and f"=== {third}: error:" in log and second not in log
    assert 'raise MemoryError("out of memory on the first case")' in log
    assert 'raise OSError("No space left on device")' in log
    # a run without errors leaves no log of an earlier one
    for name, original in (("predict_preprocessed", predict), ("restore_to_input_geometry", restore),
                           ("preprocess_files", preprocess)):
        monkeypatch.setattr(predictor, name, original)
    predictor.predict_from_files(cases["images"], cases["segs"], out)
    assert not os.path.exists(join(out, "qc_errors.log"))


def test_worker_failures_come_back_as_named_case_errors():
    from nnqc.inference.cases import CaseFiles
    from nnqc.inference.preprocessing_workers import preprocess_or_error as _preprocess_or_error

    class Broken(nnQCPredictor):
        def preprocess_files(self, case):
            raise KeyError("spacing")

    error = _preprocess_or_error(Broken(torch.device("cpu")), CaseFiles("c1", ["/in/c1_0000.nii.gz"],
                                                                        "/in/seg/c1.nii.gz"))
    # a bug is not a problem with the case's inputs: an error with its traceback, not a skip
    assert isinstance(error, UnexpectedCaseError) and not isinstance(error, CaseError)
    assert str(error) == "c1 (/in/seg/c1.nii.gz): preprocessing failed: KeyError: 'spacing'"
    assert "raise KeyError" in error.details
    crossed = pickle.loads(pickle.dumps(error))  # as it comes back from a preprocessing worker
    assert (str(crossed), crossed.details) == (str(error), error.details)


def predict_in_process(monkeypatch, capsys, env: dict, *args) -> tuple[int, str]:
    """nnQC_predict's entry point in this process (no interpreter to start): (exit status, stderr)."""
    from nnqc.run.predict import predict_entry

    threads = torch.get_num_threads()  # the entry point sets every core, as nnU-Net's do
    use_nnunet_folders(monkeypatch, **env)
    monkeypatch.setattr(sys, "argv", ["nnQC_predict", "-d", str(QC_ID), "-tr", TRAINER, "-device", "cpu", *args])
    capsys.readouterr()
    try:
        predict_entry()
        status = 0
    except SystemExit as e:
        status = e.code
    finally:
        torch.set_num_threads(threads)
    return status, capsys.readouterr().err


def test_bad_input_matrix(trained_pipeline, cases, tmp_path, monkeypatch, capsys):
    """Every kind of bad case is skipped with a reason naming it (and its file), the others are assessed, and
    input folders stay byte-identical; bad output folders are refused for the whole run."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    shutil.copytree(cases["images"], images)
    shutil.copytree(cases["segs"], segs)
    good = cases["names"][0]
    src_img = sitk.ReadImage(str(images / f"{good}_0000.nii.gz"))
    src_seg = sitk.ReadImage(str(segs / f"{good}.nii.gz"))
    arr, seg_arr = sitk.GetArrayFromImage(src_img), sitk.GetArrayFromImage(src_seg)

    def add_case(name, seg=None, channel_arrays=None, skip_channel=None, **seg_geometry):
        for c in range(4):
            if c != skip_channel:
                a = channel_arrays[c] if channel_arrays is not None else arr
                write_like(a, src_img, str(images / f"{name}_{c:04d}.nii.gz"))
        write_like(seg_arr if seg is None else seg, src_seg, str(segs / f"{name}.nii.gz"), **seg_geometry)

    add_case("missing_channel", skip_channel=2)
    add_case("spacing_mismatch", spacing=(2.0, 1.0, 1.0))
    add_case("origin_mismatch", origin=(5.0, 0.0, 0.0))
    add_case("direction_mismatch", direction=OBLIQUE)
    bad_labels = seg_arr.copy()
    bad_labels[0, 0, 0] = 7
    add_case("foreign_labels", seg=bad_labels)
    float_labels = seg_arr.astype(np.float32)
    float_labels[seg_arr == 1] = 1.5
    add_case("float_labels", seg=float_labels)
    add_case("empty", seg=np.zeros_like(seg_arr))
    nan_image = arr.astype(np.float32)
    nan_image[10:13, 10:13, 10:13] = np.nan
    add_case("nan_image", channel_arrays=[arr, nan_image, arr, arr])
    add_case("truncated")
    with open(segs / "truncated.nii.gz", "rb") as f:
        content = f.read()
    with open(segs / "truncated.nii.gz", "wb") as f:
        f.write(content[:2 * len(content) // 3])  # an interrupted copy
    add_case("four_d")
    four_d = sitk.JoinSeries([src_seg, src_seg])
    sitk.WriteImage(four_d, str(segs / "four_d.nii.gz"), True)
    for c in range(4):  # a 2D image and segmentation
        sitk.WriteImage(sitk.GetImageFromArray(arr[20]), str(images / f"flat_{c:04d}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(seg_arr[20]), str(segs / "flat.nii.gz"))
    shutil.copy(images / f"{good}_0000.nii.gz", images / "no_segmentation_0000.nii.gz")
    shutil.copy(segs / f"{good}.nii.gz", segs / "no_images.nii.gz")
    before = tree_hashes(images, segs)

    out = str(tmp_path / "out")
    result = run_predict(trained_pipeline.env(), "-i", str(images), "-s", str(segs), "-o", out, "-f", "0")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(join(out, "qc_summary.csv")).set_index("case")
    reasons = {
        "missing_channel": r"missing channel file\(s\) missing_channel_0002\.nii\.gz",
        "spacing_mismatch": r"spacing_mismatch\.nii\.gz does not share the image geometry \(spacing",
        "origin_mismatch": r"origin_mismatch\.nii\.gz does not share the image geometry \(origin",
        "direction_mismatch": r"direction_mismatch\.nii\.gz does not share the image geometry \(direction",
        "foreign_labels": r"labels \[7\]", "float_labels": r"not labels",
        "nan_image": r"nan_image_0001\.nii\.gz holds 27 NaN", "truncated": r"truncated\.nii\.gz is (truncated|corrupt)",
        "four_d": r"four_d\.nii\.gz is a 4D image", "flat": r"flat(_0000)?\.nii\.gz is a 2D image",
        "no_segmentation": "no segmentation no_segmentation.nii.gz", "no_images": "no images"}
    for case, reason in reasons.items():
        status = table.loc[case, "status"]
        assert status.startswith("skipped: ") and re.search(reason, status), (case, status)
        assert "\n" not in status and ".cxx" not in status and "Traceback" not in status
        assert f"skipping {case}:" in result.stdout
        assert not os.path.exists(join(out, case + ".nii.gz"))
    assert (table.loc[[*cases["names"], "empty"], "status"] == "ok").all()
    assert os.path.exists(join(out, "empty.nii.gz"))
    assert list(table.index[-len(reasons):]) == sorted(reasons)  # skipped cases listed last
    assert tree_hashes(images, segs) == before

    link = tmp_path / "link_to_images"
    link.symlink_to(images, target_is_directory=True)
    for bad_output in (str(images), str(segs), str(images / "sub"), str(tmp_path), str(link)):
        status, stderr = predict_in_process(monkeypatch, capsys, trained_pipeline.env(), "-i", str(images), "-s",
                                            str(segs), "-o", bad_output)
        assert status != 0 and "must not be" in stderr and "Traceback" not in stderr, bad_output
    assert tree_hashes(images, segs) == before
