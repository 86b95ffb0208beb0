"""The SLA monitor: warning at the configured share, breach at the deadline, one tier up,
second breach to the team leader, pauses, catch-up after a restart, and several monitors
against one database escalating each case once."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from fixtures_db import T0

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.jobs.sla_monitor import SlaMonitor
from triage.policy import DEFAULT_POLICY_PATH, Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import Database, SlaEvent, WebhookDelivery

H = timedelta(hours=1)


def new_case(service, external_id="m1", dispute_type="service", urgency=3, emotion="calm", **kw):
    """A case with known labels (service/3: respond 6 h, resolve 72 h, frontline)."""
    case = service.ingest({"source": "shop", "external_id": external_id, "text": "客服一直不回复我的消息", **kw}).case
    return service.apply_labels(case.id, {"dispute_type": dispute_type, "urgency": urgency, "emotion": emotion,
                                          "escalation": False, "vulnerable": False}, "setup", review=False)


def test_warning_then_breach_then_second_breach(make_service, clock, database):
    service = make_service(webhook_urls=["http://127.0.0.1:9/hook"])
    case = new_case(service)
    assert (case.tier, case.respond_due_at, case.resolve_due_at) == ("frontline", T0 + 6 * H, T0 + 72 * H)
    assert case.respond_warn_at == T0 + 4.5 * H
    monitor = SlaMonitor(service)

    clock.moment = T0 + 4 * H
    assert monitor.run_once().events == 0
    clock.moment = T0 + 4.5 * H
    report = monitor.run_once()
    assert report.warnings == [(case.id, "respond")] and report.breaches == []
    assert service.get_case(case.id).respond_warned
    assert monitor.run_once().events == 0  # once only

    clock.moment = T0 + 6 * H
    report = monitor.run_once()
    assert report.breaches == [(case.id, "respond")]
    after_first = service.get_case(case.id)
    assert after_first.tier == "senior_agent" and after_first.respond_breached and after_first.breach_count == 1

    clock.moment = T0 + 72 * H
    report = monitor.run_once()
    assert report.warnings == [] and report.breaches == [(case.id, "resolve")]  # warning at 54 h was missed: superseded
    after_second = service.get_case(case.id)
    assert after_second.tier == "team_leader" and after_second.breach_count == 2
    assert after_second.breached

    breaches = service.list_breaches()
    assert [(b.deadline, b.occurred_at, b.tier_before, b.tier_after) for b in breaches] == [
        ("respond", T0 + 6 * H, "frontline", "senior_agent"),
        ("resolve", T0 + 72 * H, "senior_agent", "team_leader"),
    ]
    assert [b.deadline for b in service.list_breaches(since=T0 + 10 * H)] == ["resolve"]
    audit = [a for a in service.list_audit("case", case.id) if a.action == "case.sla"]
    assert [a.after.get("tier") for a in audit] == [None, "senior_agent", "team_leader"]
    assert audit[0].after == {"respond_warned": True} and audit[0].actor == "sla-monitor"
    with database.session() as s:
        events = [d.event for d in s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))]
    assert events == ["triaged", "warning", "breached", "escalated", "breached", "escalated"]


def test_warning_share_is_configurable(make_service, clock):
    service = make_service(sla_warning_share=0.5)
    case = new_case(service)
    assert case.respond_warn_at == T0 + 3 * H
    clock.moment = T0 + 3 * H
    assert SlaMonitor(service).run_once().warnings == [(case.id, "respond")]


def test_met_deadlines_do_not_breach(make_service, clock):
    service = make_service()
    case = new_case(service)
    clock.moment = T0 + 1 * H
    service.record_case_event(case.id, "first_response", "agent")
    clock.moment = T0 + 50 * H
    service.record_case_event(case.id, "resolved", "agent")
    clock.moment = T0 + 60 * H  # the follow-up call (回访) is a deadline too: met within 24 h
    service.record_case_event(case.id, "followed_up", "agent", satisfaction=5)
    clock.moment = T0 + 500 * H
    assert SlaMonitor(service).run_once().events == 0
    assert service.list_breaches() == []


def test_pending_stops_the_clock(make_service, clock):
    service = make_service()
    case = new_case(service)
    monitor = SlaMonitor(service)
    clock.moment = T0 + 1 * H
    service.record_case_event(case.id, "pending", "agent")
    clock.moment = T0 + 30 * H  # far past the 6 h deadline, but waiting on the customer
    assert monitor.run_once().events == 0
    resumed = service.record_case_event(case.id, "resumed", "agent")
    assert resumed.respond_due_at == T0 + 35 * H  # 1 h used before the pause, 5 h left
    clock.moment = T0 + 35 * H
    assert monitor.run_once().breaches == [(case.id, "respond")]


def test_catch_up_after_restart(make_service, clock):
    service = make_service()
    cases = [new_case(service, external_id=str(i)) for i in range(3)]
    SlaMonitor(service).run_once()  # nothing due yet
    clock.moment = T0 + 100 * H  # the server was down for four days
    restarted = SlaMonitor(service)
    report = restarted.run_once()
    assert sorted(report.breaches) == sorted((c.id, d) for c in cases for d in ("respond", "resolve"))
    for c in cases:
        view = service.get_case(c.id)
        assert view.tier == "team_leader" and view.breach_count == 2
    occurred = {b.occurred_at for b in service.list_breaches()}
    assert occurred == {T0 + 6 * H, T0 + 72 * H}  # when they happened, not when noticed
    assert restarted.run_once().events == 0


def test_label_change_after_breach_keeps_the_escalation(make_service, clock):
    service = make_service()
    case = new_case(service)
    clock.moment = T0 + 7 * H
    SlaMonitor(service).run_once()
    assert service.get_case(case.id).tier == "senior_agent"
    corrected = service.apply_labels(case.id, {"urgency": 2}, "reviewer")
    assert corrected.tier == "team_leader"  # supervisor for grade 2, plus the breach's one tier
    assert corrected.respond_due_at == T0 + 4 * H


def test_business_hours_breach_after_the_weekend(make_service, clock, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace('mode = "calendar"', 'mode = "business"'),
                    encoding="utf-8")
    friday_5pm = datetime(2026, 5, 15, 9, 0, tzinfo=timezone.utc)  # 17:00 in Shanghai
    clock.moment = friday_5pm
    service = make_service(policy=Policy.load(path))
    case = new_case(service)
    # 6 business hours: 1 on Friday, 5 on Monday -> Monday 14:00 Shanghai
    assert case.respond_due_at == datetime(2026, 5, 18, 6, 0, tzinfo=timezone.utc)
    clock.moment = datetime(2026, 5, 17, 12, 0, tzinfo=timezone.utc)  # Sunday
    assert SlaMonitor(service).run_once().events == 0
    clock.moment = datetime(2026, 5, 18, 6, 0, tzinfo=timezone.utc)
    assert SlaMonitor(service).run_once().breaches == [(case.id, "respond")]


def test_several_monitors_escalate_each_case_once(make_service, database_url, tiny_triager, clock):
    service = make_service()
    cases = [new_case(service, external_id=str(i)) for i in range(12)]
    clock.moment = T0 + 100 * H
    databases = [Database(database_url) for _ in range(4)]
    monitors = [SlaMonitor(TriageService(db, Policy.load(), tiny_triager, Settings(), now=clock, webhook_urls=[]),
                           actor=f"monitor-{i}") for i, db in enumerate(databases)]
    barrier = threading.Barrier(len(monitors))
    reports = [None] * len(monitors)
    errors = []

    def run(i):
        try:
            barrier.wait()
            reports[i] = monitors[i].run_once()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(monitors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for db in databases:
        db.dispose()
    assert errors == []
    breaches = [b for r in reports for b in r.breaches]
    assert sorted(breaches) == sorted((c.id, d) for c in cases for d in ("respond", "resolve"))
    with service.db.session() as s:
        assert s.scalar(select(func.count()).select_from(SlaEvent)) == 24
    for c in cases:
        view = service.get_case(c.id)
        assert view.breach_count == 2 and view.tier == "team_leader"
        assert len([a for a in service.list_audit("case", c.id) if a.action == "case.sla"]) == 1


def test_monitor_thread_runs_and_stops(make_service, clock):
    service = make_service()
    case = new_case(service)
    clock.moment = T0 + 7 * H
    monitor = SlaMonitor(service, interval_s=0.05)
    monitor.start()
    try:
        for _ in range(100):
            if service.get_case(case.id).respond_breached:
                break
            threading.Event().wait(0.05)
    finally:
        monitor.stop()
    assert service.get_case(case.id).respond_breached
    assert monitor.last_error is None
