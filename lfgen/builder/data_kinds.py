"""What kind of rows a dataset registered in ``dataset_info.json`` holds, and whether a stage can train on them
(R-STAGE-DATA), from the registration alone: nothing is read but dataset_info.json.

LlamaFactory 0.9.5 decides it the same way: ``ranking: true`` makes a pairwise set (data/loader.py refuses it for
any stage but rm/dpo, and refuses any other set for them); a ``kto_tag`` column makes KTO feedback; an alpaca set
whose ``columns`` name no answer column is plain text (once ``columns`` is given, every column it leaves out is
None: data/parser.py ``DatasetAttr.join``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.layout import DATASET_INFO

# LlamaFactory's defaults for the columns and tags of each format (its data/parser.py DatasetAttr).
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": None, "tools": None}
SHARED_COLUMNS = ("images", "videos", "audios", "chosen", "rejected", "kto_tag")

KINDS = {
    "supervised": "SFT rows (a prompt and one answer)",
    "pairwise": "pairwise rows (ranking: true, a chosen and a rejected answer)",
    "feedback": "KTO rows (one answer with a kto_tag: true or false)",
    "text": "plain text (columns: {prompt: text})",
}
# What each kind of stage data (presets/shapes.yaml `data`) accepts.
ACCEPTS = {"supervised": ("supervised",), "text": ("text",), "pairwise": ("pairwise",), "feedback": ("feedback",),
           "prompts": ("supervised", "text", "feedback")}
# The fix for a mismatch: what to register, and LlamaFactory's demo set of that kind.
FIXES = {
    "supervised": "register alpaca or sharegpt rows with one answer each (e.g. alpaca_en_demo)",
    "pairwise": "register a pairwise dataset (ranking: true with chosen and rejected columns, e.g. dpo_en_demo)",
    "feedback": 'register a KTO dataset (a "kto_tag" column of true/false, e.g. kto_en_demo)',
    "text": 'register the text as {"file_name": ..., "columns": {"prompt": "text"}} (e.g. c4_demo)',
    "prompts": "register a dataset without ranking: true",
}
# How LlamaFactory fails on a mismatch (R-STAGE-DATA's sources).
_FAILURE = {
    "pairwise": 'LlamaFactory refuses it at start-up, after loading the model ("The dataset is not applicable in the '
                'current training stage", data/loader.py)',
    "feedback": "LlamaFactory's KTO processor drops every row without a kto_tag (data/processor/feedback.py), then "
                "stops: no valid samples",
    "supervised": "LlamaFactory's SFT processor drops every row without exactly one answer "
                  "(data/processor/supervised.py), then stops: no valid samples",
    "text": "LlamaFactory's pre-training reads only each row's first turn (data/processor/pretrain.py): the answers "
            "are never trained on",
}


def columns_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The columns LlamaFactory reads for a registration: its format's defaults, or, once ``columns`` is given,
    exactly the columns it names (every other one is None, as in data/parser.py)."""
    formatting = entry.get("formatting", "alpaca")
    defaults = {**(ALPACA_COLUMNS if formatting != "sharegpt" else SHAREGPT_COLUMNS),
                **dict.fromkeys(SHARED_COLUMNS)}
    given = entry.get("columns")
    if not isinstance(given, dict):
        return defaults
    return {key: given.get(key) for key in {**defaults, **given}}


def kind_of(entry: dict[str, Any]) -> str:
    """supervised, pairwise, feedback or text (see the module docstring)."""
    if entry.get("ranking") is True:
        return "pairwise"
    columns = columns_of(entry)
    if columns.get("kto_tag"):
        return "feedback"
    if entry.get("formatting", "alpaca") != "sharegpt" and not columns.get("response"):
        return "text"
    return "supervised"


def fit_problem(name: str, entry: Any, stage: str, data: str, dataset_dir: str | Path, key: str = "dataset"
                ) -> str | None:
    """One line when dataset *name* cannot train stage *stage* (whose data is *data*, presets/shapes.yaml), naming
    the dataset, what LlamaFactory does with it and the fix; None when it fits or the entry is not an object."""
    from lfgen.builder.datasets import checked_entry
    from lfgen.errors import InputError

    try:
        checked_entry(name, entry, dataset_dir)
    except InputError:
        return None  # a broken entry (not an object, a list in columns, ...) is checked_entry's to report, by field
    kind = kind_of(entry)
    if kind in ACCEPTS[data]:
        return None
    where = Path(dataset_dir) / DATASET_INFO
    failure = _FAILURE["pairwise"] if "pairwise" in (kind, data) else _FAILURE.get(data, _FAILURE["pairwise"])
    return (f"{key}: {name!r} holds {KINDS[kind]} in {where}; stage {stage} trains on {KINDS.get(data, data)}: "
            f"{failure}; {FIXES[data]}")
