"""Loss curves of several runs in one PNG: train (solid) and eval (dashed) loss per run, plus
learning-rate and grad-norm panels when any run logged them.

matplotlib is imported inside the functions and drives the Agg canvas directly (no pyplot), so
nothing here touches a caller's backend or global figure state.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from lfgen.runs.reader import RunData, Series

LEGEND_MAX = 12  # more entries than this hide the curves; the report's table names every run


def render_png(runs: Sequence[tuple[str, RunData]], title: str | None = None, *, dpi: int = 100) -> bytes:
    """The PNG bytes of the curves of *runs* (pairs of name and data)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from lfgen.errors import InputError

        raise InputError("loss curves need matplotlib, which is not installed; install it with "
                         "pip install 'lfgen[plot]' (or 'lfgen[train]')") from None

    has_lr = any(run.learning_rate for _, run in runs)
    has_grad = any(run.grad_norm for _, run in runs)
    extra = int(has_lr) + int(has_grad)
    figure = Figure(figsize=(10, 4.2 + 2.8 * bool(extra)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2 if extra else 1, max(extra, 1), height_ratios=[3, 2] if extra else None)
    loss_axes = figure.add_subplot(grid[0, :])
    colors = _colors(len(runs))
    for (name, run), color in zip(runs, colors):
        label = name if len(runs) <= LEGEND_MAX else None
        _line(loss_axes, run.train_loss, color=color, label=label, linewidth=1.2)
        _line(loss_axes, run.eval_loss, color=color, linestyle="--", marker="o", markersize=3, linewidth=1.0)
    loss_axes.set_ylabel("loss")
    loss_axes.set_xlabel("step")
    loss_axes.grid(alpha=0.3)
    heading = title or "loss"
    loss_axes.set_title(f"{heading}: train (solid), eval (dashed)"
                        + (f"; {len(runs)} runs, legend hidden" if len(runs) > LEGEND_MAX else ""))
    if runs and len(runs) <= LEGEND_MAX:
        loss_axes.legend(fontsize=8, loc="best")
    column = 0
    for wanted, attribute, label, log_scale in ((has_lr, "learning_rate", "learning rate", False),
                                                 (has_grad, "grad_norm", "grad norm", True)):
        if not wanted:
            continue
        axes = figure.add_subplot(grid[1, column])
        column += 1
        for (_, run), color in zip(runs, colors):
            _line(axes, getattr(run, attribute), color=color, linewidth=1.0)
        positive = all(v > 0 for _, run in runs for v in getattr(run, attribute).values if math.isfinite(v))
        if log_scale and positive:
            axes.set_yscale("log")  # a spike 100x the median stays readable next to the rest
        axes.set_title(label)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no matplotlib URL inside the report
    return buffer.getvalue()


def plot_curves(runs: Sequence[tuple[str, RunData]], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write the curves of *runs* to *path* (a .png) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_png(runs, title))
    return path


def _line(axes, series: Series, **style) -> None:  # noqa: ANN001 - matplotlib Axes, imported lazily
    if not series:
        return
    # Inf would stretch the axis to nothing; NaN leaves a gap where the run broke, which is the point.
    values = [v if math.isfinite(v) else math.nan for v in series.values]
    axes.plot(series.steps, values, **style)


def _colors(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20" if count <= 20 else "viridis"]
    if count <= 20:
        return [cmap(i) for i in range(count)]
    return [cmap(i / max(1, count - 1)) for i in range(count)]
