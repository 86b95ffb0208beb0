"""From raw complaint text to a :class:`~triage.prediction.Prediction`: the one entry point
the CLI, the API, the review UI and the benchmarks share.

Pipeline per message: validate, :func:`triage.text.prepare` (normalise, mask, segment),
the backend's probabilities and explanations (one featurisation for both), the domain
rules (which may raise urgency and set escalation, never lower urgency), then the
Prediction. ``predict_many`` does the backend step for the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ClassifierBackend
from triage.errors import InvalidInput, ModelError
from triage.lexicons import load_lexicons
from triage.prediction import Prediction
from triage.rules import apply_rules
from triage.taxonomy import HEADS
from triage.text import PreparedText, prepare

DEFAULT_MAX_CHARS = 10_000


def _label_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def grade_at_operating_point(p: np.ndarray, classes: Sequence[Any], threshold: float) -> list[int]:
    """Column indexes of the grade per row: 一级 when P(一级) >= ``threshold``, otherwise the more
    probable of the other grades. A missed 一级 costs far more than a false one (a 24-hour
    instead of a 4-hour clock), so the policy may set this below the argmax's implicit point."""
    classes = [int(c) for c in classes]
    if 1 not in classes:
        return p.argmax(axis=1).tolist()
    urgent = classes.index(1)
    others = p.copy()
    others[:, urgent] = -1.0
    return np.where(p[:, urgent] >= threshold, urgent, others.argmax(axis=1)).tolist()


def _as_lists(pairs: list) -> list[list]:
    """[[word, weight], ...]: the JSON shape; a backend may give (word, weight) tuples."""
    return pairs if not pairs or type(pairs[0]) is list else [list(p) for p in pairs]


class Triager:
    """A loaded model plus the rules; cheap to call, safe to share between threads."""

    def __init__(
        self,
        backend: ClassifierBackend,
        version: str,
        lexicon_dir: Path | str | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        top_k: int = 5,
        escalation_threshold: float = 0.5,  # the service passes TRIAGE_ESCALATION_THRESHOLD
        urgent_threshold: float | None = None,  # TRIAGE_URGENT_THRESHOLD; None: the most probable grade
    ):
        missing = [h for h in HEADS if h not in backend.classes_]
        if missing:
            raise ModelError(f"model {version} lacks the heads {', '.join(missing)}")
        self.backend = backend
        self.version = version
        self.lexicon_dir = lexicon_dir
        self.lexicons = load_lexicons(lexicon_dir)
        self.max_chars = max_chars
        self.top_k = top_k
        self.escalation_threshold = escalation_threshold
        if urgent_threshold is not None and not 0 < urgent_threshold < 1:
            raise InvalidInput(f"urgent_threshold must be in (0, 1), got {urgent_threshold}")
        self.urgent_threshold = urgent_threshold
        self.manifest: dict[str, Any] = {}
        # How urgent_threshold was chosen: a fixed setting, or a recall target read off the
        # model's confirmed labels (TRIAGE_URGENT_RECALL; models.operating_point).
        self.operating_point: dict[str, Any] = {"source": "fixed", "threshold": urgent_threshold}

    @classmethod
    def from_store(cls, store, version: str | None = None, **kwargs) -> "Triager":
        """Load ``version`` (default: the current one) from a :class:`models.store.ModelStore`.

        With ``TRIAGE_FAST_PREDICT`` (the default) the backend's predict-only twin is used where
        it has one (:meth:`models.store.ModelStore.load_predictor`).
        """
        from triage.settings import get_settings

        settings = get_settings()
        backend, manifest = store.load_predictor(version) if settings.fast_predict else store.load(version)
        kwargs.setdefault("max_chars", settings.max_text_chars)
        kwargs.setdefault("escalation_threshold", settings.escalation_threshold)
        chosen = None
        if "urgent_threshold" not in kwargs and settings.urgent_recall is not None:
            from models.operating_point import threshold_for_recall

            chosen = threshold_for_recall(manifest.get("operating_point"), settings.urgent_recall)
        kwargs.setdefault("urgent_threshold", chosen.threshold if chosen else settings.urgent_threshold)
        triager = cls(backend, manifest["version"], **kwargs)
        triager.manifest = manifest
        if chosen:
            triager.operating_point = chosen.as_dict()
        return triager

    # ------------------------------------------------------------------ validation

    def validate(self, text: Any, index: int | None = None) -> str:
        where = "" if index is None else f" (message {index})"
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}{where}", field="text")
        if not text.strip():
            raise InvalidInput(f"text is empty{where}", field="text")
        if len(text) > self.max_chars:
            raise InvalidInput(
                f"text has {len(text)} characters, more than the limit of {self.max_chars}{where}", field="text"
            )
        return text

    # ------------------------------------------------------------------ prediction

    def predict(self, text: str) -> Prediction:
        """Triage one message; InvalidInput for empty, too long or non-string text."""
        return self.predict_many([text])[0]

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Triage a batch; the whole batch is validated first so a bad item fails fast and whole."""
        if isinstance(texts, str):
            raise InvalidInput("predict_many takes a list of texts, not one string", field="texts")
        for i, t in enumerate(texts):
            self.validate(t, i)
        prepared = [prepare(t, self.lexicon_dir) for t in texts]
        if not prepared:
            return []
        return self.predict_prepared(prepared)

    def predict_prepared(self, prepared: list[PreparedText]) -> list[Prediction]:
        """Triage texts already through :func:`triage.text.prepare` (the trainer's CV uses this)."""
        explain = getattr(self.backend, "predict_explained", None)
        classes = self.backend.classes_
        threshold = self.urgent_threshold

        def graded(proba) -> list[int]:
            return grade_at_operating_point(np.asarray(proba["urgency"]), classes["urgency"], threshold)

        def decide(proba) -> dict[str, list]:  # explain the grade given, not the argmax's
            return {"urgency": [classes["urgency"][k] for k in graded(proba)]}

        if explain is not None:
            proba, explanations = explain(prepared, top_k=self.top_k, labels=decide if threshold is not None else None)
        else:
            proba = self.backend.predict_proba([p.text for p in prepared])
            explanations = None
        top = {h: np.asarray(proba[h]).argmax(axis=1).tolist() for h in HEADS}
        if threshold is not None:
            top["urgency"] = graded(proba)
        keys = {h: [_label_str(c) for c in classes[h]] for h in HEADS}
        rounded = {h: np.round(np.asarray(proba[h], dtype=float), 4).tolist() for h in HEADS}
        # Per head, the model's label and its probability, per text.
        model_labels = {h: [classes[h][k] for k in top[h]] for h in HEADS}
        model_probs = {h: [row[k] for row, k in zip(rounded[h], top[h])] for h in HEADS}
        true_col = keys["escalation"].index("true") if "true" in keys["escalation"] else None
        escalation_p = [row[true_col] for row in rounded["escalation"]] if true_col is not None else [0.0] * len(prepared)
        lexicons, escalation_threshold, top_k, version = self.lexicons, self.escalation_threshold, self.top_k, self.version
        out = []
        for i, p in enumerate(prepared):
            scores = {h: dict(zip(keys[h], rounded[h][i])) for h in HEADS}
            model_escalation = escalation_p[i] >= escalation_threshold
            model_urgency = int(model_labels["urgency"][i])
            model_type = str(model_labels["dispute_type"][i])
            model_emotion = str(model_labels["emotion"][i])
            outcome = apply_rules(p.text, model_urgency, model_escalation, lexicons=lexicons, dispute_type=model_type,
                                  emotion=model_emotion)
            # Confidence: the lowest probability the model gave to a final label; a label a rule
            # decided against the model is certain by rule (the rule says why).
            confidence = min(
                1.0 if outcome.dispute_type != model_labels["dispute_type"][i] else model_probs["dispute_type"][i],
                1.0 if outcome.urgency != model_labels["urgency"][i] else model_probs["urgency"][i],
                1.0 if outcome.emotion != model_emotion else model_probs["emotion"][i],
                1.0 if outcome.escalation != model_escalation else scores["escalation"].get(_label_str(outcome.escalation), 0.0),
            )
            if explanations is not None:
                e = explanations[i]
                expl: dict[str, Any] = {h: _as_lists(e.get(h, [])) for h in HEADS}
            else:
                expl = {
                    h: [[w, s] for w, s in self.backend.explain(p.text, h, model_labels[h][i], top_k)] for h in HEADS
                }
            expl["rules"] = [hit.model_dump() for hit in outcome.hits]
            if p.masked:
                expl["masked"] = dict(p.masked)
            out.append(
                Prediction(
                    dispute_type=outcome.dispute_type,
                    urgency=outcome.urgency,
                    emotion=outcome.emotion,
                    escalation=outcome.escalation,
                    vulnerable=outcome.vulnerable,
                    confidence=round(confidence, 4),
                    scores=scores,
                    explanation=expl,
                    rules=outcome.hits,
                    model_version=version,
                )
            )
        return out
