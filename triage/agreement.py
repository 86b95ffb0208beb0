"""Agreement between reviewers, with the final label and with the model; reviewer throughput;
which cases go to a second reviewer.

Pure functions over plain records (no database): the review context reads the decisions and
hands them here, the dashboard and the API show the result.

* Percentage agreement: the share of double-reviewed cases where both reviewers chose the
  same label for a head.
* Cohen's kappa: ``(p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement, ``p_e`` the
  agreement expected by chance from each rater's own label frequencies
  (``sum_k p_first(k) * p_second(k)``). The two "raters" are the first and the second
  reviewer of each case (whoever they were), the usual reading of Cohen's kappa when the
  people vary from case to case. Undefined (None) when ``p_e`` is 1 (both always chose one
  and the same label).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

HEADS = ("dispute_type", "urgency", "emotion", "escalation")


def sampled_for_double_review(case_id: int, share: float) -> bool:
    """Whether ``case_id`` is in the double-review sample of ``share`` (0..1): a hash of the
    id, so every process and every restart picks the same cases and the share holds for
    any range of ids."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(f"case:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def percent_agreement(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Share of pairs with equal labels; None without pairs."""
    if not pairs:
        return None
    return sum(1 for a, b in pairs if a == b) / len(pairs)


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of (first rater, second rater) label pairs; None without pairs or when
    chance agreement is 1 (kappa undefined)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for a, b in pairs if a == b) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[k] * second.get(k, 0) for k in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass
class ReviewedCase:
    """One case's review decisions: ``decisions`` oldest first, each a dict with ``stage``
    (single | first | second | adjudication), ``reviewer``, ``labels``, ``final`` (bool),
    ``claimed_at`` / ``decided_at`` (datetimes; claimed_at may be None), and the model's
    labels and version the first reviewer saw (``model_labels``, ``model_version``)."""

    case_id: int
    decisions: list[dict[str, Any]] = field(default_factory=list)
    model_labels: dict[str, Any] | None = None
    model_version: str | None = None

    @property
    def final_labels(self) -> dict[str, Any] | None:
        finals = [d for d in self.decisions if d.get("final")]
        return finals[-1]["labels"] if finals else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def inter_reviewer(cases: Iterable[ReviewedCase]) -> dict[str, dict[str, Any]]:
    """Per head: how many double-reviewed cases, percentage agreement and Cohen's kappa of
    the first and the second reviewer."""
    pairs: dict[str, list[tuple[Any, Any]]] = {head: [] for head in HEADS}
    for case in cases:
        first = next((d for d in case.decisions if d["stage"] == "first"), None)
        second = next((d for d in case.decisions if d["stage"] == "second"), None)
        if first is None or second is None:
            continue
        for head in HEADS:
            pairs[head].append((first["labels"].get(head), second["labels"].get(head)))
    return {head: {"cases": len(p), "percent": _rounded(percent_agreement(p)), "kappa": _rounded(cohen_kappa(p))}
            for head, p in pairs.items()}


def reviewer_vs_final(cases: Iterable[ReviewedCase]) -> dict[str, dict[str, Any]]:
    """Per reviewer: decisions on finalised cases and, per head, the share that matches the
    final label (a single review is its own final label, so it always matches; the figure
    says most for reviewers who take part in double review)."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: {head: [0, 0] for head in HEADS})
    for case in cases:
        final = case.final_labels
        if final is None:
            continue
        for d in case.decisions:
            if d["stage"] == "adjudication":
                continue
            for head in HEADS:
                counts[d["reviewer"]][head][0] += int(d["labels"].get(head) == final.get(head))
                counts[d["reviewer"]][head][1] += 1
    return {
        reviewer: {"decisions": per_head[HEADS[0]][1],
                   "agreement": {head: _rounded(a / n if n else None) for head, (a, n) in per_head.items()}}
        for reviewer, per_head in sorted(counts.items())
    }


def throughput(decisions: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per reviewer: decisions, cases per active hour (decisions divided by the number of
    clock hours in which the reviewer decided at least one case), and the median seconds
    from claiming a case to deciding it (decisions made under a claim only)."""
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in decisions:
        per[d["reviewer"]].append(d)
    out = {}
    for reviewer, rows in sorted(per.items()):
        hours = {d["decided_at"].replace(minute=0, second=0, microsecond=0) for d in rows}
        seconds = [(d["decided_at"] - d["claimed_at"]).total_seconds() for d in rows if d.get("claimed_at")]
        out[reviewer] = {
            "decisions": len(rows),
            "active_hours": len(hours),
            "cases_per_hour": _rounded(len(rows) / len(hours), 2) if hours else None,
            "median_seconds": _rounded(statistics.median(seconds), 1) if seconds else None,
            "timed_decisions": len(seconds),
        }
    return out


def model_vs_final(cases: Iterable[ReviewedCase]) -> dict[str, dict[str, Any]]:
    """Per model version: finalised cases and, per head, the share where the model's label
    (as the first reviewer saw it) is the final label."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: {head: [0, 0] for head in HEADS})
    for case in cases:
        final = case.final_labels
        if final is None or case.model_labels is None:
            continue
        version = case.model_version or "unknown"
        for head in HEADS:
            counts[version][head][0] += int(case.model_labels.get(head) == final.get(head))
            counts[version][head][1] += 1
    return {
        version: {"cases": per_head[HEADS[0]][1],
                  "agreement": {head: _rounded(a / n if n else None) for head, (a, n) in per_head.items()}}
        for version, per_head in sorted(counts.items())
    }


def agreement_report(cases: Sequence[ReviewedCase], since: datetime | None = None) -> dict[str, Any]:
    """Every measure above over ``cases`` (the dashboard's and the API's agreement report)."""
    decisions = [{**d, "case_id": c.case_id} for c in cases for d in c.decisions]
    return {
        "since": since.isoformat() if since else None,
        "cases": len(cases),
        "double_reviewed": sum(1 for c in cases if any(d["stage"] == "second" for d in c.decisions)),
        "adjudicated": sum(1 for c in cases if any(d["stage"] == "adjudication" for d in c.decisions)),
        "inter_reviewer": inter_reviewer(cases),
        "reviewer_vs_final": reviewer_vs_final(cases),
        "throughput": throughput(decisions),
        "model_vs_final": model_vs_final(cases),
    }
