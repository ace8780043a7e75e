"""``lfgen run --ray``: each run of an experiment is one Ray task; the driver keeps the state and decides.

The task (``train_on_worker``) runs on whichever node has the run's resources: it writes the run's
config there, starts ``llamafactory-cli train`` through lfgen's guard (the whole tree dies with the task,
``PR_SET_PDEATHSIG``), runs the ``RunWatcher`` beside it and streams what it reads (progress, NaN, the
console's new lines) to the driver as the task's generator returns. When the process ends it sends the
run's small files home (trainer_log.jsonl, trainer_state.json, *_results.json, lfgen's own files, the
console log); adapters and checkpoints stay where the run wrote them, and the driver records the node
and the path. The driver (``RayExecutor``, ``RayHandle``) decides everything: OOM retry, NaN stop,
Ctrl-C. A stop request reaches the task through a small actor (``_Control``), so a stopped run's files
still come home; ``ray.cancel`` is the fallback, and Ray's ownership ends the tasks when the driver dies.

``import ray`` happens only in the Ray modules (here and ``ray_eval``, lfgen eval's tasks), and only when
``--ray`` is given.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import (
    CONSOLE_LOG,
    ENV_MANIFEST,
    LLAMABOARD_CONFIG,
    MARKER,
    RESULT_FILES,
    RESULTS_FILE,
    RUN_CONFIG,
    TRAINER_LOG,
    TRAINER_STATE,
)
from lfgen.training.executor import RunSpec, Slot
from lfgen.training.ray_cluster import alive_nodes, check_cpus, connect, fit, forwarded_env, home_files, same_dir
from lfgen.training.watch import Progress

WORKDIR_ENV = "LFGEN_RAY_WORKDIR"  # a worker's own folder for runs without --storage
HOME_FILES = (TRAINER_LOG, TRAINER_STATE, RESULTS_FILE, *RESULT_FILES, RUN_CONFIG, CONSOLE_LOG, ENV_MANIFEST,
              LLAMABOARD_CONFIG, "training_loss.png", "training_eval_loss.png")
POLL_S = 0.3
STOP_WAIT_S = 30.0  # after a stop request, how long the files may take to come home before ray.cancel
CONTROL_TIMEOUT_S = 10.0  # a task's question to the control actor


# --- the worker side ------------------------------------------------------------------------------

def worker_dir(spec: RunSpec, storage: str | None) -> Path:
    """Where the run trains on the worker: --storage/<experiment>/<run>, else the worker's own folder."""
    base = Path(storage) if storage else Path(os.environ.get(WORKDIR_ENV) or Path.home() / ".cache/lfgen/ray-runs")
    return (base / spec.experiment / spec.name).absolute()


def _prepare_remote(spec: RunSpec, out: Path) -> dict[str, Any]:
    """Clear or resume the worker's output dir as the driver said; the config with its output_dir there."""
    from lfgen.training import rundir

    config = dict(spec.config)
    config.pop("resume_from_checkpoint", None)  # the driver's copy holds no checkpoints
    if out.is_dir() and (out / MARKER).exists():
        resume = None if spec.fresh else rundir.resume_point(out)[0]
        if resume is None:
            rundir.clear(out)
        else:
            config["resume_from_checkpoint"] = str(out / resume.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    config["output_dir"] = str(out)
    return config


def _snapshot(progress: Progress) -> dict[str, Any]:
    return {k: v for k, v in asdict(progress).items() if k != "tail"}


def train_on_worker(spec: RunSpec, storage: str | None, control: Any):
    """The Ray task (a generator): train one attempt on this node, streaming events to the driver."""
    import ray

    from lfgen.builder.render import render
    from lfgen import launch
    from lfgen.training.watch import RunWatcher

    out = worker_dir(spec, storage)
    config = _prepare_remote(spec, out)
    (out / RUN_CONFIG).write_text(render(config, header=spec.header), encoding="utf-8")
    with (out / CONSOLE_LOG).open("a", encoding="utf-8") as log:
        log.write(spec.banner)
    gpus = [int(g) for g in ray.get_gpu_ids()]
    env = launch.train_env({**os.environ, **spec.extra.get("env", {})}, gpus)  # [] -> CUDA_VISIBLE_DEVICES=""
    argv = launch.train_argv(launch.find_cli(env.get("PATH")), out / RUN_CONFIG)
    cwd = spec.cwd if spec.cwd.is_dir() else out
    watcher = RunWatcher(out, out / CONSOLE_LOG)
    watcher.skip_existing()
    child = launch.spawn_guarded(argv, cwd=cwd, env=env, log_path=out / CONSOLE_LOG)
    yield {"placed": {"node": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
                      "path": str(out), "shared": storage is not None, "gpus": gpus, "pid": child.pid}}
    try:
        last, asked = None, time.monotonic()
        while True:
            rc = child.proc.poll()
            progress = watcher.poll()
            lines = list(progress.tail)
            progress.tail.clear()
            event = _snapshot(progress)
            if event != last or lines:
                yield {"progress": event, "lines": lines}
                last = event
            if rc is not None:
                break
            if time.monotonic() - asked > 1.0:
                asked = time.monotonic()
                if _stop_requested(ray, control, spec.name):
                    launch.stop_group(child.pid)
                    child.proc.wait()
                    continue
            time.sleep(POLL_S)
        watcher.poll()
        yield {"end": {"rc": rc, "tail": child.tail(), "files": home_files(out, HOME_FILES)}}
    finally:  # cancelled (Ctrl-C of the driver, ray.cancel): the guard stops the run's whole tree
        if child.proc.poll() is None:
            launch.stop_group(child.pid)
            child.proc.wait()


def _stop_requested(ray: Any, control: Any, name: str) -> bool:
    """Whether the driver asked this run to stop; an unreachable control actor is no request (the run trains
    on: a driver that is gone ends its tasks through Ray's ownership, not through this actor)."""
    try:
        return bool(ray.get(control.stopping.remote(name), timeout=CONTROL_TIMEOUT_S))
    except ray.exceptions.RayError:  # ActorUnavailableError, ActorDiedError, GetTimeoutError
        return False


class _Control:
    """The driver's stop requests, which the tasks read (a Ray actor)."""

    def __init__(self) -> None:
        self.stop: set[str] = set()

    def request(self, name: str) -> None:
        self.stop.add(name)

    def clear(self, name: str) -> None:
        self.stop.discard(name)

    def stopping(self, name: str) -> bool:
        return name in self.stop


# --- the driver side ------------------------------------------------------------------------------

def _control_actor(ray: Any) -> Any:
    """The stop-request actor, on the driver's own node: anywhere else, that node's death would take every
    run's stop channel with it (and, before _stop_requested, crash the runs on the nodes still alive)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(_Control).options(num_cpus=0, scheduling_strategy=here).remote()


class RayHandle:
    """The driver's view of one run's task: the events it streamed, its end, its files written home."""

    def __init__(self, ray: Any, generator: Any, control: Any, spec: RunSpec):
        self.ray, self.generator, self.control, self.spec = ray, generator, control, spec
        self.pid, self.placed, self.log_path = None, None, spec.output_dir / CONSOLE_LOG
        self.progress = Progress()
        self._rc: int | None = None
        self._tail: list[str] = []
        self.lost: str | None = None  # the worker or its node died (not the run's fault)

    def poll(self) -> Progress:
        ray = self.ray
        while self._rc is None and ray.wait([self.generator], timeout=0)[0]:
            try:
                self._apply(ray.get(next(self.generator)))
            except StopIteration:
                self._end(1, ["lfgen: the Ray task ended without saying how the run went"])
            except ray.exceptions.RayTaskError as exc:  # the task raised (llamafactory-cli missing on the node ...)
                self._end(1, [line for line in str(exc).splitlines() if line.strip()][-20:])
            except ray.exceptions.RayError as exc:  # the worker, its node or the task was lost or cancelled
                self.lost = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self._end(1, [f"lfgen: the Ray worker running this run was lost ({self.lost})"])
        return self.progress

    def _apply(self, event: dict[str, Any]) -> None:
        if "placed" in event:
            self.placed = event["placed"]
        if "progress" in event:
            for key, value in event["progress"].items():
                setattr(self.progress, key, value)
        if event.get("lines"):
            self.progress.tail.extend(event["lines"])
            try:  # the console, live on the driver too; replaced by the worker's whole log at the end
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write("".join(line + "\n" for line in event["lines"]))
            except OSError:
                pass
        if "end" in event:
            self._bring_home(event["end"]["files"])
            self._end(event["end"]["rc"], event["end"]["tail"])

    def _bring_home(self, files: dict[str, bytes]) -> None:
        home = self.spec.output_dir
        home.mkdir(parents=True, exist_ok=True)
        if self.placed and same_dir(self.placed["path"], home):
            return  # --storage is the driver's own output dir: the files are already here
        for name, data in files.items():
            (home / name).write_bytes(data)

    def _end(self, rc: int, tail: list[str]) -> None:
        self._rc, self._tail = rc, tail

    def returncode(self) -> int | None:
        return self._rc

    def tail(self) -> list[str]:
        return self._tail

    def wait(self, timeout: float) -> None:
        if self._rc is None:
            self.ray.wait([self.generator], timeout=timeout)

    def stop(self) -> None:
        """Ask the task to stop its run (its files still come home); cancel it when it does not answer."""
        if self._rc is None:
            self.control.request.remote(self.spec.name)
        for force, wait in ((None, STOP_WAIT_S), (False, 10.0), (True, 10.0)):
            if force is not None and self._rc is None:
                self.ray.cancel(self.generator, force=force)
            deadline = time.monotonic() + wait
            while self._rc is None and time.monotonic() < deadline:
                self.poll()
                self.wait(0.2)
        if self._rc is None:
            self._end(128 + 15, ["lfgen: the Ray task did not stop"])
        self.control.clear.remote(self.spec.name)


class RayExecutor:
    """Runs an experiment's runs as Ray tasks on the cluster at *address* (``auto``: RAY_ADDRESS, else local)."""

    def __init__(self, address: str | None = "auto", *, gpus_per_run: int = 1, cpus_per_run: float = 1.0,
                 storage: str | None = None):
        check_cpus(cpus_per_run)
        ray, self.address = connect(address)
        self.ray = ray
        self.cpus, self.storage = cpus_per_run, str(Path(storage).absolute()) if storage else None
        try:
            self.gpus, self.parallel = fit([node["Resources"] for node in alive_nodes(ray)], cpus_per_run, gpus_per_run)
            self.control = _control_actor(ray)
        except InputError:
            self.close()
            raise
        self.task = ray.remote(train_on_worker)

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return (f"Ray at {where}: {self.parallel} run(s) at once, each {self.cpus:g} CPU(s) and "
                f"{self.gpus} GPU(s); outputs on the workers in {self.storage or '$' + WORKDIR_ENV + ' or ~/.cache'}")

    def slots(self, gpus: list[int] | None, per_run: int) -> list[Slot]:
        if gpus is not None:
            raise InputError("--gpus: not with --ray (Ray gives each run its GPUs; use --gpus-per-run)")
        return [None] * self.parallel

    def start(self, spec: RunSpec) -> RayHandle:
        spec.extra["env"] = forwarded_env(dict(os.environ))
        self.control.clear.remote(spec.name)
        # No node is named: Ray puts the task on any live node with the CPUs and GPUs free, so a requeued run
        # (lfgen.training.requeue) lands on a node that is alive without lfgen choosing one.
        generator = self.task.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                                      num_returns="streaming").remote(spec, self.storage, self.control)
        return RayHandle(self.ray, generator, self.control, spec)

    def wait(self, handles: list[Any], timeout: float) -> None:
        """Sleep up to *timeout*, waking when a run's task streams an event (progress, its end)."""
        waiting = [handle.generator for handle in handles if handle.returncode() is None]
        if waiting:
            self.ray.wait(waiting, num_returns=1, timeout=timeout)

    def evaluations(self, experiment: str, root: Path, options: Any) -> Any:
        """Each evaluation a Ray task on the node that holds its run's adapter (lfgen.training.ray_eval)."""
        from lfgen.training.ray_eval import RayEvaluations

        return RayEvaluations(self.ray, experiment=experiment, root=root, options=options, cpus=self.cpus,
                              gpus=self.gpus, address=self.address)

    def close(self) -> None:
        self.ray.shutdown()
