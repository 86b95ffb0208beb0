"""The sklearn backend, the triager on top of it, and the evaluation metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED_DATA, make_records, skip_unless_ci
from models.base import get_backend_class
from models.evaluation import expected_calibration_error, head_report, majority_baseline
from models.sklearn_backend import SentimentModel, SklearnBackend
from models.training import train_backend
from triage.errors import InvalidInput, ModelError
from triage.prediction import Prediction
from triage.taxonomy import HEADS
from triage.triager import Triager

TEXTS = ["麦克风用了三天就有杂音，很失望", "说好48小时发货，五天了还没到", "很好用，推荐大家买"]


def test_registry_finds_the_backend():
    assert get_backend_class("sklearn") is SklearnBackend


def test_probabilities_have_one_column_per_class(tiny_backend):
    proba = tiny_backend.predict_proba(TEXTS)
    assert set(proba) == set(HEADS)
    for head in HEADS:
        assert proba[head].shape == (len(TEXTS), len(tiny_backend.classes_[head]))
        np.testing.assert_allclose(proba[head].sum(axis=1), 1.0, rtol=1e-6)


def test_learns_the_training_data(tiny_backend, tiny_records):
    proba = tiny_backend.predict_proba([r["text"] for r in tiny_records])
    classes = tiny_backend.classes_["dispute_type"]
    predicted = [classes[i] for i in proba["dispute_type"].argmax(axis=1)]
    accuracy = np.mean([p == r["dispute_type"] for p, r in zip(predicted, tiny_records)])
    assert accuracy > 0.9


def test_explanations_are_words_of_the_text(tiny_backend):
    words = tiny_backend.explain("补光灯申请退货退款一周了还没处理", "dispute_type", "refund", top_k=5)
    assert words and len(words) <= 5
    assert all(weight > 0 for _, weight in words)
    assert any(w in "补光灯申请退货退款一周了还没处理" for w, _ in words)
    assert [w for w, _ in words].count(words[0][0]) == 1


def test_explain_rejects_unknown_labels(tiny_backend):
    with pytest.raises(ModelError):
        tiny_backend.explain("坏了", "dispute_type", "nonsense")


def test_save_and_load_give_identical_predictions(tiny_backend, tmp_path):
    tiny_backend.save(tmp_path)
    loaded = SklearnBackend.load(tmp_path)
    assert loaded.classes_ == tiny_backend.classes_
    for head in HEADS:
        np.testing.assert_allclose(loaded.predict_proba(TEXTS)[head], tiny_backend.predict_proba(TEXTS)[head], rtol=1e-5)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pickle"))


def test_load_refuses_corrupt_or_foreign_files(tiny_backend, tmp_path):
    tiny_backend.save(tmp_path)
    meta = json.loads((tmp_path / "backend.json").read_text())
    (tmp_path / "backend.json").write_text(json.dumps({**meta, "format": "someone-else/1"}))
    with pytest.raises(ModelError, match="format"):
        SklearnBackend.load(tmp_path)
    (tmp_path / "backend.json").write_text(json.dumps(meta))
    (tmp_path / "arrays.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="arrays"):
        SklearnBackend.load(tmp_path)
    with pytest.raises(ModelError, match="missing"):
        SklearnBackend.load(tmp_path / "nowhere")


def test_single_class_head_is_constant(tmp_path):
    records = [r for r in make_records() if not r["escalation"]]
    backend = train_backend(records, "sklearn")
    assert backend.classes_["escalation"] == [False]
    assert backend.predict_proba(["坏了"])["escalation"].tolist() == [[1.0]]
    backend.save(tmp_path)
    assert SklearnBackend.load(tmp_path).classes_["escalation"] == [False]


def test_sentiment_signal_is_saved_with_the_model(tiny_records, tmp_path):
    positive = ["很好用，满意", "质量不错，推荐", "物流快，好评", "非常喜欢"] * 5
    negative = ["太差了，垃圾", "质量很差，失望", "坏了，不推荐", "后悔买了"] * 5
    sentiment = SentimentModel().fit(positive + negative, [0] * 20 + [1] * 20)
    backend = train_backend(tiny_records, "sklearn", sentiment=sentiment)
    backend.save(tmp_path)
    loaded = SklearnBackend.load(tmp_path)
    assert loaded.sentiment is not None
    np.testing.assert_allclose(loaded.predict_proba(TEXTS)["emotion"], backend.predict_proba(TEXTS)["emotion"], rtol=1e-5)


def test_an_ensemble_passes_the_sentiment_signal_to_its_sklearn_member(tiny_records):
    positive = ["很好用，满意", "质量不错，推荐"] * 5
    negative = ["太差了，垃圾", "质量很差，失望"] * 5
    sentiment = SentimentModel().fit(positive + negative, [0] * 10 + [1] * 10)
    ensemble = train_backend(tiny_records, "ensemble", members=["sklearn"], sentiment=sentiment)
    assert ensemble.members[0].sentiment is sentiment


def test_an_ordinal_head_sums_one_above_this_degree_question_per_step():
    from sklearn.linear_model import LogisticRegression

    from models.sklearn_backend import _fit_linear_head

    rng = np.random.default_rng(0)
    X = rng.random((120, 6))
    y = rng.integers(0, 3, 120)  # class indices; the degrees run 2 < 0 < 1
    order = [2, 0, 1]
    head = _fit_linear_head(X, y, 3, 4.0, None, order)
    assert not head.W[2].any() and head.b[2] == 0  # the mildest degree scores 0
    steps = []
    for j in (1, 2):  # "above degree j?" on every message, class-balanced
        lr = LogisticRegression(C=4.0, class_weight="balanced", solver="liblinear", dual=True, max_iter=1000, random_state=0)
        steps.append(lr.fit(X, np.isin(y, order[j:]).astype(int)))
    np.testing.assert_allclose(head.W[0], steps[0].coef_[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.W[1], steps[0].coef_[0] + steps[1].coef_[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.b[1] - head.b[0], steps[1].intercept_[0], rtol=1e-4)
    # Without an order: one-vs-rest, every class its own question.
    assert _fit_linear_head(X, y, 3, 4.0, None).W[2].any()


def test_emotion_is_trained_as_ordered_degrees_by_default(tiny_records):
    ordinal = train_backend(tiny_records, "sklearn")
    flat = train_backend(tiny_records, "sklearn", ordinal_heads=[])
    calm = ordinal.classes_["emotion"].index("calm")
    assert not ordinal.models["emotion"].W[calm].any()  # calm is the mildest degree
    assert flat.models["emotion"].W[calm].any()
    np.testing.assert_allclose(ordinal.models["dispute_type"].W, flat.models["dispute_type"].W, atol=1e-4)
    with pytest.raises(ModelError, match="no order of degrees"):
        SklearnBackend(ordinal_heads=["dispute_type"])


def test_training_twice_on_the_same_data_gives_the_same_model(tiny_records):
    # liblinear's dual solver shuffles; an unseeded fit drifted by 1e-5 between runs.
    first, second = train_backend(tiny_records, "sklearn"), train_backend(tiny_records, "sklearn")
    for head in first.models:
        np.testing.assert_array_equal(first.models[head].W, second.models[head].W)
        np.testing.assert_array_equal(first.models[head].b, second.models[head].b)


def test_unknown_parameters_are_refused():
    with pytest.raises(ModelError, match="unknown"):
        SklearnBackend(wordngrams=(1, 3))


# ------------------------------------------------------------------ triager


def test_prediction_has_every_field(tiny_core_triager):
    p = tiny_core_triager.predict("摄像头用了三天就有杂音，很失望")
    assert isinstance(p, Prediction)
    assert p.dispute_type in {"quality", "service", "advertising", "refund", "other"}
    assert p.urgency in (1, 2, 3)
    assert p.model_version == "test-version"
    assert set(p.scores) == set(HEADS)
    assert set(p.scores["urgency"]) == {"1", "2", "3"}
    assert set(p.scores["escalation"]) == {"true", "false"}
    assert 0.0 <= p.confidence <= 1.0
    assert set(HEADS) <= set(p.explanation) and "rules" in p.explanation


def test_rules_appear_in_the_prediction(tiny_core_triager):
    p = tiny_core_triager.predict("很好用，但是补光灯冒烟了，我要去12315投诉")
    assert p.urgency == 1 and p.escalation is True
    fired = {hit.rule for hit in p.rules}
    assert {"safety", "escalation_threat"} <= fired
    assert {r["rule"] for r in p.explanation["rules"]} == fired


def test_anger_words_decide_the_final_emotion(tiny_core_triager):
    """The guideline's anger cues raise the model's emotion; the prediction says so and is
    certain of the label the rule set (issue 16)."""
    p = tiny_core_triager.predict("麦克风有杂音，垃圾，再也不买了")
    assert p.emotion == "angry"
    hit = [h for h in p.rules if h.rule == "anger_words"][0]
    assert hit.matched == ["垃圾", "再也不买"]
    model_emotion = max(p.scores["emotion"], key=p.scores["emotion"].get)
    assert hit.effect == ("none (already angry)" if model_emotion == "angry" else f"emotion {model_emotion} -> angry")
    calm = tiny_core_triager.predict("麦克风有杂音，不是垃圾")
    assert "anger_words" not in {h.rule for h in calm.rules}
    assert calm.emotion == max(calm.scores["emotion"], key=calm.scores["emotion"].get)


def test_personal_data_is_masked_before_the_model(tiny_core_triager):
    p = tiny_core_triager.predict("麦克风坏了，电话13812345678")
    assert p.explanation["masked"] == {"PHONE": 1}
    assert all("13812345678" not in w for w, _ in p.explanation["dispute_type"])


@pytest.mark.parametrize("bad", ["", "   ", None, 42, ["坏了"]])
def test_invalid_input_is_refused(tiny_core_triager, bad):
    with pytest.raises(InvalidInput):
        tiny_core_triager.predict(bad)


def test_too_long_text_is_refused(tiny_backend):
    with pytest.raises(InvalidInput, match="limit"):
        Triager(tiny_backend, "v", max_chars=10).predict("麦克风坏了" * 3)


def test_predict_many_matches_predict(tiny_core_triager):
    many = tiny_core_triager.predict_many(TEXTS)
    assert [p.model_dump() for p in many] == [tiny_core_triager.predict(t).model_dump() for t in TEXTS]
    assert tiny_core_triager.predict_many([]) == []
    with pytest.raises(InvalidInput, match="message 1"):
        tiny_core_triager.predict_many(["坏了", ""])


# ------------------------------------------------------------------ evaluation


def test_head_report_metrics():
    report = head_report("emotion", ["calm", "calm", "angry", "upset"], ["calm", "angry", "angry", "upset"])
    assert report["accuracy"] == 0.75
    assert report["per_class"]["calm"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert report["per_class"]["angry"]["precision"] == 0.5
    assert report["confusion"]["matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert report["macro_f1"] == pytest.approx((0.6667 + 1.0 + 0.6667) / 3, abs=1e-3)


def test_expected_calibration_error():
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)


def test_majority_baseline(tiny_records):
    base = majority_baseline(tiny_records, tiny_records)
    assert base["dispute_type"]["label"] == "quality"
    assert base["dispute_type"]["accuracy"] == pytest.approx(30 / 85, abs=1e-3)


@pytest.mark.slow
def test_seed_model_beats_majority_on_real_complaints():
    """Trained on datasets/seed only, the model must clearly beat the majority class on real text."""
    from models.evaluation import evaluate_triager
    from models.training import load_labeled
    from triage.settings import PROJECT_ROOT

    dev_path = SHARED_DATA / "dev_labeled.jsonl"
    seed_dir = PROJECT_ROOT / "datasets" / "seed"
    if not dev_path.is_file() or not list(seed_dir.glob("*.jsonl")):
        skip_unless_ci("needs ../shared/data/dev_labeled.jsonl and datasets/seed")
    seed, _ = load_labeled(seed_dir)
    dev, problems = load_labeled(dev_path)
    assert not problems
    backend = train_backend(seed, "sklearn", calibration_folds=0)
    report = evaluate_triager(Triager(backend, "seed", max_chars=10**9), dev)
    base = majority_baseline(seed, dev)
    for head in ("dispute_type", "urgency", "emotion"):
        assert report[head]["macro_f1"] > base[head]["macro_f1"] + 0.25, head
