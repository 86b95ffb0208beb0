"""What every command module shares: messages on stderr, failing with a clear error,
opening the configured model and progress reporting.

Machine output goes to stdout, messages and progress bars to stderr, so
``triage predict < in.jsonl > out.jsonl`` stays clean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

PROGRESS_MIN_LINES = 1000  # below this a progress bar is noise


def err(message: str) -> None:
    typer.echo(message, err=True)


def fail(exc: Exception, code: int = 1) -> "typer.Exit":
    err(f"error: {exc}")
    return typer.Exit(code)


def open_triager(model: Path | None = None):
    """The triager of ``--model`` (a store or one version folder), else the settings' store."""
    from models.store import open_model_dir
    from triage.settings import get_settings
    from triage.triager import Triager

    if model is not None:
        store, version = open_model_dir(model)
    else:
        store, version = open_model_store(get_settings()), None
    return Triager.from_store(store, version)


def open_model_store(settings):
    """The settings' model store; the database one (TRIAGE_MODEL_STORE=db) on a migrated schema."""
    from models.db_store import open_store

    if settings.model_store == "db":
        from triage.store import Database

        db = Database.from_settings(settings)
        try:
            db.upgrade()
        finally:
            db.dispose()
    return open_store(settings)


def progress_bar(desc: str, total: int | None):
    from tqdm import tqdm

    # Unknown length (stdin): show the bar only to a person watching a terminal.
    disable = total < PROGRESS_MIN_LINES if total is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, unit="msg", disable=disable, mininterval=0.5)


def stage_progress(step: float = 0.05):
    """A ProgressFn that prints training stages on stderr: each new stage, and every ``step``
    of progress within one (a fine-tuning epoch reports every batch)."""
    last = {"stage": None, "fraction": -1.0}

    def report(stage: str, fraction: float) -> None:
        if stage == last["stage"] and fraction - last["fraction"] < step and fraction < 1.0:
            return
        last.update(stage=stage, fraction=fraction)
        err(f"  [{fraction:4.0%}] {stage}")

    return report


def open_service():
    """The service over the configured database (migrated to the latest schema)."""
    from triage.service import TriageService
    from triage.settings import get_settings

    return TriageService.from_settings(get_settings())
