"""First-contact ownership (首接负责制) and the follow-up call (回访): the first responder owns
the case, a transfer is explicit and audited, resolved starts a 24 h follow-up deadline, a low
satisfaction reopens the case to its owner, a missed call warns and breaches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from fixtures_db import T0
from triage.errors import Conflict, InvalidInput
from triage.jobs.sla_monitor import SlaMonitor
from triage.store import WebhookDelivery

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL

H = timedelta(hours=1)


def new_case(service, external_id="m1"):
    return service.ingest({"source": "shop", "external_id": external_id, "text": "X5声卡没有声音了"}).case


def resolved_case(service, clock):
    """A case 小王 answered first (and so owns) and resolved at T0 + 1 h: its follow-up is due at T0 + 25 h."""
    case = new_case(service)
    clock.moment = T0 + H
    service.record_case_event(case.id, "first_response", "api:desk", agent="小王")
    service.record_case_event(case.id, "resolved", "api:desk")
    return case


def test_first_responder_owns_and_transfer_is_audited(make_service, clock):
    service = make_service()
    case = new_case(service)
    assert service.get_case(case.id).owner is None
    clock.moment = T0 + H
    owned = service.record_case_event(case.id, "first_response", "api:desk", agent="小王")
    assert owned.owner == "小王"
    with pytest.raises(InvalidInput, match="agent"):
        service.record_case_event(case.id, "transferred", "api:desk")
    with pytest.raises(Conflict):
        service.record_case_event(case.id, "transferred", "api:desk", agent="小王")
    moved = service.record_case_event(case.id, "transferred", "api:desk", agent="李组长", note="需要技术支持")
    assert moved.owner == "李组长"
    audit = [a for a in service.list_audit("case", case.id) if a.action == "case.transferred"]
    assert audit[0].before == {"owner": "小王"} and audit[0].after == {"owner": "李组长"}
    # without an agent, the caller responding owns the case
    other = new_case(service, "m2")
    assert service.record_case_event(other.id, "first_response", "api:desk").owner == "desk"


def test_resolved_due_in_24h_low_satisfaction_reopens_to_the_owner(make_service, clock, database):
    service = make_service(webhook_urls=["http://127.0.0.1:9/hook"])
    case = new_case(service)
    clock.moment = T0 + H
    service.record_case_event(case.id, "first_response", "api:desk", agent="小王")
    clock.moment = T0 + 5 * H
    resolved = service.record_case_event(case.id, "resolved", "api:desk")
    assert resolved.followup_due_at == T0 + 29 * H and resolved.followed_up_at is None
    with pytest.raises(InvalidInput, match="satisfaction"):
        service.record_case_event(case.id, "followed_up", "api:desk")
    with pytest.raises(InvalidInput, match="satisfaction"):
        service.record_case_event(case.id, "followed_up", "api:desk", satisfaction=6)
    with pytest.raises(InvalidInput, match="satisfaction"):
        service.record_case_event(case.id, "closed", "api:desk", satisfaction=3)
    assert service.get_case(case.id).status == "resolved"  # bad input changed nothing
    clock.moment = T0 + 10 * H
    reopened = service.record_case_event(case.id, "followed_up", "api:desk", satisfaction=2, note="还是有杂音")
    assert (reopened.status, reopened.owner, reopened.satisfaction) == ("open", "小王", 2)
    assert reopened.followed_up_at == T0 + 10 * H and reopened.resolved_at is None
    with database.session() as s:
        events = [d.payload for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "reopened"))]
    assert len(events) == 1 and events[0]["owner"] == "小王" and events[0]["case"]["satisfaction"] == 2
    # a good score leaves it resolved
    clock.moment = T0 + 12 * H
    service.record_case_event(case.id, "resolved", "api:desk")
    clock.moment = T0 + 13 * H
    fine = service.record_case_event(case.id, "followed_up", "api:desk", satisfaction=4)
    assert fine.status == "resolved" and fine.satisfaction == 4
    with pytest.raises(Conflict):
        service.record_case_event(new_case(service, "m3").id, "followed_up", "api:desk", satisfaction=5)


def test_missed_follow_up_warns_then_breaches(make_service, clock):
    service = make_service()
    case = resolved_case(service, clock)
    monitor = SlaMonitor(service)
    clock.moment = T0 + H + 17 * H
    assert monitor.run_once().events == 0
    clock.moment = T0 + H + 18 * H  # 0.75 of 24 h
    report = monitor.run_once()
    assert report.warnings == [(case.id, "followup")] and report.breaches == []
    clock.moment = T0 + 25 * H
    report = monitor.run_once()
    assert report.breaches == [(case.id, "followup")]
    assert monitor.run_once().events == 0
    after = service.get_case(case.id)
    assert after.followup_breached and after.status == "resolved"
    assert [b.deadline for b in service.list_breaches()] == ["followup"]


def test_case_events_api_for_follow_up(make_service, clock):
    service = make_service()
    service.create_user("desk", "integration")
    key = service.create_api_key("desk", ["ingest"])[1]
    case = new_case(service)
    clock.moment = T0 + 2 * H
    with TestClient(create_app(service.settings, service=service, background=False)) as client:
        h = {"Authorization": f"Bearer {key}"}
        r = client.post(f"/v1/cases/{case.id}/events", json={"event": "first_response", "agent": "小王"}, headers=h)
        assert r.status_code == 200 and r.json()["owner"] == "小王"
        assert client.post(f"/v1/cases/{case.id}/events", json={"event": "resolved"}, headers=h).status_code == 200
        for bad in ({"event": "followed_up"}, {"event": "followed_up", "satisfaction": 0},
                    {"event": "followed_up", "satisfaction": "5"}, {"event": "followed_up", "satisfaction": 2.5}):
            r = client.post(f"/v1/cases/{case.id}/events", json=bad, headers=h)
            assert r.status_code == 422 and "satisfaction" in r.text, bad
        r = client.post(f"/v1/cases/{case.id}/events", json={"event": "followed_up", "satisfaction": 1}, headers=h)
        assert r.status_code == 200
        got = client.get(f"/v1/cases/{case.id}", headers=h).json()
        assert (got["owner"], got["satisfaction"], got["status"]) == ("小王", 1, "open")
        assert got["followup_due_at"] and got["followed_up_at"]


def test_follow_up_compliance_and_satisfaction_per_type_and_tier(make_service, clock):
    from review_ui import render

    service = make_service()
    cases = [new_case(service, f"f{i}") for i in range(3)]
    clock.moment = T0 + H
    for case in cases:
        service.record_case_event(case.id, "first_response", "api:desk", agent="小王")
        service.record_case_event(case.id, "resolved", "api:desk")
    clock.moment = T0 + 5 * H
    service.record_case_event(cases[0].id, "followed_up", "api:desk", satisfaction=5)
    assert sum(s["due"] for s in service.followup_stats()) == 1  # the other two are not due yet
    clock.moment = T0 + 30 * H
    service.record_case_event(cases[1].id, "followed_up", "api:desk", satisfaction=3)  # late
    SlaMonitor(service).run_once()  # the third is missed
    stats = service.followup_stats()
    assert sum(s["due"] for s in stats) == 3 and sum(s["on_time"] for s in stats) == 1
    assert sum(s["missed"] for s in stats) == 1
    # the missed call moved its case one tier up, so it counts in its own group
    [called] = [g for g in stats if g["due"] == 2]
    assert (called["on_time"], called["missed"], called["satisfaction"]) == (1, 0, 4.0)
    html = render.early_warning([], [], stats)
    assert "回访" in html and "暂无到期回访" not in html  # the desk's default language
    from review_ui.messages import Translator

    html = render.early_warning([], [], stats, Translator("en"))
    assert "Follow-up calls" in html and "No follow-up call due yet" not in html


def test_breach_and_reopening_notify_the_owner_and_the_next_tier(make_service, clock, database):
    """A breach and a reopening name the owner and the tier above the case's (routing.tiers), in
    the webhook payload and the audit entry."""
    service = make_service(webhook_urls=["http://127.0.0.1:9/hook"])
    policy = service.core.policy
    assert policy.next_tier("frontline") == "senior_agent" and policy.next_tier(policy.tiers[-1]) is None
    case = new_case(service)
    clock.moment = T0 + H
    service.record_case_event(case.id, "first_response", "api:desk", agent="小王")
    clock.moment = T0 + 400 * H  # long past the resolution deadline
    assert SlaMonitor(service).run_once().breaches == [(case.id, "resolve")]
    breach = service.list_breaches()[0]
    assert breach.tier_before != breach.tier_after
    with database.session() as s:
        payloads = [d.payload for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "breached"))]
    assert payloads[0]["notify"] == {"owner": "小王", "next_tier": policy.next_tier(breach.tier_before)}
    sla = [a for a in service.list_audit("case", case.id) if a.action == "case.sla"]
    assert f"notify owner 小王, next tier {policy.next_tier(breach.tier_before)}" in sla[-1].reason

    service.record_case_event(case.id, "resolved", "api:desk")
    reopened = service.record_case_event(case.id, "followed_up", "api:desk", satisfaction=1, note="没修好")
    with database.session() as s:
        payloads = [d.payload for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "reopened"))]
    expected = {"owner": "小王", "next_tier": policy.next_tier(reopened.tier)}
    assert payloads[0]["notify"] == expected and payloads[0]["owner"] == "小王"
    entry = next(a for a in service.list_audit("case", case.id) if a.action == "case.followed_up")
    assert entry.reason == f"没修好; notify owner 小王, next tier {expected['next_tier'] or '-'}"


def test_follow_up_breaches_again_after_a_reopening(make_service, clock):
    """Each resolution starts a follow-up round: a missed call after a reopening breaches again."""
    service = make_service()
    case = resolved_case(service, clock)
    monitor = SlaMonitor(service)
    clock.moment = T0 + 26 * H
    assert monitor.run_once().breaches == [(case.id, "followup")]
    clock.moment = T0 + 27 * H
    reopened = service.record_case_event(case.id, "followed_up", "api:desk", satisfaction=1)
    assert reopened.status == "open" and reopened.followup_breached  # the missed first call stays on record
    clock.moment = T0 + 28 * H
    again = service.record_case_event(case.id, "resolved", "api:desk")
    assert again.followup_due_at == T0 + 52 * H and not again.followup_breached
    clock.moment = T0 + 53 * H
    report = monitor.run_once()
    assert report.breaches == [(case.id, "followup")] and monitor.run_once().events == 0
    breaches = [b for b in service.list_breaches() if b.deadline == "followup"]
    assert [b.occurred_at for b in breaches] == [T0 + 25 * H, T0 + 52 * H]
    assert service.get_case(case.id).followup_breached
