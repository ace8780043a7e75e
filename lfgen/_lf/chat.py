"""Runs inside the Python that has LlamaFactory: an interactive chat with a trained adapter.

``python -P lfgen/_lf/chat.py REQUEST.json`` (started by ``lfgen.training.inference.chat``). The loop is
LlamaFactory's own ``run_chat`` (``exit``, ``clear``, history), with two differences: the end of
input ends the chat (``llamafactory-cli chat`` raises EOFError there), and the process leaves with
``os._exit`` after flushing, because LlamaFactory's chat aborts now and then at interpreter
shutdown ("terminate called without an active exception", exit 134) after the conversation is over.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys


def main(request_path: str) -> None:
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    # LlamaFactory's logger writes INFO lines to the stdout it sees when first imported: imported with stdout on
    # stderr, its lines stay off the conversation (and off a pipe that reads the answers) for good.
    with contextlib.redirect_stdout(sys.stderr):
        from llamafactory.chat import ChatModel

        model = ChatModel(request["config"])
    messages: list[dict] = []
    print("Chat with the run's adapter; `clear` forgets the history, `exit` or end of input quits.", flush=True)
    while True:
        try:
            query = input("\nUser: ")
        except EOFError:
            print()
            break
        if query.strip() == "exit":
            break
        if query.strip() == "clear":
            messages = []
            print("History has been removed.")
            continue
        messages.append({"role": "user", "content": query})
        print("Assistant: ", end="", flush=True)
        response = ""
        for piece in model.stream_chat(messages):
            print(piece, end="", flush=True)
            response += piece
        print()
        messages.append({"role": "assistant", "content": response})


if __name__ == "__main__":
    try:
        main(sys.argv[1])
        code = 0
    except KeyboardInterrupt:
        print()
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
