"""A shared model runs no code: crafted checkpoints and plans are refused, named, and leave no trace of running.

The archives here pass every layout and checksum check of the installer (an attacker writes the checksums too);
what stops them is how nnQC reads the model: checkpoints as data only, classes only from an allow-list.
"""
import hashlib
import json
import os
import zipfile

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from conftest import TRAINER
from test_model_sharing import rewrite, run_module

from nnqc.checkpoint_files import UnsafeCheckpointError, load_checkpoint
from nnqc.inference.predictor import nnQCPredictor
from nnqc.model_sharing.export import export_model_folder_to_zip
from nnqc.model_sharing.install import install_model_from_zip
from nnqc.model_sharing.model_metadata import METADATA_FILE
from nnqc.trainer_lookup import get_trainer_class
from nnqc.trusted_classes import TRUSTED_CLASSES_ENV, UntrustedClassError, trust_classes, trusted_class

MODEL = f"{TRAINER}__nnQCPlans__3d_fullres"
PREFIX = f"Dataset701_PhantomQC/{MODEL}/"


class _Payload:
    """Unpickling this runs `touch marker`: what a crafted checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def shared_zip(trained_pipeline, tmp_path_factory) -> str:
    archive = str(tmp_path_factory.mktemp("safety") / "model.zip")
    export_model_folder_to_zip(join(trained_pipeline.results, "Dataset701_PhantomQC", MODEL), archive, folds=[0])
    return archive


def tampered(source: str, destination: str, replace: dict[str, bytes]) -> str:
    """The archive with members replaced and its metadata's checksums rewritten to match them."""
    with zipfile.ZipFile(source) as archive:
        metadata = json.loads(archive.read(PREFIX + METADATA_FILE))
    for name, data in replace.items():
        metadata["files"][name[len(PREFIX):]] = hashlib.sha256(data).hexdigest()
    rewrite(source, destination, replace={**replace, PREFIX + METADATA_FILE: json.dumps(metadata).encode()})
    return destination


def read_member(archive: str, name: str) -> bytes:
    with zipfile.ZipFile(archive) as zipped:
        return zipped.read(PREFIX + name)


def install(archive: str, tmp_path) -> str:
    return install_model_from_zip(archive, str(tmp_path / "results"))


def load(model_folder: str) -> nnQCPredictor:
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (0,))
    return predictor


def test_a_checkpoint_with_a_pickle_payload_is_refused_and_runs_nothing(shared_zip, tmp_path):
    marker = tmp_path / "payload_ran"
    checkpoint = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "trainer_name": TRAINER, "init_args": {"configuration": "3d_fullres"},
                "logging": _Payload(str(marker))}, checkpoint)
    evil = tampered(shared_zip, str(tmp_path / "evil.zip"),
                    {PREFIX + "fold_0/checkpoint_final.pth": checkpoint.read_bytes()})
    model = install(evil, tmp_path)  # the layout and the (rewritten) checksums are fine
    with pytest.raises(UnsafeCheckpointError, match="fold_0/checkpoint_final.pth was refused.*system"):
        load(model)
    assert not marker.exists()
    # what the payload would have done had it been loaded as nnU-Net loads checkpoints
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def _member_file(archive: str, tmp_path) -> str:
    path = tmp_path / "member.pth"
    path.write_bytes(read_member(archive, "fold_0/checkpoint_final.pth"))
    return str(path)


@pytest.mark.parametrize("where", ["network_class", "norm_op"])
def test_plans_naming_os_system_are_refused_and_run_nothing(shared_zip, tmp_path, where):
    marker = tmp_path / "command_ran"
    plans = json.loads(read_member(shared_zip, "plans.json"))
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    if where == "network_class":
        architecture.update(network_class_name="os.system", arch_kwargs={"command": f"touch {marker}"},
                            _kw_requires_import=[])
    else:
        architecture["arch_kwargs"]["norm_op"] = "os.system"
    evil = tampered(shared_zip, str(tmp_path / "evil.zip"), {PREFIX + "plans.json": json.dumps(plans).encode()})
    model = install(evil, tmp_path)
    with pytest.raises(UntrustedClassError, match=r"plans\.json: .*'os\.system' is not one nnQC trusts") as error:
        load(model)
    assert model in str(error.value) and "--trust_class" in str(error.value)
    assert not marker.exists()


def test_a_checkpoint_naming_a_foreign_trainer_is_refused(shared_zip, tmp_path):
    checkpoint = load_checkpoint(_member_file(shared_zip, tmp_path))
    checkpoint["trainer_name"] = "subprocess.Popen"
    path = tmp_path / "renamed.pth"
    torch.save(checkpoint, path)
    model = install(tampered(shared_zip, str(tmp_path / "renamed.zip"),
                             {PREFIX + "fold_0/checkpoint_final.pth": path.read_bytes()}), tmp_path)
    with pytest.raises(UntrustedClassError, match=r"checkpoint_final\.pth: trainer 'subprocess\.Popen'"):
        load(model)


def test_the_command_line_refuses_a_crafted_model_with_its_reason(shared_zip, tmp_path, trained_pipeline):
    plans = json.loads(read_member(shared_zip, "plans.json"))
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "builtins.eval"
    model = install(tampered(shared_zip, str(tmp_path / "evil.zip"),
                             {PREFIX + "plans.json": json.dumps(plans).encode()}), tmp_path)
    images = join(trained_pipeline.source_folder, "imagesTs")
    segmentations = join(trained_pipeline.source_folder, "labelsTs")
    out = str(tmp_path / "out")
    result = run_module("nnqc.run.predict", {}, "-i", images, "-s", segmentations, "-o", out, "-m", model,
                        "-device", "cpu")
    assert result.returncode == 1
    assert "'builtins.eval' is not one nnQC trusts" in result.stderr and not os.path.exists(out)


def test_checkpoints_of_training_hold_plain_data_only(trained_pipeline):
    """What training writes loads without any allowance beyond torch's weights-only defaults."""
    path = join(trained_pipeline.results, "Dataset701_PhantomQC", MODEL, "fold_0", "checkpoint_final.pth")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["trainer_name"] == TRAINER
    assert all(isinstance(v, float) for v in checkpoint["logging"]["train_losses"])


def test_a_truncated_checkpoint_is_named(shared_zip, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(read_member(shared_zip, "fold_0/checkpoint_final.pth")[:4096])
    with pytest.raises(UnsafeCheckpointError, match=f"{path} is not a readable checkpoint"):
        load_checkpoint(str(path))


def test_classes_the_user_names_are_trusted_and_only_those(monkeypatch):
    monkeypatch.delenv(TRUSTED_CLASSES_ENV, raising=False)
    assert trusted_class("torch.nn.InstanceNorm3d", "norm_op", "plans.json") is torch.nn.InstanceNorm3d
    assert trusted_class("torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op", "plans.json") \
        is torch.nn.InstanceNorm3d
    with pytest.raises(UntrustedClassError, match="plans.json: network class 'collections.OrderedDict'"):
        trusted_class("collections.OrderedDict", "network class", "plans.json")
    trust_classes(["collections.OrderedDict"])
    import collections

    assert trusted_class("collections.OrderedDict", "network class", "plans.json") is collections.OrderedDict
    with pytest.raises(UntrustedClassError):
        trusted_class("collections.Counter", "network class", "plans.json")
    with pytest.raises(ValueError, match="not a dotted path"):
        trust_classes(["Counter"])


def test_trainer_names_from_files_resolve_only_to_trusted_classes(monkeypatch):
    monkeypatch.delenv(TRUSTED_CLASSES_ENV, raising=False)
    assert get_trainer_class("nnQCTrainer_ResNet34", source="ck.pth").__name__ == "nnQCTrainer_ResNet34"
    with pytest.raises(UntrustedClassError, match="ck.pth: trainer 'nnqc_trainers.nnQCTrainer.os'"):
        get_trainer_class("nnqc_trainers.nnQCTrainer.os", source="ck.pth")
    with pytest.raises(ValueError, match="ck.pth: unknown trainer 'MyTrainer'"):
        get_trainer_class("MyTrainer", source="ck.pth")
    # a user's own trainer: its checkpoint stores the bare class name, which the trusted dotted path resolves
    monkeypatch.setenv(TRUSTED_CLASSES_ENV, "nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer")
    assert get_trainer_class("nnUNetTrainer", source="ck.pth").__name__ == "nnUNetTrainer"
    # the command line may name any trainer by dotted path: the user typed it
    assert get_trainer_class("nnqc_trainers.nnQCTrainer.nnQCTrainer").__name__ == "nnQCTrainer"


def test_a_corrupt_shipped_calibration_stops_loading_naming_the_file(shared_zip, tmp_path):
    model = install(shared_zip, tmp_path)
    calibration = join(model, "calibration.json")
    assert load(model).calibration is not None  # the shipped calibration is used as it is
    with open(calibration, "w") as f:
        f.write('{"built_from": ')  # cut off
    with pytest.raises(ValueError, match=f"{calibration}: cannot read it as JSON"):
        load(model)
