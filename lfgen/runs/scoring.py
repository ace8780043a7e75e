"""What LlamaFactory's predict does not compute: accuracy, answers that are empty or repetitive, speed.

LlamaFactory writes ``generated_predictions.jsonl`` (``{"prompt", "predict", "label"}`` per held-out row)
and ``predict_results.json`` (BLEU-4, ROUGE-1/2/L, ``predict_runtime``). lfgen scores the same lines:

- ``accuracy``: exact match after normalising (case, surrounding and repeated whitespace);
- ``answer_accuracy``: for multiple-choice data (every reference is a choice letter, ``B``, ``(c)``, ``D.``)
  the first choice letter of the answer; for short-answer data (references of at most 3 words, median)
  the first word of the answer; None for long-form data (ROUGE and BLEU say more there);
- ``samples_scored``, ``generated_tokens``, ``generation_s`` (LlamaFactory's predict_runtime) and
  ``tokens_per_s``; ``empty_share`` and ``repetitive_share`` (the qualitative check of seed 002).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lfgen.layout import EVAL_DIR, PREDICT_RESULTS, PREDICTIONS, SCORES

# The columns lfgen eval adds to a run, in the order compare shows them.
SCORE_KEYS = ("accuracy", "answer_accuracy", "samples_scored", "eval_time_s", "tokens_per_s")
_CHOICE_LABEL = re.compile(r"^\(?([a-j])\)?[.:)]?$")
_CHOICE_IN_ANSWER = re.compile(r"(?<![A-Za-z])\(?([A-J])(?![A-Za-z])")
_SHORT_WORDS = 3  # a reference of at most this many words (median over the data) is a short answer
_REPEAT_MIN_WORDS = 8


def normalise(text: Any) -> str:
    """Lower case, whitespace collapsed and stripped: ``" Paris\\n"`` and ``"paris"`` are the same answer."""
    return " ".join(str(text or "").split()).lower()


def choice_of_label(label: Any) -> str | None:
    """The choice letter a reference is (``B``, ``(c)``, ``D.``), else None."""
    match = _CHOICE_LABEL.match(normalise(label))
    return match.group(1) if match else None


def choice_of_answer(answer: Any) -> str | None:
    """The first standalone capital choice letter of a generated answer (``"The answer is (C)."`` -> c); a lone
    lower-case letter counts only when it is the whole answer."""
    text = str(answer or "")
    match = _CHOICE_IN_ANSWER.search(text)
    if match:
        return match.group(1).lower()
    return choice_of_label(text)


def _first_word(text: str) -> str:
    words = normalise(text).split()
    return words[0].strip(".,;:!?\"'()[]") if words else ""


def answer_kind(labels: list[str]) -> str | None:
    """"choice" (every reference a choice letter), "short" (median reference of <= 3 words), else None."""
    if not labels:
        return None
    if all(choice_of_label(label) for label in labels):
        return "choice"
    if statistics.median(len(normalise(label).split()) for label in labels) <= _SHORT_WORDS:
        return "short"
    return None


def is_repetitive(text: str) -> bool:
    """Half or more of the answer's word trigrams repeat (or, for text without spaces, its character 4-grams)."""
    words = normalise(text).split()
    if len(words) >= _REPEAT_MIN_WORDS:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    else:
        chars = "".join(words)
        if len(chars) < 12:
            return False
        grams = [chars[i:i + 4] for i in range(len(chars) - 3)]
    return len(set(grams)) / len(grams) <= 0.5


def score(records: Iterable[dict[str, Any]], *, count_tokens: Callable[[str], int] | None = None,
          generation_s: float | None = None) -> dict[str, Any]:
    """Scores of predict lines (``{"predict", "label"}``); see the module docstring for each key."""
    rows = [(str(r.get("predict") or ""), str(r.get("label") or "")) for r in records]
    count = count_tokens or (lambda text: len(text.split()))
    result: dict[str, Any] = {"samples_scored": len(rows), "accuracy": None, "answer_accuracy": None,
                              "answer_kind": None, "empty_share": None, "repetitive_share": None,
                              "generated_tokens": None, "generation_s": generation_s, "tokens_per_s": None}
    if not rows:
        return result
    n = len(rows)
    result["accuracy"] = sum(normalise(p) == normalise(label) for p, label in rows) / n
    kind = answer_kind([label for _, label in rows])
    result["answer_kind"] = kind
    if kind == "choice":
        result["answer_accuracy"] = sum(choice_of_answer(p) == choice_of_label(label) for p, label in rows) / n
    elif kind == "short":
        result["answer_accuracy"] = sum(_first_word(p) != "" and _first_word(p) == _first_word(label)
                                        for p, label in rows) / n
    result["empty_share"] = sum(not normalise(p) for p, _ in rows) / n
    result["repetitive_share"] = sum(is_repetitive(p) for p, _ in rows) / n
    tokens = sum(count(p) for p, _ in rows)
    result["generated_tokens"] = tokens
    if generation_s and generation_s > 0:
        result["tokens_per_s"] = tokens / generation_s
    return result


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The lines of a generated_predictions.jsonl; a line that is not a JSON object is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def token_counter(run_dir: Path) -> tuple[Callable[[str], int], str]:
    """Count tokens with the run's own tokenizer.json (the tokenizers library), else words; and which."""
    path = run_dir / "tokenizer.json"
    if path.is_file():
        try:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(path))
            return (lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)), "tokenizer"
        except Exception:  # noqa: BLE001 - no tokenizers library, or a file it cannot read: count words
            pass
    return (lambda text: len(text.split())), "words"


def read_eval(run_dir: str | Path) -> dict[str, Any]:
    """A run's evaluation as flat metrics: LlamaFactory's predict_results.json and lfgen's scores, from
    ``<run>/eval/``; {} when the run has not been evaluated. Never raises for a bad file."""
    folder = Path(run_dir) / EVAL_DIR
    merged: dict[str, Any] = {}
    for name in (PREDICT_RESULTS, SCORES):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            merged.update({k: v for k, v in data.items() if not isinstance(v, (dict, list))})
    return merged


def examples(run_dir: str | Path, limit: int = 3) -> list[dict[str, str]]:
    """The first *limit* generated answers of a run beside their reference (for the report)."""
    path = Path(run_dir) / EVAL_DIR / PREDICTIONS
    if not path.is_file():
        return []
    out = []
    for record in read_predictions(path)[:limit]:
        out.append({"prompt": _last_turn(str(record.get("prompt") or "")), "predict": str(record.get("predict") or ""),
                    "label": str(record.get("label") or "")})
    return out


def _last_turn(prompt: str) -> str:
    """The user's part of a templated prompt: the text between the last role markers, when there are any."""
    for marker in ("<|im_start|>user\n", "<|start_header_id|>user<|end_header_id|>\n\n", "[INST]", "Human: "):
        if marker in prompt:
            prompt = prompt.rsplit(marker, 1)[1]
    for end in ("<|im_end|>", "<|eot_id|>", "[/INST]"):
        prompt = prompt.split(end, 1)[0]
    return prompt.strip()



ANSWER_SHARE = 0.5  # half or more of a run's answers empty (or repetitive) is a finding


def answer_flags(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, message, advice) for a run whose generated answers (lfgen eval) are mostly empty or repetitive."""
    out = []
    for key, kind, advice in (("empty_share", "empty-answers", "the model stops at once: check the template matches "
                               "the model and that training converged (more steps, a higher learning rate)"),
                              ("repetitive_share", "repetitive-answers", "the model loops: train longer, check the "
                               "template's stop words, or raise repetition_penalty when generating")):
        share = results.get(key)
        if isinstance(share, (int, float)) and not isinstance(share, bool) and share >= ANSWER_SHARE:
            out.append((kind, f"{share:.0%} of its generated answers are {kind.split('-')[0]} (lfgen eval)", advice))
    return out
