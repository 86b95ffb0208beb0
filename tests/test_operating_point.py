"""一级 by a recall target (TRIAGE_URGENT_RECALL): the curve on the confirmed labels, the
threshold it picks, and the service grading at it (models/operating_point.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.operating_point import MIN_POSITIVES, curve_from_backend, threshold_for_recall, urgent_curve
from triage.settings import get_settings
from triage.taxonomy import HEADS


def test_the_curve_counts_a_label_found_by_the_model_or_raised_by_a_rule():
    p = [0.9, 0.4, 0.2, 0.05, 0.6, 0.1]
    urgent = [True, True, True, True, False, False]
    raised = [False, False, False, True, False, False]  # the fourth is found by a rule at any threshold
    curve = urgent_curve(p, urgent, raised, grid=(0.5, 0.3, 0.1))
    assert curve["confirmed"] == 6 and curve["confirmed_urgent"] == 4
    by_t = {pt["threshold"]: pt for pt in curve["points"]}
    assert by_t[0.5]["recall"] == 0.5 and by_t[0.5]["precision"] == round(2 / 3, 4)  # 0.9 and the rule; 0.6 is false
    assert by_t[0.3]["recall"] == 0.75 and by_t[0.3]["precision"] == 0.75
    assert by_t[0.1]["recall"] == 1.0 and by_t[0.1]["precision"] == round(4 / 6, 4)
    assert by_t[0.1]["flagged_share"] == 1.0
    with pytest.raises(ValueError, match="lengths differ"):
        urgent_curve([0.1], [True, False], [False])


def _curve(points, positives=MIN_POSITIVES):
    return {"confirmed": 100, "confirmed_urgent": positives,
            "points": [{"threshold": t, "recall": r, "precision": p} for t, r, p in points]}


def test_the_recall_target_picks_the_strictest_threshold_that_reaches_it():
    curve = _curve([(0.1, 0.95, 0.2), (0.5, 0.7, 0.7), (0.3, 0.85, 0.5), (0.2, 0.85, 0.4)])  # any order
    chosen = threshold_for_recall(curve, 0.8)
    assert (chosen.threshold, chosen.recall, chosen.precision) == (0.3, 0.85, 0.5)
    assert threshold_for_recall(curve, 0.7).threshold == 0.5
    assert threshold_for_recall(curve, 0.9).threshold == 0.1
    assert threshold_for_recall(curve, 0.99).threshold == 0.1  # none reaches it: the most sensitive point
    assert threshold_for_recall(curve, 0.8).as_dict()["source"] == "recall target"
    assert threshold_for_recall(_curve([(0.3, 0.9, 0.5)], positives=MIN_POSITIVES - 1), 0.8) is None
    assert threshold_for_recall(None, 0.8) is None
    with pytest.raises(ValueError, match="recall target"):
        threshold_for_recall(curve, 1.2)


def test_the_sklearn_backend_keeps_out_of_fold_urgency_probabilities(tiny_records):
    from models.sklearn_backend import SklearnBackend
    from models.training import train_backend

    # Grades shuffled: nothing to learn, so only a model that saw a label can be sure of it.
    rng = np.random.default_rng(0)
    grades = rng.permutation([r["urgency"] for r in tiny_records])
    records = [{**r, "urgency": int(g)} for r, g in zip(tiny_records, grades)]
    model = train_backend(records, "sklearn")
    rows, proba = model.oof_proba_["urgency"]
    assert list(rows) == list(range(len(records))) and np.allclose(proba.sum(axis=1), 1)
    classes = model.classes_["urgency"]
    gold = np.array([classes.index(r["urgency"]) for r in records])
    in_sample = model.predict_proba([r["text"] for r in records])["urgency"]
    in_sample_right, oof_right = (in_sample.argmax(axis=1) == gold).mean(), (proba.argmax(axis=1) == gold).mean()
    assert in_sample_right > oof_right + 0.2, (in_sample_right, oof_right)  # 0.64 against 0.31
    assert set(model.oof_proba_) == {"urgency"}
    uncalibrated = SklearnBackend(calibration_folds=0).fit([r["text"] for r in tiny_records],
                                                           {h: [r[h] for r in tiny_records] for h in HEADS})
    assert curve_from_backend(uncalibrated, [0], [tiny_records[0]["text"]], [1]) is None  # nothing to read a curve off


def test_training_with_confirmed_labels_stores_the_curve_and_the_service_grades_at_the_target(
        tmp_path, monkeypatch, tiny_records):
    from typer.testing import CliRunner

    from models.store import ModelStore
    from triage.cli import app
    from triage.triager import Triager

    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records), encoding="utf-8")
    confirmed = tmp_path / "confirmed.jsonl"
    confirmed.write_text("".join(json.dumps({**r, "id": f"c{r['id']}"}, ensure_ascii=False) + "\n"
                                 for r in tiny_records), encoding="utf-8")
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records[:12]), encoding="utf-8")
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_CORPORA_DIR", "none")
    monkeypatch.setenv("TRIAGE_PUBLIC_REVIEWS", "none")
    get_settings.cache_clear()
    store = ModelStore(tmp_path / "var" / "models")
    try:
        result = CliRunner().invoke(app, ["train", "--data", str(seed), "--confirmed", str(confirmed)])
        assert result.exit_code == 0, result.output
        assert "一级 curve on the" in result.output
        version = store.current_version()
        curve = store.read_manifest(version)["operating_point"]
        urgent = sum(r["urgency"] == 1 for r in tiny_records)
        assert curve["confirmed"] == len(tiny_records) and curve["confirmed_urgent"] == urgent >= MIN_POSITIVES

        fixed = Triager.from_store(store)
        assert fixed.urgent_threshold == 0.3 and fixed.operating_point == {"source": "fixed", "threshold": 0.3}
        targets = {}
        for target in (0.5, 0.8, 0.95):
            monkeypatch.setenv("TRIAGE_URGENT_RECALL", str(target))
            get_settings.cache_clear()
            triager = Triager.from_store(store)
            chosen = threshold_for_recall(curve, target)
            assert triager.urgent_threshold == chosen.threshold
            assert triager.operating_point == chosen.as_dict()
            targets[target] = chosen.threshold
        assert any(t != 0.3 for t in targets.values())  # the setting moved the operating point
        assert Triager.from_store(store, urgent_threshold=0.2).urgent_threshold == 0.2  # an explicit one wins

        # Too few confirmed 一级 to read a recall off: the fixed threshold, whatever the target.
        result = CliRunner().invoke(app, ["train", "--data", str(seed), "--confirmed", str(few)])
        assert result.exit_code == 0, result.output
        assert store.read_manifest(store.current_version())["operating_point"]["confirmed_urgent"] < MIN_POSITIVES
        assert Triager.from_store(store).operating_point["source"] == "fixed"
        # No confirmed labels: no curve at all.
        result = CliRunner().invoke(app, ["train", "--data", str(seed)])
        assert result.exit_code == 0, result.output
        assert store.read_manifest(store.current_version())["operating_point"] is None
        monkeypatch.setenv("TRIAGE_URGENT_RECALL", "1.5")
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="urgent_recall"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_a_retrain_stores_the_curve_of_its_confirmed_training_labels(tmp_path):
    from models.learning import LabeledExample, loop_for_service, split_confirmed
    from models.sklearn_backend import SklearnBackend
    from review_fixtures import make_service, make_settings, train_tiny_model

    settings = make_settings(tmp_path, per_type=6)
    store = train_tiny_model(settings)
    service = make_service(settings, store)

    def fit(texts, labels, weights, progress=None):
        return SklearnBackend().fit(texts, labels, sample_weight=weights)

    loop = loop_for_service(service, store, settings, fit=fit, fit_quick=fit)
    confirmed = []
    for i in range(40):
        urgent = i % 2 == 0
        labels = {"dispute_type": "quality", "urgency": 1 if urgent else 3, "emotion": "calm", "escalation": False}
        text = f"声卡第{i}台用了一天彻底没声音了，耽误直播" if urgent else f"声卡第{i}台外壳有点划痕"
        confirmed.append(LabeledExample(key=f"case-{i}", text=text, labels=labels, confirmed=True))
    loop.hooks.confirmed_examples = lambda: confirmed
    outcome = loop.retrain("alice")
    train, _holdout = split_confirmed(confirmed, loop.holdout_share)
    curve = store.read_manifest(outcome.version)["operating_point"]
    assert curve["confirmed"] == len(train)
    assert curve["confirmed_urgent"] == sum(e.labels["urgency"] == 1 for e in train)
    assert [pt["threshold"] for pt in curve["points"]] == sorted((pt["threshold"] for pt in curve["points"]), reverse=True)
    service.db.dispose()


def test_the_review_desk_says_how_one_is_graded_and_what_it_costs():
    from models.operating_point import ChosenPoint
    from review_ui import render
    from review_ui.messages import Translator

    zh, en = Translator("zh"), Translator("en")
    assert "0.3" in render.operating_point({"source": "fixed", "threshold": 0.3}, zh)
    assert "TRIAGE_URGENT_THRESHOLD" in render.operating_point({"source": "fixed", "threshold": 0.3}, en)
    point = ChosenPoint(0.1, 0.85, 0.8545, 0.3357, 55).as_dict()
    line = render.operating_point(point, en)
    assert all(part in line for part in ("0.85", "threshold 0.1", "55 confirmed", "recall 0.85", "precision 0.34")), line
    assert "召回目标 0.85" in render.operating_point(point, zh)
    assert render.operating_point(None, en) == "" and render.operating_point({"source": "fixed", "threshold": None}) == ""


def test_copies_of_one_text_stay_in_one_calibration_fold(tiny_records):
    """A retrain's stored messages include the confirmed ones (self-trained as pseudo-labels):
    a copy in another fold would teach the label before the text is scored out of fold."""
    from models.training import train_backend

    rng = np.random.default_rng(0)
    grades = rng.permutation([r["urgency"] for r in tiny_records])  # nothing to learn but the copies
    records = [{**r, "urgency": int(g)} for r, g in zip(tiny_records, grades)]
    model = train_backend(records + records, "sklearn")  # every text twice, with its grade
    rows, proba = model.oof_proba_["urgency"]
    classes = model.classes_["urgency"]
    gold = np.array([classes.index(r["urgency"]) for r in records + records])
    oof_right = (proba.argmax(axis=1) == gold).mean()
    in_sample_right = (model.predict_proba([r["text"] for r in records])["urgency"].argmax(axis=1) == gold[:len(records)]).mean()
    assert oof_right < in_sample_right - 0.2, (oof_right, in_sample_right)  # 0.39 against 0.96; 0.76 with the copies split
