"""Issue 12: reviewers log in to the desk with user name and password (argon2), sessions
expire and can be ended, repeated failures are slowed down (per user name and per address)
and audited; ``triage users set-password NAME`` reads the password from stdin."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from triage.errors import InvalidInput, NotFound, TooManyAttempts, Unauthorized
from triage.store import AuditEntry, LoginAttempt, User

pytest_plugins = ["fixtures_db"]

PASSWORD = "correct horse 7"


@pytest.fixture
def service(make_service):
    service = make_service(login_free_failures=2, login_delay_s=10, login_delay_max_s=60,
                           review_session_minutes=60)
    for name, role in (("sam", "reviewer"), ("lee", "admin"), ("ann", "agent")):
        service.create_user(name, role)
        service.set_password(name, PASSWORD)
    return service


def audit_actions(service, action):
    with service.db.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_passwords_are_argon2_hashes_and_must_be_long_enough(service):
    with service.db.session() as s:
        stored = s.scalar(select(User.password_hash).where(User.name == "sam"))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(InvalidInput, match="at least 10"):
        service.set_password("sam", "short")
    with pytest.raises(NotFound):
        service.set_password("nobody", PASSWORD)


def test_log_in_opens_a_session_that_expires_and_ends_on_log_out(service, clock):
    token, session = service.password_login("sam", PASSWORD, "10.0.0.1")
    assert (session.user, session.role, session.language) == ("sam", "reviewer", None)
    assert service.desk_session(token).user == "sam"
    assert service.desk_session("not-a-token") is None and service.desk_session(None) is None
    clock.advance(minutes=59)
    assert service.desk_session(token) is not None
    clock.advance(minutes=2)
    assert service.desk_session(token) is None  # TRIAGE_REVIEW_SESSION_MINUTES=60
    token, _ = service.password_login("sam", PASSWORD, "10.0.0.1")
    service.logout(token)
    assert service.desk_session(token) is None
    assert [e.actor for e in audit_actions(service, "user.logout")] == ["sam"]
    assert len(audit_actions(service, "user.login")) == 2


def test_a_new_password_deactivation_or_lost_role_ends_open_sessions(service):
    token, _ = service.password_login("sam", PASSWORD)
    service.set_password("sam", PASSWORD + "!")
    assert service.desk_session(token) is None
    token, _ = service.password_login("sam", PASSWORD + "!")
    with service.db.session(write=True) as s:
        s.execute(update(User).where(User.name == "sam").values(role="agent"))
    assert service.desk_session(token) is None  # a role without review ends it at the next click
    with service.db.session(write=True) as s:
        s.execute(update(User).where(User.name == "sam").values(role="reviewer"))
    assert service.desk_session(token).user == "sam"
    service.set_user_active("sam", False)
    assert service.desk_session(token) is None
    with pytest.raises(Unauthorized, match="deactivated"):
        service.password_login("sam", PASSWORD + "!")


def test_wrong_passwords_and_roles_without_review_are_refused_and_audited(service):
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        service.password_login("sam", "wrong password", "10.0.0.2")
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        service.password_login("nobody", PASSWORD, "10.0.0.3")
    with pytest.raises(Unauthorized, match="role agent"):
        service.password_login("ann", PASSWORD, "10.0.0.4")
    failed = audit_actions(service, "user.login_failed")
    assert [(e.after["name"], e.after["ip"]) for e in failed] == [("sam", "10.0.0.2"), ("nobody", "10.0.0.3"),
                                                                   ("ann", "10.0.0.4")]
    assert all(PASSWORD not in str(e.after) and "wrong password" not in str(e.after) for e in failed)


def test_repeated_failures_are_slowed_down_per_user_and_per_address(service, clock):
    for _ in range(2):  # TRIAGE_LOGIN_FREE_FAILURES=2
        with pytest.raises(Unauthorized, match="wrong"):
            service.password_login("sam", "guess", "10.0.0.9")
    # now even the right password waits 10 s (the password is not even checked)
    with pytest.raises(TooManyAttempts) as refused:
        service.password_login("sam", PASSWORD, "10.0.0.1")
    assert 9 <= refused.value.retry_after <= 10
    assert audit_actions(service, "user.login_throttled")
    # the address that guessed is slowed down for other user names too
    with pytest.raises(TooManyAttempts):
        service.password_login("lee", PASSWORD, "10.0.0.9")
    clock.advance(seconds=11)
    with pytest.raises(Unauthorized, match="wrong"):  # a third failure: the wait doubles
        service.password_login("sam", "guess", "10.0.0.9")
    clock.advance(seconds=11)
    with pytest.raises(TooManyAttempts) as refused:
        service.password_login("sam", PASSWORD, "10.0.0.1")
    assert 8 <= refused.value.retry_after <= 9
    clock.advance(seconds=10)
    service.password_login("sam", PASSWORD, "10.0.0.1")  # a success clears this user's count
    service.password_login("sam", PASSWORD, "10.0.0.1")
    with service.db.session() as s:
        assert s.scalar(select(LoginAttempt).where(LoginAttempt.ok).limit(1)) is not None
    # failures outside the window are forgotten
    for _ in range(2):
        with pytest.raises(Unauthorized):
            service.password_login("lee", "guess", "10.0.0.7")
    clock.advance(minutes=16)
    service.password_login("lee", PASSWORD, "10.0.0.7")
    # a day later the attempts table keeps only the new attempt; the audit log keeps them all
    clock.advance(days=2)
    service.password_login("lee", PASSWORD, "10.0.0.7")
    with service.db.session() as s:
        assert s.scalar(select(func.count()).select_from(LoginAttempt)) == 1
    assert len(audit_actions(service, "user.login_failed")) == 5


def test_the_desk_language_is_stored_per_user(service):
    service.set_language("sam", "en")
    token, session = service.password_login("sam", PASSWORD)
    assert session.language == "en"
    service.set_language("sam", None)
    assert service.desk_session(token).language is None
    with pytest.raises(InvalidInput, match="language"):
        service.set_language("sam", "fr")
    with pytest.raises(NotFound):
        service.set_language("nobody", "zh")


def test_cli_set_password_reads_stdin(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from triage.cli import app
    from triage.service import TriageService
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_CORPORA_DIR", "none")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["users", "add", "wei", "--role", "reviewer"]).exit_code == 0
        result = runner.invoke(app, ["users", "set-password", "wei"], input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output
        short = runner.invoke(app, ["users", "set-password", "wei"], input="short\n")
        assert short.exit_code == 1 and "at least 10" in short.output
        missing = runner.invoke(app, ["users", "set-password", "nobody"], input=PASSWORD + "\n")
        assert missing.exit_code == 1 and "does not exist" in missing.output
        service = TriageService.from_settings(get_settings())
        token, session = service.password_login("wei", PASSWORD)
        assert session.user == "wei"
        service.db.dispose()
    finally:
        get_settings.cache_clear()
