"""What a triage run returns for one message; the same shape from every backend and adapter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RuleHit(BaseModel):
    """A domain rule that fired: which rule, the words that matched, what it changed."""

    rule: str  # e.g. "safety", "escalation_threat", "vulnerable_customer"
    matched: list[str] = Field(default_factory=list)
    effect: str = ""  # e.g. "urgency 2 -> 1", "escalation=true"


class Prediction(BaseModel):
    dispute_type: str
    urgency: int  # 1 一级, 2 二级, 3 三级
    emotion: str
    escalation: bool
    vulnerable: bool = False
    confidence: float  # the lowest top-class probability over the four heads
    scores: dict[str, dict[str, float]]  # head -> label (as string) -> probability
    explanation: dict[str, Any]  # head -> [[word, weight], ...]; "rules" -> [RuleHit, ...]
    rules: list[RuleHit] = Field(default_factory=list)
    model_version: str
