"""``triage users ...`` and ``triage keys ...``: give a new installation its first users and
API keys.

Registered in :mod:`triage.cli`. Keys are printed once, on stdout (so ``KEY=$(triage keys create desk --scope ingest)`` works); only their SHA-256
is stored.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from triage.cli.common import err, fail, open_service
from triage.errors import TriageError

users_app = typer.Typer(help="Create and list users (people and integrations that own API keys).",
                        no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (scopes: ingest, review, admin).",
                       no_args_is_help=True)


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="unique user name, e.g. 'zendesk' or 'li.wei'"),
    role: str = typer.Option("agent", help="agent, reviewer, supervisor, team_leader, admin or integration"),
):
    """Create a user."""
    try:
        user = open_service().create_user(name, role, actor="cli")
    except TriageError as exc:
        raise fail(exc) from None
    scope = {"integration": "ingest", "admin": "admin"}.get(user.role, "review")
    err(f"created user {user.name!r} ({user.role}); give it a key: triage keys create {user.name} --scope {scope}")


@users_app.command("list")
def users_list():
    """List users as JSON lines."""
    for user in open_service().list_users():
        typer.echo(user.model_dump_json())


def _set_active(name: str, active: bool) -> None:
    try:
        open_service().set_user_active(name, active, actor="cli")
    except TriageError as exc:
        raise fail(exc) from None
    err(f"{'activated' if active else 'deactivated'} {name!r}")


@users_app.command("deactivate")
def users_deactivate(name: str):
    """Deactivate a user: every key of theirs stops working at once."""
    _set_active(name, False)


@users_app.command("activate")
def users_activate(name: str):
    """Re-activate a user."""
    _set_active(name, True)


@users_app.command("set-password")
def users_set_password(name: str = typer.Argument(..., help="the user who logs in to the review desk")):
    """Set the user's review desk password, read from stdin (first line); ends their open sessions."""
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise fail("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        open_service().set_password(name, password, actor="cli")
    except TriageError as exc:
        raise fail(exc) from None
    err(f"password of {name!r} set; they log in at /review")


@keys_app.command("create")
def keys_create(
    user: str = typer.Argument(..., help="the user that owns the key"),
    scope: list[str] = typer.Option(..., "--scope", help="ingest, review or admin (repeatable)"),
    label: Optional[str] = typer.Option(None, help="what the key is for"),
):
    """Create an API key and print it once on stdout; only its hash is stored."""
    try:
        key, secret = open_service().create_api_key(user, scope, label, actor="cli")
    except TriageError as exc:
        raise fail(exc) from None
    err(f"key {key.id} ({key.prefix}) for {key.user} with scopes {key.scopes}; store it now, it is not shown again")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(user: Optional[str] = typer.Option(None, help="only this user's keys")):
    """List keys (never the secrets) as JSON lines."""
    for key in open_service().list_api_keys(user):
        typer.echo(key.model_dump_json())


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="key id or prefix")):
    """Revoke a key; requests with it get 401 from now on."""
    try:
        view = open_service().revoke_api_key(key, actor="cli")
    except TriageError as exc:
        raise fail(exc) from None
    err(f"revoked key {view.id} ({view.prefix}) of {view.user}")
    typer.echo(json.dumps({"id": view.id, "revoked_at": view.revoked_at.isoformat()}))
