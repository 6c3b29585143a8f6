"""Wall time per case of nnQC prediction at BraTS size on the CPU, for one fold and for a fold ensemble.

    python benchmarks/benchmark_predict.py [--cases 3] [--folds 5] [--threads 2] [--subjects 3]

Everything lives in a temporary folder with nnUNet_raw/preprocessed/results pointing there: a phantom source
dataset (240 x 240 x 155 at 1 mm) with --subjects training subjects and --cases cases to assess, converted to
a QC dataset, fingerprinted and planned (no preprocessing); the model folder is written without training,
with randomly initialised QCResUNet weights (a different seed per fold), which cost as much to run as trained
ones. Times exclude loading the model and include, per case, reading the images and the segmentation,
preprocessing, the forward passes, the SEM restoration to the input geometry and writing every output.

Two ways to run the cases:
- sequential: each case alone through nnQCPredictor.predict_from_files, no helper processes or threads:
  the latency of one case (mean and median over the cases);
- pipelined: all cases in one predict_from_files call with nnQC_predict's GPU defaults (one process
  preprocessing ahead, two threads writing maps; on the CPU nnQC_predict defaults to the sequential way):
  the throughput of a folder of cases (its helper process starts within the timed call, which weighs on a
  handful of cases).
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch

SOURCE_ID, QC_ID = 980, 981
TRAINER, PLANS, CONFIGURATION = "nnQCTrainer", "nnQCPlans", "3d_fullres"
EXPECTED_INPUT_SHAPE = [160, 192, 160]
TARGET_SECONDS_PER_CASE = 6.0
PIPELINED = {"num_processes_preprocessing": 1, "num_threads_export": 2}  # nnQC_predict's -npp / -nps defaults on a GPU
SEQUENTIAL = {"num_processes_preprocessing": 0, "num_threads_export": 1}  # ... and on the CPU


def point_nnunet_folders_to(base: str) -> None:
    """nnU-Net reads its folder variables when first imported: set them before importing nnunetv2 or nnqc."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(base, name)
        os.makedirs(os.environ[name])


def build_datasets(num_subjects: int, num_cases: int, seed: int) -> tuple[str, str]:
    """Source phantoms, the QC dataset and its plans; returns (source folder, QC dataset name)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.qc_data.conversion import convert_dataset

    class SmallSampleFingerprintExtractor(DatasetFingerprintExtractor):
        """A few thousand foreground intensities per subject instead of millions: planning needs no more."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 30000

    source = write_phantom_dataset(SOURCE_ID, "BenchmarkPhantom", num_subjects, "brats", seed=seed,
                                   num_test=num_cases)
    qc_folder = convert_dataset(SOURCE_ID, QC_ID, num_seggen=1, num_degradations=1, verbose=False).folder
    plan_and_preprocess([QC_ID], num_processes=1, no_pp=True,
                        fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    return source, os.path.basename(qc_folder)


def write_untrained_model(dataset_name: str, num_folds: int) -> str:
    """nnUNet_results/DATASET/nnQCTrainer__nnQCPlans__3d_fullres with plans, dataset.json and one
    checkpoint_final.pth per fold holding freshly initialised weights; returns the folder."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnqc.network_architecture.build import build_network

    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name)
    plans = load_json(os.path.join(preprocessed, f"{PLANS}.json"))
    configuration = plans["configurations"][CONFIGURATION]
    if configuration["patch_size"] != EXPECTED_INPUT_SHAPE:
        raise RuntimeError(f"the plans give input shape {configuration['patch_size']}, the benchmark expects "
                           f"{EXPECTED_INPUT_SHAPE} (BraTS at 1 mm); try another --seed")
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
                    "init_args": {"configuration": CONFIGURATION}, "current_epoch": 0},
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


def breakdown(predictor_one, predictor_all, case_files, output: str) -> dict[str, float]:
    """Seconds of the stages of one case: read + preprocess, forward (per fold), restore + write the map."""
    from nnqc.metrics.sem import encode_sem_bits

    timings = {}
    start = time.perf_counter()
    data, candidate, properties = predictor_one.preprocess_files(case_files)
    timings["read + preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    result = predictor_one.predict_preprocessed(data, candidate)
    timings["forward, 1 fold"] = time.perf_counter() - start
    num_folds = len(predictor_all.fold_weights)
    if num_folds > 1:
        start = time.perf_counter()
        predictor_all.predict_preprocessed(data, candidate)
        timings[f"forward, {num_folds} folds, per fold"] = (time.perf_counter() - start) / num_folds
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as base:
        point_nnunet_folders_to(base)
        from nnqc.inference.predictor import find_cases, nnQCPredictor

        start = time.perf_counter()
        source, dataset_name = build_datasets(args.subjects, args.cases, args.seed)
        folder = write_untrained_model(dataset_name, args.folds)
        print(f"set-up (phantoms, conversion, plans, {args.folds} untrained folds): "
              f"{time.perf_counter() - start:.0f} s", flush=True)

        images, segmentations = os.path.join(source, "imagesTs"), os.path.join(source, "labelsTs")
        cases, _ = find_cases(images, segmentations, ".nii.gz", 4)
        folders = one_folder_per_case(images, segmentations, [c.case for c in cases], os.path.join(base, "cases"))
        outputs = os.path.join(base, "outputs")

        predictors = {}
        for folds in ((0,), tuple(range(args.folds))):
            predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
            predictor.initialize_from_trained_model_folder(folder, folds)
            predictors[len(folds)] = predictor

        print(f"\n{len(cases)} cases of 4 x 240 x 240 x 155 at 1 mm, network input {EXPECTED_INPUT_SHAPE}, "
              f"CPU, {args.threads} threads", flush=True)
        warm_up = time_sequential(predictors[1], dict(list(folders.items())[:1]), os.path.join(outputs, "warm_up"))
        print(f"first case after loading the model (untimed warm-up): {warm_up[0]:.2f} s", flush=True)
        print(f"{'folds':>6}{'mode':>12}{'mean s/case':>13}{'median s/case':>15}{'cases/min':>11}")
        for num_folds, predictor in predictors.items():
            times = time_sequential(predictor, folders, os.path.join(outputs, f"sequential_{num_folds}"))
            mean = statistics.mean(times)
            print(f"{num_folds:>6}{'sequential':>12}{mean:>13.2f}{statistics.median(times):>15.2f}{60 / mean:>11.1f}",
                  flush=True)
            if not args.no_pipelined:
                per_case = time_pipelined(predictor, images, segmentations,
                                          os.path.join(outputs, f"pipelined_{num_folds}"), len(cases))
                print(f"{num_folds:>6}{'pipelined':>12}{per_case:>13.2f}{'':>15}{60 / per_case:>11.1f}", flush=True)
        print(f"target: <= {TARGET_SECONDS_PER_CASE:.0f} s per case for 1 fold")

        print(f"\nbreakdown of one case ({cases[0].case}):")
        os.makedirs(os.path.join(outputs, "breakdown"))
        stages = breakdown(predictors[1], predictors[args.folds], cases[0], os.path.join(outputs, "breakdown"))
        for name, value in stages.items():
            if name.startswith("_"):
                print(f"  ({name[1:]}: {value:.3f}; untrained weights)")
            else:
                print(f"  {name:<36}{value:>7.2f} s")


if __name__ == "__main__":
    main()
