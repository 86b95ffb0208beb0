"""Label sets of the labeling guideline (``../shared/labeling-guideline.md``).

The order of each tuple is the canonical column order used in reports; a trained
backend's ``classes_`` may differ and is always read from the backend.
"""

from __future__ import annotations

DISPUTE_TYPES = ("quality", "service", "advertising", "refund", "other")
URGENCIES = (1, 2, 3)  # 1 一级 紧急, 2 二级 一般, 3 三级 轻微
EMOTIONS = ("calm", "upset", "angry")
ESCALATION = (False, True)

# Heads whose labels are degrees of one thing, from the mildest to the strongest: an
# ordinal head may be trained as "above this degree?" questions (models/sklearn_backend.py).
INTENSITY_ORDER = {"emotion": EMOTIONS, "urgency": (3, 2, 1)}

# The classification heads, in the order they are reported.
HEADS = ("dispute_type", "urgency", "emotion", "escalation")
HEAD_LABELS = {
    "dispute_type": DISPUTE_TYPES,
    "urgency": URGENCIES,
    "emotion": EMOTIONS,
    "escalation": ESCALATION,
}

GRADE_NAMES = {1: "一级 紧急", 2: "二级 一般", 3: "三级 轻微"}
DISPUTE_TYPE_NAMES = {
    "quality": "质量问题",
    "service": "服务履约",
    "advertising": "宣传不符",
    "refund": "退换货与价格",
    "other": "其他",
}
EMOTION_NAMES = {"calm": "平静", "upset": "不满", "angry": "愤怒"}


def validate_label(head: str, value):
    """Return ``value`` coerced to the head's label type, or raise ValueError naming the head."""
    if head not in HEAD_LABELS:
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    labels = HEAD_LABELS[head]
    if head == "urgency":
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"urgency must be 1, 2 or 3, got {value!r}") from None
    if head == "escalation" and not isinstance(value, bool):
        raise ValueError(f"escalation must be true or false, got {value!r}")
    if value not in labels:
        raise ValueError(f"{head} must be one of {list(labels)}, got {value!r}")
    return value
