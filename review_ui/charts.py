"""Dashboard charts as matplotlib Figures (no pyplot: no global state, safe across threads).

Titles and labels come from the message catalogue; a CJK font from the system renders them
(the images are drawn on the server, so the browser loads no font).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from review_ui.messages import Translator  # noqa: E402
from triage.taxonomy import HEAD_LABELS, HEADS  # noqa: E402

# System fonts that cover Chinese first; matplotlib falls back along the list per glyph.
CJK_FONTS = ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", "Source Han Sans SC"]
matplotlib.rcParams["font.sans-serif"] = [*CJK_FONTS, "DejaVu Sans"]


def _register_cjk_fonts() -> None:
    """Make a CJK font installed after matplotlib built its font cache (``~/.cache/matplotlib``)
    known to it: the cache is not rebuilt on its own, and the charts would draw empty boxes."""
    from matplotlib import font_manager

    if {f.name for f in font_manager.fontManager.ttflist} & set(CJK_FONTS):
        return
    for path in font_manager.findSystemFonts():
        name = path.lower()
        if any(k in name for k in ("wqy", "wenquanyi", "notosanscjk", "sourcehansans", "msyh", "pingfang")):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue  # an unreadable font file: the next one may do


_register_cjk_fonts()
matplotlib.rcParams["font.family"] = "sans-serif"
matplotlib.rcParams["axes.unicode_minus"] = False
ZH = Translator()


def _empty(fig: Figure, ax, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#6b7280")
    ax.set_axis_off()
    return fig


def reviews_per_day(stats: dict[str, Any], tr: Translator = ZH) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    days = list(stats["reviews_per_day"])
    if not days:
        return _empty(fig, ax, tr("dash.no_reviews"))
    ax.bar([d[5:] for d in days], [stats["reviews_per_day"][d] for d in days], color="#2563eb")
    ax.set_title(tr("dash.reviews_per_day"))
    ax.tick_params(axis="x", rotation=45)
    return fig


def agreement_over_time(stats: dict[str, Any], tr: Translator = ZH) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not stats["reviews_total"]:
        return _empty(fig, ax, tr("dash.no_reviews"))
    for head in HEADS:
        per_day = stats["agreement"][head]
        ax.plot([d[5:] for d in per_day], list(per_day.values()), marker="o", label=tr(f"head.{head}"))
    ax.set_ylim(0, 1.05)
    ax.set_title(tr("dash.agreement"))
    ax.legend(fontsize=7, loc="lower left")
    ax.tick_params(axis="x", rotation=45)
    return fig


def confusion(stats: dict[str, Any], tr: Translator = ZH, head: str = "dispute_type") -> Figure:
    fig = Figure(figsize=(4.5, 4), tight_layout=True)
    ax = fig.subplots()
    cells = stats["confusion"][head]
    if not cells:
        return _empty(fig, ax, tr("dash.no_reviews"))
    labels = [str(v) for v in HEAD_LABELS[head]]
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for cell in cells:
        if cell["model"] in index and cell["confirmed"] in index:
            matrix[index[cell["model"]]][index[cell["confirmed"]]] += cell["count"]
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    names = [tr.label(head, label) for label in labels]
    ax.set_xticks(range(len(labels)), names, rotation=45, fontsize=7)
    ax.set_yticks(range(len(labels)), names, fontsize=7)
    ax.set_xlabel(tr("dash.confusion.final"))
    ax.set_ylabel(tr("dash.confusion.model"))
    ax.set_title(tr("dash.confusion"))
    return fig


def sla_events(stats: dict[str, Any], tr: Translator = ZH) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    days = list(stats["sla_per_day"])
    if not days:
        return _empty(fig, ax, tr("dash.no_sla"))
    warnings = [stats["sla_per_day"][d].get("warning", 0) for d in days]
    breaches = [stats["sla_per_day"][d].get("breach", 0) for d in days]
    labels = [d[5:] for d in days]
    ax.bar(labels, warnings, color="#f59e0b", label=tr("dash.sla.warnings"))
    ax.bar(labels, breaches, bottom=warnings, color="#dc2626", label=tr("dash.sla.breaches"))
    ax.set_title(tr("dash.sla"))
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=45)
    return fig


def model_metrics(versions: list[dict[str, Any]], tr: Translator = ZH) -> Figure:
    """Seed-CV macro-F1 per head of every version the learning loop trained."""
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    points = [
        (v["version"][-6:], v["metrics"]["learning"]["seed_cv"])
        for v in versions
        if isinstance(v.get("metrics"), dict) and v["metrics"].get("learning", {}).get("seed_cv")
    ]
    if not points:
        return _empty(fig, ax, tr("dash.no_versions"))
    for head in HEADS:
        ax.plot([p[0] for p in points], [p[1].get(head, float("nan")) for p in points], marker="o",
                label=tr(f"head.{head}"))
    ax.set_ylim(0, 1.05)
    ax.set_title(tr("dash.models"))
    ax.legend(fontsize=7, loc="lower left")
    return fig


# ---------------------------------------------------------------------------- agreement
# Charts of triage.agreement.agreement_report (between reviewers, with the final label, with
# the model per version; reviewer throughput).


def inter_reviewer(report: dict[str, Any], tr: Translator = ZH) -> Figure:
    """Per head: percentage agreement and Cohen's kappa of first and second reviewer."""
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    rows = report["inter_reviewer"]
    if not any(rows[h]["cases"] for h in HEADS):
        return _empty(fig, ax, tr("agree.no_double"))
    xs = range(len(HEADS))
    percent = [rows[h]["percent"] or 0 for h in HEADS]
    kappa = [rows[h]["kappa"] if rows[h]["kappa"] is not None else float("nan") for h in HEADS]
    ax.bar([x - 0.2 for x in xs], percent, width=0.4, color="#2563eb", label=tr("agree.percent"))
    ax.bar([x + 0.2 for x in xs], kappa, width=0.4, color="#f59e0b", label=tr("agree.kappa"))
    for x, p, k in zip(xs, percent, kappa):
        ax.text(x - 0.2, p + 0.02, f"{p:.0%}", ha="center", fontsize=7)
        if k == k:
            ax.text(x + 0.2, max(k, 0) + 0.02, f"{k:.2f}", ha="center", fontsize=7)
    ax.set_xticks(list(xs), [tr(f"head.{h}") for h in HEADS])
    ax.set_ylim(min(0, *[k for k in kappa if k == k]) if any(k == k for k in kappa) else 0, 1.15)
    ax.axhline(0, color="#9ca3af", linewidth=0.5)
    ax.set_title(tr("agree.inter_title", cases=rows[HEADS[0]]["cases"]))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def reviewer_vs_final(report: dict[str, Any], tr: Translator = ZH) -> Figure:
    """Reviewer x head heat map: share of a reviewer's decisions that match the final label."""
    rows = report["reviewer_vs_final"]
    fig = Figure(figsize=(6, max(2.5, 0.45 * len(rows) + 1.2)), tight_layout=True)
    ax = fig.subplots()
    if not rows:
        return _empty(fig, ax, tr("agree.no_final"))
    reviewers = list(rows)
    matrix = [[rows[r]["agreement"][h] if rows[r]["agreement"][h] is not None else float("nan") for h in HEADS]
              for r in reviewers]
    ax.imshow(matrix, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value == value:
                ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(HEADS)), [tr(f"head.{h}") for h in HEADS], fontsize=8)
    ax.set_yticks(range(len(reviewers)), [f"{r} ({rows[r]['decisions']})" for r in reviewers], fontsize=8)
    ax.set_title(tr("agree.final_title"))
    return fig


def throughput(report: dict[str, Any], tr: Translator = ZH) -> Figure:
    """Per reviewer: cases per active hour (bars) and median seconds per case (labels)."""
    rows = report["throughput"]
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not rows:
        return _empty(fig, ax, tr("dash.no_reviews"))
    reviewers = list(rows)
    rates = [rows[r]["cases_per_hour"] or 0 for r in reviewers]
    ax.bar(reviewers, rates, color="#059669")
    for x, r in enumerate(reviewers):
        median = rows[r]["median_seconds"]
        ax.text(x, rates[x], tr("agree.median", seconds=f"{median:.0f}") if median is not None else "",
                ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(tr("agree.per_hour"))
    ax.set_title(tr("agree.throughput_title"))
    return fig


def model_vs_final(report: dict[str, Any], tr: Translator = ZH) -> Figure:
    """Per model version and head: share of finalised cases where the model's label is final."""
    rows = report["model_vs_final"]
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not rows:
        return _empty(fig, ax, tr("agree.no_final"))
    versions = list(rows)
    for head in HEADS:
        ax.plot([v[-6:] for v in versions],
                [rows[v]["agreement"][head] if rows[v]["agreement"][head] is not None else float("nan") for v in versions],
                marker="o", label=tr(f"head.{head}"))
    ax.set_ylim(0, 1.05)
    ax.set_title(tr("agree.model_title"))
    ax.legend(fontsize=7, loc="lower left")
    return fig


def daily_complaints(series: list[Any], tr: Translator = ZH) -> Figure:
    """Complaints per day for each product (``DailySeries`` of ``triage.contexts.surges``), each
    alert marked: a shaded band over its cases' days and a triangle on the day it was raised."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not series:
        return _empty(fig, ax, tr("dash.no_surge"))
    colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#f59e0b"]
    for i, s in enumerate(series):
        colour = colours[i % len(colours)]
        days = [d.day for d in s.days]
        counts = {d.day: d.count for d in s.days}
        ax.plot(days, [counts[d] for d in days], marker=".", color=colour, label=s.product)
        zone = ZoneInfo(s.timezone)
        for alert in s.alerts:
            first = alert.first_case_at.astimezone(zone).date()
            last = alert.last_case_at.astimezone(zone).date()
            ax.axvspan(max(first, days[0]), min(last, days[-1]) + timedelta(days=1), color=colour, alpha=0.15)
            raised = alert.detected_at.astimezone(zone).date()
            if days[0] <= raised <= days[-1]:
                ax.plot([raised], [counts.get(raised, 0)], marker="v", markersize=10, color=colour)
                ax.annotate(tr("dash.alert_mark", id=alert.id), (raised, counts.get(raised, 0)), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=7, color=colour)
    ax.set_title(tr("dash.daily"))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(axis="x", rotation=45)
    return fig
