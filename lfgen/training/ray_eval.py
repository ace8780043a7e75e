"""``lfgen eval EXPERIMENT --ray`` and ``lfgen run --eval --ray``: each evaluation is one Ray task, where the adapter is.

A run trained through Ray (``ray_executor``) keeps its adapter on the node that trained it; the state's
``placed`` event names that node and the path there. Its evaluation task is pinned to that node
(``NodeAffinitySchedulingStrategy``, hard), or goes anywhere when the run trained on shared storage
(``--storage``); a run trained without Ray has its adapter on the driver, so its task is pinned to the
driver's node. On the node the task calls ``lfgen.training.evaluate.evaluate`` on the run's folder (the one
predict config, the one scoring) and sends the eval files home; the driver writes them into its own
``<run>/eval/`` (the scores last, in one rename) and records the evaluation as the local path does
(``begin_recorded`` / ``end_recorded``). A run whose node has left the cluster fails with one line that
names the node and the fix; the other runs are still evaluated. ``RayExecutor.evaluations`` makes the
``RayEvaluations`` the runner (``run --eval --ray``, ``tune --ray`` by an eval metric) and ``lfgen eval --ray`` use.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import EVAL_CONFIG, EVAL_DIR, EVAL_LOG, PREDICT_RESULTS, PREDICTIONS, SCORES
from lfgen.training.evaluate import EvalOptions
from lfgen.training.evaluations import INTERRUPTED, Outcome, begin_recorded, end_recorded
from lfgen.training.ray_cluster import alive_nodes, forwarded_env, home_files, same_dir

SCORES_FILE = f"{EVAL_DIR}/{SCORES}"  # written last: a run that has it is scored
EVAL_FILES = tuple(f"{EVAL_DIR}/{name}" for name in (EVAL_CONFIG, EVAL_LOG, PREDICT_RESULTS, PREDICTIONS)) + (SCORES_FILE,)
# (the config and the log first: what a failed evaluation sends home)
CANCEL_WAIT_S = 10.0  # after ray.cancel, how long an evaluation may take to stop its process before a forced cancel


# --- where a run's evaluation goes (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a run's evaluation runs: its folder there, the node id it is pinned to (None: any node), what to call it."""

    path: str
    node_id: str | None
    node: str


def last_placed(events: list[tuple[str, float, str, str]]) -> dict[str, Any] | None:
    """The node and path the run's last attempt trained at (its ``placed`` event), from the run's state events;
    None when that attempt trained on the driver (no ``placed`` after its ``started``)."""
    placed = None
    for _, _, kind, message in events:
        if kind == "started":
            placed = None
        elif kind == "placed":
            try:
                placed = json.loads(message)
            except ValueError:
                placed = None
    return placed if isinstance(placed, dict) else None


def place(name: str, experiment: str, placed: dict[str, Any] | None, nodes: list[dict[str, Any]], run_dir: Path,
          driver_node: str | None) -> Place:
    """Where run *name*'s evaluation goes, given where it trained (*placed*) and the cluster's live *nodes*.

    Shared storage: any node. Otherwise the node that trained it, by its id, else the one live node at the same
    address (the same machine after its Ray node restarted: the files are where they were). A node that has
    left the cluster is an InputError naming the run, the node and the fix."""
    if placed is None:  # trained without --ray: the adapter is in the driver's own output dir
        return Place(str(run_dir.absolute()), driver_node, "the driver's node")
    path, address = str(placed.get("path") or run_dir.absolute()), str(placed.get("node") or "?")
    if placed.get("shared"):
        return Place(path, None, "any node (shared storage)")
    if any(node.get("NodeID") == placed.get("node_id") for node in nodes):
        return Place(path, placed["node_id"], address)
    same_machine = [node for node in nodes if node.get("NodeManagerAddress") == address]
    if len(same_machine) == 1:
        return Place(path, same_machine[0]["NodeID"], address)
    raise InputError(node_gone(name, experiment, address, str(placed.get("node_id") or "?")))


def node_gone(name: str, experiment: str, address: str, node_id: str) -> str:
    return (f"run {name}: its adapter stayed on Ray node {address} (id {node_id[:12]}), which is no longer in the "
            f"cluster; bring that node back, or train the run again on shared storage so any node can evaluate it: "
            f"lfgen run {experiment} --rerun {name} --ray ADDRESS --storage SHARED_DIR")


# --- the worker side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalTask:
    """What one evaluation task needs on its node."""

    experiment: str
    name: str
    path: str  # the run's folder there
    root: str  # the experiment's root on the driver: relative paths resolve there when it exists on the node
    options: EvalOptions
    env: dict[str, str]  # the driver's forwarded variables (ray_cluster.forwarded_env)


def eval_on_worker(task: EvalTask) -> dict[str, Any]:
    """The Ray task: evaluate the run in its folder on this node; its scores and eval files, or one error line."""
    import ray

    from lfgen.errors import LfgenError, RunError
    from lfgen.training.evaluate import evaluate

    out, root = Path(task.path), Path(task.root)
    if not out.is_dir():
        return {"error": f"run {task.name}: its output dir {out} is not on Ray node "
                         f"{ray.util.get_node_ip_address()} any more; train the run again: lfgen run "
                         f"{task.experiment} --rerun {task.name} --ray ADDRESS"}
    gpus = [int(gpu) for gpu in ray.get_gpu_ids()]  # [] -> CUDA_VISIBLE_DEVICES=""
    try:
        scores = evaluate(out, task.options, name=task.name, gpus=gpus, force=True,
                          root=root if root.is_dir() else out, env=task.env)
    except RunError as exc:  # LlamaFactory ran and failed: its config and log come home beside the message
        return {"error": str(exc), "files": home_files(out, EVAL_FILES[:2])}
    except LfgenError as exc:  # refused before anything ran: the driver's eval/ stays as it is
        return {"error": str(exc)}
    return {"scores": scores, "files": home_files(out, EVAL_FILES)}


def bring_home(run_dir: Path, remote: str, files: dict[str, bytes]) -> bool:
    """Write an evaluation's files into the driver's ``<run>/eval/``: a clean folder, the scores (when it has them)
    last, in one rename. False when there was nothing to copy (none sent, or it evaluated in the driver's folder)."""
    from lfgen.yamlio import write_atomic

    if not files or same_dir(remote, run_dir):
        return False
    eval_dir = run_dir / EVAL_DIR
    if eval_dir.exists():
        shutil.rmtree(eval_dir)  # a forced re-evaluation leaves no stale predictions
    eval_dir.mkdir(parents=True)
    for name, data in files.items():
        if name != SCORES_FILE:
            (run_dir / name).write_bytes(data)
    if SCORES_FILE in files:
        write_atomic(run_dir / SCORES_FILE, files[SCORES_FILE])
    return True


# --- the driver side -------------------------------------------------------------------------------


class RayEvaluations:
    """Evaluations as Ray tasks, all at once, recorded in the experiment's state as they end (the ``Evaluations``
    of lfgen.training.evaluations): a run's evaluation starts when it has trained and holds no slot of the runner's;
    Ray shares the cluster between it and the training tasks."""

    holds_slot = False

    def __init__(self, ray: Any, *, experiment: str, root: Path, options: EvalOptions | None = None,
                 cpus: float = 1.0, gpus: int = 0, address: str | None = None):
        self.ray, self.experiment, self.root, self.options = ray, experiment, Path(root), options or EvalOptions()
        self.address = address  # for describe(); None: a local Ray instance
        self.cpus, self.gpus = cpus, gpus
        self.task = ray.remote(eval_on_worker)
        self.store: Any = None
        self.inflight: dict[Any, tuple[str, Path, Place]] = {}  # task ref -> (run, the driver's run dir, where)

    def describe(self) -> str:
        return (f"Ray at {self.address or 'a local Ray instance'}: each evaluation a task of {self.cpus:g} CPU(s) and "
                f"{self.gpus} GPU(s), on the node that holds its run's adapter")

    @property
    def running(self) -> int:
        return len(self.inflight)

    def start(self, store: Any, name: str, run_dir: Path, gpus: list[int] | None = None, *,
              force: bool = False) -> Outcome | None:
        """Start run *name*'s evaluation task (Ray gives it its GPUs: *gpus* is the runner's slot, unused); None once
        started, else its Outcome (already scored, or failed)."""
        options = self.options
        self.store = store
        skipped = begin_recorded(store, name, run_dir, options, force)
        if skipped is not None:
            return skipped
        try:
            where = place(name, self.experiment, last_placed(store.events(name)), alive_nodes(self.ray), run_dir,
                          self.ray.get_runtime_context().get_node_id())
        except InputError as exc:
            return end_recorded(store, name, error=str(exc))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(where.node_id, soft=False) if where.node_id else "DEFAULT"
        task = EvalTask(self.experiment, name, where.path, str(self.root), options, forwarded_env(dict(os.environ)))
        ref = self.task.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                                scheduling_strategy=strategy).remote(task)
        self.inflight[ref] = (name, run_dir, where)
        return None

    def collect(self, timeout: float = 0.0) -> list[Outcome]:
        """The evaluations that have ended (waiting up to *timeout* for the first), their files home, recorded."""
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        outcomes = []
        for ref in ready:
            name, run_dir, where = self.inflight.pop(ref)
            outcomes.append(end_recorded(self.store, name, **self._result(ref, name, run_dir, where)))
        return outcomes

    def _result(self, ref: Any, name: str, run_dir: Path, where: Place) -> dict[str, Any]:
        exceptions = self.ray.exceptions
        try:
            result = self.ray.get(ref)
        except exceptions.TaskUnschedulableError:  # its node left between the check and the scheduling
            return {"error": node_gone(name, self.experiment, where.node, where.node_id or "?")}
        except exceptions.RayTaskError as exc:  # the task itself raised (lfgen missing on the node ...)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            return {"error": f"run {name}: its Ray evaluation task failed on {where.node}: "
                             f"{lines[-1] if lines else type(exc).__name__}"}
        except exceptions.RayError as exc:  # the worker or its node died, or the task was cancelled
            return {"error": f"run {name}: the Ray worker evaluating it on {where.node} was lost "
                             f"({type(exc).__name__}); run lfgen eval {self.experiment} --ray again"}
        try:
            copied = bring_home(run_dir, where.path, result.get("files", {}))
        except OSError as exc:
            return {"error": f"run {name}: its evaluation could not be written into {run_dir / EVAL_DIR} "
                             f"({exc.strerror or exc}); fix that and run lfgen eval again"}
        if "error" in result:
            log = run_dir / EVAL_DIR / EVAL_LOG
            return {"error": result["error"] + (f" (on {where.node}; its copy here: {log})" if copied and log.is_file()
                                                else "")}
        return {"scores": result["scores"]}

    def interrupt(self) -> None:
        """Ctrl-C: cancel every evaluation still running (each stops its process), recorded as stopped."""
        left = list(self.inflight)
        for force in (False, True):  # not forced: KeyboardInterrupt in evaluate, which stops its process group
            for ref in left:
                self.ray.cancel(ref, force=force)
            if left:
                left = self.ray.wait(left, num_returns=len(left), timeout=CANCEL_WAIT_S)[1]
        for name, _, _ in self.inflight.values():
            end_recorded(self.store, name, error=INTERRUPTED)
        self.inflight.clear()
