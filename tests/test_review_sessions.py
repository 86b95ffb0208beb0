"""Issue 10.6: a review UI session follows the current state of its user and key. Revoking
the key it logged in with, deactivating the user or changing the role ends it at the next
action (the same process; other processes follow within the key cache, AUTH_CACHE_S)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from review_ui.app import login
from triage.contexts.review import ReviewContext
from triage.errors import Forbidden, Unauthorized
from triage.store.tables import User

pytest_plugins = ["fixtures_db"]


@pytest.fixture
def context(make_service, tmp_path):
    from models.store import ModelStore

    service = make_service()
    service.create_user("sam", "reviewer")
    return ReviewContext(service, ModelStore(tmp_path / "store"), service.settings)


def test_revoking_the_login_key_ends_the_session(context):
    service = context.service
    _, key = service.create_api_key("sam", ["review"])
    service.create_api_key("sam", ["review"])  # another key, not used to log in
    assert login(lambda: context, "sam", key)
    assert context.require_reviewer("sam") == "sam"
    service.revoke_api_key(service.authenticate(key).key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        context.require_reviewer("sam")
    assert not login(lambda: context, "sam", key)


def test_a_second_login_with_a_valid_key_keeps_working(context):
    service = context.service
    _, first = service.create_api_key("sam", ["review"])
    _, second = service.create_api_key("sam", ["review"])
    assert login(lambda: context, "sam", first) and login(lambda: context, "sam", second)
    service.revoke_api_key(service.authenticate(first).key_id)
    assert context.require_reviewer("sam") == "sam"  # the session opened with the second key


def test_deactivating_the_user_or_changing_the_role_ends_the_session(context):
    service = context.service
    _, key = service.create_api_key("sam", ["review"])
    assert login(lambda: context, "sam", key)
    with service.db.session(write=True) as s:
        s.execute(update(User).where(User.name == "sam").values(role="agent"))
    with pytest.raises(Forbidden, match="role agent"):
        context.require_reviewer("sam")
    with service.db.session(write=True) as s:
        s.execute(update(User).where(User.name == "sam").values(role="reviewer"))
    assert context.require_reviewer("sam") == "sam"
    service.set_user_active("sam", False)
    with pytest.raises(Forbidden):
        context.require_reviewer("sam")
