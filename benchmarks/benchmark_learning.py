"""Does QC learn on CPU? QCResUNet against the ResNet-34 regressor, each trained for the same wall time.

    python benchmarks/benchmark_learning.py [--minutes 20 | --iterations N] [--subjects 40] [--held_out 10]
                                            [--repeats 1] [--keep DIR]

--iterations trains a fixed number of iterations (whole epochs) instead: figures that do not depend on the CPU or
on what else runs on it, so that two versions of the code can be compared (benchmarks/compare_runs.py).
--repeats N trains each trainer N times from fresh random starts on the same data (run k >= 2 in
nnUNet_results_run{k}, its predictions in qc_TRAINER_run{k}): the run-to-run spread of training, which
compare_runs.py --groups reports. A kept work folder resumes: its data is reused when made with the same options,
and finished runs are not trained again.

Phantom source dataset (BraTS-like, small size) -> nnQC_convert -> plan and preprocess -> for each trainer,
training on CPU on the demo's schedule (nnQCTrainer_CPUDemo's epochs and lr decay, the trainer's own network and
learning rate) until the time budget is spent (whole epochs) -> predictions on held-out subjects whose
candidates span all quality levels -> Pearson r and MAE of DSC and NSD, DSC_SEM, then per trainer the calibrated
figures: DSC interval coverage and mean width at alpha 0.1, AURC beside the optimal and a random ranking,
pass/review/fail counts, mean error for true DSC > 0.85 raw and recalibrated. Targets (QCResUNet): DSC r >= 0.85,
NSD r >= 0.8, DSC_SEM >= 0.5, interval coverage >= 0.85.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import SimpleITK as sitk
import torch

TRAINERS = ("nnQCTrainer_CPUDemo", "nnQCTrainer_ResNet34")


def time_limited(trainer_class: type, seconds: float | None, iterations: int | None = None) -> type:
    """The trainer with its schedule cut before an epoch that could overrun the budget (judged by the longest
    epoch so far), so that training never takes more than `seconds`; or, with `iterations`, cut after the epoch
    that reaches that many iterations."""

    class TimeLimited(trainer_class):
        training_minutes = None  # the budget is this wrapper's: the demo trainer keeps its 100 iterations

        def run_training(self):
            self.num_epochs = 1000
            start = time.time()
            longest_epoch = 0.0
            self.on_train_start()
            while self.current_epoch < self.num_epochs:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val))
                                                  for _ in range(self.num_val_iterations_per_epoch)])
                epoch_start = self.logger.get_value("epoch_start_timestamps", step=-1)
                self.on_epoch_end()
                longest_epoch = max(longest_epoch, time.time() - epoch_start)
                if iterations is not None:
                    if self.current_epoch * self.num_iterations_per_epoch >= iterations:
                        break
                elif time.time() - start + longest_epoch > seconds:
                    break
            self.on_train_end()

    TimeLimited.__name__ = trainer_class.__name__
    return TimeLimited


def on_schedule(trainer_class: type, schedule_class: type) -> type:
    """The trainer (its network, learning rate and loss) on the schedule's epochs, iterations and lr decay: the
    trainers compared then differ in what they are, not in how fast their learning rate falls."""
    schedule = {k: v for k, v in schedule_class.hyperparameters.items() if k != "initial_lr"}
    return type(trainer_class.__name__, (trainer_class,),
                {"hyperparameters": {**schedule, **trainer_class.hyperparameters}})


def figure(value: float | None, width: int) -> str:
    """A right-aligned figure of 3 decimals; evaluation results hold None where a figure is undefined (a constant
    prediction has no Pearson r)."""
    return f"{value:>{width}.3f}" if value is not None else f"{'n/a':>{width}}"


def held_out_cases(source: str, out: str, per_case: int) -> tuple[str, str, str]:
    from nnqc.metrics.regions import allowed_labels, get_regions
    from nnqc.qc_data.generators import GENERATOR_FAMILIES, generate_candidate
    from nnqc.qc_data.view import read_subject_view

    with open(os.path.join(source, "dataset.json")) as f:
        dataset_json = json.load(f)
    _, regions = get_regions(dataset_json)
    labels = allowed_labels(dataset_json)
    folders = [os.path.join(out, n) for n in ("images", "segmentations", "references")]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    cases = sorted(f[:-7] for f in os.listdir(os.path.join(source, "labelsTs")))
    for i, case in enumerate(cases):
        reference = sitk.ReadImage(os.path.join(source, "labelsTs", case + ".nii.gz"))
        array = sitk.GetArrayFromImage(reference)
        # candidates stay inside the images' non-zero box, as nnQC_convert's do, so none is a partial view
        view = read_subject_view([os.path.join(source, "imagesTs", f"{case}_{c:04d}.nii.gz") for c in range(4)])
        for k in range(per_case):
            name = f"{case}_{k}"
            family = GENERATOR_FAMILIES[k % len(GENERATOR_FAMILIES)]
            candidate = generate_candidate(family, array, 10_000 + 100 * i + k, reference.GetSpacing()[::-1],
                                           labels, regions, view)
            image = sitk.GetImageFromArray(candidate)
            image.CopyInformation(reference)
            sitk.WriteImage(image, os.path.join(folders[1], name + ".nii.gz"), True)
            shutil.copyfile(os.path.join(source, "labelsTs", case + ".nii.gz"),
                            os.path.join(folders[2], name + ".nii.gz"))
            for c in range(4):
                os.link(os.path.join(source, "imagesTs", f"{case}_{c:04d}.nii.gz"),
                        os.path.join(folders[0], f"{name}_{c:04d}.nii.gz"))
    return tuple(folders)


def prepare_data(root: str, args: argparse.Namespace) -> tuple[str, str, str]:
    """Phantom source dataset, QC conversion, preprocessing and the held-out candidates; skipped when `root` holds
    them from the same options (setup.json, written last)."""
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.qc_data.conversion import convert_dataset

    options = {"subjects": args.subjects, "held_out": args.held_out, "per_case": args.per_case,
               "shape": list(args.shape), "lesion_size": list(args.lesion_size)}
    record = os.path.join(root, "setup.json")
    folders = tuple(os.path.join(root, "held_out", n) for n in ("images", "segmentations", "references"))
    if os.path.isfile(record):
        with open(record) as f:
            if json.load(f) == options:
                print(f"reusing the data in {root} (made with the same options)")
                return folders
        os.remove(record)
    source = write_phantom_dataset(800, "LearnPhantom", args.subjects, "brats", shape=args.shape, seed=11,
                                   num_test=args.held_out, num_processes=2, overwrite=True,
                                   lesion_size=args.lesion_size)
    convert_dataset(800, 801, num_seggen=3, num_degradations=12, num_processes=2, verbose=False)
    plan_and_preprocess([801], num_processes=2)
    shutil.rmtree(os.path.join(root, "held_out"), ignore_errors=True)
    held_out_cases(source, os.path.join(root, "held_out"), args.per_case)
    with open(record, "w") as f:
        json.dump(options, f)
    return folders


def train_and_predict(root: str, name: str, run: int, args: argparse.Namespace, images: str, segs: str) -> tuple:
    """Run `run` of trainer `name` (its own nnUNet_results from run 2 on), then its predictions on the held-out
    candidates; a finished run (run.json beside its predictions) is read back instead."""
    from nnqc.inference.predictor import nnQCPredictor
    from nnqc.run.train import get_trainer
    from nnqc.trainer_lookup import get_trainer_class

    suffix = "" if run == 1 else f"_run{run}"
    out = os.path.join(root, f"qc_{name}{suffix}")
    record = os.path.join(out, "run.json")
    if os.path.isfile(record):
        with open(record) as f:
            done = json.load(f)
        print(f"{name} run {run}: finished before, its predictions in {out} are reused")
        return out, done["minutes"], done["iterations"]
    os.environ["nnUNet_results"] = os.path.join(root, f"nnUNet_results{suffix}")
    trainer_class = get_trainer_class(name)
    if args.schedule != "own":
        trainer_class = on_schedule(trainer_class, get_trainer_class(args.schedule))
    trainer = get_trainer(801, "3d_fullres", 0, time_limited(trainer_class, args.minutes * 60, args.iterations),
                          device=torch.device("cpu"))
    start = time.time()
    trainer.run_training()
    minutes = (time.time() - start) / 60
    trainer.perform_actual_validation()  # as nnQC_train does; its out-of-fold predictions calibrate the model
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(os.path.dirname(trainer.output_folder), (0,))
    predictor.predict_from_files(images, segs, out)
    iterations = trainer.current_epoch * trainer.num_iterations_per_epoch
    with open(record, "w") as f:
        json.dump({"minutes": minutes, "iterations": iterations}, f)
    return out, minutes, iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=20, help="training wall time per trainer")
    budget.add_argument("--iterations", type=int, default=None,
                        help="training iterations per trainer instead of a wall time (rounded up to whole epochs)")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--held_out", type=int, default=10)
    parser.add_argument("--per_case", type=int, default=7, help="candidates per held-out subject")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 40, 48), help="phantom size (z y x), the demo's")
    parser.add_argument("--lesion_size", type=float, nargs=2, default=(0.35, 0.6),
                        help="lesion radius range as a fraction of the brain radius (the demo's)")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    parser.add_argument("--schedule", default=TRAINERS[0],
                        help="trainer whose epochs and lr decay every trainer uses (default %(default)s; 'own': "
                             "each its own)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="training runs per trainer from fresh random starts (the run-to-run spread)")
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one; a kept one "
                                                     "resumes)")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="nnqc_learning_")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(root, name)
        os.makedirs(os.environ[name], exist_ok=True)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    from nnqc.evaluation.evaluate import evaluate_predictions
    from nnqc.evaluation.figures import calibration_lines
    from nnqc.evaluation.region_evaluation import region_lines

    images, segs, refs = prepare_data(root, args)
    os.environ["nnUNet_n_proc_DA"] = "0"
    rows = []
    for run in range(1, args.repeats + 1):
        for name in args.trainers:
            out, minutes, iterations = train_and_predict(root, name, run, args, images, segs)
            label = name if args.repeats == 1 else f"{name} run {run}"
            rows.append((label, minutes, iterations, evaluate_predictions(out, refs, verbose=False)))
    print(f"\nheld-out: {args.held_out} subjects x {args.per_case} candidates, phantoms {tuple(args.shape)}")
    print(f"{'trainer':<30}{'minutes':>8}{'iters':>7}{'DSC r':>8}{'DSC MAE':>9}{'NSD r':>8}{'NSD MAE':>9}"
          f"{'DSC_SEM':>9}")
    for name, minutes, iterations, r in rows:
        print(f"{name:<30}{minutes:>8.1f}{iterations:>7}{figure(r['dsc']['r'], 8)}{figure(r['dsc']['mae'], 9)}"
              f"{figure(r['nsd']['r'], 8)}{figure(r['nsd']['mae'], 9)}{figure(r['dsc_sem'].get('mean'), 9)}")
    for name, _, _, r in rows:  # calibrated decisions (from fold 0's out-of-fold predictions, when it has them)
        print(f"\n{name}:")
        for line in calibration_lines(r) + region_lines(r):
            print(f"  {line}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
