"""``lfgen run``: every run of an experiment through ``llamafactory-cli train``, with faults handled.

The runner keeps its slots busy by pulling work when one frees, in this order: a run to start again (an OOM retry,
which keeps the effective batch by halving the micro-batch and doubling the accumulation; a run whose Ray worker
died), an evaluation left to do, the experiment's runs to start or resume (its queue), then its source's next run
(lfgen tune asks Optuna for the next trial: lfgen.training.sources). A run that has trained is evaluated (--eval,
tune by an eval metric) as a child of its own polled with the training runs: in the run's slot here, in a task of
its own on Ray. One runner per experiment (its lock), its state in SQLite; a NaN watchdog stops a run at the first
bad log step; a crash keeps the log's last lines; Ctrl-C, SIGTERM and kill -9 leave every run resumable.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lfgen import launch
from lfgen.errors import InputError, LfgenError
from lfgen.layout import CONSOLE_LOG
from lfgen.runs.lock import Busy, CannotLock, Lock
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow, Store
from lfgen.training import attempt, changes, failures, outputs, pruning, requeue, rundir, tokenized
from lfgen.training.executor import Executor, LocalExecutor, RunHandle, Slot
from lfgen.training.failures import NAN_ADVICE, OOM_ADVICE, classify_failure
from lfgen.training.signals import Terminated
from lfgen.training.slots import dry_run_lines
from lfgen.training.target import Target
from lfgen.training.watch import Progress

if TYPE_CHECKING:
    from lfgen.training.evaluations import Evaluations, Outcome
    from lfgen.training.sources import RunSource

POLL_S = 0.2


class Reporter(Protocol):
    """What the runner tells its user; the CLI shows it as progress bars or plain lines."""

    def plan(self, lines: list[str]) -> None: ...
    def started(self, name: str, attempt: int, gpus: list[int] | None, note: str) -> None: ...
    def progress(self, name: str, progress: Progress) -> None: ...
    def finished(self, name: str, state: str, reason: str | None, detail: str | None) -> None: ...
    def evaluated(self, outcome: Outcome) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class _Active:
    row: RunRow
    handle: RunHandle
    gpus: Slot
    micro: int | None
    accumulation: int | None
    config: dict[str, Any] = field(default_factory=dict)  # what it trains with (lfgen_run.yaml)
    placed: bool = False  # a remote run's node and path are recorded


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # done, but the results are gone (--retry-missing)
    pruned: list[str] = field(default_factory=list)  # stopped early by lfgen tune's pruner


class Runner:
    def __init__(self, target: Target, reporter: Reporter, *, gpus: list[int] | None = None, gpus_per_run: int = 1,
                 max_oom_retries: int = 3, fail_fast: bool = False, command: list[str] | None = None,
                 force: bool = False, executor: Executor | None = None, evaluations: Evaluations | None = None):
        self.target, self.reporter = target, reporter
        self.command = list(sys.argv if command is None else command)  # the lfgen command line, for lfgen_env.json
        # Where runs train: this machine (GPU slots) or a Ray cluster (lfgen.training.ray_executor).
        self.executor = executor or LocalExecutor()
        # Where a run that has trained is evaluated (--eval; tune by an eval metric): executor.evaluations(...);
        # its outcome is recorded apart, so a failed evaluation never marks the training failed.
        self.evaluations = evaluations
        self.slots = self.executor.slots(gpus, gpus_per_run)
        self.max_oom_retries, self.fail_fast = max_oom_retries, fail_fast
        self.force = force  # train into an output dir that holds another config's finished results
        self.store: Store | None = None
        self.source: RunSource | None = None
        self.active: dict[str, _Active] = {}
        self.evaluating: dict[str, Slot] = {}  # run -> the slot its evaluation holds (None: it holds none)
        self.output_locks: dict[str, Lock] = {}  # held while a run trains (one lock per output dir)
        self.queue: deque[str] = deque()  # the experiment's runs to start or resume
        self.again: deque[str] = deque()  # runs to start again before anything else (OOM retry, lost worker)
        self.shared = tokenized.Shared(target.root)  # one run at a time writes a tokenized_path others share
        self.to_evaluate: deque[str] = deque()  # trained runs whose evaluation is still to do (a resumed tune)
        self.free: list[Slot] = []
        self.busy: dict[str, Slot] = {}
        self.stopping = False  # --fail-fast: a run failed, nothing new starts

    # --- selection and recovery ---------------------------------------------------------------------

    def _queue(self, store: Store, retry_failed: bool, rerun: list[str], retry_missing: bool = False) -> list[str]:
        rows = {row.name: row for row in store.runs()}  # (an unknown --rerun name was refused by run())
        again, queue, notes = [], [], []  # notes: (run, event kind, what happened)
        for name, row in rows.items():
            if name in rerun or (retry_failed and row.state is RunState.FAILED):
                again.append(name)
            elif row.state in (RunState.PENDING, RunState.INTERRUPTED):
                queue.append(name)
            elif row.state is RunState.DONE and (why := rundir.results_missing(self.target.root / row.output_dir)):
                if retry_missing:
                    again.append(name)
                    notes.append((name, "missing", f"done, but {why}; retrained (--retry-missing)"))
                else:
                    self.reporter.message(f"{name} is done but {why}; retrain it with --rerun {name} or "
                                          "--retry-missing")
        changed = changes.plan(rows, self.target.root, force=self.force, skip=set(again))  # keyed by content
        again, notes = again + [name for name, _, _ in changed], notes + changed
        queue = [name for name in rows if name in again or name in queue]
        # Every run about to start is checked (locks, another config's results) before any state changes.
        outputs.preflight(self.target.root, [(n, rows[n].config, rows[n].output_dir) for n in queue], force=self.force)
        for name in again:
            store.transition(name, RunState.PENDING, reason="fresh", oom_retries=0)
        changes.record(store, notes, self.reporter.message)
        return queue

    # --- one run ------------------------------------------------------------------------------------

    def _start(self, name: str, slot: list[int] | None) -> None:
        store = self.store
        row = store.get(name)
        try:
            self.output_locks[name] = outputs.lock(self.target.root / row.output_dir,
                                                   f"run {name} of {self.target.name}")
        except Busy as busy:  # another door reached it since the preflight: leave it pending
            self.reporter.message(f"{name}: not started: {busy}")
            return
        except CannotLock as cannot:  # no lock can be made beside its output dir: it cannot train there either
            self._finish_failed(row, *failures.os_failure(cannot.error, f"could not prepare {row.output_dir}"))
            return
        try:
            output_dir, config, text = attempt.prepare(self.target, row, store, self.reporter.message, force=self.force)
        except attempt.ConfigProblem as problem:
            outputs.release(self.output_locks, name)
            self._finish_failed(row, "config", f"{problem}; fix it in {row.config}")
            return
        except OSError as exc:  # the output dir could not be cleared or set up: nothing was removed
            self._finish_failed(row, *failures.os_failure(exc, f"could not prepare {row.output_dir} for the run"))
            return
        try:
            started = attempt.start(self.target, row, slot, output_dir, config, text, self.executor, self.command)
        except OSError as exc:  # a full disk, a read-only output dir: one clear failure, not a crash
            self._finish_failed(row, *failures.os_failure(exc, f"could not write lfgen's files in {row.output_dir}"))
            return
        command = started.command(self.target.root)
        store.transition(name, RunState.RUNNING, event=("started", command), attempts=started.number,
                         command=json.dumps(command), pid=started.handle.pid, pgid=started.handle.pid,
                         runner_pid=os.getpid(), gpus=",".join(map(str, slot)) if slot else None)
        self.active[name] = _Active(row=store.get(name), handle=started.handle, gpus=slot,
                                    micro=config.get("per_device_train_batch_size"),
                                    accumulation=config.get("gradient_accumulation_steps"), config=config)
        self.reporter.started(name, started.number, slot, started.note)

    def _log(self, row: RunRow) -> str:
        return f"{row.output_dir}/{CONSOLE_LOG}"

    def _finish_failed(self, row: RunRow, reason: str, detail: str) -> None:
        self.store.transition(row.name, RunState.FAILED, reason=reason, detail=detail,
                              event=(f"failed:{reason}", detail))
        self.reporter.finished(row.name, "failed", reason, detail)

    def _check(self, name: str) -> bool:
        """Poll one active run; True when it has ended (its slot is free)."""
        active = self.active[name]
        handle = active.handle
        progress = handle.poll()
        self.reporter.progress(name, progress)
        rc = handle.returncode()
        log = self._log(active.row)
        if handle.placed and not active.placed:  # a remote run: the node and path its files stay at
            active.placed = True
            self.store.event(name, "placed", handle.placed)
        if progress.nan and rc is None:
            handle.stop()
            self._finish_failed(active.row, "nan", failures.with_log(
                f"the loss went NaN ({progress.nan}); stopped at once. {NAN_ADVICE}", log))
            return True
        if rc is None and self.source is not None and (verdict := self.source.progress(name, progress)):
            self.reporter.finished(name, *pruning.stop(self.store, active, progress, verdict, self.target.root))
            return True
        if rc is None:
            return False
        handle.poll()
        handle.tail()  # read the guard's pipe and close it
        if progress.nan:
            self._finish_failed(active.row, "nan", failures.with_log(f"the loss went NaN ({progress.nan}). {NAN_ADVICE}",
                                                                     log))
        elif rc == 0:
            self.store.transition(name, RunState.DONE, event=("done", progress.as_dict()))
            self.reporter.finished(name, "done", None, None)
        elif said := requeue.lost(self.store, name, handle):  # a Ray worker that died: requeued elsewhere (a cap)
            self.reporter.message(said)
            self.again.appendleft(name)
        else:
            reason, detail = classify_failure(handle.tail() or failures.log_tail(handle.log_path))
            if reason == "oom":
                self._oom(active, detail)
            else:
                reason, message = failures.explain(reason, detail, config=active.config, config_file=active.row.config,
                                                   log=log, root=self.target.root, exit_code=rc)
                self._finish_failed(active.row, reason, message)
        return True

    def _oom(self, active: _Active, detail: str) -> None:
        row = self.store.get(active.row.name)
        micro, accumulation = active.micro or 1, active.accumulation or 1
        if micro <= 1 or row.oom_retries >= self.max_oom_retries:
            why = "at micro-batch 1" if micro <= 1 else f"after {row.oom_retries} OOM retries"
            self._finish_failed(row, "oom", failures.with_log(f"out of memory {why}. {OOM_ADVICE}", self._log(row),
                                                              detail))
            return
        new_micro = micro // 2
        new_accumulation = math.ceil(micro * accumulation / new_micro)  # keeps micro x accumulation
        change = {"config": {"per_device_train_batch_size": new_micro, "gradient_accumulation_steps": new_accumulation},
                  "from": [micro, accumulation], "to": [new_micro, new_accumulation]}
        self.store.transition(row.name, RunState.PENDING, reason="oom-retry", detail=json.dumps(change),
                              oom_retries=row.oom_retries + 1,
                              event=("oom-retry", f"{detail}; micro-batch {micro} x accumulation {accumulation} -> "
                                                  f"{new_micro} x {new_accumulation} (effective batch kept)"))
        self.reporter.message(f"{row.name}: out of memory; retrying with micro-batch {new_micro} x accumulation "
                              f"{new_accumulation} (was {micro} x {accumulation})")
        self.again.appendleft(row.name)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, *, retry_failed: bool = False, rerun: list[str] | None = None, dry_run: bool = False,
            retry_missing: bool = False, source: RunSource | None = None) -> Summary:
        """Train the experiment's runs (and, with *source*, the runs it gives as slots free) until none is left."""
        unknown = [name for name in rerun or [] if name not in {run[0] for run in self.target.runs}]
        if unknown:  # bad input: refused before the lock or the state is created
            raise InputError(f"--rerun: no run {unknown[0]!r} in {self.target.name}; runs: "
                             f"{', '.join(run[0] for run in self.target.runs)}")
        Store.verify(self.target.state_path)
        with Lock(self.target.lock_path, f"experiment {self.target.name}", holder="lfgen run"):
            self.store = Store(self.target.state_path)
            try:
                self.store.sync_runs(self.target.runs)
                for said in outputs.recover(self.store, self.target.root):  # runs a killed runner left running
                    self.reporter.message(said)
                for name in outputs.recognise_finished(self.store, self.target.root):
                    self.reporter.message(f"{name}: its output dir holds its finished results; recorded as done")
                self.queue = deque(self._queue(self.store, retry_failed, list(rerun or []), retry_missing))
                if dry_run:
                    self.reporter.plan(dry_run_lines(self.target, self.store, self.slots, list(self.queue)))
                    return Summary()
                self.source = source
                if source is not None:  # the runs it wants evaluated first (kept only when the runner evaluates)
                    left = source.opened(self.store)
                    self.to_evaluate = deque(left if self.evaluations is not None else ())
                if self.queue or source is not None:
                    launch.find_cli()  # fail before anything is marked running
                return self._loop()
            finally:
                for name in list(self.output_locks):
                    outputs.release(self.output_locks, name)
                self.store.close()

    def _loop(self) -> Summary:
        self.free, self.busy, self.stopping = list(self.slots), {}, False
        try:
            while True:
                self._poll()
                self._fill()
                if not self.active and not self.evaluating:
                    break  # nothing runs and nothing is left to start
                if self.active:
                    self.executor.wait([active.handle for active in self.active.values()], POLL_S)
                if self.evaluating:
                    self._collect(0 if self.active else POLL_S)
        except (KeyboardInterrupt, LfgenError) as stop:  # LfgenError: a state or study file not written (a full disk)
            with contextlib.suppress(LfgenError):  # what cannot be recorded now, the next runner recovers
                self._interrupt("SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
                                if isinstance(stop, KeyboardInterrupt) else "an error")
            raise
        return self.summary()

    def _next(self) -> tuple[str, str] | None:
        """The next piece of work for a free slot: ("train" | "eval", run), or None when there is none."""
        if self.again:
            return "train", self.again.popleft()
        if self.to_evaluate:
            return "eval", self.to_evaluate.popleft()
        while self.queue:  # its source may hold a queued run back (lfgen tune's --budget): it stays as it is
            if (name := self.queue.popleft()) and (self.source is None or self.source.admit(name)):
                return "train", name
        if self.source is not None and not self.shared.waiting and (name := self.source.next(self.store)) is not None:
            return "train", name
        return None

    def _fill(self) -> None:
        """Start work in every free slot, as long as there is work."""
        self.again.extend(self.shared.ready(self.active))  # their tokenized_path is written, or its writer ended
        while self.free and not self.stopping and (work := self._next()) is not None:
            kind, name = work
            if kind == "train" and self.shared.hold(self.store, name, self.active, self.reporter.message):
                continue  # another run is writing its tokenized_path: it waits, the slot takes the next work
            slot = self.free.pop(0)
            if kind == "eval":
                started = self._evaluate(self.store.get(name), slot)
            else:
                self._start(name, slot)
                started = name in self.active
                if started:
                    self.busy[name] = slot
                else:  # it failed to start (its config, its output dir), or another lfgen trains there
                    self.stopping = self.fail_fast
                    if (row := self.store.get(name)).state.finished:
                        self._ended(row)
            if not started or (kind == "eval" and not self.evaluations.holds_slot):
                self._release(slot)

    def _poll(self) -> None:
        """Poll every training run; one that has ended frees its slot, or its evaluation takes the slot over."""
        for name in list(self.active):
            if not self._check(name):
                continue
            del self.active[name]
            outputs.release(self.output_locks, name)
            slot = self.busy.pop(name)
            row = self.store.get(name)
            if row.state is RunState.DONE and self.evaluations is not None:
                if self._evaluate(row, slot) and self.evaluations.holds_slot:
                    continue  # the slot stays taken until the evaluation ends
            elif row.state.finished:
                self._ended(row)
            self._release(slot)
            if self.fail_fast and row.state is RunState.FAILED:
                self.stopping = True
            self._fill()  # the freed slot's next work starts now, before the other runs are polled

    def _evaluate(self, row: RunRow, slot: Slot) -> bool:
        """Start run *row*'s evaluation (on *slot*'s GPUs here); False when it ended at once (scored before, or
        it could not start), then said and its run's end passed on."""
        outcome = self.evaluations.start(self.store, row.name, self.target.root / row.output_dir, slot)
        if outcome is None:
            self.evaluating[row.name] = slot if self.evaluations.holds_slot else None
            return True
        self.reporter.evaluated(outcome)
        self._ended(self.store.get(row.name))
        return False

    def _collect(self, timeout: float) -> None:
        for outcome in self.evaluations.collect(timeout):
            slot = self.evaluating.pop(outcome.run)
            if self.evaluations.holds_slot:
                self._release(slot)
            self.reporter.evaluated(outcome)
            self._ended(self.store.get(outcome.run))
            self._fill()

    def _release(self, slot: Slot) -> None:
        self.free.append(slot)
        self.free.sort(key=self.slots.index)

    def _ended(self, row: RunRow) -> None:
        """A run has its outcome for this session (trained and, with evaluations, evaluated; failed; pruned)."""
        if self.source is not None:
            self.source.ended(row, self.store.evaluation(row.name))

    def _interrupt(self, how: str) -> None:
        """Ctrl-C or SIGTERM: every evaluation stopped and recorded so; every run stopped and recorded interrupted
        (its guard stops its whole tree, wherever it is). Local and Ray take this one path."""
        if self.evaluations is not None:
            self.evaluations.interrupt()
        self.evaluating.clear()
        for name, active in list(self.active.items()):
            active.handle.stop()
            if self.store.get(name).state is not RunState.RUNNING:
                continue  # it ended (and was recorded) just before the signal: its outcome stands
            if outputs.trained(self.target.root, active.row):  # its training ended just before: done, as it is
                self.store.transition(name, RunState.DONE, event=("recognised", f"finished as {how} came"))
                self.reporter.finished(name, "done", None, None)
                continue
            self.store.transition(name, RunState.INTERRUPTED, reason="interrupted", detail=f"stopped with {how}",
                                  event=("interrupted", how))
            self.reporter.finished(name, "interrupted", "interrupted", f"stopped with {how}")
        self.active.clear()

    def summary(self) -> Summary:
        result = Summary()
        for row in self.store.runs():
            if row.state is RunState.DONE and rundir.results_missing(self.target.root / row.output_dir):
                result.missing.append(row.name)
                continue
            {RunState.DONE: result.done, RunState.FAILED: result.failed, RunState.INTERRUPTED: result.interrupted,
             RunState.PRUNED: result.pruned}.get(row.state, result.skipped).append(row.name)
        return result
