"""Ensemble backend: the (weighted) average of member backends' calibrated probabilities.

Why: a character n-gram linear model and a small transformer make different mistakes;
averaging calibrated probabilities is the simplest combination that needs no extra
held-out data. Members are any registered backends (default: sklearn + transformers);
labels a member never saw count as probability 0 for that member.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ClassifierBackend, ProgressFn, get_backend_class
from triage.errors import InvalidInput, ModelError

FORMAT = "triage-ensemble/1"
_META = "ensemble.json"


class EnsembleBackend(ClassifierBackend):
    name = "ensemble"

    def __init__(
        self,
        members: Sequence[str | ClassifierBackend] = ("sklearn", "transformers"),
        weights: Sequence[float] | None = None,
    ):
        if not members:
            raise InvalidInput("an ensemble needs at least one member backend", "members")
        self.members: list[ClassifierBackend] = [
            get_backend_class(m)() if isinstance(m, str) else m for m in members
        ]
        if any(isinstance(m, EnsembleBackend) for m in self.members):
            raise InvalidInput("an ensemble cannot contain another ensemble", "members")
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InvalidInput("one non-negative weight per member, not all zero", "weights")
        self.weights = weights
        self.classes_: dict[str, list[Any]] = {}

    def fit(
        self,
        texts: Sequence[str],
        labels: dict[str, Sequence[Any]],
        sample_weight: Sequence[float] | None = None,
        progress: ProgressFn | None = None,
    ) -> "EnsembleBackend":
        count = len(self.members)
        for i, member in enumerate(self.members):
            member_progress = None
            if progress:
                def member_progress(stage, fraction, i=i, member=member):
                    progress(f"{member.name}: {stage}", (i + fraction) / count)
            member.fit(texts, labels, sample_weight=sample_weight, progress=member_progress)
        self._merge_classes()
        return self

    def _merge_classes(self) -> None:
        heads = [h for h in self.members[0].classes_ if all(h in m.classes_ for m in self.members)]
        self.classes_ = {}
        for head in heads:
            union = {c for m in self.members for c in m.classes_[head]}
            self.classes_[head] = sorted(union)

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if not self.classes_:
            raise ModelError("the ensemble is not trained; call fit() or load() first")
        texts = list(texts)
        total = sum(self.weights)
        result = {h: np.zeros((len(texts), len(c))) for h, c in self.classes_.items()}
        for member, weight in zip(self.members, self.weights):
            if weight == 0:
                continue
            probs = member.predict_proba(texts)
            for head, classes in self.classes_.items():
                columns = [classes.index(c) for c in member.classes_[head]]
                result[head][:, columns] += weight / total * np.asarray(probs[head], dtype=float)
        for head in result:  # renormalise: guards against members whose rows drift from 1
            sums = result[head].sum(1, keepdims=True)
            result[head] = np.divide(result[head], sums, out=result[head], where=sums > 0)
        return result

    def predict_explained(
        self, texts: Sequence[Any], top_k: int = 5, labels: dict[str, Sequence[Any]] | Callable[..., dict[str, Sequence[Any]]] | None = None
    ) -> tuple[dict[str, np.ndarray], list[dict[str, list[tuple[str, float]]]]]:
        """Ensemble probabilities, and per text the members' words behind the ensemble's label.

        Each member explains the label the ensemble chose (not its own argmax); its weights
        are scaled to a maximum of 1 and averaged with the member weights.
        """
        texts = list(texts)
        proba = self.predict_proba(texts)
        if callable(labels):  # labels decided from the ensemble's probabilities
            labels = labels(proba)
        if labels is None:
            labels = {h: [c[i] for i in proba[h].argmax(1)] for h, c in self.classes_.items()}
        for head, wanted in labels.items():
            for label in wanted:
                self._check(head, label)
        total = sum(self.weights)
        combined: list[dict[str, dict[str, float]]] = [{h: {} for h in self.classes_} for _ in texts]
        for member, weight in zip(self.members, self.weights):
            if weight == 0:
                continue
            known = {h: v for h, v in labels.items() if set(v) <= set(member.classes_.get(h, []))}
            if not known:
                continue
            explained = getattr(member, "predict_explained", None)
            if explained is not None:
                _, per_text = explained(texts, top_k=max(top_k * 2, 10), labels=known)
            else:
                per_text = [
                    {h: member.explain(t, h, known[h][i], top_k=max(top_k * 2, 10)) for h in known}
                    for i, t in enumerate(texts)
                ]
            for i, heads in enumerate(per_text):
                for head in known:
                    items = heads.get(head, [])
                    top = max((abs(v) for _, v in items), default=0.0)
                    for word, value in items:
                        if top > 0:
                            bucket = combined[i][head]
                            bucket[word] = bucket.get(word, 0.0) + weight / total * value / top
        explanations = []
        for per_head in combined:
            explanations.append({
                head: [(w, round(v, 6)) for w, v in sorted(per_head[head].items(), key=lambda kv: -kv[1])[:top_k] if v > 0]
                for head in self.classes_
            })
        return proba, explanations

    def explain(self, text: str, head: str, label: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """Each member's attributions scaled to a maximum of 1, then averaged with the weights."""
        self._check(head, label)
        _, explanations = self.predict_explained([text], top_k=top_k, labels={head: [label]})
        return explanations[0][head]

    def _check(self, head: str, label: Any) -> None:
        if head not in self.classes_:
            raise ModelError(f"unknown head {head!r}; this model has {', '.join(self.classes_)}")
        if label not in self.classes_[head]:
            raise ModelError(f"{head} has no label {label!r}; labels: {self.classes_[head]}")

    def save(self, path: Path) -> None:
        if not self.classes_:
            raise ModelError("the ensemble is not trained; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        names = []
        for i, member in enumerate(self.members):
            sub = path / f"member{i}-{member.name}"
            sub.mkdir()
            member.save(sub)
            names.append({"backend": member.name, "dir": sub.name})
        meta = {"format": FORMAT, "members": names, "weights": self.weights}
        (path / _META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> "EnsembleBackend":
        path = Path(path)
        try:
            meta = json.loads((path / _META).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not an ensemble model: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ModelError(f"{path}: unsupported ensemble format {meta.get('format')!r}")
        members = [
            get_backend_class(m["backend"]).load(path / m["dir"]) for m in meta["members"]
        ]
        ensemble = cls(members=members, weights=meta["weights"])
        ensemble._merge_classes()
        return ensemble
