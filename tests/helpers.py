"""Helpers the tests share (their fixtures are in conftest.py): the stand-in llamafactory-cli's record, an
experiment of fake-model runs, the runner with a recording reporter, the lfgen CLI as a subprocess, and waits that
poll a condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAND_IN = Path(__file__).parent / "training" / "fake_llamafactory_cli.py"


class Recorder:
    """Collects what the runner reports."""

    def __init__(self):
        self.events: list[tuple] = []

    def plan(self, lines):
        self.events.append(("plan", lines))

    def started(self, name, attempt, gpus, note):
        self.events.append(("started", name, attempt, gpus, note))

    def progress(self, name, progress):
        pass

    def finished(self, name, state, reason, detail):
        self.events.append(("finished", name, state, reason, detail))

    def evaluated(self, outcome):
        self.events.append(("evaluated", outcome.run, outcome.status, outcome.detail))

    def message(self, text):
        self.events.append(("message", text))


def install_stand_in(bin_dir: Path) -> Path:
    """The stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) as an executable in *bin_dir*."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    cli = bin_dir / "llamafactory-cli"
    cli.write_text(f"#!{sys.executable}\n" + STAND_IN.read_text())
    cli.chmod(0o755)
    return cli


def fake_gpus(project: Path, count: int) -> None:
    smi = project / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(count)))
    smi.chmod(0o755)


def modes(monkeypatch, **by_run: str) -> None:
    """What the stand-in does per run (a substring of its output dir, '_' for '-'), e.g. rank_8="oom-above:2"."""
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({k.replace("_", "-"): v for k, v in by_run.items()}))


def calls(project: Path) -> list[dict]:
    """Every start (and finish) the stand-in recorded, in order."""
    path = project / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def experiment(runs=("8", "16"), name="exp", **options):
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments.make import make_sweep

    values = {"model": "fake/model", "gpu": "A800", **options}
    return make_sweep("rank", list(runs), options=BuildOptions.parse(**values), name=name)


def run(name="exp", **kwargs):
    """The runner on experiment *name* with a Recorder; run()'s flags and the Runner's options both as kwargs."""
    from lfgen.training.runner import Runner
    from lfgen.training.target import resolve

    recorder = Recorder()
    flags = {k: kwargs.pop(k) for k in ("retry_failed", "rerun", "dry_run", "retry_missing", "source") if k in kwargs}
    summary = Runner(resolve(name), recorder, **kwargs).run(**flags)
    return summary, recorder


def rows(name="exp"):
    from lfgen.runs.store import Store
    from lfgen.training.target import resolve

    store = Store(resolve(name).state_path)
    try:
        return {row.name: row for row in store.runs()}
    finally:
        store.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "the condition") -> Any:
    """Poll *predicate* until it is true (returned), failing after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def start_lfgen(project: Path, *args: str, command: str = "run") -> subprocess.Popen:
    """``lfgen <command> ARGS`` (``--quiet`` for run) in its own process, as a user starts it."""
    quiet = ["--quiet"] if command == "run" else []
    return subprocess.Popen([sys.executable, "-m", "lfgen", command, *args, *quiet], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def running(name: str, experiment_name: str = "exp") -> bool:
    """Run *name* is recorded running (its process started): a signal sent now reaches a run lfgen knows of."""
    from lfgen.runs.store import read_rows
    from lfgen.training.target import resolve

    row = read_rows(resolve(experiment_name).state_path).get(name)
    return row is not None and row.state == "running"


def event_kinds(name: str, experiment_name: str = "exp") -> list[str]:
    """The kinds of run *name*'s events so far (started, placed, done ...), read without writing."""
    import sqlite3

    from lfgen.training.target import resolve

    path = resolve(experiment_name).state_path
    if not path.is_file():
        return []
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as db:
        return [kind for (kind,) in db.execute("SELECT kind FROM events WHERE run=? ORDER BY id", (name,))]


CALIBRATION_MODEL = "Qwen/Qwen2.5-7B-Instruct"


def measured_run_dir(tmp_path: Path, name: str, measured: list[float], gpu: str = "A800", rank: int = 16):
    """A finished run of the lightweight preset on CALIBRATION_MODEL whose trainer_log.jsonl holds the *measured*
    peaks (GiB) as LlamaFactory logs them with RECORD_VRAM=1 (a CPU machine measures none): lfgen calibrate's
    input. Returns (its output dir, the Build it was made from)."""
    from lfgen import BuildOptions, build, render_build

    out = tmp_path / "outputs" / name
    out.mkdir(parents=True)
    result = build("lightweight", BuildOptions.parse(model=CALIBRATION_MODEL, gpu=gpu, rank=rank))
    (out / "lfgen_run.yaml").write_text(render_build(result))  # carries the recipe with the GPU
    lines = [{"current_steps": i + 1, "total_steps": 9, "loss": 1.0, "vram_allocated": v * 0.9, "vram_reserved": v}
             for i, v in enumerate(measured)]
    (out / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out, result


# --- real LlamaFactory: the lfgen CLI as a subprocess --------------------------------------------------


def e2e_env() -> dict[str, str]:
    """Offline, this venv's llamafactory-cli first on PATH."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def lfgen(project: Path, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=project, capture_output=True, text=True,
                          env=e2e_env(), input=stdin, timeout=timeout)


def processes_of(project: Path, folder: str) -> list[int]:
    """Live processes of this project (their cwd) whose command line names *folder* (a run's output dir relative
    to the project): the guard names its log by absolute path, llamafactory-cli its config relative to the
    project. Zombies have no command line."""
    found, project = [], project.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if f"{folder}/".encode() in cmdline and (cwd == str(project) or str(project).encode() in cmdline):
            found.append(int(entry.name))
    return found


def ray_run(address, name="exp", **kwargs):
    """The runner on experiment *name* through a RayExecutor at *address*, closed after."""
    from lfgen.training.ray_executor import RayExecutor

    executor = RayExecutor(address)
    try:
        return run(name, executor=executor, **kwargs)
    finally:
        executor.close()


def bad_data_folder(tmp, runner=None, cli=None):
    """data/ with one registered dataset per way a data file or its registration can be malformed."""
    data = tmp / "data"
    data.mkdir()
    ok = json.dumps([{"instruction": "a", "output": "b"}])
    files = {"ok.json": ok, "empty.json": "[]", "blank.jsonl": "", "header.csv": "instruction,output\n",
             "strings.json": json.dumps({"instruction": "abc", "output": "def"}),
             "number.json": json.dumps({"instruction": 5}),
             "uneven.json": json.dumps({"instruction": ["a", "b"], "output": ["c"]}),
             "deep.json": "[" * 200_000 + "]" * 200_000,
             "deep.jsonl": "[" * 200_000 + "]" * 200_000 + "\n",
             "digits.json": '[{"instruction": "a", "output": ' + "9" * 5000 + "}]",
             "badline.jsonl": '{"instruction": "a", "output": "b"}\n{"instruction": \n',
             "garbage.parquet": "not parquet at all\n", "empty.parquet": "", "folder/notes.txt": "no data here\n"}
    for name, text in files.items():
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_text(text, encoding="utf-8")
    (data / "latin1.json").write_bytes('[{"instruction": "caf\u00e9", "output": "b"}]'.encode("latin-1"))
    (data / "latin1.csv").write_bytes("instruction,output\ncaf\u00e9,b\n".encode("latin-1"))
    os.mkfifo(data / "fifo.json")
    os.symlink("/dev/zero", data / "zero.json")
    entries = {stem: {"file_name": name} for stem, name in (
        ("ok", "ok.json"), ("empty", "empty.json"), ("blank", "blank.jsonl"), ("header", "header.csv"), ("strings", "strings.json"),
        ("number", "number.json"), ("uneven", "uneven.json"), ("deep", "deep.json"), ("deep_line", "deep.jsonl"),
        ("digits", "digits.json"), ("badline", "badline.jsonl"), ("garbage", "garbage.parquet"),
        ("empty_parquet", "empty.parquet"), ("latin1", "latin1.json"), ("latin1_csv", "latin1.csv"),
        ("fifo", "fifo.json"), ("zero", "zero.json"), ("folder", "folder"), ("long_name", f"{'x' * 300}.json"))}
    entries.update({
        "columns_str": {"file_name": "ok.json", "columns": "prompt"},
        "columns_list": {"file_name": "ok.json", "columns": {"prompt": ["instruction"]}},
        "columns_int": {"file_name": "ok.json", "columns": {"prompt": 5}},
        "tags_list": {"file_name": "ok.json", "formatting": "sharegpt", "tags": ["from", "value"]},
        "tags_nested": {"file_name": "ok.json", "formatting": "sharegpt", "tags": {"role_tag": {"x": 1}}},
        "formatting_int": {"file_name": "ok.json", "formatting": 5}})
    (data / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
