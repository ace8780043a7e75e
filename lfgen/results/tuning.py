"""The tuning section of a report, for a tune experiment (``experiments/<name>/study.db``): the optimisation
history (trial number against value, with the best so far), the intermediate values the pruner saw (eval loss
per step per trial, each pruned trial marked where it stopped) as one embedded PNG, and the parameters'
importances (Optuna's, once at least two trials completed).

Optuna and matplotlib are imported inside the functions: a sweep's report never loads either.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from lfgen.layout import STUDY
from lfgen.runs.metrics import lower_is_better


def study_folder(root: Path, name: str) -> Path | None:
    """The folder of experiment *name* holding a study, looked for from the report's root; None for a sweep."""
    for folder in (root, root / name, root / "experiments" / name):
        if folder.name == name and (folder / STUDY).is_file():
            return folder
    return None


def section(folder: Path) -> dict[str, Any] | None:
    """What the report shows of the study in *folder*: counts, steps, importances and the PNG (base64); None
    when the study has no trial, or Optuna is not installed (the rest of the report does not need it)."""
    import base64

    import yaml

    from lfgen.errors import InputError
    from lfgen.layout import MANIFEST
    from lfgen.runs.study import load_rows

    try:
        rows = load_rows(folder)
    except InputError:
        return None
    if not rows:
        return None
    try:
        recorded = yaml.safe_load((folder / MANIFEST).read_text(encoding="utf-8")) or {}
        metric = str((recorded.get("sweep") or {}).get("metric") or "eval_loss")
    except (OSError, yaml.YAMLError, AttributeError):
        metric = "eval_loss"
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "failed")}
    try:
        png = render_png(rows, metric)
    except ImportError:  # matplotlib missing: the numbers without the figure
        png = b""
    return {"trials": len(rows), "counts": counts, "steps": sum(r["steps"] or 0 for r in rows),
            "importances": importances(folder) if len(complete) >= 2 else [],
            "image": base64.b64encode(png).decode("ascii"), "metric": metric,
            "pruned_at": [(r["run"], max(r["intermediate"]) if r["intermediate"] else None)
                          for r in rows if r["state"] == "pruned"]}


def importances(folder: Path) -> list[tuple[str, str]]:
    """(parameter, importance) pairs, most important first; [] when Optuna cannot tell (a single value...)."""
    from lfgen.runs.study import optuna_module

    optuna = optuna_module()
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / STUDY).resolve()}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    try:
        found = optuna.importance.get_param_importances(optuna.load_study(study_name=names[0], storage=storage))
    except (RuntimeError, ValueError, ZeroDivisionError, IndexError):  # e.g. every complete trial the same params
        return []
    return [(name, f"{value:.2f}") for name, value in found.items()]


def render_png(rows: list[dict[str, Any]], metric: str, *, dpi: int = 100) -> bytes:
    """Two panels: the optimisation history and the intermediate values per step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lfgen.results.plots import _colors

    figure = Figure(figsize=(10, 4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    history, steps = figure.subplots(1, 2)
    lower = lower_is_better(metric)
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None and math.isfinite(r["value"])]
    history.scatter([r["number"] for r in done], [r["value"] for r in done], s=18, label="complete trial")
    best, bests = None, []
    for r in done:
        best = r["value"] if best is None else (min if lower else max)(best, r["value"])
        bests.append(best)
    if done:
        history.step([r["number"] for r in done], bests, where="post", color="tab:red", label="best so far")
        history.legend(fontsize=8, loc="best")
    history.set_xlabel("trial")
    history.set_ylabel(metric)
    history.set_title("optimisation history")
    history.grid(alpha=0.3)
    for r, color in zip(rows, _colors(len(rows))):
        points = sorted(r["intermediate"].items())
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] if math.isfinite(p[1]) else math.nan for p in points]
        steps.plot(xs, ys, color=color, linewidth=1.0, linestyle=":" if r["state"] == "pruned" else "-")
        if r["state"] == "pruned":
            steps.plot(xs[-1], ys[-1], marker="x", color=color, markersize=7)
    steps.set_xlabel("step")
    steps.set_ylabel("eval loss")
    steps.set_title("intermediate values; x: where a pruned trial stopped")
    steps.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
