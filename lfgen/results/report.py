"""One self-contained HTML report of a comparison: the table, the curves (PNG embedded as base64),
each run's findings, and each experiment's best run and next step. No external resources: the file
can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfgen.results.captions import with_thumbnails
from lfgen.results.diagnosis import HEALTHY
from lfgen.runs.scoring import examples
from lfgen.runs.environment import setup
from lfgen.results.table import LABELS, SAID_ONCE, Comparison, collect, frame

TEMPLATE = "report.html.j2"
ANSWERS_SHOWN = 3  # per run: enough to see garbage or repetition, few enough to read
PLOT_MAX_RUNS = 40  # per experiment figure; beyond that the lines are unreadable anyway
_CODE = re.compile(r"`([^`]+)`")
# the verdict's sentence is the experiment's section, not a cell; the price sources are said once under the table
_NOT_SHOWN = ("path", "experiment_verdict", "price_source")


def render_report(comparison: Comparison, *, sort: str | None = None,
                  filter: str | Sequence[str] | None = None, title: str | None = None) -> str:  # noqa: A002
    """The HTML text of the report for *comparison* (rows and plots limited by *filter*)."""
    from lfgen.resources import jinja_environment

    df = frame(comparison, sort=sort, filter=filter)
    index = {name: i for i, name in enumerate(comparison.names)}
    shown = [index[name] for name in df["run"]]
    experiments = []
    for name, summary in df.attrs["experiments"].items():
        members = [i for i in shown if comparison.experiments[i] == name]
        experiments.append(_experiment(comparison, summary, members))
    # The absolute path would push every metric off-screen: it is the run name's tooltip instead.
    columns = [column for column in df.columns if column not in _NOT_SHOWN]
    shown_df = df[columns].astype(object).where(df[columns].notna(), None)  # NaN, <NA> -> None
    # A setting that is the same in every run is said once above the table rather than repeated in a column (the
    # table then fits a 1400 px window with every metric on screen).
    same = [column for column in columns if column in SAID_ONCE and len(df) > 1
            and len({_format(column, value) for value in shown_df[column]}) == 1]
    said_once = [(LABELS.get(column, column), column, _format(column, shown_df[column].iloc[0])) for column in same]
    columns = [column for column in columns if column not in same]
    shown_df = shown_df[columns]
    # Cells as parts the template joins with a line-break opportunity (module lists at their commas), so that the
    # table fits a 1400 px window instead of pushing its last columns off-screen.
    rows = [{"run": run, "path": path, "cells": [_format(column, value).split(",") for column, value in zip(columns, row)]}
            for run, path, row in zip(df["run"], df["path"], shown_df.itertuples(index=False))]
    return jinja_environment(html=True).get_template(TEMPLATE).render(
        title=title or f"lfgen compare: {comparison.root}",
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        root=str(comparison.root),
        columns=columns,
        # short labels (the column's own name is the tooltip), broken after each underscore when narrow
        headers=[(LABELS.get(column, column).split("_"), column if column in LABELS else None) for column in columns],
        rows=rows,
        said_once=said_once,
        experiments=experiments,
        prices=list(dict.fromkeys(df["price_source"].dropna())) if "price_source" in df.columns else [],
    )


def write_report(source: str | os.PathLike[str] | Comparison, out: str | os.PathLike[str], *,
                 sort: str | None = None, filter: str | Sequence[str] | None = None,  # noqa: A002
                 force: bool = False) -> Path:
    """Write the report of *source* (a path with runs, or a Comparison) to *out*; refuses to replace a
    file unless *force*."""
    from lfgen.yamlio import write_new

    comparison = source if isinstance(source, Comparison) else collect(source)
    return write_new(out, render_report(comparison, sort=sort, filter=filter), force=force, option="-o/--output")


def _experiment(comparison: Comparison, summary: dict[str, Any], members: list[int]) -> dict[str, Any]:
    name = summary["experiment"]
    best = [i for i in members if comparison.names[i] == summary["best_run"]]
    plotted = (best + [i for i in members if i not in best])[:PLOT_MAX_RUNS]
    image = ""
    if any(comparison.runs[i].train_loss or comparison.runs[i].eval_loss for i in plotted):
        from lfgen.results.plots import render_png

        png = render_png([(comparison.names[i], comparison.runs[i]) for i in plotted], title=name)
        image = base64.b64encode(png).decode("ascii")
    runs = []
    for i in members:
        findings = [f for f in comparison.findings[i] if f.kind != HEALTHY]
        runs.append({"name": comparison.names[i], "state": comparison.runs[i].state,
                     "healthy": any(f.kind == HEALTHY for f in comparison.findings[i]),
                     "findings": [f.to_dict() for f in findings], "notes": comparison.runs[i].notes,
                     # seed 003's qualitative check: a few generated answers beside the reference (lfgen eval)
                     # with a thumbnail of each picture for a vision-language run (lfgen.results.captions)
                     "answers": with_thumbnails(comparison.runs[i].path,
                                                examples(comparison.runs[i].path, limit=ANSWERS_SHOWN))})
    from lfgen.results import tuning

    folder = tuning.study_folder(Path(comparison.root), name)
    return {"name": name, "tuning": tuning.section(folder) if folder is not None else None,
            "best_run": summary["best_run"], "best_by": summary["best_by"],
            "best_value": _format("", summary["best_value"]), "varied": ", ".join(summary["varied"]) or "-",
            "verdict": summary["verdict"], "headline": summary["headline"], "evidence": summary["evidence"],
            "disagreement": summary["disagreement"],
            "family": summary["searched"] if len(summary["searched"]) > 1 else [],
            "next_step": _segments(summary["next_step"]), "image": image,
            "plotted": len(plotted), "members": len(members), "runs": runs,
            "setup": setup([comparison.runs[i] for i in members])}


def _segments(text: str) -> list[tuple[str, bool]]:
    """Text split at `code` spans: (text, is_code) pairs the template renders safely."""
    parts = _CODE.split(text)
    return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]


def _format(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars from the DataFrame
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        if column == "learning_rate" or (value and abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)
