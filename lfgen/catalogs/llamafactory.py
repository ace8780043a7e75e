"""What lfgen knows about LlamaFactory: its keys and templates, and its own parser.

Two sources, one interface:
- the snapshot ``lfgen/data/llamafactory.json`` (written from the pinned LlamaFactory by
  ``scripts/snapshot_llamafactory.py``) answers instantly and needs no torch;
- ``probe()`` asks the installed LlamaFactory itself, in a subprocess, and runs its
  ``get_train_args`` on configs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.errors import INSTALL_HINT, InputError, did_you_mean
from lfgen.resources import load_data


@dataclass(frozen=True)
class KeySpec:
    """One LlamaFactory argument: its dataclass group, type, default and closed choices."""

    name: str
    group: str  # model | data | training | finetuning | generating
    type: str  # bool | int | float | str | list | dict | any
    optional: bool
    default: Any
    choices: tuple[Any, ...] | None


@dataclass(frozen=True)
class Catalog:
    """The keys and templates of one LlamaFactory version."""

    version: str
    keys: dict[str, KeySpec]
    templates: frozenset[str]
    source: str  # "snapshot" or the interpreter the probe ran in
    cuda: bool | None = None

    def check_key(self, key: str, option: str = "--set") -> KeySpec:
        if key not in self.keys:
            raise InputError(
                f"{option}: {key!r} is not a LlamaFactory {self.version} key{did_you_mean(key, self.keys)}; "
                "see `llamafactory-cli train -h` for the keys it accepts")
        return self.keys[key]


def _catalog_from(data: dict, source: str) -> Catalog:
    keys = {
        name: KeySpec(name=name, group=spec["group"], type=spec["type"], optional=spec["optional"],
                      default=spec["default"], choices=tuple(spec["choices"]) if spec["choices"] else None)
        for name, spec in data["keys"].items()
    }
    return Catalog(version=data["llamafactory"], keys=keys, templates=frozenset(data["templates"]),
                   source=source, cuda=data.get("cuda"))


@functools.cache
def snapshot() -> Catalog:
    """The bundled description of the LlamaFactory version lfgen pins (no import of LlamaFactory)."""
    return _catalog_from(load_data("llamafactory.json"), "snapshot")


def find_python() -> str | None:
    """The Python interpreter that has LlamaFactory: this one, else the one behind `llamafactory-cli`."""
    import importlib.util

    if importlib.util.find_spec("llamafactory") is not None:
        return sys.executable
    cli = shutil.which("llamafactory-cli")
    if cli:
        try:
            first = Path(cli).read_text(encoding="utf-8", errors="replace").splitlines()[0]
        except (OSError, IndexError):
            return None
        if first.startswith("#!") and " " not in first[2:].strip():
            interpreter = first[2:].strip()
            if os.access(interpreter, os.X_OK):
                return interpreter
    return None


@dataclass
class ProbeResult:
    catalog: Catalog
    errors: dict[str, str | None] = field(default_factory=dict)  # config id -> parser error or None


def probe(configs: dict[str, dict[str, Any]] | None = None, *, python: str | None = None,
          timeout: float = 600, modes: dict[str, str] | None = None, cwd: str | None = None) -> ProbeResult:
    """Describe the installed LlamaFactory and run its parser on *configs* (id -> config), in one subprocess.

    A config ``{"__argv__": ["cfg.yaml", "key=value", ...]}`` is read the way ``llamafactory-cli train``
    reads its command line (YAML plus OmegaConf overrides); give absolute paths. *modes* (id -> train,
    infer or eval) picks the parser of each config's command; *cwd* is where relative paths resolve
    (the user's working directory for validate; the process itself runs in a scratch directory).
    """
    from lfgen.launch import run_captured

    python = python or find_python()
    if python is None:
        raise InputError(f"LlamaFactory is not installed; install it with {INSTALL_HINT}")
    modes = modes or {}
    request = {"describe": True, "configs": [{"id": cid, "config": cfg, "mode": modes.get(cid, "train"), "cwd": cwd}
                                             for cid, cfg in (configs or {}).items()]}
    with tempfile.TemporaryDirectory(prefix="lfgen-probe-") as tmp:
        req, res = Path(tmp, "request.json"), Path(tmp, "result.json")
        req.write_text(json.dumps(request, default=str), encoding="utf-8")
        from lfgen._lf import script

        probe_script = script("probe")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        # The process runs from a scratch dir (with -P, so no module of the caller's folder is imported);
        # each parse runs from *cwd*, where the config's relative paths point. The parser only reads there.
        proc = run_captured([python, "-P", str(probe_script), str(req), str(res)], cwd=tmp, env=env,
                            timeout=timeout)
        if proc.returncode != 0 or not res.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise InputError(f"could not run LlamaFactory's parser with {python} (exit {proc.returncode}):\n{tail}")
        data = json.loads(res.read_text(encoding="utf-8"))
    return ProbeResult(catalog=_catalog_from(data, python),
                       errors={item["id"]: item["error"] for item in data["results"]})
