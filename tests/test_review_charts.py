"""Issue 12: the dashboard's agreement charts over triage.agreement's report, in Chinese
and English, drawn with a system font that has the Chinese glyphs."""

from __future__ import annotations

import io
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from review_ui import charts
from review_ui.messages import Translator
from triage.agreement import ReviewedCase, agreement_report

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
MODEL = {"dispute_type": "quality", "urgency": 2, "emotion": "calm", "escalation": False}


def decision(stage, reviewer, minutes, final=False, **labels):
    return {"stage": stage, "reviewer": reviewer, "labels": {**MODEL, **labels}, "final": final,
            "claimed_at": T0 + timedelta(minutes=minutes), "decided_at": T0 + timedelta(minutes=minutes, seconds=40)}


@pytest.fixture
def report():
    cases = [
        ReviewedCase(1, [decision("first", "王芳", 0), decision("second", "李伟", 1, final=True)], MODEL, "v1"),
        ReviewedCase(2, [decision("first", "王芳", 2, urgency=1), decision("second", "李伟", 3, urgency=2),
                         decision("adjudication", "lead", 4, final=True, urgency=1)], MODEL, "v1"),
        ReviewedCase(3, [decision("single", "李伟", 5, final=True, dispute_type="service")], MODEL, "v2"),
    ]
    return agreement_report(cases)


def texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in [ax.title, *ax.texts, *ax.get_xticklabels(),
                                                              *ax.get_yticklabels()])


@pytest.mark.parametrize("name", ["inter_reviewer", "reviewer_vs_final", "throughput", "model_vs_final"])
def test_agreement_charts_draw_in_both_languages(report, name):
    for language, word in (("zh", "一致" if name != "throughput" else "效率"), ("en", "")):
        fig = getattr(charts, name)(report, Translator(language))
        assert word in texts(fig)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missing glyph warns: the CJK font must be found
            fig.savefig(io.BytesIO(), format="png")


def test_charts_show_the_reports_numbers(report):
    zh = Translator("zh")
    inter = texts(charts.inter_reviewer(report, zh))
    assert "双人复核 2 例" in inter and "50%" in inter and "100%" in inter  # urgency split once in two
    per_reviewer = texts(charts.reviewer_vs_final(report, zh))
    assert "王芳 (2)" in per_reviewer and "李伟 (3)" in per_reviewer
    assert "中位 40 秒/例" in texts(charts.throughput(report, zh))


def test_empty_reports_say_so():
    empty = agreement_report([])
    assert "还没有双人复核" in texts(charts.inter_reviewer(empty))
    assert "no finalised case" in texts(charts.model_vs_final(empty, Translator("en")))
