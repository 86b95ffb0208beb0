"""Write-back: our labels and priority onto the helpdesk's conversation or ticket.

After a case is triaged, and whenever its labels change (a reviewer's correction, a regrade
by a new model), the connector's REST calls go into the webhook outbox in the same
transaction; the dispatcher job (:mod:`triage.jobs.webhooks`, with
:class:`triage.jobs.helpdesk.HelpdeskAccess`) delivers them with the connector's API token,
retried with backoff, every attempt recorded. A slow or failing helpdesk therefore
never slows ingestion.

A conversation (Chatwoot) or ticket (Zammad) can hold several customer messages, each its
own case: the thread shows the labels of its most urgent open case, so a calm "thanks" after
an angry complaint does not lower the ticket's priority.

Calls, from the helpdesks' documented REST APIs:

* Chatwoot: ``POST /api/v1/accounts/{account}/conversations/{id}/labels`` with
  ``{"labels": [...]}`` (it replaces the conversation's labels, so the dispatcher reads them
  with ``GET`` just before and keeps those without our prefix) and ``POST .../toggle_priority``
  with ``{"priority": ...}``; header ``api_access_token``.
* Zammad: ``POST /api/v1/tags/add`` and ``DELETE /api/v1/tags/remove`` with
  ``{"item", "object": "Ticket", "o_id"}`` (one tag per call: every current tag is added, the
  thread's previous tags no longer current are removed) and ``PUT /api/v1/tickets/{id}`` with
  ``{"priority_id": ...}``; header ``Authorization: Token token=...``.

A newer call for the same thing (labels, priority, one tag) supersedes an older one still
waiting in the outbox, so a retried stale call never overwrites a correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from triage.connectors import CONNECTORS
from triage.store.tables import Case, ConnectorRef, Message, WebhookDelivery

OPEN = ("open", "pending")
LABEL_FIELDS = ("dispute_type", "grade", "priority_grade", "emotion", "escalation", "vulnerable")


@dataclass(frozen=True)
class HelpdeskCall:
    method: str
    url: str
    body: dict[str, Any]
    slot: str  # what the call sets; a newer call for the same slot supersedes a pending one


def tags_for(prefix: str, state: dict[str, Any]) -> list[str]:
    """``triage:quality``, ``triage:grade-1``, ``triage:angry`` (or ``upset``; nothing when
    calm), ``triage:escalation``, ``triage:vulnerable``."""
    tags = [f"{prefix}{state['dispute_type']}", f"{prefix}grade-{state['grade']}"]
    if state["emotion"] != "calm":
        tags.append(f"{prefix}{state['emotion']}")
    if state["escalation"]:
        tags.append(f"{prefix}escalation")
    if state["vulnerable"]:
        tags.append(f"{prefix}vulnerable")
    return tags


def chatwoot_calls(settings, refs: dict[str, Any], state: dict[str, Any]) -> list[HelpdeskCall]:
    base = (f"{settings.chatwoot_base_url.rstrip('/')}/api/v1/accounts/{refs['account_id']}"
            f"/conversations/{refs['conversation_id']}")
    calls = [HelpdeskCall("POST", f"{base}/labels", {"labels": tags_for(settings.chatwoot_tag_prefix, state)}, "labels")]
    priority = settings.chatwoot_priority_map.get(state["priority_grade"])
    if priority is not None:
        calls.append(HelpdeskCall("POST", f"{base}/toggle_priority", {"priority": priority}, "priority"))
    return calls


def zammad_calls(settings, refs: dict[str, Any], state: dict[str, Any],
                 previous: dict[str, Any] | None) -> list[HelpdeskCall]:
    base = f"{settings.zammad_base_url.rstrip('/')}/api/v1"
    ticket = int(refs["ticket_id"]) if str(refs["ticket_id"]).isdigit() else refs["ticket_id"]
    prefix = settings.zammad_tag_prefix
    current = tags_for(prefix, state)
    stale = [t for t in tags_for(prefix, previous) if t not in current] if previous else []
    calls = [HelpdeskCall("DELETE", f"{base}/tags/remove", {"item": t, "object": "Ticket", "o_id": ticket}, f"tag:{t}")
             for t in stale]
    calls += [HelpdeskCall("POST", f"{base}/tags/add", {"item": t, "object": "Ticket", "o_id": ticket}, f"tag:{t}")
              for t in current]
    priority_id = settings.zammad_priority_map.get(state["priority_grade"])
    if priority_id is not None:
        calls.append(HelpdeskCall("PUT", f"{base}/tickets/{ticket}", {"priority_id": priority_id}, "priority"))
    return calls


def slot_of(delivery: WebhookDelivery) -> str:
    body = delivery.payload or {}
    if "item" in body:
        return f"tag:{body['item']}"
    return "labels" if delivery.url.endswith("/labels") else "priority"


def _state(case: Case) -> dict[str, Any]:
    return {name: getattr(case, name) for name in LABEL_FIELDS}


def _most_urgent(states: Iterable[tuple[int, str, dict[str, Any]]]) -> dict[str, Any] | None:
    """The state of the thread: its most urgent open case (lowest priority grade, then grade,
    then the newest); None when the thread has no open case."""
    open_ = [(s["priority_grade"], s["grade"], -case_id, s) for case_id, status, s in states if status in OPEN]
    return min(open_, key=lambda t: t[:3])[3] if open_ else None


def enqueue_writeback(session: Session, settings, cases: Sequence[Case], now: datetime,
                      before: dict[int, dict[str, Any]] | None = None) -> int:
    """Queue the write-back calls for the threads of ``cases`` (in the caller's transaction).

    ``before``: for a relabelled case, its labels before the change (``case_snapshot``), so
    Zammad tags that no longer apply are removed. Returns how many calls were queued."""
    wanted = [c for c in cases if c.message is not None and c.message.source in CONNECTORS
              and settings.writeback_enabled(c.message.source)]
    if not wanted:
        return 0
    before = before or {}
    keys = {(c.message.source, c.message.external_id) for c in wanted}
    refs = session.scalars(select(ConnectorRef).where(or_(*[
        and_(ConnectorRef.source == s, ConnectorRef.external_id == e) for s, e in keys]))).all()
    threads = {(r.source, r.thread): r for r in refs if r.thread}
    changed_ids = {c.id for c in wanted}
    queued = 0
    for (source, thread), ref in threads.items():
        rows = session.execute(
            select(Case.id, Case.status, *[getattr(Case, n) for n in LABEL_FIELDS], ConnectorRef.refs)
            .join(Message, Case.message_id == Message.id)
            .join(ConnectorRef, and_(ConnectorRef.source == Message.source, ConnectorRef.external_id == Message.external_id))
            .where(ConnectorRef.source == source, ConnectorRef.thread == thread)
            .order_by(Case.id)
        ).all()
        now_states = [(r.id, r.status, {n: getattr(r, n) for n in LABEL_FIELDS}) for r in rows]
        state = _most_urgent(now_states)
        if state is None:  # nothing open in the thread: show the case that just changed
            state = next(s for case_id, _status, s in reversed(now_states) if case_id in changed_ids)
        # The thread as it looked before: a new case absent, a relabelled one with its old labels.
        was = [(cid, st, {n: before[cid][n] for n in LABEL_FIELDS} if cid in before else s)
               for cid, st, s in now_states if cid not in changed_ids or cid in before]
        previous = _most_urgent(was) or next((s for cid, _st, s in was if cid in before), None)
        latest_refs = rows[-1].refs if rows else ref.refs
        if source == "chatwoot":
            calls = chatwoot_calls(settings, latest_refs, state)
        else:
            calls = zammad_calls(settings, latest_refs, state, previous)
        queued += _enqueue(session, source, calls, [cid for cid, _st, _s in now_states if cid in changed_ids][0], now)
    return queued


def _enqueue(session: Session, connector: str, calls: list[HelpdeskCall], case_id: int, now: datetime) -> int:
    urls = {call.url for call in calls}
    pending = session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.connector == connector, WebhookDelivery.status == "pending",
        WebhookDelivery.url.in_(urls | _sibling_urls(urls)))).all()
    slots = {call.slot for call in calls}
    stale = [d.id for d in pending if slot_of(d) in slots and _same_target(d, calls)]
    if stale:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(stale), WebhookDelivery.status == "pending")
                        .values(status="superseded", last_error="superseded by a newer write-back"))
    for call in calls:
        session.add(WebhookDelivery(event="writeback", case_id=case_id, url=call.url, payload=call.body,
                                    status="pending", attempts=0, next_attempt_at=now, created_at=now,
                                    connector=connector, method=call.method))
    return len(calls)


def _sibling_urls(urls: set[str]) -> set[str]:
    """A tag's add and remove supersede each other."""
    out = set()
    for url in urls:
        if url.endswith("/tags/add"):
            out.add(url[: -len("add")] + "remove")
        elif url.endswith("/tags/remove"):
            out.add(url[: -len("remove")] + "add")
    return out


def _same_target(delivery: WebhookDelivery, calls: list[HelpdeskCall]) -> bool:
    """The pending call is about the same conversation/ticket as one of ``calls``."""
    body = delivery.payload or {}
    if "o_id" in body:  # Zammad tags: the ticket is in the body
        return any(call.body.get("o_id") == body["o_id"] for call in calls)
    return delivery.url in {call.url for call in calls}


def remember_refs(db, source: str, external_id: str, thread: str | None, refs: dict[str, Any],
                  now: datetime) -> None:
    """Store a connector message's references once (before its case, so write-back finds them)."""
    from sqlalchemy.exc import IntegrityError

    with db.session() as session:
        if session.scalar(select(ConnectorRef.id).where(ConnectorRef.source == source,
                                                        ConnectorRef.external_id == external_id)):
            return
    try:
        with db.session(write=True) as session:
            session.add(ConnectorRef(source=source, external_id=external_id, thread=thread, refs=refs, created_at=now))
    except IntegrityError:  # a concurrent delivery of the same message stored them
        pass
