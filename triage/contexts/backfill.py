"""Backfills: a large archive of past messages triaged in chunks (``triage backfill``).

The archive is loaded once into ``backfill_chunks`` rows (one transaction per chunk, so a
crash while loading resumes at the first missing chunk); each chunk is then one task for
the workers (or for this process when no broker is configured). A chunk goes through
:meth:`Ingestion.ingest_many` (bulk INSERTs, idempotent on source + external id), and is
marked done with its counts afterwards: a chunk run twice (a worker killed after the insert
and before the mark) finds its messages stored and counts them as existing, so nothing is
stored twice.

The database is the source of truth for what is left: :meth:`Backfills.lease_due` hands
out chunks that are not done and not leased (a lease is how long a queued task may take),
so a task lost with a dead worker or a restarted broker is simply queued again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update

from triage.contexts.audit import AuditLog
from triage.contexts.core import ServiceCore
from triage.contexts.ingestion import MAX_BATCH, Ingestion
from triage.errors import InvalidInput, NotFound
from triage.store.tables import BackfillChunk, BackfillJob

ARCHIVE_FIELDS = ("source", "external_id", "text", "channel", "customer_ref", "received_at", "product",
                  "batch", "order_id")


@dataclass
class BackfillProgress:
    job_id: int
    name: str
    status: str
    total_chunks: int
    done_chunks: int
    total_messages: int
    created: int
    existing: int
    failed: int

    @property
    def done_messages(self) -> int:
        return self.created + self.existing + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "done_messages": self.done_messages}


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """The messages of a ``.jsonl`` (one JSON object a line) or ``.csv`` (a header row with
    the message fields) archive; empty cells and unknown CSV columns are dropped, a bad JSON
    line is an InvalidInput naming its line."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise InvalidInput(f"{path.name}: a backfill archive is a .jsonl or .csv file", field="archive")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            missing = {"source", "external_id", "text"} - set(reader.fieldnames or ())
            if missing:
                raise InvalidInput(f"{path.name}: the CSV header lacks {sorted(missing)}", field="archive")
            for row in reader:
                yield {k: v for k, v in row.items() if k in ARCHIVE_FIELDS and v not in (None, "")}
            return
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path.name} line {number}: not JSON ({exc.msg})", field="archive") from None
            if not isinstance(record, dict):
                raise InvalidInput(f"{path.name} line {number}: not a JSON object", field="archive")
            yield record


def fingerprint(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}:{chunk_size}"


def _chunks(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Backfills:
    def __init__(self, core: ServiceCore, audit: AuditLog, ingestion: Ingestion):
        self.core = core
        self.audit = audit
        self.ingestion = ingestion

    def load(self, path: Path, chunk_size: int = 500, actor: str = "backfill") -> int:
        """Create (or find again) the backfill job of the archive at ``path`` and store its
        chunks; returns the job id. Idempotent: the same archive and chunk size resume the
        same job, storing only the chunks a crash left missing."""
        if not 1 <= chunk_size <= MAX_BATCH:
            raise InvalidInput(f"the chunk size is 1 to {MAX_BATCH}, got {chunk_size}", field="chunk_size")
        if path.suffix.lower() not in (".jsonl", ".csv"):
            raise InvalidInput(f"{path.name}: a backfill archive is a .jsonl or .csv file", field="archive")
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file", field="archive")
        key = fingerprint(path, chunk_size)
        db = self.core.db
        with db.session(write=True) as session:
            job = session.scalar(select(BackfillJob).where(BackfillJob.fingerprint == key))
            if job is None:
                job = BackfillJob(name=path.name[:500], fingerprint=key, status="loading", chunk_size=chunk_size,
                                  total_chunks=0, total_messages=0, actor=actor, created_at=self.core.now())
                session.add(job)
                session.flush()
                self.audit.write(session, actor, "backfill.started", "backfill", str(job.id), None,
                                 {"archive": job.name, "chunk_size": chunk_size})
            job_id, status = job.id, job.status
        if status != "loading":
            return job_id
        with db.session() as session:
            have = set(session.scalars(select(BackfillChunk.seq).where(BackfillChunk.job_id == job_id)))
        total = chunks = 0
        for seq, chunk in enumerate(_chunks(read_archive(path), chunk_size)):
            total += len(chunk)
            chunks += 1
            if seq in have:
                continue
            with db.session(write=True) as session:
                session.add(BackfillChunk(job_id=job_id, seq=seq, messages=chunk, attempts=0, created=0,
                                          existing=0, failed=0))
        with db.session(write=True) as session:
            session.execute(update(BackfillJob).where(BackfillJob.id == job_id, BackfillJob.status == "loading")
                            .values(status="running", total_chunks=chunks, total_messages=total))
        self._finish_if_done(job_id)
        return job_id

    def lease_due(self, lease_s: float, job_id: int | None = None, limit: int = 1000) -> list[tuple[int, int]]:
        """Chunks (job id, seq) not done and not leased, each leased now for ``lease_s``
        (a conditional UPDATE, so two callers never lease the same chunk at once)."""
        now = self.core.now()
        query = (select(BackfillChunk.job_id, BackfillChunk.seq)
                 .join(BackfillJob, BackfillJob.id == BackfillChunk.job_id)
                 .where(BackfillJob.status == "running", BackfillChunk.done_at.is_(None),
                        or_(BackfillChunk.queued_until.is_(None), BackfillChunk.queued_until < now))
                 .order_by(BackfillChunk.job_id, BackfillChunk.seq).limit(limit))
        if job_id is not None:
            query = query.where(BackfillChunk.job_id == job_id)
        leased = []
        with self.core.db.session(write=True) as session:
            for job, seq in session.execute(query).all():
                result = session.execute(
                    update(BackfillChunk)
                    .where(BackfillChunk.job_id == job, BackfillChunk.seq == seq, BackfillChunk.done_at.is_(None),
                           or_(BackfillChunk.queued_until.is_(None), BackfillChunk.queued_until < now))
                    .values(queued_until=now + timedelta(seconds=lease_s)))
                if result.rowcount == 1:
                    leased.append((job, seq))
        return leased

    def pending_chunks(self, job_id: int) -> list[int]:
        """The chunks of a job not done yet, in order (a resumed in-process backfill)."""
        with self.core.db.session() as session:
            return list(session.scalars(select(BackfillChunk.seq).where(BackfillChunk.job_id == job_id,
                                                                        BackfillChunk.done_at.is_(None))
                                        .order_by(BackfillChunk.seq)))

    def run_chunk(self, job_id: int, seq: int) -> bool:
        """Triage one chunk (a task); False when it was already done."""
        with self.core.db.session(write=True) as session:
            chunk = session.scalar(select(BackfillChunk).where(BackfillChunk.job_id == job_id,
                                                               BackfillChunk.seq == seq))
            if chunk is None:
                raise NotFound(f"backfill {job_id} has no chunk {seq}")
            if chunk.done_at is not None:
                return False
            chunk.attempts += 1
            messages, actor = chunk.messages, f"backfill:{job_id}"
        results = self.ingestion.ingest_many(messages, actor=actor)
        created = sum(1 for r in results if r.error is None and r.created)
        existing = sum(1 for r in results if r.error is None and not r.created)
        errors = [{"index": r.index, **r.error} for r in results if r.error is not None]
        with self.core.db.session(write=True) as session:
            session.execute(update(BackfillChunk)
                            .where(BackfillChunk.job_id == job_id, BackfillChunk.seq == seq,
                                   BackfillChunk.done_at.is_(None))
                            .values(created=created, existing=existing, failed=len(errors),
                                    errors=errors or None, done_at=self.core.now()))
        self._finish_if_done(job_id)
        return True

    def _finish_if_done(self, job_id: int) -> None:
        with self.core.db.session(write=True) as session:
            left = session.scalar(select(func.count()).select_from(BackfillChunk)
                                  .where(BackfillChunk.job_id == job_id, BackfillChunk.done_at.is_(None)))
            if left:
                return
            finished = session.execute(update(BackfillJob)
                                       .where(BackfillJob.id == job_id, BackfillJob.status == "running")
                                       .values(status="done", finished_at=self.core.now()))
            if finished.rowcount == 1:
                job = session.get(BackfillJob, job_id)
                self.audit.write(session, job.actor, "backfill.finished", "backfill", str(job_id), None,
                                 {"archive": job.name, "messages": job.total_messages})

    def progress(self, job_id: int) -> BackfillProgress:
        with self.core.db.session() as session:
            job = session.get(BackfillJob, job_id)
            if job is None:
                raise NotFound(f"backfill job {job_id} does not exist")
            done, created, existing, failed = session.execute(
                select(func.count(BackfillChunk.done_at), func.coalesce(func.sum(BackfillChunk.created), 0),
                       func.coalesce(func.sum(BackfillChunk.existing), 0),
                       func.coalesce(func.sum(BackfillChunk.failed), 0))
                .where(BackfillChunk.job_id == job_id, BackfillChunk.done_at.is_not(None))).one()
            return BackfillProgress(job_id, job.name, job.status, job.total_chunks, int(done),
                                    job.total_messages, int(created), int(existing), int(failed))

    def errors(self, job_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The first refused messages of a backfill (chunk, index in it, reason)."""
        out: list[dict[str, Any]] = []
        with self.core.db.session() as session:
            for seq, errors in session.execute(select(BackfillChunk.seq, BackfillChunk.errors)
                                               .where(BackfillChunk.job_id == job_id,
                                                      BackfillChunk.failed > 0).order_by(BackfillChunk.seq)):
                out.extend({"chunk": seq, **e} for e in errors or [])
                if len(out) >= limit:
                    break
        return out[:limit]

