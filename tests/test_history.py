"""Learning from the installation's own history (issue 16): self-training, the unlabeled
file formats, the retrain reading stored messages, and the 一级 operating point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.history import SelfTraining, pseudo_labels, self_train
from models.training import read_unlabeled
from models.sklearn_backend import SklearnBackend
from triage.errors import InvalidInput
from triage.taxonomy import HEADS

# Labeled: two dispute types told apart by a known word each. History: each known word
# beside a word the labeled set never has; only self-training can learn the new words.
LABELED = [("屏幕坏了", "quality"), ("快递太慢", "service")]
HISTORY = {"quality": "屏幕坏了 闪屏严重", "service": "快递太慢 揽收拖拉"}
PROBES = {"quality": "闪屏严重", "service": "揽收拖拉"}


def _labels(dispute):
    return {"dispute_type": dispute, "urgency": 2, "emotion": "calm", "escalation": False}


def _labeled_set():
    texts, labels = [], {h: [] for h in HEADS}
    for i in range(12):
        for text, dispute in LABELED:
            texts.append(f"{text}{'啊' * (i % 4)}{'呢' * (i // 4)}")
            for h, v in _labels(dispute).items():
                labels[h].append(v)
    labels["urgency"][0] = 3  # every head needs two classes
    labels["emotion"][1] = "upset"
    labels["escalation"][2] = True
    return texts, labels


def _fit(texts, labels, weights, progress=None):
    return SklearnBackend(calibration_folds=0).fit(texts, labels, sample_weight=weights)


def _dispute(backend, text):
    p = backend.predict_proba([text])["dispute_type"][0]
    return backend.classes_["dispute_type"][int(np.argmax(p))], float(p.max())


def test_self_training_learns_the_words_of_the_history():
    texts, labels = _labeled_set()
    history = [HISTORY[d] + "!" * (i % 3) for i in range(20) for d in ("quality", "service")]
    plain = _fit(texts, labels, None)
    trained = self_train(_fit, texts, labels, None, history, SelfTraining(threshold=0.6, weight=0.5))
    for dispute, probe in PROBES.items():
        label, confidence = _dispute(trained, probe)
        assert label == dispute and confidence > 0.6, (probe, label, confidence)
        assert _dispute(plain, probe)[1] < confidence  # the plain model has never seen these words


def test_pseudo_labels_leave_unsure_messages_and_excluded_heads_out():
    texts, labels = _labeled_set()
    model = _fit(texts, labels, None)
    unsure = "今天天气不错"
    out = pseudo_labels(model, [HISTORY["quality"], unsure], SelfTraining(threshold=0.7, heads=("dispute_type",)))
    assert out["dispute_type"][0] == "quality"
    assert out["dispute_type"][1] is None
    assert out["emotion"] == [None, None] and out["escalation"] == [None, None]


def test_labels_known_beforehand_replace_the_pseudo_labels_of_their_head_only():
    """A positive public review is praise, so its emotion is known (calm); its other heads
    keep the model's pseudo-labels, and a head that does not self-train takes nothing."""
    texts, labels = _labeled_set()
    history = ["屏幕坏了 闪屏严重", "快递太慢 揽收拖拉"]
    seen = {}

    def spying_fit(inputs, labs, weights, progress=None):
        seen.update({h: list(v) for h, v in labs.items()})
        return _fit(inputs, labs, weights)

    known = {"屏幕坏了 闪屏严重": {"emotion": "angry", "escalation": True}}
    config = SelfTraining(threshold=0.5, heads=("dispute_type", "emotion"))
    self_train(spying_fit, texts, labels, None, history, config, known=known)
    n = len(texts)
    assert seen["emotion"][n] == "angry"  # known: in place of whatever the model said
    assert seen["escalation"][n] is None  # escalation does not self-train here: not taken
    assert seen["dispute_type"][n] == "quality"  # not known: the model's pseudo-label
    plain = pseudo_labels(_fit(texts, labels, None), history, config)
    assert seen["emotion"][n + 1] == plain["emotion"][1]  # not known: unchanged


def test_a_set_of_known_labels_narrows_the_pseudo_label_to_the_most_probable_of_them():
    """A negative public review is a complaint: its dispute type is one of the disputes, so
    the pseudo-label is the most probable of those (by its probability among them, against
    the same threshold), never a label outside the set; texts without a set are unchanged."""
    texts, labels = _labeled_set()
    model = _fit(texts, labels, None)
    history = [HISTORY["quality"], HISTORY["service"]]
    config = SelfTraining(threshold=0.9, heads=("dispute_type",))
    plain = pseudo_labels(model, history, config)
    assert plain["dispute_type"] == ["quality", "service"]
    known = {HISTORY["quality"]: {"dispute_type": frozenset({"service"})}}
    narrowed = pseudo_labels(model, history, config, known)
    assert narrowed["dispute_type"] == ["service", "service"]  # the only label it can be: certain
    p = model.predict_proba([HISTORY["quality"]])["dispute_type"][0]
    assert p[model.classes_["dispute_type"].index("service")] < 0.5  # which the model alone doubted
    # A set of labels the head does not have: never confident, left out.
    gone = pseudo_labels(model, history, config, {HISTORY["quality"]: {"dispute_type": frozenset({"refund"})}})
    assert gone["dispute_type"] == [None, "service"]
    # Through self_train: the set is used for pseudo-labels and never put in as a label.
    seen = {}

    def spying_fit(inputs, labs, weights, progress=None):
        seen.update({h: list(v) for h, v in labs.items()})
        return _fit(inputs, labs, weights)

    said = []
    self_train(spying_fit, texts, labels, None, history, config, known=known, report=said.append)
    assert seen["dispute_type"][len(texts):] == ["service", "service"]
    assert "1 narrowed to the labels they can be" in said[0]


def test_a_backend_without_partial_labels_trains_on_the_labeled_data_only():
    class Plain:
        classes_: dict = {}

        def fit(self, texts, labels, sample_weight=None, progress=None):
            self.seen = len(texts)
            return self

    said = []
    model = self_train(lambda t, l, w, p: Plain().fit(t, l), ["a", "b"], {h: [1, 2] for h in HEADS}, None,
                       ["c"] * 5, report=said.append)
    assert model.seen == 2 and "cannot learn from unlabeled history" in said[0]


def test_an_ensemble_self_trains_each_member_that_can_learn_from_the_history():
    """An ensemble cannot take partial labels, but its scikit-learn members can: each learns
    from the history by its own recipe (in a retrain too: both train through ``self_train``)."""
    from models.training import train_backend

    texts, labels = _labeled_set()
    records = [{"text": t, **{h: labels[h][i] for h in HEADS}} for i, t in enumerate(texts)]
    history = [HISTORY[d] + "!" * (i % 3) for i in range(20) for d in ("quality", "service")]

    def members():
        return [SklearnBackend(calibration_folds=0), SklearnBackend(calibration_folds=0, char_ngram=(1, 2))]

    said = []
    ensemble = train_backend(records, "ensemble", unlabeled=history, report=said.append,
                             self_training=SelfTraining(threshold=0.6, weight=0.5), members=members())
    plain = train_backend(records, "ensemble", members=members())
    assert [m.params["char_ngram"] for m in ensemble.members] == [(1, 3), (1, 2)]  # each kept its own parameters
    assert sum("history: 40 messages" in line for line in said) == 2  # each member self-trained
    for dispute, probe in PROBES.items():
        label, confidence = _dispute(ensemble, probe)
        assert label == dispute and confidence > _dispute(plain, probe)[1], (probe, label, confidence)


def test_self_training_settings_are_checked():
    with pytest.raises(InvalidInput, match="threshold"):
        SelfTraining(threshold=1.0)
    with pytest.raises(InvalidInput, match="weight"):
        SelfTraining(weight=0)
    with pytest.raises(InvalidInput, match="unknown heads"):
        SelfTraining(heads=("mood",))


def test_read_unlabeled_jsonl_and_csv_with_bad_lines_reported(tmp_path):
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_text('{"text": "一"}\nnot json\n{"id": 3}\n\n{"text": "二"}\n{"text": "一"}\n', encoding="utf-8")
    csv_file = tmp_path / "export.csv"
    csv_file.write_text("label,review\n1,三\n0,\n0,四\n", encoding="utf-8")
    said = []
    assert read_unlabeled([jsonl, csv_file], report=said.append) == ["一", "二", "三", "四"]
    assert said == [f"skipped {jsonl}:2: not JSON (Expecting value)", f"skipped {jsonl}:3: no 'text' string"]
    assert read_unlabeled([jsonl, csv_file], limit=3, report=said.append) == ["一", "二", "三"]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no 'review' or 'text' column"):
        read_unlabeled([tmp_path / "bad.csv"])
    with pytest.raises(InvalidInput, match="must be .jsonl"):
        read_unlabeled([tmp_path / "bad.txt"]) if (tmp_path / "bad.txt").write_text("x") else None
    with pytest.raises(InvalidInput, match="does not exist"):
        read_unlabeled([tmp_path / "missing.jsonl"])


def test_train_command_uses_unlabeled_and_confirmed_files(tmp_path, monkeypatch, tiny_records):
    from typer.testing import CliRunner

    from models.store import ModelStore
    from triage.cli import app
    from triage.settings import get_settings

    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records), encoding="utf-8")
    confirmed = tmp_path / "confirmed.jsonl"
    confirmed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records[:10]), encoding="utf-8")
    history = tmp_path / "history.csv"
    history.write_text("review\n" + "".join(f"{r['text']}，第{i}次\n" for i, r in enumerate(tiny_records)), encoding="utf-8")
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_HISTORY_LIMIT", "50")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["train", "--data", str(seed), "--confirmed", str(confirmed),
                                          "--unlabeled", str(history)])
        assert result.exit_code == 0, result.output
        store = ModelStore(tmp_path / "var" / "models")
        training = store.read_manifest(store.current_version())["training"]
        assert training["confirmed"] == 10 and training["unlabeled_history"] == 50
        assert "confident pseudo-labels" in result.output
        bad = CliRunner().invoke(app, ["train", "--data", str(seed), "--unlabeled", str(tmp_path / "nope.csv")])
        assert bad.exit_code != 0 and "does not exist" in bad.output
    finally:
        get_settings.cache_clear()


def test_train_recipe_is_what_train_and_the_benchmarks_share(monkeypatch):
    """``triage train`` and every benchmark that scores a configuration of the product train
    through one function: seed at weight 1, confirmed labels at the confirmed weight, the
    installation's history before the public reviews, and the reviews' signal and labels."""
    import models.training as training
    from triage.settings import Settings

    calls = []
    monkeypatch.setattr(training, "train_backend", lambda records, backend, **kw: calls.append((records, backend, kw)))

    class Reviews:
        prepared = ["好评一", "差评二"]

        def sentiment(self):
            return "the signal"

        def known_labels(self):
            return {"好评一": {"emotion": "calm"}}

    seed, confirmed = [{"text": "a"}, {"text": "b"}], [{"text": "c"}]
    training.train_recipe(seed, confirmed, ["历史一"], public=Reviews(), confirmed_weight=4.0)
    records, backend, kw = calls[-1]
    assert [r["text"] for r in records] == ["a", "b", "c"] and backend == "sklearn"
    assert kw["sample_weight"] == [1.0, 1.0, 4.0]
    assert kw["unlabeled"] == ["历史一", "好评一", "差评二"]
    assert kw["sentiment"] == "the signal" and kw["known_labels"] == {"好评一": {"emotion": "calm"}}
    training.train_recipe(seed, public=Reviews(), sentiment=None, word_min_df=1)
    kw = calls[-1][2]
    assert kw["sample_weight"] is None and kw["sentiment"] is None and kw["word_min_df"] == 1
    training.train_recipe(seed, confirmed, public=Reviews())  # the settings' default weight
    assert calls[-1][2]["sample_weight"] == [1.0, 1.0, Settings.model_fields["confirmed_weight"].default]
    training.train_recipe(seed, confirmed, public=None)  # the previous release's recipe: labels alone
    kw = calls[-1][2]
    assert kw["unlabeled"] is None and kw["sentiment"] is None and kw["known_labels"] is None


def test_retrain_learns_from_stored_messages_but_not_the_held_out_ones(tmp_path):
    """The service's retrain reads the newest stored (masked) messages as history and leaves
    the confirmed hold-out, which judges the candidate, out of it."""
    from models.learning import LabeledExample, is_holdout, loop_for_service
    from review_fixtures import make_service, make_settings, train_tiny_model

    settings = make_settings(tmp_path, per_type=6, history_limit=500)
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    for i in range(30):
        service.ingest({"source": "shop", "external_id": f"h{i}", "text": f"麦克风有杂音，电话13800138{i:03d}"})
    history = service.message_history(settings.history_limit)
    assert len(history) == 30 and all("<PHONE>" in t and "13800138" not in t for t in history)
    assert len(service.message_history(5)) == 5 and service.message_history(0) == []

    seen = []

    def fit(texts, labels, weights, progress=None):
        seen.append([getattr(t, "text", t) for t in texts])
        return SklearnBackend(calibration_folds=0).fit(texts, labels, sample_weight=weights)

    loop = loop_for_service(service, store, settings, fit=fit, fit_quick=fit)
    confirmed = [LabeledExample(key=f"case-{i}", text=f"声卡没声音{i}", labels=_labels("quality"), confirmed=True)
                 for i in range(60)]
    held_out = {e.text for e in confirmed if is_holdout(e.key)}
    assert held_out
    loop.hooks.confirmed_examples = lambda: confirmed
    loop.hooks.message_history = lambda: history + sorted(held_out)
    outcome = loop.retrain("alice")
    assert outcome.metrics["learning"]["unlabeled_history"] == 30
    second_round = seen[1]  # the candidate's self-training round: labeled + history
    assert not held_out & set(second_round)
    assert sum("杂音" in t for t in second_round) == 30
    service.db.dispose()


def test_urgent_operating_point_grades_one_when_its_probability_reaches_the_threshold(tiny_backend):
    from triage.triager import Triager, grade_at_operating_point

    p = np.array([[0.30, 0.50, 0.20], [0.60, 0.30, 0.10], [0.10, 0.30, 0.60]])
    assert grade_at_operating_point(p, [1, 2, 3], 0.25) == [0, 0, 2]
    assert grade_at_operating_point(p, [1, 2, 3], 0.65) == [1, 1, 2]  # argmax 1 but below: next best
    text = "麦克风用了三天就有杂音，很失望"
    p1 = tiny_backend.predict_proba([text])["urgency"][0][tiny_backend.classes_["urgency"].index(1)]
    low = Triager(tiny_backend, "t", urgent_threshold=p1 / 2).predict(text)
    high = Triager(tiny_backend, "t", urgent_threshold=(p1 + 1) / 2).predict(text)
    assert low.urgency == 1 and high.urgency != 1
    with pytest.raises(InvalidInput, match="urgent_threshold"):
        Triager(tiny_backend, "t", urgent_threshold=1.5)


def test_the_history_is_masked_before_use_and_no_text_of_it_is_stored(tmp_path):
    """Self-training sees stored (masked) texts only; the model version records how many
    history messages it used, never their texts, and no personal data reaches its files."""
    from models.learning import loop_for_service
    from review_fixtures import make_service, make_settings, train_tiny_model

    settings = make_settings(tmp_path, per_type=6, history_limit=100)
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    secret_phone, secret_mail = "13912345678", "zhou.xiaoming@example.com"
    for i in range(12):
        service.ingest({"source": "shop", "external_id": f"p{i}",
                        "text": f"声卡第{i}天就没声音了，回电{secret_phone}或{secret_mail}"})
    loop = loop_for_service(service, store, settings)
    outcome = loop.retrain("alice")
    assert outcome.metrics["learning"]["unlabeled_history"] == 12
    folder = store.root / outcome.version
    stored = "".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.suffix in (".json", ".sig"))
    assert secret_phone not in stored and secret_mail not in stored and "zhou" not in stored
    assert "声卡第3天就没声音了" not in stored  # no history text in the manifest or vocabulary
    service.db.dispose()


def test_the_operating_point_grade_is_explained_by_its_own_words(tiny_backend):
    """When the threshold moves a message to 一级, the urgency words shown are those behind 一级."""
    from triage.triager import Triager

    text = "麦克风用了三天就有杂音，很失望"
    p1 = tiny_backend.predict_proba([text])["urgency"][0][tiny_backend.classes_["urgency"].index(1)]
    moved = Triager(tiny_backend, "t", urgent_threshold=p1 / 2).predict(text)
    assert moved.urgency == 1
    expected = tiny_backend.explain(text, "urgency", 1, top_k=5)
    assert [w for w, _ in moved.explanation["urgency"]] == [w for w, _ in expected]
