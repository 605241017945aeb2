"""`lmtune chat RUN_DIR`: an interactive conversation with a finished generative run, streamed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from transformers import TextStreamer

from lmtune.errors import LmtuneError
from lmtune.runs import read_run

HELP = "/reset starts a new conversation, /exit (or Ctrl-D) quits"


def chat(run_dir: Path, *, max_new_tokens: int | None = None, read: Callable[[str], str] = input) -> int:
    from lmtune.tasks import TASKS
    from lmtune.tasks.contract import Predictor

    task = read_run(run_dir)["task"]
    if not TASKS[task].generative:
        generative = ", ".join(name for name, t in TASKS.items() if t.generative)
        raise LmtuneError(f"chat: {run_dir} is a {task} run; chat needs a generative run (task {generative})")
    run = Predictor.open(run_dir)
    if max_new_tokens:
        run.config.evaluation.generation.max_new_tokens = max_new_tokens
    print(f"chatting with {run_dir} ({run.describe()}); {HELP}", flush=True)
    history: list[dict] = []
    while True:
        try:
            text = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = []
            print("(new conversation)", flush=True)
            continue
        if not text:
            continue
        sys.stdout.write("model> ")
        sys.stdout.flush()
        streamer = TextStreamer(run.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = run.generate(text, history, streamer=streamer)
        if not result["stopped"]:
            print(
                f"[stopped at max_new_tokens = {run.config.evaluation.generation.max_new_tokens}]", flush=True
            )
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": result["answer"]}]
