"""The review UI: a Gradio Blocks app mounted on the FastAPI app at ``/review``.

Thin on purpose: every handler checks the logged-in user's role, calls one function of
:class:`triage.contexts.review.ReviewService` or :class:`models.learning.LearningLoop`, and renders
with :mod:`review_ui.render` (which escapes all message text). Reviewers log in with user
name and password (:mod:`review_ui.login`; roles reviewer, supervisor, admin); only ``admin``
users who hold an admin-scope key may retrain, promote or roll back models.

Every word comes from the catalogue ``review_ui/messages.toml`` (Simplified Chinese by
default, English per user or by the browser), every time is shown in the policy's timezone,
and the page loads nothing from other hosts: a system CJK font stack, no web fonts, no
analytics.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from review_ui import charts, render  # noqa: E402
from review_ui.login import FONT_STACK, install_login, session_token  # noqa: E402
from review_ui.messages import LANGUAGES, Translator, pick_language  # noqa: E402
from triage.clock import utcnow  # noqa: E402
from triage.contexts.review import QueueFilters  # noqa: E402
from triage.errors import Conflict, Forbidden, InvalidInput, NotFound, TriageError, Unauthorized  # noqa: E402
from triage.taxonomy import HEAD_LABELS, HEADS  # noqa: E402

ANY = "any"  # the filters' "no filter" value
QUEUE_COLUMNS = ["case", "deadline", "grade", "type", "emotion", "confidence", "tier", "text"]

# Keyboard first (ignored while typing in a field):
#   1-5 dispute type, g then 1-3 urgency, e then 1-3 emotion, x toggles escalation risk,
#   c confirms what is shown (a changed label is saved as a correction), n skips.
# A label key writes "head:index" into a hidden box; the server sets the dropdown.
SHORTCUTS_JS = """
<script>
(function () {
  let prefix = null, nonce = 0, pending = [], timer = null;
  function flush() {
    timer = null;
    const box = document.querySelector('#key-command textarea, #key-command input');
    if (!box || !pending.length) return;
    nonce += 1;
    box.value = pending.join(';') + ';#' + nonce;
    pending = [];
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }
  function send(command) {  // quick presses travel together, in order
    pending.push(command);
    if (!timer) timer = setTimeout(flush, 150);
  }
  function click(id) { const b = document.getElementById(id); if (b) b.click(); }
  document.addEventListener('keydown', function (event) {
    const target = event.target || {};
    const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable;
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = (event.key || '').toLowerCase();
    if (key === 'g' || key === 'e') { prefix = key; event.preventDefault(); return; }
    if (/^[1-9]$/.test(key)) {
      const head = prefix === 'g' ? 'urgency' : prefix === 'e' ? 'emotion' : 'dispute_type';
      prefix = null; event.preventDefault(); send(head + ':' + key); return;
    }
    prefix = null;
    if (key === 'x') { event.preventDefault(); send('escalation:toggle'); return; }
    if (key === 'c') { event.preventDefault(); click('confirm-btn'); return; }
    if (key === 'n') { event.preventDefault(); click('next-btn'); }
  });
})();
</script>
"""

CSS = """
mark.driver { padding: 0 2px; border-radius: 3px; }
table.grid td, table.grid th { padding: 2px 8px; border-bottom: 1px solid #e5e7eb; font-size: 0.9em; }
.hidden-box { display: none !important; }
"""

# System fonts only: Gradio's default theme would fetch web fonts from Google.
THEME = gr.themes.Default(
    primary_hue="orange",
    font=[f.strip().strip('"') for f in FONT_STACK.split(",")],
    font_mono=["ui-monospace", "Menlo", "Consolas", "Noto Sans Mono CJK SC", "monospace"],
)


def _choices(tr: Translator, head: str, with_any: bool = False) -> list[tuple[str, str]]:
    """(display, value) pairs of one head's labels; values stay canonical ('quality', '1', 'true')."""
    values = [str(v).lower() if head == "escalation" else str(v) for v in HEAD_LABELS[head]]
    if head == "escalation":
        values = ["false", "true"]
    pairs = [(tr.label(head, v), v) for v in values]
    if head == "urgency":
        pairs = [(f"{v} {tr.label(head, v)}" if tr.language == "en" else tr.label(head, v), v) for v in values]
    return ([(tr("filter.any"), ANY)] if with_any else []) + pairs


def _value(choice: str | None) -> str | None:
    return None if choice in (None, "", ANY) else choice


def _error(tr: Translator, exc: Exception) -> str:
    """A reviewer-facing error: the catalogue's sentence, the service's (English) detail after it."""
    kind = ("error.conflict" if isinstance(exc, Conflict) else "error.unauthorized" if isinstance(exc, Unauthorized)
            else "error.forbidden" if isinstance(exc, Forbidden) else "error.not_found" if isinstance(exc, NotFound)
            else "error.invalid" if isinstance(exc, (InvalidInput, ValueError, TypeError)) else "error.other")
    return tr(kind) + tr("error.detail", detail=str(exc))


def build_review_ui(get_context: Callable[[], Any]) -> gr.Blocks:
    """The Blocks app; ``get_context()`` returns the running :class:`triage.contexts.review.ReviewContext`."""

    def role_of(request: gr.Request | None, admin: bool = False) -> str:
        """The logged-in user's name, after checking they may still review (or change models)."""
        return get_context().require_reviewer(getattr(request, "username", None), admin=admin)

    def tr_of(lang: str | None) -> Translator:
        return Translator(lang or "zh", get_context().service.policy.timezone)

    def filters_of(dispute_type, grade, emotion, status, tier, breached, skipped) -> QueueFilters:
        grade = _value(grade)
        return QueueFilters(
            dispute_type=_value(dispute_type), grade=int(grade) if grade else None, emotion=_value(emotion),
            status=_value(status), tier=(tier or "").strip() or None,
            breached={"yes": True, "no": False}.get(breached), exclude=list(skipped or []),
        )

    # ------------------------------------------------------------------ language

    localized: list[tuple[Any, Callable[[Translator], dict[str, Any]]]] = []

    def L(component, texts: Callable[[Translator], dict[str, Any]]):
        """Register ``component`` to be re-labelled when the language changes; build it in Chinese."""
        localized.append((component, texts))
        return component

    def start_session(request: gr.Request):
        """On page load: the user's language (stored choice, else the browser's), who is logged in."""
        context = get_context()
        session = context.service.desk_session(session_token(request))
        lang = pick_language(session.language if session else None, request.headers.get("accept-language"))
        return (lang, *relabel(lang, session))

    def relabel(lang: str, session=None):
        tr = tr_of(lang)
        user = (tr("app.user", user=session.user, expires=tr.time(session.expires_at))
                + f" · <a href='logout' id='logout-link'>{render.esc(tr('app.logout'))}</a>") if session else ""
        return [gr.update(value=lang), user, *[gr.update(**texts(tr)) for _, texts in localized]]

    def change_language(lang: str, request: gr.Request):
        try:
            user = role_of(request)
            get_context().service.set_language(user, lang if lang in LANGUAGES else None)
            session = get_context().service.desk_session(session_token(request))
        except TriageError:
            session = None
        return relabel(lang, session)[1:]

    # ------------------------------------------------------------------ queue and item

    def queue_value(items: list[dict[str, Any]], tr: Translator) -> dict[str, Any]:
        now = utcnow()
        rows = []
        for item in items:
            deadline = item["next_deadline"]
            when = render.deadline_cell(datetime.fromisoformat(deadline), now, tr) if deadline else tr("sla.no_deadline")
            labels = item["labels"]
            confidence = f"{item['confidence']:.2f}" if item["confidence"] is not None else ""
            text = item["text"] if len(item["text"]) <= 40 else item["text"][:40] + "…"
            rows.append([item["case_id"], when, tr.label("urgency", labels["urgency"]),
                         tr.label("dispute_type", labels["dispute_type"]), tr.label("emotion", labels["emotion"]),
                         confidence, item["tier"], text])
        return {"data": rows, "headers": [tr(f"queue.col.{c}") for c in QUEUE_COLUMNS]}

    def render_item(item: dict[str, Any] | None, tr: Translator, viewer: str | None = None):
        """(text, details, guideline, history, 4 label dropdowns, state) for one case."""
        if item is None:
            empty = f"<p><i>{render.esc(tr('queue.empty'))}</i></p>"
            return (empty, "", "", "", gr.update(value=None), gr.update(value=None), gr.update(value=None),
                    gr.update(value=None), None)
        now = utcnow()
        labels = item["labels"]
        words = render.driving_words(item["explanation"])
        deadlines = {
            "respond": datetime.fromisoformat(item["respond_due_at"]) if item["respond_due_at"] else None,
            "resolve": datetime.fromisoformat(item["resolve_due_at"]) if item["resolve_due_at"] else None,
        }
        esc = render.esc
        header = (f"<p><b>{esc(tr('case.header', case=item['case_id']))}</b> · {esc(tr('case.status'))} "
                  f"{esc(tr('status.' + item['status']) if item['status'] in ('open', 'pending') else item['status'])} · "
                  f"{esc(tr('case.source'))} {esc(tr.messages.get('source.' + str(item['labels_source']), item['labels_source']))} · {esc(tr('case.model'))} "
                  f"{esc(item['model_version'])} · {esc(tr('case.version'))} <span class='case-version'>{item['version']}</span></p>")
        stage = item.get("review_stage") or "first"
        header += f"<p class='stage'>{esc(tr('stage.label'))}: <b>{esc(tr('stage.' + stage))}</b></p>"
        claim = item.get("claim")
        if claim:
            key = "claim.mine" if claim["reviewer"] == viewer else "claim.held"
            header += f"<p class='claim'>{esc(tr(key, who=claim['reviewer'], until=tr.time(claim['expires_at'])))}</p>"
        text_html = header + render.highlight(item["text"], words)
        details = (
            render.flags(labels["emotion"], item["vulnerable"], labels["escalation"], tr)
            + render.label_table(labels, item["scores"], tr)
            + f"<h4>{esc(tr('case.rules'))}</h4>" + render.rules_list(item["rules"], tr)
            + f"<h4>{esc(tr('case.sla'))}</h4>" + render.sla_block(item["tier"], deadlines, now, tr)
            + (f"<p>{esc(tr('case.hints'))}: " + "; ".join(esc(h) for h in item["hints"]) + "</p>" if item["hints"] else "")
        )
        if item.get("decisions"):  # waiting for adjudication: the two reviewers' labels
            columns = ["reviewer", *HEADS, "note"]
            rows = [{"reviewer": d["reviewer"], **{h: tr.label(h, d["labels"].get(h)) for h in HEADS},
                     "note": d.get("note") or ""} for d in item["decisions"]]
            details = (f"<h4>{esc(tr('claim.decisions'))}</h4><div id='adjudication'>"
                       + render.table(rows, columns, [tr("claim.reviewer"), *[tr("head." + h) for h in HEADS],
                                                      tr("history.note")]) + "</div>" + details)
        guideline = f"<h4>{esc(tr('guide.title'))}</h4>" + render.guideline_block(labels, tr)
        history_cols = ["at", "kind", "actor", "summary", "note"]
        events = [{**e, "at": tr.time(e["at"], seconds=True)} for e in get_context().review.history(item["case_id"])]
        history = render.table(events, history_cols, [tr(f"history.{c}") for c in history_cols])
        state = {"case_id": item["case_id"], "version": item["version"], "stage": stage, "labels": {
            "dispute_type": labels["dispute_type"], "urgency": str(labels["urgency"]), "emotion": labels["emotion"],
            "escalation": "true" if labels["escalation"] else "false"}}
        return (text_html, details, guideline, history, gr.update(value=labels["dispute_type"]),
                gr.update(value=str(labels["urgency"])), gr.update(value=labels["emotion"]),
                gr.update(value="true" if labels["escalation"] else "false"), state)

    def load_queue(dispute_type, grade, emotion, status, tier, breached, order, stage, skipped, lang,
                   request: gr.Request):
        """Refresh the queue table (cases nobody else holds) and claim and open the next case."""
        tr = tr_of(lang)
        try:
            user = role_of(request)
            review = get_context().review
            filters = filters_of(dispute_type, grade, emotion, status, tier, breached, skipped)
            stage = stage or "any"
            listed = "first" if stage == "any" else stage
            items = review.queue(filters, order or "deadline", reviewer=user, stage=listed)
            size = review.queue_size(filters, reviewer=user, stage=listed)
            opened = review.claim_next(user, filters, order or "deadline", stage)
        except (TriageError, ValueError) as exc:
            return (gr.update(), _error(tr, exc), *render_item(None, tr))
        message = tr("queue.waiting", count=size) + (tr("queue.skipped", count=len(skipped)) if skipped else "")
        return (queue_value(items, tr), message, *render_item(opened, tr, user))

    def open_case(case_id, lang, request: gr.Request):
        tr = tr_of(lang)
        try:
            user = role_of(request)
            review = get_context().review
            try:
                review.claim(int(case_id), user)
            except Conflict:
                pass  # another reviewer holds it (or it is decided): shown, not claimed
            item = review.item(int(case_id), viewer=user)
        except (TriageError, TypeError, ValueError) as exc:
            return (_error(tr, exc), *render_item(None, tr))
        claim = item.get("claim")
        if claim and claim["reviewer"] != user:
            message = tr("claim.held", who=claim["reviewer"], until=tr.time(claim["expires_at"]))
        else:
            message = tr("case.opened", case=item["case_id"])
        return (message, *render_item(item, tr, user))

    def select_row(rows, lang, evt: gr.SelectData, request: gr.Request):
        try:
            case_id = rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0]
            case_id = int(case_id)
        except (IndexError, KeyError, TypeError, ValueError):
            return (tr_of(lang)("queue.pick_row"), *render_item(None, tr_of(lang)))
        return open_case(case_id, lang, request)

    def key_command(commands, dtype, grade, emotion, escalation):
        """Label keys pressed in the browser ('dispute_type:2;urgency:1;#7'): set those heads' dropdowns."""
        chosen: dict[str, str] = {}
        for command in (commands or "").split(";"):
            head, _, choice = command.partition(":")
            if head == "escalation" and choice == "toggle":
                chosen["escalation"] = "false" if chosen.get("escalation", escalation) == "true" else "true"
            elif head in ("dispute_type", "urgency", "emotion") and choice.isdigit():
                values = [str(v) for v in HEAD_LABELS[head]]
                if 1 <= int(choice) <= len(values):
                    chosen[head] = values[int(choice) - 1]
        # only the pressed heads change: a later batch never overwrites an earlier one
        return tuple(gr.update(value=chosen[h]) if h in chosen else gr.update()
                     for h in ("dispute_type", "urgency", "emotion", "escalation"))

    def decide(action: str):
        def handler(state, dtype, grade, emotion, escalation, note, skipped, lang, request: gr.Request):
            tr = tr_of(lang)
            if not state:
                return tr("case.none_open"), skipped, gr.update()
            try:
                reviewer = role_of(request)
                review = get_context().review
                labels = None
                shown = {"dispute_type": dtype, "urgency": grade, "emotion": emotion, "escalation": escalation}
                changed = {h: v for h, v in shown.items() if v is not None and state["labels"].get(h) != v}
                kind = action
                if action in ("correct", "confirm") and changed:  # confirming changed labels saves them
                    kind = "correct"
                    labels = {h: (int(v) if h == "urgency" else v == "true" if h == "escalation" else v)
                              for h, v in changed.items()}
                stage = state.get("stage") if state.get("stage") in ("first", "second", "adjudication") else None
                result = review.decide(state["case_id"], kind, reviewer, state["version"], labels, note, stage=stage)
            except TriageError as exc:
                return _error(tr, exc), skipped, gr.update()
            if kind == "skip":
                skipped = [*(skipped or []), state["case_id"]]
                return tr("result.skipped", case=state["case_id"]), skipped, ""
            if result.get("outcome") in ("awaiting_second", "awaiting_adjudication"):
                return tr(f"outcome.{result['outcome']}", case=result["case_id"]), skipped, ""
            return (tr("result.confirmed" if kind == "confirm" else "result.corrected", case=result["case_id"],
                       grade=tr.label("urgency", result["labels"]["urgency"]), tier=result["tier"],
                       due=tr.time(result["respond_due_at"]) + " " + tr.zone_name()), skipped, "")
        return handler

    def bulk_confirm(threshold, dispute_type, grade, emotion, status, tier, breached, skipped, lang, request: gr.Request):
        tr = tr_of(lang)
        try:
            reviewer = role_of(request)
            filters = filters_of(dispute_type, grade, emotion, status, tier, breached, skipped)
            result = get_context().review.bulk_confirm(float(threshold), reviewer, filters)
        except (TriageError, ValueError) as exc:
            return _error(tr, exc)
        conflicts = tr("result.bulk_conflicts", count=len(result["conflicts"])) if result["conflicts"] else ""
        return tr("result.bulk", count=len(result["confirmed"]), threshold=f"{threshold:.2f}") + conflicts

    # ------------------------------------------------------------------ dashboard and models

    def load_dashboard(lang, request: gr.Request):
        tr = tr_of(lang)
        try:
            role_of(request)
            context = get_context()
            stats = context.review.dashboard()
            versions = context.store.list_versions()
            surges = context.service.surges
            alerts = [a for s in ("open", "acknowledged", "recall") for a in surges.list_alerts(status=s)]
            incidents = [i for s in ("open", "recalling") for i in surges.list_incidents(status=s)]
            followups = context.service.followup_stats()
            agreement = context.review.agreement(30)
            products = list(dict.fromkeys(a.product for a in alerts))[-4:]  # latest alerted products
            daily = [context.service.daily_series(p) for p in products]
        except TriageError as exc:
            return (_error(tr, exc), None, None, None, None, None, None, "", "", None, None, None, None)
        overall = (", ".join(f"{tr('head.' + h)} {v:.0%}" for h, v in stats["agreement_overall"].items())
                   if stats["reviews_total"] else "–")
        summary = tr("dash.summary", queue=stats["queue_size"], open=stats["open_cases"], breached=stats["open_breached"],
                     warned=stats["open_warned"], reviews=stats["reviews_total"], agreement=overall)
        return (summary, charts.reviews_per_day(stats, tr), charts.agreement_over_time(stats, tr),
                charts.confusion(stats, tr), charts.sla_events(stats, tr), charts.model_metrics(versions, tr),
                charts.daily_complaints(daily, tr), render.early_warning(alerts, incidents, followups, tr),
                tr("agree.summary", cases=agreement["cases"], double=agreement["double_reviewed"],
                   adjudicated=agreement["adjudicated"]),
                charts.inter_reviewer(agreement, tr), charts.reviewer_vs_final(agreement, tr),
                charts.throughput(agreement, tr), charts.model_vs_final(agreement, tr))

    def versions_html(overview: dict[str, Any], tr: Translator) -> str:
        rows = []
        for v in reversed(overview["versions"]):
            learning = (v.get("metrics") or {}).get("learning", {}) if isinstance(v.get("metrics"), dict) else {}
            f1 = learning.get("holdout") or learning.get("seed_cv") or {}
            created = v.get("created")
            try:
                created = tr.time(created) if created else ""
            except (TypeError, ValueError):
                pass
            rows.append({
                "version": v["version"] + (tr("models.current") if v.get("current") else ""),
                "backend": v.get("backend", ""), "status": v.get("status"), "created": created,
                "trigger": v.get("trigger", ""), "f1": ", ".join(f"{tr('head.' + h)} {s:.2f}" for h, s in f1.items()),
                "reason": v.get("reason", ""),
            })
        columns = ["version", "backend", "status", "created", "trigger", "f1", "reason"]
        return render.table(rows, columns, [tr(f"models.{c}") for c in columns])

    def job_text(job: dict[str, Any] | None, tr: Translator) -> str:
        if not job:
            return tr("models.no_job")
        if job["state"] in ("queued", "running"):
            return tr("models.job_running", id=job["id"], progress=f"{job['progress']:.0%}", stage=job["stage"])
        if job["state"] == "failed":
            return tr("models.job_failed", id=job["id"], error=job["error"])
        verdict = tr("models.promoted" if job["promoted"] else "models.rejected")
        return tr("models.job_done", id=job["id"], version=job["version"], verdict=verdict, reason=job["reason"])

    def regrade_text(job: dict[str, Any] | None, tr: Translator) -> str:
        if not job:
            return ""
        key = {"done": "models.regrade_done", "failed": "models.regrade_failed",
               "superseded": "models.regrade_superseded"}.get(job["state"], "models.regrade_running")
        return tr(key, id=job["id"], version=job["version"], count=job.get("regraded"), error=job.get("error", ""))

    def load_models(lang, request: gr.Request):
        tr = tr_of(lang)
        try:
            role_of(request)
            overview = get_context().models_overview()
        except TriageError as exc:
            return _error(tr, exc), gr.update(), ""
        choices = [v["version"] for v in reversed(overview["versions"]) if v.get("status") != "foreign"]
        status = "\n\n".join(t for t in (render.operating_point(overview.get("operating_point"), tr), job_text(overview["retrain"], tr),
                                         regrade_text(overview.get("regrade"), tr)) if t)
        return versions_html(overview, tr), gr.update(choices=choices), status

    def model_action(action: str):
        def handler(version, lang, request: gr.Request):
            tr = tr_of(lang)
            try:
                admin = role_of(request, admin=True)
                learning = get_context().learning
                if action == "retrain":
                    job = learning.start_retrain(f"ui:{admin}", trigger="ui")
                    return tr("models.started", id=job.id)
                if not version:
                    return tr("models.pick_version")
                change = learning.promote if action == "promote" else learning.rollback
                job = change(version, f"ui:{admin}", f"{action} from the review UI", background=True)
            except TriageError as exc:
                return _error(tr, exc)
            return tr("models.changed_regrading", version=version, id=job.id)
        return handler

    def poll_job(last_state, lang, request: gr.Request):
        """Job progress every tick; the versions table is re-read only when a job ends."""
        tr = tr_of(lang)
        try:
            role_of(request)
            job = get_context().learning.job()
        except TriageError:
            return gr.update(), gr.update(), gr.update(), last_state
        job_dict = job.as_dict() if job else None
        state = f"{job.id}:{job.state}" if job else None
        if state == last_state or job is None or job.state in ("queued", "running"):
            return job_text(job_dict, tr), gr.update(), gr.update(), state
        table, choices, text = load_models(lang, request)
        return text, table, choices, state

    # ------------------------------------------------------------------ layout (built in Chinese)

    zh = Translator("zh")
    with gr.Blocks(title=zh("app.title"), head=SHORTCUTS_JS, css=CSS, theme=THEME, analytics_enabled=False) as ui:
        current = gr.State(None)
        skipped = gr.State([])
        lang = gr.State("zh")
        with gr.Row():
            with gr.Column(scale=4):
                L(gr.Markdown(zh("app.header"), elem_id="app-header"), lambda t: {"value": t("app.header")})
                user_html = gr.HTML(elem_id="user-info")
            language = L(gr.Radio([("中文", "zh"), ("English", "en")], value="zh", label=zh("app.language"),
                                  elem_id="language", scale=1), lambda t: {"label": t("app.language")})
        with L(gr.Tab(zh("tab.queue"), elem_id="queue-tab"), lambda t: {"label": t("tab.queue")}):
            with gr.Row():
                f_type = L(gr.Dropdown(_choices(zh, "dispute_type", True), value=ANY, label=zh("head.dispute_type")),
                           lambda t: {"label": t("head.dispute_type"), "choices": _choices(t, "dispute_type", True)})
                f_grade = L(gr.Dropdown(_choices(zh, "urgency", True), value=ANY, label=zh("head.urgency")),
                            lambda t: {"label": t("head.urgency"), "choices": _choices(t, "urgency", True)})
                f_emotion = L(gr.Dropdown(_choices(zh, "emotion", True), value=ANY, label=zh("head.emotion")),
                              lambda t: {"label": t("head.emotion"), "choices": _choices(t, "emotion", True)})

                def status_choices(t):
                    return [(t("filter.any"), ANY), (t("status.open"), "open"), (t("status.pending"), "pending")]

                f_status = L(gr.Dropdown(status_choices(zh), value=ANY, label=zh("filter.status")),
                             lambda t: {"label": t("filter.status"), "choices": status_choices(t)})
                f_tier = L(gr.Textbox(value="", label=zh("filter.tier"), placeholder=zh("filter.tier_any")),
                           lambda t: {"label": t("filter.tier"), "placeholder": t("filter.tier_any")})

                def breached_choices(t):
                    return [(t("filter.any"), ANY), (t("filter.breached.yes"), "yes"), (t("filter.breached.no"), "no")]

                f_breached = L(gr.Dropdown(breached_choices(zh), value=ANY, label=zh("filter.breached")),
                               lambda t: {"label": t("filter.breached"), "choices": breached_choices(t)})

                def order_choices(t):
                    return [(t("order.deadline"), "deadline"), (t("order.uncertainty"), "uncertainty"),
                            (t("order.learning"), "learning")]

                f_order = L(gr.Radio(order_choices(zh), value="deadline", label=zh("filter.order")),
                            lambda t: {"label": t("filter.order"), "choices": order_choices(t)})

                def stage_choices(t):
                    return [(t(f"stage.{s}"), s) for s in ("any", "first", "second", "adjudication")]

                f_stage = L(gr.Radio(stage_choices(zh), value="any", label=zh("stage.label"), elem_id="stage-pick"),
                            lambda t: {"label": t("stage.label"), "choices": stage_choices(t)})
                refresh = L(gr.Button(zh("queue.refresh"), elem_id="refresh-btn"), lambda t: {"value": t("queue.refresh")})
            queue_info = gr.Markdown(elem_id="queue-info")
            queue_table = gr.Dataframe(headers=[zh(f"queue.col.{c}") for c in QUEUE_COLUMNS], interactive=False,
                                       wrap=True, elem_id="queue-table")
            with gr.Row():
                open_id = L(gr.Number(label=zh("queue.open_id"), precision=0, elem_id="open-case"),
                            lambda t: {"label": t("queue.open_id")})
                open_btn = L(gr.Button(zh("queue.open"), elem_id="open-btn"), lambda t: {"value": t("queue.open")})
            with gr.Row():
                with gr.Column(scale=3):
                    text_html = gr.HTML(elem_id="item-text")
                    details_html = gr.HTML(elem_id="item-details")
                    guideline_html = gr.HTML(elem_id="item-guideline")
                with gr.Column(scale=2):
                    def head_picker(head: str, keys: str, elem_id: str):
                        """One head's label dropdown, its keyboard keys in the label, in the catalogue's language."""
                        return L(gr.Dropdown(_choices(zh, head), label=f"{zh('head.' + head)} ({keys})", elem_id=elem_id),
                                 lambda t: {"label": f"{t('head.' + head)} ({keys})", "choices": _choices(t, head)})

                    c_type = head_picker("dispute_type", "1-5", "label-type")
                    c_grade = head_picker("urgency", "g 1-3", "label-grade")
                    c_emotion = head_picker("emotion", "e 1-3", "label-emotion")
                    c_escalation = head_picker("escalation", "x", "label-escalation")
                    note = L(gr.Textbox(label=zh("case.note"), lines=2, elem_id="note"), lambda t: {"label": t("case.note")})
                    key_box = gr.Textbox(elem_id="key-command", elem_classes=["hidden-box"], show_label=False)
                    with gr.Row():
                        confirm_btn = L(gr.Button(zh("action.confirm"), variant="primary", elem_id="confirm-btn"),
                                        lambda t: {"value": t("action.confirm")})
                        correct_btn = L(gr.Button(zh("action.correct"), elem_id="correct-btn"),
                                        lambda t: {"value": t("action.correct")})
                        next_btn = L(gr.Button(zh("action.skip"), elem_id="next-btn"), lambda t: {"value": t("action.skip")})
                    status_md = gr.Markdown(elem_id="review-status")
                    with L(gr.Accordion(zh("action.bulk"), open=False), lambda t: {"label": t("action.bulk")}):
                        threshold = L(gr.Slider(0.5, 1.0, value=0.9, step=0.01, label=zh("action.bulk_threshold")),
                                      lambda t: {"label": t("action.bulk_threshold")})
                        bulk_btn = L(gr.Button(zh("action.bulk"), elem_id="bulk-btn"), lambda t: {"value": t("action.bulk")})
            L(gr.Markdown("### " + zh("case.history")), lambda t: {"value": "### " + t("case.history")})
            history_html = gr.HTML(elem_id="item-history")
        with L(gr.Tab(zh("tab.dashboard"), elem_id="dashboard-tab"), lambda t: {"label": t("tab.dashboard")}) as dashboard_tab:
            dash_refresh = L(gr.Button(zh("dash.refresh")), lambda t: {"value": t("dash.refresh")})
            dash_summary = gr.Markdown(elem_id="dashboard-summary")
            with gr.Row():
                plot_reviews = L(gr.Plot(label=zh("dash.reviews_per_day")), lambda t: {"label": t("dash.reviews_per_day")})
                plot_agreement = L(gr.Plot(label=zh("dash.agreement")), lambda t: {"label": t("dash.agreement")})
            with gr.Row():
                plot_confusion = L(gr.Plot(label=zh("dash.confusion")), lambda t: {"label": t("dash.confusion")})
                plot_sla = L(gr.Plot(label=zh("dash.sla")), lambda t: {"label": t("dash.sla")})
                plot_models = L(gr.Plot(label=zh("dash.models")), lambda t: {"label": t("dash.models")})
            plot_daily = L(gr.Plot(label=zh("dash.daily")), lambda t: {"label": t("dash.daily")})
            L(gr.Markdown("### " + zh("agree.title")), lambda t: {"value": "### " + t("agree.title")})
            agree_summary = gr.Markdown(elem_id="agreement-summary")
            with gr.Row():
                plot_inter = L(gr.Plot(label=zh("agree.percent")), lambda t: {"label": t("agree.percent")})
                plot_final = L(gr.Plot(label=zh("agree.final_title")), lambda t: {"label": t("agree.final_title")})
            with gr.Row():
                plot_throughput = L(gr.Plot(label=zh("agree.throughput_title")),
                                    lambda t: {"label": t("agree.throughput_title")})
                plot_model_final = L(gr.Plot(label=zh("agree.model_title")), lambda t: {"label": t("agree.model_title")})
            early_warning_html = gr.HTML(elem_id="early-warning")
        with L(gr.Tab(zh("tab.models"), elem_id="models-tab"), lambda t: {"label": t("tab.models")}) as models_tab:
            models_table = gr.HTML(elem_id="models-table")
            with gr.Row():
                version_pick = L(gr.Dropdown([], label=zh("models.version"), elem_id="version-pick"),
                                 lambda t: {"label": t("models.version")})
                promote_btn = L(gr.Button(zh("models.promote"), elem_id="promote-btn"), lambda t: {"value": t("models.promote")})
                rollback_btn = L(gr.Button(zh("models.rollback"), elem_id="rollback-btn"),
                                 lambda t: {"value": t("models.rollback")})
                retrain_btn = L(gr.Button(zh("models.retrain"), variant="primary", elem_id="retrain-btn"),
                                lambda t: {"value": t("models.retrain")})
            model_status = gr.Markdown(elem_id="model-status")
            job_status = gr.Markdown(elem_id="job-status")
            timer = gr.Timer(2.0)
            seen_job = gr.State(None)

        filters = [f_type, f_grade, f_emotion, f_status, f_tier, f_breached]
        item_outputs = [text_html, details_html, guideline_html, history_html, c_type, c_grade, c_emotion,
                        c_escalation, current]
        queue_outputs = [queue_table, queue_info, *item_outputs]
        queue_inputs = [*filters, f_order, f_stage, skipped, lang]
        labels_in = [current, c_type, c_grade, c_emotion, c_escalation, note, skipped, lang]
        localized_outputs = [user_html, *[component for component, _ in localized]]

        ui.load(start_session, None, [lang, language, *localized_outputs]).then(load_queue, queue_inputs, queue_outputs)
        language.input(lambda value: value, [language], [lang]).then(
            change_language, [lang], localized_outputs).then(load_queue, queue_inputs, queue_outputs)
        refresh.click(load_queue, queue_inputs, queue_outputs)
        for control in (*filters, f_order, f_stage):
            control.input(load_queue, queue_inputs, queue_outputs)
        open_btn.click(open_case, [open_id, lang], [status_md, *item_outputs])
        queue_table.select(select_row, [queue_table, lang], [status_md, *item_outputs])
        key_box.input(key_command, [key_box, c_type, c_grade, c_emotion, c_escalation],
                      [c_type, c_grade, c_emotion, c_escalation], trigger_mode="multiple", show_progress="hidden")
        for button, action in ((confirm_btn, "confirm"), (correct_btn, "correct"), (next_btn, "skip")):
            button.click(decide(action), labels_in, [status_md, skipped, note]).then(
                load_queue, queue_inputs, queue_outputs)
        bulk_btn.click(bulk_confirm, [threshold, *filters, skipped, lang], [status_md]).then(
            load_queue, queue_inputs, queue_outputs)

        dash_outputs = [dash_summary, plot_reviews, plot_agreement, plot_confusion, plot_sla, plot_models,
                        plot_daily, early_warning_html, agree_summary, plot_inter, plot_final, plot_throughput, plot_model_final]
        dash_refresh.click(load_dashboard, [lang], dash_outputs)
        dashboard_tab.select(load_dashboard, [lang], dash_outputs)
        models_outputs = [models_table, version_pick, job_status]
        models_tab.select(load_models, [lang], models_outputs)
        for button, action in ((promote_btn, "promote"), (rollback_btn, "rollback"), (retrain_btn, "retrain")):
            button.click(model_action(action), [version_pick, lang], [model_status]).then(
                load_models, [lang], models_outputs)
        timer.tick(poll_job, [seen_job, lang], [job_status, models_table, version_pick, seen_job])
    return ui


def mount_review_ui(app, get_context: Callable[[], Any], path: str = "/review"):
    """Mount the review UI on ``app`` at ``path`` behind the password log-in."""
    current_user = install_login(app, get_context, path)
    ui = build_review_ui(get_context)
    return gr.mount_gradio_app(app, ui, path=path, auth_dependency=current_user, show_api=False, ssr_mode=False)
