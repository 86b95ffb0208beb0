"""HTML fragments of the review screen. Every piece of message or user text is escaped here.

Complaints are untrusted input: a message may contain ``<script>`` or ``<img onerror=...>``.
Everything the UI shows goes through :func:`html.escape`; highlighting works on the raw
text and escapes each segment, so a highlight can never split an entity or open a tag.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from review_ui.messages import Translator

ZH = Translator()  # the desk's default: Simplified Chinese, Beijing time
HEAD_COLOURS = {"dispute_type": "#fde68a", "urgency": "#fecaca", "emotion": "#bfdbfe", "escalation": "#ddd6fe"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def score_key(label: Any) -> str:
    """How a label is keyed in a prediction's ``scores`` (booleans as 'true'/'false')."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def driving_words(explanation: Mapping[str, Any] | None, heads: Iterable[str] = HEAD_COLOURS) -> dict[str, str]:
    """word -> head it drove most strongly (positive weights only), from a prediction's explanation."""
    best: dict[str, tuple[float, str]] = {}
    for head in heads:
        for item in (explanation or {}).get(head, []) or []:
            try:
                word, weight = str(item[0]), float(item[1])
            except (TypeError, ValueError, IndexError):
                continue
            word = word.strip()
            if not word or weight <= 0 or word.startswith("__"):
                continue
            if word not in best or weight > best[word][0]:
                best[word] = (weight, head)
    return {word: head for word, (_, head) in best.items()}


def highlight(text: str, words: Mapping[str, str]) -> str:
    """Escaped ``text`` with every occurrence of a driving word wrapped in <mark> (longest first)."""
    text = text or ""
    spans: list[tuple[int, int, str]] = []
    taken = [False] * len(text)
    for word in sorted(words, key=len, reverse=True):
        start = text.find(word)
        while start != -1:
            end = start + len(word)
            if not any(taken[start:end]):
                spans.append((start, end, words[word]))
                for i in range(start, end):
                    taken[i] = True
            start = text.find(word, end)
    spans.sort()
    out, cursor = [], 0
    for start, end, head in spans:
        out.append(esc(text[cursor:start]))
        colour = HEAD_COLOURS.get(head, "#e5e7eb")
        out.append(f'<mark class="driver" data-head="{esc(head)}" style="background:{colour}">{esc(text[start:end])}</mark>')
        cursor = end
    out.append(esc(text[cursor:]))
    return '<div class="message-text" style="white-space:pre-wrap;font-size:1.1em;line-height:1.7">' + "".join(out) + "</div>"


def label_table(predicted: Mapping[str, Any], scores: Mapping[str, Mapping[str, float]] | None,
                tr: Translator = ZH) -> str:
    """Each head: predicted label, its probability, the runner-up."""
    rows = []
    for head in HEAD_COLOURS:
        label = predicted.get(head)
        head_scores = dict((scores or {}).get(head, {}) or {})
        ranked = sorted(head_scores.items(), key=lambda kv: kv[1], reverse=True)
        prob = head_scores.get(score_key(label))
        others = ", ".join(f"{esc(_label_of(tr, head, k))} {v:.0%}" for k, v in ranked[1:3])
        bar = f'<div style="background:{HEAD_COLOURS[head]};width:{(prob or 0) * 100:.0f}%;height:6px"></div>'
        prob_text = f"{prob:.0%}" if prob is not None else "–"
        rows.append(
            f'<tr><th style="text-align:left">{esc(tr("head." + head))}</th>'
            f'<td data-head="{esc(head)}" data-label="{esc(score_key(label))}"><b>{esc(_label_of(tr, head, label))}</b></td>'
            f"<td>{prob_text}{bar}</td><td style='color:#6b7280'>{others}</td></tr>"
        )
    return '<table class="labels" style="width:100%">' + "".join(rows) + "</table>"


def _label_of(tr: Translator, head: str, label: Any) -> str:
    """A label's display name; anything unknown (or odd) is shown as it is, escaped by the caller."""
    return tr.label(head, label) if isinstance(label, (str, int, bool)) else str(label)


def rules_list(rules: Sequence[Mapping[str, Any]] | None, tr: Translator = ZH) -> str:
    if not rules:
        return f"<p><i>{esc(tr('case.no_rule'))}</i></p>"
    items = []
    for rule in rules:
        matched = ", ".join(esc(m) for m in rule.get("matched", []) or [])
        effect = esc(rule.get("effect", ""))
        items.append(f"<li><b>{esc(rule.get('rule'))}</b>{' — ' + matched if matched else ''}{' → ' + effect if effect else ''}</li>")
    return "<ul class='rules'>" + "".join(items) + "</ul>"


def flags(emotion: str | None, vulnerable: bool, escalation: bool, tr: Translator = ZH) -> str:
    badges = []
    style = "color:white;padding:2px 8px;border-radius:8px"
    if emotion in ("upset", "angry"):
        colour = "#dc2626" if emotion == "angry" else "#f59e0b"
        badges.append(f'<span class="flag" style="background:{colour};{style}">{esc(tr.label("emotion", emotion))}</span>')
    if vulnerable:
        badges.append(f'<span class="flag" style="background:#7c3aed;{style}">{esc(tr("case.flag.vulnerable"))}</span>')
    if escalation:
        badges.append(f'<span class="flag" style="background:#111827;{style}">{esc(tr("case.flag.escalation"))}</span>')
    return " ".join(badges) or f'<span style="color:#6b7280">{esc(tr("case.no_flags"))}</span>'


def countdown(deadline: datetime | None, now: datetime, tr: Translator = ZH) -> str:
    """'剩余 3小时20分' or '已超时 1小时05分' (English: '3h 20m left', 'breached 1h 05m ago')."""
    return tr.countdown(deadline, now)


def deadline_cell(deadline: datetime | None, now: datetime, tr: Translator = ZH) -> str:
    """'2026-12-02 01:32 · 剩余 3小时20分': the local time and the countdown."""
    if deadline is None:
        return tr("sla.no_deadline")
    return f"{tr.time(deadline)} · {tr.countdown(deadline, now)}"


def sla_block(tier: str | None, deadlines: Mapping[str, datetime | None], now: datetime, tr: Translator = ZH) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{esc(tr('sla.' + name))}</th><td class='countdown'>{esc(tr.countdown(when, now))}</td>"
        f"<td class='local-time' style='color:#6b7280'>{esc(tr.time(when) + ' ' + tr.zone_name() if when else '')}</td></tr>"
        for name, when in deadlines.items()
    )
    return f"<p>{esc(tr('case.tier'))}: <b class='tier'>{esc(tier)}</b></p><table class='sla'>{rows}</table>"


def guideline_block(predicted: Mapping[str, Any], tr: Translator = ZH) -> str:
    items = []
    for head in HEAD_COLOURS:
        label = predicted.get(head)
        text = tr.guideline(head, label) if label is not None else ""
        if text:
            items.append(f"<li><b>{esc(tr('head.' + head))} · {esc(_label_of(tr, head, label))}</b>: {esc(text)}</li>")
    return "<ul class='guideline'>" + "".join(items) + "</ul>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], titles: Sequence[str] | None = None) -> str:
    """An escaped HTML table of ``rows`` (dicts) in ``columns`` order, headed by ``titles``."""
    head = "".join(f"<th>{esc(c)}</th>" for c in (titles or columns))
    body = "".join("<tr>" + "".join(f"<td>{esc(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table class='grid'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def early_warning(alerts: Sequence[Any], incidents: Sequence[Any], followups: Sequence[Mapping[str, Any]] = (),
                  tr: Translator = ZH) -> str:
    """Open surge alerts and recall incidents (views of ``triage.contexts.surges``) and the
    follow-up calls per dispute type and tier (``Cases.followup_stats``) as tables."""
    def titled(columns):
        return [tr("dash.col." + c) for c in columns]

    alert_cols = ["alert", "product", "batch", "tests", "cases", "expected", "p", "safety", "status", "last_case"]
    alert_rows = [{"alert": a.id, "product": a.product, "batch": a.batch or "", "tests": ", ".join(a.scopes),
                   "cases": len(a.case_ids), "expected": f"{a.expected:.1f}", "p": f"{a.p_value:.1e}",
                   "safety": a.safety_count, "status": a.status,
                   "last_case": tr.time(a.last_case_at)} for a in alerts]
    incident_cols = ["incident", "product", "batch", "owner", "status", "due", "cases"]
    incident_rows = [{"incident": i.id, "product": i.product, "batch": i.batch or "", "owner": i.owner,
                      "status": i.status, "due": tr.time(i.due_at) + (tr("dash.overdue") if i.overdue else ""),
                      "cases": len(i.case_ids)} for i in incidents]
    parts = [f"<h4>{esc(tr('dash.alerts'))}</h4>",
             table(alert_rows, alert_cols, titled(alert_cols)) if alert_rows else f"<p>{esc(tr('dash.no_alerts'))}</p>",
             f"<h4>{esc(tr('dash.incidents'))}</h4>",
             table(incident_rows, incident_cols, titled(incident_cols))
             if incident_rows else f"<p>{esc(tr('dash.no_incidents'))}</p>",
             f"<h4>{esc(tr('dash.followups'))}</h4>"]
    follow_cols = ["type", "tier", "due", "on_time", "missed", "satisfaction"]
    follow_rows = [{"type": tr.label("dispute_type", f["dispute_type"]), "tier": f["tier"], "due": f["due"],
                    "on_time": f"{f['on_time']} ({f['on_time'] / f['due']:.0%})" if f["due"] else "0",
                    "missed": f["missed"], "satisfaction": "" if f["satisfaction"] is None else f["satisfaction"]}
                   for f in followups]
    parts.append(table(follow_rows, follow_cols, titled(follow_cols))
                 if follow_rows else f"<p>{esc(tr('dash.no_followups'))}</p>")
    return "".join(parts)


def operating_point(point: Mapping[str, Any] | None, tr: Translator = ZH) -> str:
    """How the serving model grades 一级 (``GET /v1/models``' ``operating_point``): a fixed
    threshold, or a recall target with the recall and precision it had on the confirmed labels."""
    if not point or point.get("threshold") is None:
        return ""
    if point.get("source") == "recall target":
        return tr("models.point_recall", target=point["target_recall"], threshold=point["threshold"],
                  count=point["confirmed_urgent"], recall=f"{point['confirmed_recall']:.2f}",
                  precision=f"{point['confirmed_precision']:.2f}")
    return tr("models.point_fixed", threshold=point["threshold"])
