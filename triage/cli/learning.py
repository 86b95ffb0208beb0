"""``triage retrain`` and ``triage models list|promote|rollback|sign``: the learning loop from a shell.

Registered in :mod:`triage.cli`. Progress goes to stderr, results as
JSON to stdout. Changes are audited with the actor ``cli:<user>`` (``--actor``).
"""

from __future__ import annotations

import getpass
import json
from typing import Optional

import typer

from triage.cli.common import open_model_store
from triage.errors import TriageError

models_app = typer.Typer(help="List model versions, promote one, roll back, or sign one.", no_args_is_help=True)


def _context():
    from models.learning import ModelHolder
    from triage.contexts.review import ReviewContext
    from triage.service import TriageService
    from triage.settings import get_settings
    from triage.triager import Triager

    settings = get_settings()
    store = open_model_store(settings)
    holder = ModelHolder()
    if store.current_version() is not None:
        holder.swap(Triager.from_store(store, lexicon_dir=settings.lexicon_dir))
    service = TriageService.from_settings(settings, holder)
    options = {}
    if settings.broker_url:  # a worker re-grades after a promotion, and runs retrains
        from triage.jobs.queue import DramatiqQueue

        options["runner"] = DramatiqQueue(settings)
    return ReviewContext(service, store, settings, **options)


def _actor(actor: Optional[str]) -> str:
    return actor or f"cli:{getpass.getuser()}"


def _print(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=1, default=str))


def retrain(actor: Optional[str] = typer.Option(None, "--actor", help="who to record in the audit log")):
    """Retrain on seed data plus confirmed labels; promote only if the quality gate passes."""
    try:
        outcome = _context().learning.retrain(_actor(actor), trigger="cli")
    except TriageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print({"version": outcome.version, "promoted": outcome.promoted, "reason": outcome.reason,
            "regraded": outcome.regraded, "metrics": outcome.metrics})
    raise typer.Exit(0 if outcome.promoted else 3)


@models_app.command("list")
def list_models():
    """Every version, oldest first: backend, status, gate reason, macro-F1; the current one is marked."""
    try:
        overview = _context().models_overview()
    except TriageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for v in overview["versions"]:
        learning = (v.get("metrics") or {}).get("learning", {}) if isinstance(v.get("metrics"), dict) else {}
        scores = learning.get("holdout") or learning.get("seed_cv") or {}
        f1 = " ".join(f"{h}={s:.3f}" for h, s in scores.items())
        mark = "*" if v.get("current") else " "
        typer.echo(f"{mark} {v['version']}  {v.get('backend', '?'):12}  {v.get('status', ''):9}  {f1}  {v.get('reason', '')}".rstrip())


def _change(kind: str, version: str, actor: Optional[str], reason: Optional[str]) -> None:
    """With a task queue (TRIAGE_BROKER_URL) a worker re-grades the open cases; without one
    this command does, before it returns."""
    try:
        context = _context()
        learning = context.learning
        change = learning.promote if kind == "promote" else learning.rollback
        queued = getattr(learning.runner, "remote", False)
        job = change(version, _actor(actor), reason or f"{kind} from the command line", background=queued)
    except TriageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print({"current": version, "action": kind, "regraded": job.regraded, "regrade": job.as_dict()})


@models_app.command()
def promote(version: str, actor: Optional[str] = typer.Option(None, "--actor"),
            reason: Optional[str] = typer.Option(None, "--reason")):
    """Make VERSION current (also a rejected one); open unconfirmed cases are re-graded."""
    _change("promote", version, actor, reason)


@models_app.command()
def rollback(version: str, actor: Optional[str] = typer.Option(None, "--actor"),
             reason: Optional[str] = typer.Option(None, "--reason")):
    """Return to the earlier VERSION; open unconfirmed cases are re-graded."""
    _change("rollback", version, actor, reason)


@models_app.command()
def sign(version: str):
    """Sign VERSION with this installation's key (a model saved before signing, or under an
    old key): its files must still match its hashes. Only for models you trust."""
    from triage.settings import get_settings

    store = open_model_store(get_settings())
    try:
        store.sign(version)
    except TriageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print({"signed": version})
