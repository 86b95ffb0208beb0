"""The review desk's words: one catalogue (``messages.toml``, Simplified Chinese and English)
and the reviewer's clock (every time in the policy's timezone, with relative countdowns).

A :class:`Translator` is what render functions and handlers take: ``tr("queue.waiting", count=3)``,
``tr.label("urgency", 1)``, ``tr.time(deadline)``. The API never uses this module: its
errors stay English.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

CATALOGUE = Path(__file__).with_name("messages.toml")
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
DEFAULT_TIMEZONE = "Asia/Shanghai"


@lru_cache(maxsize=4)
def load_catalogue(path: Path = CATALOGUE) -> dict[str, dict[str, str]]:
    """{language: {key: text}}; a missing language table is an error, not a silent fallback."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    missing = [lang for lang in LANGUAGES if not isinstance(data.get(lang), dict)]
    if missing:
        raise ValueError(f"{path}: no [{missing[0]}] table")
    return {lang: {str(k): str(v) for k, v in data[lang].items()} for lang in LANGUAGES}


def pick_language(stored: str | None, accept_language: str | None) -> str:
    """The user's stored choice, else the first supported language of the browser's
    ``Accept-Language`` (by q-value), else Chinese."""
    if stored in LANGUAGES:
        return stored
    ranked = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT_LANGUAGE


class Translator:
    """Texts of one language and times in one timezone."""

    def __init__(self, language: str = DEFAULT_LANGUAGE, timezone: str = DEFAULT_TIMEZONE):
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.messages = load_catalogue()[self.language]

    def __call__(self, key: str, **values: Any) -> str:
        text = self.messages.get(key)
        if text is None:
            raise KeyError(f"message {key!r} is not in {CATALOGUE.name} [{self.language}]")
        return text.format(**values) if values else text

    # ------------------------------------------------------------------ labels

    def label(self, head: str, value: Any) -> str:
        """The display name of a label (urgency 1 -> 一级 紧急, escalation True -> 有升级风险)."""
        if value is None:
            return ""
        key = str(value).lower() if head == "escalation" else str(value)
        return self.messages.get(f"label.{head}.{key}", str(value))

    def guideline(self, head: str, value: Any) -> str:
        key = str(bool(value) if not isinstance(value, str) else value).lower() if head == "escalation" else str(value)
        return self.messages.get(f"guide.{head}.{key}", "")

    # ------------------------------------------------------------------ time

    def zone_name(self) -> str:
        return self("time.zone") if self.timezone == DEFAULT_TIMEZONE else self.timezone

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def time(self, moment: datetime | str | None, seconds: bool = False) -> str:
        """'2026-12-02 01:32' in the policy's timezone (aware datetimes or ISO strings)."""
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return self.local(moment).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def span(self, delta: timedelta) -> str:
        seconds = int(abs(delta.total_seconds()))
        hours, minutes = divmod(seconds // 60, 60)
        days, hours = divmod(hours, 24)
        return (self("span.days", n=days) if days else "") + self("span.hm", h=hours, m=minutes)

    def countdown(self, deadline: datetime | None, now: datetime) -> str:
        """'剩余 3小时20分' / '3h 20m left', or '已超时 …' / 'breached … ago'."""
        if deadline is None:
            return self("sla.no_deadline")
        delta = deadline - now
        return self("sla.left" if delta.total_seconds() >= 0 else "sla.breached", span=self.span(delta))
