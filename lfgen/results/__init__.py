"""Reading, diagnosing and comparing LlamaFactory runs: the library half of ``lfgen compare``.

::

    from lfgen.results import compare, collect, write_report
    df = compare("experiments/rank-sweep", sort="best_eval_loss")
    df.attrs["experiments"]["rank-sweep"]["next_step"]
    write_report("experiments/rank-sweep", "report.html")

pandas, matplotlib and tensorboard load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lfgen._lazy import exports

_EXPORTS = {
    "find_runs": "lfgen.runs.discover",
    "read_run": "lfgen.runs.reader", "RunData": "lfgen.runs.reader", "Series": "lfgen.runs.reader",
    "diagnose_run": "lfgen.results.diagnosis", "summarize_experiment": "lfgen.results.diagnosis",
    "Finding": "lfgen.results.diagnosis", "ExperimentSummary": "lfgen.results.diagnosis",
    "collect": "lfgen.results.table", "compare": "lfgen.results.table", "frame": "lfgen.results.table",
    "read_runs": "lfgen.results.table", "Comparison": "lfgen.results.table",
    "plot_curves": "lfgen.results.plots", "render_png": "lfgen.results.plots",
    "render_report": "lfgen.results.report", "write_report": "lfgen.results.report",
}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.results.diagnosis import ExperimentSummary, Finding, diagnose_run, summarize_experiment  # noqa: F401
    from lfgen.runs.discover import find_runs  # noqa: F401
    from lfgen.results.plots import plot_curves, render_png  # noqa: F401
    from lfgen.runs.reader import RunData, Series, read_run  # noqa: F401
    from lfgen.results.report import render_report, write_report  # noqa: F401
    from lfgen.results.table import Comparison, collect, compare, frame, read_runs  # noqa: F401


__getattr__ = exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
