"""How ``lfgen run`` (and tune, eval) shows its work: rich progress bars on a terminal, plain lines otherwise (--quiet).

The runner (``lfgen.training.runner``) reports events to a ``Reporter``; these two print them, to the
streams they are given: messages to *stream* (stderr), the dry-run plan to *out* (stdout).
"""

from __future__ import annotations

import sys
from typing import Any

from lfgen.numbers import short
from lfgen.training.watch import Progress


class PlainReporter:
    """One line per event on stderr: for logs, CI and --quiet."""

    def __init__(self, stream: Any = None, out: Any = None):
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def plan(self, lines: list[str]) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)  # the plan is the command's output

    def started(self, name: str, attempt: int, gpus: list[int] | None, note: str) -> None:
        where = f"GPUs {','.join(map(str, gpus))}" if gpus else "default devices"
        self._say(f"[{name}] started (attempt {attempt}, {where}){': ' + note if note else ''}")

    def progress(self, name: str, progress: Progress) -> None:
        pass

    def finished(self, name: str, state: str, reason: str | None, detail: str | None) -> None:
        if state == "failed" and detail:  # the cause, where to fix it and the log, then the log lines that show it
            self._say(f"run {name} failed: {detail}")
            return
        self._say(f"[{name}] {state}{': ' + reason if reason else ''}{' - ' + detail if detail else ''}")

    def evaluated(self, outcome: Any) -> None:
        self._say(outcome_line(outcome))

    def message(self, text: str) -> None:
        self._say(text)


def outcome_line(outcome: Any) -> str:
    """One line per evaluated run: its scores, why it was skipped, or why its evaluation failed."""
    if outcome.status in ("scored", "skipped") and outcome.scores:
        s = outcome.scores
        what = "scored" if outcome.status == "scored" else "already scored (--force re-scores it)"
        return (f"{outcome.run}: {what}: {s.get('samples_scored')} samples, accuracy {short(s.get('accuracy'))}"
                f", {short(s.get('tokens_per_s'))} tokens/s")
    if outcome.status == "failed":
        return f"{outcome.run}: evaluation failed: {outcome.detail}"
    return f"{outcome.run}: {outcome.status} ({outcome.detail}); not evaluated"


class RichReporter(PlainReporter):
    """A bar per running run (step/total, loss, eval loss, ETA) and one for the experiment."""

    def __init__(self, total_runs: int, console: Any = None):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeRemainingColumn

        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                         console=console or Console(stderr=True), transient=False)
        self.overall = self.bars.add_task("[bold]experiment", total=total_runs, info="")
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def _say(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def started(self, name: str, attempt: int, gpus: list[int] | None, note: str) -> None:
        super().started(name, attempt, gpus, note)
        if name not in self.tasks:
            self.tasks[name] = self.bars.add_task(name, total=None, info="starting")

    def progress(self, name: str, progress: Progress) -> None:
        task = self.tasks.get(name)
        if task is not None and progress.total:
            info = f"loss {short(progress.loss)}  eval {short(progress.eval_loss)}"
            self.bars.update(task, completed=progress.step, total=progress.total, info=info)

    def finished(self, name: str, state: str, reason: str | None, detail: str | None) -> None:
        super().finished(name, state, reason, detail)
        task = self.tasks.pop(name, None)
        if task is not None:
            self.bars.remove_task(task)
        if state != "pending":
            self.bars.advance(self.overall)
