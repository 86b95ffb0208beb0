"""Outbound webhooks: the outbox (:mod:`triage.store.outbox`) is filled inside the business
transaction, and this dispatcher job delivers it.

Why an outbox: ingestion commits the case and its "triaged" event together and returns at
once; delivery happens later on another thread, so a slow or dead receiver never blocks or
fails ingestion, and no event is lost when the process restarts. Each delivery is
HMAC-SHA256 signed, retried with exponential backoff, and every attempt is recorded.
Helpdesk write-back calls (queued by :mod:`triage.contexts.writeback`) travel through the same outbox: a row with
a ``connector`` is sent with its own method and the connector's token instead of a signature.

Receivers are served concurrently: each receiver with due deliveries (a webhook URL, or a
helpdesk for write-back rows) gets its own background job (through the jobs runner) that
sends them in order, so a hanging receiver delays only its own deliveries. Several processes may run dispatchers against one database:
a delivery is claimed just before it is sent with a conditional UPDATE (only one process's
claim matches), so it is sent by one of them at a time.

Delivery is at-least-once: a crash or a database outage after a receiver answered and
before the result was recorded sends the delivery again when its claim expires. The
``X-Triage-Delivery`` header and ``delivery_id`` field are the outbox row's id, the same on
every attempt, so receivers de-duplicate on it.

Signature: ``X-Triage-Signature: sha256=<hex>`` over ``<X-Triage-Timestamp>.<raw body>``
with the shared secret (``TRIAGE_WEBHOOK_SECRET``); receivers should also reject stale
timestamps. See :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import threading
import time
from datetime import timedelta

import httpx
from sqlalchemy import and_, or_, select, update

from triage.clock import utcnow
from triage.jobs.runner import DEFAULT_RUNNER, JobHandle, JobRunner
from triage.store.database import Database
from triage.store.tables import WebhookAttempt, WebhookDelivery

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A delivery that could not be prepared (e.g. a helpdesk read before a write failed):
    recorded as a failed attempt and retried like a failed send."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300,
                     now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse replays older than ``max_age_s``."""
    try:
        age = (now if now is not None else time.time()) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookDispatcher:
    """Delivers due outbox rows; ``run_once`` for tests and catch-up, ``start`` for a thread."""

    def __init__(
        self,
        db: Database,
        secret: str,
        *,
        max_attempts: int = 8,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 900.0,
        timeout_s: float = 5.0,
        poll_interval_s: float = 1.0,
        claim_s: float = 60.0,
        batch: int = 50,
        client: httpx.Client | None = None,
        now=utcnow,
        runner: JobRunner = DEFAULT_RUNNER,
        helpdesk=None,
    ):
        self.db = db
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.poll_interval_s = poll_interval_s
        self.claim_s = claim_s
        self.batch = batch
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.now = now
        self.runner = runner
        self._job: JobHandle | None = None
        self.timeout_s = timeout_s
        self._senders: dict[str, JobHandle] = {}  # receiver -> the job sending to it now
        self._lock = threading.Lock()
        # credentials and request bodies for helpdesk write-back rows (triage.jobs.helpdesk.HelpdeskAccess)
        self.helpdesk = helpdesk

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after ``attempts`` failures: base * 2^(n-1), capped."""
        return timedelta(seconds=min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, attempts - 1)))

    def _due(self) -> dict[str, list[int]]:
        """Up to ``batch`` due, unclaimed deliveries by receiver, leaving out receivers this
        process is still sending to (their rows wait for that sender). A receiver is a webhook
        URL, or a whole helpdesk for write-back rows (its calls for one case keep their order)."""
        now = self.now()
        with self._lock:
            busy = {key for key, handle in self._senders.items() if handle.alive}
        busy_helpdesks = [key.removeprefix("helpdesk:") for key in busy if key.startswith("helpdesk:")]
        busy_urls = [key for key in busy if not key.startswith("helpdesk:")]
        with self.db.session() as session:
            rows = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.url, WebhookDelivery.connector)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                       or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
                       or_(and_(WebhookDelivery.connector.is_(None), WebhookDelivery.url.not_in(busy_urls)),
                           and_(WebhookDelivery.connector.is_not(None),
                                WebhookDelivery.connector.not_in(busy_helpdesks))))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(self.batch)
            ).all()
        by_receiver: dict[str, list[int]] = {}
        for delivery_id, url, connector in rows:
            by_receiver.setdefault(f"helpdesk:{connector}" if connector else url, []).append(delivery_id)
        return by_receiver

    def _claim(self, delivery_id: int) -> bool:
        """Claim one delivery just before sending it: a conditional UPDATE, so of several
        processes only one gets it, and the claim outlasts a single attempt (``claim_s``)."""
        now = self.now()
        with self.db.session(write=True) as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                       or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now))
                .values(claimed_until=now + timedelta(seconds=self.claim_s))
            )
            return result.rowcount == 1

    def _send_all(self, delivery_ids: list[int], sent: list[int]) -> None:
        """One receiver's due deliveries, in order, each claimed right before it is sent."""
        for delivery_id in delivery_ids:
            try:
                if self._claim(delivery_id):
                    sent.append(delivery_id)
                    self._deliver(delivery_id)
            except Exception:  # a broken row must not stop the others; it is retried after the claim expires
                log.exception("webhook delivery %s crashed", delivery_id)

    def _deliver(self, delivery_id: int) -> bool:
        with self.db.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            url, event, payload = delivery.url, delivery.event, delivery.payload
            connector, method = delivery.connector, delivery.method or "POST"
        started = time.perf_counter()
        status_code, error = None, None
        try:
            if connector:  # a helpdesk REST call with the connector's token
                if self.helpdesk is None:
                    raise DeliveryError(f"this dispatcher has no credentials for connector {connector!r}")
                headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
                           "User-Agent": "complaint-triage-writeback/1", **self.helpdesk.headers(connector)}
                body = json.dumps(self.helpdesk.body(connector, url, payload,
                                                     lambda u: self.client.get(u, headers=headers)),
                                  ensure_ascii=False, separators=(",", ":")).encode()
            else:
                body = json.dumps({"delivery_id": delivery_id, **payload}, ensure_ascii=False,
                                  separators=(",", ":")).encode()
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json; charset=utf-8",
                    "X-Triage-Event": event,
                    "X-Triage-Delivery": str(delivery_id),
                    "X-Triage-Timestamp": timestamp,
                    "X-Triage-Signature": sign(self.secret, timestamp, body),
                    "User-Agent": "complaint-triage-webhooks/1",
                }
            response = self.client.request(method, url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
        except DeliveryError as exc:  # e.g. a write-back row whose connector has no token: retried, recorded
            error = str(exc)[:500]
        duration_ms = (time.perf_counter() - started) * 1000
        ok = error is None
        now = self.now()
        with self.db.session(write=True) as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            session.add(WebhookAttempt(delivery_id=delivery_id, attempted_at=now, status_code=status_code,
                                       error=error, duration_ms=duration_ms))
            delivery.attempts += 1
            delivery.claimed_until = None
            delivery.last_error = error
            if ok:
                delivery.status = "delivered"
                delivery.delivered_at = now
            elif delivery.attempts >= self.max_attempts:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = now + self.backoff(delivery.attempts)
        if not ok:
            log.warning("webhook %s to %s failed (attempt %s): %s", delivery_id, url, delivery.attempts, error)
        return ok

    def run_once(self, wait: bool = True) -> int:
        """Deliver what is due now, each receiver on its own background job so that a slow
        one delays only its own deliveries. ``wait``: return when all are sent, with how many
        deliveries were attempted; otherwise at once, with how many receivers were started."""
        started = []
        for receiver, delivery_ids in self._due().items():
            sent: list[int] = []
            handle = self.runner.submit(f"webhook-sender:{receiver}",
                                        lambda ids=delivery_ids, out=sent: self._send_all(ids, out))
            with self._lock:
                self._senders[receiver] = handle
            started.append((handle, sent))
        if not wait:
            return len(started)
        for handle, _ in started:
            handle.join()
        return sum(len(sent) for _, sent in started)

    def dispatch_claimed(self, enqueue, per_task: int = 10) -> int:
        """For a task queue: claim the due deliveries in groups of up to ``per_task`` per
        receiver (in order) and hand each group to ``enqueue(ids)``; returns how many were
        claimed. A group whose task is lost is found again when its claims expire
        (``claim_s``), so the outbox, not the broker, decides what is left to send."""
        claimed_total = 0
        for delivery_ids in self._due().values():
            for start in range(0, len(delivery_ids), per_task):
                claimed = [i for i in delivery_ids[start:start + per_task] if self._claim(i)]
                if claimed:
                    enqueue(claimed)
                    claimed_total += len(claimed)
        return claimed_total

    def send_claimed(self, delivery_ids: list[int]) -> int:
        """One attempt for each delivery of a ``dispatch_claimed`` group that is still pending
        and claimed (a group run again after its claims expired and were taken by a newer
        group sends nothing twice at once: the newer claim is checked here)."""
        sent = 0
        now = self.now()
        for delivery_id in delivery_ids:
            with self.db.session(write=True) as session:
                # extend our claim for this attempt; refuse rows delivered, failed or unclaimed meanwhile
                result = session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                           WebhookDelivery.claimed_until.is_not(None), WebhookDelivery.claimed_until >= now)
                    .values(claimed_until=self.now() + timedelta(seconds=self.claim_s)))
                if result.rowcount != 1:
                    continue
            try:
                self._deliver(delivery_id)
                sent += 1
            except Exception:  # a broken row must not stop the others; retried after the claim expires
                log.exception("webhook delivery %s crashed", delivery_id)
        return sent

    def _tick(self) -> int:
        try:
            return self.run_once(wait=False)
        except Exception as exc:  # database down: try again later, keep the job alive
            print(f"webhook dispatcher: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 0

    def start(self) -> None:
        if self._job is None or not self._job.alive:
            self._job = self.runner.every("webhook-dispatcher", self.poll_interval_s, self._tick)

    def stop(self, timeout: float = 10.0) -> None:
        if self._job is not None:
            self._job.stop(timeout)
            self._job = None

    def close(self) -> None:
        self.stop()
        with self._lock:
            senders = list(self._senders.values())
            self._senders.clear()
        for handle in senders:  # let deliveries in flight finish (each is bounded by timeout_s)
            handle.join(self.timeout_s * 2)
        self.client.close()
