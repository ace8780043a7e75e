"""Runs inside the Python that has LlamaFactory: describes its keys and parses configs.

Started by ``lfgen.catalogs.llamafactory`` as ``python -m lfgen._lf.probe REQUEST.json RESULT.json``
(LlamaFactory's import takes seconds and its parser has side effects: logging, seeds,
accelerate state, so it never runs inside the lfgen process). Only the standard library
and LlamaFactory are imported here; lfgen may not even be installed in that Python.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
import typing


def _type_info(tp: object) -> dict:
    """Reduce a dataclass field type to {"type", "optional", "choices"} the way HfArgumentParser reads it."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        tp = enums[0] if enums else args[0]
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = list(typing.get_args(tp))
        return {"type": type(choices[0]).__name__, "optional": optional, "choices": choices}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "str", "optional": optional, "choices": [m.value for m in tp]}
    if origin in (list, dict) or tp in (list, dict):
        return {"type": (origin or tp).__name__, "optional": optional, "choices": None}
    name = tp.__name__ if isinstance(tp, type) else str(tp)
    return {"type": name if name in ("bool", "int", "float", "str") else "any", "optional": optional, "choices": None}


def _jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def describe() -> dict:
    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import (DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments,
                                      TrainingArguments)

    groups = {"model": ModelArguments, "data": DataArguments, "training": TrainingArguments,
              "finetuning": FinetuningArguments, "generating": GeneratingArguments}
    keys = {}
    for group, cls in groups.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.init or field.name in keys:
                continue
            default = field.default if field.default is not dataclasses.MISSING else None
            if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = field.default_factory()  # type: ignore[misc]
            keys[field.name] = {"group": group, "default": _jsonable(default), **_type_info(hints[field.name])}
    import transformers

    return {"llamafactory": llamafactory.__version__, "transformers": transformers.__version__,
            "keys": keys, "templates": sorted(TEMPLATES)}


def from_argv(argv: list[str]) -> dict:
    """What `llamafactory-cli train <yaml> key=value ...` would parse: LlamaFactory's own read_args."""
    from llamafactory.hparams.parser import read_args

    saved = sys.argv
    sys.argv = ["llamafactory-cli", *argv]
    try:
        return read_args()
    finally:
        sys.argv = saved


GPU_ONLY = ("bf16", "pure_bf16")  # keys LlamaFactory's parser refuses without a GPU


def _torchrun_env() -> dict:
    """What torchrun sets for a one-process launch: `llamafactory-cli train` starts DeepSpeed and FSDP that way."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def parse(config: dict, cuda: bool, mode: str = "train", cwd: str | None = None) -> str | None:
    """LlamaFactory's own parser on one config (get_train_args, get_infer_args or get_eval_args: *mode*),
    run from *cwd* so relative paths resolve as `llamafactory-cli` resolves them; None when it accepts it.

    Without a GPU its parser refuses bf16 and pure_bf16: a config written for a GPU is parsed with use_cpu
    added, as on the machine it targets. A DeepSpeed or FSDP config is parsed inside a one-process torchrun
    environment, the way `llamafactory-cli train` launches it.
    """
    from llamafactory.hparams import get_eval_args, get_infer_args, get_train_args

    function = {"train": get_train_args, "infer": get_infer_args, "eval": get_eval_args}[mode]
    config = dict(config)
    if mode == "train" and not cuda and any(config.get(k) is True for k in GPU_ONLY) and "use_cpu" not in config:
        config["use_cpu"] = True
        if config.pop("pure_bf16", None) is True:  # "This device does not support pure_bf16": parse it as bf16
            config["bf16"] = True
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    if mode == "train" and (config.get("deepspeed") or config.get("fsdp")):
        os.environ.update(_torchrun_env())
    try:
        if cwd:
            os.chdir(cwd)
        function(config)
    except SystemExit as exc:  # argparse-style failures exit instead of raising
        return f"LlamaFactory's parser exited ({exc.code})"
    except Exception as exc:  # noqa: BLE001 - any parser failure is the answer we want
        message = str(exc).strip() or type(exc).__name__
        return f"{type(exc).__name__}: {message}"
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return None


def main(request_path: str, result_path: str) -> None:
    # Parsing must not pick up a distributed launch from the caller's environment.
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "FORCE_TORCHRUN"):
        os.environ.pop(var, None)
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    result: dict = {}
    if request.get("describe", True):
        result = describe()
    import torch

    result["cuda"] = cuda = torch.cuda.is_available()
    results = []
    # accelerate keeps its distributed state for the process: configs launched by torchrun parse last.
    items = sorted(request.get("configs", []), key=lambda i: bool(i["config"].get("deepspeed") or i["config"].get("fsdp")))
    for item in items:
        config = item["config"]
        if "__argv__" in config:  # a command line: the YAML path plus key=value overrides
            config = from_argv(config["__argv__"])
        results.append({"id": item["id"], "error": parse(config, cuda, item.get("mode", "train"), item.get("cwd"))})
    result["results"] = results
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
