"""Surge detection: is the number of complaints about one product in the recent window
improbable under that product's own baseline rate?

The test is one-sided Poisson. For a moment ``at``, the window is ``(at - window, at]`` and
the baseline the ``baseline_days`` before the window (or the product's shorter history, but
at least ``baseline_min_days``). The expected count in the window is the baseline rate
(complaints per day, at least ``baseline_floor_per_day`` so that a product with no history
is not alarming at its second complaint) times the window length; the
p-value is P(X >= count) for X ~ Poisson(expected). A surge needs ``count >= min_count``
and ``p <= alpha``; when at least ``safety_min_cases`` complaints in the window carry the
safety rule (漏电, 冒烟, 起火 ...), the bar drops to ``safety_min_count`` and
``safety_alpha``. The same test runs per product and per product x dispute type; the caller
makes one alert of the signals of one moment. The same test also runs per product x batch
(the complaints in the window that name one batch, against that batch's own history), so a
bad lot is seen even while the product as a whole is within its rate.

``discounted`` case ids (the cases of a dismissed alert: a reviewer judged them no surge)
are left out of the window's count but stay in the baseline: a new surge after a dismissal
must be improbable on its own cases.

Pure: no database, no clock; times are the messages' ``received_at``, so a backfill is
judged as the month it came from.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scipy.stats import poisson

from triage.policy import SurveillanceSpec

PRODUCT_SCOPE = "product"


@dataclass(frozen=True)
class Complaint:
    case_id: int
    received_at: datetime
    dispute_type: str
    safety: bool = False
    batch: str | None = None


@dataclass
class Signal:
    """One test that fired: its scope, the window's count against the baseline expectation."""

    scope: str  # "product", "product x <type>" or "product x batch <batch>"
    dispute_type: str | None
    window_start: datetime
    window_end: datetime
    count: int
    expected: float
    p_value: float
    alpha: float
    safety_count: int
    case_ids: list[int] = field(default_factory=list)
    batch: str | None = None


def poisson_p_value(count: int, expected: float) -> float:
    """P(X >= count) for X ~ Poisson(expected): the one-sided upper-tail p-value."""
    if count <= 0:
        return 1.0
    return float(poisson.sf(count - 1, expected))


def evaluate(complaints: list[Complaint], spec: SurveillanceSpec, dispute_type: str | None,
             at: datetime, times: list[datetime] | None = None, *, batch: str | None = None,
             discounted: frozenset[int] | set[int] = frozenset()) -> Signal | None:
    """The test for ``complaints`` (one product, optionally one type or one batch; sorted by
    received_at) at ``at``; complaints after ``at`` are not counted, nor ``discounted`` ones in
    the window. ``times``: their received_at, if at hand."""
    if times is None:
        times = [c.received_at for c in complaints]
    window = timedelta(hours=spec.window_hours)
    baseline = timedelta(days=spec.baseline_days)
    lo = bisect.bisect_right(times, at - window)  # window: (at - window, at]
    hi = bisect.bisect_right(times, at)
    base_lo = bisect.bisect_left(times, at - window - baseline)  # baseline: [start, at - window]
    in_window = [c for c in complaints[lo:hi] if c.case_id not in discounted]
    count = len(in_window)
    baseline_count = lo - base_lo
    # The rate over the history there is (a young product's baseline is shorter), at least
    # baseline_min_days long so that its first days do not make a tiny denominator.
    history_days = (at - window - times[0]).total_seconds() / 86400 if times else 0.0
    span_days = min(spec.baseline_days, max(history_days, spec.baseline_min_days))
    rate_per_day = max(baseline_count / span_days, spec.baseline_floor_per_day)
    expected = rate_per_day * spec.window_hours / 24.0
    safety_count = sum(c.safety for c in in_window)
    if safety_count >= spec.safety_min_cases:
        alpha, min_count = spec.safety_alpha, spec.safety_min_count
    else:
        alpha, min_count = spec.alpha, spec.min_count
    if count < min_count:
        return None
    p_value = poisson_p_value(count, expected)
    if p_value > alpha:
        return None
    if batch is not None:
        scope = f"{PRODUCT_SCOPE} x batch {batch}"
    else:
        scope = PRODUCT_SCOPE if dispute_type is None else f"{PRODUCT_SCOPE} x {dispute_type}"
    return Signal(scope=scope, dispute_type=dispute_type, window_start=at - window, window_end=at, count=count,
                  expected=expected, p_value=p_value, alpha=alpha, safety_count=safety_count,
                  case_ids=[c.case_id for c in in_window], batch=batch)


def detect(complaints: list[Complaint], spec: SurveillanceSpec, at: datetime,
           discounted: frozenset[int] | set[int] = frozenset()) -> list[Signal]:
    """Every test that fires at ``at`` for one product: the product level first, then each
    type, then each batch named in the window."""
    complaints = sorted(complaints, key=lambda c: (c.received_at, c.case_id))
    signals = []
    product = evaluate(complaints, spec, None, at, discounted=discounted)
    if product:
        signals.append(product)
    window_start = at - timedelta(hours=spec.window_hours)
    recent = [c for c in complaints if window_start < c.received_at <= at and c.case_id not in discounted]
    for dispute_type in sorted({c.dispute_type for c in recent}):
        signal = evaluate([c for c in complaints if c.dispute_type == dispute_type], spec, dispute_type, at,
                          discounted=discounted)
        if signal:
            signals.append(signal)
    for batch in sorted({c.batch for c in recent if c.batch}):
        signal = evaluate([c for c in complaints if c.batch == batch], spec, None, at, batch=batch,
                          discounted=discounted)
        if signal:
            signals.append(signal)
    return signals
