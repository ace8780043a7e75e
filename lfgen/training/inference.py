"""Using a trained run: merge its adapter (export), chat with it, answer fixed prompts (sample).

Model, adapter, template and finetuning type come from the run's own config (``lfgen_run.yaml``,
which ``lfgen run`` writes into every output_dir), so the user retypes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lfgen._lf import script
from lfgen import launch
from lfgen.errors import INSTALL_HINT, InputError
from lfgen.builder.render import render
from lfgen.layout import SAMPLES, read_run_config
from lfgen.yamlio import cannot_write, check_can_write, read_text, write_atomic

_CARRY = ("model_name_or_path", "template", "finetuning_type", "trust_remote_code", "cache_dir")


def run_config(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    """The run's config and the directory its relative paths resolve from."""
    config, _, root = read_run_config(run_dir)
    return config, root


def _require_done(run_dir: Path) -> None:
    if not any((run_dir / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin",
                                                       "model.safetensors")):
        raise InputError(f"{run_dir}: the run is not done (no trained adapter in it); check `lfgen status` and "
                         "finish it with `lfgen run`")


def _infer_config(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    infer = {key: config[key] for key in _CARRY if key in config}
    infer["adapter_name_or_path"] = str(run_dir.resolve())
    infer.setdefault("finetuning_type", "lora")
    return infer


def export(run_dir: str | Path, export_dir: str | Path | None = None, *, force: bool = False) -> tuple[list[str], Path]:
    """Write the export config and run ``llamafactory-cli export``; returns (argv, export_dir)."""
    run_dir = Path(run_dir)
    config, root = run_config(run_dir)
    _require_done(run_dir)
    target = check_can_write(Path(export_dir) if export_dir else run_dir / "merged", "--export-dir")
    if target.exists() and any(target.iterdir()) and not force:
        raise InputError(f"--export-dir: {target} already exists and is not empty; pass --force to overwrite it")
    # LlamaFactory refuses to merge into a quantized base: the merge uses the full-precision model.
    values = {**_infer_config(run_dir, config), "export_dir": str(target.resolve()), "export_size": 5,
              "export_device": "cpu", "export_legacy_format": False}
    path = run_dir / "lfgen_export.yaml"
    path.write_text(render(values, header=[f"lfgen export of {run_dir}"]), encoding="utf-8")
    argv = launch.export_argv(launch.find_cli(), path.resolve())
    child = launch.spawn(argv, cwd=root, env=dict(os.environ), log_path=run_dir / "lfgen_export.log")
    if child.proc.wait() != 0:
        tail = (run_dir / "lfgen_export.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise InputError(f"llamafactory-cli export failed (exit {child.proc.returncode}): "
                         f"{tail[-1] if tail else 'no output'}; the log is {run_dir / 'lfgen_export.log'}")
    return argv, target


def chat(run_dir: str | Path) -> int:
    """Interactive chat with the run's adapter through LlamaFactory's ChatModel; end of input quits cleanly."""
    run_dir = Path(run_dir)
    config, root = run_config(run_dir)
    _require_done(run_dir)
    python = _llamafactory_python()
    request = {"config": {**_infer_config(run_dir, config), "infer_backend": "huggingface"}}
    with tempfile.TemporaryDirectory(prefix="lfgen-chat-") as tmp:
        req = Path(tmp, "request.json")
        req.write_text(json.dumps(request), encoding="utf-8")
        child = launch.spawn([python, "-P", script("chat"), str(req)], cwd=root,
                             env=dict(os.environ), log_path=None, stdin=None)
        try:
            return child.proc.wait()
        except KeyboardInterrupt:
            launch.stop_group(child.pid, grace=3)
            return 130


def _llamafactory_python() -> str:
    from lfgen.catalogs.llamafactory import find_python

    python = find_python()
    if python is None:
        raise InputError(f"LlamaFactory is not installed; install it with {INSTALL_HINT}")
    return python


def sample(run_dir: str | Path, prompts_file: str | Path, output: str | Path | None = None, *,
           max_new_tokens: int = 256) -> Path:
    """Answers to fixed prompts (one per line), greedy, written as JSONL in the run directory."""
    run_dir = Path(run_dir)
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens: must be at least 1 (got {max_new_tokens})")
    from lfgen.training.evaluate import check_new_tokens

    check_new_tokens(max_new_tokens)
    config, root = run_config(run_dir)
    _require_done(run_dir)
    try:
        text = read_text(prompts_file, "prompts file")
    except InputError as exc:
        raise InputError(f"--prompts: {exc}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"--prompts: {prompts_file} has no prompts; write one per line")
    out = check_can_write(Path(output) if output else run_dir / SAMPLES, "-o")  # before minutes of sampling
    python = _llamafactory_python()
    request = {"config": {**_infer_config(run_dir, config), "infer_backend": "huggingface"}, "prompts": prompts,
               "generation": {"do_sample": False, "max_new_tokens": max_new_tokens}}
    with tempfile.TemporaryDirectory(prefix="lfgen-sample-") as tmp:
        req = Path(tmp, "request.json")
        req.write_text(json.dumps(request), encoding="utf-8")
        result = Path(tmp, "samples.jsonl")
        proc = launch.run_captured([python, "-P", script("sample"), str(req),
                                    str(result)], cwd=root, env=dict(os.environ), timeout=3600)
        if proc.returncode != 0 or not result.exists():
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"sampling failed (exit {proc.returncode}): {tail[0]}")
        try:
            write_atomic(out, result.read_text(encoding="utf-8"))
        except OSError as exc:
            raise cannot_write(out, exc, "-o") from None
    return out
