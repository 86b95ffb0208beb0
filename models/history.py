"""Learning from the installation's own message history (unlabeled).

Every installation stores the masked text of each message it triages: unlabeled, but in
its customers' real register, which the seed data (written by the project team) lacks.
Self-training uses it: a model fitted on the labeled data labels the history, and the
labels it is confident of (per head) join the training set at a lower weight, so the words
real customers use next to the seed's words get weights too. A label the model is not sure
of is left out of that head (``None``), while its words still shape the features.

The same recipe runs offline (``triage train --unlabeled PATH``) and in every retrain from
reviewers' labels (the service's stored messages). Nothing of the history leaves the
installation: it is read from the local database or the given files and used in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from triage.errors import InvalidInput
from triage.taxonomy import HEADS

Fit = Callable[[Sequence[Any], dict[str, list], Sequence[float] | None, Any], Any]


@dataclass(frozen=True)
class SelfTraining:
    """How the history is used. ``threshold``: a pseudo-label needs at least this calibrated
    probability; ``weight``: a pseudo-labeled message counts this much of a seed message;
    ``limit``: at most this many history messages (the newest); ``heads``: the heads that
    learn from pseudo-labels (escalation is rare and rule-backed: it does not)."""

    threshold: float = 0.9
    weight: float = 0.3
    limit: int = 30_000
    heads: tuple[str, ...] = ("dispute_type", "urgency", "emotion")

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise InvalidInput(f"self-training threshold must be in (0, 1), got {self.threshold}")
        if not self.weight > 0:
            raise InvalidInput(f"self-training weight must be > 0, got {self.weight}")
        if self.limit < 0:
            raise InvalidInput(f"history limit must be >= 0, got {self.limit}")
        unknown = set(self.heads) - set(HEADS)
        if unknown:
            raise InvalidInput(f"unknown heads for self-training: {', '.join(sorted(unknown))}")


def supports_partial_labels(backend_or_cls: Any) -> bool:
    """Whether a backend accepts ``None`` labels (a message left out of one head)."""
    return bool(getattr(backend_or_cls, "supports_partial_labels", False))


def pseudo_labels(backend, inputs: Sequence[Any], config: SelfTraining,
                  known: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, list[Any]]:
    """The backend's confident labels of ``inputs`` per head; ``None`` where not confident.

    ``known`` (text -> head -> a set of labels) narrows a text's head to the labels it can
    be: the most probable of those, by its probability among them, if confident (a negative
    public review is a complaint, so its dispute type is not ``other``). Single known labels
    are put in place afterwards (:func:`_apply_known`).
    """
    proba = backend.predict_proba(list(inputs))
    out: dict[str, list[Any]] = {}
    for head in HEADS:
        if head not in config.heads:
            out[head] = [None] * len(inputs)
            continue
        p = np.asarray(proba[head], dtype=float)
        classes = backend.classes_[head]
        if known:
            p = _narrowed(p, inputs, known, head, classes)
        top, conf = p.argmax(axis=1), p.max(axis=1)
        out[head] = [classes[t] if c >= config.threshold else None for t, c in zip(top.tolist(), conf.tolist())]
    return out


def _narrowed(p: np.ndarray, inputs: Sequence[Any], known: Mapping[str, Mapping[str, Any]], head: str,
              classes: Sequence[Any]) -> np.ndarray:
    """``p`` with the rows of texts whose ``head`` is known to be one of a set renormalised over that set."""
    rows = []
    for i, item in enumerate(inputs):
        allowed = _known_of(item, known).get(head)
        if _is_set(allowed):
            rows.append((i, [c in allowed for c in classes]))
    if not rows:
        return p
    p = p.copy()
    for i, mask in rows:
        kept = p[i] * np.asarray(mask, dtype=float)
        total = kept.sum()
        p[i] = kept / total if total > 0 else 0.0  # none of the allowed labels: never confident
    return p


def self_train(
    fit: Fit,
    inputs: Sequence[Any],
    labels: dict[str, list],
    weights: Sequence[float] | None,
    unlabeled: Sequence[Any],
    config: SelfTraining = SelfTraining(),
    progress=None,
    report: Callable[[str], None] | None = None,
    known: Mapping[str, Mapping[str, Any]] | None = None,
):
    """Fit on the labeled data, pseudo-label ``unlabeled``, fit again on both.

    ``fit(inputs, labels, weights, progress)`` trains a fresh backend (the same recipe for
    both rounds). Returns the second model, or the first when there is no history or the
    backend cannot take partial labels; an ensemble, which cannot, is returned with its
    members that can (scikit-learn) self-trained, each on its own pseudo-labels as it would
    be alone. ``known``: labels already known for some unlabeled texts (keyed by the text,
    or a prepared text's ``text``), head -> a label or a set of labels. A label replaces the
    model's pseudo-label of that head (a positive public review is praise, and praise is
    ``calm``); a set narrows the pseudo-label to the most probable of its labels
    (:func:`pseudo_labels`: a negative public review is a complaint, so its dispute type is
    not ``other``). See :meth:`models.public_reviews.PublicReviews.known_labels`.
    """
    say = report or (lambda msg: None)
    first = fit(inputs, labels, weights, _scaled(progress, 0.0, 0.4))
    if not unlabeled or not config.heads:
        return first
    if supports_partial_labels(first):
        return learn_from_history(first, fit, inputs, labels, weights, unlabeled, config, known, say,
                                   _scaled(progress, 0.45, 1.0))
    learners = [m for m in getattr(first, "members", ()) if supports_partial_labels(m)]
    if not learners:
        say(f"{type(first).__name__} cannot learn from unlabeled history; trained on the labeled data only")
        return first
    # An ensemble: each member that can learn from the history does, by its own recipe (its
    # own pseudo-labels, fitted again in place), as it would alone; the others keep their fit.
    for i, member in enumerate(learners):
        say(f"{type(first).__name__}: member {type(member).__name__} self-trains on the history")
        refit = lambda t, l, w, p, member=member: member.fit(t, l, sample_weight=w, progress=p)  # noqa: E731
        learn_from_history(member, refit, inputs, labels, weights, unlabeled, config, known, say,
                            _scaled(progress, 0.45 + 0.55 * i / len(learners), 0.45 + 0.55 * (i + 1) / len(learners)))
    merge = getattr(first, "_merge_classes", None)  # the members' classes, refitted
    if merge is not None:
        merge()
    return first


def learn_from_history(teacher, fit: Fit, inputs, labels, weights, unlabeled, config: SelfTraining, known, say,
                        progress):
    """The second round of :func:`self_train`: ``teacher``'s confident labels of ``unlabeled``
    (with what is ``known`` of them), then ``fit`` on the labeled and pseudo-labeled data."""
    if progress:
        progress("labelling the message history", 0.0)
    pseudo = pseudo_labels(teacher, unlabeled, config, known)
    replaced = _apply_known(pseudo, unlabeled, known, config.heads) if known else 0
    narrowed = sum(_is_set(v) for item in unlabeled for h, v in _known_of(item, known or {}).items()
                   if h in config.heads)
    kept = {h: sum(v is not None for v in pseudo[h]) for h in config.heads}
    say(f"history: {len(unlabeled)} messages; confident pseudo-labels " + ", ".join(f"{h} {n}" for h, n in kept.items())
        + (f"; {replaced} labels known beforehand" if replaced else "")
        + (f"; {narrowed} narrowed to the labels they can be" if narrowed else ""))
    base_weights = [1.0] * len(inputs) if weights is None else list(weights)
    return fit(
        [*inputs, *unlabeled],
        {h: [*labels[h], *pseudo[h]] for h in HEADS},
        base_weights + [config.weight] * len(unlabeled),
        _scaled(progress, 0.1, 1.0),
    )


def _apply_known(pseudo: dict[str, list], unlabeled: Sequence[Any], known: Mapping[str, Mapping[str, Any]],
                 heads: Sequence[str]) -> int:
    """Put the single labels known beforehand in place of the pseudo-labels (sets of labels
    were used by :func:`pseudo_labels`); how many were set."""
    count = 0
    for i, item in enumerate(unlabeled):
        for head, label in _known_of(item, known).items():
            if head in heads and not _is_set(label):
                pseudo[head][i] = label
                count += 1
    return count


def _known_of(item: Any, known: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """What is known of one unlabeled text (a string or a prepared text), head -> label or set."""
    return known.get(getattr(item, "text", item)) or {}


def _is_set(value: Any) -> bool:
    return isinstance(value, (set, frozenset))


def _scaled(progress, start: float, end: float):
    if progress is None:
        return None
    return lambda stage, fraction: progress(stage, start + (end - start) * fraction)
