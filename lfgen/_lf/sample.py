"""Runs inside the Python that has LlamaFactory: answers to fixed prompts with a trained adapter.

``python -P lfgen/_lf/sample.py REQUEST.json RESULT.jsonl`` (started by ``lfgen.training.inference.sample``);
only the standard library and LlamaFactory are imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys


def main(request_path: str, result_path: str) -> None:
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    # LlamaFactory's logger writes INFO lines to the stdout it sees when first imported: imported with stdout on
    # stderr, its lines stay off the conversation (and off a pipe that reads the answers) for good.
    with contextlib.redirect_stdout(sys.stderr):
        from llamafactory.chat import ChatModel

        model = ChatModel(request["config"])
    with open(result_path, "w", encoding="utf-8") as out:
        for prompt in request["prompts"]:
            responses = model.chat([{"role": "user", "content": prompt}], **request["generation"])
            out.write(json.dumps({"prompt": prompt, "response": responses[0].response_text,
                                  "finish_reason": responses[0].finish_reason}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # The results file is closed; skip interpreter shutdown, where LlamaFactory's chat model aborts
    # now and then ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
