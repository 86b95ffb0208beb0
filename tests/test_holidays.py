"""The business-hours calendar from the holidays package, policy overrides, and the warning
for years the calendar does not cover (issue 10.9)."""

from __future__ import annotations

import logging
import tomllib
from datetime import date, datetime, timedelta, timezone

import pytest

from triage.clock import public_calendar
from triage.errors import PolicyError
from triage.policy import DEFAULT_POLICY_PATH, Policy

SH = timezone(timedelta(hours=8))
H = timedelta(hours=1)


def business_policy(**clock) -> Policy:
    data = tomllib.loads(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    data["clock"] = {**data["clock"], "mode": "business", **clock}
    return Policy.from_dict(data, "test")


def first_uncovered_year(policy: Policy) -> int:
    year = date.today().year
    while policy.clock.calendar.covers(year):
        year += 1
    return year


def test_the_shipped_policy_lists_no_dates_of_its_own():
    clock = tomllib.loads(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))["clock"]
    assert clock["holiday_calendar"] == "CN"
    assert clock["holidays"] == [] and clock["extra_workdays"] == []


def test_2027_public_holidays_are_not_working_days():
    calendar = business_policy().clock.calendar
    for day in (date(2027, 1, 1), date(2027, 2, 8), date(2027, 10, 1), date(2027, 10, 4)):
        assert day.isoweekday() <= 5 and not calendar.is_working_day(day), day
    assert calendar.is_working_day(date(2027, 10, 11))  # the Monday after National Day week


def test_make_up_working_days_come_from_the_package():
    calendar = business_policy().clock.calendar
    # 2026: the Sunday 4 January and Saturday 10 October are worked (调休), 2 January is off.
    assert calendar.is_working_day(date(2026, 1, 4)) and date(2026, 1, 4).isoweekday() == 7
    assert calendar.is_working_day(date(2026, 10, 10))
    assert not calendar.is_working_day(date(2026, 1, 2))
    assert not calendar.is_working_day(date(2026, 1, 3))  # an ordinary Saturday


def test_business_deadline_runs_over_the_package_holidays_and_a_make_up_day():
    clock = business_policy().clock
    # 30 Sep 2026 17:00 + 4 h: 1 h that day, 1-7 October off, 8 October 09:00 + 3 h.
    assert clock.deadline(datetime(2026, 9, 30, 17, tzinfo=SH), 4 * H) == datetime(2026, 10, 8, 12, tzinfo=SH)
    # Friday 9 Oct 17:00 + 2 h: the Saturday 10 October is a make-up working day.
    assert clock.deadline(datetime(2026, 10, 9, 17, tzinfo=SH), 2 * H) == datetime(2026, 10, 10, 10, tzinfo=SH)


def test_the_policy_adds_company_days_and_overrides_the_package():
    policy = business_policy(holidays=["2026-12-24"], extra_workdays=["2027-10-01"])
    calendar = policy.clock.calendar
    assert not calendar.is_working_day(date(2026, 12, 24))  # a company day off
    assert calendar.is_working_day(date(2027, 10, 1))  # worked although a public holiday
    assert not calendar.is_working_day(date(2027, 10, 4))


def test_holiday_calendar_none_uses_only_the_file():
    calendar = business_policy(holiday_calendar="none", holidays=["2027-10-01"]).clock.calendar
    assert not calendar.is_working_day(date(2027, 10, 1))
    assert calendar.is_working_day(date(2027, 10, 4))  # no package: an ordinary Monday
    assert calendar.covers(2027) and not calendar.covers(2028)


def test_bad_calendar_settings_are_refused_clearly():
    with pytest.raises(PolicyError, match="no calendar for 'XX'"):
        business_policy(holiday_calendar="XX")
    with pytest.raises(PolicyError, match="both as holiday and as extra working day"):
        business_policy(holidays=["2027-10-01"], extra_workdays=["2027-10-01"])


def test_a_deadline_in_an_uncovered_year_warns_loudly(caplog):
    policy = business_policy()
    year = first_uncovered_year(policy)
    start = datetime(year, 3, 2, 10, tzinfo=SH)
    with caplog.at_level(logging.WARNING, logger="triage.clock"):
        deadline = policy.clock.deadline(start, 4 * H)
    assert policy.clock.uncovered_years(start, deadline) == [year]
    assert any(str(year) in r.getMessage() and "调休" in r.getMessage() for r in caplog.records)
    caplog.clear()
    covered_start = datetime(2026, 3, 2, 10, tzinfo=SH)
    with caplog.at_level(logging.WARNING, logger="triage.clock"):
        covered = policy.clock.deadline(covered_start, 4 * H)
    assert policy.clock.uncovered_years(covered_start, covered) == []
    assert not caplog.records


def test_listing_a_year_as_covered_silences_the_warning(caplog):
    policy = business_policy()
    year = first_uncovered_year(policy)
    covered = business_policy(covered_years=[year], holidays=[f"{year}-10-01"])
    start = datetime(year, 3, 2, 10, tzinfo=SH)
    with caplog.at_level(logging.WARNING, logger="triage.clock"):
        covered.clock.deadline(start, 4 * H)
    assert covered.clock.uncovered_years(start, start + 48 * H) == []
    assert not [r for r in caplog.records if r.name == "triage.clock"]


def test_policy_load_warns_when_this_or_next_year_is_not_covered():
    policy = business_policy()
    this_year = datetime.now(SH).year
    missing = [y for y in (this_year, this_year + 1) if not policy.clock.calendar.covers(y)]
    if missing:
        assert policy.warnings and all(str(y) in policy.warnings[0] for y in missing)
    else:
        assert policy.warnings == []
    everything = business_policy(covered_years=[this_year, this_year + 1])
    assert everything.warnings == []
    assert Policy.load().warnings == []  # calendar mode: holidays do not matter


def test_package_years_with_an_official_arrangement():
    calendar = public_calendar("CN", range(2024, 2027))
    assert {2024, 2025, 2026} <= calendar.official_years
    assert date(2026, 1, 4) in calendar.make_up_workdays
