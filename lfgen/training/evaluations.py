"""An experiment's evaluations: each run's lfgen eval recorded in its state (the ``evaluations`` table), started
where the executor says, polled like a training run.

``Evaluations`` is what an executor hands the runner (``lfgen run --eval``, ``lfgen tune`` by an eval metric) and
``lfgen eval EXPERIMENT``: ``start`` a run's evaluation, ``collect`` the ones that have ended (each recorded done
or failed; the training's state is never touched), ``interrupt`` them all on Ctrl-C (each stopped and recorded so;
the next lfgen eval evaluates it again). ``LocalEvaluations`` runs LlamaFactory's predict as a child of this
process in the GPU slot of the run it evaluates; ``lfgen.training.ray_eval.RayEvaluations`` as a Ray task on the
node that holds the run's adapter. Both record through ``begin_recorded`` and ``end_recorded``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from lfgen.errors import LfgenError
from lfgen.layout import EVAL_DIR, RESULTS_FILE, SCORES
from lfgen.runs.states import EvalState, RunState
from lfgen.runs.store import Store
from lfgen.training.evaluate import EvalOptions, Evaluation, read_json, is_scored, start


@dataclass
class Outcome:
    """What happened to one run: scored, already scored (skipped), failed, or not finished (not evaluated)."""

    run: str
    status: str
    scores: dict[str, Any] | None = None
    detail: str | None = None


INTERRUPTED = "stopped with Ctrl-C; lfgen eval evaluates it again"  # an evaluation's detail after Ctrl-C


class Evaluations(Protocol):
    """Where an executor evaluates runs; the one wiring the runner and lfgen eval share, here or on Ray."""

    holds_slot: bool  # an evaluation runs in the GPU slot of the run it evaluates (else in a place of its own)

    @property
    def running(self) -> int: ...  # evaluations started and not yet collected
    def describe(self) -> str | None: ...  # one line saying where they run (None: here, nothing to say)
    def start(self, store: Store, name: str, run_dir: Path, gpus: list[int] | None = None, *,
              force: bool = False) -> Outcome | None: ...  # None: started; else its outcome (skipped, failed)
    def collect(self, timeout: float = 0.0) -> list[Outcome]: ...  # the ended ones, recorded (waits for the first)
    def interrupt(self) -> None: ...  # Ctrl-C: stop every one still running, recorded as stopped


def begin_recorded(store: Store, name: str, run_dir: Path, options: EvalOptions, force: bool = False) -> Outcome | None:
    """The first half of a recorded evaluation: the Outcome "skipped" for a run already scored (unless *force*),
    else None once its evaluation is recorded as running."""
    if is_scored(run_dir) and not force:
        if (store.evaluation(name) or ("",))[0] != EvalState.DONE:
            store.set_evaluation(name, EvalState.RUNNING, options=asdict(options))  # scored, then killed before
            store.set_evaluation(name, EvalState.DONE, detail="scores found on disk")
        return Outcome(name, "skipped", read_json(run_dir / EVAL_DIR / SCORES), "already scored; --force re-scores it")
    store.set_evaluation(name, EvalState.RUNNING, options=asdict(options))
    return None


def end_recorded(store: Store, name: str, scores: dict[str, Any] | None = None, error: str | None = None) -> Outcome:
    """The second half: the evaluation recorded as done (its *scores*) or failed (*error*); the training's
    state is never touched."""
    if error is not None or scores is None:
        store.set_evaluation(name, EvalState.FAILED, detail=error)
        return Outcome(name, "failed", detail=error)
    store.set_evaluation(name, EvalState.DONE, detail=f"{scores['samples_scored']} samples scored")
    return Outcome(name, "scored", scores)


class LocalEvaluations:
    """Evaluations on this machine: LlamaFactory's predict a child process (its own process group) on the GPUs of
    the run it evaluates, polled, never waited for, so the runner's other runs go on being watched."""

    holds_slot = True

    def __init__(self, options: EvalOptions | None = None):
        self.options = options or EvalOptions()
        self.options.check()
        self.store: Store | None = None
        self.inflight: dict[str, Evaluation] = {}

    @property
    def running(self) -> int:
        return len(self.inflight)

    def describe(self) -> str | None:
        return None

    def start(self, store: Store, name: str, run_dir: Path, gpus: list[int] | None = None, *,
              force: bool = False) -> Outcome | None:
        self.store = store
        skipped = begin_recorded(store, name, run_dir, self.options, force)
        if skipped is not None:
            return skipped
        try:
            self.inflight[name] = start(run_dir, self.options, name=name, gpus=gpus)
        except LfgenError as exc:  # it cannot be evaluated (not finished, no held-out data, no llamafactory-cli)
            return end_recorded(store, name, error=str(exc))
        return None

    def collect(self, timeout: float = 0.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [name for name, evaluation in self.inflight.items() if evaluation.ended()]
            left = deadline - time.monotonic()
            if ended or not self.inflight or left <= 0:
                break
            if len(self.inflight) == 1:
                next(iter(self.inflight.values())).wait(min(left, 0.2))
            else:
                time.sleep(min(left, 0.05))
        outcomes = []
        for name in ended:
            evaluation = self.inflight.pop(name)
            try:
                outcomes.append(end_recorded(self.store, name, evaluation.finish()))
            except LfgenError as exc:
                outcomes.append(end_recorded(self.store, name, error=str(exc)))
        return outcomes

    def interrupt(self) -> None:
        for name, evaluation in list(self.inflight.items()):
            evaluation.stop()
            end_recorded(self.store, name, error=INTERRUPTED)
        self.inflight.clear()


def evaluate_experiment(target: Any, evaluations: Evaluations, *, force: bool = False,
                        progress: Any = None) -> list[Outcome]:
    """``lfgen eval EXPERIMENT``: evaluate every finished run of an experiment (a ``lfgen.training.target.Target``)
    under the experiment's lock: one at a time in a slot here, all at once on Ray; resumable (a killed lfgen eval
    goes on where it stopped). *progress* (optional) is called with each Outcome as it happens."""
    from lfgen.runs.lock import Lock
    from lfgen.runs.store import read_rows

    outcomes: list[Outcome] = []

    def note(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)

    width = 1 if evaluations.holds_slot else len(target.runs)
    # the runner's own lock: an experiment is trained or evaluated by one lfgen at a time (both write its state)
    with Lock(target.lock_path, f"experiment {target.name}", holder="lfgen eval", verb="trained or evaluated"):
        states = {name: row.state for name, row in read_rows(target.state_path).items()}
        store = Store(target.state_path)
        try:
            for name, _config, output_dir in target.runs:
                run_dir = target.root / output_dir
                state = states.get(name)
                if state not in (None, RunState.DONE) or not (run_dir / RESULTS_FILE).is_file():
                    note(Outcome(name, "not finished", detail=f"{state or 'not trained'}; finish it with lfgen run"))
                    continue
                while evaluations.running >= width:
                    for outcome in evaluations.collect(timeout=1.0):
                        note(outcome)
                if (outcome := evaluations.start(store, name, run_dir, force=force)) is not None:  # None: started
                    note(outcome)
            while evaluations.running:
                for outcome in evaluations.collect(timeout=1.0):
                    note(outcome)
        except KeyboardInterrupt:
            evaluations.interrupt()  # every evaluation stopped and recorded as such
            raise
        finally:
            store.close()
    order = [name for name, _, _ in target.runs]
    return sorted(outcomes, key=lambda outcome: order.index(outcome.run))
