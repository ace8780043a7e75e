"""The comparison table of ``lfgen compare``: one row per run, one pandas DataFrame for all of them.

Runs are read into plain dicts and the DataFrame is built once at the end; pandas per run would
cost more than reading the files.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfgen.errors import FilterError, InputError, did_you_mean
from lfgen.results.diagnosis import Finding, diagnose_run, summary_text
from lfgen.results.verdict import ExperimentSummary, summarize_experiment
from lfgen.runs.reader import MAX_POINTS, RunData, read_planned, read_run
from lfgen.results.sources import find

if TYPE_CHECKING:  # pandas is imported where the frame is built: collect() does not need it
    import pandas as pd

KEY_COLUMNS = ("lora_rank", "lora_alpha", "learning_rate", "lora_target", "lora_dropout", "num_train_epochs",
               "effective_batch")
# LlamaFactory's predict metrics and lfgen eval's scores (lfgen.runs.scoring); shown when a run has them.
PREDICT_COLUMNS = ("predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_bleu-4", "cider", "accuracy",
                   "answer_accuracy", "samples_scored", "eval_time_s", "tokens_per_s")
# What LlamaFactory's preference stages log at their final evaluation (R-STAGE-METRIC): DPO, ORPO and SimPO the
# share of held-out pairs ranked right and the mean margin, KTO the margin, a reward model its accuracy.
PREFERENCE_COLUMNS = ("eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen",
                      "eval_rewards/rejected", "eval_accuracy")
_OPTIONAL_COLUMNS = (*PREFERENCE_COLUMNS, *PREDICT_COLUMNS)  # shown when a run compared has them
METRIC_COLUMNS = ("final_train_loss", "best_eval_loss", "best_eval_step", "final_eval_loss", *PREFERENCE_COLUMNS,
                  *PREDICT_COLUMNS,
                  "runtime_s", "gpu_hours", "samples_per_s", "peak_vram_gib", "state", "diagnosis", "verdict",
                  "experiment_verdict")
# What the GPU-hours cost (lfgen.results.costs); shown when a run compared has a price.
COST_COLUMNS = ("cost", "price_source")
# From the runs' lfgen_env.json; shown when a run compared has one.
ENV_COLUMNS = ("device", "llamafactory_version")
# What describes a run rather than measures it: said once above a table (the terminal's, the report's) when every
# run has the same value, so that the columns that differ fit the width.
SAID_ONCE = ("experiment", *KEY_COLUMNS, "state", *ENV_COLUMNS)
# Keys that differ between any two runs by construction; a column of them says nothing.
_NOT_COMPARED = frozenset({"output_dir", "logging_dir", "run_name"})
_INTEGER_COLUMNS = ("lora_rank", "lora_alpha", "effective_batch", "best_eval_step")
_FLOAT_COLUMNS = ("final_train_loss", "best_eval_loss", "final_eval_loss", *_OPTIONAL_COLUMNS, "runtime_s",
                  "gpu_hours", "samples_per_s", "peak_vram_gib", "cost")
# Short headers for the tables people read (the terminal's, the report's); the data's own names stay in
# --format csv/json and are each short header's tooltip in the report.
LABELS = {"lora_rank": "rank", "lora_alpha": "alpha", "learning_rate": "lr", "lora_target": "target",
          "lora_dropout": "dropout", "num_train_epochs": "epochs", "effective_batch": "batch",
          "final_train_loss": "train loss", "best_eval_loss": "best eval", "best_eval_step": "at step",
          "final_eval_loss": "final eval", "runtime_s": "time s", "gpu_hours": "GPU-h", "cost": "cost $",
          "samples_per_s": "samples/s",
          "peak_vram_gib": "VRAM GiB", "predict_rouge-1": "ROUGE-1", "predict_rouge-2": "ROUGE-2",
          "predict_rouge-l": "ROUGE-L", "predict_bleu-4": "BLEU-4", "cider": "CIDEr",
          "accuracy": "exact", "answer_accuracy": "answer",
          "samples_scored": "scored", "eval_time_s": "eval s", "tokens_per_s": "tokens/s",
          "eval_rewards/accuracies": "pref acc", "eval_rewards/margins": "margin", "eval_rewards/chosen": "chosen",
          "eval_rewards/rejected": "rejected", "eval_accuracy": "RM acc", "llamafactory_version": "LlamaFactory"}
PARALLEL_MIN_RUNS = 200  # below this, starting worker processes costs more than it saves
_ORDER_OPS = (">", ">=", "<", "<=")
_CONDITION = re.compile(r"^\s*([\w.\-/]+)\s*(==|!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")


@dataclass(slots=True)
class Comparison:
    """Every run found under a path, read and diagnosed, with one summary per experiment."""

    root: Path
    runs: list[RunData]
    names: list[str]
    experiments: list[str]
    findings: list[list[Finding]]
    summaries: dict[str, ExperimentSummary]
    histories: dict[str, list[tuple[str, tuple[str, ...]]]]  # experiment -> its family's (experiment, axes)
    spends: list[Any] | None = None  # an experiment's runs: their measured spend (lfgen.runs.spend)
    price: float | None = None  # --price: USD per GPU-hour for every run's cost


def collect(path: str | os.PathLike[str], *, max_points: int | None = MAX_POINTS,
            workers: int | None = None, price: float | None = None) -> Comparison:
    """Find, read and diagnose every run at or under *path*, or every run of the experiment folder *path*
    (``experiments/<name>``: its runs' output dirs, with the state lfgen run recorded; see
    ``lfgen.results.sources``). *workers*: see ``read_runs``; *price*: USD per GPU-hour of every run's cost (else
    each device's known price)."""
    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")
    source = find(path)
    started = [i for i in range(len(source.dirs)) if source.started(i)]
    read = dict(zip(started, read_runs([source.dirs[i] for i in started], max_points=max_points, workers=workers)))
    runs = [read[i] if i in read else read_planned(source.dirs[i], source.planned[i])
            for i in range(len(source.dirs))]
    for run, state in zip(runs, source.states or [None] * len(runs)):
        run.state = state or run.state
        run.notes.extend(source.notes)
    names, experiments = source.names, source.experiments
    members: dict[str, list[int]] = defaultdict(list)
    for index, experiment in enumerate(experiments):
        members[experiment].append(index)
    speeds = [run.samples_per_s for run in runs]
    findings: list[list[Finding]] = [[] for _ in runs]
    for indexes in members.values():
        for i in indexes:
            findings[i] = diagnose_run(runs[i], [speeds[j] for j in indexes if j != i and speeds[j]])
    histories = {name: _history([runs[i] for i in indexes], source.planned[indexes[0]] if source.planned else None)
                 for name, indexes in members.items()}
    summaries = {name: summarize_experiment(name, [(names[i], runs[i], findings[i]) for i in indexes],
                                            histories[name]) for name, indexes in members.items()}
    return Comparison(Path(path), runs, names, experiments, findings, summaries, histories, source.spends or None,
                      price)


def _history(runs: list[RunData], planned: Path | None) -> list[tuple[str, tuple[str, ...]]]:
    """The experiment family of these runs (lfgen.results.family): found from the experiment folder compared, else
    from a run's recorded config; [] when the runs were not made by lfgen sweep or tune."""
    from lfgen.results.family import experiment_of, history

    candidates = [planned] if planned is not None else []
    candidates += [run.config_file for run in runs if run.config_file is not None]
    for config in candidates:
        folder = experiment_of(config)
        if folder is not None:
            return [(stage.experiment, stage.axes) for stage in history(folder)]
    return []


def read_runs(dirs: Sequence[Path], *, max_points: int | None = MAX_POINTS,
              workers: int | None = None) -> list[RunData]:
    """Read run directories; with many of them on Linux, in *workers* processes (default: one per CPU,
    at most 8; 1 reads here). Reading is CPU-bound parsing, so threads would not help."""
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers <= 1 or len(dirs) < PARALLEL_MIN_RUNS or sys.platform != "linux":
        return [read_run(d, max_points=max_points) for d in dirs]
    import multiprocessing
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # fork, not spawn/forkserver: those re-import the caller's __main__, which breaks scripts without a
    # __main__ guard. Workers only parse files, so the threads a parent may run (BLAS) do not matter.
    chunk = max(16, len(dirs) // (workers * 4))
    gc.freeze()  # the children's garbage collector would otherwise touch, and so copy, every inherited page
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded, use of fork()"
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                return list(pool.map(functools.partial(read_run, max_points=max_points), dirs, chunksize=chunk))
    except (BrokenProcessPool, OSError):  # a worker killed (memory) or no processes allowed: read here
        return [read_run(d, max_points=max_points) for d in dirs]
    finally:
        gc.unfreeze()


def compare(path: str | os.PathLike[str], sort: str | None = None,
            filter: str | Sequence[str] | None = None) -> pd.DataFrame:  # noqa: A002 - the CLI's option name
    """The comparison table of every run under *path*; see ``frame`` for *sort* and *filter*."""
    return frame(collect(path), sort=sort, filter=filter)


def frame(comparison: Comparison, sort: str | None = None,
          filter: str | Sequence[str] | None = None) -> pd.DataFrame:  # noqa: A002
    """One row per run. *sort*: column names, comma-separated, ``-`` first for descending
    (``-best_eval_loss``). *filter*: conditions ``COLUMN OP VALUE`` (OP: = != > >= < <= ~glob), all must
    hold; a column may also be any config key (``lr_scheduler_type=cosine``).

    ``df.attrs["experiments"]`` holds each experiment's best run and next step among the rows kept.
    """
    import pandas as pd

    from lfgen.results.costs import Prices

    prices = Prices(comparison.price)
    rows = [_row(comparison, i, prices) for i in range(len(comparison.runs))]
    kept = list(range(len(rows)))
    for condition in [filter] if isinstance(filter, str) else list(filter or ()):
        test = _condition(condition, rows, comparison)
        kept = [i for i in kept if test(rows[i], comparison.runs[i].config)]
    summaries = {name: _summary(comparison, name, kept) for name in dict.fromkeys(comparison.experiments[i] for i in kept)}
    for i in kept:  # the verdict of the runs shown (a filter leaves an experiment's other runs out of it)
        summary = summaries[comparison.experiments[i]]
        rows[i].update(verdict=summary.standing.get(comparison.names[i], "ranked"), experiment_verdict=summary.headline)
    extra = _differing_keys([comparison.runs[i].config for i in kept], set(rows[0]) if rows else set())
    for i in kept:
        rows[i].update({key: _cell(comparison.runs[i].config.get(key)) for key in extra})
    predict = [c for c in _OPTIONAL_COLUMNS if any(rows[i][c] is not None for i in kept)]
    env = [c for c in ENV_COLUMNS if any(rows[i][c] is not None for i in kept)]
    costs = list(COST_COLUMNS) if any(rows[i]["cost"] is not None for i in kept) else []
    columns = ["run", "experiment", "path", *KEY_COLUMNS, *extra,
               *(c for c in METRIC_COLUMNS if c not in _OPTIONAL_COLUMNS or c in predict), *costs, *env]
    df = pd.DataFrame([rows[i] for i in kept], columns=columns)
    for column in _INTEGER_COLUMNS:
        df[column] = _as_integers(df[column])
    for column in _FLOAT_COLUMNS:
        if column in df.columns:
            df[column] = df[column].astype("float64")  # None -> NaN, so sorting and arithmetic work
    if sort:
        df = _sorted(df, sort)
    df = df.reset_index(drop=True)
    df.attrs["experiments"] = {name: summary.to_dict() for name, summary in summaries.items()}
    return df


def _summary(comparison: Comparison, name: str, kept: list[int]) -> ExperimentSummary:
    members = [i for i in kept if comparison.experiments[i] == name]
    if len(members) == sum(1 for e in comparison.experiments if e == name):
        return comparison.summaries[name]
    return summarize_experiment(name, [(comparison.names[i], comparison.runs[i], comparison.findings[i])
                                       for i in members], comparison.histories.get(name, ()))


def _row(comparison: Comparison, index: int, prices: Any) -> dict[str, Any]:
    from lfgen.results.costs import cost, gpu_hours

    run = comparison.runs[index]
    summary = comparison.summaries.get(comparison.experiments[index])
    config = run.config
    best_eval, best_step = run.best_eval
    row: dict[str, Any] = {"run": comparison.names[index], "experiment": comparison.experiments[index],
                           "path": str(run.path)}
    row.update({key: _cell(config.get(key)) for key in KEY_COLUMNS if key != "effective_batch"})
    row["effective_batch"] = run.effective_batch
    row.update(final_train_loss=run.final_train_loss, best_eval_loss=best_eval, best_eval_step=best_step,
               final_eval_loss=run.final_eval_loss)
    row.update({key: _number(run.results.get(key)) for key in _OPTIONAL_COLUMNS})
    hours = gpu_hours(run, comparison.spends[index] if comparison.spends else None)
    usd, source = cost(run, hours, prices)
    row.update(runtime_s=run.runtime_s, gpu_hours=hours, samples_per_s=run.samples_per_s,
               peak_vram_gib=run.vram_peak_gib, cost=usd, price_source=source,
               state=run.state, diagnosis=summary_text(comparison.findings[index], run),
               verdict=summary.standing.get(comparison.names[index], "ranked") if summary else None,
               experiment_verdict=summary.headline if summary else None,
               device=run.environment.get("device"), llamafactory_version=run.environment.get("llamafactory"))
    return row


def _differing_keys(configs: list[dict[str, Any]], taken: set[str]) -> list[str]:
    """Config keys whose value is not the same in every run (a key missing from a run counts as a value)."""
    if len(configs) < 2:
        return []
    keys = set().union(*configs) - _NOT_COMPARED - taken
    return sorted(k for k in keys if len({repr(c.get(k)) for c in configs}) > 1)


def _condition(text: str, rows: list[dict[str, Any]], comparison: Comparison):  # noqa: ANN202
    """The test of one ``--filter`` condition; ``FilterError`` when it is malformed."""
    match = _CONDITION.match(text)
    if not match:
        raise FilterError(f"filter {text!r}: write COLUMN OP VALUE with OP one of = != > >= < <= ~ "
                          "(e.g. lora_rank>=32, state=done, run~'r6*')")
    column, op, raw = match.groups()
    known = set(rows[0]) if rows else set()
    config_keys = set().union(*(run.config for run in comparison.runs))
    if column not in known and column not in config_keys:
        raise FilterError(f"filter {text!r}: no column or config key {column!r}"
                          f"{did_you_mean(column, known | config_keys)}; columns: {', '.join(rows[0]) if rows else '-'}")
    wanted = _parse_value(raw.strip("'\""))
    if op in _ORDER_OPS:
        values = [row[column] if column in row else _cell(run.config.get(column))
                  for row, run in zip(rows, comparison.runs)]
        _check_order(text, column, op, raw, wanted, values)

    def test(row: dict[str, Any], config: dict[str, Any]) -> bool:
        value = row[column] if column in row else _cell(config.get(column))
        if op == "~":
            return fnmatch.fnmatchcase(str(value), str(wanted))
        if op in ("=", "==", "!="):
            equal = _equal(value, wanted)
            return equal if op != "!=" else not equal
        left, right = _number(value), _number(wanted)
        if left is None or right is None:
            return False
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]

    return test


def _check_order(text: str, column: str, op: str, raw: str, wanted: Any, values: list[Any]) -> None:
    """> >= < <= compare numbers: the value must be one, and the column must hold some."""
    if _number(wanted) is None:
        raise FilterError(f"filter {text!r}: {op} compares numbers and {raw or '(nothing)'!r} is not one; give a "
                          f"number (e.g. {column}{op}32), or use = or ~ to match text")
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if present and all(_number(v) is None for v in present):
        raise FilterError(f"filter {text!r}: {op} compares numbers and column {column!r} holds text (e.g. "
                          f"{present[0]!r}); use = or ~ to match it (e.g. {column}~'{present[0]}*')")


def _sorted(df: pd.DataFrame, sort: str) -> pd.DataFrame:
    keys = [part.strip() for part in sort.split(",") if part.strip()]
    columns, ascending = [], []
    for key in keys:
        column = key.lstrip("-")
        if column not in df.columns:
            raise InputError(f"sort {key!r}: no column {column!r}{did_you_mean(column, df.columns)}; "
                             f"columns: {', '.join(df.columns)}")
        columns.append(column)
        ascending.append(not key.startswith("-"))
    try:
        return df.sort_values(columns, ascending=ascending, na_position="last", kind="stable")
    except TypeError:  # a config column mixing numbers and text: order it as text
        return df.sort_values(columns, ascending=ascending, na_position="last", kind="stable",
                              key=lambda column: column.astype(str) if column.dtype == object else column)


def _as_integers(column: pd.Series) -> pd.Series:
    values = [v for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                      for v in values):
        return column.astype("Int64")
    return column


def _cell(value: Any) -> Any:
    """A config value fit for a table cell: lists and mappings as text."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return str(value)
    return value


def _parse_value(text: str) -> Any:
    number = _number(text)
    if number is not None:
        return number
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _equal(value: Any, wanted: Any) -> bool:
    left, right = _number(value), _number(wanted)
    if left is not None and right is not None:
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(wanted, bool) or wanted is None:
        return value is wanted or value == wanted
    return str(value) == str(wanted)
