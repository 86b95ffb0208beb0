"""The 一级 operating point chosen for a recall target, on the installation's confirmed labels.

A missed 一级 gets a 24-hour clock instead of 4 hours, so a team lead thinks in "find nine
in ten 一级", not in "P(一级) >= 0.3". With ``TRIAGE_URGENT_RECALL`` set, the service grades
at the largest threshold whose recall on the confirmed labels reaches that share, and the
precision it costs is there to read beside it.

The curve comes from the confirmed labels a model was trained with, scored out of fold: the
scikit-learn backend keeps the out-of-fold probabilities of its calibration step (each
confirmed label predicted by heads that did not train on it), so the curve costs no extra
training. A label counts as found when its out-of-fold P(一级) reaches the threshold or a
domain rule raises the message to 一级 (safety, unusable, counterfeit, business loss, an
escalation term), as at prediction time. Every training that has confirmed labels stores the
curve in its manifest (``operating_point``), so the target can change without a retrain.

Copies of one text stay in one calibration fold (a retrain self-trains on the stored
messages, which include the confirmed ones): scored by heads that had learned a copy's
label, the curve would promise more recall than the service then finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Thresholds the curve is read at, from the strictest down.
GRID = (0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05)
# Below this many confirmed 一级 labels a recall read off them is too coarse to act on (one
# label is more than 6 points of recall): the fixed TRIAGE_URGENT_THRESHOLD applies.
MIN_POSITIVES = 15
URGENT = 1


@dataclass(frozen=True)
class ChosenPoint:
    threshold: float
    target: float
    recall: float  # out of fold, on the confirmed labels
    precision: float
    positives: int

    def as_dict(self) -> dict[str, Any]:
        return {"source": "recall target", "threshold": self.threshold, "target_recall": self.target,
                "confirmed_recall": self.recall, "confirmed_precision": self.precision,
                "confirmed_urgent": self.positives}


def urgent_curve(p_urgent: Sequence[float], urgent: Sequence[bool], raised: Sequence[bool],
                 grid: Sequence[float] = GRID) -> dict[str, Any]:
    """Recall and precision of 一级 at each threshold of ``grid``.

    ``p_urgent``: out-of-fold P(一级) per confirmed label; ``urgent``: whether its confirmed
    grade is 一级; ``raised``: whether a domain rule grades the message 一级 whatever the model says.
    """
    p = np.asarray(p_urgent, dtype=float)
    y = np.asarray(urgent, dtype=bool)
    r = np.asarray(raised, dtype=bool)
    if not (len(p) == len(y) == len(r)):
        raise ValueError(f"lengths differ: {len(p)} probabilities, {len(y)} labels, {len(r)} rule flags")
    points = []
    for t in grid:
        flagged = (p >= t) | r
        found = int((flagged & y).sum())
        points.append({"threshold": float(t), "recall": round(found / max(int(y.sum()), 1), 4),
                       "precision": round(found / max(int(flagged.sum()), 1), 4),
                       "flagged_share": round(float(flagged.mean()) if len(p) else 0.0, 4)})
    return {"confirmed": int(len(p)), "confirmed_urgent": int(y.sum()), "points": points}


def threshold_for_recall(curve: dict[str, Any] | None, target: float,
                         min_positives: int = MIN_POSITIVES) -> ChosenPoint | None:
    """The largest threshold whose recall on the confirmed labels reaches ``target``
    (the smallest of the grid when none does); ``None`` when the curve has too few 一级."""
    if not 0 < target < 1:
        raise ValueError(f"a recall target must be in (0, 1), got {target}")
    if not curve or int(curve.get("confirmed_urgent", 0)) < min_positives or not curve.get("points"):
        return None
    points = sorted(curve["points"], key=lambda pt: -pt["threshold"])
    chosen = next((pt for pt in points if pt["recall"] >= target), points[-1])
    return ChosenPoint(chosen["threshold"], target, chosen["recall"], chosen["precision"], int(curve["confirmed_urgent"]))


def curve_from_backend(backend, positions: Sequence[int], texts: Sequence[Any], urgency: Sequence[Any],
                       lexicons=None) -> dict[str, Any] | None:
    """The curve over the confirmed labels among a backend's training records.

    ``positions``: where they stand among the training records (the seed comes first);
    ``texts`` and ``urgency``: their texts (raw or prepared) and confirmed grades, in the
    same order. ``None`` for a backend that keeps no out-of-fold probabilities (transformers,
    an ensemble) or whose calibration had too few labels to fold.
    """
    from triage.rules import apply_rules
    from triage.text import PreparedText, prepare

    if not (len(positions) == len(texts) == len(urgency)):
        raise ValueError(f"lengths differ: {len(positions)} positions, {len(texts)} texts, {len(urgency)} grades")
    oof = getattr(backend, "oof_proba_", {}).get("urgency")
    classes = list(getattr(backend, "classes_", {}).get("urgency", []))
    if oof is None or URGENT not in classes or not len(positions):
        return None
    rows, proba = oof
    where = {int(row): i for i, row in enumerate(rows)}
    if any(int(pos) not in where for pos in positions):
        return None
    col = classes.index(URGENT)
    p = [float(proba[where[int(pos)], col]) for pos in positions]
    urgent = [int(grade) == URGENT for grade in urgency]

    def text_of(item) -> str:  # the rules read the normalised, masked text, as at prediction
        return item.text if isinstance(item, PreparedText) else prepare(str(item)).text

    raised = [apply_rules(text_of(text), 3, lexicons=lexicons).urgency == URGENT for text in texts]
    return urgent_curve(p, urgent, raised)
