"""Why a run failed, in words a user can act on: the likely cause, where to fix it, and the log.

``classify_failure`` reads the last lines of a run's console log (LlamaFactory's and transformers'
own messages) and names the cause; ``explain`` turns it into the message lfgen stores and shows:
``the model path does not exist (model_name_or_path: ./nope); fix it in runs/r.yaml; log: out/r/lfgen_train.log``
followed by the lines of the log that show it.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

# Checked in this order: the first class whose pattern is in the log wins.
DISK_PATTERNS = re.compile(r"No space left on device|ENOSPC|\[Errno 28\]|StorageFull|"
                           r"PytorchStreamWriter failed writing file|file write failed", re.IGNORECASE)
OOM_PATTERNS = re.compile(r"CUDA out of memory|OutOfMemoryError|HIP out of memory|MPS backend out of memory|"
                          r"NPU out of memory|CUBLAS_STATUS_ALLOC_FAILED|out of memory", re.IGNORECASE)
# Not huggingface_hub's "Offline mode: forcing local_files_only=True": every offline run logs that.
HUB_PATTERNS = re.compile(r"We couldn't connect to|outgoing traffic has been disabled|"
                          r"run the library in offline mode|Please check your connection|"
                          r"Max retries exceeded with url|Temporary failure in name resolution|"
                          r"Failed to resolve '[\w.-]*huggingface|\bConnect(ion)?Error\b|ConnectTimeout|"
                          r"Network is unreachable")
MODEL_PATTERNS = re.compile(r"is not a local folder and is not a valid model identifier|Repository Not Found|"
                            r"RepositoryNotFoundError|does not appear to have a file named config\.json|"
                            r"HFValidationError|Repo id must (use|be in the form)|Incorrect path_or_model_id|"
                            r"Failed to load tokenizer")
# A failure inside LlamaFactory's argument parsing is the config's fault, not the run's.
CONFIG_PATTERNS = re.compile(r"llamafactory/hparams/parser\.py|Some keys are not used by the HfArgumentParser|"
                             r"is not a valid \w+, please select one of|Template \S+ does not exist|"
                             r"Undefined dataset \S+ in dataset_info\.json|Cannot open \S+dataset_info\.json")
_CLASSES = (("disk", DISK_PATTERNS), ("oom", OOM_PATTERNS), ("hub", HUB_PATTERNS), ("model", MODEL_PATTERNS),
            ("config", CONFIG_PATTERNS))
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b")

NAN_ADVICE = ("R-DIAG-NAN: check the precision (fp16 -> bf16, or fp32 where bf16 is missing), keep gradient "
              "clipping on (max_grad_norm 1.0), lower the learning rate; with loss 0 and grad_norm NaN also try "
              "flash_attn: disabled (LlamaFactory #8088)")
OOM_ADVICE = ("R-DIAG-OOM: at micro-batch 1 it still does not fit: use quantization_bit 4 (QLoRA), a shorter "
              "cutoff_len, or more GPUs with DeepSpeed ZeRO-3")


def classify_failure(tail: list[str]) -> tuple[str, str]:
    """Why a run exited non-zero: (``disk`` | ``oom`` | ``hub`` | ``model`` | ``config`` | ``crashed``,
    the log lines that show it)."""
    text = "\n".join(tail)
    for reason, pattern in _CLASSES:
        if not pattern.search(text):
            continue
        if reason == "oom":
            return reason, [line for line in tail if pattern.search(line)][-1].strip()[:500]
        errors = [line.strip() for line in tail if _ERROR_LINE.match(line.strip())]
        matching = list(dict.fromkeys(line for line in errors if pattern.search(line)))  # chained tracebacks repeat
        shown = matching[-2:] if matching else errors[-1:] if errors else [tail[-1].strip()]
        return reason, "\n".join(line[:500] for line in shown)
    return "crashed", "\n".join(tail[-8:])[:2000]


def _model_cause(model: str, root: Path | None) -> tuple[str, str]:
    """(reason, cause) for a model that could not be loaded, from what is on disk."""
    from lfgen.builder.model import local_path, looks_local

    path = local_path(model, root)
    if path.is_dir() and not (path / "config.json").is_file():
        return "model", f"the model folder has no config.json, so it is not a Hugging Face model (model_name_or_path: {model})"
    if path.exists():
        return "model", f"the model could not be loaded from its folder (model_name_or_path: {model})"
    if looks_local(model):
        return "model", f"the model path does not exist (model_name_or_path: {model})"
    return "model", f"the model is neither a local folder nor a model on the Hugging Face Hub (model_name_or_path: {model})"


def explain(reason: str, evidence: str, *, config: dict[str, Any], config_file: str, log: str,
            root: Path | None = None, exit_code: int | None = None) -> tuple[str, str]:
    """(reason, message): the likely cause, where to fix it and the log on the first line, then *evidence*.

    A model path that is not on disk is the cause whatever the log blames (offline mode, a Hub lookup of
    ``./nope``): the run cannot have got further than loading the model.
    """
    model = str(config.get("model_name_or_path", ""))
    fix = f"fix it in {config_file}"
    if reason in ("model", "hub", "crashed") and model:
        from lfgen.builder.model import local_path, looks_local

        path = local_path(model, root)
        missing_locally = (looks_local(model) and not path.exists()) or (path.is_dir() and not (path / "config.json").is_file())
        if reason == "model" or missing_locally:
            reason, cause = _model_cause(model, root)
            return reason, _message(f"{cause}; {fix}", log, evidence, exit_code)
    if reason == "hub":
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        cause = (f"the Hugging Face Hub could not be reached{offline} to fetch {model or 'the model'}; connect, or "
                 f"download it (hf download {model or 'ORG/NAME'} --local-dir DIR) and set model_name_or_path to that "
                 f"folder in {config_file}")
    elif reason == "disk":
        cause = (f"the disk is full (No space left on device) under {config.get('output_dir', 'the output dir')}; "
                 f"free space, or keep fewer checkpoints (save_total_limit) in {config_file}")
    elif reason == "config":
        cause = f"LlamaFactory refused the config; {fix}"
    else:
        code = f" (exit {exit_code})" if exit_code is not None else ""
        message = f"it crashed{code} with no cause lfgen recognises; see the log: {log}"
        return reason, message + (f"\n{evidence}" if evidence else "")
    return reason, _message(cause, log, evidence, exit_code)


def with_log(cause: str, log: str, evidence: str = "") -> str:
    """*cause* and the log on the first line (what ``lfgen status`` shows), *evidence* below."""
    return f"{cause}; log: {log}" + (f"\n{evidence}" if evidence else "")


def _message(cause: str, log: str, evidence: str, exit_code: int | None) -> str:
    return with_log(cause, log, f"exit {exit_code}: {evidence}" if exit_code is not None and evidence else evidence)


def log_tail(path: Path | None, lines: int = 200) -> list[str]:
    """The last *lines* lines of a console log ([] when there is none)."""
    if path is None or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64_000))
        text = handle.read().decode("utf-8", "replace")
    return text.splitlines()[-lines:]


def os_failure(exc: OSError, what: str) -> tuple[str, str]:
    """(reason, message) for an OSError of lfgen's own: a full disk is ``disk``, anything else ``config``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk", f"{what}: the disk is full ({exc.strerror}); free space and run again"
    return "config", f"{what}: {exc}"
