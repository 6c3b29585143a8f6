"""nnQC_convert --nnunet_model: a trained nnU-Net model's out-of-fold validation segmentations as candidates."""
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import use_nnunet_folders, write_json, write_like

from dataset_conversion.phantoms import write_phantom_dataset
from nnqc.qc_data.conversion import convert_dataset
from nnqc.qc_data.dataset_io import ConversionError
from nnqc.qc_data.targets_table import TARGETS_CSV

SOURCE_ID = 741
SUBJECTS = [f"case_{i:04d}" for i in range(6)]
SPLITS = [{"train": SUBJECTS[2:], "val": SUBJECTS[:2]}, {"train": SUBJECTS[:2] + SUBJECTS[4:], "val": SUBJECTS[2:4]},
          {"train": SUBJECTS[:4], "val": SUBJECTS[4:]}]
MODEL = "nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("harvest")
    with pytest.MonkeyPatch.context() as patch:
        use_nnunet_folders(patch, nnUNet_raw=root / "raw", nnUNet_preprocessed=root / "preprocessed",
                           nnUNet_results=root / "results")
        source = write_phantom_dataset(SOURCE_ID, "Phantom", len(SUBJECTS), "brats", (24, 28, 24), seed=2)
        name = os.path.basename(source)
        os.makedirs(root / "preprocessed" / name)
        write_json(str(root / "preprocessed" / name / "splits_final.json"), SPLITS)
        # a trained model as nnU-Net leaves it: folds 0 and 1 with their validation segmentations (each a
        # shifted reference, so that the candidates differ from the references), fold 2 not trained
        model = root / "results" / name / MODEL
        for fold in (0, 1):
            validation = model / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            (validation / "summary.json").write_text("{}")
            for case in SPLITS[fold]["val"]:
                reference = sitk.ReadImage(os.path.join(source, "labelsTr", case + ".nii.gz"))
                write_like(np.roll(sitk.GetArrayFromImage(reference), 1 + fold, axis=2), reference,
                           str(validation / (case + ".nii.gz")))
        (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"not read")
        yield {"root": root, "source": source, "model": str(model), "patch": patch}


def _tags_by_subject(folder: str) -> dict[str, str]:
    table = pd.read_csv(os.path.join(folder, TARGETS_CSV))
    external = table[table["generator"] == "external"]
    return dict(zip(external["subject"], external["source"]))


def test_each_case_once_tagged_by_its_fold_and_missing_folds_named(env, capsys):
    result = convert_dataset(SOURCE_ID, 742, num_seggen=0, num_degradations=0, verbose=False,
                             nnunet_models=[env["model"]])
    assert "fold_2 of the split have no validation folder" in capsys.readouterr().out
    tag = "nnUNetTrainer_nnUNetPlans_3d_fullres"
    assert _tags_by_subject(result.folder) == {**{s: f"{tag}_fold0" for s in SPLITS[0]["val"]},
                                               **{s: f"{tag}_fold1" for s in SPLITS[1]["val"]}}
    # the candidates are the validation files as they are
    for subject, source in _tags_by_subject(result.folder).items():
        fold = int(source[-1])
        stored = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(result.folder, "candidatesTr",
                                                                    f"{subject}__{source}__000.nii.gz")))
        given = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(env["model"], f"fold_{fold}", "validation",
                                                                   subject + ".nii.gz")))
        assert np.array_equal(stored, given)


def test_an_exported_zip_gives_the_same_candidates(env, tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for folder, _, files in os.walk(env["model"]):
            for file in files:
                path = os.path.join(folder, file)
                z.write(path, os.path.relpath(path, os.path.dirname(os.path.dirname(env["model"]))))
    from_zip = convert_dataset(SOURCE_ID, 743, num_seggen=0, num_degradations=0, verbose=False,
                               nnunet_models=[str(archive)])
    from_folder = convert_dataset(SOURCE_ID, 746, num_seggen=0, num_degradations=0, verbose=False,
                                  nnunet_models=[env["model"]])
    assert _tags_by_subject(from_zip.folder) == _tags_by_subject(from_folder.folder) != {}
    assert pd.read_csv(os.path.join(from_zip.folder, TARGETS_CSV))["dsc"].tolist() == \
        pd.read_csv(os.path.join(from_folder.folder, TARGETS_CSV))["dsc"].tolist()


def test_a_case_twice_or_from_another_split_is_refused_by_name(env, tmp_path):
    model = tmp_path / MODEL
    shutil.copytree(env["model"], model)
    twice = model / "fold_1" / "validation" / "case_0000.nii.gz"
    shutil.copy(model / "fold_0" / "validation" / "case_0000.nii.gz", twice)
    with pytest.raises(ConversionError, match=r"case_0000 was segmented out of fold twice: .*fold_0.*fold_1"):
        convert_dataset(SOURCE_ID, 744, num_seggen=0, num_degradations=0, verbose=False, nnunet_models=[str(model)])
    os.remove(model / "fold_0" / "validation" / "case_0000.nii.gz")
    with pytest.raises(ConversionError, match=r"case_0000 is not a validation case of fold 1"):
        convert_dataset(SOURCE_ID, 744, num_seggen=0, num_degradations=0, verbose=False, nnunet_models=[str(model)])
    assert not os.path.exists(os.path.join(os.environ["nnUNet_raw"], "Dataset744_PhantomQC"))


def test_a_model_without_validation_folders_or_a_split_is_refused(env, tmp_path):
    empty = tmp_path / "empty_model"
    (empty / "fold_0").mkdir(parents=True)
    with pytest.raises(ConversionError, match="has no fold_N/validation/ folder"):
        convert_dataset(SOURCE_ID, 745, num_seggen=0, num_degradations=0, verbose=False, nnunet_models=[str(empty)])
    splits = os.path.join(os.environ["nnUNet_preprocessed"], os.path.basename(env["source"]), "splits_final.json")
    os.rename(splits, splits + ".away")
    try:
        with pytest.raises(ConversionError, match="no splits_final.json"):
            convert_dataset(SOURCE_ID, 745, num_seggen=0, num_degradations=0, verbose=False,
                            nnunet_models=[env["model"]])
    finally:
        os.rename(splits + ".away", splits)
