"""How good is a model: per-head accuracy, macro-F1, per-class precision/recall, confusion
matrix and expected calibration error; majority baselines (k-fold cross-validation, which
trains, lives in :mod:`models.training`).

Evaluation scores the whole triager (model plus domain rules), because that is what
users get; ``rules=False`` scores the bare model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from triage.taxonomy import HEAD_LABELS, HEADS


def _key(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def head_report(
    head: str, y_true: Sequence[Any], y_pred: Sequence[Any], confidence: Sequence[float] | None = None
) -> dict[str, Any]:
    """Metrics of one head; labels are the taxonomy's, in its canonical order."""
    labels = list(HEAD_LABELS[head])
    y_true, y_pred = list(y_true), list(y_pred)
    present = [l for l in labels if l in set(y_true) | set(y_pred)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    true_labels = [l for l in labels if l in set(y_true)]
    # Macro-F1 over the classes that occur in the gold labels (a class absent from the
    # data cannot be scored; a class only predicted still costs through precision).
    macro = float(np.mean([f[present.index(l)] for l in true_labels])) if true_labels else 0.0
    acc = float(np.mean([a == b for a, b in zip(y_true, y_pred)])) if y_true else 0.0
    report: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": round(acc, 4),
        "macro_f1": round(macro, 4),
        "per_class": {
            _key(l): {
                "precision": round(float(p[i]), 4),
                "recall": round(float(r[i]), 4),
                "f1": round(float(f[i]), 4),
                "support": int(s[i]),
            }
            for i, l in enumerate(present)
        },
        "confusion": {
            "labels": [_key(l) for l in labels],
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist() if y_true else [],
        },
    }
    if confidence is not None:
        correct = np.array([a == b for a, b in zip(y_true, y_pred)])
        report["ece"] = round(expected_calibration_error(np.asarray(confidence), correct), 4)
    return report


def evaluate_triager(triager, records: Sequence[dict[str, Any]], rules: bool = True, batch: int = 512) -> dict[str, Any]:
    """Score ``triager`` on labeled ``records``; one report per head."""
    preds = []
    for start in range(0, len(records), batch):
        preds.extend(triager.predict_many([r["text"] for r in records[start : start + batch]]))
    return score_predictions(records, preds, rules=rules, classes=triager.backend.classes_)


def score_predictions(records, preds, rules: bool = True, classes=None) -> dict[str, Any]:
    """Reports from Predictions; ``rules=False`` uses the model's argmax instead of final labels."""
    out = {}
    for head in HEADS:
        y_true = [r[head] for r in records]
        if rules:
            y_pred = [getattr(p, head) for p in preds]
            conf = [p.scores[head].get(_key(getattr(p, head)), 0.0) for p in preds]
        else:
            y_pred, conf = [], []
            for p in preds:
                label, prob = max(p.scores[head].items(), key=lambda kv: kv[1])
                y_pred.append(_parse_label(head, label))
                conf.append(prob)
        out[head] = head_report(head, y_true, y_pred, conf)
    return out


def _parse_label(head: str, key: str) -> Any:
    for label in HEAD_LABELS[head]:
        if _key(label) == key:
            return label
    return key


def majority_baseline(train_records, test_records) -> dict[str, Any]:
    """Always predict the most frequent training label: the floor every figure is read against."""
    out = {}
    for head in HEADS:
        majority = Counter(r[head] for r in train_records).most_common(1)[0][0]
        out[head] = head_report(head, [r[head] for r in test_records], [majority] * len(test_records))
        out[head]["label"] = _key(majority)
    return out


def format_report(report: dict[str, Any], title: str = "") -> str:
    """A plain-text table per head: summary line, per-class precision/recall, confusion matrix."""
    lines = [title] if title else []
    for head in HEADS:
        if head not in report:
            continue
        r = report[head]
        ece = f"  ECE {r['ece']:.3f}" if "ece" in r else ""
        lines.append(f"\n{head}  n={r['n']}  accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}{ece}")
        lines.append(f"  {'class':<12}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}")
        for label, m in r["per_class"].items():
            lines.append(
                f"  {label:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['support']:>9d}"
            )
        labels = r["confusion"]["labels"]
        if r["confusion"]["matrix"]:
            lines.append("  confusion (rows true, columns predicted):")
            lines.append("  " + " " * 12 + "".join(f"{l:>12}" for l in labels))
            for label, row in zip(labels, r["confusion"]["matrix"]):
                lines.append(f"  {label:<12}" + "".join(f"{v:>12d}" for v in row))
    return "\n".join(lines)
