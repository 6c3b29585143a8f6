"""Wall time per case of nnQC prediction at BraTS size on the CPU, fp32 and bf16 side by side, for one fold and for
a fold ensemble, with the peak memory of each and the cost of each stage of a case.

    python benchmarks/benchmark_predict.py [--cases 3] [--folds 5] [--threads 2] [--subjects 3] [--disable_tta]

Everything lives in a temporary folder with nnUNet_raw/preprocessed/results pointing there: a phantom source
dataset (240 x 240 x 155 at 1 mm) with --subjects training subjects and --cases cases to assess, converted to
a QC dataset, fingerprinted and planned (no preprocessing); the model folder is written without training,
with randomly initialised QCResUNet weights (a different seed per fold), which cost as much to run as trained
ones. Times exclude loading the model and include, per case, reading the images and the segmentation,
preprocessing, the forward passes, the SEM restoration to the input geometry and writing every output.
bf16 is nnQC_predict's default on CPUs with native bf16 (AMX, AVX-512 BF16) and is skipped, saying so, elsewhere.
The folds may mirror all three axes, as trained ones do, so the cases are predicted with nnQC_predict's default
test-time mirroring (8 forward passes per fold) unless --disable_tta.

Two ways to run the cases:
- sequential: each case alone through nnQCPredictor.predict_from_files, no helper processes or threads:
  the latency of one case (mean and median over the cases);
- pipelined: all cases in one predict_from_files call with nnQC_predict's GPU defaults (one process
  preprocessing ahead, two threads writing maps; on the CPU nnQC_predict defaults to the sequential way):
  the throughput of a folder of cases (its helper process starts within the timed call, which weighs on a
  handful of cases).
Peak memory: the largest resident set of this process during the sequential runs of one precision and fold count
(VmHWM, reset before each; it includes Python, torch and every predictor's loaded folds), and its growth over the
resident set before those runs (what predicting costs on top of the loaded model).
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch

SOURCE_ID, QC_ID = 980, 981
TRAINER, PLANS, CONFIGURATION = "nnQCTrainer", "nnQCPlans", "3d_fullres"
EXPECTED_INPUT_SHAPE = [160, 192, 160]
TARGET_SECONDS_PER_CASE = 2.0  # 1 fold, bf16, 2 cores, reading and writing included
PIPELINED = {"num_processes_preprocessing": 1, "num_threads_export": 2}  # nnQC_predict's -npp / -nps defaults on a GPU
SEQUENTIAL = {"num_processes_preprocessing": 0, "num_threads_export": 1}  # ... and on the CPU


def point_nnunet_folders_to(base: str) -> None:
    """nnU-Net reads its folder variables when first imported: set them before importing nnunetv2 or nnqc."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(base, name)
        os.makedirs(os.environ[name])


def build_datasets(num_subjects: int, num_cases: int, seed: int, shape: tuple[int, int, int] | None = None
                   ) -> tuple[str, str]:
    """Source phantoms (BraTS size unless `shape`), the QC dataset and its plans; returns (source folder, QC
    dataset name)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.qc_data.conversion import convert_dataset

    class SmallSampleFingerprintExtractor(DatasetFingerprintExtractor):
        """A few thousand foreground intensities per subject instead of millions: planning needs no more."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 30000

    source = write_phantom_dataset(SOURCE_ID, "BenchmarkPhantom", num_subjects, "brats", shape=shape, seed=seed,
                                   num_test=num_cases)
    qc_folder = convert_dataset(SOURCE_ID, QC_ID, num_seggen=1, num_degradations=1, verbose=False).folder
    plan_and_preprocess([QC_ID], num_processes=1, no_pp=True,
                        fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    return source, os.path.basename(qc_folder)


def write_untrained_model(dataset_name: str, num_folds: int,
                          expected_input_shape: list[int] | None = EXPECTED_INPUT_SHAPE) -> str:
    """nnUNet_results/DATASET/nnQCTrainer__nnQCPlans__3d_fullres with plans, dataset.json and one
    checkpoint_final.pth per fold holding freshly initialised weights; returns the folder."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnqc.network_architecture.build import build_network

    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name)
    plans = load_json(os.path.join(preprocessed, f"{PLANS}.json"))
    configuration = plans["configurations"][CONFIGURATION]
    if expected_input_shape is not None and configuration["patch_size"] != expected_input_shape:
        raise RuntimeError(f"the plans give input shape {configuration['patch_size']}, the benchmark expects "
                           f"{expected_input_shape} (BraTS at 1 mm); try another --seed")
    folder = os.path.join(os.environ["nnUNet_results"], dataset_name, f"{TRAINER}__{PLANS}__{CONFIGURATION}")
    os.makedirs(folder)
    shutil.copy(os.path.join(preprocessed, f"{PLANS}.json"), os.path.join(folder, "plans.json"))
    shutil.copy(os.path.join(preprocessed, "dataset.json"), os.path.join(folder, "dataset.json"))
    architecture = configuration["architecture"]
    for fold in range(num_folds):
        torch.manual_seed(fold)
        network = build_network(architecture["network_class_name"], architecture["arch_kwargs"],
                                 architecture["_kw_requires_import"])
        os.makedirs(os.path.join(folder, f"fold_{fold}"))
        torch.save({"network_weights": network.state_dict(), "trainer_name": TRAINER,
                    "init_args": {"configuration": CONFIGURATION}, "current_epoch": 0,
                    "inference_allowed_mirroring_axes": (0, 1, 2)},
                   os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth"))
    return folder


def one_folder_per_case(images: str, segmentations: str, cases: list[str], base: str) -> dict[str, tuple[str, str]]:
    """{case: (images folder, segmentations folder)} holding only that case (hard links where possible)."""
    def link(source: str, target_folder: str) -> None:
        target = os.path.join(target_folder, os.path.basename(source))
        try:
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)

    folders = {}
    for case in cases:
        case_images, case_segs = os.path.join(base, case, "images"), os.path.join(base, case, "segs")
        os.makedirs(case_images)
        os.makedirs(case_segs)
        for f in sorted(os.listdir(images)):
            if f.startswith(case + "_"):
                link(os.path.join(images, f), case_images)
        link(os.path.join(segmentations, case + ".nii.gz"), case_segs)
        folders[case] = (case_images, case_segs)
    return folders


def time_sequential(predictor, folders: dict[str, tuple[str, str]], output_base: str) -> list[float]:
    """Seconds per case, each case alone through predict_from_files."""
    times = []
    for case, (images, segs) in folders.items():
        start = time.perf_counter()
        table = predictor.predict_from_files(images, segs, os.path.join(output_base, case), **SEQUENTIAL)
        times.append(time.perf_counter() - start)
        if list(table["status"]) != ["ok"]:
            raise RuntimeError(f"{case} was not assessed: {list(table['status'])}")
    return times


def time_pipelined(predictor, images: str, segmentations: str, output: str, num_cases: int) -> float:
    """Seconds per case of one predict_from_files call over the whole folder with nnQC_predict's defaults."""
    start = time.perf_counter()
    table = predictor.predict_from_files(images, segmentations, output, **PIPELINED)
    seconds = time.perf_counter() - start
    if len(table) != num_cases or not (table["status"] == "ok").all():
        raise RuntimeError(f"not every case was assessed: {table[['case', 'status']].to_dict('records')}")
    return seconds / num_cases


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def reset_peak_rss() -> float:
    """Reset VmHWM to the current resident set (Linux: 5 into clear_refs); returns that resident set in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def breakdown(predictors: dict[str, dict[int, object]], case_files, output: str) -> dict[str, float]:
    """Seconds of the stages of one case: input checks, read + preprocess, forward (per precision; per fold of
    the ensemble), restore + write the map."""
    from nnqc.input_files import check_input_file
    from nnqc.metrics.sem import encode_sem_bits

    timings = {}
    start = time.perf_counter()
    for path in (*case_files.images, case_files.segmentation):
        check_input_file(path)
    timings["input checks (truncation, NaN; input_files)"] = time.perf_counter() - start
    predictor_one = predictors["fp32"][1]
    start = time.perf_counter()
    data, candidate, properties = predictor_one.preprocess_files(case_files)
    timings["read + preprocess"] = time.perf_counter() - start
    # zlib releases the GIL: the checks' second decompression can run beside SimpleITK's read
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        checks = pool.submit(lambda: [check_input_file(p) for p in (*case_files.images, case_files.segmentation)])
        predictor_one.preprocess_files(case_files)
        checks.result()
    timings["read + preprocess, checks in a thread beside"] = time.perf_counter() - start
    for precision, by_folds in predictors.items():
        start = time.perf_counter()
        result = by_folds[1].predict_preprocessed(data, candidate)
        timings[f"forward, 1 fold, {precision}"] = time.perf_counter() - start
        num_folds = max(by_folds)
        if num_folds > 1:
            start = time.perf_counter()
            by_folds[num_folds].predict_preprocessed(data, candidate)
            timings[f"forward, {num_folds} folds, {precision}, per fold"] = (time.perf_counter() - start) / num_folds
    start = time.perf_counter()
    bits = predictor_one.restore_to_input_geometry(encode_sem_bits(result["sem"]), properties)
    timings["restore SEMs to input geometry"] = time.perf_counter() - start
    start = time.perf_counter()
    writer = predictor_one.plans_manager.image_reader_writer_class()
    writer.write_seg(bits, os.path.join(output, case_files.case + predictor_one.dataset_json["file_ending"]),
                     properties)
    timings["write the SEM map"] = time.perf_counter() - start
    timings["_fraction of voxels flagged wrong (any region)"] = float((bits > 0).mean())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3, help="cases to assess")
    parser.add_argument("--folds", type=int, default=5, help="folds of the ensemble")
    parser.add_argument("--subjects", type=int, default=3, help="training subjects of the QC dataset (planning)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_pipelined", action="store_true", help="skip the pipelined runs")
    parser.add_argument("--disable_tta", action="store_true", help="no test-time mirroring (nnQC_predict's flag)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as base:
        point_nnunet_folders_to(base)
        from nnqc.cpu_features import cpu_has_native_bf16
        from nnqc.inference.cases import find_cases
        from nnqc.inference.predictor import nnQCPredictor

        start = time.perf_counter()
        source, dataset_name = build_datasets(args.subjects, args.cases, args.seed)
        folder = write_untrained_model(dataset_name, args.folds)
        print(f"set-up (phantoms, conversion, plans, {args.folds} untrained folds): "
              f"{time.perf_counter() - start:.0f} s", flush=True)

        images, segmentations = os.path.join(source, "imagesTs"), os.path.join(source, "labelsTs")
        cases, _ = find_cases(images, segmentations, ".nii.gz", 4)
        folders = one_folder_per_case(images, segmentations, [c.case for c in cases], os.path.join(base, "cases"))
        outputs = os.path.join(base, "outputs")

        precisions = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)
        predictors = {}
        for precision in precisions:
            predictors[precision] = {}
            for folds in ((0,), tuple(range(args.folds))):
                predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=precision == "fp32",
                                          use_mirroring=not args.disable_tta)
                predictor.initialize_from_trained_model_folder(folder, folds)
                assert predictor.precision == precision, (predictor.precision, precision)
                predictors[precision][len(folds)] = predictor

        print(f"\n{len(cases)} cases of 4 x 240 x 240 x 155 at 1 mm, network input {EXPECTED_INPUT_SHAPE}, "
              f"CPU, {args.threads} threads, test-time mirroring {'off' if args.disable_tta else 'on (8 passes)'}"
              + ("" if "bf16" in precisions else "; bf16 not run: this CPU has no native bf16"), flush=True)
        warm_up = time_sequential(predictors["fp32"][1], dict(list(folders.items())[:1]),
                                  os.path.join(outputs, "warm_up"))
        print(f"first case after loading the model (untimed warm-up): {warm_up[0]:.2f} s", flush=True)
        results = {}
        for precision, by_folds in predictors.items():
            for num_folds, predictor in by_folds.items():
                before = reset_peak_rss()
                times = time_sequential(predictor, folders,
                                        os.path.join(outputs, f"sequential_{precision}_{num_folds}"))
                row = {"mean": statistics.mean(times), "median": statistics.median(times), "peak": peak_rss_mb(),
                       "growth": peak_rss_mb() - before}
                if not args.no_pipelined:
                    row["pipelined"] = time_pipelined(predictor, images, segmentations,
                                                      os.path.join(outputs, f"pipelined_{precision}_{num_folds}"),
                                                      len(cases))
                results[precision, num_folds] = row
                print(f"  {precision}, {num_folds} fold(s): {row['mean']:.2f} s per case", flush=True)
        header = f"{'folds':>6}{'precision':>10}{'mean s/case':>13}{'median s/case':>15}{'cases/min':>11}"
        print("\nper case (sequential: nnQC_predict's CPU default; pipelined: its GPU defaults):\n" + header
              + f"{'pipelined s/case':>18}{'peak RSS MB':>13}{'growth MB':>11}")
        for (precision, num_folds), row in sorted(results.items(),
                                                  key=lambda item: (item[0][1], precisions.index(item[0][0]))):
            pipelined = f"{row['pipelined']:.2f}" if "pipelined" in row else "-"
            print(f"{num_folds:>6}{precision:>10}{row['mean']:>13.2f}{row['median']:>15.2f}{60 / row['mean']:>11.1f}"
                  f"{pipelined:>18}{row['peak']:>13.0f}{row['growth']:>11.0f}")
        print(f"target: <= {TARGET_SECONDS_PER_CASE:.1f} s per case for 1 fold in bf16 on 2 cores")

        print(f"\nbreakdown of one case ({cases[0].case}):")
        os.makedirs(os.path.join(outputs, "breakdown"))
        stages = breakdown(predictors, cases[0], os.path.join(outputs, "breakdown"))
        for name, value in stages.items():
            if name.startswith("_"):
                print(f"  ({name[1:]}: {value:.3f}; untrained weights)")
            else:
                print(f"  {name:<46}{value:>7.2f} s")


if __name__ == "__main__":
    main()
