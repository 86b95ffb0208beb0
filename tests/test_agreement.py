"""Agreement measures (triage.agreement): kappa on a hand-computed example, the other
measures on small known cases, and the double-review sample."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from triage.agreement import (
    ReviewedCase,
    agreement_report,
    cohen_kappa,
    percent_agreement,
    reviewer_vs_final,
    sampled_for_double_review,
    throughput,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def test_cohen_kappa_matches_a_hand_computation():
    # 10 cases, first reviewer A, second reviewer B:
    #   A=quality B=quality: 4   A=service B=service: 3   A=quality B=service: 2   A=service B=quality: 1
    # observed p_o = (4 + 3) / 10 = 0.7
    # A: quality 6/10, service 4/10;  B: quality 5/10, service 5/10
    # chance   p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5
    # kappa = (p_o - p_e) / (1 - p_e) = (0.7 - 0.5) / 0.5 = 0.4
    pairs = ([("quality", "quality")] * 4 + [("service", "service")] * 3
             + [("quality", "service")] * 2 + [("service", "quality")])
    assert percent_agreement(pairs) == pytest.approx(0.7)
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_three_labels_and_edge_cases():
    # 3 grades, 6 cases: pairs (1,1) (2,2) (3,3) (1,2) (2,2) (3,1)
    # p_o = 4/6; A: 1:2 2:2 3:2; B: 1:2 2:3 3:1 -> p_e = (2*2 + 2*3 + 2*1) / 36 = 12/36 = 1/3
    # kappa = (4/6 - 1/3) / (2/3) = 0.5
    pairs = [(1, 1), (2, 2), (3, 3), (1, 2), (2, 2), (3, 1)]
    assert cohen_kappa(pairs) == pytest.approx(0.5)
    assert cohen_kappa([]) is None and percent_agreement([]) is None
    assert cohen_kappa([("a", "a")] * 5) is None  # chance agreement 1: undefined, not 1.0
    # systematic disagreement is below chance: p_o 0, p_e 0.5 -> -1
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)


def _decision(stage, reviewer, labels, final, minutes=0, seconds=60):
    decided = T0 + timedelta(minutes=minutes)
    return {"stage": stage, "reviewer": reviewer, "labels": labels, "final": final,
            "claimed_at": decided - timedelta(seconds=seconds), "decided_at": decided}


def L(dispute_type="quality", urgency=2, emotion="calm", escalation=False):
    return {"dispute_type": dispute_type, "urgency": urgency, "emotion": emotion, "escalation": escalation}


def test_report_on_a_small_team():
    model = L()
    cases = [
        # agreed double review: both say service
        ReviewedCase(1, [_decision("first", "ann", L("service"), False, 0, 30),
                         _decision("second", "bob", L("service"), True, 5, 90)], model, "v1"),
        # disagreement on urgency, adjudicated to bob's label
        ReviewedCase(2, [_decision("first", "ann", L(urgency=1), False, 10, 40),
                         _decision("second", "bob", L(urgency=2), False, 70, 20),
                         _decision("adjudication", "sue", L(urgency=2), True, 80, 10)], model, "v1"),
        # single review confirming the model of another version
        ReviewedCase(3, [_decision("single", "ann", L(), True, 20, 50)], model, "v2"),
        # first decision only: not final yet, counts in no agreement with a final label
        ReviewedCase(4, [_decision("first", "bob", L("refund"), False, 75, 60)], model, "v1"),
    ]
    report = agreement_report(cases)
    assert report["double_reviewed"] == 2 and report["adjudicated"] == 1
    inter = report["inter_reviewer"]
    assert inter["dispute_type"]["cases"] == 2 and inter["dispute_type"]["percent"] == 1.0
    assert inter["urgency"]["percent"] == 0.5
    # urgency pairs (2,2) and (1,2): p_o 0.5, p_e = (1/2)(2/2) + (1/2)(0) = 0.5 -> kappa 0
    assert inter["urgency"]["kappa"] == 0.0
    per = reviewer_vs_final(cases)
    assert per["ann"]["decisions"] == 3 and per["ann"]["agreement"]["urgency"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["bob"]["agreement"]["urgency"] == 1.0 and "sue" not in per
    by_model = report["model_vs_final"]
    assert by_model["v1"]["cases"] == 2 and by_model["v1"]["agreement"]["dispute_type"] == 0.5
    assert by_model["v2"]["agreement"] == {h: 1.0 for h in ("dispute_type", "urgency", "emotion", "escalation")}
    speed = throughput(d | {"case_id": c.case_id} for c in cases for d in c.decisions)
    # ann decided at minutes 0, 10, 20 (one clock hour), 30 s, 40 s and 50 s after claiming
    assert speed["ann"] == {"decisions": 3, "active_hours": 1, "cases_per_hour": 3.0,
                            "median_seconds": 40.0, "timed_decisions": 3}
    # bob at minutes 5, 70, 75: two clock hours
    assert speed["bob"]["cases_per_hour"] == 1.5 and speed["bob"]["median_seconds"] == 60.0


def test_double_review_sample_is_deterministic_and_near_the_share():
    picked = [c for c in range(1, 20001) if sampled_for_double_review(c, 0.2)]
    assert 0.18 < len(picked) / 20000 < 0.22
    assert picked == [c for c in range(1, 20001) if sampled_for_double_review(c, 0.2)]
    assert not any(sampled_for_double_review(c, 0.0) for c in range(1, 100))
    assert all(sampled_for_double_review(c, 1.0) for c in range(1, 100))
