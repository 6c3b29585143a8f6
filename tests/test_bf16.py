"""bf16 autocast on CPUs with native bf16: chosen only where detected, outputs close to fp32, --fp32 opts out."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from conftest import QC_ID, TRAINER

from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.inference import model_loading
from nnqc.inference.cases import find_cases
from nnqc.inference.model_loading import forward_precision
from nnqc.inference.predictor import nnQCPredictor
from nnqc.network_architecture import QCResUNet
from nnqc.network_architecture.blocks import ECA
from nnqc.run.predict import model_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AMX or AVX-512 "
                                "BF16): nnQC runs fp32 here, so there is no bf16 path to check")


@pytest.mark.parametrize("device, native, fp32, expected", [
    ("cpu", True, False, "bf16"),
    ("cpu", False, False, "fp32"),  # emulated bf16 would be slower than fp32
    ("cpu", True, True, "fp32"),
    ("cuda", False, False, "cuda autocast"),
    ("cuda", True, True, "fp32"),
])
def test_precision_follows_the_cpu_and_the_fp32_switch(monkeypatch, device, native, fp32, expected):
    monkeypatch.setattr(model_loading, "cpu_has_native_bf16", lambda: native)
    assert forward_precision(torch.device(device), fp32) == expected
    assert nnQCPredictor(torch.device(device), fp32=fp32).precision == expected


def small_network_and_input(shape=(64, 80, 64)):
    torch.manual_seed(0)
    network = QCResUNet(7, 3, features_per_stage=(8, 16, 32, 64), decoder_features=(32, 16, 16, 8),
                        blocks_per_stage=(1, 1, 1, 1)).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.avg_pool3d(torch.randn((1, 4, *shape), generator=generator), 5, 1, 2) * 3
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(a ** 2 for a in axes).sqrt()
    masks = torch.stack([radius < 0.6, radius < 0.4, radius < 0.2]).float()[None]
    return network, torch.cat([images, masks], 1)


@needs_bf16
def test_bf16_forward_is_close_to_fp32_on_a_small_network():
    network, x = small_network_and_input()
    with torch.inference_mode():
        regression32, sem32 = network(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            regression16, sem16 = network(x)
    assert sem16.dtype == torch.bfloat16  # the convolutions did run in bf16
    assert regression16.dtype == torch.float32  # the head stays fp32: no rounding of DSC/NSD to bf16 steps
    assert (regression16 - regression32).abs().max() < 0.01
    assert ((sem16 > 0) == (sem32 > 0)).float().mean() >= 0.99
    assert (sem32 > 0).float().mean() > 0.05 and (sem32 <= 0).float().mean() > 0.05  # both signs occur


def test_attention_weights_stay_fp32_under_autocast():
    eca = ECA(3)
    x = torch.randn(2, 5, 4, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = eca.channel_weights(torch.mean(x, dim=(2, 3, 4), dtype=torch.float32))
        rescaled = eca(x)
    assert weights.dtype == torch.float32
    expected = torch.sigmoid(eca.conv(x.float().mean(dim=(2, 3, 4)).unsqueeze(1))).squeeze(1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert rescaled.dtype == torch.bfloat16


@needs_bf16
def test_trained_model_predicts_the_same_in_bf16(pipeline_env):
    folder = model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres")
    predictors = {}
    for fp32 in (True, False):
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=fp32)
        predictor.initialize_from_trained_model_folder(folder, (0, 1))
        predictors[predictor.precision] = predictor
    assert set(predictors) == {"fp32", "bf16"}
    source = pipeline_env.source_folder
    cases, _ = find_cases(join(source, "imagesTs"), join(source, "labelsTs"), ".nii.gz", 4)
    assert cases
    for case in cases:
        data, candidate, _ = predictors["fp32"].preprocess_files(case)
        a = predictors["fp32"].predict_preprocessed(data, candidate)
        b = predictors["bf16"].predict_preprocessed(data, candidate)
        assert np.abs(a["dsc_per_fold"] - b["dsc_per_fold"]).max() <= 0.01, case.case
        assert np.abs(a["nsd_per_fold"] - b["nsd_per_fold"]).max() <= 0.01, case.case
        assert np.mean(a["sem"] == b["sem"]) >= 0.995, case.case


@needs_bf16
def test_agreement_benchmark_runs_on_a_trained_model(trained_pipeline):
    env = {**os.environ, **trained_pipeline.env(), "PYTHONPATH": ROOT}
    folder = join(trained_pipeline.results, os.listdir(trained_pipeline.results)[0],
                  f"{TRAINER}__nnQCPlans__3d_fullres")
    source = trained_pipeline.source_folder
    result = subprocess.run([sys.executable, join(ROOT, "benchmarks", "benchmark_bf16_agreement.py"), "-m", folder,
                             "-i", join(source, "imagesTs"), "-s", join(source, "labelsTs"), "-f", "0"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "worst of 3 case(s):" in result.stdout, result.stdout  # every held-out case compared, none skipped
    assert "targets met: yes" in result.stdout, result.stdout


def test_fp32_switch_is_recorded_in_the_settings(trained_pipeline, tmp_path):
    source = trained_pipeline.source_folder
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "nnqc.run.predict", "-d", str(QC_ID), "-tr", TRAINER,
                             "-device", "cpu", "-f", "0", "-i", join(source, "imagesTs"), "-s",
                             join(source, "labelsTs"), "-o", str(out), "--no_maps", "--fp32"],
                            capture_output=True, text=True, env={**os.environ, **trained_pipeline.env()})
    assert result.returncode == 0, result.stderr
    assert "network precision fp32" in result.stdout
    with open(out / "predict_settings.json") as f:
        assert json.load(f)["precision"] == "fp32"
    with open(out / "qc_summary.json") as f:
        assert json.load(f)["settings"]["precision"] == "fp32"


def test_gpu_check_says_so_without_cuda_and_runs_dry_on_the_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU message cannot be checked here")
    script = join(ROOT, "benchmarks", "gpu_check.py")
    env = {**os.environ, "PYTHONPATH": ROOT}
    refused = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "no CUDA device" in refused.stderr
    figures = tmp_path / "figures.json"
    dry = subprocess.run([sys.executable, script, "--dry-run", "--json", str(figures)], capture_output=True,
                         text=True, env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    with open(figures) as f:
        results = json.load(f)
    assert results["training_iteration"]["median_s"] > 0
    # nnQCTrainer's own train_step ran (eager: nnU-Net does not compile on the CPU) and trained
    training = results["training_iteration"]
    assert training["compiled"] is False and list(results["training_variants"]) == ["eager"]
    assert math.isfinite(training["first_loss"]) and math.isfinite(training["final_loss"])
    assert training["parameters_changed"] is True
    assert results["could_not"] == []
    assert results["data_loading"][0]["samples_per_s"] > 0
    assert [row["folds"] for row in results["predict"]] == [1, 2]
    assert all(row["test_time_mirroring"] == [] for row in results["predict"])  # the dry run's setting
    assert all(row["pipelined_s_per_case"] > 0 and row["sequential_s_per_case"] > 0 for row in results["predict"])
