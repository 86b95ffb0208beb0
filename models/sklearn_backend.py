"""The default backend: jieba words + characters, TF-IDF, class-balanced logistic regression.

Why this shape: the seed data is small (a few thousand messages), so a linear model on
sparse n-grams is accurate, trains in seconds on two cores, predicts thousands of
messages a second and explains itself (feature weight x TF-IDF value). Word n-grams
carry the domain vocabulary (the jieba user dictionary); character n-grams survive
segmentation mistakes and unseen product names. Class weights are balanced because
urgency 1 and escalation are rare but matter most. Probabilities are calibrated by
temperature scaling fitted on out-of-fold scores: it fixes over/under-confidence
without moving the decision (argmax) that the balancing chose.

Saved with skops (no pickle); loading trusts only the exact sklearn/numpy types written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from models.base import ClassifierBackend, ProgressFn
from triage.errors import ModelError
from triage.text import PreparedText, prepare

FORMAT = "sklearn-tfidf-logreg/1"
_MODEL_FILE = "model.skops"
_META_FILE = "backend.json"

DEFAULT_PARAMS: dict[str, Any] = {
    "word_ngram": (1, 2),
    "char_ngram": (1, 3),
    "word_min_df": 1,
    "char_min_df": 2,
    "char_max_features": 60000,
    "C": {"dispute_type": 10.0, "urgency": 4.0, "emotion": 4.0, "escalation": 4.0},
    "calibration_folds": 3,
}


def _as_prepared(texts: Sequence[str | PreparedText]) -> list[PreparedText]:
    return [t if isinstance(t, PreparedText) else prepare(t) for t in texts]


INTENSITY_NAMES = ["!", "!!!", "??", "<personal data>"]
_INTENSITY_SCALE = 0.3  # about a typical TF-IDF value, so regularisation treats them alike


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


def _scores(model: LogisticRegression, X) -> np.ndarray:
    """Per-class scores (n, k); binary models get [0, s] so softmax gives the sigmoid."""
    s = X @ model.coef_.T + model.intercept_
    s = np.asarray(s)
    if s.shape[1] == 1:
        s = np.hstack([np.zeros_like(s), s])
    return s


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


class _ConstantHead:
    """A head whose training labels had one class only (tiny data sets): always that class."""

    def __init__(self, label: Any):
        self.classes_ = np.array([label])


class SklearnBackend(ClassifierBackend):
    name = "sklearn"

    def __init__(self, **params: Any):
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ModelError(f"unknown sklearn backend parameters: {', '.join(sorted(unknown))}")
        self.params = {**DEFAULT_PARAMS, **params}
        self.params["C"] = {**DEFAULT_PARAMS["C"], **(params.get("C") or {})}
        self.classes_: dict[str, list[Any]] = {}
        self.word_vectorizer: TfidfVectorizer | None = None
        self.char_vectorizer: TfidfVectorizer | None = None
        self.models: dict[str, LogisticRegression] = {}
        self.temperatures: dict[str, float] = {}
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
        chars = self.char_vectorizer.transform([p.text for p in prepared])
        return sp.hstack([words, chars, _intensity_matrix(prepared)], format="csr")

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
        chars = self.char_vectorizer.fit_transform([p.text for p in prepared])
        X = sp.hstack([words, chars, _intensity_matrix(prepared)], format="csr")
        self.models, self.temperatures, self.classes_ = {}, {}, {}
        heads = list(labels)
        for i, head in enumerate(heads):
            if progress:
                progress(f"head {head}", (i + 0.1) / len(heads))
            y = np.array([_label_key(v) for v in labels[head]], dtype=object)
            classes = sorted(set(y.tolist()), key=lambda v: (str(type(v)), v))
            self.classes_[head] = classes
            if len(classes) == 1:
                self.models[head] = _ConstantHead(classes[0])
                self.temperatures[head] = 1.0
                continue
            y_idx = np.array([classes.index(v) for v in y])
            self.models[head] = self._fit_head(head, X, y_idx, weights)
            self.temperatures[head] = self._calibrate(head, X, y_idx, weights)
        self._index_weights()
        if progress:
            progress("done", 1.0)
        return self

    def _new_head(self, head: str) -> LogisticRegression:
        return LogisticRegression(
            C=float(self.params["C"].get(head, 4.0)),
            class_weight="balanced",
            max_iter=3000,
            solver="liblinear" if head == "escalation" else "lbfgs",
        )

    def _fit_head(self, head, X, y_idx, weights) -> LogisticRegression:
        model = self._new_head(head)
        model.fit(X, y_idx, sample_weight=weights)
        return model

    def _calibrate(self, head, X, y_idx, weights) -> float:
        """Temperature from out-of-fold scores; 1.0 when a class is too rare to fold."""
        folds = int(self.params["calibration_folds"])
        counts = np.bincount(y_idx)
        if folds < 2 or counts.min() < folds:
            return 1.0
        oof = np.zeros((X.shape[0], len(counts)))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y_idx):
            model = self._new_head(head)
            model.fit(X[train], y_idx[train], sample_weight=None if weights is None else weights[train])
            oof[test] = _scores(model, X[test])
        return _fit_temperature(oof, y_idx)

    def _index_weights(self) -> None:
        """Feature names and per-class weights (relative to the class mean) for explanations."""
        # Word n-grams shown as written (no spaces between Chinese words); one-character
        # char n-grams are too vague to explain anything and get an empty name (skipped).
        words = ["".join(n.split(" ")) for n in self.word_vectorizer.get_feature_names_out()]
        chars = [n if len(n) > 1 else "" for n in self.char_vectorizer.get_feature_names_out()]
        names = words + chars + INTENSITY_NAMES
        self._feature_names = np.array(names, dtype=object)
        self._weights = {}
        for head, model in self.models.items():
            if isinstance(model, _ConstantHead):
                continue
            coef = np.asarray(model.coef_)
            if coef.shape[0] == 1:
                coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            self._weights[head] = (coef - coef.mean(axis=0, keepdims=True)).astype(np.float32)

    # ------------------------------------------------------------------ prediction

    def _proba_from_matrix(self, X) -> dict[str, np.ndarray]:
        out = {}
        for head, model in self.models.items():
            if isinstance(model, _ConstantHead):
                out[head] = np.ones((X.shape[0], 1))
                continue
            out[head] = _softmax(_scores(model, X) / self.temperatures[head])
        return out

    def predict_proba(self, texts) -> dict[str, np.ndarray]:
        return self._proba_from_matrix(self.featurize(texts))

    def predict_explained(
        self, texts, top_k: int = 5, labels: dict[str, Sequence[Any]] | None = None
    ) -> tuple[dict[str, np.ndarray], list[dict[str, list[tuple[str, float]]]]]:
        """Probabilities and, per text, the top features behind each head's top label.

        One featurisation for both, which is what makes batch triage fast. ``labels``
        (head -> label per text) explains other labels than the argmax.
        """
        X = self.featurize(texts)
        proba = self._proba_from_matrix(X)
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
            order = np.lexsort((-contrib, rows))
            for i in range(n):
                start, end = X.indptr[i], X.indptr[i + 1]
                picked = []
                seen: set[str] = set()
                for j in order[start:end]:
                    c = contrib[j]
                    if c <= 0 or len(picked) >= top_k:
                        break
                    name = self._feature_names[X.indices[j]].strip()
                    if not name or name in seen:
                        continue
                    seen.add(name)
                    picked.append((name, round(float(c), 4)))
                explanations[i][head] = picked
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
        import skops.io as sio

        if not self.models:
            raise ModelError("cannot save an untrained sklearn backend")
        path = Path(path)
        state = {
            "word_vectorizer": self.word_vectorizer,
            "char_vectorizer": self.char_vectorizer,
            "models": {h: m for h, m in self.models.items() if not isinstance(m, _ConstantHead)},
        }
        sio.dump(state, path / _MODEL_FILE)
        meta = {
            "format": FORMAT,
            "params": self.params,
            "classes": {h: [_label_key(v) for v in c] for h, c in self.classes_.items()},
            "temperatures": self.temperatures,
            "constant_heads": [h for h, m in self.models.items() if isinstance(m, _ConstantHead)],
        }
        (path / _META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")

    # The only types a model file of this backend may contain; anything else is refused.
    TRUSTED_TYPES = [
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "numpy.float32",
        "numpy.float64",
        "numpy.int64",
        "numpy.int32",
        "numpy.dtype",
        "builtins.tuple",
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.NoneType",
        "builtins.slice",
    ]

    @classmethod
    def load(cls, path: Path) -> "SklearnBackend":
        import skops.io as sio

        path = Path(path)
        meta_file, model_file = path / _META_FILE, path / _MODEL_FILE
        if not meta_file.is_file() or not model_file.is_file():
            raise ModelError(f"{path} is not an sklearn backend folder (needs {_META_FILE} and {_MODEL_FILE})")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_file} is unreadable: {exc}") from None
        if meta.get("format") != FORMAT:
            raise ModelError(f"{meta_file} has format {meta.get('format')!r}; this code reads {FORMAT!r}")
        try:
            untrusted = sio.get_untrusted_types(file=model_file)
            foreign = sorted(set(untrusted) - set(cls.TRUSTED_TYPES))
            if foreign:
                raise ModelError(f"{model_file} contains types this backend never writes: {', '.join(foreign)}")
            state = sio.load(model_file, trusted=untrusted)
        except ModelError:
            raise
        except Exception as exc:  # skops raises many types on corrupt files
            raise ModelError(f"{model_file} cannot be read as an sklearn model: {exc}") from None
        params = meta.get("params", {})
        params["word_ngram"] = tuple(params.get("word_ngram", DEFAULT_PARAMS["word_ngram"]))
        params["char_ngram"] = tuple(params.get("char_ngram", DEFAULT_PARAMS["char_ngram"]))
        backend = cls(**{k: v for k, v in params.items() if k in DEFAULT_PARAMS})
        backend.word_vectorizer = state["word_vectorizer"]
        backend.char_vectorizer = state["char_vectorizer"]
        classes = meta["classes"]
        backend.classes_ = {h: list(c) for h, c in classes.items()}
        backend.models = dict(state["models"])
        for head in meta.get("constant_heads", []):
            backend.models[head] = _ConstantHead(classes[head][0])
        backend.models = {h: backend.models[h] for h in classes}
        backend.temperatures = {h: float(t) for h, t in meta["temperatures"].items()}
        backend._index_weights()
        return backend
