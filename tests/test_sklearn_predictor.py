"""The numpy-only predictor reproduces the scikit-learn backend it reads (issue 14).

SklearnBackend is the reference. For a saved model, SklearnPredictor must build the same
feature matrix (same columns in the same order, values to float32 rounding), the same
probabilities, the same explanations, and so the same triage; it must never import
scikit-learn or scipy; and a model it cannot reproduce must go to the full backend.
"""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, SHARED_DATA, make_records
from models.sklearn_backend import SentimentModel, SklearnBackend
from models.sklearn_predictor import PredictorUnsupported, SklearnPredictor, _hash_index
from models.store import ModelStore
from models.training import train_backend
from triage.taxonomy import HEADS
from triage.text import prepare
from triage.triager import Triager

TEXTS = [
    "麦克风底噪很大，直播时观众都说有电流声",
    "直播前一小时采集卡插上就冒烟了，今晚的带货直播全泡汤！！我要去12315投诉",
    "快递五天还没到？？客服也不回",
    "很好用，推荐！",
    "联系我13812345678，订单号2023112512345678",
    "USB3.0采集卡 HDMI  没信号   OBS黑屏",
    "İSTANBUL ÀÉ 全角ＡＢＣ１２３",
    "😡😡",
    "a",
    "好" * 400,
]


def real_reviews(n: int) -> list[str]:
    corpus = SHARED_DATA / "corpora" / "online_shopping_10_cats.csv"
    if not corpus.is_file():
        return []
    with corpus.open(encoding="utf-8") as f:
        return [row["review"] for row in itertools.islice(csv.DictReader(f), 0, 60000, 60000 // n) if row["review"]]


@pytest.fixture(scope="module", params=["vocabulary", "self-trained", "hashed"])
def saved(tmp_path_factory, request):
    """A backend with the sentiment signal, saved, and the predictor of its folder: the
    signal over its own n-grams (some of them not among the heads' terms, or all among them),
    and the hashed signal of models saved before."""
    positive = ["很好用，满意", "质量不错，推荐", "物流快，好评", "非常喜欢", "音质清楚，主播推荐的靠谱"] * 5
    negative = ["太差了，垃圾", "质量很差，失望", "坏了，不推荐", "后悔买了", "麦克风滋滋响，坑人"] * 5
    sentiment = SentimentModel().fit(positive + negative, [0] * 25 + [1] * 25, hashed=request.param == "hashed")
    # self-trained: the signal's reviews are the heads' unlabeled text too (the default's
    # recipe), so every n-gram of the signal is among the heads' terms
    unlabeled = positive + negative if request.param == "self-trained" else None
    backend = train_backend(make_records(), "sklearn", sentiment=sentiment, unlabeled=unlabeled)
    if request.param != "hashed":
        heads = set(backend.word_vectorizer.vocabulary_)
        assert bool(set(sentiment.vocabulary) - heads) == (request.param == "vocabulary")
    folder = tmp_path_factory.mktemp("backend")
    backend.save(folder)
    return SklearnBackend.load(folder), SklearnPredictor.load(folder), folder


def texts_to_compare() -> list[str]:
    return TEXTS + [r["text"] for r in make_records()] + real_reviews(1500)


def test_same_feature_matrix(saved):
    backend, predictor, _ = saved
    prepared = [prepare(t) for t in texts_to_compare()]
    X = backend.featurize(prepared)
    data, indices, indptr, rows = predictor.featurize(prepared)
    assert np.array_equal(X.indptr, indptr)
    assert np.array_equal(X.indices, indices)
    np.testing.assert_allclose(data, X.data, rtol=2e-6, atol=0)
    assert np.array_equal(rows, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)))


def test_same_probabilities_and_explanations(saved):
    backend, predictor, _ = saved
    prepared = [prepare(t) for t in texts_to_compare()]
    p_ref, e_ref = backend.predict_explained(prepared)
    p_new, e_new = predictor.predict_explained(prepared)
    e_ref, e_new = ([{h: [list(pair) for pair in e[h]] for h in e} for e in es] for es in (e_ref, e_new))
    for head in HEADS:
        np.testing.assert_allclose(p_new[head], p_ref[head], atol=1e-5)
        assert np.array_equal(p_new[head].argmax(axis=1), p_ref[head].argmax(axis=1))
    same = sum(a == b for a, b in zip(e_ref, e_new))
    assert same >= len(e_ref) - 2  # a weight on a 4th-decimal rounding boundary may differ
    for a, b in zip(e_ref, e_new):
        assert [[w for w, _ in a[h]] for h in HEADS] == [[w for w, _ in b[h]] for h in HEADS] or a == b


def test_explaining_another_label(saved):
    backend, predictor, _ = saved
    for head, label in (("dispute_type", "refund"), ("urgency", 1), ("escalation", True)):
        assert predictor.explain(TEXTS[1], head, label) == [list(pair) for pair in backend.explain(TEXTS[1], head, label)]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_sentiment_hash_is_scikit_learns(text):
    from sklearn.utils.murmurhash import murmurhash3_32

    h = murmurhash3_32(text, 0, positive=False)
    expected = (2**31 - 1 - (2**18 - 1)) % 2**18 if h == -(2**31) else abs(h) % 2**18
    assert _hash_index(text) == expected


def test_a_model_it_does_not_reproduce_is_refused(saved, tmp_path):
    _, _, folder = saved
    for name in ("backend.json", "vocabulary.json", "arrays.npz"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    meta = json.loads((tmp_path / "backend.json").read_text(encoding="utf-8"))
    meta["params"]["char_wb"] = True
    (tmp_path / "backend.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PredictorUnsupported):
        SklearnPredictor.load(tmp_path)
    meta["format"] = "sklearn-tfidf-logreg/4"
    meta["params"].pop("char_wb")
    (tmp_path / "backend.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PredictorUnsupported):
        SklearnPredictor.load(tmp_path)


def test_the_store_falls_back_to_the_backend(tiny_store, monkeypatch):
    assert isinstance(tiny_store.load_predictor()[0], SklearnPredictor)

    def refuse(cls, path):
        raise PredictorUnsupported("not this one")

    monkeypatch.setattr(SklearnPredictor, "load", classmethod(refuse))
    assert isinstance(tiny_store.load_predictor()[0], SklearnBackend)


def test_triage_is_the_same_through_either(tiny_store, monkeypatch):
    from triage.settings import get_settings

    texts = TEXTS + real_reviews(300)
    outputs = {}
    for fast in ("true", "false"):
        monkeypatch.setenv("TRIAGE_FAST_PREDICT", fast)
        get_settings.cache_clear()
        triager = Triager.from_store(tiny_store)
        assert isinstance(triager.backend, SklearnPredictor if fast == "true" else SklearnBackend)
        outputs[fast] = triager.predict_many(texts)
    get_settings.cache_clear()
    for fast, ref in zip(outputs["true"], outputs["false"]):
        assert (fast.dispute_type, fast.urgency, fast.emotion, fast.escalation) == (
            ref.dispute_type, ref.urgency, ref.emotion, ref.escalation)
        assert set(fast.explanation) == set(ref.explanation) and set(HEADS) | {"rules"} <= set(fast.explanation)
        assert [w for w, _ in fast.explanation["emotion"]] == [w for w, _ in ref.explanation["emotion"]]
        assert fast.rules == ref.rules
        assert fast.scores.keys() == ref.scores.keys()
        for head in HEADS:
            assert fast.scores[head].keys() == ref.scores[head].keys()
            # Scores are rounded to 4 decimals: two probabilities a hair apart on either side of a
            # rounding boundary differ by one unit (0.9433 / 0.9434), which in floats is a hair over 1e-4.
            diffs = {k: abs(fast.scores[head][k] - ref.scores[head][k]) for k in ref.scores[head]}
            assert max(diffs.values()) <= 1e-4 + 1e-9, (head, fast.scores[head], ref.scores[head])


def test_predicting_imports_neither_scikit_learn_nor_scipy(tiny_store):
    code = (
        "import sys\n"
        "from models.store import ModelStore\n"
        "from triage.triager import Triager\n"
        f"t = Triager.from_store(ModelStore({str(tiny_store.root)!r}))\n"
        "p = t.predict('麦克风底噪很大，我要去12315投诉')\n"
        "assert p.explanation['dispute_type'] and p.explanation['rules'], p.explanation\n"
        "print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "TRIAGE_FAST_PREDICT": "true"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_predict_lines_keep_their_shape(tiny_store, tmp_path, monkeypatch):
    """`triage predict` writes the same fields, labels and explanations on either path."""
    from typer.testing import CliRunner

    from triage.cli import app
    from triage.settings import get_settings

    fields = {"id", "dispute_type", "urgency", "emotion", "escalation", "confidence", "scores", "explanation", "model_version"}
    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS))
    rows = {}
    for fast in ("true", "false"):
        monkeypatch.setenv("TRIAGE_FAST_PREDICT", fast)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["predict", "--model", str(tiny_store.root)], input=lines)
        assert result.exit_code == 0, result.output
        rows[fast] = [json.loads(line) for line in result.stdout.splitlines()]
    get_settings.cache_clear()
    assert len(rows["true"]) == len(TEXTS)
    assert sum(any(r["explanation"][h] for h in HEADS) for r in rows["true"]) >= len(TEXTS) // 2
    for fast, ref in zip(rows["true"], rows["false"]):
        assert set(fast) == fields
        assert set(HEADS) | {"rules"} <= set(fast["explanation"])
        assert [[w for w, _ in fast["explanation"][h]] for h in HEADS] == [[w for w, _ in ref["explanation"][h]] for h in HEADS]
        assert {k: fast[k] for k in ("id", "dispute_type", "urgency", "emotion", "escalation")} == {
            k: ref[k] for k in ("id", "dispute_type", "urgency", "emotion", "escalation")}
        assert fast["explanation"]["rules"] == ref["explanation"]["rules"]


def test_one_message_explains_as_a_batch(saved):
    _, predictor, _ = saved
    prepared = [prepare(t) for t in TEXTS]
    _, batch = predictor.predict_explained(prepared)
    for p, expected in zip(prepared, batch):
        assert predictor.predict_explained([p])[1][0] == expected


def test_the_one_sort_behind_explanations_orders_as_lexsort():
    """Row, then weight descending, ties in their original order: what np.lexsort gave."""
    from models.sklearn_predictor import _by_row_then_descending

    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(0, 2000))
        rows = rng.integers(0, 40, n)
        if trial % 2:
            values = rng.choice(np.array([0.5, 1e-30, 3.0, 7.25, np.inf], dtype=np.float32), n)  # many ties
        else:
            values = rng.random(n).astype(np.float32) + np.float32(1e-6)
        assert np.array_equal(_by_row_then_descending(rows, values), np.lexsort((-values, rows)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**40), max_size=300, unique=True), st.lists(st.integers(0, 2**40), max_size=300))
def test_hash_index_finds_every_key_and_nothing_else(keys, others):
    """Both ways of looking up (hashing for a batch, binary search for a few) agree with a dict."""
    from models.sklearn_predictor import _HashIndex

    index = _HashIndex(np.array(keys, dtype=np.int64), np.arange(len(keys)))
    expected = {k: i for i, k in enumerate(keys)}
    queries = np.array(keys + others, dtype=np.int64)
    want = [expected.get(q, -1) for q in queries.tolist()]
    assert index.get(queries).tolist() == want
    many = np.tile(queries, _HashIndex.SMALL // max(len(queries), 1) + 1)  # past the binary-search size
    assert index.get(many).tolist() == want * (len(many) // max(len(queries), 1)) and len(index) == len(keys)
