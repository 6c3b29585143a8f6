"""nnQC_predict per region with the tests' tiny trained model: models with two outputs (trained before per-region
outputs) still load and predict and say so; a segmentation whose only error lies in one region gets that region's
decision, and its worst slices where the error is; nnQC_evaluate reports every region."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import TRAINER
from helpers import write_like
from test_predict import cases  # noqa: F401  (the fixture: good, shifted and anisotropic-oblique phantom cases)

from nnqc.calibration.calibration_file import OUT_OF_FOLD_PREDICTIONS
from nnqc.calibration.decision import FAIL, PASS
from nnqc.calibration.region_quality import region_columns
from nnqc.checkpoint_files import load_checkpoint
from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.evaluation.report import write_report
from nnqc.inference.cases import CaseFiles
from nnqc.inference.predictor import nnQCPredictor
from nnqc.inference.worst_slices import slice_axis
from nnqc.metrics.regions import get_regions
from nnqc.network_architecture.inputs import region_masks_torch
from nnqc.preprocessing.cropping import crop_or_pad_to_window


def model_source(trained_pipeline) -> str:
    return join(trained_pipeline.results, "Dataset701_PhantomQC", f"{TRAINER}__nnQCPlans__3d_fullres")


def write_region_out_of_fold(model: str, fold: int, region_names, rng: np.random.Generator, n: int = 200) -> None:
    """Out-of-fold predictions of an accurate model (residuals of 0.005), per region too: narrow intervals."""
    columns = {"sample": [f"f{fold}_{i}" for i in range(n)], "subject": [f"f{fold}_subject{i // 5}" for i in range(n)],
               "source": "seggen", "generator": "seggen"}
    for suffix in ("", *(f"_{r}" for r in region_names)):
        for metric in ("dsc", "nsd"):
            true = rng.uniform(0, 1, n)
            columns[f"{metric}{suffix}"] = true
            columns[f"predicted_{metric}{suffix}"] = np.clip(true + rng.normal(0, 0.005, n), 0, 1)
    path = join(model, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(columns).to_csv(path, index=False)


@pytest.fixture(scope="module")
def region_model(trained_pipeline, tmp_path_factory) -> str:
    source = model_source(trained_pipeline)
    model = str(tmp_path_factory.mktemp("region_model") / os.path.basename(source))
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("validation"))
    names, _ = get_regions(load_json(join(model, "dataset.json")))
    rng = np.random.default_rng(11)
    for fold in (0, 1):
        write_region_out_of_fold(model, fold, names, rng)
    return model


def test_validation_tables_of_a_new_model_carry_per_region_predictions(trained_pipeline):
    names, _ = get_regions(load_json(join(model_source(trained_pipeline), "dataset.json")))
    table = pd.read_csv(join(model_source(trained_pipeline), "fold_0", OUT_OF_FOLD_PREDICTIONS))
    for name in names:
        for column in (f"dsc_{name}", f"nsd_{name}", f"predicted_dsc_{name}", f"predicted_nsd_{name}"):
            values = table[column].to_numpy(dtype=float)
            assert np.all((values >= 0) & (values <= 1)), column


def test_two_output_checkpoints_load_predict_and_say_they_have_no_region_outputs(  # noqa: F811
        trained_pipeline, cases, tmp_path, capsys):  # noqa: F811
    source = model_source(trained_pipeline)
    old = str(tmp_path / os.path.basename(source))
    shutil.copytree(source, old, ignore=shutil.ignore_patterns("validation"))
    for fold in (0, 1):  # the head of a model trained before: the subject-level rows of the same weights
        path = join(old, f"fold_{fold}", "checkpoint_final.pth")
        checkpoint = load_checkpoint(path)
        weights = checkpoint["network_weights"]
        weights["regression.fc.weight"] = weights["regression.fc.weight"][:2].clone()
        weights["regression.fc.bias"] = weights["regression.fc.bias"][:2].clone()
        torch.save(checkpoint, path)
    results = {}
    for name, folder in (("new", source), ("old", old)):
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=True)
        predictor.initialize_from_trained_model_folder(folder, (0, 1))
        assert predictor.per_region_outputs is (name == "new")
        capsys.readouterr()
        results[name] = predictor.predict_from_files(cases["images"], cases["segs"], str(tmp_path / name),
                                                     save_maps=True).set_index("case")
        results[name + "_out"] = capsys.readouterr().out
    new, old_table = results["new"], results["old"]
    assert "no per-region DSC/NSD" in results["old_out"] and "no per-region DSC/NSD" not in results["new_out"]
    # the subject-level predictions and the error maps are those of the same weights
    np.testing.assert_allclose(old_table["predicted_dsc"], new.loc[old_table.index, "predicted_dsc"], atol=1e-6)
    np.testing.assert_allclose(old_table["predicted_nsd"], new.loc[old_table.index, "predicted_nsd"], atol=1e-6)
    names = load_json(join(str(tmp_path / "old"), "predict_settings.json"))["region_names"]
    assert not old_table["per_region_outputs"].astype(bool).any() and new["per_region_outputs"].astype(bool).all()
    assert old_table[[f"predicted_dsc_{n}" for n in names]].isna().all().all()
    assert np.isfinite(new[[f"predicted_dsc_{n}" for n in names]].to_numpy(float)).all()
    assert load_json(join(str(tmp_path / "old"), "predict_settings.json"))["per_region_outputs"] is False
    summary = load_json(join(str(tmp_path / "old"), "qc_summary.json"))
    assert all(c["worst_slices"] is not None for c in summary["cases"])  # the SEMs still say where to look


class OracleNetwork(torch.nn.Module):
    """Stands in for a perfectly trained QCResUNet on one case: the true SEMs and per-region DSCs of the candidate
    masks it is given, against the reference masks of that case's network window. The learning is not under test
    here, everything after the network is."""

    def __init__(self, reference_masks: torch.Tensor):
        super().__init__()
        self.reference = reference_masks.bool()

    def forward(self, x: torch.Tensor):
        c = self.reference.shape[1]
        candidate = x[:, -c:] > 0.5
        wrong = candidate ^ self.reference
        overlap = (candidate & self.reference).sum((2, 3, 4)).double()
        total = candidate.sum((2, 3, 4)).double() + self.reference.sum((2, 3, 4)).double()
        dsc = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total)).float()
        mean = dsc.mean(1, keepdim=True)
        return torch.cat((mean, mean, dsc, dsc), 1), torch.where(wrong, 10.0, -10.0)


def test_an_error_in_one_region_gets_that_regions_decision_and_its_worst_slices(region_model, trained_pipeline,
                                                                                 cases, tmp_path):  # noqa: F811
    case = cases["names"][1]  # in the training range and seen whole (see test_predict_calibration)
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    segs.mkdir()
    for c in range(4):
        shutil.copy(join(cases["images"], f"{case}_{c:04d}.nii.gz"), images)
    reference_file = join(trained_pipeline.source_folder, "labelsTs", case + ".nii.gz")
    reference_image = sitk.ReadImage(reference_file)
    reference = sitk.GetArrayFromImage(reference_image)
    names, regions = get_regions(load_json(join(region_model, "dataset.json")))
    # the region with the fewest voxels (BraTS-like: the enhancing tumour), and a label of it that can be replaced
    # by another that keeps every other region as it is (nested regions: ET's 3 -> 2 leaves WT and TC unchanged)
    smallest = min((i for i in range(len(regions)) if np.isin(reference, regions[i]).any()),
                   key=lambda i: np.isin(reference, regions[i]).sum())
    target = names[smallest]
    present = sorted({int(v) for v in np.unique(reference)} | {0})
    original, replacement = next((orig, lab) for orig in regions[smallest] if orig in present for lab in present
                                 if lab not in regions[smallest]
                                 and all((lab in r) == (orig in r) for i, r in enumerate(regions) if i != smallest))
    inside = reference == original
    axis = slice_axis(tuple(reversed(reference_image.GetSpacing())))
    slices = np.flatnonzero(inside.sum(axis=tuple(a for a in range(3) if a != axis)))
    wrong_slices = slices[: int(0.7 * len(slices)) + 1]
    segmentation = reference.copy()
    region_here = np.zeros_like(inside)
    index = [slice(None)] * 3
    index[axis] = wrong_slices
    region_here[tuple(index)] = True
    segmentation[inside & region_here] = replacement
    write_like(segmentation, reference_image, str(segs / f"{case}.nii.gz"))
    changed = segmentation != reference
    counts = changed.sum(axis=tuple(a for a in range(3) if a != axis))
    assert counts.sum() > 0 and set(np.flatnonzero(counts)) <= set(wrong_slices.tolist())

    # the oracle compares its input with the reference where they lie: it sees mirrored inputs wrongly
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=True, num_worst_slices=3,
                              use_mirroring=False)
    predictor.initialize_from_trained_model_folder(region_model, (0, 1))
    files = CaseFiles(case, [str(images / f"{case}_{c:04d}.nii.gz") for c in range(4)], str(segs / f"{case}.nii.gz"))
    _, _, properties = predictor.preprocess_files(files)
    _, reference_pre, _ = predictor.preprocess_files(CaseFiles(case, files.images, reference_file))
    window = properties["nnqc_window"]
    masks = region_masks_torch(torch.from_numpy(crop_or_pad_to_window(reference_pre.astype(np.int16), window))[None],
                               regions)
    predictor.network, predictor.fold_weights = OracleNetwork(masks), [{}]
    out = str(tmp_path / "out")
    table = predictor.predict_from_files(str(images), str(segs), out, flag_below=0.7).set_index("case")
    row = table.loc[case]
    assert set(region_columns(names)) <= set(table.columns)
    assert row[f"decision_{target}"] == FAIL, row[[f"decision_{n}" for n in names]]
    assert all(row[f"decision_{n}"] == PASS for n in names if n != target)
    assert (row["worst_region"], row["worst_region_decision"]) == (target, FAIL)
    assert row[f"dsc_upper_{target}"] < 0.7
    worst = {c["case"]: c["worst_slices"] for c in load_json(join(out, "qc_summary.json"))["cases"]}[case]
    assert worst["axis"] == axis
    expected = sorted(np.flatnonzero(counts), key=lambda s: (-counts[s], s))[:3]
    assert [s["slice"] for s in worst["regions"][target]] == expected
    assert [s["error_voxels"] for s in worst["regions"][target]] == [int(counts[s]) for s in expected]
    assert all(worst["regions"][n] == [] for n in names if n != target)

    # nnQC_evaluate reports the region's figures beside the subject level; the report shows the strip
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(reference_file, labels)
    figures = evaluate_predictions(out, str(labels), verbose=False)
    assert set(figures["regions"]) == set(names)
    assert figures["regions"][target]["dsc"]["mae"] < 0.02 and figures["regions"][target]["dsc"]["n"] == 1
    evaluation = pd.read_csv(join(out, "qc_evaluation.csv"), dtype={"case": str}).set_index("case")
    assert evaluation.loc[case, f"true_dsc_{target}"] < 0.7 <= evaluation.loc[case, f"true_dsc_{names[0]}"]
    with open(write_report(out)) as f:
        html = f.read()
    assert f"Worst region: <b>{target}</b>" in html and "slices of" in html
