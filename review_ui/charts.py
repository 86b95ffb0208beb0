"""Dashboard charts as matplotlib Figures (no pyplot: no global state, safe across threads)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from triage.taxonomy import HEAD_LABELS, HEADS  # noqa: E402


def _empty(fig: Figure, ax, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#6b7280")
    ax.set_axis_off()
    return fig


def reviews_per_day(stats: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    days = list(stats["reviews_per_day"])
    if not days:
        return _empty(fig, ax, "no reviews yet")
    ax.bar([d[5:] for d in days], [stats["reviews_per_day"][d] for d in days], color="#2563eb")
    ax.set_title("Reviews per day")
    ax.tick_params(axis="x", rotation=45)
    return fig


def agreement_over_time(stats: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not stats["reviews_total"]:
        return _empty(fig, ax, "no reviews yet")
    for head in HEADS:
        per_day = stats["agreement"][head]
        ax.plot([d[5:] for d in per_day], list(per_day.values()), marker="o", label=head)
    ax.set_ylim(0, 1.05)
    ax.set_title("Model-reviewer agreement per head")
    ax.legend(fontsize=7, loc="lower left")
    ax.tick_params(axis="x", rotation=45)
    return fig


def confusion(stats: dict[str, Any], head: str = "dispute_type") -> Figure:
    fig = Figure(figsize=(4.5, 4), tight_layout=True)
    ax = fig.subplots()
    cells = stats["confusion"][head]
    if not cells:
        return _empty(fig, ax, "no reviews yet")
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
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("confirmed")
    ax.set_ylabel("model")
    ax.set_title(f"Confusion: {head}")
    return fig


def sla_events(stats: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    days = list(stats["sla_per_day"])
    if not days:
        return _empty(fig, ax, "no SLA warnings or breaches")
    warnings = [stats["sla_per_day"][d].get("warning", 0) for d in days]
    breaches = [stats["sla_per_day"][d].get("breach", 0) for d in days]
    labels = [d[5:] for d in days]
    ax.bar(labels, warnings, color="#f59e0b", label="warnings")
    ax.bar(labels, breaches, bottom=warnings, color="#dc2626", label="breaches")
    ax.set_title("SLA warnings and breaches")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=45)
    return fig


def model_metrics(versions: list[dict[str, Any]]) -> Figure:
    """Seed-CV macro-F1 of dispute type per version the learning loop trained."""
    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    points = [
        (v["version"][-6:], v["metrics"]["learning"]["seed_cv"])
        for v in versions
        if isinstance(v.get("metrics"), dict) and v["metrics"].get("learning", {}).get("seed_cv")
    ]
    if not points:
        return _empty(fig, ax, "no retrained versions yet")
    for head in HEADS:
        ax.plot([p[0] for p in points], [p[1].get(head, float("nan")) for p in points], marker="o", label=head)
    ax.set_ylim(0, 1.05)
    ax.set_title("Seed cross-validation macro-F1 per version")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def daily_complaints(series: list[Any]) -> Figure:
    """Complaints per day for each product (``DailySeries`` of ``triage.contexts.surges``), each
    alert marked: a shaded band over its cases' days and a triangle on the day it was raised."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    fig = Figure(figsize=(6, 3), tight_layout=True)
    ax = fig.subplots()
    if not series:
        return _empty(fig, ax, "no product with an open surge alert")
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
                ax.annotate(f"alert {alert.id}", (raised, counts.get(raised, 0)), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=7, color=colour)
    ax.set_title("Complaints per day (alerts marked)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(axis="x", rotation=45)
    return fig
