"""Label changes: a reviewer's decision, or a newly promoted model re-grading the open cases
no reviewer has confirmed. Both re-run the SLA and routing policy from the original receipt
time, and audit every field that changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from triage.contexts.audit import AuditLog, case_snapshot, diff
from triage.contexts.cases import CaseView, Cases, case_view, labels_of, prediction_row
from triage.contexts.core import ServiceCore
from triage.errors import Conflict, InvalidInput
from triage.policy import Labels
from triage.store.queries import insert_returning_ids
from triage.store.tables import Case, DoubleReview, Message, Prediction as PredictionRow, ReviewDecision
from triage.taxonomy import HEADS, validate_label


class LabelChanges:
    def __init__(self, core: ServiceCore, audit: AuditLog, cases: Cases):
        self.core = core
        self.audit = audit
        self.cases = cases

    def apply(self, case_id: int, labels: dict[str, Any], actor: str, reason: str | None = None,
              *, review: bool = True, expected_version: int | None = None, stage: str = "single",
              claimed_at=None, also: Callable[[Session, Case], None] | None = None) -> CaseView:
        """Set a case's labels (a reviewer's decision, or a retrained model's with review=False).

        Deadlines are recomputed from the original receipt time and routing is re-run; the
        audit log gets the before/after of every field that changed. With ``review`` a
        ReviewDecision is stored (also for a confirmation that changes nothing) and a
        ``reviewed`` webhook event is queued. ``expected_version`` (the case version the
        reviewer looked at) turns a concurrent change into Conflict instead of an overwrite.
        ``stage`` (single, second, adjudication) and ``claimed_at`` go on the decision, which
        is final: these labels are the case's (double review's non-final decisions are
        recorded by the review context without changing the case). ``also(session, case)``
        runs in the same transaction after the checks (the review context moves a double
        review on there; raising in it undoes everything).
        """
        clean: dict[str, Any] = {}
        for head, value in labels.items():
            if head == "vulnerable":
                if not isinstance(value, bool):
                    raise InvalidInput(f"vulnerable must be true or false, got {value!r}", field="vulnerable")
                clean[head] = value
                continue
            if head not in HEADS:
                raise InvalidInput(f"unknown label {head!r}; expected {list(HEADS)} or vulnerable", field=head)
            try:
                clean[head] = validate_label(head, value)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=head) from None
        if not actor or not str(actor).strip():
            raise InvalidInput("actor is required", field="actor")
        core, policy = self.core, self.core.policy
        with core.db.session(write=True) as session:
            case = self.cases.load(session, case_id, lock=True)
            if expected_version is not None and case.version != expected_version:
                raise Conflict(f"case {case_id} changed since version {expected_version} (now {case.version}); "
                               "reload it and decide again")
            if also is not None:
                also(session, case)
            current = labels_of(case)
            merged = {**current.as_dict(), **clean}
            new_labels = Labels(**merged)
            before = case_snapshot(case)
            previous_labels = {**current.as_dict()}
            rule_hits = {hit.get("rule") for hit in (case.prediction.rules if case.prediction else []) or []}
            decision = policy.decide(new_labels, case.message.text_masked, rule_hits)
            self.cases.apply_decision(case, new_labels, decision)
            if review:
                case.labels_source = "review"
            after = case_snapshot(case)
            old, new = diff(before, after)
            changed = new_labels.as_dict() != previous_labels
            if old or new:
                case.updated_at = core.now()
                self.audit.write(session, actor, "case.labels_changed" if review else "case.regraded", "case",
                                 case.id, old, new, reason)
            if review:
                session.add(ReviewDecision(
                    case_id=case.id, message_id=case.message_id, reviewer=actor,
                    labels={k: new_labels.as_dict()[k] for k in (*HEADS, "vulnerable")},
                    previous=previous_labels, changed=changed, reason=reason,
                    model_version=case.prediction.model_version if case.prediction else None,
                    created_at=core.now(), stage=stage, final=True, claimed_at=claimed_at,
                ))
                self.audit.write(session, actor, "review.confirmed" if not changed else "review.corrected", "case",
                                 case.id, previous_labels, new_labels.as_dict(), reason)
            session.flush()
            if review:
                self.cases.emit(session, "reviewed", case, {"changed": changed, "reviewer": actor})
            if changed:
                self.cases.write_back(session, [case], before={case.id: before})
            if before["tier"] != after["tier"] and policy.tiers.index(after["tier"]) > policy.tiers.index(before["tier"]):
                self.cases.emit(session, "escalated", case, {"reason": "labels changed", "tier_before": before["tier"]})
            return case_view(case)

    def regrade_open_cases(self, triager, actor: str, batch: int = 200) -> int:
        """Re-predict open/pending cases no reviewer has confirmed or is double-reviewing (after
        a new model is promoted).

        Every re-scored case gets the new model's prediction (probabilities, confidence,
        version), so the uncertainty-ordered review queue ranks by the serving model; only
        cases whose labels change are re-graded (deadlines, routing, audit). Returns how many
        cases changed labels.
        """
        changed = 0
        last_id = 0
        # A case waiting for its second review or adjudication keeps the labels its first
        # reviewer saw, so both reviewers judge the same prediction.
        in_double_review = select(DoubleReview.case_id).where(DoubleReview.stage.in_(("second", "adjudication")))
        while True:
            with self.core.db.session() as session:
                rows = session.execute(
                    select(Case.id, Message.text_masked, Case.dispute_type, Case.grade, Case.emotion, Case.escalation,
                           Case.vulnerable)
                    .join(Case.message)
                    .where(Case.id > last_id, Case.status.in_(("open", "pending")), Case.labels_source == "model",
                           Case.id.not_in(in_double_review))
                    .order_by(Case.id).limit(batch)
                ).all()
            if not rows:
                return changed
            last_id = rows[-1][0]
            predictions = triager.predict_many([r[1] for r in rows])
            versions = self.store_predictions([(row[0], p) for row, p in zip(rows, predictions, strict=True)])
            for row, p in zip(rows, predictions, strict=True):
                if row[0] not in versions:
                    continue  # reviewed or closed meanwhile: the reviewer's labels stand
                new = {"dispute_type": p.dispute_type, "urgency": int(p.urgency), "emotion": p.emotion,
                       "escalation": bool(p.escalation), "vulnerable": bool(getattr(p, "vulnerable", False))}
                old = {"dispute_type": row[2], "urgency": row[3], "emotion": row[4], "escalation": row[5],
                       "vulnerable": row[6]}
                if new == old:
                    continue
                try:
                    self.apply(row[0], new, actor, reason=f"re-triaged by model {p.model_version}",
                               review=False, expected_version=versions[row[0]])
                except Conflict:
                    continue  # a reviewer decided it since; never overwrite a decision
                changed += 1

    def store_predictions(self, scored: Sequence[tuple[int, Any]]) -> dict[int, int]:
        """Attach new predictions to the cases that are still open and unconfirmed, in one
        transaction; returns case id -> case version for those.

        The case's ``version`` is left alone on purpose (a Core UPDATE, not the ORM): a new
        score does not change the labels a reviewer is looking at, so it must not turn their
        pending decision into a Conflict.
        """
        if not scored:
            return {}
        by_case = dict(scored)
        db = self.core.db
        now = self.core.now()
        with db.session(write=True) as session:
            query = select(Case.id, Case.message_id, Case.version).where(
                Case.id.in_(list(by_case)), Case.labels_source == "model", Case.status.in_(("open", "pending")))
            if db.is_postgres:
                query = query.with_for_update(of=Case)
            live = session.execute(query).all()
            if not live:
                return {}
            rows = []
            for case_id, message_id, _version in live:
                row = prediction_row(by_case[case_id], now)
                row.message_id = message_id
                rows.append(row)
            ids = insert_returning_ids(session, PredictionRow, rows)
            table = Case.__table__
            for (case_id, _message_id, _version), prediction_id in zip(live, ids, strict=True):
                session.execute(table.update().where(table.c.id == case_id).values(prediction_id=prediction_id))
            return {case_id: version for case_id, _message_id, version in live}
