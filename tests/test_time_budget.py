"""The demo trainer's time budget: iterations sized from a timing of its own step, the timing trains nothing,
and a resumed training keeps the schedule it started with."""
import json
import os

import pytest
import torch
from conftest import QC_ID

from nnqc.training.time_budget import SCHEDULE_FILE, iterations_for_budget, read_schedule
from nnqc_trainers.nnQCTrainer_schedules import BUDGET_VARIABLE, nnQCTrainer_CPUDemo


def test_iterations_fill_the_budget_left_by_the_validations():
    # 600 s less 100 validation batches of 0.1 s leave 590 s: 32 epochs of 0.2 s iterations fit 92 per epoch
    assert iterations_for_budget(600, 32, 0.2, 100, 0.1, 20, 100) == 92
    assert iterations_for_budget(600, 32, 0.01, 100, 0.1, 20, 100) == 100  # capped at the schedule's
    assert iterations_for_budget(600, 32, 5.0, 100, 0.1, 20, 100) == 20  # never below the minimum
    assert iterations_for_budget(5, 32, 0.2, 100, 0.1, 20, 100) == 20  # validations alone over the budget
    with pytest.raises(ValueError):
        iterations_for_budget(600, 32, 0.0, 100, 0.1, 20, 100)


def test_the_trainer_sizes_its_epochs_from_its_step_and_keeps_them_on_resume(pipeline_env, tmp_path, monkeypatch):
    from nnqc.run.train import get_trainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    # a budget too small for anything: the minimum; the timing steps leave weights and Adam untouched
    monkeypatch.setenv(BUDGET_VARIABLE, "0.001")
    trainer = get_trainer(QC_ID, "3d_fullres", 0, "nnQCTrainer_CPUDemo", device=torch.device("cpu"))
    trainer.initialize()
    weights = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    trainer.on_train_start()
    assert trainer.num_iterations_per_epoch == nnQCTrainer_CPUDemo.min_iterations_per_epoch
    assert trainer.lr_scheduler.gamma == pytest.approx(0.9 ** (20 / 250))
    after = trainer.network.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert not trainer.optimizer.state_dict()["state"]
    schedule = read_schedule(trainer.output_folder)
    assert schedule.num_iterations_per_epoch == 20 and schedule.budget_seconds == pytest.approx(0.06)
    assert schedule.seconds_per_iteration > 0 and schedule.seconds_per_validation_batch > 0
    assert schedule.precision == ("bf16 autocast (native)" if trainer.uses_cpu_bf16() else "fp32")

    # started again (a resumed training), it keeps what it chose, whatever the budget now says
    monkeypatch.setenv(BUDGET_VARIABLE, "100000")
    trainer.on_train_start()
    assert trainer.num_iterations_per_epoch == 20
    assert trainer.lr_scheduler.gamma == pytest.approx(0.9 ** (20 / 250))


def test_a_damaged_schedule_is_an_error_naming_it(tmp_path):
    with open(tmp_path / SCHEDULE_FILE, "w") as f:
        json.dump({"num_iterations_per_epoch": 20}, f)
    with pytest.raises(RuntimeError, match=SCHEDULE_FILE):
        read_schedule(str(tmp_path))
    os.remove(tmp_path / SCHEDULE_FILE)
    assert read_schedule(str(tmp_path)) is None


def test_a_budget_that_is_not_minutes_is_refused(monkeypatch):
    trainer = nnQCTrainer_CPUDemo.__new__(nnQCTrainer_CPUDemo)
    monkeypatch.setenv(BUDGET_VARIABLE, "ten")
    with pytest.raises(ValueError, match=BUDGET_VARIABLE):
        trainer.budget_seconds()
    monkeypatch.setenv(BUDGET_VARIABLE, "-1")
    with pytest.raises(ValueError, match="positive"):
        trainer.budget_seconds()
    monkeypatch.setenv(BUDGET_VARIABLE, "2.5")
    assert trainer.budget_seconds() == 150
