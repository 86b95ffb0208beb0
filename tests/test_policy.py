"""The SLA and routing policy on a table of cases, and the SLA clock (calendar and business
hours across a weekend and a holiday, pauses)."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from triage.clock import SlaClock, WorkingCalendar
from triage.errors import PolicyError
from triage.policy import DEFAULT_POLICY_PATH, Labels, Policy
from triage.settings import Settings

SH = timezone(timedelta(hours=8))  # Asia/Shanghai has no DST
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load()


def labels(dispute_type="quality", urgency=2, emotion="calm", escalation=False, vulnerable=False) -> Labels:
    return Labels(dispute_type, urgency, emotion, escalation, vulnerable)


# Every type x grade: (respond h, resolve h or None, owner tier) as the issue specifies.
TABLE = [
    ("quality", 1, 4, 24, "team_leader"),
    ("quality", 2, 8, 48, "supervisor"),
    ("quality", 3, 24, 72, "frontline"),
    ("service", 1, 2, 24, "team_leader"),
    ("service", 2, 4, 48, "supervisor"),
    ("service", 3, 6, 72, "frontline"),
    ("advertising", 1, 2, 24, "team_leader"),
    ("advertising", 2, 8, 48, "supervisor"),
    ("advertising", 3, 24, 72, "frontline"),
    ("refund", 1, 2, 24, "team_leader"),
    ("refund", 2, 8, 48, "supervisor"),
    ("refund", 3, 24, 72, "frontline"),
    ("other", 1, 24, None, "team_leader"),
    ("other", 2, 24, None, "supervisor"),
    ("other", 3, 24, None, "frontline"),
]


@pytest.mark.parametrize("dispute_type,grade,respond,resolve,tier", TABLE)
def test_sla_table(policy, dispute_type, grade, respond, resolve, tier):
    decision = policy.decide(labels(dispute_type, grade))
    assert decision.respond == timedelta(hours=respond)
    assert decision.resolve == (timedelta(hours=resolve) if resolve else None)
    assert decision.tier == tier
    assert decision.priority_grade == grade


@pytest.mark.parametrize("dispute_type,grade,respond,resolve,tier", TABLE)
def test_deadlines_from_receipt_on_calendar_clock(policy, dispute_type, grade, respond, resolve, tier):
    received = datetime(2026, 5, 8, 16, 30, tzinfo=SH)  # a Friday afternoon: calendar hours ignore it
    decision = policy.decide(labels(dispute_type, grade))
    assert policy.clock.deadline(received, decision.respond) == received + respond * H
    if resolve:
        assert policy.clock.deadline(received, decision.resolve) == received + resolve * H


def test_actions_follow_the_plans(policy):
    assert any("spare device" in a for a in policy.decide(labels("quality", 1)).actions)
    assert any("team leader" in a for a in policy.decide(labels("service", 1)).actions)
    assert any("legal" in a for a in policy.decide(labels("advertising", 1)).actions)
    assert any("legal" in a for a in policy.decide(labels("refund", 1)).actions)


def test_specialist_teams(policy):
    assert policy.decide(labels("quality", 1)).teams == ["technical", "logistics"]
    assert policy.decide(labels("quality", 2)).teams == []
    assert policy.decide(labels("advertising", 1)).teams == ["legal"]
    assert policy.decide(labels("advertising", 2)).teams == []
    assert "legal" in policy.decide(labels("service", 2, escalation=True)).teams
    assert "legal" in policy.decide(labels("refund", 2), text="假货，我要求退一赔三").teams
    assert "legal" in policy.decide(labels("refund", 2), rule_hits={"escalation_threat"}).teams
    assert policy.decide(labels("quality", 3), text="麦克风有杂音，能不能给我换货").teams == ["logistics"]
    assert policy.decide(labels("service", 3), text="客服态度差").teams == []


def test_angry_customer_goes_to_a_senior_agent_with_apology_hint(policy):
    calm = policy.decide(labels("service", 3))
    angry = policy.decide(labels("service", 3, emotion="angry"))
    assert calm.tier == "frontline" and not any("apologise" in h for h in calm.hints)
    assert angry.tier == "senior_agent"
    assert any("apologise first" in h for h in angry.hints)
    # never lowers a higher owner
    assert policy.decide(labels("service", 1, emotion="angry")).tier == "team_leader"
    assert policy.decide(labels("service", 2, emotion="upset")).tier == "supervisor"


def test_vulnerable_customer_one_grade_up(policy):
    decision = policy.decide(labels("quality", 3, vulnerable=True))
    assert decision.priority_grade == 2
    assert decision.respond == 8 * H and decision.tier == "supervisor"
    assert any("green channel" in h for h in decision.hints)
    top = policy.decide(labels("service", 1, vulnerable=True))
    assert top.priority_grade == 1 and top.respond == 2 * H


def test_breach_ladder(policy):
    assert policy.tiers == ["frontline", "senior_agent", "supervisor", "team_leader"]
    assert policy.escalated_tier("frontline", 1) == "senior_agent"
    assert policy.escalated_tier("supervisor", 1) == "team_leader"
    assert policy.escalated_tier("team_leader", 1) == "team_leader"
    assert policy.escalated_tier("frontline", 2) == "team_leader"


# ------------------------------------------------------------------ business-hours clock


@pytest.fixture(scope="module")
def business(policy) -> SlaClock:
    return SlaClock("business", policy.clock.calendar)


def test_business_hours_across_a_weekend(business):
    friday_5pm = datetime(2026, 5, 15, 17, 0, tzinfo=SH)
    # 1 h on Friday, Saturday and Sunday do not count, 3 h on Monday morning
    assert business.deadline(friday_5pm, 4 * H) == datetime(2026, 5, 18, 12, 0, tzinfo=SH)
    assert business.elapsed(friday_5pm, datetime(2026, 5, 18, 10, 0, tzinfo=SH)) == 2 * H


def test_business_hours_across_a_holiday_and_a_make_up_day(business):
    before_national_day = datetime(2026, 9, 30, 17, 0, tzinfo=SH)
    # 1 h on 30 September; 1-7 October are holidays; 8 October 09:00 + 3 h
    assert business.deadline(before_national_day, 4 * H) == datetime(2026, 10, 8, 12, 0, tzinfo=SH)
    # 10 October 2026 is a Saturday worked in exchange (调休): it counts
    friday_9_oct_5pm = datetime(2026, 10, 9, 17, 0, tzinfo=SH)
    assert business.deadline(friday_9_oct_5pm, 2 * H) == datetime(2026, 10, 10, 10, 0, tzinfo=SH)


def test_received_outside_working_hours_starts_next_morning(business):
    sunday_night = datetime(2026, 5, 17, 23, 0, tzinfo=SH)
    assert business.deadline(sunday_night, 1 * H) == datetime(2026, 5, 18, 10, 0, tzinfo=SH)
    assert business.elapsed(sunday_night, datetime(2026, 5, 18, 8, 59, tzinfo=SH)) == timedelta(0)


def test_calendar_clock_pauses_while_pending(policy):
    clock = policy.clock
    start = datetime(2026, 5, 6, 9, 0, tzinfo=SH)
    pause = (start + 1 * H, start + 4 * H)
    assert clock.deadline(start, 2 * H, [pause]) == start + 5 * H
    assert clock.elapsed(start, start + 5 * H, [pause]) == 2 * H
    # a pause that is still running: the deadline is unknown until resumed
    assert clock.deadline(start, 2 * H, [(start + 1 * H, None)]) is None
    assert clock.elapsed(start, start + 10 * H, [(start + 1 * H, None)]) == 1 * H


def test_business_clock_pause_across_the_night(business):
    start = datetime(2026, 5, 6, 16, 0, tzinfo=SH)  # Wednesday
    pause = (datetime(2026, 5, 6, 17, 0, tzinfo=SH), datetime(2026, 5, 7, 10, 0, tzinfo=SH))
    # 1 h Wednesday, paused until Thursday 10:00, then 3 h more
    assert business.deadline(start, 4 * H, [pause]) == datetime(2026, 5, 7, 13, 0, tzinfo=SH)


def test_calendar_rejects_nonsense():
    with pytest.raises(PolicyError, match="timezone"):
        WorkingCalendar(timezone="Mars/Olympus")
    with pytest.raises(PolicyError, match="before"):
        WorkingCalendar(start=time(18), end=time(9))
    with pytest.raises(PolicyError, match="working day"):
        WorkingCalendar(workdays=frozenset())
    with pytest.raises(PolicyError, match="mode"):
        SlaClock("lunar")
    everything_off = WorkingCalendar(workdays=frozenset({1}), holidays=frozenset(
        date(2026, 1, 5) + timedelta(days=7 * i) for i in range(200)))
    with pytest.raises(PolicyError, match="no working time"):
        SlaClock("business", everything_off).deadline(datetime(2026, 1, 1, tzinfo=timezone.utc), 1 * H)


# ------------------------------------------------------------------ the policy file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_override_by_path_takes_effect(tmp_path, monkeypatch):
    edited = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace(
        'type = "quality"\ngrade = 1\nrespond_hours = 4', 'type = "quality"\ngrade = 1\nrespond_hours = 1.5'
    ).replace('mode = "calendar"', 'mode = "business"')
    path = _write(tmp_path, edited)
    monkeypatch.setenv("TRIAGE_POLICY_PATH", str(path))
    policy = Policy.from_settings(Settings())
    assert policy.source == str(path)
    assert policy.decide(labels("quality", 1)).respond == timedelta(hours=1.5)
    assert policy.clock.mode == "business"


def test_shipped_policy_is_complete_and_documented():
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    assert len(data["sla"]) == 15
    assert "Source of the defaults" in text


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda t: t + "\n[[sla]\n", "not valid TOML"),
        (lambda t: t.replace('[[sla]]\ntype = "other"\ngrade = 3\nrespond_hours = 24\n', ""), "no rule for other/3"),
        (lambda t: t.replace('angry_tier = "senior_agent"', 'angry_tier = "boss"'), "boss"),
        (lambda t: t.replace('timezone = "Asia/Shanghai"', 'timezone = "Nowhere/City"'), "timezone"),
        (lambda t: t.replace("respond_hours = 4\n", "respond_hours = -4\n", 1), "respond_hours"),
        (lambda t: t.replace('type = "refund"', 'type = "refunds"', 1), "refunds"),
        (lambda t: t.replace("version = 1", "version = 1\nsurprise = true"), "surprise"),
    ],
)
def test_malformed_policy_names_the_problem(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(DEFAULT_POLICY_PATH.read_text(encoding="utf-8")))
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "nope.toml")
