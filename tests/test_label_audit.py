"""``triage audit``: labels the rest of a labeled set contradicts (confident learning)."""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl
from models.label_audit import audit, find_label_issues, out_of_fold_probabilities
from triage.errors import InvalidInput


def test_a_label_is_suspect_only_below_its_own_threshold_with_another_class_above_its_own():
    records = [{"id": f"r{i}", "text": f"t{i}", "urgency": u} for i, u in enumerate([1, 1, 1, 2, 2, 2, 2])]
    classes = {"urgency": [1, 2]}
    proba = {"urgency": [  # thresholds: 1 (0.9+0.9+0.2)/3 = 0.67, 2 (0.9+0.9+0.5+0.8)/4 = 0.775
        [0.9, 0.1], [0.9, 0.1],
        [0.2, 0.8],  # labeled 1, below its threshold, and 2 reaches its own: suspect
        [0.1, 0.9], [0.1, 0.9],
        [0.5, 0.5],  # labeled 2 below its threshold, but 1 is below its own too: not suspect
        [0.7, 0.8],  # 1 reaches its threshold, but so does the label itself: not suspect
    ]}
    issues = find_label_issues(records, proba, classes, heads=["urgency"])
    assert [(i.id, i.label, i.suggested) for i in issues] == [("r2", 1, 2)]
    assert issues[0].p_label == pytest.approx(0.2) and issues[0].contradiction == pytest.approx(0.6)
    assert issues[0].where == "r2"  # no file line known: the id
    with pytest.raises(InvalidInput, match="unknown head"):
        find_label_issues(records, proba, classes, heads=["mood"])


def test_the_most_contradicted_come_first():
    records = [{"id": f"r{i}", "text": "x", "emotion": e} for i, e in enumerate(["calm"] * 4 + ["angry"] * 4)]
    proba = {"emotion": [[0.0, 1.0]] * 2 + [[0.6, 0.4], [0.9, 0.1]] + [[0.55, 0.45]] * 4}  # thresholds: calm 0.625, angry 0.55
    issues = find_label_issues(records, proba, {"emotion": ["angry", "calm"]}, heads=["emotion"])
    assert [i.id for i in issues] == ["r3", "r2"]


def test_a_flipped_label_is_found_out_of_fold(tiny_records):
    """Trained on the other folds only, the model's classes for the message come from the
    rest of the data: one dispute type flipped against its copies is flagged, its
    copies are not."""
    records = [dict(r) for r in tiny_records]
    flipped = next(i for i, r in enumerate(records) if r["dispute_type"] == "quality")
    records[flipped]["dispute_type"] = "other"
    issues = audit(records, heads=["dispute_type"], folds=5)
    found = [i for i in issues if i.id == records[flipped]["id"]]
    assert found and found[0].label == "other" and found[0].suggested == "quality"
    assert len(issues) < len(records) // 10  # the rest of a consistent set stays quiet
    proba, classes = out_of_fold_probabilities(records, folds=5)
    assert classes["urgency"] == [1, 2, 3] and classes["escalation"] == [False, True]
    assert all(abs(sum(row) - 1) < 1e-6 for row in proba["emotion"])


def test_too_few_messages_are_refused_with_a_reason(tiny_records):
    with pytest.raises(InvalidInput, match="too few to audit"):
        audit(tiny_records[:6], folds=5)


def test_the_command_lists_file_and_line(tmp_path, tiny_records, monkeypatch):
    from typer.testing import CliRunner

    from triage.cli import app

    rows = [dict(r) for r in tiny_records]
    flipped = next(i for i, r in enumerate(rows) if r["dispute_type"] == "quality")
    rows[flipped]["dispute_type"] = "other"
    data = write_jsonl(tmp_path / "seed.jsonl", rows + ["not json"])
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "--data", str(data), "--head", "dispute_type", "--json", "--top", "0"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert any(x["where"] == f"{data}:{flipped + 1}" and x["suggested"] == "quality" for x in lines)
    assert f"skipped {data}:{len(rows) + 1}" in result.output  # the bad line is reported, nothing else lost
    bad = runner.invoke(app, ["audit", "--data", str(data), "--head", "mood"])
    assert bad.exit_code != 0 and "unknown head mood" in bad.output
