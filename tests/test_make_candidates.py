"""nnQC_make_candidates: nnU-Net trained on channel subsets, snapshots out of fold, resumable, into nnQC_convert."""
import hashlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import NNUNET_FOLDERS, use_nnunet_folders, write_json

from nnqc.segmenters.channel_subsets import ALL, derived_dataset_json, parse_subset, parse_subsets
from nnqc.segmenters.snapshot_state import SnapshotState, resolve_snapshot_epochs

SOURCE_ID, QC_ID = 720, 721
TRAINER = "nnUNetTrainer_2epochs_2iterations"
CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
WORKER_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_site")


def test_subsets_by_index_name_and_all():
    assert parse_subset("0", CHANNELS).channels == (0,) and parse_subset("0", CHANNELS).tag == "T1"
    assert parse_subset("flair,t1ce", CHANNELS).channels == (1, 3)
    assert parse_subset("flair,t1ce", CHANNELS).tag == "T1ce+FLAIR"
    assert parse_subset("0,1,2,3", CHANNELS).tag == ALL
    assert [s.tag for s in parse_subsets(None, CHANNELS)] == ["T1", "T1ce", "T2", "FLAIR", ALL]
    assert [s.tag for s in parse_subsets(None, {"0": "cineMRI"})] == [ALL]
    assert [s.tag for s in parse_subsets(["all", "0,1,2,3", "T1"], CHANNELS)] == [ALL, "T1"]
    with pytest.raises(ValueError, match=r"'PD'.*0: T1, 1: T1ce"):
        parse_subset("T1,PD", CHANNELS)
    derived = derived_dataset_json({"channel_names": CHANNELS, "labels": {"background": 0}, "file_ending": ".nii.gz",
                                    "dataset": {}}, parse_subset("1,3", CHANNELS))
    assert derived["channel_names"] == {"0": "T1ce", "1": "FLAIR"} and "dataset" not in derived


def test_snapshot_epochs_absolute_and_percent():
    assert resolve_snapshot_epochs(["5", "20%", "100%", "5"], 1000) == [5, 200, 1000]
    assert resolve_snapshot_epochs(["1%"], 10) == [1]
    for bad in ("0", "11", "0%", "150%", "x"):
        with pytest.raises(ValueError, match="snapshot"):
            resolve_snapshot_epochs([bad], 10)


def test_state_refuses_other_settings(tmp_path):
    state = SnapshotState()
    state.start("nnUNetTrainer", "3d_fullres", 0.01, 1000, [10, 1000])
    state.save(str(tmp_path / "s.json"))
    again = SnapshotState.load(str(tmp_path / "s.json"))
    again.start("nnUNetTrainer", "3d_fullres", 0.01, 1000, [20])
    with pytest.raises(RuntimeError, match="initial_lr 0.01 -> 0.001"):
        again.start("nnUNetTrainer", "3d_fullres", 0.001, 1000, [20])


def _tree_digest(folder: str) -> dict[str, str]:
    digests = {}
    for d, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(d, f), "rb") as handle:
                digests[os.path.relpath(os.path.join(d, f), folder)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.segmenters.make_candidates import make_candidates

    base = tmp_path_factory.mktemp("make_candidates")
    with pytest.MonkeyPatch.context() as environment:
        env = use_nnunet_folders(environment, **{k: base / k for k in NNUNET_FOLDERS})
        # nnU-Net's planning in the worker processes samples a few thousand intensities, not 1e8
        environment.setenv("PYTHONPATH", os.pathsep.join(filter(None, [WORKER_SITE, os.environ.get("PYTHONPATH")])))
        source = write_phantom_dataset(SOURCE_ID, "Phantom", 6, "brats", shape=(32, 40, 32), seed=5, oblique=True,
                                       lesion_size=(0.35, 0.6), num_test=2)
        subjects = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(source, "labelsTr")))
        # a two-fold split in the source's preprocessed folder, as nnU-Net keeps it
        splits = [{"train": subjects[3:], "val": subjects[:3]}, {"train": subjects[:3], "val": subjects[3:]}]
        os.makedirs(os.path.join(env["nnUNet_preprocessed"], os.path.basename(source)))
        write_json(os.path.join(env["nnUNet_preprocessed"], os.path.basename(source), "splits_final.json"), splits)
        before = _tree_digest(source)
        arguments = dict(subsets=["T1", "all"], snapshots=["1", "100%"], trainer=TRAINER, device="cpu",
                         num_processes=1, use_mirroring=False, segment_test_images=True)
        result = make_candidates(SOURCE_ID, **arguments)
        mtimes = {f: os.path.getmtime(f) for folder in result.candidate_folders
                  for f in map(lambda n, d=folder: os.path.join(d, n), os.listdir(folder))}
        rerun = make_candidates(SOURCE_ID, **arguments)
        yield dict(source=source, subjects=subjects, splits=splits, result=result, rerun=rerun, mtimes=mtimes,
                   before=before, env=env)


def test_one_out_of_fold_candidate_per_subject_subset_and_snapshot(made):
    result, subjects, splits = made["result"], made["subjects"], made["splits"]
    assert [os.path.basename(f) for f in result.candidate_folders] == ["T1_ep1", "T1_ep2", "all_ep1", "all_ep2"]
    for folder in result.candidate_folders:
        assert sorted(os.listdir(folder)) == [s + ".nii.gz" for s in subjects]
    for tag in ("T1", "all"):
        derived_splits = os.path.join(result.work_folder, tag, "nnUNet_preprocessed", "Dataset720_Phantom",
                                      "splits_final.json")
        assert json.load(open(derived_splits)) == splits  # nnU-Net trained on the source's folds
        written_by = {}
        for fold in (0, 1):
            state = SnapshotState.load(os.path.join(result.work_folder, tag, f"fold_{fold}_snapshots.json"))
            assert state.training_finished and state.done == [1, 2]
            assert state.training_cases == splits[fold]["train"]
            for epoch, cases in state.written.items():
                assert not set(cases) & set(state.training_cases)      # never a subject the model trained on
                assert not set(cases) & set(splits[fold]["train"])
                for case in cases:
                    assert (epoch, case) not in written_by
                    written_by[(epoch, case)] = fold
        assert sorted(written_by) == sorted((e, s) for e in ("1", "2") for s in subjects)


def test_every_fold_segments_the_test_images_at_every_snapshot(made):
    """The folds of one snapshot are an ensemble over the same unseen test subjects, in their own geometry."""
    source, result = made["source"], made["result"]
    expected = [f"{tag}_ep{e}_fold{f}" for tag in ("T1", "all") for e in (1, 2) for f in (0, 1)]
    assert [os.path.basename(f) for f in result.test_folders] == sorted(expected)
    assert made["rerun"].test_folders == result.test_folders
    test_cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(source, "labelsTs")))
    assert len(test_cases) == 2 and not set(test_cases) & set(made["subjects"])
    for folder in result.test_folders:
        assert sorted(os.listdir(folder)) == [c + ".nii.gz" for c in test_cases]
        for case in test_cases:
            segmentation = sitk.ReadImage(os.path.join(folder, case + ".nii.gz"))
            image = sitk.ReadImage(os.path.join(source, "imagesTs", case + "_0000.nii.gz"))
            assert segmentation.GetSize() == image.GetSize()
            assert np.allclose(segmentation.GetDirection(), image.GetDirection(), atol=1e-5)
            assert set(np.unique(sitk.GetArrayFromImage(segmentation))) <= {0, 1, 2, 3}


def test_test_images_asked_for_without_any_are_refused(made, tmp_path):
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.segmenters.make_candidates import make_candidates

    write_phantom_dataset(SOURCE_ID + 5, "NoTest", 2, "brats", shape=(32, 40, 32), seed=5)
    with pytest.raises(ValueError, match="no imagesTs"):
        make_candidates(SOURCE_ID + 5, subsets=["T1"], trainer=TRAINER, device="cpu", segment_test_images=True)


def test_candidates_have_the_source_geometry_and_labels(made):
    source = made["source"]
    for folder in made["result"].candidate_folders:
        for name in os.listdir(folder):
            candidate = sitk.ReadImage(os.path.join(folder, name))
            reference = sitk.ReadImage(os.path.join(source, "labelsTr", name))
            assert candidate.GetSize() == reference.GetSize()
            for what in ("Spacing", "Origin", "Direction"):
                assert np.allclose(getattr(candidate, f"Get{what}")(), getattr(reference, f"Get{what}")(), atol=1e-5)
            assert set(np.unique(sitk.GetArrayFromImage(candidate))) <= {0, 1, 2, 3}


def test_derived_datasets_link_only_their_channels(made):
    source, work = made["source"], made["result"].work_folder
    images = os.path.join(work, "T1", "nnUNet_raw", "Dataset720_Phantom", "imagesTr")
    assert sorted(os.listdir(images)) == [f"{s}_0000.nii.gz" for s in made["subjects"]]
    for s in made["subjects"]:
        assert os.path.samefile(os.path.join(images, f"{s}_0000.nii.gz"),
                                os.path.join(source, "imagesTr", f"{s}_0000.nii.gz"))
    derived = json.load(open(os.path.join(work, "T1", "nnUNet_raw", "Dataset720_Phantom", "dataset.json")))
    assert derived["channel_names"] == {"0": "T1"}
    assert _tree_digest(source) == made["before"]  # the source is only read


def test_rerun_does_nothing(made):
    assert made["result"].steps_run == 6 and made["rerun"].steps_run == 0
    assert made["rerun"].candidate_folders == made["result"].candidate_folders
    assert all(os.path.getmtime(f) == t for f, t in made["mtimes"].items())


def test_folds_outside_the_split_are_refused(made):
    from nnqc.segmenters.make_candidates import make_candidates

    with pytest.raises(ValueError, match=r"fold\(s\) \[2\] do not exist.*2 folds"):
        make_candidates(SOURCE_ID, subsets=["T1"], folds=[2], trainer=TRAINER, device="cpu")


def test_convert_takes_the_folders_as_they_are(made):
    from nnqc.qc_data.conversion import convert_dataset
    from nnqc.qc_data.targets_table import read_targets

    result = convert_dataset(SOURCE_ID, QC_ID, candidate_folders=made["result"].candidate_folders, num_seggen=0,
                             num_degradations=0, verbose=False)
    targets = read_targets(os.path.join(result.folder, "qc_targets.csv"))
    assert sorted(set(targets["source"])) == ["T1_ep1", "T1_ep2", "all_ep1", "all_ep2"]
    assert len(targets) == 4 * len(made["subjects"])


def test_histogram_counts_each_source_in_the_training_bins():
    from nnqc.qc_data.progress import dsc_counts_by_source
    from nnqc.sampling import dsc_bins

    dscs = [0.0, 0.05, 0.1, 0.55, 0.999, 1.0, 1.0, 0.3]
    sources = ["a", "b", "a", "a", "b", "b", "a", "c"]
    names, counts = dsc_counts_by_source(dscs, sources)
    assert names == ["a", "b", "c"]
    for name, row in zip(names, counts):
        mine = [d for d, s in zip(dscs, sources) if s == name]
        assert row.tolist() == np.bincount(dsc_bins(np.array(mine)), minlength=10).tolist()
