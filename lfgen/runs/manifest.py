"""An experiment's manifest, ``experiments/<name>/experiment.yaml``: its schema, read and written.

The manifest records the base and where it came from, the axis or space, the seed, and every run with its
overrides, config path, output dir and estimate. The runner, status, compare and the tuner read it back;
making one (building every run's config) is lfgen.experiments.manifest's. A manifest that is not YAML, not a
mapping or not this schema is one StateError naming the file and the fix; lfgen never writes over it then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lfgen.errors import InputError, StateError, describe_validation
from lfgen.layout import MANIFEST
from lfgen.yamlio import describe_yaml_error, read_text


class RunEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    overrides: dict[str, Any]
    varies: dict[str, Any]
    config: str  # relative to the experiment folder
    output_dir: str  # as written in the config (relative to the project root)
    estimate: dict[str, Any] | None = None


class Manifest(BaseModel):
    """What ``experiment.yaml`` holds; the runner and ``lfgen compare`` read it back."""

    model_config = ConfigDict(extra="forbid")

    name: str
    lfgen: str
    created: str
    base: str
    base_from: dict[str, Any] | None = None  # staged tuning: the finished run this base was taken from
    root: str = "../.."  # where runs start, relative to this folder (the directory lfgen sweep ran in)
    options: dict[str, Any]
    sweep: dict[str, Any]  # {"axis": ..., "values"/"grid"/"space": ..., "seed": ...}
    runs: list[RunEntry]
    dropped: list[dict[str, Any]] = []


@dataclass
class Experiment:
    path: Path
    manifest: Manifest


def dump(manifest: Manifest) -> str:
    return yaml.dump(json.loads(manifest.model_dump_json()), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                     sort_keys=False, allow_unicode=True)


def save(folder: Path, manifest: Manifest) -> Experiment:
    """Write *manifest* as ``<folder>/experiment.yaml`` in one rename (the folder's other files stay)."""
    from lfgen.yamlio import write_atomic

    write_atomic(folder / MANIFEST, dump(manifest))
    return Experiment(path=folder, manifest=manifest)


def load(path: str | Path) -> Experiment:
    """Read an experiment folder (or its ``experiment.yaml``); a broken manifest is one StateError."""
    path = Path(path)
    manifest_path = path if path.name == MANIFEST else path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: not an experiment (no {MANIFEST}); `lfgen sweep` writes one")
    fix = (f"lfgen sweep wrote it: undo the hand edit, or write the experiment again "
           f"(lfgen sweep ... --name {manifest_path.parent.name} --force replaces the folder)")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StateError(f"{manifest_path}: not a UTF-8 text file; {fix}") from None
    except OSError:
        text = read_text(manifest_path, "experiment manifest")  # its one InputError: cannot be read
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise StateError(f"{manifest_path}: not valid YAML{describe_yaml_error(exc)}; {fix}") from None
    if not isinstance(data, dict):
        what = "is empty" if data is None else f"holds a {type(data).__name__}, not a mapping"
        raise StateError(f"{manifest_path}: {what}; {fix}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise StateError(f"{describe_validation(exc, str(manifest_path))}; {fix}") from None
    return Experiment(path=manifest_path.parent, manifest=manifest)
