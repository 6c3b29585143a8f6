"""nnQC_convert: QC dataset layout, targets, determinism, sharding, resume after SIGKILL, bad input, verify."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import read_image as _read
from helpers import use_nnunet_folders
from helpers import write_like as _write_like
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances

from dataset_conversion.phantoms import write_phantom_dataset
from nnqc.metrics import allowed_labels, get_regions, quality_targets
from nnqc.qc_data.conversion import convert_dataset
from nnqc.qc_data.dataset_io import ConversionError
from nnqc.qc_data.external import ExternalSource
from nnqc.qc_data.generators import BOUNDARY_FAMILIES, CLASSIC_FAMILIES, DEGRADATION_FAMILIES, generate_candidate
from nnqc.qc_data.layout import CANDIDATES_FOLDER, PROGRESS_FOLDER
from nnqc.qc_data.progress import progress_file
from nnqc.qc_data.sample_plan import derive_seed, plan_samples
from nnqc.qc_data.targets_table import TARGETS_CSV, target_columns, target_rows
from nnqc.qc_data.verification import verify_qc_dataset
from nnqc.qc_data.view import read_subject_view
from nnqc.run.convert import convert_entry

pytestmark = [pytest.mark.filterwarnings("ignore:Candidate folder"),
              pytest.mark.filterwarnings("ignore::nnqc.qc_data.conversion.OutsideViewWarning")]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ID = 90
SHAPE = (32, 40, 32)
SPACING = (2.0, 1.0, 1.5)  # array (z, y, x) order, anisotropic on purpose
SUBJECTS = [f"case_{i:04d}" for i in range(4)]
# the configuration every comparison uses: ~90 samples, a few seconds
OPTIONS = dict(num_seggen=2, num_degradations=22, seed=5, families=("all",))  # two of each family per subject


def _make_external_folder(folder, source, subjects, corrupt):
    """Candidates as another segmenter would write them: the reference with a deterministic change."""
    os.makedirs(folder)
    for i, s in enumerate(subjects):
        reference, image = _read(os.path.join(source, "labelsTr", s + ".nii.gz"))
        _write_like(corrupt(reference, i).astype(np.uint8), image, os.path.join(folder, s + ".nii.gz"))
    # files nnU-Net leaves in a prediction folder besides the segmentations are ignored
    with open(os.path.join(folder, "plans.json"), "w") as f:
        f.write("{}")


def _shift(reference, i):
    return np.roll(reference, 1 + i, axis=2)


def _erase_enhancing(reference, i):
    out = reference.copy()
    out[out == 3] = 1
    return out


def _files(folder):
    """Relative path -> bytes of every file of a QC dataset except the progress records."""
    found = {}
    for root, _, names in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        if rel_root.split(os.sep)[0] == PROGRESS_FOLDER:
            continue
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                found[os.path.normpath(os.path.join(rel_root, n))] = f.read()
    return found


def _assert_same_dataset(a, b):
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    different = [k for k in files_a if files_a[k] != files_b[k] and not k.endswith(".png")]
    assert different == []


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    patch = pytest.MonkeyPatch()
    use_nnunet_folders(patch, nnUNet_raw=root / "raw")
    source = write_phantom_dataset(SOURCE_ID, "Phantom", len(SUBJECTS), "brats", SHAPE, SPACING, seed=3,
                                   oblique=True)
    shifted = str(root / "preds ep10")
    _make_external_folder(shifted, source, SUBJECTS, _shift)
    partial = str(root / "other")
    _make_external_folder(partial, source, SUBJECTS[:3], _erase_enhancing)  # case_0003 has no candidate here
    with open(os.path.join(source, "dataset.json")) as f:
        dataset_json = json.load(f)
    before = _files(source)
    mtimes = {p: os.stat(os.path.join(source, p)).st_mtime_ns for p in before}
    reference = convert_dataset(SOURCE_ID, 101, candidate_folders=[shifted, partial],
                                candidate_tags=None, num_processes=1, verbose=False, **OPTIONS)
    yield SimpleNamespace(root=root, source=source, dataset_json=dataset_json, externals=[shifted, partial],
                          reference=reference, source_files=before, source_mtimes=mtimes)
    patch.undo()


def _run_cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["nnQC_convert", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        convert_entry()
    return exit_info.value.code


def test_layout_csv_and_targets(env):
    folder = env.reference.folder
    assert env.reference.complete and os.path.basename(folder) == "Dataset101_PhantomQC"
    names, regions = get_regions(env.dataset_json)
    assert names == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    columns, rows = target_rows(os.path.join(folder, TARGETS_CSV))
    assert columns == ["sample", "subject", "source", "generator", "seed", "dsc", "nsd",
                       *[f"dsc_{n}" for n in names], *[f"nsd_{n}" for n in names],
                       "candidate_outside_view", "reference_outside_view", "labels"]
    samples = [r["sample"] for r in rows]
    assert samples == sorted(samples) and len(set(samples)) == len(samples)
    per_subject = 1 + 1 + OPTIONS["num_seggen"] + OPTIONS["num_degradations"]
    assert len(rows) == 4 * per_subject - 1  # "other" lacks case_0003

    # layout: images and reference once per subject (hard links of the source), one candidate per sample
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == [s + ".nii.gz" for s in SUBJECTS]
    assert len(os.listdir(os.path.join(folder, "imagesTr"))) == 4 * len(env.dataset_json["channel_names"])
    for s in SUBJECTS:
        src, dst = os.path.join(env.source, "labelsTr", s + ".nii.gz"), os.path.join(folder, "labelsTr", s + ".nii.gz")
        assert os.stat(src).st_ino == os.stat(dst).st_ino
    assert sorted(os.listdir(os.path.join(folder, CANDIDATES_FOLDER))) == sorted(s + ".nii.gz" for s in samples)
    with open(os.path.join(folder, "qc_dsc_histogram.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # dataset.json: the source's nnU-Net fields plus the QC fields
    with open(os.path.join(folder, "dataset.json")) as f:
        qc_json = json.load(f)
    for key in ("channel_names", "labels", "file_ending", "regions_class_order"):
        assert qc_json[key] == env.dataset_json[key]
    assert qc_json["numTraining"] == 4 and qc_json["nsd_tolerance_mm"] == 1.0
    sources = {r["source"] for r in rows}
    assert sources == {"preds-ep10", "other", "seggen", "degrade"}
    assert qc_json["nnqc"] == {
        "source_dataset": f"Dataset{SOURCE_ID:03d}_Phantom", "regions": {n: list(r) for n, r in zip(names, regions)},
        "num_samples": len(rows), "seed": OPTIONS["seed"],
        "samples_per_source": {s: sum(r["source"] == s for r in rows) for s in sorted(sources)}}

    # families cycle through every degradation family, equally often overall
    degradations = [r["generator"] for r in rows if r["source"] == "degrade"]
    counts = {f: degradations.count(f) for f in DEGRADATION_FAMILIES}
    assert set(degradations) == set(DEGRADATION_FAMILIES)
    assert min(counts.values()) >= 1 and max(counts.values()) - min(counts.values()) <= 1

    labels = allowed_labels(env.dataset_json)
    channels = len(env.dataset_json["channel_names"])
    dscs, boxes = [], {}
    for r in rows:
        image_files = [os.path.join(folder, "imagesTr", f"{r['subject']}_{c:04d}.nii.gz") for c in range(channels)]
        if r["subject"] not in boxes:
            # the network's view, independently: nnU-Net's own crop of the stacked channels
            _, _, bbox = crop_to_nonzero(np.stack([_read(f)[0] for f in image_files]).astype(np.float32))
            boxes[r["subject"]] = tuple(slice(lo, hi) for lo, hi in bbox)
        box = boxes[r["subject"]]
        reference, ref_image = _read(os.path.join(folder, "labelsTr", r["subject"] + ".nii.gz"))
        candidate, cand_image = _read(os.path.join(folder, CANDIDATES_FOLDER, r["sample"] + ".nii.gz"))
        assert candidate.dtype == np.uint8 and set(np.unique(candidate)) <= set(labels)
        # the candidate's foreground labels, as training records what a model has seen
        assert r["labels"] == " ".join(str(v) for v in np.unique(candidate) if v != 0)
        for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(cand_image, getter)(), getattr(ref_image, getter)(), atol=1e-6)
        spacing = ref_image.GetSpacing()[::-1]
        assert np.allclose(spacing, SPACING)
        # targets equal a recomputation with nnqc.metrics on the written files
        targets = quality_targets(reference, candidate, regions, spacing, 1.0)
        assert r["dsc"] == targets["dsc"] and r["nsd"] == targets["nsd"]
        assert [r[f"dsc_{n}"] for n in names] == targets["dsc_per_region"].tolist()
        assert [r[f"nsd_{n}"] for n in names] == targets["nsd_per_region"].tolist()
        # and independent references: the multi-class DSC of the spec, DeepMind's surface Dice for WT
        tp = np.sum((candidate == reference) & (reference != 0))
        wrong = candidate != reference
        fp, fn = np.sum(wrong & (candidate != 0)), np.sum(wrong & (reference != 0))
        expected_dsc = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        assert r["dsc"] == pytest.approx(expected_dsc, abs=1e-12)
        wt_ref, wt_cand = np.isin(reference, regions[0]), np.isin(candidate, regions[0])
        if wt_ref.any() and wt_cand.any():
            nsd = compute_surface_dice_at_tolerance(compute_surface_distances(wt_ref, wt_cand, spacing), 1.0)
            assert r[f"nsd_{names[0]}"] == pytest.approx(nsd, abs=1e-6)
        # the share of foreground outside the view, recorded for candidate and reference
        for column, label_map in (("candidate_outside_view", candidate), ("reference_outside_view", reference)):
            total = np.count_nonzero(label_map)
            expected = (total - np.count_nonzero(label_map[box])) / total if total else 0.0
            assert r[column] == pytest.approx(expected, abs=1e-12)
        # each sample regenerates alone from its generator, seed and the subject's images; externals are stored
        # unchanged; generated foreground stays inside the view
        if r["generator"] == "external":
            assert r["seed"] == -1
            k = SUBJECTS.index(r["subject"])
            expected = _shift(reference, k) if r["source"] == "preds-ep10" else _erase_enhancing(reference, k)
            assert np.array_equal(candidate, expected)
        else:
            assert r["seed"] == derive_seed(OPTIONS["seed"], r["sample"])
            again = generate_candidate(r["generator"], reference, r["seed"], spacing, labels, regions,
                                       read_subject_view(image_files))
            assert np.array_equal(again, candidate)
            assert r["candidate_outside_view"] == 0.0
        dscs.append(r["dsc"])
    assert max(dscs) - min(dscs) > 0.5  # a spread of qualities, not one value

    # the source dataset is untouched
    assert _files(env.source) == env.source_files
    assert {p: os.stat(os.path.join(env.source, p)).st_mtime_ns for p in env.source_files} == env.source_mtimes


def test_plan_is_deterministic_and_seeds_do_not_depend_on_the_plan():
    external = ExternalSource("ext", "unused", {"a": "a.nii.gz"})
    plan = plan_samples(["b", "a"], [external], 2, 3, 7)
    assert [s.sample for s in plan] == ["a__ext__000", "a__seggen__000", "a__seggen__001", "a__degrade__000",
                                        "a__degrade__001", "a__degrade__002", "b__seggen__000", "b__seggen__001",
                                        "b__degrade__000", "b__degrade__001", "b__degrade__002"]
    assert plan == plan_samples(["a", "b"], [external], 2, 3, 7)
    alone = {s.sample: s.seed for s in plan_samples(["b"], [], 2, 3, 7)}
    assert all(alone[s.sample] == s.seed for s in plan if s.subject == "b")
    seeds = [s.seed for s in plan if s.generator != "external"]
    assert len(set(seeds)) == len(seeds)
    assert derive_seed(7, "b__seggen__000") != derive_seed(8, "b__seggen__000")
    expected = int(np.random.SeedSequence([7, zlib.crc32(b"b__seggen__000")]).generate_state(1)[0])
    assert derive_seed(7, "b__seggen__000") == expected


def test_family_groups_and_the_classic_default():
    assert {s.generator for s in plan_samples(["a", "b"], [], 0, 12, 7)} == set(CLASSIC_FAMILIES)
    boundary = plan_samples(["a"], [], 0, len(BOUNDARY_FAMILIES), 7, ["boundary"])
    assert [s.generator for s in boundary] == list(BOUNDARY_FAMILIES)
    mixed = plan_samples(["a"], [], 0, 3, 7, ["thin_parts", "boundary", "erode_dilate"])
    assert [s.generator for s in mixed] == ["thin_parts", "boundary_shift", "interface_confusion"]
    with pytest.raises(ConversionError, match="unknown degradation family 'blur'"):
        convert_dataset(SOURCE_ID, 109, num_seggen=0, num_degradations=1, families=["blur"], verbose=False)


def test_two_processes_and_two_parts_equal_one_run(env):
    again = convert_dataset(SOURCE_ID, 102, candidate_folders=env.externals, num_processes=2, verbose=False,
                            **OPTIONS)
    _assert_same_dataset(again.folder, env.reference.folder)

    first = convert_dataset(SOURCE_ID, 103, candidate_folders=env.externals, num_parts=2, part_id=1,
                            num_processes=1, verbose=False, **OPTIONS)
    assert not first.complete and not os.path.exists(os.path.join(first.folder, TARGETS_CSV))
    assert not os.path.exists(os.path.join(first.folder, "dataset.json"))
    written = os.listdir(os.path.join(first.folder, CANDIDATES_FOLDER))
    assert {n.split("__")[0] for n in written} == {"case_0001", "case_0003"}
    second = convert_dataset(SOURCE_ID, 103, candidate_folders=env.externals, num_parts=2, part_id=0,
                             num_processes=1, verbose=False, **OPTIONS)
    assert second.complete and second.num_written < second.num_samples
    _assert_same_dataset(second.folder, env.reference.folder)
    # a finished dataset run again does nothing and stays identical
    rerun = convert_dataset(SOURCE_ID, 103, candidate_folders=env.externals, num_processes=1, verbose=False,
                            **OPTIONS)
    assert rerun.complete and rerun.num_written == 0
    _assert_same_dataset(rerun.folder, env.reference.folder)


# nnQC_convert, made to stop before the sample after the first KILL_AFTER and say so on stdout: the test kills it
# in a known state (KILL_AFTER progress records written and flushed, the conversion unfinished), not after a time
KILL_AFTER = 5
KILL_READY = "test: conversion stopped for the kill"
STOPPING_CONVERT = f"""
import signal, sys
from nnqc.qc_data import conversion
from nnqc.run.convert import convert_entry

made = 0
make_sample = conversion.process_sample


def stop_before_the_next(spec):
    global made
    if made == {KILL_AFTER}:  # -np 1: every earlier sample's record is in the progress file
        print({KILL_READY!r}, flush=True)
        while True:
            signal.pause()
    made += 1
    return make_sample(spec)


conversion.process_sample = stop_before_the_next
sys.argv[0] = "nnQC_convert"
convert_entry()
"""
KILL_READY_WAIT_S = 300  # bounds the wait for the state, on a slow machine; the kill itself waits for no time


def _wait_for_line(process: subprocess.Popen, line: str, timeout_s: float) -> None:
    """Read the process's stdout until `line`; fail clearly when it exits first or nothing comes in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"the conversion did not reach {KILL_AFTER} recorded samples within {timeout_s} s")
        got = process.stdout.readline()
        if not got:
            pytest.fail(f"the conversion exited (code {process.wait()}) before {KILL_AFTER} samples were recorded")
        if got.strip() == line:
            return


def test_resume_after_sigkill_equals_clean_run(env):
    tags = ["preds-ep10", "other"]
    arguments = ["-s", str(SOURCE_ID), "-d", "104", "--candidates", *env.externals, "--candidate_tags", *tags,
                 "--seggen", str(OPTIONS["num_seggen"]), "--degradations", str(OPTIONS["num_degradations"]),
                 "--seed", str(OPTIONS["seed"]), "--families", *OPTIONS["families"], "-np", "1"]
    command = [sys.executable, "-m", "nnqc.run.convert", *arguments]
    environment = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    folder = os.path.join(os.environ["nnUNet_raw"], "Dataset104_PhantomQC")
    records = progress_file(folder, 1, 0)
    process = subprocess.Popen([sys.executable, "-c", STOPPING_CONVERT, *arguments], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT,
                               start_new_session=True)
    try:
        _wait_for_line(process, KILL_READY, KILL_READY_WAIT_S)
        assert process.poll() is None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it exited on its own: _wait_for_line has failed the test
            pass
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(folder, TARGETS_CSV))
    assert len(open(records).read().splitlines()) == KILL_AFTER < env.reference.num_samples
    # a record as an nnQC before the labels column wrote it: its sample is made again
    lines = open(records).read().splitlines()
    older = json.loads(lines[0])
    del older["labels"]
    with open(records, "w") as f:
        f.write("\n".join([json.dumps(older), *lines[1:]]) + "\n")
    # what a kill during a write leaves: a truncated record and a temporary file
    with open(records, "a") as f:
        f.write('{"sample": "case_0003__degr')
    with open(os.path.join(folder, CANDIDATES_FOLDER, ".tmp999_case_0003__seggen__000.nii.gz"), "wb") as f:
        f.write(b"partial")

    result = subprocess.run(command, env=environment, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_same_dataset(folder, env.reference.folder)
    with open(records) as f:
        lines = f.read().splitlines()
    assert all(json.loads(line)["sample"] for line in lines)  # the truncated line was cut, not continued
    assert len({json.loads(line)["sample"] for line in lines}) == env.reference.num_samples
    assert "labels" in [json.loads(line) for line in lines if older["sample"] in line][-1]


def test_external_tags_and_missing_subject_warning(env):
    with pytest.warns(UserWarning, match="no segmentation for 1 subject"):
        result = convert_dataset(env.source, 105, "Tagged", candidate_folders=env.externals,
                                 candidate_tags=["ep 10", "nnformer"], num_seggen=0, num_degradations=0,
                                 num_processes=1, verbose=False)
    columns, rows = target_rows(os.path.join(result.folder, TARGETS_CSV))
    assert os.path.basename(result.folder) == "Dataset105_Tagged"
    assert [r["sample"] for r in rows] == ["case_0000__ep-10__000", "case_0000__nnformer__000",
                                           "case_0001__ep-10__000", "case_0001__nnformer__000",
                                           "case_0002__ep-10__000", "case_0002__nnformer__000",
                                           "case_0003__ep-10__000"]
    assert {r["generator"] for r in rows} == {"external"} and {r["seed"] for r in rows} == {-1}
    assert columns == target_columns(get_regions(env.dataset_json)[0])


def _bad_case(env, name, tmp_path, fix):
    """An external folder (or source copy) with one problem; returns the CLI arguments."""
    folder = str(tmp_path / name)
    shutil.copytree(env.externals[0], folder)
    path = fix(folder)
    return ["-s", SOURCE_ID, "-d", 110, "--candidates", folder, "--seggen", 1, "--degradations", 1, "-np", 1], path


def _geometry_mismatch(folder):
    path = os.path.join(folder, "case_0002.nii.gz")
    array, image = _read(path)
    _write_like(array, image, path, origin=tuple(o + 0.5 for o in image.GetOrigin()))
    return path


def _foreign_labels(folder):
    path = os.path.join(folder, "case_0001.nii.gz")
    array, image = _read(path)
    array[0, 0, :3] = 7
    _write_like(array, image, path)
    return path


def _orphan_file(folder):
    path = os.path.join(folder, "case_0042.nii.gz")
    shutil.copyfile(os.path.join(folder, "case_0000.nii.gz"), path)
    return path


def _unreadable_file(folder):
    path = os.path.join(folder, "case_0003.nii.gz")
    with open(path, "wb") as f:
        f.write(b"not an image at all")
    return path


@pytest.mark.parametrize("fix", [_geometry_mismatch, _foreign_labels, _orphan_file, _unreadable_file])
def test_bad_candidates_fail_naming_the_file_and_write_nothing(env, tmp_path, monkeypatch, capsys, fix):
    args, bad_file = _bad_case(env, fix.__name__, tmp_path, fix)
    assert _run_cli(monkeypatch, *args) == 1
    assert bad_file in capsys.readouterr().err
    assert not os.path.exists(os.path.join(os.environ["nnUNet_raw"], "Dataset110_PhantomQC"))


def test_bad_source_fails_naming_the_file(env, tmp_path, monkeypatch, capsys):
    source = str(tmp_path / "Dataset091_Broken")
    shutil.copytree(env.source, source)
    missing = os.path.join(source, "imagesTr", "case_0002_0001.nii.gz")
    os.remove(missing)
    assert _run_cli(monkeypatch, "-s", source, "-d", 111, "--seggen", 1, "--no_degradations", "-np", 1) == 1
    assert missing in capsys.readouterr().err

    shutil.copyfile(os.path.join(source, "imagesTr", "case_0002_0000.nii.gz"), missing)
    channel = os.path.join(source, "imagesTr", "case_0001_0002.nii.gz")
    array, image = _read(channel)
    _write_like(array, image, channel, spacing=(1.0, 1.0, 1.0))
    assert _run_cli(monkeypatch, "-s", source, "-d", 111, "--seggen", 1, "--no_degradations", "-np", 1) == 1
    assert channel in capsys.readouterr().err
    assert not os.path.exists(os.path.join(os.environ["nnUNet_raw"], "Dataset111_BrokenQC"))


def test_resume_with_other_settings_is_refused(env):
    with pytest.raises(ConversionError, match="other settings"):
        convert_dataset(SOURCE_ID, 101, candidate_folders=env.externals, num_processes=1, verbose=False,
                        num_seggen=OPTIONS["num_seggen"], num_degradations=OPTIONS["num_degradations"], seed=6,
                        families=OPTIONS["families"])
    with pytest.raises(ConversionError, match="other settings"):  # the same, but other families
        convert_dataset(SOURCE_ID, 101, candidate_folders=env.externals, num_processes=1, verbose=False,
                        **{**OPTIONS, "families": ("classic",)})


def test_verify_passes_on_good_data_and_fails_on_corrupted(env, tmp_path, monkeypatch, capsys):
    assert _run_cli(monkeypatch, "--verify", "-d", 101, "-np", 1) == 0
    assert "OK" in capsys.readouterr().out
    assert verify_qc_dataset(env.reference.folder, 2, None, verbose=False).ok

    def corrupted(name, damage):
        folder = str(tmp_path / name)
        shutil.copytree(env.reference.folder, folder)
        damage(folder)
        return verify_qc_dataset(folder, 1, None, verbose=False)

    def edit_csv(folder):
        path = os.path.join(folder, TARGETS_CSV)
        lines = open(path).read().splitlines()
        cells = lines[5].split(",")
        cells[5] = repr(float(cells[5]) + 1e-4 if float(cells[5]) < 0.5 else float(cells[5]) - 1e-4)
        lines[5] = ",".join(cells)
        open(path, "w").write("\n".join(lines) + "\n")

    def edit_labels(folder):
        path = os.path.join(folder, TARGETS_CSV)
        lines = open(path).read().splitlines()
        k = next(i for i, line in enumerate(lines) if line.endswith(",1 2 3"))
        lines[k] = lines[k][:-len("1 2 3")] + "1 2"
        open(path, "w").write("\n".join(lines) + "\n")

    def swap_candidates(folder):
        a, b = (os.path.join(folder, CANDIDATES_FOLDER, f"case_0000__degrade__00{k}.nii.gz") for k in (0, 3))
        shutil.copyfile(a, b)

    def remove_candidate(folder):
        os.remove(os.path.join(folder, CANDIDATES_FOLDER, "case_0001__seggen__001.nii.gz"))

    def orphan(folder):
        shutil.copyfile(os.path.join(folder, CANDIDATES_FOLDER, "case_0001__seggen__001.nii.gz"),
                        os.path.join(folder, CANDIDATES_FOLDER, "case_0001__seggen__002.nii.gz"))

    assert "qc_targets.csv differs" in "\n".join(corrupted("csv", edit_csv).problems)
    assert "lists labels '1 2', the candidate holds '1 2 3'" in "\n".join(corrupted("labels", edit_labels).problems)
    problems = "\n".join(corrupted("swap", swap_candidates).problems)
    assert "case_0000__degrade__003" in problems and "regenerated" in problems
    assert "missing file" in "\n".join(corrupted("removed", remove_candidate).problems)
    assert "orphan file" in "\n".join(corrupted("orphan", orphan).problems)
    assert _run_cli(monkeypatch, "--verify", "-d", str(tmp_path / "orphan"), "-np", 1) == 1
