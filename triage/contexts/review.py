"""Human review: the queue, reviewers' decisions, message history and the dashboard numbers.

Both adapters (the Gradio review UI and the HTTP API) call these functions; nothing here
knows about either. A correction goes through the labels context (:mod:`triage.contexts.labels`) so deadlines,
routing, audit entries and webhooks follow exactly the rules of ingestion. Decisions use
optimistic concurrency: the reviewer sends the case ``version`` they looked at, and if
someone else changed the case since, they get :class:`~triage.errors.Conflict` instead of
silently overwriting the other decision.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import case as sql_case
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import joinedload

from triage.agreement import ReviewedCase, agreement_report, sampled_for_double_review
from triage.contexts.claims import ReviewClaims, claim_view
from triage.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from triage.store.database import Database
from triage.store.tables import (
    QUEUE_STATUSES,
    QUEUE_WHERE,
    RUNNING_DEADLINE,
    AuditEntry,
    Case,
    DoubleReview,
    Prediction,
    ReviewClaim,
    ReviewDecision,
    SlaEvent,
    utcnow,
)
from triage.taxonomy import DISPUTE_TYPES, HEADS, validate_label

OPEN_STATUSES = QUEUE_STATUSES
ORDERS = ("deadline", "uncertainty", "learning")
LEARNING_MEMORY = 500  # the latest final decisions whose dispute types the learning order spreads over
ACTIONS = ("confirm", "correct", "skip")
STAGES = ("first", "second", "adjudication")  # what a case waits for
CLAIM_STAGES = ("any", *STAGES)
PENDING_DOUBLE = ("second", "adjudication")
SUPERVISOR_ROLES = ("supervisor", "admin")  # who adjudicates a double review's disagreement
CASE_LABEL_FIELDS = {"dispute_type": "dispute_type", "urgency": "grade", "emotion": "emotion", "escalation": "escalation"}


@dataclass
class QueueFilters:
    """Which unreviewed cases to show; ``None`` means any."""

    dispute_type: str | None = None
    grade: int | None = None
    emotion: str | None = None
    status: str | None = None
    tier: str | None = None
    breached: bool | None = None
    exclude: list[int] = field(default_factory=list)  # case ids this reviewer skipped

    def validate(self) -> "QueueFilters":
        try:
            if self.dispute_type:
                validate_label("dispute_type", self.dispute_type)
            if self.grade is not None:
                self.grade = validate_label("urgency", self.grade)
            if self.emotion:
                validate_label("emotion", self.emotion)
        except ValueError as exc:
            raise InvalidInput(f"queue filter: {exc}") from None
        if self.status and self.status not in OPEN_STATUSES:
            raise InvalidInput(f"queue filter: status must be one of {list(OPEN_STATUSES)}, got {self.status!r}")
        return self


def case_labels(case: Case) -> dict[str, Any]:
    """The case's current labels, keyed by head."""
    return {head: getattr(case, column) for head, column in CASE_LABEL_FIELDS.items()}


def next_deadline(case: Case) -> datetime | None:
    """The deadline that runs now: respond until the first response, then resolve."""
    return case.respond_due_at if case.first_response_at is None else case.resolve_due_at


def queue_item(case: Case, now: datetime | None = None) -> dict[str, Any]:
    """Everything the review screen and the API show for one case."""
    now = now or utcnow()
    prediction = case.prediction
    deadline = next_deadline(case)
    return {
        "case_id": case.id,
        "version": case.version,
        "message_id": case.message_id,
        "text": case.message.text_masked,
        "labels": case_labels(case),
        "labels_source": case.labels_source,
        "vulnerable": case.vulnerable,
        "status": case.status,
        "tier": case.tier,
        "teams": list(case.teams or []),
        "hints": list(case.hints or []),
        "received_at": case.received_at.isoformat(),
        "respond_due_at": case.respond_due_at.isoformat() if case.respond_due_at else None,
        "resolve_due_at": case.resolve_due_at.isoformat() if case.resolve_due_at else None,
        "next_deadline": deadline.isoformat() if deadline else None,
        "seconds_left": round((deadline - now).total_seconds()) if deadline else None,
        "breached": case.breached,
        "confidence": prediction.confidence if prediction else None,
        "model_version": prediction.model_version if prediction else None,
        "prediction": (
            {head: getattr(prediction, head) for head in HEADS} if prediction else None
        ),
        "scores": prediction.scores if prediction else {},
        "explanation": prediction.explanation if prediction else {},
        "rules": prediction.rules if prediction else [],
    }


class ReviewService:
    """Queue, claims, decisions (single and double review), history, dashboard and agreement
    over one database.

    ``service`` is the :class:`triage.service.TriageService` (for corrections, roles, the
    clock and the settings); ``learning`` the optional :class:`models.learning.LearningLoop`
    told about final decisions so it can retrain after enough of them.
    """

    def __init__(self, db: Database, service=None, learning=None):
        self.db = db
        self.service = service
        self.learning = learning
        self.claims = ReviewClaims(db)

    def now(self) -> datetime:
        return self.service.now() if self.service is not None else utcnow()

    def _setting(self, name: str, default: float) -> float:
        return float(getattr(getattr(self.service, "settings", None), name, default))

    # ----------------------------------------------------------------- queue

    def _queue_query(self, filters: QueueFilters, order: str, stage: str = "first", reviewer: str | None = None,
                     now: datetime | None = None, include_held: bool = False):
        """Cases waiting for a ``stage`` review (first: the only or first review; second: a
        blind second review by someone else than the first reviewer; adjudication: by
        neither of the two), without those another reviewer holds (anyone, without
        ``reviewer``)."""
        if order not in ORDERS:
            raise InvalidInput(f"order must be one of {list(ORDERS)}, got {order!r}")
        if stage not in STAGES:
            raise InvalidInput(f"stage must be one of {list(STAGES)}, got {stage!r}", field="stage")
        filters.validate()
        if stage == "first":
            # the predicate of the queue's partial indexes (triage/store/tables.py)
            pending = select(DoubleReview.case_id).where(DoubleReview.stage.in_(PENDING_DOUBLE))
            query = select(Case).where(text(QUEUE_WHERE), Case.id.not_in(pending))
        else:
            query = select(Case).join(DoubleReview, DoubleReview.case_id == Case.id).where(DoubleReview.stage == stage)
            if reviewer:
                query = query.where(DoubleReview.first_reviewer != reviewer)
                if stage == "adjudication":
                    query = query.where(DoubleReview.second_reviewer != reviewer)
        # Filters on columns with an index of their own are written so that no index serves
        # them (x + 0, x || ''): without statistics SQLite would otherwise pick that index,
        # whose rows span all history, over the queue's partial index (then sort them all).
        if filters.dispute_type:
            query = query.where(Case.dispute_type.concat("") == filters.dispute_type)
        if filters.grade is not None:
            query = query.where(Case.grade + 0 == filters.grade)
        if filters.emotion:
            query = query.where(Case.emotion == filters.emotion)
        if filters.status:
            query = query.where(Case.status == filters.status)
        if filters.tier:
            query = query.where(Case.tier.concat("") == filters.tier)
        if filters.breached is not None:
            breached = Case.respond_breached | Case.resolve_breached
            query = query.where(breached if filters.breached else ~breached)
        if filters.exclude:
            query = query.where(Case.id.not_in(filters.exclude))
        if include_held:
            return query
        return query.where(Case.id.not_in(ReviewClaims.held_by_others(reviewer, now or self.now())))

    @staticmethod
    def _ordered(query, order: str):
        """Both orders walk one of the queue's partial indexes (triage/store/tables.py), NULLs
        last written as (x IS NULL), x: the LIMIT stops after ``offset + limit`` entries. The
        learning order is the uncertainty order per dispute type (:meth:`_head`)."""
        uncertainty = (Case.confidence.is_(None), Case.confidence)
        if order == "deadline":
            deadline = text(f"({RUNNING_DEADLINE})")
            return query.order_by(text(f"({RUNNING_DEADLINE}) IS NULL"), deadline, Case.priority_grade,
                                  *uncertainty, Case.id)
        return query.order_by(*uncertainty, Case.id)

    def _head(self, session, query, order: str, n: int, turns_done: dict[str, int] | None = None,
              types: Sequence[str] = DISPUTE_TYPES) -> list[int]:
        """The ids of the first ``n`` cases of ``query`` (a :meth:`_queue_query`) in ``order``.

        ``learning``: the uncertainty order taken in turns across the predicted dispute types:
        each type's least sure case, then each type's second least sure, and so on (types in
        the taxonomy's order within a turn), a type starting as many turns late as it has in
        ``turns_done`` (:meth:`_learning_turns`: the types of the latest decisions and of the
        cases other reviewers hold), so that the confirmations of a session, and of several
        reviewers at once, spread over the types. Least sure first alone fills a labeling
        session with the hardest cases of one or two types; in turns, the first few hundred
        confirmations teach the dispute-type head faster and the urgency head slower (README,
        Model quality). The first ``n`` in turns are among each type's ``n`` least sure, so
        it walks the uncertainty index once per type, ``n`` entries of that type each."""
        if order != "learning":
            return list(session.scalars(self._ordered(query, order).with_only_columns(
                Case.id, maintain_column_froms=True).limit(n)))
        late = turns_done or {}
        ranked = []
        for t in types:
            of_type = query.where(Case.dispute_type.concat("") == t)  # through the queue's index, as the filter
            ids = session.scalars(self._ordered(of_type, "uncertainty").with_only_columns(
                Case.id, maintain_column_froms=True).limit(n))
            ranked += [(i + 1 + late.get(t, 0), DISPUTE_TYPES.index(t), case_id) for i, case_id in enumerate(ids)]
        return [case_id for *_, case_id in sorted(ranked)[:n]]

    def _learning_turns(self, reviewer: str | None, now: datetime) -> dict[str, int]:
        """How many turns each dispute type has had: the confirmed types of the latest
        ``LEARNING_MEMORY`` final decisions, and the types of the cases others hold now."""
        with self.db.session() as session:
            recent = session.scalars(select(ReviewDecision.labels).where(ReviewDecision.final.is_(True))
                                     .order_by(ReviewDecision.id.desc()).limit(LEARNING_MEMORY))
            done = Counter(labels.get("dispute_type") for labels in recent if isinstance(labels, dict))
            held = ReviewClaims.held_by_others(reviewer, now)
            done.update(session.scalars(select(Case.dispute_type).where(Case.id.in_(held))))
        return {t: done[t] for t in DISPUTE_TYPES if done[t]}

    @staticmethod
    def _types(filters: QueueFilters) -> tuple[str, ...]:
        """The dispute types a queue filtered so can hold (for the learning order's walks)."""
        return (filters.dispute_type,) if filters.dispute_type else DISPUTE_TYPES

    def queue(
        self, filters: QueueFilters | None = None, order: str = "deadline", limit: int = 50, offset: int = 0,
        *, reviewer: str | None = None, stage: str = "first",
    ) -> list[dict[str, Any]]:
        """Cases waiting for a ``stage`` review that nobody else holds: by running deadline,
        then grade, then model uncertainty; or, for labeling sessions, purely by uncertainty
        (lowest confidence first) or in the ``learning`` order (the least sure of each
        predicted dispute type in turns; see :meth:`_head`). Each item says who holds it (``claimed_by``: only the
        reviewer themself can appear here) and its ``review_stage``."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be between 1 and 1000, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        now = self.now()
        filters = filters or QueueFilters()
        query = self._queue_query(filters, order, stage, reviewer, now)
        with self.db.session() as session:
            if order == "learning":
                ids = self._head(session, query, order, offset + limit, self._learning_turns(reviewer, now),
                                 self._types(filters))[offset:]
                cases = {case.id: case for case in session.scalars(
                    select(Case).where(Case.id.in_(ids)).options(joinedload(Case.message), joinedload(Case.prediction))).unique()}
                items = [queue_item(cases[i], now) for i in ids]
            else:
                query = self._ordered(query, order).options(joinedload(Case.message), joinedload(Case.prediction))
                items = [queue_item(case, now) for case in session.scalars(query.limit(limit).offset(offset)).unique()]
            return self._annotate(session, items, now, reviewer)

    def queue_size(self, filters: QueueFilters | None = None, *, reviewer: str | None = None,
                   stage: str = "first", include_held: bool = False) -> int:
        """How many cases :meth:`queue` has for ``reviewer``; with ``include_held`` also those
        someone holds (the dashboard's count of waiting work)."""
        query = self._queue_query(filters or QueueFilters(), "deadline", stage, reviewer, include_held=include_held)
        with self.db.session() as session:
            # counted straight off the query's WHERE (no subquery): unfiltered, an index-only
            # count of the queue's partial index
            return session.scalar(query.with_only_columns(func.count(), maintain_column_froms=True)) or 0

    def stage_sizes(self, reviewer: str | None = None) -> dict[str, int]:
        """How many cases wait for each stage of review (for this reviewer, without the ones
        others hold or they may not take)."""
        return {stage: self.queue_size(reviewer=reviewer, stage=stage) for stage in STAGES}

    @staticmethod
    def _annotate(session, items: list[dict[str, Any]], now: datetime, viewer: str | None = None) -> list[dict[str, Any]]:
        """Add who holds each case (``claim``, ``claimed_by``) and its review stage: first
        (waiting for its review), second, adjudication, final (reviewed). Why a case is double
        reviewed (sample, low_confidence: the first reviewer corrected it) stays hidden from
        all but the first reviewer while it waits for the blind second review."""
        ids = [item["case_id"] for item in items]
        if not ids:
            return items
        claims = {c.case_id: c for c in session.scalars(
            select(ReviewClaim).where(ReviewClaim.case_id.in_(ids), ReviewClaim.expires_at > now))}
        doubles = {d.case_id: d for d in session.scalars(select(DoubleReview).where(DoubleReview.case_id.in_(ids)))}
        for item in items:
            claim, double = claims.get(item["case_id"]), doubles.get(item["case_id"])
            item["claim"] = claim_view(claim)
            item["claimed_by"] = claim.reviewer if claim else None
            item["review_stage"] = double.stage if double else ("first" if item["labels_source"] == "model" else "final")
            blind = double is not None and double.stage == "second" and viewer != double.first_reviewer
            item["double_review"] = ("yes" if blind else double.reason) if double else None
            item["decisions"] = []
        return items

    def item(self, case_id: int, viewer: str | None = None) -> dict[str, Any]:
        """One case as the review screen shows it, with who holds it and its review stage.

        Blind second review: while a case waits for its second review nothing here (nor in
        :meth:`history`) shows the first decision; its labels are still the model's. Waiting
        for adjudication, ``decisions`` lists the two reviewers' labels for the supervisor.
        """
        now = self.now()
        with self.db.session() as session:
            case = session.get(Case, case_id, options=[joinedload(Case.message), joinedload(Case.prediction)])
            if case is None:
                raise NotFound(f"case {case_id} does not exist")
            item = self._annotate(session, [queue_item(case, now)], now, viewer)[0]
            if item["review_stage"] == "adjudication":
                item["decisions"] = [
                    {"stage": d.stage, "reviewer": d.reviewer, "labels": {h: d.labels.get(h) for h in HEADS},
                     "note": d.reason, "at": d.created_at.isoformat(timespec="seconds")}
                    for d in session.scalars(select(ReviewDecision).where(
                        ReviewDecision.case_id == case_id, ReviewDecision.stage.in_(("first", "second")),
                        ~ReviewDecision.final).order_by(ReviewDecision.id))
                ]
            return item

    # ----------------------------------------------------------------- claims

    @property
    def claim_minutes(self) -> float:
        return self._setting("review_claim_minutes", 5.0)

    def claim(self, case_id: int, reviewer: str) -> dict[str, Any]:
        """Open ``case_id`` for review: hold it for ``TRIAGE_REVIEW_CLAIM_MINUTES`` (again: the
        hold is extended). Conflict when another reviewer holds it or it is already final;
        Forbidden when ``reviewer`` may not take its stage (the first reviewer for the second
        review; a non-supervisor or one of the two reviewers for an adjudication)."""
        if not reviewer:
            raise InvalidInput("a reviewer name is required", field="reviewer")
        item = self.item(case_id)
        stage = item["review_stage"]
        if stage == "final":
            raise Conflict(f"case {case_id} is already reviewed; nothing to claim")
        self._check_may_decide(case_id, stage, reviewer)
        now = self.now()
        if not self.claims.take(case_id, reviewer, stage, now, self.claim_minutes):
            raise self._held_conflict(case_id, now)
        return self.item(case_id, viewer=reviewer)

    def claim_next(self, reviewer: str, filters: QueueFilters | None = None, order: str = "deadline",
                   stage: str = "any") -> dict[str, Any] | None:
        """Claim and return the next case for ``reviewer`` (the queue's head that nobody else
        holds), or None when there is none. ``stage`` any: a case waiting for a second review
        first, else a first review; or only ``first``, ``second`` or ``adjudication``
        (supervisors and admins). A case the reviewer already holds comes back first, so
        asking twice does not hold two cases. Two reviewers asking at once get different
        cases (the claim is one atomic statement)."""
        if not reviewer:
            raise InvalidInput("a reviewer name is required", field="reviewer")
        if stage not in CLAIM_STAGES:
            raise InvalidInput(f"stage must be one of {list(CLAIM_STAGES)}, got {stage!r}", field="stage")
        if stage == "adjudication":
            self._require_supervisor(reviewer)
        filters = filters or QueueFilters()
        now = self.now()
        minutes = self.claim_minutes
        stages = ("second", "first") if stage == "any" else (stage,)
        turns = self._learning_turns(reviewer, now) if order == "learning" else None
        queries = {current: self._queue_query(filters, order, current, reviewer, now) for current in stages}
        held = self.claims.held_by(reviewer, now)
        for current, query in queries.items() if held else ():
            with self.db.session() as session:
                mine = self._head(session, query.where(Case.id.in_(held)), order, 1, turns, self._types(filters))
                mine_id = mine[0] if mine else None
            if mine_id is not None and self.claims.take(mine_id, reviewer, current, now, minutes):
                return self.item(mine_id, viewer=reviewer)
        for current, query in queries.items():
            for _ in range(5):  # each round's candidates lost to other reviewers are held by them next round
                with self.db.session() as session:
                    candidates = self._head(session, query, order, 20, turns, self._types(filters))
                if not candidates:
                    break
                for case_id in candidates:
                    if not self.claims.take(case_id, reviewer, current, now, minutes):
                        continue
                    item = self.item(case_id, viewer=reviewer)
                    if item["review_stage"] == current:
                        return item
                    self.claims.release(case_id, reviewer)  # decided meanwhile
        return None

    def release(self, case_id: int, reviewer: str) -> bool:
        """Give a held case back (the UI's skip does this too); False if they held none."""
        if not reviewer:
            raise InvalidInput("a reviewer name is required", field="reviewer")
        return self.claims.release(case_id, reviewer)

    def _held_conflict(self, case_id: int, now: datetime) -> Conflict:
        holder = self.claims.holder(case_id, now)
        if holder is None:
            return Conflict(f"case {case_id} could not be claimed; try again")
        return Conflict(f"case {case_id} is held by {holder.reviewer} until "
                        f"{holder.expires_at.isoformat(timespec='seconds')}; pick another case")

    def _require_supervisor(self, reviewer: str) -> None:
        role = self.service.active_user_role(reviewer) if self.service is not None else None
        if role not in SUPERVISOR_ROLES:
            raise Forbidden(f"user {reviewer!r} (role {role}) may not adjudicate; it needs the role "
                            f"{' or '.join(SUPERVISOR_ROLES)}")

    def _check_may_decide(self, case_id: int, stage: str, reviewer: str) -> None:
        if stage not in PENDING_DOUBLE:
            return
        with self.db.session() as session:
            double = session.get(DoubleReview, case_id)
            first, second = double.first_reviewer, double.second_reviewer
        if stage == "second" and reviewer == first:
            raise Forbidden(f"case {case_id} needs a second review by another reviewer than the first")
        if stage == "adjudication":
            self._require_supervisor(reviewer)
            if reviewer in (first, second):
                raise Forbidden(f"case {case_id} must be adjudicated by neither of its two reviewers")

    # ----------------------------------------------------------------- decisions

    def decide(
        self,
        case_id: int,
        action: str,
        reviewer: str,
        expected_version: int | None,
        labels: dict[str, Any] | None = None,
        note: str | None = None,
        stage: str | None = None,
    ) -> dict[str, Any]:
        """Confirm the case's labels, correct some heads, or skip it; a note goes to the audit log.

        The case's review stage decides what the decision does: a first review is final
        (labels applied, as always) unless the case is picked for double review (the share
        ``TRIAGE_REVIEW_DOUBLE_SHARE`` by a hash of its id, or a correction below
        ``TRIAGE_REVIEW_DOUBLE_BELOW_CONFIDENCE``): then it is recorded and the case waits
        for a second reviewer. The second review finalises when it agrees on every head, else
        the case waits for a supervisor's adjudication, which is final. ``stage``, when
        given, must be the case's stage (Conflict otherwise). Every decision ends the
        reviewer's claim; a case another reviewer holds is a Conflict.

        Returns the case after the decision (``item`` shape) plus ``"action"`` and
        ``"outcome"`` (final, awaiting_second, awaiting_adjudication, skipped).
        """
        if action not in ACTIONS:
            raise InvalidInput(f"action must be one of {list(ACTIONS)}, got {action!r}", field="action")
        if not reviewer:
            raise InvalidInput("a reviewer name is required", field="reviewer")
        if stage is not None and stage not in STAGES:
            raise InvalidInput(f"stage must be one of {list(STAGES)}, got {stage!r}", field="stage")
        note = (note or "").strip() or None
        if note and len(note) > 2000:
            raise InvalidInput("a note may have at most 2000 characters", field="note")
        current = self.item(case_id)
        current_stage = current["review_stage"] if current["review_stage"] in PENDING_DOUBLE else "first"
        if stage is not None and stage != current_stage:
            raise Conflict(f"case {case_id} waits for its {current_stage} review, not the {stage} one; reload it")
        now = self.now()
        holder = self.claims.holder(case_id, now)
        if holder is not None and holder.reviewer != reviewer:
            raise self._held_conflict(case_id, now)
        if action == "skip":
            if note:
                self.add_note(case_id, reviewer, note)
            self.claims.release(case_id, reviewer)
            return {**self.item(case_id, viewer=reviewer), "action": "skip", "outcome": "skipped"}
        self._check_may_decide(case_id, current_stage, reviewer)
        if expected_version is None:
            raise InvalidInput("expected_version (the case version you reviewed) is required", field="expected_version")
        self._check_version(current, expected_version)
        if action == "correct":
            new_labels = self._validated_labels(labels)
            if all(current["labels"][head] == value for head, value in new_labels.items()):
                raise InvalidInput("the correction changes no label; use confirm instead", field="labels")
            merged = {**current["labels"], **new_labels}
        else:
            if labels:
                raise InvalidInput("confirm takes no labels; use correct to change them", field="labels")
            merged = dict(current["labels"])
        claimed_at = holder.claimed_at if holder is not None else None
        reason = note or action
        if current_stage == "first":
            why = self._double_reason(case_id, action, current)
            if why:
                self._record_pending(case_id, reviewer, merged, reason, expected_version, claimed_at, "first", why)
                outcome = "awaiting_second"
            else:
                self._apply_final(case_id, merged, reviewer, reason, expected_version, "single", claimed_at)
                outcome = "final"
        elif current_stage == "second":
            first = self._first_labels(case_id)
            if all(merged[head] == first.get(head) for head in HEADS):
                self._apply_final(case_id, merged, reviewer, reason, expected_version, "second", claimed_at,
                                  advance=("second", {"second_reviewer": reviewer}))
                outcome = "final"
            else:
                self._record_pending(case_id, reviewer, merged, reason, expected_version, claimed_at, "second")
                outcome = "awaiting_adjudication"
        else:
            self._apply_final(case_id, merged, reviewer, reason, expected_version, "adjudication", claimed_at,
                              advance=("adjudication", {"adjudicator": reviewer}))
            outcome = "final"
        return {**self.item(case_id, viewer=reviewer), "action": action, "outcome": outcome}

    def _double_reason(self, case_id: int, action: str, current: dict[str, Any]) -> str | None:
        """Why this first decision needs a second review (sample, low_confidence), or None."""
        if current["double_review"] is not None:
            return None  # double-reviewed once already; a later re-review is a single one
        if sampled_for_double_review(case_id, self._setting("review_double_share", 0.0)):
            return "sample"
        below = self._setting("review_double_below_confidence", 0.0)
        if action == "correct" and current["confidence"] is not None and current["confidence"] < below:
            return "low_confidence"
        return None

    def _first_labels(self, case_id: int) -> dict[str, Any]:
        with self.db.session() as session:
            first = session.scalars(select(ReviewDecision).where(
                ReviewDecision.case_id == case_id, ReviewDecision.stage == "first", ~ReviewDecision.final)
                .order_by(ReviewDecision.id.desc()).limit(1)).first()
            return dict(first.labels) if first is not None else {}

    def _apply_final(self, case_id: int, labels: dict[str, Any], reviewer: str, reason: str, expected_version: int,
                     stage: str, claimed_at: datetime | None, advance: tuple[str, dict[str, Any]] | None = None) -> None:
        """Make ``labels`` the case's final labels (rules re-run, audit, webhook), move its
        double review to final and end the claim, all in one transaction."""
        claims = self.claims

        def also(session, case) -> None:
            if advance is None:
                if session.scalar(select(DoubleReview.stage).where(
                        DoubleReview.case_id == case_id, DoubleReview.stage.in_(PENDING_DOUBLE))):
                    raise Conflict(f"case {case_id} went to double review meanwhile; reload it")
            else:
                expected, fields = advance
                moved = session.execute(update(DoubleReview).where(
                    DoubleReview.case_id == case_id, DoubleReview.stage == expected,
                ).values(stage="final", finalised_at=self.now(), **fields)).rowcount
                if not moved:
                    raise Conflict(f"case {case_id} was decided by someone else meanwhile; reload it")
            claims.release(case_id, reviewer, session)

        self.service.apply_labels(case_id, labels, actor=reviewer, reason=reason, expected_version=expected_version,
                                  review=True, stage=stage, claimed_at=claimed_at, also=also)
        if self.learning is not None:
            self.learning.note_confirmations(1, actor=f"auto:{reviewer}")

    def _record_pending(self, case_id: int, reviewer: str, labels: dict[str, Any], reason: str,
                        expected_version: int, claimed_at: datetime | None, stage: str, why: str | None = None) -> None:
        """Record a first decision (the case waits for a second reviewer) or a disagreeing
        second one (it waits for adjudication): audited, not final, the case untouched."""
        now = self.now()
        with self.db.session(write=True) as session:
            query = select(Case).where(Case.id == case_id).options(joinedload(Case.prediction))
            if self.db.is_postgres:
                query = query.with_for_update(of=Case)
            case = session.scalars(query).first()
            if case is None:
                raise NotFound(f"case {case_id} does not exist")
            if case.version != expected_version:
                raise Conflict(f"case {case_id} changed since version {expected_version} (now {case.version}); "
                               "reload it and decide again")
            previous = {**case_labels(case), "vulnerable": case.vulnerable}
            decided = {**labels, "vulnerable": case.vulnerable}
            if stage == "first":
                if session.get(DoubleReview, case_id) is not None:
                    raise Conflict(f"case {case_id} was decided by another reviewer meanwhile; reload it")
                session.add(DoubleReview(case_id=case_id, stage="second", reason=why, first_reviewer=reviewer,
                                         created_at=now))
            else:
                moved = session.execute(update(DoubleReview).where(
                    DoubleReview.case_id == case_id, DoubleReview.stage == "second",
                ).values(stage="adjudication", second_reviewer=reviewer)).rowcount
                if not moved:
                    raise Conflict(f"case {case_id} was decided by someone else meanwhile; reload it")
            session.add(ReviewDecision(
                case_id=case_id, message_id=case.message_id, reviewer=reviewer, labels=decided, previous=previous,
                changed=decided != previous, reason=reason, stage=stage, final=False, claimed_at=claimed_at,
                model_version=case.prediction.model_version if case.prediction else None, created_at=now,
            ))
            action = "review.first_decision" if stage == "first" else "review.disagreement"
            self.service.audit_log.write(session, reviewer, action, "case", case_id, previous, decided, reason)
            self.claims.release(case_id, reviewer, session)

    @staticmethod
    def _check_version(current: dict[str, Any], expected_version: int) -> None:
        if current["labels_source"] != "model" and current["version"] != expected_version:
            raise Conflict(
                f"case {current['case_id']} was already reviewed since you opened it "
                f"(version {expected_version} -> {current['version']}); reload it to see that decision"
            )
        if current["version"] != expected_version:
            raise Conflict(
                f"case {current['case_id']} changed since you opened it (version {expected_version} -> "
                f"{current['version']}); reload it and decide again"
            )

    @staticmethod
    def _validated_labels(labels: dict[str, Any] | None) -> dict[str, Any]:
        if not labels:
            raise InvalidInput("a correction needs at least one head's label", field="labels")
        out = {}
        for head, value in labels.items():
            try:
                out[head] = validate_label(head, value)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=f"labels.{head}") from None
        return out

    def add_note(self, case_id: int, reviewer: str, note: str) -> None:
        with self.db.session(write=True) as session:
            if session.get(Case, case_id) is None:
                raise NotFound(f"case {case_id} does not exist")
            session.add(
                AuditEntry(actor=reviewer, action="case.note", entity="case", entity_id=str(case_id), reason=note)
            )

    def bulk_confirm(
        self, min_confidence: float, reviewer: str, filters: QueueFilters | None = None, limit: int = 200
    ) -> dict[str, Any]:
        """Confirm every queued case whose model confidence is at least ``min_confidence``.

        Cases another reviewer holds or decides meanwhile are counted as conflicts and left
        alone; cases picked for double review wait for a second reviewer (``awaiting_second``,
        also listed in ``confirmed``).
        """
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput(f"min_confidence must be between 0 and 1, got {min_confidence}", field="min_confidence")
        query = self._queue_query(filters or QueueFilters(), "deadline", "first", reviewer)
        query = query.where(Case.confidence >= min_confidence)
        with self.db.session() as session:
            targets = [(c.id, c.version) for c in session.scalars(query.order_by(Case.id).limit(limit))]
        confirmed, conflicts, awaiting = [], [], []
        for case_id, version in targets:
            try:
                result = self.decide(case_id, "confirm", reviewer, version, stage="first",
                                     note=f"bulk confirm (confidence >= {min_confidence:.2f})")
                confirmed.append(case_id)
                if result["outcome"] == "awaiting_second":
                    awaiting.append(case_id)
            except Conflict:
                conflicts.append(case_id)
        return {"confirmed": confirmed, "conflicts": conflicts, "awaiting_second": awaiting}

    # ----------------------------------------------------------------- history

    def history(self, case_id: int) -> list[dict[str, Any]]:
        """Predictions, reviews, SLA events and audited changes of a case, oldest first.

        While the case waits for its blind second review, the first decision is left out.
        """
        with self.db.session() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise NotFound(f"case {case_id} does not exist")
            blind = session.scalar(select(DoubleReview.stage).where(DoubleReview.case_id == case_id)) == "second"
            events: list[dict[str, Any]] = []
            for p in session.scalars(select(Prediction).where(Prediction.message_id == case.message_id)):
                events.append({
                    "at": p.created_at, "kind": "prediction", "actor": f"model:{p.model_version}",
                    "summary": f"{p.dispute_type} / grade {p.urgency} / {p.emotion}"
                    f"{' / escalation' if p.escalation else ''} (confidence {p.confidence:.2f})",
                })
            for r in session.scalars(select(ReviewDecision).where(ReviewDecision.case_id == case_id)):
                if blind and not r.final:
                    continue
                changes = [f"{h}: {r.previous.get(h)} -> {r.labels.get(h)}" for h in HEADS if r.previous.get(h) != r.labels.get(h)]
                events.append({
                    "at": r.created_at, "kind": "review", "actor": r.reviewer,
                    "summary": (f"{r.stage} review: " if r.stage != "single" else "")
                    + (("corrected " + ", ".join(changes)) if r.changed else "confirmed"),
                    "note": r.reason,
                })
            for e in session.scalars(select(SlaEvent).where(SlaEvent.case_id == case_id)):
                tier = f", tier {e.tier_before} -> {e.tier_after}" if e.tier_before != e.tier_after else ""
                events.append({"at": e.detected_at, "kind": f"sla.{e.kind}", "actor": "sla-monitor",
                               "summary": f"{e.deadline} deadline {e.kind} (due {e.due_at.isoformat(timespec='minutes')}){tier}"})
            for a in session.scalars(
                select(AuditEntry).where(AuditEntry.entity == "case", AuditEntry.entity_id == str(case_id))
            ):
                if blind and a.action in BLIND_AUDIT_ACTIONS:
                    continue
                events.append({"at": a.at, "kind": a.action, "actor": a.actor, "summary": _audit_summary(a), "note": a.reason})
        events.sort(key=lambda e: e["at"])
        return [{**e, "at": e["at"].isoformat(timespec="seconds")} for e in events]

    # ----------------------------------------------------------------- dashboard

    def dashboard(self, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
        """Numbers for the dashboard: queue, final reviews/day, model agreement/head/day,
        confusion, SLA. Reviewers' agreement with each other is :meth:`agreement`."""
        now = now or utcnow()
        since = now - timedelta(days=days)
        with self.db.session() as session:
            decisions = list(session.scalars(select(ReviewDecision).where(ReviewDecision.created_at >= since,
                                                                          ReviewDecision.final)))
            sla_events = list(session.scalars(select(SlaEvent).where(SlaEvent.detected_at >= since)))
            # counted in the database (the status index), not loaded row by row
            breached = Case.respond_breached | Case.resolve_breached
            warned = (Case.respond_warned | Case.resolve_warned) & ~breached
            open_cases, open_breached, open_warned = session.execute(
                select(func.count(), func.sum(sql_case((breached, 1), else_=0)), func.sum(sql_case((warned, 1), else_=0)))
                .where(Case.status.in_(OPEN_STATUSES))
            ).one()
        reviews_per_day: Counter[str] = Counter()
        agree: dict[str, dict[str, list[int]]] = {head: defaultdict(lambda: [0, 0]) for head in HEADS}
        confusion: dict[str, Counter] = {head: Counter() for head in HEADS}
        for d in decisions:
            day = d.created_at.date().isoformat()
            reviews_per_day[day] += 1
            for head in HEADS:
                model_label, confirmed = d.previous.get(head), d.labels.get(head)
                agree[head][day][0] += int(model_label == confirmed)
                agree[head][day][1] += 1
                confusion[head][(str(model_label), str(confirmed))] += 1
        sla_per_day: dict[str, Counter] = defaultdict(Counter)
        for e in sla_events:
            sla_per_day[e.detected_at.date().isoformat()][e.kind] += 1
        return {
            "queue_size": self.queue_size(include_held=True),
            "reviews_total": len(decisions),
            "reviews_per_day": dict(sorted(reviews_per_day.items())),
            "agreement": {
                head: {day: round(a / n, 4) for day, (a, n) in sorted(per_day.items())} for head, per_day in agree.items()
            },
            "agreement_overall": {
                head: round(sum(a for a, _ in per_day.values()) / max(1, sum(n for _, n in per_day.values())), 4)
                for head, per_day in agree.items()
            },
            "confusion": {
                head: [{"model": m, "confirmed": c, "count": n} for (m, c), n in sorted(counts.items())]
                for head, counts in confusion.items()
            },
            "sla_per_day": {day: dict(counts) for day, counts in sorted(sla_per_day.items())},
            "open_breached": int(open_breached or 0),
            "open_warned": int(open_warned or 0),
            "open_cases": int(open_cases or 0),
        }

    def agreement(self, days: int = 30) -> dict[str, Any]:
        """The team's agreement report over the cases reviewed in the last ``days`` days
        (:func:`triage.agreement.agreement_report`): inter-reviewer percentage and Cohen's
        kappa per head, each reviewer's agreement with the final label, throughput, and
        model-vs-final agreement per model version."""
        if not 1 <= days <= 3660:
            raise InvalidInput(f"days must be between 1 and 3660, got {days}", field="days")
        since = self.now() - timedelta(days=days)
        with self.db.session() as session:
            recent = select(ReviewDecision.case_id).where(ReviewDecision.created_at >= since)
            rows = list(session.scalars(select(ReviewDecision).where(ReviewDecision.case_id.in_(recent))
                                        .order_by(ReviewDecision.id)))
        cases: dict[int, ReviewedCase] = {}
        for d in rows:
            case = cases.setdefault(d.case_id, ReviewedCase(d.case_id))
            if case.model_labels is None and d.stage in ("single", "first"):
                case.model_labels, case.model_version = dict(d.previous), d.model_version
            case.decisions.append({"stage": d.stage, "reviewer": d.reviewer, "labels": dict(d.labels),
                                   "final": d.final, "claimed_at": d.claimed_at, "decided_at": d.created_at})
        return agreement_report(list(cases.values()), since)


BLIND_AUDIT_ACTIONS = ("review.first_decision", "review.disagreement", "case.note")

SUMMARY_FIELDS = ("dispute_type", "grade", "emotion", "escalation", "tier", "respond_due_at", "resolve_due_at", "status")


def _audit_summary(entry: AuditEntry) -> str:
    """'tier: frontline -> supervisor; ...' from an audit entry's before/after (a creation
    lists the main fields only)."""
    before, after = entry.before or {}, entry.after or {}
    if not before and after and entry.action.endswith("created"):
        return ", ".join(f"{k} {after[k]}" for k in SUMMARY_FIELDS if k in after) or entry.action
    changes = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return "; ".join(changes) or entry.action


# --------------------------------------------------------------------------- wiring


REVIEW_ROLES = ("reviewer", "supervisor", "admin")  # the roles that may open the review queue


class ReviewContext:
    """The review service, learning loop and model store of one running TriageService.

    Built once per process (the API routes, the review UI and the CLI share it), so the
    retrain job, its progress and the model swap are the same object everywhere.
    """

    def __init__(self, service, store=None, settings=None, **loop_options):
        from models.learning import loop_for_service
        from models.db_store import open_store

        self.service = service
        self.settings = settings or service.settings
        self.store = store or open_store(self.settings)
        self.learning = loop_for_service(service, self.store, self.settings, **loop_options)
        self.review = getattr(service, "review", None) or ReviewService(service.db, service)
        self.review.learning = self.learning

    def models_overview(self) -> dict[str, Any]:
        """Every model version (oldest first) with status, gate reason and metrics, the latest
        retrain job and the latest re-grade after a promotion or rollback (their outcomes as
        recorded by whichever process ran them)."""
        job = self.learning.job()
        regrade = self.learning.regrade_job()
        holder = self.learning.holder
        return {
            "current": self.store.current_version(),
            # How the serving model grades 一级: a fixed threshold or a recall target
            # (TRIAGE_URGENT_RECALL) read off its confirmed labels, with what it costs there.
            "operating_point": getattr(holder.triager, "operating_point", None) if holder.loaded else None,
            "versions": self.store.list_versions(),
            "retrain": job.as_dict() if job else None,
            "regrade": regrade.as_dict() if regrade else None,
        }

    def require_reviewer(self, name: str | None, admin: bool = False) -> str:
        """``name`` if that user may review (roles reviewer, supervisor, admin) or, with ``admin``, change
        models; else Unauthorized/Forbidden.

        A review UI session (password log-in, :meth:`Accounts.desk_session`) has no key, so
        model changes there need the admin role and an unrevoked key with the admin scope: the
        same scope the API asks of the request's key for promote, rollback and retrain.
        """
        if not name:
            raise Unauthorized("log in first")
        role = self.service.active_user_role(name)
        allowed = ("admin",) if admin else REVIEW_ROLES
        if role not in allowed:
            raise Forbidden(f"user {name!r} (role {role}) may not do this; it needs the role {' or '.join(allowed)}")
        if admin and not self.service.user_holds_scope(name, "admin"):
            raise Forbidden(f"user {name!r} holds no active API key with the admin scope; "
                            f"create one with `triage keys create {name} --scope admin`")
        return name
