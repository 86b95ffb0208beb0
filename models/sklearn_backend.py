"""The default backend: jieba words + characters, TF-IDF, class-balanced logistic regression.

Why this shape: the seed data is small (a few thousand messages), so a linear model on
sparse n-grams is accurate, trains in seconds on two cores, predicts thousands of
messages a second and explains itself (feature weight x TF-IDF value). Word n-grams
carry the domain vocabulary (the jieba user dictionary); character n-grams survive
segmentation mistakes and unseen product names. Class weights are balanced because
urgency 1 and escalation are rare but matter most. Probabilities are calibrated by
temperature scaling fitted on out-of-fold scores: it fixes over/under-confidence
without moving the decision (argmax) that the balancing chose.

Saved without pickle: settings and vocabularies as JSON, weights as ``.npz`` loaded with
``allow_pickle=False``, so a model file can carry no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from models.base import ClassifierBackend, ProgressFn
from triage.errors import ModelError
from triage.taxonomy import INTENSITY_ORDER
from triage.text import PreparedText, prepare

FORMAT = "sklearn-tfidf-logreg/3"
_META_FILE = "backend.json"
_VOCAB_FILE = "vocabulary.json"
_ARRAYS_FILE = "arrays.npz"

DEFAULT_PARAMS: dict[str, Any] = {
    "word_ngram": (1, 2),
    "char_ngram": (1, 3),
    "word_min_df": 2,  # with the public reviews, n-grams seen once are 4/5 of the vocabulary and change nothing measured (bench: speed)
    "char_min_df": 2,
    "char_max_features": 60000,
    "C": {"dispute_type": 10.0, "urgency": 4.0, "emotion": 4.0, "escalation": 4.0},
    "calibration_folds": 3,
    "sentiment_scale": 0.5,  # weight of the corpus sentiment features relative to TF-IDF values
    # Heads trained as ordered degrees (triage.taxonomy.INTENSITY_ORDER) instead of one-vs-rest:
    # emotion +0.029 ± 0.022 macro-F1 on the real tuning pool (bench: accuracy); urgency was
    # inside its spread (+0.009 ± 0.022) and stays one-vs-rest.
    "ordinal_heads": ["emotion"],
}


def _as_prepared(texts: Sequence[str | PreparedText]) -> list[PreparedText]:
    return [t if isinstance(t, PreparedText) else prepare(t) for t in texts]


INTENSITY_NAMES = ["<!!>", "<!!!>", "<??>", "<personal data>"]
_INTENSITY_SCALE = 0.3  # about a typical TF-IDF value, so regularisation treats them alike


def _char_input(p: PreparedText) -> str:
    """The text the character n-grams see: without '!', whose count is its own feature.

    A single '!' says little about anger in real reviews (calm, upset and angry ones use
    it alike) while team-written examples tend to reserve it for anger; the model gets
    '!' only as "three or more" (the guideline's "many exclamation marks").
    """
    return p.text.replace("!", "")


def _intensity_matrix(prepared: list[PreparedText]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array([p.intensity for p in prepared], dtype=np.float32).reshape(-1, 4) * _INTENSITY_SCALE)


def _label_key(value: Any) -> Any:
    """numpy scalars to plain Python (np.bool_ -> bool, np.int64 -> int) for JSON and equality."""
    return value.item() if hasattr(value, "item") else value


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class LinearHead:
    """One head as plain arrays: scores = X @ W.T + b, one row per class (one-vs-rest)."""

    W: np.ndarray  # (k, d) float32
    b: np.ndarray  # (k,) float64

    def scores(self, X) -> np.ndarray:
        return np.asarray(X @ self.W.T) + self.b


def _balanced_lr(C: float) -> LogisticRegression:
    """One class-balanced binary question. liblinear's dual solver shuffles: seeded, two fits
    on the same data give the same weights."""
    return LogisticRegression(C=C, class_weight="balanced", solver="liblinear", dual=True, max_iter=1000, random_state=0)


def _fit_linear_head(X, y_idx: np.ndarray, k: int, C: float, weights, order: Sequence[int] | None = None) -> LinearHead:
    """One class-balanced binary logistic regression per class (liblinear: fast on sparse text).

    Binary heads train one model and use [-s/2, s/2] so a softmax gives its sigmoid.
    ``order`` (class indices from the mildest degree to the strongest) trains an ordinal head
    instead: see :func:`_fit_ordinal_head`.
    """
    if order is not None and k > 2:
        return _fit_ordinal_head(X, y_idx, C, weights, order)
    rows_W, rows_b = [], []
    targets = [1] if k == 2 else range(k)
    for c in targets:
        yc = (y_idx == c).astype(int)
        model = _balanced_lr(C)
        model.fit(X, yc, sample_weight=weights)
        rows_W.append(model.coef_[0])
        rows_b.append(model.intercept_[0])
    W, b = np.vstack(rows_W), np.array(rows_b)
    if k == 2:
        W, b = np.vstack([-W[0] / 2, W[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
    return LinearHead(W.astype(np.float32), b.astype(np.float64))


def _fit_ordinal_head(X, y_idx: np.ndarray, C: float, weights, order: Sequence[int]) -> LinearHead:
    """A head for ordered degrees (calm < upset < angry), as plain softmax scores.

    One-vs-rest asks "upset or not?", in which an angry message counts against upset though
    it shares upset's words (失望 and 垃圾 both say "not calm"). Here each step is its own
    class-balanced question on every message, "above degree j?" (calm | upset+angry, then
    calm+upset | angry), with logit f_j, so the words of a stronger degree count for every
    step below it. Degree j scores f_1 + ... + f_j (the mildest 0): the softmax odds of each
    degree against the one below are e^(f_j), an adjacent-category model whose steps are
    estimated on all messages. It stays one linear layer (the same saved arrays, predictor and
    explanations), and temperature scaling calibrates it like any other head.
    """
    d = X.shape[1]
    k = len(order)
    W, b = np.zeros((k, d)), np.zeros(k)
    step_W, step_b = np.zeros(d), 0.0
    for j in range(1, k):
        above = np.isin(y_idx, order[j:]).astype(int)
        model = _balanced_lr(C)
        model.fit(X, above, sample_weight=weights)
        step_W, step_b = step_W + model.coef_[0], step_b + model.intercept_[0]
        W[order[j]], b[order[j]] = step_W, step_b
    return LinearHead(W.astype(np.float32), b.astype(np.float64))


def _fit_temperature(scores: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature T minimising the log-loss of softmax(scores / T) (golden-section search)."""

    def nll(t: float) -> float:
        p = _softmax(scores / t)
        return float(-np.log(np.clip(p[np.arange(len(y_idx)), y_idx], 1e-12, None)).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(np.exp(a)), nll(np.exp(b))
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(np.exp(b))
    return float(np.exp((lo + hi) / 2))


class SentimentModel:
    """Positive/negative review sentiment learnt from real reviews (weak signal).

    The seed data is small and written by the team; real reviews say "bad" in many more
    ways. A logistic regression over the word uni- and bigrams of thousands of labeled
    reviews turns that into one probability the heads use as extra features (binned, so a
    linear head can use it non-linearly).

    Its features are the counts of the n-grams of its own vocabulary (those in at least two
    training reviews), l2-normalised: trained on the public reviews that the heads also
    self-train on, that vocabulary lies inside the heads' word vocabulary, so the numpy
    predictor reads the signal from the n-grams it has already found. Models saved before
    (``vocabulary`` None) hashed every n-gram into 2**18 columns instead; they still load.
    """

    N_FEATURES = 2**18
    MIN_DF = 2

    def __init__(self, W: np.ndarray | None = None, b: float = 0.0, vocabulary: list[str] | None = None):
        self.W = W
        self.b = b
        self.vocabulary = vocabulary  # None: the hashed features of models saved before

    def vectorizer(self):
        """The featurizer, built once per vocabulary (a vocabulary's dictionary is not cheap)."""
        cached = getattr(self, "_vectorizer", None)
        if cached is not None and cached[0] is self.vocabulary:
            return cached[1]
        self._vectorizer = (self.vocabulary, self._new_vectorizer())
        return self._vectorizer[1]

    def _new_vectorizer(self):
        from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

        # Word unigrams and bigrams of the already segmented text: no second character pass.
        if self.vocabulary is None:
            return HashingVectorizer(
                token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), n_features=SentimentModel.N_FEATURES,
                alternate_sign=False, norm="l2", dtype=np.float32,
            )
        return CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), dtype=np.float32,
                               vocabulary={t: i for i, t in enumerate(self.vocabulary)})

    def _features(self, feature_strings: list[str]) -> sp.csr_matrix:
        X = self.vectorizer().transform(feature_strings)
        if self.vocabulary is not None:
            from sklearn.preprocessing import normalize

            X = normalize(X, norm="l2", copy=False)
        return X

    def fit(self, texts: Sequence[str], negative: Sequence[int], C: float = 1.0, hashed: bool = False) -> "SentimentModel":
        """``hashed``: the hashed features of models saved before (kept to test that they still load)."""
        from sklearn.feature_extraction.text import CountVectorizer

        strings = [p.feature_string for p in _as_prepared(texts)]
        self.vocabulary = None
        if not hashed:
            counter = CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), min_df=self.MIN_DF)
            counter.fit(strings)
            self.vocabulary = [str(t) for t in counter.get_feature_names_out()]
        X = self._features(strings)
        model = LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=0)
        model.fit(X, np.asarray(negative, dtype=int))
        self.W = model.coef_[0].astype(np.float32)
        self.b = float(model.intercept_[0])
        return self

    def negative_proba(self, prepared: list[PreparedText]) -> np.ndarray:
        z = np.asarray(self._features([p.feature_string for p in prepared]) @ self.W).ravel() + self.b
        return 1.0 / (1.0 + np.exp(-z))

    @staticmethod
    def features(p_neg: np.ndarray, scale: float = 0.5) -> sp.csr_matrix:
        """P(negative) and its four bins, scaled to sit among the TF-IDF values."""
        bins = np.digitize(p_neg, [0.15, 0.5, 0.85])
        onehot = np.zeros((len(p_neg), 4), dtype=np.float32)
        onehot[np.arange(len(p_neg)), bins] = 1.0
        return sp.csr_matrix(np.hstack([p_neg.reshape(-1, 1).astype(np.float32), onehot]) * scale)


WORDS_ONLY_HEADS = ("dispute_type", "escalation")
SENTIMENT_NAMES = ["<negative review>", "<clearly positive>", "<rather positive>", "<rather negative>", "<clearly negative>"]


class _ConstantHead:
    """A head whose training labels had one class only (tiny data sets): always that class."""

    def __init__(self, label: Any):
        self.classes_ = np.array([label])


class SklearnBackend(ClassifierBackend):
    name = "sklearn"
    supports_partial_labels = True  # a None label leaves a message out of that head (self-training)

    def __init__(self, **params: Any):
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ModelError(f"unknown sklearn backend parameters: {', '.join(sorted(unknown))}")
        self.params = {**DEFAULT_PARAMS, **params}
        self.params["C"] = {**DEFAULT_PARAMS["C"], **(params.get("C") or {})}
        self.params["ordinal_heads"] = list(self.params["ordinal_heads"])
        unordered = set(self.params["ordinal_heads"]) - set(INTENSITY_ORDER)
        if unordered:
            raise ModelError(f"ordinal_heads: {', '.join(sorted(unordered))} have no order of degrees; "
                             f"ordinal heads can be {', '.join(INTENSITY_ORDER)}")
        self.classes_: dict[str, list[Any]] = {}
        self.word_vectorizer: TfidfVectorizer | None = None
        self.char_vectorizer: TfidfVectorizer | None = None
        self.models: dict[str, LinearHead | _ConstantHead] = {}
        self.temperatures: dict[str, float] = {}
        self.sentiment: SentimentModel | None = None  # set before fit() to use the weak signal
        self._feature_names: np.ndarray | None = None
        self._weights: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ features

    def _new_vectorizers(self) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        p = self.params
        word = TfidfVectorizer(
            token_pattern=r"\S+",
            lowercase=False,
            ngram_range=tuple(p["word_ngram"]),
            min_df=p["word_min_df"],
            sublinear_tf=True,
            dtype=np.float32,
        )
        char = TfidfVectorizer(
            analyzer="char",
            lowercase=True,
            ngram_range=tuple(p["char_ngram"]),
            min_df=p["char_min_df"],
            max_features=p["char_max_features"],
            sublinear_tf=True,
            dtype=np.float32,
        )
        return word, char

    def _transform(self, prepared: list[PreparedText]) -> sp.csr_matrix:
        if self.word_vectorizer is None or self.char_vectorizer is None:
            raise ModelError("the sklearn backend is not trained; call fit() or load() first")
        words = self.word_vectorizer.transform([p.feature_string for p in prepared])
        chars = self.char_vectorizer.transform([_char_input(p) for p in prepared])
        return sp.hstack([words, chars, *self._extra_features(prepared)], format="csr")

    def _extra_features(self, prepared: list[PreparedText]) -> list[sp.csr_matrix]:
        blocks = [_intensity_matrix(prepared)]
        if self.sentiment is not None:
            blocks.append(SentimentModel.features(self.sentiment.negative_proba(prepared), self.params["sentiment_scale"]))
        return blocks

    def featurize(self, texts: Sequence[str | PreparedText]) -> sp.csr_matrix:
        """The feature matrix of ``texts`` (strings are prepared first)."""
        return self._transform(_as_prepared(texts))

    # ------------------------------------------------------------------ training

    def fit(self, texts, labels, sample_weight=None, progress: ProgressFn | None = None):
        prepared = _as_prepared(texts)
        n = len(prepared)
        if n == 0:
            raise ModelError("cannot train on zero messages")
        for head, ys in labels.items():
            if len(ys) != n:
                raise ModelError(f"head {head!r} has {len(ys)} labels for {n} messages")
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if progress:
            progress("features", 0.0)
        self.word_vectorizer, self.char_vectorizer = self._new_vectorizers()
        words = self.word_vectorizer.fit_transform([p.feature_string for p in prepared])
        chars = self.char_vectorizer.fit_transform([_char_input(p) for p in prepared])
        X = sp.hstack([words, chars, *self._extra_features(prepared)], format="csr")
        self.models, self.temperatures, self.classes_ = {}, {}, {}
        self.oof_proba_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        texts_of_rows = [p.text for p in prepared]  # copies of one text stay in one calibration fold
        heads = list(labels)
        for i, head in enumerate(heads):
            if progress:
                progress(f"head {head}", (i + 0.1) / len(heads))
            # A label of None leaves the message out of this head (a pseudo-label the
            # self-training step was not sure enough of); its words still shape the features.
            rows = np.array([v is not None for v in labels[head]])
            if not rows.any():
                raise ModelError(f"head {head!r} has no labels")
            y = np.array([_label_key(v) for v in labels[head] if v is not None], dtype=object)
            classes = sorted(set(y.tolist()), key=lambda v: (str(type(v)), v))
            self.classes_[head] = classes
            if len(classes) == 1:
                self.models[head] = _ConstantHead(classes[0])
                self.temperatures[head] = 1.0
                continue
            y_idx = np.array([classes.index(v) for v in y])
            Xh = X if rows.all() else X[np.flatnonzero(rows)]
            wh = None if weights is None else weights[rows]
            self.models[head] = self._fit_head(head, Xh, y_idx, wh)
            head_texts = texts_of_rows if rows.all() else [texts_of_rows[i] for i in np.flatnonzero(rows)]
            self.temperatures[head], oof = self._calibrate(head, Xh, y_idx, wh, head_texts)
            if oof is not None and head == "urgency":  # for the 一级 operating point (models.operating_point); never saved
                self.oof_proba_[head] = (np.flatnonzero(rows), _softmax(oof / self.temperatures[head]))
        self._index_weights()
        if progress:
            progress("done", 1.0)
        return self

    def _C(self, head: str) -> float:
        return float(self.params["C"].get(head, 4.0))

    def _order(self, head: str) -> list[int] | None:
        """The head's class indices from the mildest degree to the strongest, if it is trained as ordinal."""
        degrees = INTENSITY_ORDER.get(head)
        classes = self.classes_.get(head, [])
        if head not in self.params["ordinal_heads"] or degrees is None or not set(classes) <= set(degrees):
            return None
        return sorted(range(len(classes)), key=lambda i: degrees.index(classes[i]))

    def _fit_head(self, head, X, y_idx, weights) -> LinearHead:
        return _fit_linear_head(X, y_idx, int(y_idx.max()) + 1, self._C(head), weights, self._order(head))

    def _calibrate(self, head, X, y_idx, weights, texts: Sequence[str] | None = None) -> tuple[float, np.ndarray | None]:
        """Temperature from out-of-fold scores, and those scores; (1.0, None) when a class is
        too rare to fold.

        Copies of one text (``texts``; a retrain's stored messages include the confirmed ones,
        self-trained as pseudo-labels) are kept in one fold, or a copy's label would be
        learned before the text is scored; without copies the folds are as they always were.
        """
        folds = int(self.params["calibration_folds"])
        counts = np.bincount(y_idx)
        if folds < 2 or counts.min() < folds:
            return 1.0, None
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y_idx))
        if texts is not None and len(set(texts)) < len(texts):
            ids: dict[str, int] = {}
            groups = np.array([ids.setdefault(t, len(ids)) for t in texts])
            grouped = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(X, y_idx, groups))
            if all(len(np.unique(y_idx[train])) == len(counts) for train, _ in grouped):
                splits = grouped
        oof = np.zeros((X.shape[0], len(counts)))
        for train, test in splits:
            head_model = _fit_linear_head(
                X[train], y_idx[train], len(counts), self._C(head), None if weights is None else weights[train],
                self._order(head),
            )
            oof[test] = head_model.scores(X[test])
        return _fit_temperature(oof, y_idx), oof

    def _index_weights(self) -> None:
        """Feature names and per-class weights (relative to the class mean) for explanations."""
        # Word n-grams shown as written (no spaces between Chinese words). Names that would
        # repeat another ("麦克 风" as a bigram and "麦克风" as a word, or a char n-gram equal to
        # a word), one-character char n-grams (too vague), char n-grams with punctuation or
        # spaces and pure ASCII ones (pieces of numbers: "231") get an empty name and never explain.
        raw_words = list(self.word_vectorizer.get_feature_names_out())
        unigrams = {w for w in raw_words if " " not in w}
        words = [w if " " not in w else ("" if "".join(w.split(" ")) in unigrams else "".join(w.split(" "))) for w in raw_words]
        seen = set(words)
        chars = [
            n if len(n) > 1 and n.isalnum() and not n.isascii() and n not in seen else ""
            for n in self.char_vectorizer.get_feature_names_out()
        ]
        names = words + chars + INTENSITY_NAMES + (SENTIMENT_NAMES if self.sentiment is not None else [])
        self._feature_names = np.array(names, dtype=object)
        self._explainable = np.array([bool(n) for n in names], dtype=bool)
        # Dispute type and escalation are explained by the customer's words only: "negative
        # review" or "!" are true drivers but tell a reviewer nothing about the topic.
        self._explainable_words = self._explainable.copy()
        self._explainable_words[len(words) + len(chars) :] = False
        self._weights = {}
        for head, model in self.models.items():
            if isinstance(model, _ConstantHead):
                continue
            W = model.W
            self._weights[head] = (W - W.mean(axis=0, keepdims=True)).astype(np.float32)

    # ------------------------------------------------------------------ prediction

    def _proba_from_matrix(self, X) -> dict[str, np.ndarray]:
        out = {}
        for head, model in self.models.items():
            if isinstance(model, _ConstantHead):
                out[head] = np.ones((X.shape[0], 1))
                continue
            out[head] = _softmax(model.scores(X) / self.temperatures[head])
        return out

    def predict_proba(self, texts) -> dict[str, np.ndarray]:
        return self._proba_from_matrix(self.featurize(texts))

    def predict_explained(
        self, texts, top_k: int = 5, labels: dict[str, Sequence[Any]] | Callable[..., dict[str, Sequence[Any]]] | None = None
    ) -> tuple[dict[str, np.ndarray], list[dict[str, list[tuple[str, float]]]]]:
        """Probabilities and, per text, the top features behind each head's top label.

        One featurisation for both, which is what makes batch triage fast. ``labels``
        (head -> label per text) explains other labels than the argmax; it may also be a
        function of the probabilities that returns such a dict (the triager's 一级 operating
        point), so the labels it decides are explained without a second featurisation.
        """
        X = self.featurize(texts)
        proba = self._proba_from_matrix(X)
        if callable(labels):
            labels = labels(proba)
        n = X.shape[0]
        explanations: list[dict[str, list[tuple[str, float]]]] = [{} for _ in range(n)]
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        for head, p in proba.items():
            if head not in self._weights:
                for e in explanations:
                    e[head] = []
                continue
            if labels and head in labels:
                target = np.array([self.classes_[head].index(_label_key(v)) for v in labels[head]])
            else:
                target = p.argmax(axis=1)
            W = self._weights[head]
            contrib = X.data * W[target[rows], X.indices]
            # Only features that push towards the label and have a readable name can explain;
            # sort those by row then contribution and keep the first few of each row.
            explainable = self._explainable_words if head in WORDS_ONLY_HEADS else self._explainable
            cand = np.flatnonzero((contrib > 0) & explainable[X.indices])
            order = cand[np.lexsort((-contrib[cand], rows[cand]))]
            r_sorted = rows[order]
            starts = np.searchsorted(r_sorted, r_sorted, side="left")
            keep = order[(np.arange(len(order)) - starts) < top_k]
            names = self._feature_names[X.indices[keep]]
            weights = np.round(contrib[keep].astype(np.float64), 4).tolist()
            for r, name, c in zip(rows[keep].tolist(), names.tolist(), weights):
                explanations[r].setdefault(head, []).append((name, c))
            for e in explanations:
                e.setdefault(head, [])
        return proba, explanations

    def explain(self, text, head, label, top_k: int = 5) -> list[tuple[str, float]]:
        if head not in self.classes_:
            raise ModelError(f"unknown head {head!r}; this model has {', '.join(self.classes_)}")
        if _label_key(label) not in self.classes_[head]:
            raise ModelError(f"{head} has no label {label!r}; labels: {self.classes_[head]}")
        _, explanations = self.predict_explained([text], top_k=top_k, labels={head: [label]})
        return explanations[0][head]

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path) -> None:
        """JSON for settings and vocabularies, ``.npz`` (no pickle) for the arrays."""
        if not self.models or self.word_vectorizer is None:
            raise ModelError("cannot save an untrained sklearn backend")
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        vocab = {}
        for name, vectorizer in (("word", self.word_vectorizer), ("char", self.char_vectorizer)):
            terms = vectorizer.get_feature_names_out()
            vocab[name] = [str(t) for t in terms]
            arrays[f"{name}_idf"] = np.asarray(vectorizer.idf_, dtype=np.float64)
        for head, model in self.models.items():
            if isinstance(model, LinearHead):
                arrays[f"head_{head}_W"] = model.W
                arrays[f"head_{head}_b"] = model.b
        if self.sentiment is not None:
            arrays["sentiment_W"] = self.sentiment.W
            arrays["sentiment_b"] = np.array([self.sentiment.b])
            if self.sentiment.vocabulary is not None:
                vocab["sentiment"] = self.sentiment.vocabulary
        with (path / _ARRAYS_FILE).open("wb") as f:
            np.savez_compressed(f, **arrays)
        (path / _VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": FORMAT,
            "params": self.params,
            "classes": {h: [_label_key(v) for v in c] for h, c in self.classes_.items()},
            "temperatures": self.temperatures,
            "constant_heads": [h for h, m in self.models.items() if isinstance(m, _ConstantHead)],
            "sentiment": self.sentiment is not None,
        }
        (path / _META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "SklearnBackend":
        path = Path(path)
        files = [path / _META_FILE, path / _VOCAB_FILE, path / _ARRAYS_FILE]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(f"{path} is not an sklearn backend folder (missing {', '.join(missing)})")
        try:
            meta = json.loads(files[0].read_text(encoding="utf-8"))
            vocab = json.loads(files[1].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: backend files are not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ModelError(f"{files[0]} has format {found!r}; this code reads {FORMAT!r}")
        try:
            with np.load(files[2], allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # zip and format errors of a corrupt file
            raise ModelError(f"{files[2]} cannot be read as model arrays: {exc}") from None
        try:
            params = dict(meta.get("params", {}))
            params["word_ngram"] = tuple(params.get("word_ngram", DEFAULT_PARAMS["word_ngram"]))
            params["char_ngram"] = tuple(params.get("char_ngram", DEFAULT_PARAMS["char_ngram"]))
            backend = cls(**{k: v for k, v in params.items() if k in DEFAULT_PARAMS})
            backend.word_vectorizer, backend.char_vectorizer = backend._new_vectorizers()
            for name, vectorizer in (("word", backend.word_vectorizer), ("char", backend.char_vectorizer)):
                terms = vocab[name]
                vectorizer.vocabulary = {t: i for i, t in enumerate(terms)}
                vectorizer.idf_ = arrays[f"{name}_idf"]
                vectorizer.vocabulary_ = vectorizer.vocabulary
                vectorizer.fixed_vocabulary_ = True
            classes = meta["classes"]
            backend.classes_ = {h: list(c) for h, c in classes.items()}
            constant = set(meta.get("constant_heads", []))
            backend.models = {
                h: _ConstantHead(classes[h][0])
                if h in constant
                else LinearHead(arrays[f"head_{h}_W"].astype(np.float32), arrays[f"head_{h}_b"].astype(np.float64))
                for h in classes
            }
            if meta.get("sentiment"):
                backend.sentiment = SentimentModel(arrays["sentiment_W"].astype(np.float32), float(arrays["sentiment_b"][0]),
                                                   vocab.get("sentiment"))
            backend.temperatures = {h: float(t) for h, t in meta["temperatures"].items()}
            width = len(vocab["word"]) + len(vocab["char"]) + len(INTENSITY_NAMES)
            width += len(SENTIMENT_NAMES) if backend.sentiment is not None else 0
            for h, m in backend.models.items():
                if isinstance(m, LinearHead) and (m.W.shape[1] != width or m.W.shape[0] != len(classes[h])):
                    raise ModelError(f"{path}: head {h} has weights of shape {m.W.shape}, expected ({len(classes[h])}, {width})")
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: inconsistent backend files ({exc!r})") from None
        backend._index_weights()
        return backend
