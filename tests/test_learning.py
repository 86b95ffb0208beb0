"""The learning loop: holdout split, macro-F1, quality gate, retrain/promote/rollback, jobs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.naive_bayes import MultinomialNB

from models.learning import (
    LabeledExample,
    LearningHooks,
    LearningLoop,
    ModelHolder,
    fold_of,
    holdout_drop_bounds,
    is_holdout,
    macro_f1_by_head,
    quality_gate,
    split_confirmed,
)
from triage.errors import Conflict, InvalidInput, ModelError, NotFound
from triage.taxonomy import HEADS

# ------------------------------------------------------------------ tiny fixtures

QUALITY = ["摄像头黑屏开不了机", "麦克风有电流声没法用", "补光灯一直闪烁", "采集卡插上就烧了", "声卡没有声音"]
SERVICE = ["快递五天才到", "客服一直不回复", "安装师傅没来", "发票一直没寄", "物流丢件了没人管"]


def example(key, text, dispute_type, confirmed=False):
    labels = {"dispute_type": dispute_type, "urgency": 2, "emotion": "calm", "escalation": False}
    return LabeledExample(key=key, text=text, labels=labels, confirmed=confirmed)


def seed_set():
    out = []
    for i in range(4):
        out += [example(f"q{i}-{j}", t + "啊" * i, "quality") for j, t in enumerate(QUALITY)]
        out += [example(f"s{i}-{j}", t + "呢" * i, "service") for j, t in enumerate(SERVICE)]
    return out


class TinyBackend:
    """Char-bigram naive Bayes per head: trains in milliseconds, honours sample weights."""

    def __init__(self):
        self.classes_ = {}
        self.heads = {}

    def fit(self, texts, labels, sample_weight=None, progress=None):
        self.vectorizer = CountVectorizer(analyzer="char", ngram_range=(1, 2)).fit(texts)
        X = self.vectorizer.transform(texts)
        for head, values in labels.items():
            model = MultinomialNB().fit(X, [str(v) for v in values], sample_weight=sample_weight)
            self.heads[head] = model
            self.classes_[head] = list(model.classes_)
        return self

    def predict_proba(self, texts):
        X = self.vectorizer.transform(texts)
        return {head: model.predict_proba(X) for head, model in self.heads.items()}


class ConstantBackend(TinyBackend):
    """Always predicts one dispute type: a deliberately bad candidate."""

    def __init__(self, label):
        super().__init__()
        self.label = label

    def predict_proba(self, texts):
        out = super().predict_proba(texts)
        classes = self.classes_["dispute_type"]
        probs = np.zeros((len(texts), len(classes)))
        probs[:, classes.index(self.label)] = 1.0
        out["dispute_type"] = probs
        return out


class MemoryStore:
    """The ``models.store.ModelStore`` calls the loop uses, in memory (same signatures)."""

    def __init__(self):
        self.versions = []  # manifests, oldest first
        self.backends = {}
        self.current = None

    def save(self, backend, manifest_extra=None):
        version = f"v{len(self.versions) + 1:04d}"
        manifest = {"version": version, "created": f"2026-01-01T00:00:{len(self.versions):02d}",
                    "status": "candidate", "metrics": {}, **(manifest_extra or {})}
        self.versions.append(manifest)
        self.backends[version] = backend
        return version

    def current_version(self):
        return self.current

    def set_current(self, version):
        self.read_manifest(version)
        self.current = version

    def read_manifest(self, version):
        for manifest in self.versions:
            if manifest["version"] == version:
                return dict(manifest)
        raise NotFound(f"model version {version} does not exist")

    def load(self, version=None):
        version = version or self.current
        return self.backends[version], self.read_manifest(version)

    def list_versions(self):
        return [dict(m, current=m["version"] == self.current) for m in self.versions]

    def update_manifest(self, version, **changes):
        for manifest in self.versions:
            if manifest["version"] == version:
                manifest.update(changes)
                return dict(manifest)
        raise NotFound(version)


def make_loop(store=None, confirmed=(), fit=None, **kwargs):
    store = store or MemoryStore()
    audit, regraded = [], []
    hooks = LearningHooks(
        confirmed_examples=lambda: list(confirmed),
        regrade=lambda triager, actor: regraded.append((triager, actor)) or 3,
        audit=lambda action, actor, details: audit.append((action, actor, details)),
    )
    loop = LearningLoop(
        store,
        seed_examples=seed_set,
        hooks=hooks,
        fit=fit or (lambda texts, labels, weights, progress: TinyBackend().fit(texts, labels, weights)),
        load_triager=lambda store, version: ("triager", store.load(version)[0]),
        **kwargs,
    )
    return loop, store, audit, regraded


# ------------------------------------------------------------------ pure parts


def test_holdout_split_is_stable_and_near_its_share():
    keys = [f"case-{i}" for i in range(2000)]
    share = sum(is_holdout(k) for k in keys) / len(keys)
    assert 0.17 < share < 0.23
    examples = [example(k, "x", "quality") for k in keys[:50]]
    train, holdout = split_confirmed(examples)
    assert {e.key for e in holdout} == {k for k in keys[:50] if is_holdout(k)}
    assert not {e.key for e in train} & {e.key for e in holdout}
    assert {fold_of(k) for k in keys} == {0, 1, 2}


def test_from_record_validates_labels():
    record = {"id": "a", "text": "坏了", "dispute_type": "quality", "urgency": "1", "emotion": "calm", "escalation": False}
    assert LabeledExample.from_record(record).labels["urgency"] == 1
    with pytest.raises(InvalidInput, match="dispute_type"):
        LabeledExample.from_record({**record, "dispute_type": "broken"})
    with pytest.raises(InvalidInput, match="emotion"):
        LabeledExample.from_record({k: v for k, v in record.items() if k != "emotion"})
    with pytest.raises(InvalidInput, match="no text"):
        LabeledExample.from_record({**record, "text": "  "})


def test_macro_f1_ignores_labels_absent_from_reference():
    examples = [example(str(i), "t", "quality") for i in range(4)] + [example("s", "t", "service")]
    perfect = macro_f1_by_head(examples, {"dispute_type": ["quality"] * 4 + ["service"]})
    assert perfect["dispute_type"] == pytest.approx(1.0)
    # one false "refund" (absent from the reference) lowers only the quality F1
    one_off = macro_f1_by_head(examples, {"dispute_type": ["quality"] * 3 + ["refund", "service"]})
    assert one_off["dispute_type"] == pytest.approx((6 / 7 + 1.0) / 2)


def test_gate_rejects_a_drop_beyond_the_margin_and_names_it():
    current = {"holdout": {"dispute_type": 0.80, "urgency": 0.6}, "seed_cv": {"dispute_type": 0.9}}
    ok = quality_gate(current, {"holdout": {"dispute_type": 0.79, "urgency": 0.7}, "seed_cv": {"dispute_type": 0.885}}, 0.02)
    assert ok.promote and ok.drops["holdout"]["dispute_type"] == pytest.approx(0.01)
    bad = quality_gate(current, {"holdout": {"dispute_type": 0.75, "urgency": 0.7}, "seed_cv": {"dispute_type": 0.9}}, 0.02)
    assert not bad.promote and "dispute_type" in bad.reason and "holdout" in bad.reason
    # an evaluation that is not gated is reported but does not decide
    assert quality_gate(current, {"holdout": {"dispute_type": 0.1}, "seed_cv": {"dispute_type": 0.9}}, 0.02, gated=["seed_cv"]).promote
    assert quality_gate({}, {"seed_cv": {"dispute_type": 0.1}}, 0.02).promote  # nothing to compare with
    with pytest.raises(InvalidInput):
        quality_gate(current, current, -0.1)


def _holdout(n, wrong_current, wrong_candidate):
    """n held-out quality/service messages; each model gets the given indices wrong."""
    examples = [example(f"h{i}", f"t{i}", "quality" if i % 2 else "service", confirmed=True) for i in range(n)]
    flip = {"quality": "service", "service": "quality"}

    def labels(wrong):
        return {"dispute_type": [flip[e.labels["dispute_type"]] if i in wrong else e.labels["dispute_type"]
                                 for i, e in enumerate(examples)]}
    return examples, labels(set(wrong_current)), labels(set(wrong_candidate))


def test_a_small_holdout_rejects_only_a_drop_beyond_its_noise():
    # 40 messages: the candidate gets 2 more wrong, an observed drop of about 0.05.
    examples, current, candidate = _holdout(40, [0, 1, 2, 3], [0, 1, 2, 3, 4, 5])
    drop = macro_f1_by_head(examples, current)["dispute_type"] - macro_f1_by_head(examples, candidate)["dispute_type"]
    assert drop > 0.04
    bound = holdout_drop_bounds(examples, current, candidate, 0.9)["dispute_type"]
    assert bound < drop and bound < 0.02  # two messages are within the noise of 40
    scores = lambda labels: {"holdout": macro_f1_by_head(examples, labels)}  # noqa: E731
    assert not quality_gate(scores(current), scores(candidate), 0.02, ["holdout"]).promote  # the bare drop
    decision = quality_gate(scores(current), scores(candidate), 0.02, ["holdout"], {"holdout": {"dispute_type": bound}})
    assert decision.promote and "beyond its noise" in decision.reason
    # The same share of extra errors on 400 messages is beyond the noise.
    examples, current, candidate = _holdout(400, range(40), range(60))
    bound = holdout_drop_bounds(examples, current, candidate, 0.9)["dispute_type"]
    assert bound > 0.02
    decision = quality_gate({"holdout": macro_f1_by_head(examples, current)}, {"holdout": macro_f1_by_head(examples, candidate)},
                            0.02, ["holdout"], {"holdout": {"dispute_type": bound}})
    assert not decision.promote and "surely more than" in decision.reason
    # A clearly broken candidate is rejected on 40 messages too.
    examples, current, candidate = _holdout(40, [0, 1], range(0, 40, 2))
    assert holdout_drop_bounds(examples, current, candidate, 0.9)["dispute_type"] > 0.2
    # Paired: identical labels give a bound of exactly 0; the same seed gives the same bound.
    assert holdout_drop_bounds(examples, current, current, 0.9)["dispute_type"] == 0.0
    assert holdout_drop_bounds(examples, current, candidate, 0.9) == holdout_drop_bounds(examples, current, candidate, 0.9)
    with pytest.raises(InvalidInput):
        holdout_drop_bounds(examples, current, candidate, 1.0)


def test_holder_swaps_and_notifies():
    holder = ModelHolder()
    with pytest.raises(ModelError):
        holder.triager
    seen = []
    holder.on_swap(seen.append)
    holder.swap("a")
    holder.swap("b")
    assert holder.triager == "b" and seen == ["a", "b"]


# ------------------------------------------------------------------ the loop


def test_first_retrain_promotes_and_regrades():
    loop, store, audit, regraded = make_loop()
    outcome = loop.retrain("alice")
    assert outcome.promoted and store.current == outcome.version
    assert loop.holder.triager[1] is store.backends[outcome.version]
    assert regraded and regraded[0][1] == f"model:{outcome.version}" and outcome.regraded == 3
    assert [a[0] for a in audit] == ["model.trained", "model.promoted"]
    assert store.versions[0]["status"] == "promoted"


def test_confirmed_labels_are_weighted_and_holdout_never_trained_on():
    confirmed = [example(f"c{i}", f"声音{i}", "service", confirmed=True) for i in range(200)]
    seen = {}

    def fit(texts, labels, weights, progress):
        seen.setdefault("calls", []).append((list(texts), list(weights)))
        return TinyBackend().fit(texts, labels, weights)

    loop, store, _, _ = make_loop(confirmed=confirmed, fit=fit)
    outcome = loop.retrain("alice")
    texts, weights = seen["calls"][0]
    holdout_texts = {e.text for e in confirmed if is_holdout(e.key)}
    assert holdout_texts and not holdout_texts & set(texts)
    assert weights.count(loop.confirmed_weight) == len(confirmed) - len(holdout_texts)
    learning = outcome.metrics["learning"]
    assert learning["confirmed_holdout"] == len(holdout_texts) and "holdout" in learning["gated"]
    assert learning["drop_bounds"] == {}  # nothing to compare with yet
    # The next retrain is compared with it: a bound per head from the same held-out labels,
    # at the loop's confidence, recorded beside the observed drops.
    learning = loop.retrain("alice").metrics["learning"]
    assert set(learning["drop_bounds"]["holdout"]) == set(learning["drops"]["holdout"]) == set(HEADS)
    assert learning["confidence"] == loop.confidence == 0.9
    with pytest.raises(InvalidInput, match="confidence"):
        make_loop(confidence=1.0)


def test_worse_candidate_is_kept_as_rejected_and_current_stays():
    loop, store, audit, regraded = make_loop()
    first = loop.retrain("alice")
    loop._fit = loop._fit_quick = lambda texts, labels, weights, progress: ConstantBackend("quality").fit(texts, labels, weights)
    second = loop.retrain("alice")
    assert not second.promoted and "dispute_type" in second.reason and "seed_cv" in second.reason
    assert store.current == first.version
    assert store.versions[1]["status"] == "rejected" and store.versions[1]["reason"] == second.reason
    assert loop.holder.triager[1] is store.backends[first.version]
    assert len(regraded) == 1  # only the first promotion re-graded
    # a person may still promote the rejected version, then roll back to the first
    loop.promote(second.version, "admin")
    assert store.current == second.version
    loop.rollback(first.version, "admin")
    assert store.current == first.version and audit[-1][0] == "model.rolled_back"


def test_promote_and_rollback_refuse_nonsense():
    loop, store, _, _ = make_loop()
    first = loop.retrain("a").version
    second = loop.retrain("a").version
    with pytest.raises(NotFound):
        loop.promote("v9999", "admin")
    with pytest.raises(Conflict, match="already"):
        loop.promote(second, "admin")
    loop.rollback(first, "admin")
    with pytest.raises(Conflict, match="newer"):
        loop.rollback(second, "admin")


def test_a_background_regrade_can_be_waited_for_and_a_lost_database_does_not_kill_its_thread(capsys):
    """Shutdown waits for the re-grade a promotion started; if the ledger cannot record its
    outcome (the database went away), the job keeps its state and the thread ends cleanly."""
    loop, store, _, regraded = make_loop()
    first = loop.retrain("a").version
    loop.retrain("a")
    gate = threading.Event()
    loop.hooks.regrade = lambda triager, actor: gate.wait(10) and 7

    def lost(*args):
        raise RuntimeError("database unavailable")

    loop.ledger.end_regrade = lost
    errors = []
    previous_hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        job = loop.rollback(first, "admin", background=True)
        assert job.state in ("queued", "running")
        gate.set()
        assert [j.id for j in loop.wait_regrades(timeout=10)] == [job.id]
    finally:
        threading.excepthook = previous_hook
    assert job.state == "done" and job.regraded == 7 and not errors
    assert "could not be recorded" in capsys.readouterr().err
    assert loop.wait_regrades(timeout=1) == []  # nothing left running
    assert store.current == first


def test_background_job_reports_progress_and_refuses_a_second_one():
    gate = threading.Event()

    def slow_fit(texts, labels, weights, progress):
        gate.wait(10)
        return TinyBackend().fit(texts, labels, weights)

    loop, store, _, _ = make_loop(fit=slow_fit)
    job = loop.start_retrain("alice", trigger="api")
    with pytest.raises(Conflict, match="already running"):
        loop.start_retrain("bob")
    assert job.state in ("queued", "running")
    gate.set()
    loop.wait(30)
    assert job.state == "done" and job.progress == 1.0 and job.version == store.current and job.promoted
    assert loop.job(job.id) is job


def test_failed_job_keeps_the_old_model():
    loop, store, _, _ = make_loop()
    loop.retrain("a")
    before = loop.holder.triager

    def broken(*args):
        raise ModelError("disk full")

    loop._fit = broken
    job = loop.start_retrain("a")
    loop.wait(30)
    assert job.state == "failed" and "disk full" in job.error
    assert loop.holder.triager is before


def test_auto_retrain_after_n_confirmations():
    loop, store, _, _ = make_loop(retrain_after=3)
    assert loop.note_confirmations(2) is None
    job = loop.note_confirmations(1, actor="auto")
    assert job is not None and job.trigger == "auto"
    loop.wait(30)
    assert job.state == "done" and loop.confirmations_since_retrain == 0
    with pytest.raises(InvalidInput):
        make_loop(retrain_after=0)


# ------------------------------------------------------------------ with the real service, store and backend


def test_retrain_promote_rollback_with_the_real_service_and_cli(tmp_path, monkeypatch):
    """Confirmed labels from real review decisions feed a real retrain; the service's model
    swaps; the CLI lists, rolls back and promotes; every change is audited."""
    from typer.testing import CliRunner

    from review_fixtures import make_service, make_settings, train_tiny_model
    from triage.cli import app as cli
    from triage.contexts.review import ReviewContext
    from triage.settings import get_settings

    settings = make_settings(tmp_path, per_type=12, retrain_after_confirmations=1000)
    store = train_tiny_model(settings)
    first = store.current_version()
    service = make_service(settings, store)
    context = ReviewContext(service, store, settings)
    texts = ["摄像头黑屏开不了机，直播做不了", "客服三天不回复消息", "说是纯棉结果是化纤", "降价了不给保价",
             "很好用，推荐", "麦克风有电流声", "快递丢件了", "和描述不符，参数虚标"]
    for i, text_ in enumerate(texts):
        case_id = service.ingest({"source": "t", "external_id": str(i), "text": text_}).case.id
        context.review.decide(case_id, "confirm", "rita", context.review.item(case_id)["version"])
    assert len(context.learning.hooks.confirmed_examples()) == len(texts)

    outcome = context.learning.retrain("admin")
    manifest = store.read_manifest(outcome.version)
    assert manifest["status"] == ("promoted" if outcome.promoted else "rejected")
    assert manifest["metrics"]["learning"]["compared_with"] == first
    assert set(manifest["metrics"]["learning"]["seed_cv"]) == set(HEADS)
    assert (service.triager.version == outcome.version) == outcome.promoted
    actions = [a.action for a in service.list_audit(entity="model")]
    assert "model.trained" in actions

    second = outcome.version
    if not outcome.promoted:
        context.learning.promote(second, "admin", "test")
    assert service.triager.version == second

    monkeypatch.setenv("TRIAGE_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TRIAGE_DATASETS_DIR", str(settings.datasets_dir))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        listed = runner.invoke(cli, ["models", "list"])
        assert listed.exit_code == 0, listed.output
        assert f"* {second}  sklearn" in listed.output and first in listed.output
        back = runner.invoke(cli, ["models", "rollback", first, "--actor", "ops"])
        assert back.exit_code == 0, back.output
        assert store.current_version() == first
        again = runner.invoke(cli, ["models", "rollback", first])
        assert again.exit_code == 1 and "already the current" in again.output
    finally:
        get_settings.cache_clear()
    assert any(a.action == "model.rolled_back" and a.actor == "ops" for a in service.list_audit(entity="model"))


def test_confirmed_weight_is_a_setting_the_service_loop_uses(tmp_path, monkeypatch):
    """TRIAGE_CONFIRMED_WEIGHT reaches the weights the service's retrain trains with, and
    TRIAGE_PROMOTION_CONFIDENCE the service loop's gate."""
    from pydantic import ValidationError

    from models.learning import loop_for_service
    from review_fixtures import make_service, make_settings, train_tiny_model
    from triage.settings import Settings

    for field, good, bad in (("confirmed_weight", 1.75, 0), ("promotion_confidence", 0.8, 1)):
        variable = f"TRIAGE_{field.upper()}"
        monkeypatch.setenv(variable, str(good))
        assert getattr(Settings(), field) == good
        monkeypatch.setenv(variable, str(bad))
        with pytest.raises(ValidationError, match=field):
            Settings()
        monkeypatch.delenv(variable)
    settings = make_settings(tmp_path, per_type=6, confirmed_weight=1.75)
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    seen = []

    def fit(texts, labels, weights, progress=None):
        seen.append(list(weights))
        return TinyBackend().fit(texts, labels, weights)

    loop = loop_for_service(service, MemoryStore(), settings.model_copy(update={"promotion_confidence": 0.8}), fit=fit,
                            fit_quick=fit, prepare=lambda text: text, load_triager=lambda store, version: ("triager", version))
    assert loop.confidence == 0.8
    loop = loop_for_service(service, MemoryStore(), settings, fit=fit, fit_quick=fit, prepare=lambda text: text,
                            load_triager=lambda store, version: ("triager", version))
    assert loop.confirmed_weight == 1.75
    confirmed = [example(f"c{i}", f"声音{i}", "service", confirmed=True) for i in range(40)]
    loop.hooks.confirmed_examples = lambda: confirmed
    loop.retrain("alice")
    trained = [e for e in confirmed if not is_holdout(e.key)]
    assert seen[0].count(1.75) == len(trained) and set(seen[0]) == {1.0, 1.75}
    with pytest.raises(InvalidInput, match="confirmed_weight"):
        make_loop(confirmed_weight=0)
    service.db.dispose()
