"""One attempt of a run: its output dir made ready, its config and environment written, its process started.

- ``prepare``: a fresh start clears the output dir (all or nothing, lfgen.training.rundir); a resume names the
  newest whole checkpoint in ``resume_from_checkpoint`` (broken newer ones set aside, and said); a dir lfgen did not
  make, or one holding another config's finished results (without --force), is a ``ConfigProblem``.
- ``start``: writes ``lfgen_run.yaml`` (the config it really trains with, rooted, with its recipe line) and
  ``lfgen_env.json``, and starts the run through the executor (here, or a Ray task).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen import launch
from lfgen.layout import CONSOLE_LOG, MARKER, RECIPE_PREFIX, ROOT_PREFIX, RUN_CONFIG, header_value
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow, Store
from lfgen.training import outputs, rundir
from lfgen.training.environment import write_manifest
from lfgen.training.executor import Executor, RunHandle, RunSpec
from lfgen.training.target import Target


class ConfigProblem(Exception):
    """The run cannot start as configured (its output dir); it fails with reason ``config``."""


def fresh(row: RunRow) -> bool:
    """The run starts afresh (a new run, a rerun, an OOM retry); otherwise it resumes from a checkpoint."""
    return row.reason in ("fresh", "oom-retry") or row.state is RunState.PENDING


def prepare(target: Target, row: RunRow, store: Store, say: Callable[[str], None], *,
            force: bool) -> tuple[Path, dict[str, Any], str]:
    """The run's output dir ready for this attempt; (output dir, the config to train with, the config's text)."""
    from lfgen.yamlio import parse_config, read_text

    root = target.root
    text = read_text(root / row.config, "config file")
    config = parse_config(text, str(root / row.config))
    output_dir = root / row.output_dir
    start_afresh = fresh(row)
    if output_dir.exists() and any(p.name not in (CONSOLE_LOG, MARKER) for p in output_dir.iterdir()):
        if not (output_dir / MARKER).exists():
            raise ConfigProblem(f"output_dir {row.output_dir} exists and lfgen did not make it; move it away "
                                "or give the run another output_dir (LlamaFactory would resume or refuse there)")
        foreign = outputs.foreign_results(output_dir, config, row.output_dir, row.config)
        if foreign and not force:
            raise ConfigProblem(foreign)
        start_afresh = start_afresh or bool(foreign)  # --force: never resume another config's checkpoints
        resume = None if start_afresh else _resume_point(row, output_dir, store, say)
        if resume is None:  # LlamaFactory refuses weights without a checkpoint to resume
            leftover = rundir.clear(output_dir)
            if leftover:
                say(f"{row.name}: could not remove all of {leftover}; remove it by hand")
        else:
            config["resume_from_checkpoint"] = str(Path(row.output_dir) / resume.name)  # said, not guessed
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MARKER).touch()
    adjusted = json.loads(row.detail) if row.reason == "oom-retry" and row.detail else {}
    config.update(adjusted.get("config", {}))
    return output_dir, config, text


def _resume_point(row: RunRow, output_dir: Path, store: Store, say: Callable[[str], None]) -> Path | None:
    """The newest whole checkpoint to resume from; broken newer ones are set aside, and said so."""
    resume, notes = rundir.resume_point(output_dir)
    for note in notes:
        after = f"resuming from {resume.name}" if resume else "no whole checkpoint is left; starting afresh"
        store.event(row.name, "broken-checkpoint", f"{note}; {after}")
        say(f"{row.name}: {note}; {after}")
    return resume


@dataclass
class Started:
    """An attempt that is under way: its handle and what it was started with."""

    handle: RunHandle
    argv: list[str]
    env: dict[str, str]
    number: int  # the attempt's number (1 for a run's first)
    note: str  # how it differs from the run's config (an OOM retry's batch), "" when it does not

    def command(self, cwd: Path) -> dict[str, Any]:
        """What the state records of the attempt: the argv, where it ran, the environment lfgen set."""
        return {"argv": self.argv, "cwd": str(cwd),
                "env": {k: self.env[k] for k in ("CUDA_VISIBLE_DEVICES", "FORCE_TORCHRUN", "NPROC_PER_NODE",
                                                 "RECORD_VRAM") if k in self.env}}


def start(target: Target, row: RunRow, slot: list[int] | None, output_dir: Path, config: dict[str, Any], text: str,
          executor: Executor, command: list[str]) -> Started:
    """Write lfgen_run.yaml and lfgen_env.json, then start the run through the executor."""
    from lfgen.builder.render import render

    name = row.name
    note = row.reason == "oom-retry" and (
        f"after OOM: micro-batch {config.get('per_device_train_batch_size')} x accumulation "
        f"{config.get('gradient_accumulation_steps')}") or ""
    header = [f"The config lfgen ran for run {name} of {target.name} (from {row.config})",
              f"{ROOT_PREFIX}{target.root}"]
    recipe = header_value(text, RECIPE_PREFIX)
    if recipe:  # the GPU and options it was built for: lfgen calibrate reads them
        header.append(RECIPE_PREFIX + recipe)
    if note:
        header.append(note)
    (output_dir / RUN_CONFIG).write_text(render(config, header=header), encoding="utf-8")
    cli = launch.find_cli()
    argv = launch.train_argv(cli, Path(row.output_dir) / RUN_CONFIG)
    env = launch.train_env(dict(os.environ), slot)
    number = row.attempts + 1
    banner = (f"\n===== lfgen: attempt {number} of run {name}: {shlex.join(argv)}"
              f"{' (' + note + ')' if note else ''} =====\n")
    _record_environment(output_dir, name, number, slot, command)
    handle = executor.start(RunSpec(
        experiment=target.name, name=name, attempt=number, cwd=target.root, output_dir=output_dir,
        config=config, header=header, banner=banner, env=env, argv=argv, fresh=fresh(row), gpus=slot))
    return Started(handle, argv, env, number, note)


def _record_environment(output_dir: Path, name: str, attempt: int, slot: list[int] | None,
                        command: list[str]) -> None:
    from lfgen.catalogs.llamafactory import find_python
    from lfgen.training.environment import environment

    write_manifest(output_dir, environment(python=find_python(), gpus=launch.gpu_names(slot), command=command,
                                           run=name, attempt=attempt))
