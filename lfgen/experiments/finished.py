"""Finished runs of an experiment (or an outputs folder) and the best of them, for staged tuning
(``lfgen sweep --from``): the value of a metric from each run's ``all_results.json``, ranked by
``lfgen.runs.ranking`` like everywhere else; ``lfgen eval``'s scores count as results too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lfgen.errors import InputError
from lfgen.runs.manifest import load
from lfgen.layout import EVAL_DIR, MANIFEST, RESULTS_FILE, RUN_CONFIG
from lfgen.runs.metrics import value as metric_value
from lfgen.runs.ranking import best


@dataclass(frozen=True)
class Finished:
    run: str
    output_dir: Path
    config: Path | None
    metric: str
    value: float


def finished_runs(source: str | Path, metric: str = "eval_loss", root: Path | None = None) -> list[Finished]:
    """Finished runs of an experiment folder, or of an outputs folder (runs lfgen started carry
    ``lfgen_run.yaml``), with their *metric* from ``all_results.json``."""
    source = Path(source)
    found = []
    if (source / MANIFEST).is_file():
        exp = load(source)
        root = root or (exp.path / exp.manifest.root).resolve()
        for entry in exp.manifest.runs:
            out = root / entry.output_dir
            value = metric_value(out, metric)
            if value is not None:
                found.append(Finished(entry.name, out, exp.path / entry.config, metric, value))
        return found
    if not source.is_dir():
        raise InputError(f"--from: {source} is neither an experiment folder nor an outputs folder")
    for results in sorted(source.rglob(RESULTS_FILE)):
        out = results.parent
        if out.name == EVAL_DIR and (out.parent / RESULTS_FILE).is_file():
            continue  # lfgen eval's predict output inside a run, not a run
        value = metric_value(out, metric)
        config = out / RUN_CONFIG
        if value is not None:
            found.append(Finished(out.name, out, config if config.is_file() else None, metric, value))
    return found


def best_run(source: str | Path, metric: str = "eval_loss") -> Finished:
    """The best finished run (lowest loss, highest score) with a config to start the next stage from."""
    found = best([run for run in finished_runs(source, metric) if run.config is not None], lambda run: run.value,
                 metric)
    if found is None:
        raise InputError(f"--from: no finished run with {metric} in {source} (a finished run has all_results.json with a finite value; "
                         "with --metric, check the name, e.g. eval_loss or predict_rouge-l)")
    return found
