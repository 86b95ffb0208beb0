"""The review UI: a Gradio Blocks app mounted on the FastAPI app at ``/review``.

Thin on purpose: every handler checks the logged-in user's role, calls one function of
:class:`triage.contexts.review.ReviewService` or :class:`models.learning.LearningLoop`, and renders
with :mod:`review_ui.render` (which escapes all message text). Users log in with their
user name and one of their API keys; only active users with the role ``reviewer``,
``supervisor`` or ``admin`` get in, and only ``admin`` users who hold an admin-scope key may retrain,
promote or roll back models.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import gradio as gr

from review_ui import charts, render
from triage.errors import Conflict, TriageError
from triage.contexts.review import REVIEW_ROLES, QueueFilters
from triage.clock import utcnow
from triage.taxonomy import DISPUTE_TYPES, EMOTIONS, GRADE_NAMES

ANY = "(any)"
QUEUE_COLUMNS = ["case", "next deadline", "grade", "type", "emotion", "confidence", "tier", "text"]

# Keyboard shortcuts: c = confirm, n = next (skip). Ignored while typing in a field.
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', function (event) {
  const target = event.target || {};
  const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable;
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = (event.key || '').toLowerCase();
  const id = key === 'c' ? 'confirm-btn' : key === 'n' ? 'next-btn' : null;
  if (!id) return;
  const button = document.getElementById(id);
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""

CSS = """
mark.driver { padding: 0 2px; border-radius: 3px; }
table.grid td, table.grid th { padding: 2px 8px; border-bottom: 1px solid #e5e7eb; font-size: 0.9em; }
"""


def _grade_choice(grade: int) -> str:
    return f"{grade} {GRADE_NAMES[grade]}"


GRADE_CHOICES = [_grade_choice(g) for g in GRADE_NAMES]


def _parse_grade(choice: str | None) -> int | None:
    return int(choice.split()[0]) if choice and choice != ANY else None


def _none_if_any(value: str | None) -> str | None:
    return None if value in (None, "", ANY) else value


def build_review_ui(get_context: Callable[[], Any]) -> gr.Blocks:
    """The Blocks app; ``get_context()`` returns the running :class:`triage.contexts.review.ReviewContext`."""

    def role_of(request: gr.Request | None, admin: bool = False) -> str:
        """The logged-in user's name, after checking they may still review (or change models)."""
        return get_context().require_reviewer(getattr(request, "username", None), admin=admin)

    def filters_of(dispute_type, grade, emotion, status, tier, breached, skipped) -> QueueFilters:
        return QueueFilters(
            dispute_type=_none_if_any(dispute_type), grade=_parse_grade(grade), emotion=_none_if_any(emotion),
            status=_none_if_any(status), tier=_none_if_any(tier),
            breached={"breached": True, "not breached": False}.get(breached), exclude=list(skipped or []),
        )

    # ------------------------------------------------------------------ queue and item

    def queue_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
        now = utcnow()
        rows = []
        for item in items:
            deadline = item["next_deadline"]
            when = render.countdown(datetime.fromisoformat(deadline), now) if deadline else "no deadline"
            labels = item["labels"]
            confidence = f"{item['confidence']:.2f}" if item["confidence"] is not None else ""
            text = item["text"] if len(item["text"]) <= 40 else item["text"][:40] + "…"
            rows.append([item["case_id"], when, labels["urgency"], labels["dispute_type"], labels["emotion"],
                         confidence, item["tier"], text])
        return rows

    def render_item(item: dict[str, Any] | None):
        """(text, details, guideline, history, 4 label dropdowns, state) for one case."""
        if item is None:
            empty = "<p><i>The queue is empty for these filters.</i></p>"
            return (empty, "", "", "", gr.update(value=None), gr.update(value=None), gr.update(value=None),
                    gr.update(value=None), None)
        now = utcnow()
        labels = item["labels"]
        words = render.driving_words(item["explanation"])
        deadlines = {
            "respond": datetime.fromisoformat(item["respond_due_at"]) if item["respond_due_at"] else None,
            "resolve": datetime.fromisoformat(item["resolve_due_at"]) if item["resolve_due_at"] else None,
        }
        header = (f"<p><b>Case {item['case_id']}</b> · status {render.esc(item['status'])} · "
                  f"labels from {render.esc(item['labels_source'])} · model {render.esc(item['model_version'])} · "
                  f"version <span class='case-version'>{item['version']}</span></p>")
        text_html = header + render.highlight(item["text"], words)
        details = (
            render.flags(labels["emotion"], item["vulnerable"], labels["escalation"])
            + render.label_table(labels, item["scores"])
            + "<h4>Rules that fired</h4>" + render.rules_list(item["rules"])
            + "<h4>SLA</h4>" + render.sla_block(item["tier"], deadlines, now)
            + ("<p>Hints: " + "; ".join(render.esc(h) for h in item["hints"]) + "</p>" if item["hints"] else "")
        )
        guideline = "<h4>Guideline for these labels</h4>" + render.guideline_block(labels)
        history = render.table(get_context().review.history(item["case_id"]), ["at", "kind", "actor", "summary", "note"])
        state = {"case_id": item["case_id"], "version": item["version"]}
        return (text_html, details, guideline, history, gr.update(value=labels["dispute_type"]),
                gr.update(value=_grade_choice(labels["urgency"])), gr.update(value=labels["emotion"]),
                gr.update(value="true" if labels["escalation"] else "false"), state)

    def load_queue(dispute_type, grade, emotion, status, tier, breached, order, skipped, request: gr.Request):
        """Refresh the queue table and open its first case."""
        try:
            user = role_of(request)
            review = get_context().review
            filters = filters_of(dispute_type, grade, emotion, status, tier, breached, skipped)
            items = review.queue(filters, order, reviewer=user)
            size = review.queue_size(filters, reviewer=user)
        except TriageError as exc:
            return (gr.update(), f"⚠️ {exc}", *render_item(None))
        message = f"{size} case(s) waiting" + (f" · {len(skipped)} skipped this session" if skipped else "")
        return (queue_rows(items), message, *render_item(items[0] if items else None))

    def open_case(case_id, request: gr.Request):
        try:
            role_of(request)
            item = get_context().review.item(int(case_id))
        except (TriageError, TypeError, ValueError) as exc:
            return (f"⚠️ {exc}", *render_item(None))
        return (f"Case {item['case_id']} opened.", *render_item(item))

    def select_row(rows, evt: gr.SelectData, request: gr.Request):
        try:
            case_id = rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0]
        except (IndexError, KeyError, TypeError):
            return ("⚠️ pick a row of the queue", *render_item(None))
        return open_case(case_id, request)

    def decide(action: str):
        def handler(state, dtype, grade, emotion, escalation, note, skipped, request: gr.Request):
            if not state:
                return "⚠️ no case is open", skipped, gr.update()
            try:
                reviewer = role_of(request)
                review = get_context().review
                labels = None
                if action == "correct":
                    labels = {"dispute_type": dtype, "urgency": _parse_grade(grade), "emotion": emotion,
                              "escalation": escalation == "true"}
                    current = review.item(state["case_id"])["labels"]
                    labels = {h: v for h, v in labels.items() if v is not None and current.get(h) != v}
                result = review.decide(state["case_id"], action, reviewer, state["version"], labels, note)
            except Conflict as exc:
                return f"⛔ Conflict: {exc}", skipped, gr.update()
            except TriageError as exc:
                return f"⚠️ {exc}", skipped, gr.update()
            if action == "skip":
                skipped = [*(skipped or []), state["case_id"]]
                return f"Skipped case {state['case_id']}.", skipped, ""
            verb = "Confirmed" if action == "confirm" else "Corrected"
            if result["outcome"] != "final":
                waits = "a second reviewer" if result["outcome"] == "awaiting_second" else "a supervisor"
                return f"✅ {verb} case {result['case_id']}; it now waits for {waits}.", skipped, ""
            return (f"✅ {verb} case {result['case_id']}: grade {result['labels']['urgency']}, "
                    f"tier {result['tier']}, respond by {result['respond_due_at']}"), skipped, ""
        return handler

    def bulk_confirm(threshold, dispute_type, grade, emotion, status, tier, breached, skipped, request: gr.Request):
        try:
            reviewer = role_of(request)
            filters = filters_of(dispute_type, grade, emotion, status, tier, breached, skipped)
            result = get_context().review.bulk_confirm(float(threshold), reviewer, filters)
        except TriageError as exc:
            return f"⚠️ {exc}"
        conflicts = f", {len(result['conflicts'])} changed meanwhile and were left alone" if result["conflicts"] else ""
        return f"✅ Bulk-confirmed {len(result['confirmed'])} case(s) with confidence ≥ {threshold:.2f}{conflicts}."

    # ------------------------------------------------------------------ dashboard and models

    def load_dashboard(request: gr.Request):
        try:
            role_of(request)
            context = get_context()
            stats = context.review.dashboard()
            versions = context.store.list_versions()
            surges = context.service.surges
            alerts = [a for s in ("open", "acknowledged", "recall") for a in surges.list_alerts(status=s)]
            incidents = [i for s in ("open", "recalling") for i in surges.list_incidents(status=s)]
            followups = context.service.followup_stats()
            products = list(dict.fromkeys(a.product for a in alerts))[-4:]  # latest alerted products
            daily = [context.service.daily_series(p) for p in products]
        except TriageError as exc:
            return (f"⚠️ {exc}", None, None, None, None, None, None, "")
        overall = ", ".join(f"{h} {v:.0%}" for h, v in stats["agreement_overall"].items()) if stats["reviews_total"] else "–"
        summary = (
            f"**Queue:** {stats['queue_size']} · **open cases:** {stats['open_cases']} · "
            f"**breached:** {stats['open_breached']} · **warned:** {stats['open_warned']} · "
            f"**reviews (30 days):** {stats['reviews_total']} · **agreement:** {overall}"
        )
        return (summary, charts.reviews_per_day(stats), charts.agreement_over_time(stats), charts.confusion(stats),
                charts.sla_events(stats), charts.model_metrics(versions), charts.daily_complaints(daily),
                render.early_warning(alerts, incidents, followups))

    def versions_html(overview: dict[str, Any]) -> str:
        rows = []
        for v in reversed(overview["versions"]):
            learning = (v.get("metrics") or {}).get("learning", {}) if isinstance(v.get("metrics"), dict) else {}
            f1 = learning.get("holdout") or learning.get("seed_cv") or {}
            rows.append({
                "version": v["version"] + (" (current)" if v.get("current") else ""),
                "backend": v.get("backend", ""), "status": v.get("status"), "created": v.get("created"), "trigger": v.get("trigger", ""),
                "macro-F1": ", ".join(f"{h} {s:.2f}" for h, s in f1.items()),
                "reason": v.get("reason", ""),
            })
        return render.table(rows, ["version", "backend", "status", "created", "trigger", "macro-F1", "reason"])

    def job_text(job: dict[str, Any] | None) -> str:
        if not job:
            return "No retrain has run in this process."
        if job["state"] in ("queued", "running"):
            return f"⏳ Retrain {job['id']}: {job['progress']:.0%} — {job['stage']}"
        if job["state"] == "failed":
            return f"❌ Retrain {job['id']} failed: {job['error']}"
        verdict = "promoted" if job["promoted"] else "rejected"
        return f"✅ Retrain {job['id']} finished: {job['version']} {verdict} — {job['reason']}"

    def load_models(request: gr.Request):
        try:
            role_of(request)
            overview = get_context().models_overview()
        except TriageError as exc:
            return f"⚠️ {exc}", gr.update(), ""
        choices = [v["version"] for v in reversed(overview["versions"]) if v.get("status") != "foreign"]
        return versions_html(overview), gr.update(choices=choices), job_text(overview["retrain"])

    def model_action(action: str):
        def handler(version, request: gr.Request):
            try:
                admin = role_of(request, admin=True)
                learning = get_context().learning
                if action == "retrain":
                    job = learning.start_retrain(f"ui:{admin}", trigger="ui")
                    return f"⏳ Retrain {job.id} started."
                if not version:
                    return "⚠️ pick a version first"
                change = learning.promote if action == "promote" else learning.rollback
                regraded = change(version, f"ui:{admin}", f"{action} from the review UI")
            except TriageError as exc:
                return f"⚠️ {exc}"
            return f"✅ {version} is now current ({action}); {regraded} open case(s) re-graded."
        return handler

    def poll_job(last_state, request: gr.Request):
        """Job progress every tick; the versions table is re-read only when a job ends."""
        try:
            role_of(request)
            job = get_context().learning.job()
        except TriageError:
            return gr.update(), gr.update(), gr.update(), last_state
        job_dict = job.as_dict() if job else None
        state = f"{job.id}:{job.state}" if job else None
        if state == last_state or job is None or job.state in ("queued", "running"):
            return job_text(job_dict), gr.update(), gr.update(), state
        table, choices, text = load_models(request)
        return text, table, choices, state

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title="Complaint review", head=SHORTCUTS_JS, css=CSS, analytics_enabled=False) as ui:
        current = gr.State(None)
        skipped = gr.State([])
        gr.Markdown("## Complaint review · shortcuts: **c** confirm, **n** next")
        with gr.Tab("Queue"):
            with gr.Row():
                f_type = gr.Dropdown([ANY, *DISPUTE_TYPES], value=ANY, label="type")
                f_grade = gr.Dropdown([ANY, *GRADE_CHOICES], value=ANY, label="grade")
                f_emotion = gr.Dropdown([ANY, *EMOTIONS], value=ANY, label="emotion")
                f_status = gr.Dropdown([ANY, "open", "pending"], value=ANY, label="status")
                f_tier = gr.Textbox(value="", label="tier", placeholder="any")
                f_breached = gr.Dropdown([ANY, "breached", "not breached"], value=ANY, label="breached")
                f_order = gr.Radio(["deadline", "uncertainty"], value="deadline", label="order")
                refresh = gr.Button("Refresh queue", elem_id="refresh-btn")
            queue_info = gr.Markdown(elem_id="queue-info")
            queue_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, wrap=True, elem_id="queue-table")
            with gr.Row():
                open_id = gr.Number(label="open case #", precision=0, elem_id="open-case")
                open_btn = gr.Button("Open", elem_id="open-btn")
            with gr.Row():
                with gr.Column(scale=3):
                    text_html = gr.HTML(elem_id="item-text")
                    details_html = gr.HTML(elem_id="item-details")
                    guideline_html = gr.HTML(elem_id="item-guideline")
                with gr.Column(scale=2):
                    c_type = gr.Dropdown(list(DISPUTE_TYPES), label="dispute type", elem_id="label-type")
                    c_grade = gr.Dropdown(GRADE_CHOICES, label="grade", elem_id="label-grade")
                    c_emotion = gr.Dropdown(list(EMOTIONS), label="emotion", elem_id="label-emotion")
                    c_escalation = gr.Dropdown(["false", "true"], label="escalation", elem_id="label-escalation")
                    note = gr.Textbox(label="note", lines=2, elem_id="note")
                    with gr.Row():
                        confirm_btn = gr.Button("Confirm (c)", variant="primary", elem_id="confirm-btn")
                        correct_btn = gr.Button("Save correction", elem_id="correct-btn")
                        next_btn = gr.Button("Skip / next (n)", elem_id="next-btn")
                    status_md = gr.Markdown(elem_id="review-status")
                    with gr.Accordion("Bulk confirm", open=False):
                        threshold = gr.Slider(0.5, 1.0, value=0.9, step=0.01, label="confirm all with confidence ≥")
                        bulk_btn = gr.Button("Bulk-confirm", elem_id="bulk-btn")
            gr.Markdown("### History")
            history_html = gr.HTML(elem_id="item-history")
        with gr.Tab("Dashboard") as dashboard_tab:
            dash_refresh = gr.Button("Refresh dashboard")
            dash_summary = gr.Markdown(elem_id="dashboard-summary")
            with gr.Row():
                plot_reviews = gr.Plot(label="reviews per day")
                plot_agreement = gr.Plot(label="agreement")
            with gr.Row():
                plot_confusion = gr.Plot(label="confusion")
                plot_sla = gr.Plot(label="SLA")
                plot_models = gr.Plot(label="model versions")
            plot_daily = gr.Plot(label="complaints per day")
            early_warning_html = gr.HTML(elem_id="early-warning")
        with gr.Tab("Models") as models_tab:
            models_table = gr.HTML(elem_id="models-table")
            with gr.Row():
                version_pick = gr.Dropdown([], label="version", elem_id="version-pick")
                promote_btn = gr.Button("Promote", elem_id="promote-btn")
                rollback_btn = gr.Button("Roll back to it", elem_id="rollback-btn")
                retrain_btn = gr.Button("Retrain now", variant="primary", elem_id="retrain-btn")
            model_status = gr.Markdown(elem_id="model-status")
            job_status = gr.Markdown(elem_id="job-status")
            timer = gr.Timer(2.0)
            seen_job = gr.State(None)

        filters = [f_type, f_grade, f_emotion, f_status, f_tier, f_breached]
        item_outputs = [text_html, details_html, guideline_html, history_html, c_type, c_grade, c_emotion,
                        c_escalation, current]
        queue_outputs = [queue_table, queue_info, *item_outputs]
        queue_inputs = [*filters, f_order, skipped]
        labels_in = [current, c_type, c_grade, c_emotion, c_escalation, note, skipped]

        ui.load(load_queue, queue_inputs, queue_outputs)
        refresh.click(load_queue, queue_inputs, queue_outputs)
        for control in (*filters, f_order):
            control.change(load_queue, queue_inputs, queue_outputs)
        open_btn.click(open_case, [open_id], [status_md, *item_outputs])
        queue_table.select(select_row, [queue_table], [status_md, *item_outputs])
        for button, action in ((confirm_btn, "confirm"), (correct_btn, "correct"), (next_btn, "skip")):
            button.click(decide(action), labels_in, [status_md, skipped, note]).then(
                load_queue, queue_inputs, queue_outputs)
        bulk_btn.click(bulk_confirm, [threshold, *filters, skipped], [status_md]).then(
            load_queue, queue_inputs, queue_outputs)

        dash_outputs = [dash_summary, plot_reviews, plot_agreement, plot_confusion, plot_sla, plot_models,
                        plot_daily, early_warning_html]
        dash_refresh.click(load_dashboard, None, dash_outputs)
        dashboard_tab.select(load_dashboard, None, dash_outputs)
        models_outputs = [models_table, version_pick, job_status]
        models_tab.select(load_models, None, models_outputs)
        for button, action in ((promote_btn, "promote"), (rollback_btn, "rollback"), (retrain_btn, "retrain")):
            button.click(model_action(action), [version_pick], [model_status]).then(load_models, None, models_outputs)
        timer.tick(poll_job, [seen_job], [job_status, models_table, version_pick, seen_job])
    return ui


def login(get_context: Callable[[], Any], username: str, password: str) -> bool:
    """Gradio's auth check: ``password`` is one of the user's API keys with the review scope,
    and the user has the role reviewer, supervisor or admin (an ingest-only integration key never opens
    the UI, whoever owns it)."""
    context = get_context()
    try:
        principal = context.service.authenticate(password)
    except TriageError:
        return False
    allowed = principal.user == username and principal.role in REVIEW_ROLES and principal.has("review")
    if allowed:  # every later action checks this key is still valid (ReviewContext.require_reviewer)
        context.remember_login(principal)
    return allowed


def mount_review_ui(app, get_context: Callable[[], Any], path: str = "/review"):
    """Mount the review UI on ``app`` at ``path`` behind the log-in."""
    ui = build_review_ui(get_context)
    return gr.mount_gradio_app(
        app, ui, path=path, auth=lambda username, password: login(get_context, username, password),
        auth_message="Log in with your user name and one of your API keys (role reviewer, supervisor or admin).",
        show_api=False, ssr_mode=False,
    )
