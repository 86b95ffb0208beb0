"""Issue 12: the desk's one message catalogue (Chinese and English alike), the language
choice, and times in the policy's timezone."""

from __future__ import annotations

import ast
import re
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from review_ui.messages import CATALOGUE, LANGUAGES, Translator, load_catalogue, pick_language
from triage.taxonomy import HEAD_LABELS

UI = Path(__file__).resolve().parents[1] / "review_ui"


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_exists_in_both_languages_with_the_same_placeholders():
    catalogue = load_catalogue()
    zh, en = catalogue["zh"], catalogue["en"]
    assert set(zh) == set(en), (set(zh) ^ set(en))
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert fields(zh[key]) == fields(en[key]), key


def test_every_label_and_its_guideline_is_in_the_catalogue():
    for language in LANGUAGES:
        tr = Translator(language)
        for head, labels in HEAD_LABELS.items():
            tr(f"head.{head}")
            for label in labels:
                key = str(label).lower() if head == "escalation" else str(label)
                assert f"label.{head}.{key}" in tr.messages and f"guide.{head}.{key}" in tr.messages
                assert tr.guideline(head, label)
    zh = Translator("zh")
    assert [zh(f"head.{h}") for h in HEAD_LABELS] == ["争议类型", "紧急程度", "情绪", "升级风险"]
    assert (zh.label("urgency", 1), zh.label("escalation", True), zh.label("dispute_type", "refund")) == (
        "一级 紧急", "有升级风险", "退换货与价格")


def test_every_key_the_desk_uses_is_in_the_catalogue():
    """Keys written literally in review_ui/*.py ("tab.queue", f"queue.col.{c}" prefixes) exist."""
    keys = set(load_catalogue()["zh"])
    used, prefixes = set(), set()
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                    r"(app|lang|tab|head|label|guide|filter|order|status|queue|case|sla|span|time|history|action|"
                    r"result|error|dash|models|login|agree|source)\.[a-z_.0-9]+", node.value):
                (prefixes if node.value.endswith(".") else used).add(node.value)
    assert used and used <= keys, used - keys
    assert all(any(k.startswith(p) for k in keys) for p in prefixes), prefixes


def test_a_missing_key_is_an_error_not_a_silent_blank():
    with pytest.raises(KeyError, match="no.such.key"):
        Translator("en")("no.such.key")


@pytest.mark.parametrize(("stored", "header", "expected"), [
    (None, None, "zh"),
    (None, "en-US,en;q=0.9", "en"),
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    (None, "fr-FR,en;q=0.5", "en"),
    (None, "en;q=0.4,zh;q=0.8", "zh"),
    (None, "fr-FR,de", "zh"),
    (None, "en;q=0", "zh"),
    ("en", "zh-CN", "en"),
    ("zh", "en-US", "zh"),
    ("xx", "en-US", "en"),
])
def test_language_is_the_users_choice_else_the_browsers_else_chinese(stored, header, expected):
    assert pick_language(stored, header) == expected


def test_times_are_shown_in_the_policys_timezone_with_countdowns():
    due = datetime(2026, 12, 1, 17, 32, tzinfo=timezone.utc)  # 01:32 the next day in Beijing
    zh = Translator("zh", "Asia/Shanghai")
    assert zh.time(due) == "2026-12-02 01:32" and zh.time(due.isoformat()) == "2026-12-02 01:32"
    assert zh.zone_name() == "北京时间"
    assert zh.countdown(due, due - timedelta(hours=3, minutes=20)) == "剩余 3小时20分"
    assert zh.countdown(due, due + timedelta(days=1, hours=1, minutes=5)) == "已超时 1天1小时05分"
    en = Translator("en", "Asia/Shanghai")
    assert en.countdown(due, due - timedelta(hours=3, minutes=20)) == "3h 20m left"
    berlin = Translator("en", "Europe/Berlin")
    assert berlin.time(due) == "2026-12-01 18:32" and berlin.zone_name() == "Europe/Berlin"


def test_the_catalogue_is_one_data_file():
    assert CATALOGUE.name == "messages.toml" and CATALOGUE.is_file()
