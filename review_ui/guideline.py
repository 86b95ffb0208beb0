"""Short definitions of every label, shown next to a prediction so reviewers label alike.

Our own condensed wording of the labeling guideline (``../shared/labeling-guideline.md``
is the contract; this text summarises it for the review screen).
"""

from __future__ import annotations

DEFINITIONS: dict[str, dict[str, str]] = {
    "dispute_type": {
        "quality": "质量问题 — the product itself is faulty: does not work, crashes, noise, weak battery, "
        "broken part, spoiled food, skin reaction, poor workmanship.",
        "service": "服务履约 — a service failed: slow/lost/wrong delivery, installer late, support rude or "
        "unreachable, gift or invoice not sent, poor repair service.",
        "advertising": "宣传不符 — differs from the listing or looks fake: lower specs than promised, wrong "
        "colour/size/model, counterfeit, promotion not honoured.",
        "refund": "退换货与价格 — about money: refund refused or slow, return blocked, price drop without "
        "price protection, compensation demanded.",
        "other": "其他 — no after-sales dispute: praise, neutral remark, general opinion, a plain question.",
    },
    "urgency": {
        "1": "一级 紧急 — unusable, safety hazard, direct loss or missed business, core-spec fraud or fake, "
        "or a threat to go to regulators, media or court.",
        "2": "二级 一般 — a real problem but it partly works; service failure without real loss; refund or "
        "return dispute; minor mismatch with the listing.",
        "3": "三级 轻微 — cosmetic or minor, attitude only, vague dissatisfaction; every 'other' message.",
    },
    "emotion": {
        "calm": "平静 — factual or mild; praise counts as calm.",
        "upset": "不满 — clearly dissatisfied or disappointed, still measured.",
        "angry": "愤怒 — strong anger: insults, swearing, many exclamation marks, 'never buying again'.",
    },
    "escalation": {
        "True": "升级 — says they will go or went outside normal channels: 12315, 消协, 工商, media, 曝光, "
        "lawyer or court, 举报, or demands 退一赔三 / 假一赔十.",
        "False": "不升级 — no such threat; warning other buyers alone is not escalation.",
    },
}

HEAD_TITLES = {"dispute_type": "Dispute type", "urgency": "Grade", "emotion": "Emotion", "escalation": "Escalation"}


def definition(head: str, label) -> str:
    """The definition of ``label`` for ``head``; labels are compared as strings (1, True...)."""
    key = str(bool(label)) if head == "escalation" and not isinstance(label, str) else str(label)
    return DEFINITIONS.get(head, {}).get(key, "")
