"""SLA clocks: how much of a deadline's time has passed, and when a deadline falls.

Two kinds of time count towards a deadline: *calendar* time (every hour counts) and
*business* time (only hours inside the working calendar count: working days, working hours,
minus holidays, plus make-up working days 调休). In both, time while a case waits on the
customer (status ``pending``) does not count: the caller passes those pause intervals.

Public holidays and 调休 come from the ``holidays`` package (:func:`public_calendar`), which
follows the State Council's yearly notices; the policy file can add company days and
override any date. A year whose official arrangement neither the package nor the policy
knows is *not covered*: a business-hours deadline that counts time in it is logged as a
warning and reported by :meth:`SlaClock.uncovered_years`, since its holidays are the
package's estimates without make-up working days.

All datetimes are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from triage.errors import InvalidInput, PolicyError

log = logging.getLogger(__name__)

UTC = timezone.utc
Interval = tuple[datetime, datetime | None]  # (start, end); end None: still running
_MAX_SEARCH_DAYS = 3 * 366  # a deadline further than this is a broken calendar, not a date
MAX_CLOCK_SKEW = timedelta(minutes=5)  # a reported moment may be this far in the future (clock drift)


@dataclass(frozen=True)
class PublicCalendar:
    """One country's public holidays and make-up working days, and the years they are official for."""

    country: str
    holidays: frozenset[date]
    make_up_workdays: frozenset[date]  # 调休: weekend days that are working days
    official_years: frozenset[int]  # years whose State Council arrangement the package carries
    package_version: str


def public_calendar(country: str, years: Iterable[int]) -> PublicCalendar:
    """Holidays of ``country`` (an ISO code the ``holidays`` package knows, e.g. ``CN``) for ``years``.

    A year counts as official when the package lists make-up working days or special days
    off for it: the State Council publishes them in a yearly notice that the package
    follows, while its other years are computed from the statutory rules.
    """
    return _public_calendar(country.upper(), tuple(sorted(set(years))))


@lru_cache(maxsize=8)
def _public_calendar(country: str, years: tuple[int, ...]) -> PublicCalendar:
    import holidays as holiday_package

    try:
        table = holiday_package.country_holidays(country, years=years)
    except NotImplementedError:
        raise PolicyError(f"clock.holiday_calendar: the holidays package has no calendar for {country!r}") from None
    days = frozenset(d for d in table if d.year in years)
    make_up = frozenset(d for d in getattr(table, "weekend_workdays", ()) if d.year in years)
    official = {d.year for d in make_up}
    special = getattr(type(table), "special_public_holidays", {})
    official |= {y for y in special if isinstance(y, int) and y in years}
    return PublicCalendar(country, days, make_up, frozenset(official), holiday_package.__version__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (that is how the database stores them)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


EARLIEST_INPUT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)


def input_time_utc(moment: datetime, field: str) -> datetime:
    """A client's timestamp in UTC, or :class:`InvalidInput` naming ``field``: it needs an
    offset and must lie after :data:`EARLIEST_INPUT_TIME` (``0001-01-01T00:00:00+14:00`` has
    no UTC equivalent, and deadlines are computed forward from it)."""
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} needs a timezone offset, e.g. 2026-05-01T10:00:00+08:00", field=field)
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{field} {moment.isoformat()} is outside the representable range", field=field) from None
    if utc < EARLIEST_INPUT_TIME:
        raise InvalidInput(f"{field} is before {EARLIEST_INPUT_TIME.date().isoformat()}", field=field)
    return utc


def iso(moment: datetime | None) -> str | None:
    """``moment`` in UTC as ISO 8601 (how audit entries, pauses and webhooks carry time)."""
    return None if moment is None else as_utc(moment).isoformat()


@dataclass(frozen=True)
class WorkingCalendar:
    """Working days and hours in one timezone, with holidays and make-up working days."""

    timezone: str = "Asia/Shanghai"
    workdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})  # ISO weekday: 1 Monday .. 7 Sunday
    start: time = time(9, 0)
    end: time = time(18, 0)
    holidays: frozenset[date] = field(default_factory=frozenset)
    extra_workdays: frozenset[date] = field(default_factory=frozenset)  # 调休: weekend days worked
    # Years whose holidays and make-up days are known to be complete; None: no such claim
    # (a calendar typed by hand), so no year is reported as uncovered.
    covered_years: frozenset[int] | None = None

    def __post_init__(self):
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"clock.timezone: unknown timezone {self.timezone!r}") from None
        if not self.start < self.end:
            raise PolicyError(f"clock.hours: start {self.start} must be before end {self.end}")
        if not self.workdays and not self.extra_workdays:
            raise PolicyError("clock.workdays: a business-hours calendar needs at least one working day")
        bad = [d for d in self.workdays if d not in range(1, 8)]
        if bad:
            raise PolicyError(f"clock.workdays: ISO weekdays are 1 (Monday) .. 7 (Sunday), got {bad}")

    def covers(self, year: int) -> bool:
        return self.covered_years is None or year in self.covered_years

    def is_working_day(self, day: date) -> bool:
        if day in self.holidays:
            return False
        return day in self.extra_workdays or day.isoweekday() in self.workdays

    def working_intervals(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals (UTC) that end after ``since``, in order, for up to three years."""
        zone = ZoneInfo(self.timezone)
        day = as_utc(since).astimezone(zone).date() - timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            if self.is_working_day(day):
                lo = datetime.combine(day, self.start, zone).astimezone(UTC)
                hi = datetime.combine(day, self.end, zone).astimezone(UTC)
                if hi > since:
                    yield max(lo, as_utc(since)), hi
            day += timedelta(days=1)


@dataclass(frozen=True)
class SlaClock:
    """Counts deadline time either on the calendar or on a :class:`WorkingCalendar`."""

    mode: str = "calendar"  # "calendar" or "business"
    calendar: WorkingCalendar | None = None
    _warned: set = field(default_factory=set, compare=False, repr=False)  # years already logged

    def __post_init__(self):
        if self.mode not in ("calendar", "business"):
            raise PolicyError(f"clock.mode must be 'calendar' or 'business', got {self.mode!r}")
        if self.mode == "business" and self.calendar is None:
            raise PolicyError("clock.mode 'business' needs a working calendar")

    def _active(self, start: datetime, pauses: Sequence[Interval]) -> Iterator[tuple[datetime, datetime]]:
        """Intervals from ``start`` on during which the clock runs (working time minus pauses)."""
        start = as_utc(start)
        if self.mode == "calendar":
            base: Iterable[tuple[datetime, datetime]] = [(start, datetime.max.replace(tzinfo=UTC))]
        else:
            base = self.calendar.working_intervals(start)
        cuts = sorted((as_utc(a), as_utc(b) if b is not None else None) for a, b in pauses)
        for lo, hi in base:
            for p_lo, p_hi in cuts:
                if p_hi is not None and p_hi <= lo:
                    continue
                if p_lo >= hi:
                    break
                if p_lo > lo:
                    yield lo, p_lo
                if p_hi is None:
                    return  # paused now: the clock never runs again until resumed
                lo = max(lo, p_hi)
                if lo >= hi:
                    break
            if lo < hi:
                yield lo, hi

    def elapsed(self, start: datetime, now: datetime, pauses: Sequence[Interval] = ()) -> timedelta:
        """Deadline time that has run between ``start`` and ``now``."""
        now = as_utc(now)
        total = timedelta()
        for lo, hi in self._active(start, pauses):
            if lo >= now:
                break
            total += min(hi, now) - lo
        return total

    def uncovered_years(self, start: datetime, end: datetime | None) -> list[int]:
        """Years between ``start`` and ``end`` (local time) that the business calendar does not cover."""
        if self.mode != "business" or self.calendar.covered_years is None or end is None:
            return []
        zone = ZoneInfo(self.calendar.timezone)
        first, last = as_utc(start).astimezone(zone).year, as_utc(end).astimezone(zone).year
        return [y for y in range(first, last + 1) if not self.calendar.covers(y)]

    def _warn_uncovered(self, start: datetime, end: datetime | None) -> None:
        for year in self.uncovered_years(start, end):
            if year in self._warned:
                continue
            self._warned.add(year)  # a race between threads only logs twice
            log.warning(
                "business-hours deadline in %s, a year the holiday calendar does not cover: its public "
                "holidays are estimates and its make-up working days (调休) are unknown, so deadlines "
                "there may be wrong; add that year's official dates to the policy's [clock] holidays and "
                "extra_workdays and list it in covered_years, or upgrade the holidays package", year,
            )

    def deadline(self, start: datetime, budget: timedelta, pauses: Sequence[Interval] = ()) -> datetime | None:
        """The moment when ``budget`` of deadline time has run; None while paused before that.

        A business-hours deadline that counts time in a year the calendar does not cover is
        logged as a warning (once per year and clock); :meth:`uncovered_years` says which.
        """
        result = self._deadline(start, budget, pauses)
        self._warn_uncovered(start, result)
        return result

    def _deadline(self, start: datetime, budget: timedelta, pauses: Sequence[Interval] = ()) -> datetime | None:
        left = budget
        cursor = as_utc(start)
        for lo, hi in self._active(start, pauses):
            cursor = lo
            if hi - lo >= left:
                return lo + left
            left -= hi - lo
            cursor = hi
        if self.mode == "business" and not any(p[1] is None for p in pauses):
            raise PolicyError(f"no working time within {_MAX_SEARCH_DAYS} days after {cursor}; check the calendar")
        return None
