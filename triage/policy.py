"""The SLA and routing policy: read from a TOML file, applied to a triage decision.

The policy is data (``triage/policy/default.toml``, overridable with ``TRIAGE_POLICY_PATH``);
this module only validates it and applies it. Given the labels of a case it answers: which
grade counts for the clock (vulnerable customers go one grade up), which deadlines apply,
which tier owns the case, which specialist teams join, and which hints the agent sees.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triage.clock import SlaClock, WorkingCalendar, public_calendar
from triage.errors import PolicyError
from triage.taxonomy import DISPUTE_TYPES, URGENCIES

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "policy" / "default.toml"
# Years of public holidays read from the holidays package, around the current year: cases
# are re-graded from their receipt time, and deadlines run up to about three years ahead.
HOLIDAY_YEARS_BACK, HOLIDAY_YEARS_AHEAD = 5, 3

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClockSpec(_Strict):
    mode: str = "calendar"
    timezone: str = "Asia/Shanghai"
    workdays: list[int] = [1, 2, 3, 4, 5]
    hours: tuple[time, time] = (time(9), time(18))
    # Public holidays and 调休 from the holidays package for this ISO country code; "none":
    # only the dates below. The dates below win over the package (company days, corrections).
    holiday_calendar: str = "CN"
    holidays: list[date] = []
    extra_workdays: list[date] = []
    # Years for which the dates above are complete (e.g. a new year's State Council notice
    # typed in before the package has it); added to the years the package knows officially.
    covered_years: list[int] = []

    @model_validator(mode="after")
    def _no_day_both_ways(self):
        both = sorted(set(self.holidays) & set(self.extra_workdays))
        if both:
            raise ValueError(f"clock: {', '.join(map(str, both))} listed both as holiday and as extra working day")
        return self


class SlaRule(_Strict):
    type: str
    grade: int
    respond_hours: float = Field(gt=0)
    resolve_hours: float | None = Field(default=None, gt=0)
    actions: list[str] = []

    @field_validator("type")
    @classmethod
    def _known_type(cls, v):
        if v not in DISPUTE_TYPES:
            raise ValueError(f"unknown dispute type {v!r}; expected one of {list(DISPUTE_TYPES)}")
        return v

    @field_validator("grade")
    @classmethod
    def _known_grade(cls, v):
        if v not in URGENCIES:
            raise ValueError(f"grade must be one of {list(URGENCIES)}, got {v}")
        return v

    @property
    def respond(self) -> timedelta:
        return timedelta(hours=self.respond_hours)

    @property
    def resolve(self) -> timedelta | None:
        return None if self.resolve_hours is None else timedelta(hours=self.resolve_hours)


class TeamRule(_Strict):
    team: str
    types: list[str] | None = None
    grades: list[int] | None = None
    escalation: bool | None = None
    rule_hits: list[str] | None = None
    keywords: list[str] | None = None
    hint: str | None = None

    def matches(self, decision: "Labels", text: str, rule_hits: set[str]) -> bool:
        if self.types is not None and decision.dispute_type not in self.types:
            return False
        if self.grades is not None and decision.priority_grade not in self.grades:
            return False
        if self.escalation is not None and decision.escalation != self.escalation:
            return False
        if self.rule_hits is not None and not rule_hits.intersection(self.rule_hits):
            return False
        if self.keywords is not None and not any(word in text for word in self.keywords):
            return False
        return True


class RoutingSpec(_Strict):
    tiers: list[str]
    tier_by_grade: dict[int, str]
    angry_tier: str
    angry_hint: str = "apologise first"
    vulnerable_grade_bump: int = Field(default=1, ge=0, le=2)
    vulnerable_hint: str = ""
    teams: list[TeamRule] = []

    @model_validator(mode="after")
    def _tiers_known(self):
        if len(set(self.tiers)) != len(self.tiers) or not self.tiers:
            raise ValueError("routing.tiers must be a non-empty list of distinct names")
        for grade in URGENCIES:
            if grade not in self.tier_by_grade:
                raise ValueError(f"routing.tier_by_grade has no tier for grade {grade}")
        for tier in [*self.tier_by_grade.values(), self.angry_tier]:
            if tier not in self.tiers:
                raise ValueError(f"tier {tier!r} is not in routing.tiers {self.tiers}")
        return self


class SurveillanceSpec(_Strict):
    """Surge detection (:mod:`triage.surveillance`): window, baseline and the Poisson test's bars."""

    window_hours: float = Field(default=6, gt=0)
    baseline_days: float = Field(default=28, gt=0)
    baseline_min_days: float = Field(default=7, gt=0)
    baseline_floor_per_day: float = Field(default=0.5, gt=0)
    alpha: float = Field(default=0.0001, gt=0, lt=1)
    min_count: int = Field(default=5, ge=1)
    safety_alpha: float = Field(default=0.01, gt=0, lt=1)
    safety_min_count: int = Field(default=3, ge=1)
    safety_min_cases: int = Field(default=2, ge=1)


class RecallSpec(_Strict):
    """A recall incident: who owns it by default and how long until a decision is due."""

    owner: str = "team_leader"
    decide_hours: float = Field(default=24, gt=0)


class FollowupSpec(_Strict):
    """The follow-up call (回访) after resolution and the score that reopens a case."""

    due_hours: float = Field(default=24, gt=0)
    low_satisfaction: int = Field(default=2, ge=0, le=5)


class PolicySpec(_Strict):
    version: int = 1
    clock: ClockSpec = ClockSpec()
    sla: list[SlaRule]
    routing: RoutingSpec
    surveillance: SurveillanceSpec = SurveillanceSpec()
    recall: RecallSpec = RecallSpec()
    followup: FollowupSpec = FollowupSpec()

    @model_validator(mode="after")
    def _complete_table(self):
        seen = {}
        for rule in self.sla:
            key = (rule.type, rule.grade)
            if key in seen:
                raise ValueError(f"sla: two rules for type {rule.type!r} grade {rule.grade}")
            seen[key] = rule
        missing = [f"{t}/{g}" for t in DISPUTE_TYPES for g in URGENCIES if (t, g) not in seen]
        if missing:
            raise ValueError(f"sla: no rule for {', '.join(missing)}")
        if self.recall.owner not in self.routing.tiers:
            raise ValueError(f"recall.owner {self.recall.owner!r} is not in routing.tiers {self.routing.tiers}")
        return self


@dataclass(frozen=True)
class Labels:
    """The labels routing depends on (from a prediction or a reviewer)."""

    dispute_type: str
    urgency: int
    emotion: str
    escalation: bool
    vulnerable: bool = False
    priority_grade: int = 0  # filled by Policy.decide

    def as_dict(self) -> dict[str, Any]:
        return {
            "dispute_type": self.dispute_type,
            "urgency": self.urgency,
            "emotion": self.emotion,
            "escalation": self.escalation,
            "vulnerable": self.vulnerable,
        }


@dataclass(frozen=True)
class Decision:
    """What the policy says about one case: clock grade, deadlines, owner tier, teams, hints."""

    priority_grade: int
    respond: timedelta
    resolve: timedelta | None
    tier: str
    teams: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


class Policy:
    """A validated policy file with the operations the service needs."""

    @property
    def timezone(self) -> str:
        """The IANA timezone of the working clock: the one people see times in (review desk)."""
        return self.spec.clock.timezone

    def __init__(self, spec: PolicySpec, source: str = "<memory>"):
        self.spec = spec
        self.source = source
        c = spec.clock
        own_holidays, own_workdays = frozenset(c.holidays), frozenset(c.extra_workdays)
        holidays, workdays = own_holidays, own_workdays
        covered = set(c.covered_years) | {d.year for d in own_holidays | own_workdays}
        self.holiday_source = "policy file only"
        if c.holiday_calendar.lower() != "none":
            this_year = date.today().year
            public = public_calendar(
                c.holiday_calendar, range(this_year - HOLIDAY_YEARS_BACK, this_year + HOLIDAY_YEARS_AHEAD + 1)
            )
            # The file wins: its working days remove package holidays and the reverse.
            holidays = (public.holidays - own_workdays) | own_holidays
            workdays = (public.make_up_workdays - own_holidays) | own_workdays
            covered = set(c.covered_years) | set(public.official_years)
            self.holiday_source = f"holidays {public.package_version} ({public.country}) + policy file"
        calendar = WorkingCalendar(
            timezone=c.timezone,
            workdays=frozenset(c.workdays),
            start=c.hours[0],
            end=c.hours[1],
            holidays=holidays,
            extra_workdays=workdays,
            covered_years=frozenset(covered),
        )
        self.clock = SlaClock(mode=c.mode, calendar=calendar)
        self.warnings: list[str] = []
        if c.mode == "business":
            now_year = datetime.now(ZoneInfo(c.timezone)).year
            missing = [y for y in (now_year, now_year + 1) if not calendar.covers(y)]
            if missing:
                self.warnings.append(
                    f"policy {source}: the business-hours calendar ({self.holiday_source}) does not cover "
                    f"{', '.join(map(str, missing))}: public holidays there are estimates and make-up working "
                    f"days (调休) are unknown; add the official dates to [clock] holidays/extra_workdays and "
                    f"list the year in covered_years"
                )
        for warning in self.warnings:
            log.warning(warning)
        self._sla = {(r.type, r.grade): r for r in spec.sla}

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<memory>") -> "Policy":
        try:
            spec = PolicySpec.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
            )
            raise PolicyError(f"policy {source} is invalid: {problems}") from None
        return cls(spec, source)

    @classmethod
    def load(cls, path: Path | str | None = None) -> "Policy":
        """Read ``path`` (default: the shipped policy); raise PolicyError naming the problem."""
        path = Path(path) if path else DEFAULT_POLICY_PATH
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"policy file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_settings(cls, settings) -> "Policy":
        return cls.load(settings.policy_path)

    # ---- applying ----------------------------------------------------------------------
    @property
    def tiers(self) -> list[str]:
        return list(self.spec.routing.tiers)

    def sla_rule(self, dispute_type: str, grade: int) -> SlaRule:
        try:
            return self._sla[(dispute_type, grade)]
        except KeyError:
            raise PolicyError(f"no SLA rule for type {dispute_type!r} grade {grade!r}") from None

    def priority_grade(self, labels: Labels) -> int:
        """The grade the clock runs on: vulnerable customers go up (towards 1)."""
        if labels.vulnerable:
            return max(min(URGENCIES), labels.urgency - self.spec.routing.vulnerable_grade_bump)
        return labels.urgency

    def decide(self, labels: Labels, text: str = "", rule_hits: set[str] | None = None) -> Decision:
        """Apply the SLA table and the routing rules to one case."""
        routing = self.spec.routing
        grade = self.priority_grade(labels)
        labels = Labels(**labels.as_dict(), priority_grade=grade)
        rule = self.sla_rule(labels.dispute_type, grade)
        tier = routing.tier_by_grade[grade]
        hints: list[str] = []
        if labels.emotion == "angry":
            tier = self.higher_tier(tier, routing.angry_tier)
            hints.append(routing.angry_hint)
        if labels.vulnerable and routing.vulnerable_hint:
            hints.append(routing.vulnerable_hint)
        teams: list[str] = []
        hits = rule_hits or set()
        for team_rule in routing.teams:
            if team_rule.matches(labels, text, hits):
                if team_rule.team not in teams:
                    teams.append(team_rule.team)
                if team_rule.hint and team_rule.hint not in hints:
                    hints.append(team_rule.hint)
        return Decision(
            priority_grade=grade,
            respond=rule.respond,
            resolve=rule.resolve,
            tier=tier,
            teams=teams,
            hints=hints,
            actions=list(rule.actions),
        )

    def higher_tier(self, a: str, b: str) -> str:
        tiers = self.spec.routing.tiers
        return a if tiers.index(a) >= tiers.index(b) else b

    def next_tier(self, current: str | None) -> str | None:
        """The tier above ``current`` in ``routing.tiers`` (who is told besides the owner of a
        breach or a reopening); None when ``current`` is already the top tier."""
        tiers = self.spec.routing.tiers
        index = tiers.index(current) if current in tiers else 0
        return tiers[index + 1] if index + 1 < len(tiers) else None

    def escalated_tier(self, current: str, breaches: int) -> str:
        """Tier after the ``breaches``-th breach: the first moves one up, later ones to the top."""
        tiers = self.spec.routing.tiers
        if breaches >= 2:
            return tiers[-1]
        index = tiers.index(current) if current in tiers else 0
        return tiers[min(index + 1, len(tiers) - 1)]

