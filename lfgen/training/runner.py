"""``lfgen run``: every run of an experiment through ``llamafactory-cli train``, with faults handled.

Queue and resume (SQLite state, one runner per experiment), GPU slots, OOM retry that keeps the
effective batch (micro-batch halved, accumulation doubled), a NaN watchdog that stops a run at
the first bad log step, crash records with the log's last lines, and Ctrl-C / kill -9 recovery.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from lfgen import launch
from lfgen.errors import InputError
from lfgen.layout import CONSOLE_LOG
from lfgen.training import attempt, failures, outputs, pruning, requeue, rundir
from lfgen.training.executor import Executor, LocalExecutor, RunHandle
from lfgen.training.failures import NAN_ADVICE, OOM_ADVICE, classify_failure
from lfgen.training.signals import Terminated
from lfgen.training.slots import dry_run_lines, wait_any
from lfgen.runs.lock import Lock
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow, Store
from lfgen.training.target import Target
from lfgen.training.watch import Progress

POLL_S = 0.2


class Reporter(Protocol):
    """What the runner tells its user; the CLI shows it as progress bars or plain lines."""

    def plan(self, lines: list[str]) -> None: ...
    def started(self, name: str, attempt: int, gpus: list[int] | None, note: str) -> None: ...
    def progress(self, name: str, progress: Progress) -> None: ...
    def finished(self, name: str, state: str, reason: str | None, detail: str | None) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class _Active:
    row: RunRow
    handle: RunHandle
    gpus: list[int] | None
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
                 force: bool = False, after_done: Any = None, executor: Executor | None = None,
                 on_progress: Any = None):
        self.target, self.reporter = target, reporter
        self.on_progress = on_progress  # (name, progress) -> "prune" | None at each poll: lfgen tune's pruner
        # after_done(store, row, gpus): called when a run has trained, in its slot (lfgen run --eval evaluates it
        # there); it records its own outcome, so a failure in it never marks the training failed. In the background
        # (--eval --ray, ray_eval) it has pending(timeout) -> how many still go (waited for) and interrupt().
        self.after_done = after_done
        self.command = list(sys.argv if command is None else command)  # the lfgen command line, for lfgen_env.json
        # Where runs train: this machine (GPU slots) or a Ray cluster (lfgen.training.ray_executor).
        self.executor = executor or LocalExecutor()
        self.slots = self.executor.slots(gpus, gpus_per_run)
        self.max_oom_retries, self.fail_fast = max_oom_retries, fail_fast
        self.force = force  # train into an output dir that holds another config's finished results
        self.store: Store | None = None
        self.active: dict[str, _Active] = {}
        self.output_locks: dict[str, Lock] = {}  # held while a run trains (one lock per output dir)

    # --- selection and recovery ---------------------------------------------------------------------

    def _recover(self, store: Store) -> None:
        """Runs left 'running' by a runner that is gone (we hold the lock): stop leftovers, mark interrupted."""
        for row in store.runs():
            if row.state is not RunState.RUNNING:
                continue
            if row.pgid and launch.group_alive(row.pgid):
                launch.stop_group(row.pgid)
            store.transition(row.name, RunState.INTERRUPTED, reason="interrupted",
                             detail=f"lfgen (pid {row.runner_pid}) stopped while this run trained",
                             event=("recovered", f"runner pid {row.runner_pid} gone; marked interrupted"))
            self.reporter.message(f"{row.name}: its last runner (pid {row.runner_pid}) is gone; it will resume")

    def _queue(self, store: Store, retry_failed: bool, rerun: list[str], retry_missing: bool = False) -> list[str]:
        rows = {row.name: row for row in store.runs()}
        unknown = [name for name in rerun if name not in rows]
        if unknown:
            raise InputError(f"--rerun: no run {unknown[0]!r} in {self.target.name}; runs: {', '.join(rows)}")
        again, queue, missing = [], [], []
        for name, row in rows.items():
            if name in rerun or (retry_failed and row.state is RunState.FAILED):
                again.append(name)
            elif row.state in (RunState.PENDING, RunState.INTERRUPTED):
                queue.append(name)
            elif row.state is RunState.DONE and (why := rundir.results_missing(self.target.root / row.output_dir)):
                if retry_missing:
                    again.append(name)
                    missing.append((name, why))
                else:
                    self.reporter.message(f"{name} is done but {why}; retrain it with --rerun {name} or "
                                          "--retry-missing")
        queue = [name for name in rows if name in again or name in queue]
        # Every run about to start is checked (locks, another config's results) before any state changes.
        outputs.preflight(self.target.root, [(n, rows[n].config, rows[n].output_dir) for n in queue], force=self.force)
        for name in again:
            store.transition(name, RunState.PENDING, reason="fresh", oom_retries=0)
        for name, why in missing:
            store.event(name, "missing", f"done, but {why}; retrained (--retry-missing)")
        return queue

    # --- one run ------------------------------------------------------------------------------------

    def _start(self, name: str, slot: list[int] | None) -> None:
        store = self.store
        row = store.get(name)
        try:
            self.output_locks[name] = outputs.lock(self.target.root / row.output_dir,
                                                   f"run {name} of {self.target.name}")
        except InputError as busy:  # another door reached it since the preflight: leave it pending
            self.reporter.message(f"{name}: not started: {busy}")
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

    def _check(self, name: str, queue: deque) -> bool:
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
        if rc is None and self.on_progress is not None and self.on_progress(name, progress) == "prune":
            active.handle.stop()  # local or on a Ray worker: stopped and waited for
            active.handle.tail()  # read what is left of its console and close it
            self.reporter.finished(name, "pruned", "pruned", pruning.record(self.store, name, progress))
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
            if self.after_done is not None:
                self.after_done(self.store, self.store.get(name), active.gpus)
        elif said := requeue.lost(self.store, name, handle):  # a Ray worker that died: requeued elsewhere (a cap)
            self.reporter.message(said)
            queue.appendleft(name)
        else:
            reason, detail = classify_failure(handle.tail() or failures.log_tail(handle.log_path))
            if reason == "oom":
                self._oom(active, detail, queue)
            else:
                reason, message = failures.explain(reason, detail, config=active.config, config_file=active.row.config,
                                                   log=log, root=self.target.root, exit_code=rc)
                self._finish_failed(active.row, reason, message)
        return True

    def _oom(self, active: _Active, detail: str, queue: deque) -> None:
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
        queue.appendleft(row.name)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, *, retry_failed: bool = False, rerun: list[str] | None = None, dry_run: bool = False,
            retry_missing: bool = False) -> Summary:
        unknown = [name for name in rerun or [] if name not in {run[0] for run in self.target.runs}]
        if unknown:  # bad input: refused before the lock or the state is created
            raise InputError(f"--rerun: no run {unknown[0]!r} in {self.target.name}; runs: "
                             f"{', '.join(run[0] for run in self.target.runs)}")
        Store.verify(self.target.state_path)
        with Lock(self.target.lock_path, f"experiment {self.target.name}", holder="lfgen run"):
            self.store = Store(self.target.state_path)
            try:
                self.store.sync_runs(self.target.runs)
                for name in outputs.recognise_finished(self.store, self.target.root):
                    self.reporter.message(f"{name}: its output dir holds its finished results; recorded as done")
                self._recover(self.store)
                queue = deque(self._queue(self.store, retry_failed, list(rerun or []), retry_missing))
                if dry_run:
                    self.reporter.plan(dry_run_lines(self.target, self.store, self.slots, list(queue)))
                    return Summary()
                if queue:
                    launch.find_cli()  # fail before anything is marked running
                return self._loop(queue)
            finally:
                for name in list(self.output_locks):
                    outputs.release(self.output_locks, name)
                self.store.close()

    def _loop(self, queue: deque) -> Summary:
        free = list(self.slots)
        busy: dict[str, list[int] | None] = {}
        stop, background, behind = False, getattr(self.after_done, "pending", None), 0  # behind: still going on
        try:
            while (queue and not stop) or self.active or behind:
                while queue and free and not stop:
                    name = queue.popleft()
                    slot = free.pop(0)
                    self._start(name, slot)
                    if name in self.active:
                        busy[name] = slot
                    else:
                        free.insert(0, slot)
                        stop = self.fail_fast
                for name in list(self.active):
                    if self._check(name, queue):
                        del self.active[name]
                        outputs.release(self.output_locks, name)
                        free.append(busy.pop(name))
                        free.sort(key=lambda s: self.slots.index(s))
                        if self.fail_fast and self.store.get(name).state is RunState.FAILED:
                            stop = True
                if self.active:
                    wait_any(self.active.values(), POLL_S)
                behind = background(0 if self.active else POLL_S) if background else 0
        except KeyboardInterrupt as stop:
            how = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
            if background:
                self.after_done.interrupt()
            for name, active in list(self.active.items()):
                active.handle.stop()  # the guard stops the run's whole tree, wherever it is
                self.store.transition(name, RunState.INTERRUPTED, reason="interrupted", detail=f"stopped with {how}",
                                      event=("interrupted", how))
                self.reporter.finished(name, "interrupted", "interrupted", f"stopped with {how}")
            self.active.clear()
            raise
        return self.summary()

    def summary(self) -> Summary:
        result = Summary()
        for row in self.store.runs():
            if row.state is RunState.DONE and rundir.results_missing(self.target.root / row.output_dir):
                result.missing.append(row.name)
                continue
            {RunState.DONE: result.done, RunState.FAILED: result.failed, RunState.INTERRUPTED: result.interrupted,
             RunState.PRUNED: result.pruned}.get(row.state, result.skipped).append(row.name)
        return result
