"""The review UI's log-in: the user's role and the key's scope must both allow review."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from review_ui.app import login
from triage.errors import Unauthorized
from triage.contexts.accounts import Principal

KEYS = {
    "k-review": Principal(user="ann", role="reviewer", scopes=["review"]),
    "k-ingest": Principal(user="ann", role="reviewer", scopes=["ingest"]),
    "k-admin": Principal(user="lead", role="admin", scopes=["admin"]),
    "k-agent": Principal(user="bob", role="agent", scopes=["review"]),
}


def authenticate(key: str) -> Principal:
    if key not in KEYS:
        raise Unauthorized("unknown API key")
    return KEYS[key]


REMEMBERED: list[Principal] = []


def context():
    return SimpleNamespace(service=SimpleNamespace(authenticate=authenticate), remember_login=REMEMBERED.append)


@pytest.mark.parametrize(
    ("user", "key", "allowed"),
    [
        ("ann", "k-review", True),
        ("ann", "k-ingest", False),  # a reviewer's integration key does not open the UI
        ("lead", "k-admin", True),  # admin scope implies review
        ("bob", "k-agent", False),  # role agent may not review
        ("lead", "k-review", False),  # someone else's key
        ("ann", "no-such-key", False),
    ],
)
def test_login_needs_review_role_and_review_scope(user, key, allowed):
    REMEMBERED.clear()
    assert login(context, user, key) is allowed
    assert REMEMBERED == ([KEYS[key]] if allowed else [])  # the session's key, checked on every action
