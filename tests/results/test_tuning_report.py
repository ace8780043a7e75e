"""lfgen report on a tune experiment: the tuning section (history, intermediate values with where each pruned
trial stopped, parameter importances) from a small real Optuna study written here, no training."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from lfgen.results.report import write_report
from tests.results.lf_files import Curves, decay, write_run

optuna = pytest.importorskip("optuna")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tune_experiment(folder: Path, complete: int = 4, pruned: int = 2) -> Path:
    """A study in folder/study.db (complete and pruned trials, each with eval losses per step) and runs beside it."""
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(study_name=folder.name, storage=storage, direction="minimize")
    for number in range(complete + pruned):
        trial = study.ask()
        rank = trial.suggest_categorical("lora_rank", [4, 8, 16])
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        last = 8 if number < complete else 3
        for step in range(1, last + 1):
            trial.report(2.0 - step * lr * 100 - rank / 100, step)
        trial.set_user_attr("steps", last)
        if number < complete:
            study.tell(trial, 2.0 - last * lr * 100 - rank / 100)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        write_run(folder / f"trial-{number:03d}", Curves(decay(20, seed=number), logging_steps=1),
                  config={"lora_rank": rank, "learning_rate": lr})
    return folder


def test_report_of_a_tune_experiment_has_history_steps_and_importances(tmp_path: Path) -> None:
    out = write_report(tune_experiment(tmp_path / "search"), tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    assert "<h3>Tuning</h3>" in text
    assert "6 trial(s): 4 complete, 2 pruned, 0 failed; 38 optimizer steps used" in text
    assert "trial-004 at step 3" in text and "trial-005 at step 3" in text
    assert re.search(r"<td class=\"text\">(learning_rate|lora_rank)</td><td>\d\.\d\d</td>", text)
    images = re.findall(r'alt="optimisation history[^"]*" src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(PNG_MAGIC)


def test_one_complete_trial_has_no_importances_and_a_sweep_no_tuning_section(tmp_path: Path) -> None:
    text = write_report(tune_experiment(tmp_path / "small", complete=1, pruned=1), tmp_path / "r.html").read_text()
    assert "<h3>Tuning</h3>" in text and "need at least two complete trials" in text
    write_run(tmp_path / "sweep" / "r8", Curves(decay(20), logging_steps=1), config={"lora_rank": 8})
    assert "<h3>Tuning</h3>" not in write_report(tmp_path / "sweep", tmp_path / "s.html").read_text()


def test_the_section_without_optuna_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lfgen.runs.study as studies
    from lfgen.errors import InputError

    folder = tune_experiment(tmp_path / "search", complete=2, pruned=0)

    def missing():
        raise InputError("lfgen tune needs Optuna")

    monkeypatch.setattr(studies, "optuna_module", missing)
    text = write_report(folder, tmp_path / "report.html").read_text()
    assert "<h3>Tuning</h3>" not in text and "Experiment search" in text
