"""Labels that the rest of the data disagrees with: a reading aid for the people who keep
a labeled set (the seed data, exported reviewers' labels).

Confident learning (Northcutt, Jiang and Chuang, "Confident learning: estimating uncertainty
in dataset labels", JAIR 2021), in its simplest form: every message gets probabilities from
a model that did not train on it (k folds, the labeled recipe alone); each class gets a
threshold, the mean probability of its class over the messages labeled so; a label is
suspect when its own class stays below its threshold while another class reaches its own.
The most likely other class is suggested, and the suspects are listed most contradicted
first.

This lists; it changes nothing. On the seed data, leaving the flagged labels out of
training gained nothing on real complaints (README, Model quality), while reading them
found a whole kind of message graded two ways (datasets/README.md). A person decides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from triage.errors import InvalidInput
from triage.taxonomy import HEADS

AUDITED_HEADS = ("dispute_type", "urgency", "emotion", "escalation")


@dataclass(frozen=True)
class LabelIssue:
    """One suspect label: where it is, what it says, what the other messages suggest."""

    where: str  # "file:line" when known, else the record's id
    id: Any
    head: str
    label: Any
    suggested: Any
    p_label: float  # out-of-fold probability of the given label
    p_suggested: float
    text: str

    @property
    def contradiction(self) -> float:
        return self.p_suggested - self.p_label

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "contradiction": round(self.contradiction, 4)}


def out_of_fold_probabilities(records: Sequence[dict[str, Any]], folds: int = 5, backend: str = "sklearn",
                              seed: int = 0, progress: Callable[[str, float], None] | None = None,
                              **params: Any) -> tuple[dict[str, list[list[float]]], dict[str, list[Any]]]:
    """Per head, each record's class probabilities from a model trained on the other folds
    (stratified by dispute type), and each head's classes in the order of those columns."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from models.training import train_backend

    strata = [r["dispute_type"] for r in records]
    smallest = min(Counter(strata).values())
    if len(records) < 2 * folds or smallest < 2:
        raise InvalidInput(f"{len(records)} labeled messages are too few to audit with {folds} folds "
                           "(every dispute type needs at least 2)")
    k = min(folds, smallest)
    proba: dict[str, list[Any]] = {h: [None] * len(records) for h in HEADS}
    classes: dict[str, list[Any]] = {}
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(np.zeros(len(records)), strata)):
        if progress:
            progress(f"fold {fold + 1}/{k}", fold / k)
        model = train_backend([records[i] for i in train], backend, **params)
        fold_classes = {h: [*model.classes_[h]] for h in HEADS} if hasattr(model, "classes_") else None
        if fold_classes is None:
            raise InvalidInput(f"the {backend} backend does not say its classes; audit with the sklearn backend")
        probabilities = model.predict_proba([records[i]["text"] for i in test])
        for h in HEADS:
            known = classes.setdefault(h, [])  # a class missing from one fold's training: aligned by name
            known.extend(c for c in fold_classes[h] if c not in known)
            for row, i in zip(probabilities[h], test):
                proba[h][i] = dict(zip(fold_classes[h], (float(x) for x in row)))
    if progress:
        progress("done", 1.0)
    classes = {h: sorted(c, key=lambda v: (str(type(v)), v)) for h, c in classes.items()}
    return ({h: [[p.get(c, 0.0) for c in classes[h]] for p in proba[h]] for h in HEADS}, classes)


def find_label_issues(records: Sequence[dict[str, Any]], proba: dict[str, list[list[float]]],
                      classes: dict[str, list[Any]], heads: Sequence[str] = AUDITED_HEADS) -> list[LabelIssue]:
    """The suspect labels of ``heads`` (confident learning's thresholds), most contradicted first."""
    import numpy as np

    issues: list[LabelIssue] = []
    for head in heads:
        if head not in proba:
            raise InvalidInput(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        p = np.asarray(proba[head], dtype=float)
        cols = list(classes[head])
        given = np.array([cols.index(r[head]) for r in records])
        thresholds = np.array([p[given == j, j].mean() if (given == j).any() else 1.0 for j in range(len(cols))])
        for i, r in enumerate(records):
            own = given[i]
            if p[i, own] >= thresholds[own]:
                continue
            others = [j for j in range(len(cols)) if j != own and p[i, j] >= thresholds[j]]
            if not others:
                continue
            best = max(others, key=lambda j: p[i, j])
            issues.append(LabelIssue(where=r.get("where") or str(r.get("id")), id=r.get("id"), head=head,
                                     label=r[head], suggested=classes[head][best], p_label=float(p[i, own]),
                                     p_suggested=float(p[i, best]), text=r["text"]))
    issues.sort(key=lambda x: (-x.contradiction, x.where))
    return issues


def audit(records: Sequence[dict[str, Any]], heads: Sequence[str] = AUDITED_HEADS, folds: int = 5,
          backend: str = "sklearn", progress: Callable[[str, float], None] | None = None,
          **params: Any) -> list[LabelIssue]:
    """Out-of-fold probabilities of ``records`` and the labels they contradict."""
    proba, classes = out_of_fold_probabilities(records, folds, backend, progress=progress, **params)
    return find_label_issues(records, proba, classes, heads)
