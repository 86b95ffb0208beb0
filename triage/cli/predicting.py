"""``triage predict``: triage a JSONL file or stdin with the current model, offline."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from triage.cli.common import err, fail, open_triager, progress_bar
from triage.errors import TriageError


def _read_requests(lines, skipped: list[str]):
    """(line number, id, text) for good lines; bad ones go to ``skipped`` with the reason."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"line {lineno}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            skipped.append(f"line {lineno}: expected a JSON object")
            continue
        if "text" not in obj or obj["text"] is None:
            skipped.append(f"line {lineno}: no 'text' field")
            continue
        if not isinstance(obj["text"], str):
            skipped.append(f"line {lineno}: 'text' must be a string, got {type(obj['text']).__name__}")
            continue
        yield lineno, obj.get("id", lineno), obj["text"]


def prediction_record(id_, prediction) -> dict:
    """The output line of ``triage predict`` for one message."""
    return {
        "id": id_,
        "dispute_type": prediction.dispute_type,
        "urgency": prediction.urgency,
        "emotion": prediction.emotion,
        "escalation": prediction.escalation,
        "confidence": prediction.confidence,
        "scores": prediction.scores,
        "explanation": prediction.explanation,
        "model_version": prediction.model_version,
    }


@contextmanager
def _quiet_garbage_collector():
    """Keep Python's cycle collector off the loaded model and modules while a file is triaged.

    Every message makes a few dozen short-lived lists and dicts, and each full collection
    walked every object of the imported modules and the model again: 16 % of a 20,000-message
    run. Those objects live to the end of the command, so they are frozen out of collection,
    and collections run less often (freed memory is still freed at once by reference
    counting). Both are undone afterwards (the command may run inside another program).
    """
    import gc

    threshold, freeze = gc.get_threshold(), gc.get_freeze_count() == 0  # a host's own freeze stays its own
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if freeze:
            gc.unfreeze()


def predict(
    input: Optional[Path] = typer.Argument(None, help="JSONL with {id, text} per line (default: stdin)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="JSONL to write (default: stdout)"),
    model: Optional[Path] = typer.Option(None, "--model", help="model store or version folder"),
    batch: int = typer.Option(512, min=1, help="messages triaged together"),
):
    """Triage every {id, text} line; bad lines are reported on stderr with their number and skipped."""
    from triage.errors import InvalidInput
    from triage.jsonl import json_line

    try:
        triager = open_triager(model)
    except TriageError as exc:
        raise fail(exc)
    total = None
    if input is not None:
        if not input.is_file():
            raise fail(FileNotFoundError(f"input file {input} does not exist"))
        with input.open("rb") as f:
            total = sum(1 for _ in f)
        source = input.open("r", encoding="utf-8", errors="replace")
    else:
        source = sys.stdin
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    skipped: list[str] = []
    written = 0
    bar = progress_bar("triage", total)
    pending: list[tuple[int, object, str]] = []

    def flush() -> None:
        nonlocal written
        good = []
        for lineno, id_, text in pending:
            try:
                triager.validate(text)
                good.append((id_, text))
            except InvalidInput as exc:
                skipped.append(f"line {lineno}: {exc}")
        for (id_, _), p in zip(good, triager.predict_many([t for _, t in good])):
            sink.write(json_line(prediction_record(id_, p)))
        written += len(good)
        bar.update(len(pending))
        pending.clear()

    try:
        with _quiet_garbage_collector():
            for item in _read_requests(source, skipped):
                pending.append(item)
                if len(pending) >= batch:
                    flush()
            flush()
    finally:
        bar.close()
        if input is not None:
            source.close()
        if output:
            sink.close()
        else:
            sink.flush()
    for message in skipped:
        err(f"skipped {message}")
    err(f"triaged {written} messages with model {triager.version}" + (f", skipped {len(skipped)} lines" if skipped else ""))
