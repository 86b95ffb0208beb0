"""Ingestion: validating what a helpdesk pushes, triaging it, and storing message,
prediction, case, audit entry and "triaged" event in one transaction.

Idempotent on source + external id, also when retries race each other; the
:class:`IngestCoalescer` lets messages that arrive together share one model call and one
transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import queue
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import and_, insert, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload

from triage.clock import MAX_CLOCK_SKEW, as_utc, input_time_utc
from triage.contexts.audit import AuditLog, case_snapshot
from triage.contexts.cases import CaseView, Cases, case_view, prediction_row
from triage.contexts.core import ServiceCore
from triage.contexts.writeback import remember_refs
from triage.errors import Conflict, InvalidInput, ModelError, Unavailable
from triage.policy import Labels
from triage.store.queries import insert_returning_ids
from triage.store.tables import AuditEntry, Case, Message, Prediction as PredictionRow

MAX_BATCH = 1000
log = logging.getLogger(__name__)


NO_NUL = "^[^\\x00]*$"  # PostgreSQL refuses NUL in text; SQLite would store it: refused on both


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """Only what the OpenAPI ``date-time`` format promises: an RFC 3339 string with an offset
    (pydantic alone would also take a number of seconds, or a date without a time)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("needs an RFC 3339 date-time with a timezone offset, e.g. 2026-05-01T10:00:00+08:00")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_rfc3339)]


def refuse_nul(value: str | None) -> str | None:
    """A pydantic validator for free text the database stores."""
    if value is not None and "\x00" in value:
        raise ValueError("contains a NUL character (U+0000)")
    return value


def _text_field(**kwargs):
    return Field(json_schema_extra={"pattern": NO_NUL}, **kwargs)


class MessageIn(BaseModel):
    """One complaint pushed by a helpdesk. Unknown fields are refused, so typos are not lost."""

    model_config = ConfigDict(extra="forbid")

    source: str = _text_field(min_length=1, max_length=64, description="the sending system, e.g. 'zendesk'")
    external_id: str = _text_field(min_length=1, max_length=200, description="the message's id in that system")
    text: str = _text_field(min_length=1, description="the customer's words; masked before storage")
    channel: str | None = _text_field(default=None, max_length=64, description="e.g. 'hotline', 'live_room', 'email'")
    customer_ref: str | None = _text_field(default=None, max_length=200, description="the customer's id upstream")
    received_at: IsoDateTime | None = Field(default=None, description="when the customer sent it (with offset, "
                                         "from 2000-01-01 on); default now")
    product: str | None = _text_field(default=None, max_length=200,
                                      description="SKU or model name; default: found in the text from the catalogue")
    batch: str | None = _text_field(default=None, max_length=100,
                                    description="lot or production batch; default: found in the text (批次/批号/生产日期/lot)")
    order_id: str | None = _text_field(default=None, max_length=200, description="the order complained about")

    @field_validator("source", "external_id", "text", "channel", "customer_ref", "product", "batch", "order_id")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return refuse_nul(value)


class IngestResult(BaseModel):
    """Outcome of one message: its case (new or the one a retry finds), or an error."""

    index: int = 0
    created: bool = False
    case: CaseView | None = None
    error: dict[str, Any] | None = None  # {"field": ..., "message": ...}


def mask_text(text: str) -> str:
    """Normalise and mask personal data the way the triage pipeline does (what gets stored)."""
    from triage.text import mask_personal_data, normalise

    return mask_personal_data(normalise(text)).text


class Ingestion:
    def __init__(self, core: ServiceCore, audit: AuditLog, cases: Cases):
        self.core = core
        self.audit = audit
        self.cases = cases
        self._coalescer: IngestCoalescer | None = None

    def validate(self, raw: MessageIn | dict[str, Any]) -> MessageIn:
        if isinstance(raw, MessageIn):
            msg = raw
        else:
            if not isinstance(raw, dict):
                raise InvalidInput(f"a message must be a JSON object, got {type(raw).__name__}", field="body")
            try:
                msg = MessageIn.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "body"
                raise InvalidInput(f"{field}: {err['msg']}", field=field) from None
        if not msg.text or not msg.text.strip():
            raise InvalidInput("text is empty or only whitespace", field="text")
        limit = self.core.settings.max_text_chars
        if len(msg.text) > limit:
            raise InvalidInput(f"text has {len(msg.text)} characters; the limit is {limit}", field="text")
        if not msg.source.strip() or not msg.external_id.strip():
            field = "source" if not msg.source.strip() else "external_id"
            raise InvalidInput(f"{field} is empty or only whitespace", field=field)
        for name in ("product", "batch", "order_id"):
            value = getattr(msg, name)
            if value is not None and not value.strip():
                raise InvalidInput(f"{name} is empty or only whitespace; leave it out instead", field=name)
        if msg.received_at is not None:
            if input_time_utc(msg.received_at, "received_at") > self.core.now() + MAX_CLOCK_SKEW:
                raise InvalidInput("received_at is in the future", field="received_at")
        return msg

    # ------------------------------------------------------------------ entry points

    def ingest(self, raw: MessageIn | dict[str, Any], actor: str = "api") -> IngestResult:
        """Triage one message into a case; a retry with the same source + external id returns
        the existing case (``created`` False), also when 20 retries race each other.

        With :meth:`start_coalescing`, messages arriving together share one model call and
        one transaction (what makes 50 concurrent clients cheap)."""
        msg = self.validate(raw)
        coalescer = self._coalescer
        if coalescer is not None and coalescer.running:
            return coalescer.submit(msg, actor)
        return self.ingest_valid([(0, msg)], actor)[0]

    async def ingest_async(self, raw: MessageIn | dict[str, Any], actor: str = "api") -> IngestResult:
        """:meth:`ingest` for an event loop: waits on the coalescer without holding a thread."""
        msg = self.validate(raw)
        coalescer = self._coalescer
        if coalescer is not None and coalescer.running:
            return await asyncio.wrap_future(coalescer.submit_nowait(msg, actor))
        return (await asyncio.to_thread(self.ingest_valid, [(0, msg)], actor))[0]

    def ingest_many(self, raws: Sequence[MessageIn | dict[str, Any]], actor: str = "api") -> list[IngestResult]:
        """Triage up to 1,000 messages; each item succeeds or fails on its own."""
        if len(raws) > MAX_BATCH:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH} messages, got {len(raws)}", field="messages")
        if not raws:
            raise InvalidInput("the batch is empty", field="messages")
        results: dict[int, IngestResult] = {}
        valid: list[tuple[int, MessageIn]] = []
        for index, raw in enumerate(raws):
            try:
                valid.append((index, self.validate(raw)))
            except InvalidInput as exc:
                results[index] = IngestResult(index=index, error={"field": exc.field, "message": str(exc)})
        if valid:
            try:
                stored = self.ingest_valid(valid, actor)
            except (Unavailable, ModelError, OperationalError):
                raise  # the database or the model is down: every message fails alike (503)
            except Exception:
                if len(valid) == 1:
                    raise
                stored = [self._ingest_alone(item, actor) for item in valid]  # isolate the failing message
            for result in stored:
                results[result.index] = result
        return [results[i] for i in range(len(raws))]

    def _ingest_alone(self, item: tuple[int, MessageIn], actor: str) -> IngestResult:
        try:
            return self.ingest_valid([item], actor)[0]
        except (Unavailable, ModelError, OperationalError):
            raise
        except Exception as exc:
            log.exception("message %d of a batch could not be stored", item[0])
            return IngestResult(index=item[0], error={"field": None, "message": f"could not be stored: {exc}"})

    def ingest_connector(self, message: dict[str, Any], thread: str | None, refs: dict[str, Any],
                         actor: str) -> IngestResult:
        """Ingest a helpdesk connector's message (``triage.connectors``), keeping its
        conversation/ticket references for write-back; a replay finds both again.

        A helpdesk does not read error bodies, so what the API would refuse is adapted and
        kept instead: text over the limit is cut to it, a send time in the future (a
        helpdesk clock ahead of ours) is replaced by the time of receipt."""
        message = dict(message)
        limit = self.core.settings.max_text_chars
        if isinstance(message.get("text"), str) and len(message["text"]) > limit:
            message["text"] = message["text"][:limit]
        try:
            msg = self.validate(message)
        except InvalidInput as exc:
            if exc.field != "received_at":
                raise
            msg = self.validate({k: v for k, v in message.items() if k != "received_at"})
        remember_refs(self.core.db, msg.source, msg.external_id, thread, refs, self.core.now())
        return self.ingest(msg, actor)

    def warm_up(self) -> None:
        """Load lazily built parts of the pipeline (segmenter, lexicons) before the first
        request instead of during it (about a second)."""
        if self.core.models.loaded:
            self._predict(["预热：摄像头开不了机"])

    def start_coalescing(self, max_batch: int = 64) -> None:
        if self._coalescer is None or not self._coalescer.running:
            self._coalescer = IngestCoalescer(self, max_batch=max_batch)
            self._coalescer.start()

    def stop_coalescing(self) -> None:
        if self._coalescer is not None:
            self._coalescer.stop()
            self._coalescer = None

    # ------------------------------------------------------------------ the work

    def ingest_valid(self, items: list[tuple[int, MessageIn]], actor: str | Sequence[str]) -> list[IngestResult]:
        actors = [actor] * len(items) if isinstance(actor, str) else list(actor)
        actor_of = {index: a for (index, _), a in zip(items, actors)}
        keys = [(m.source, m.external_id) for _, m in items]
        db = self.core.db
        with db.session() as session:
            existing = {k: case_view(c) for k, c in self._existing_cases(session, keys).items()}
        # The first occurrence of a key in this batch creates it; later ones repeat its result.
        first: dict[tuple[str, str], int] = {}
        fresh: list[tuple[int, MessageIn]] = []
        for index, msg in items:
            key = (msg.source, msg.external_id)
            if key not in existing and key not in first:
                first[key] = index
                fresh.append((index, msg))
        created: dict[tuple[str, str], CaseView] = {}
        if fresh:
            predictions, masked = self._predict([m.text for _, m in fresh])
            created = self._store_new([(m, p, actor_of[i], t) for (i, m), p, t in zip(fresh, predictions, masked)])
            missing = [k for k in first if k not in created]
            if missing:  # lost a race to a concurrent request: theirs is the case
                with db.session() as session:
                    existing.update({k: case_view(c) for k, c in self._existing_cases(session, missing).items()})
        results = []
        for index, msg in items:
            key = (msg.source, msg.external_id)
            if key in created and first.get(key) == index:
                results.append(IngestResult(index=index, created=True, case=created[key]))
            elif key in created:
                results.append(IngestResult(index=index, created=False, case=created[key]))
            elif key in existing:
                results.append(IngestResult(index=index, created=False, case=existing[key]))
            else:  # pragma: no cover - the unique key guarantees one of the above
                raise Conflict(f"message {key} could neither be stored nor found; retry")
        return results

    def _existing_cases(self, session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Case]:
        keys = list(set(keys))
        found: dict[tuple[str, str], Case] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            by_source: dict[str, list[str]] = {}
            for source, external_id in chunk:
                by_source.setdefault(source, []).append(external_id)
            conditions = [and_(Message.source == s, Message.external_id.in_(ids)) for s, ids in by_source.items()]
            rows = session.scalars(
                select(Case).join(Case.message).where(or_(*conditions))
                .options(joinedload(Case.message), joinedload(Case.prediction))
            ).all()
            for case in rows:
                found[(case.message.source, case.message.external_id)] = case
        return found

    def _predict(self, texts: list[str]) -> tuple[list[Any], list[str]]:
        """Predictions and the masked texts to store, from one pass of the text pipeline when
        the triager exposes it (the stored text is exactly what the model saw)."""
        triager = self.core.models.triager
        if hasattr(triager, "predict_prepared") and hasattr(triager, "lexicon_dir"):
            from triage.text import prepare

            for index, text_ in enumerate(texts):
                triager.validate(text_, index)
            prepared = [prepare(text_, triager.lexicon_dir) for text_ in texts]
            return triager.predict_prepared(prepared), [p.text for p in prepared]
        return triager.predict_many(texts), [mask_text(text_) for text_ in texts]

    def _store_new(self, entries: list[tuple[MessageIn, Any, str, str]]) -> dict[tuple[str, str], CaseView]:
        """Insert all in one transaction; if a key was taken meanwhile, insert one by one."""
        db = self.core.db
        try:
            with db.session(write=True) as session:
                cases = self._create_many(session, entries)
                return {(c.message.source, c.message.external_id): case_view(c) for c in cases}
        except IntegrityError:
            if len(entries) == 1:
                return {}
        out = {}
        for entry in entries:
            try:
                with db.session(write=True) as session:
                    [case] = self._create_many(session, [entry])
                    out[(case.message.source, case.message.external_id)] = case_view(case)
            except IntegrityError:
                continue
        return out

    def _product_of(self, msg: MessageIn, masked: str) -> dict[str, Any]:
        """Product, batch and order of a new case: the message's fields, else found in its
        (stored, masked) text: the catalogue's longest matching term, the batch patterns."""
        from triage.catalogue import find_batch

        catalogue = self.core.catalogue
        if msg.product:
            product, source = catalogue.resolve(msg.product), "field"
        else:
            found = catalogue.find(masked)
            product, source = (found.sku, "text") if found else (None, None)
        batch = msg.batch.strip() if msg.batch else find_batch(masked)
        return {"product": product, "product_source": source, "batch": batch,
                "order_id": msg.order_id.strip() if msg.order_id else None}

    def _create_many(self, session: Session, entries: Sequence[tuple[MessageIn, Any, str, str]]) -> list[Case]:
        """Insert messages, predictions, cases and their audit entries as bulk INSERTs (one
        statement per table, ids back through RETURNING), then queue "triaged" events.

        The ORM objects are built, routed and scheduled as usual but never enter the session's
        unit of work: at hundreds of messages a second its bookkeeping costs more than the
        database does."""
        core = self.core
        now = core.now()
        cases = []
        for msg, prediction, _actor, masked in entries:
            received = as_utc(msg.received_at) if msg.received_at else now
            message = Message(
                source=msg.source, external_id=msg.external_id, channel=msg.channel,
                customer_ref=msg.customer_ref, text_masked=masked,
                raw_text=msg.text if core.settings.store_raw_text else None,
                received_at=received, created_at=now,
            )
            row = prediction_row(prediction, now)
            labels = Labels(row.dispute_type, row.urgency, row.emotion, row.escalation, row.vulnerable)
            decision = core.policy.decide(labels, message.text_masked, {hit["rule"] for hit in row.rules})
            case = Case(status="open", received_at=received, pauses=[], labels_source="model", created_at=now,
                        updated_at=now, breach_count=0, respond_warned=False, resolve_warned=False,
                        respond_breached=False, resolve_breached=False, first_response_at=None, resolved_at=None,
                        closed_at=None, version=1, followup_warned=False, followup_breached=False,
                        **self._product_of(msg, masked))
            case.message, case.prediction, case.confidence = message, row, row.confidence
            self.cases.apply_decision(case, labels, decision)
            cases.append(case)
        messages = [c.message for c in cases]
        for message, new_id in zip(messages, insert_returning_ids(session, Message, messages)):
            message.id = new_id
        for case in cases:
            case.message_id = case.prediction.message_id = case.message.id
        predictions = [c.prediction for c in cases]
        for row, new_id in zip(predictions, insert_returning_ids(session, PredictionRow, predictions)):
            row.id = new_id
        for case in cases:
            case.prediction_id = case.prediction.id
        for case, new_id in zip(cases, insert_returning_ids(session, Case, cases)):
            case.id = new_id
        session.connection().execute(insert(AuditEntry.__table__), [
            {"at": now, "actor": actor, "action": "case.created", "entity": "case", "entity_id": str(case.id),
             "before": None, "after": case_snapshot(case), "reason": f"triaged by model {case.prediction.model_version}"}
            for case, (_msg, _prediction, actor, _masked) in zip(cases, entries)
        ])
        for case in cases:
            self.cases.emit(session, "triaged", case)
        self.cases.write_back(session, cases)
        return cases


class IngestCoalescer:
    """One thread that ingests the single messages waiting at the same moment as one batch.

    Under load, requests queue while a batch is being triaged and stored; the next batch
    takes all of them (up to ``max_batch``): one model call, one existence query and one
    transaction instead of one each per message. Idle, a message is processed alone at
    once, so no latency is added. A batch that fails is retried item by item, so one bad
    message fails only its own request.
    """

    def __init__(self, ingestion: Ingestion, max_batch: int = 64, timeout_s: float = 60.0):
        self.ingestion = ingestion
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def submit(self, msg: MessageIn, actor: str) -> IngestResult:
        return self.submit_nowait(msg, actor).result(timeout=self.timeout_s)

    def submit_nowait(self, msg: MessageIn, actor: str) -> Future:
        future: Future = Future()
        self._queue.put((msg, actor, future))
        return future

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="ingest-coalescer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._process(batch)
                    return
                batch.append(more)
            self._process(batch)
        # drain what arrived before the stop: never leave a caller waiting
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._process([item])

    def _process(self, batch: list) -> None:
        try:
            results = self.ingestion.ingest_valid([(i, msg) for i, (msg, _, _) in enumerate(batch)],
                                                  [actor for _, actor, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, (Unavailable, ModelError)):
                for _, _, future in batch:  # the database or the model is down: every message fails alike
                    future.set_exception(exc)
                return
            for entry in batch:  # isolate the failing message
                self._process([entry])
            return
        for (_, _, future), result in zip(batch, results):
            future.set_result(result.model_copy(update={"index": 0}))
