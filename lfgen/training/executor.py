"""Where a run's process lives: the runner starts, polls and stops every run through an executor, and evaluates a
run that has trained through the same executor's evaluations.

``LocalExecutor`` is lfgen's own machine: the guarded ``llamafactory-cli`` child (``launch.spawn_guarded``) with a
``RunWatcher`` beside it, in the GPU slots --gpus makes, and each evaluation a child in its run's slot
(lfgen.training.evaluations). ``lfgen.training.ray_executor.RayExecutor`` puts each run, and each evaluation, in a
Ray task instead. The protocols below are everything the runner, lfgen tune and lfgen eval use of one: a new place
to run (SLURM, Kubernetes jobs) is one module that implements them. The runner alone keeps the state and decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lfgen import launch
from lfgen.layout import CONSOLE_LOG
from lfgen.training.slots import gpu_slots, wait_children
from lfgen.training.watch import Progress, RunWatcher

if TYPE_CHECKING:
    from lfgen.training.evaluate import EvalOptions
    from lfgen.training.evaluations import Evaluations

Slot = list[int] | None  # the GPUs one run gets (None: whatever it sees, or whatever its Ray task was given)


@dataclass
class RunSpec:
    """Everything one attempt of a run needs, wherever it trains."""

    experiment: str
    name: str
    attempt: int
    cwd: Path  # where its relative paths (model, dataset) resolve
    output_dir: Path  # the driver's output dir (absolute): where its results end up
    config: dict[str, Any]  # what it trains with (written as lfgen_run.yaml)
    header: list[str]  # the comment lines above it
    banner: str  # the attempt's first line in the console log
    env: dict[str, str]  # the child's environment (launch.train_env)
    argv: list[str]  # the local command (launch.train_argv); a remote executor builds its own
    fresh: bool = True  # False: resume from the newest whole checkpoint where it trains
    gpus: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RunHandle(Protocol):
    """One started attempt, as the runner sees it."""

    pid: int | None  # the local process group lfgen may stop after a crash (None: not on this machine)
    log_path: Path  # the console log on this machine (a remote run's is copied home when it ends)
    placed: dict[str, Any] | None  # where a remote run trains (node, path, GPUs); None until known or local
    lost: str | None  # why its worker or node was lost (not the run's fault: lfgen.training.requeue); None here

    def poll(self) -> Progress: ...
    def returncode(self) -> int | None: ...
    def stop(self) -> None: ...  # stop at once and wait until it has ended
    def tail(self) -> list[str]: ...  # its last console lines, once it has ended
    def wait(self, timeout: float) -> None: ...  # sleep up to timeout, waking early when it ends


class Executor(Protocol):
    """Where runs train and are evaluated."""

    def describe(self) -> str | None: ...  # one line saying where runs go (None: here, nothing to say)
    def slots(self, gpus: list[int] | None, per_run: int) -> list[Slot]: ...  # one per run that may train at once
    def start(self, spec: RunSpec) -> RunHandle: ...
    def wait(self, handles: list[RunHandle], timeout: float) -> None: ...  # sleep, waking when one of them ends
    def evaluations(self, experiment: str, root: Path, options: EvalOptions) -> Evaluations: ...
    def close(self) -> None: ...  # let go of what it holds (a Ray connection); nothing runs after


class LocalHandle:
    def __init__(self, child: launch.Child, watcher: RunWatcher):
        self.child, self.watcher = child, watcher
        self.pid, self.log_path, self.placed = child.pid, child.log_path, None
        self.lost: str | None = None  # a local child is never lost: its end is its own

    def poll(self) -> Progress:
        return self.watcher.poll()

    def returncode(self) -> int | None:
        return self.child.proc.poll()

    def stop(self) -> None:
        launch.stop_group(self.child.pid)  # the guard stops the run's whole tree
        self.child.proc.wait()
        self.child.tail()

    def tail(self) -> list[str]:
        return self.child.tail()

    def wait(self, timeout: float) -> None:
        try:
            self.child.proc.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - TimeoutExpired: the run goes on
            pass


class LocalExecutor:
    """Runs on this machine, in the GPU slots --gpus and --gpus-per-run make."""

    def describe(self) -> str | None:
        return None

    def slots(self, gpus: list[int] | None, per_run: int) -> list[Slot]:
        return gpu_slots(gpus, per_run)

    def wait(self, handles: list[RunHandle], timeout: float) -> None:
        wait_children([handle.child for handle in handles], timeout)

    def evaluations(self, experiment: str, root: Path, options: EvalOptions) -> Evaluations:
        from lfgen.training.evaluations import LocalEvaluations

        return LocalEvaluations(options)

    def close(self) -> None:
        pass

    def start(self, spec: RunSpec) -> LocalHandle:
        log = spec.output_dir / CONSOLE_LOG
        with log.open("a", encoding="utf-8") as handle:
            handle.write(spec.banner)
        watcher = RunWatcher(spec.output_dir, log)
        watcher.skip_existing()  # a resumed run appends to the same files
        return LocalHandle(launch.spawn_guarded(spec.argv, cwd=spec.cwd, env=spec.env, log_path=log), watcher)
