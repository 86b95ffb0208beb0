"""The learning loop: retrain on seed data plus reviewers' confirmed labels, gate, promote.

Why it is shaped this way:

* Confirmed labels are real traffic, so they count more than the team's seed data
  (``Settings.confirmed_weight``, ``TRIAGE_CONFIRMED_WEIGHT``), but a fixed share of them (chosen by a hash of the case key, so
  the same case is always on the same side) is never trained on: it is the held-out set
  the quality gate compares the candidate and the current model on.
* The gate also compares both training recipes by cross-validation on the seed data, so a
  candidate that learns the new traffic by forgetting the basics is caught.
* A candidate that fails the gate is still saved, as a *rejected* version with the reason,
  so people can inspect it and promote it by hand if they disagree.
* The running service reads its Triager through a :class:`ModelHolder`; promotion and
  rollback swap the object in one assignment, so a request sees either the old or the new
  model, never a half-loaded one.
* "Retrain after N confirmations" is counted by a ledger, not a counter in memory: in the
  service (:class:`ServiceLedger`) it is the review decisions recorded after the data
  cut-off the latest retrain claimed in the database, so a restart neither loses nor
  repeats it, and the claim lets one server process at a time retrain.
* Storage is not imported here: confirmed labels, re-grading of open cases and audit
  entries come in as callables (see :class:`LearningHooks`), which the review service
  (``triage/review.py``) wires to the database.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from triage.errors import Conflict, InvalidInput, ModelError, NotFound
from triage.jobs.runner import DEFAULT_RUNNER, JobHandle, JobRunner
from triage.settings import Settings
from triage.taxonomy import HEADS, validate_label

CONFIRMED_WEIGHT = Settings.model_fields["confirmed_weight"].default  # one source: the settings object
HOLDOUT_SHARE = 0.2  # share of confirmed labels kept out of training, for the gate
CV_FOLDS = 3  # seed cross-validation folds (small: it runs on every retrain)
GATE_CONFIDENCE = Settings.model_fields["promotion_confidence"].default
MIN_HOLDOUT = 30  # below this many held-out labels the holdout comparison is reported, not gated:
# on 10 labels one flipped prediction moves a head's macro-F1 by 0.1, far beyond any sane margin

Progress = Callable[[str, float], None]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LabeledExample:
    """One text with its four labels; ``key`` (case or seed id) decides holdout/fold membership."""

    key: str
    text: str
    labels: dict[str, Any]
    confirmed: bool = False  # True: a reviewer's label (weighted higher); False: seed data

    @classmethod
    def from_record(cls, record: dict[str, Any], *, confirmed: bool = False, key: str | None = None):
        """Build from a seed/jsonl-style dict; raise InvalidInput naming what is wrong."""
        try:
            labels = {head: validate_label(head, record[head]) for head in HEADS}
        except KeyError as exc:
            raise InvalidInput(f"labeled example {record.get('id')!r} has no {exc.args[0]!r} label") from None
        except ValueError as exc:
            raise InvalidInput(f"labeled example {record.get('id')!r}: {exc}") from None
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"labeled example {record.get('id')!r} has no text")
        return cls(key=str(key if key is not None else record.get("id")), text=text, labels=labels, confirmed=confirmed)


def _unit_hash(key: str, salt: str) -> float:
    """A stable number in [0, 1) for ``key``; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha1(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_holdout(key: str, share: float = HOLDOUT_SHARE) -> bool:
    """Whether a confirmed example is kept out of training to judge candidates."""
    return _unit_hash(key, "holdout") < share


def fold_of(key: str, folds: int = CV_FOLDS) -> int:
    return int(_unit_hash(key, "fold") * folds)


def split_confirmed(examples: Sequence[LabeledExample], share: float = HOLDOUT_SHARE):
    """(train, holdout) partition of confirmed examples, stable per key."""
    train, holdout = [], []
    for example in examples:
        (holdout if is_holdout(example.key, share) else train).append(example)
    return train, holdout


# --------------------------------------------------------------------------- metrics


def _label_key(value: Any) -> str:
    """Labels compared as strings: JSON gives 1/True, backends may give numpy scalars."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def predict_labels(backend, texts: Sequence[str]) -> dict[str, list[Any]]:
    """head -> top label per text, read from the backend's ``classes_`` order."""
    if not texts:
        return {head: [] for head in HEADS}
    probabilities = backend.predict_proba(list(texts))
    out: dict[str, list[Any]] = {}
    for head in HEADS:
        if head not in probabilities:
            continue
        classes = list(backend.classes_[head])
        out[head] = [classes[i] for i in np.asarray(probabilities[head]).argmax(axis=1)]
    return out


def macro_f1_by_head(examples: Sequence[LabeledExample], predicted: dict[str, list[Any]]) -> dict[str, float]:
    """Macro-F1 per head, averaged over the labels present in the reference.

    Labels absent from the reference are left out on purpose: with one held-out escalation
    case in a hundred, a single false alarm on an absent class would otherwise halve the
    head's score and make the gate a coin toss.
    """
    from sklearn.metrics import f1_score

    scores = {}
    for head, predictions in predicted.items():
        truth = [_label_key(example.labels[head]) for example in examples]
        guess = [_label_key(value) for value in predictions]
        present = sorted(set(truth))
        if not present:
            continue
        scores[head] = float(f1_score(truth, guess, labels=present, average="macro", zero_division=0))
    return scores


def holdout_drop_bounds(
    examples: Sequence[LabeledExample],
    current: dict[str, list[Any]],
    candidate: dict[str, list[Any]],
    confidence: float,
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Per head, a drop of macro-F1 (current - candidate) that the candidate's true drop
    exceeds with ``confidence``, by a paired bootstrap over the held-out messages.

    Both models' labels of the same resampled messages are scored together, so what the two
    share (an easy or a hard message) cancels out. Macro-F1 is over the labels present in
    each resample's reference, as :func:`macro_f1_by_head` does for the whole holdout.
    """
    if not 0 < confidence < 1:
        raise InvalidInput(f"gate confidence must be in (0, 1), got {confidence}")
    n = len(examples)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)  # (rounds, n)
    bounds = {}
    for head in HEADS:
        if head not in current or head not in candidate:
            continue
        truth = np.array([_label_key(example.labels[head]) for example in examples], dtype=object)
        scores = []
        for predictions in (current[head], candidate[head]):
            guess = np.array([_label_key(value) for value in predictions], dtype=object)
            f1_sum = np.zeros(rounds)
            present = np.zeros(rounds)
            for label in sorted(set(truth.tolist())):
                is_true, is_guess = truth == label, guess == label
                support = counts @ is_true
                both = support + counts @ is_guess
                hits = counts @ (is_true & is_guess)
                f1_sum += np.divide(2 * hits, both, out=np.zeros(rounds), where=both > 0)
                present += support > 0
            scores.append(f1_sum / np.maximum(present, 1))
        drops = scores[0] - scores[1]
        bounds[head] = float(np.quantile(drops, 1 - confidence))
    return bounds


# --------------------------------------------------------------------------- gate


@dataclass
class GateDecision:
    promote: bool
    reason: str
    drops: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluation -> head -> drop


def quality_gate(
    current: dict[str, dict[str, float]],
    candidate: dict[str, dict[str, float]],
    margin: float,
    gated: Sequence[str] = ("holdout", "seed_cv"),
    bounds: dict[str, dict[str, float]] | None = None,
) -> GateDecision:
    """Promote only if no head's macro-F1 drops by more than ``margin`` on any gated evaluation.

    ``current``/``candidate``: evaluation name -> head -> macro-F1. Evaluations or heads
    missing on either side are not compared (e.g. no held-out labels yet). ``bounds``
    (evaluation -> head -> a drop the true one exceeds with the gate's confidence, see
    :func:`holdout_drop_bounds`) judge a small sample by what it can tell: there, a head
    fails only if that bound is beyond the margin, not the drop observed on a few messages.
    """
    if margin < 0:
        raise InvalidInput(f"promotion margin must be >= 0, got {margin}")
    drops: dict[str, dict[str, float]] = {}
    failures = []
    for evaluation in gated:
        if evaluation not in current or evaluation not in candidate:
            continue
        for head in HEADS:
            if head not in current[evaluation] or head not in candidate[evaluation]:
                continue
            drop = current[evaluation][head] - candidate[evaluation][head]
            drops.setdefault(evaluation, {})[head] = round(drop, 4)
            bound = (bounds or {}).get(evaluation, {}).get(head)
            if bound is None and drop > margin + 1e-9:
                failures.append(
                    f"{head} macro-F1 on {evaluation} drops {drop:.3f} "
                    f"({current[evaluation][head]:.3f} -> {candidate[evaluation][head]:.3f}) > margin {margin:.3f}"
                )
            elif bound is not None and bound > margin + 1e-9:
                failures.append(
                    f"{head} macro-F1 on {evaluation} drops {drop:.3f} "
                    f"({current[evaluation][head]:.3f} -> {candidate[evaluation][head]:.3f}), "
                    f"surely more than {bound:.3f} > margin {margin:.3f}"
                )
    if not drops:
        return GateDecision(True, "no comparable evaluation (no current model)", drops)
    if failures:
        return GateDecision(False, "; ".join(failures), drops)
    compared = ", ".join(f"{e} (beyond its noise)" if e in (bounds or {}) else e for e in sorted(drops))
    return GateDecision(True, f"no head drops more than {margin:.3f} on {compared}", drops)


# --------------------------------------------------------------------------- holder


class ModelHolder:
    """The Triager the running service uses; replaced in one assignment (atomic for readers)."""

    def __init__(self, triager=None):
        self._triager = triager
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Any], None]] = []

    @property
    def triager(self):
        triager = self._triager
        if triager is None:
            raise ModelError("no model is loaded; train one with `triage ensure-model` or `triage retrain`")
        return triager

    @property
    def loaded(self) -> bool:
        return self._triager is not None

    def on_swap(self, listener: Callable[[Any], None]) -> None:
        """Call ``listener(new_triager)`` after every swap (e.g. to update a service attribute)."""
        self._listeners.append(listener)

    def swap(self, triager) -> None:
        with self._lock:
            self._triager = triager
            listeners = list(self._listeners)
        for listener in listeners:
            listener(triager)


# --------------------------------------------------------------------------- jobs


@dataclass
class RetrainJob:
    """A background retrain the UI and API poll: stage, fraction done, outcome."""

    id: str
    actor: str
    trigger: str  # "manual" | "auto" | "cli" | "api" | "ui"
    state: str = "queued"  # queued | running | done | failed
    stage: str = "queued"
    progress: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RegradeJob:
    """The re-grade of open cases after a promotion or rollback made by hand: it runs after
    the switch (in the background, or on a worker with a task queue), so the call answers at
    once. ``regraded``: cases whose labels changed, once done; ``superseded`` when another
    version was made current before it ran (that version's own re-grade covers the cases)."""

    id: str
    version: str
    actor: str
    state: str = "queued"  # queued | running | done | failed | superseded
    regraded: int | None = None
    error: str = ""
    started_at: str = ""
    finished_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RetrainOutcome:
    version: str
    promoted: bool
    reason: str
    metrics: dict[str, Any]
    regraded: int = 0


@dataclass
class LearningHooks:
    """What the loop needs from the rest of the system, as plain callables.

    confirmed_examples: every reviewer-confirmed example (masked text and four labels).
    message_history: the installation's stored messages (masked), unlabeled; the candidate
        learns from them by self-training (:mod:`models.history`) when the backend can.
    known_labels: labels of some history texts known beforehand (text -> head -> label), in
        place of the pseudo-labels: the public reviews' ``calm`` for praise.
    regrade: ``regrade(triager, actor) -> number of cases changed``; re-predicts open,
        unconfirmed cases and applies changed labels through the service's rules.
    audit: ``audit(action, actor, details)`` writes one audit entry.
    """

    confirmed_examples: Callable[[], list[LabeledExample]] = lambda: []
    message_history: Callable[[], list[str]] = lambda: []  # unlabeled texts for self-training
    known_labels: Callable[[], dict[str, dict[str, Any]]] = lambda: {}
    regrade: Callable[[Any, str], int] | None = None
    audit: Callable[[str, str, dict], None] | None = None
    ledger: RetrainLedger | None = None  # None: counted in memory (MemoryLedger)


class MemoryLedger:
    """Confirmations counted in memory, for a loop without a database (tests, scripts).

    The running service uses :class:`ServiceLedger` instead: a restart must neither lose nor
    repeat the count, and several server processes must not each start a retrain.
    """

    def __init__(self):
        self._pending = 0
        self._claimed = 0
        self._open: str | None = None
        self._outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def note(self, count: int) -> None:
        with self._lock:
            self._pending += count

    def pending(self) -> int:
        return self._pending

    def claim(self, job: str, actor: str, trigger: str, min_new: int = 0) -> int | None:
        with self._lock:
            if self._open is not None:
                raise Conflict(f"a retrain is already running (job {self._open})")
            if self._pending < min_new:
                return None
            self._claimed += self._pending
            self._pending = 0
            self._open = job
            return self._claimed

    def end(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        with self._lock:
            if self._open == job:
                self._open = None
            self._outcomes[("retrain", job)] = {"job": job, **outcome, "finished_at": _now()}

    def end_regrade(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        self._outcomes[("regrade", job)] = {"job": job, **outcome, "finished_at": _now()}

    def outcome(self, kind: str, job: str) -> dict[str, Any] | None:
        return self._outcomes.get((kind, job))


class ServiceLedger:
    """Confirmations counted from the database: review decisions after the data cut-off
    the latest retrain claimed (see ``TriageService.claim_retrain``)."""

    def __init__(self, service):
        self.service = service

    def note(self, count: int) -> None:
        """Nothing to do: the review decisions are the count."""

    def pending(self) -> int:
        return self.service.confirmations_since_retrain()

    def claim(self, job: str, actor: str, trigger: str, min_new: int = 0) -> int | None:
        return self.service.claim_retrain(job, actor, trigger, min_new)

    def end(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        self.service.end_retrain(job, actor, outcome)

    def end_regrade(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        self.service.end_regrade(job, actor, outcome)

    def outcome(self, kind: str, job: str) -> dict[str, Any] | None:
        """How a retrain or re-grade ended, whichever process ran it (the audit log)."""
        return self.service.job_outcome(kind, job)


RetrainLedger = MemoryLedger | ServiceLedger


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stderr_progress(stage: str, fraction: float) -> None:
    print(f"[retrain {fraction:5.1%}] {stage}", file=sys.stderr, flush=True)


class LearningLoop:
    """Retrain, gate, promote, roll back, swap and re-grade; one retrain at a time."""

    def __init__(
        self,
        store,
        *,
        seed_examples: Callable[[], list[LabeledExample]],
        hooks: LearningHooks | None = None,
        holder: ModelHolder | None = None,
        fit: Callable[[Sequence[str], dict[str, list], Sequence[float], Progress | None], Any],
        fit_quick: Callable[[Sequence[str], dict[str, list], Sequence[float], Progress | None], Any] | None = None,
        prepare: Callable[[str], str] = lambda text: text,
        load_triager: Callable[[Any, str | None], Any],
        margin: float = 0.02,
        confidence: float = GATE_CONFIDENCE,
        retrain_after: int = 50,
        holdout_share: float = HOLDOUT_SHARE,
        cv_folds: int = CV_FOLDS,
        min_holdout: int = MIN_HOLDOUT,
        confirmed_weight: float = CONFIRMED_WEIGHT,
        runner: JobRunner = DEFAULT_RUNNER,
        self_training=None,
        lexicon_dir: Path | str | None = None,
    ):
        """``fit(texts, labels, weights, progress) -> backend`` trains a fresh backend
        (``fit_quick``, if given, the same recipe cheaper, for cross-validation only);
        ``prepare`` turns a text into the backend's input (e.g. ``triage.text.prepare``, run
        once per text and retrain, not once per fold);
        ``load_triager(store, version)`` builds the Triager the service runs; ``runner``
        runs the background retrain (:mod:`triage.jobs.runner`)."""
        if retrain_after < 1:
            raise InvalidInput(f"retrain_after_confirmations must be >= 1, got {retrain_after}")
        if cv_folds < 2:
            raise InvalidInput(f"cv_folds must be >= 2, got {cv_folds}")
        if not confirmed_weight > 0:
            raise InvalidInput(f"confirmed_weight must be > 0, got {confirmed_weight}")
        if not 0 < confidence < 1:
            raise InvalidInput(f"promotion confidence must be in (0, 1), got {confidence}")
        self.store = store
        self.seed_examples = seed_examples
        self.hooks = hooks or LearningHooks()
        self.holder = holder or ModelHolder()
        self._fit = fit
        self._fit_quick = fit_quick or fit
        self._prepare_text = prepare
        self._prepared: dict[str, Any] = {}
        self._load_triager = load_triager
        self.margin = margin
        self.confidence = confidence
        self.retrain_after = retrain_after
        self.holdout_share = holdout_share
        self.cv_folds = cv_folds
        self.min_holdout = min_holdout
        self.confirmed_weight = confirmed_weight
        from models.history import SelfTraining

        self.self_training = self_training or SelfTraining()
        self._job_lock = threading.Lock()
        self._activate_lock = threading.Lock()  # one promotion/rollback at a time
        self._jobs: dict[str, RetrainJob] = {}
        self._running: RetrainJob | None = None
        self._regrades: dict[str, RegradeJob] = {}
        self._last_regrade: RegradeJob | None = None
        self.runner = runner
        self.lexicon_dir = lexicon_dir  # the rules' lexicons, for the 一级 operating-point curve
        self._task: JobHandle | None = None
        self._regrade_tasks: dict[str, JobHandle] = {}  # re-grades running on threads of this process
        self.ledger = self.hooks.ledger or MemoryLedger()

    # ----------------------------------------------------------------- training

    def _prepare(self, text: str):
        prepared = self._prepared.get(text)
        if prepared is None:
            prepared = self._prepared[text] = self._prepare_text(text)
        return prepared

    def _training_set(self, seed: Sequence[LabeledExample], confirmed: Sequence[LabeledExample]):
        texts = [self._prepare(example.text) for example in [*seed, *confirmed]]
        labels = {head: [example.labels[head] for example in [*seed, *confirmed]] for head in HEADS}
        weights = [1.0] * len(seed) + [self.confirmed_weight] * len(confirmed)
        return texts, labels, weights

    def _train(self, seed, confirmed, progress: Progress | None = None, quick: bool = False,
               history: Sequence[str] = ()):
        """A fresh backend on seed + confirmed; with ``history``, self-trained on it too
        (the gate's seed cross-validation uses the labeled recipe alone: ``quick``)."""
        texts, labels, weights = self._training_set(seed, confirmed)
        if quick or not history:
            return (self._fit_quick if quick else self._fit)(texts, labels, weights, progress)
        from models.history import self_train

        unlabeled = [self._prepare(text) for text in history]
        return self_train(self._fit, texts, labels, weights, unlabeled, self.self_training, progress=progress,
                          known=self.hooks.known_labels(),
                          report=lambda msg: print(f"[retrain] {msg}", file=sys.stderr))

    def seed_cv(self, seed: Sequence[LabeledExample], confirmed: Sequence[LabeledExample], progress: Progress | None = None):
        """Macro-F1 per head over seed folds, training on the other folds plus ``confirmed``."""
        predictions: dict[str, list[Any]] = {head: [] for head in HEADS}
        ordered: list[LabeledExample] = []
        for fold in range(self.cv_folds):
            train = [example for example in seed if fold_of(example.key, self.cv_folds) != fold]
            test = [example for example in seed if fold_of(example.key, self.cv_folds) == fold]
            if not test or not train:
                continue
            if progress:
                progress(f"seed cross-validation fold {fold + 1}/{self.cv_folds}", fold / self.cv_folds)
            backend = self._train(train, confirmed, quick=True)
            for head, values in predict_labels(backend, [self._prepare(example.text) for example in test]).items():
                predictions[head].extend(values)
            ordered.extend(test)
        return macro_f1_by_head(ordered, {head: values for head, values in predictions.items() if values})

    def _holdout_labels(self, backend, holdout: Sequence[LabeledExample]) -> dict[str, list[Any]]:
        return predict_labels(backend, [self._prepare(example.text) for example in holdout])

    def _current_seed_cv(self, current_version: str, seed, progress: Progress | None):
        """The current model's recipe scored by seed CV, cached in its manifest.

        A version this loop trained recorded it at training time; for others (the default
        model) the recipe is seed-only, scored once and written back.
        """
        manifest = self._manifest(current_version)
        cached = (manifest.get("metrics") or {}).get("learning", {}).get("seed_cv")
        if cached:
            return cached
        scores = self.seed_cv(seed, [], progress)
        learning = dict((manifest.get("metrics") or {}).get("learning", {}))
        learning["seed_cv"] = scores
        try:
            self.store.update_manifest(current_version, metrics={**(manifest.get("metrics") or {}), "learning": learning})
        except Exception as exc:  # caching is an optimisation; the gate result does not depend on it
            print(f"[retrain] could not cache seed CV of {current_version}: {exc}", file=sys.stderr)
        return scores

    def _manifest(self, version: str) -> dict[str, Any]:
        return self.store.read_manifest(version)  # NotFound / ModelError name the problem

    def retrain(self, actor: str, progress: Progress | None = None, trigger: str = "manual") -> RetrainOutcome:
        """Train a candidate, gate it against the current model, save it, promote if it passes.

        Conflict if another retrain (this process or another one) is running."""
        job = uuid.uuid4().hex[:12]
        remote = getattr(self.runner, "remote", False)  # queued jobs end on a worker: the ledger's claim decides
        with self._job_lock:
            if not remote and self._running is not None and self._running.state in ("queued", "running"):
                raise Conflict(f"a retrain is already running (job {self._running.id}, {self._running.stage})")
            cutoff = self.ledger.claim(job, actor, trigger)
        return self._run_claimed(job, cutoff, actor, progress, trigger)

    def _run_claimed(self, job: str, cutoff: int | None, actor: str, progress: Progress | None,
                     trigger: str) -> RetrainOutcome:
        """The retrain of a claimed ``job``; the claim is closed however it ends."""
        try:
            outcome = self._retrain(actor, progress, trigger, cutoff)
        except BaseException as exc:
            self.ledger.end(job, actor, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"})
            raise
        self.ledger.end(job, actor, {"state": "done", "version": outcome.version, "promoted": outcome.promoted,
                                     "reason": outcome.reason, "regraded": outcome.regraded})
        return outcome

    def _retrain(self, actor: str, progress: Progress | None, trigger: str, cutoff: int | None) -> RetrainOutcome:
        report = progress or _stderr_progress
        report("loading seed data and confirmed labels", 0.0)
        self._prepared = {}
        seed = list(self.seed_examples())
        confirmed = list(self.hooks.confirmed_examples())
        if not seed and not confirmed:
            raise ModelError("no training data: the seed set is empty and nothing is confirmed yet")
        train_confirmed, holdout = split_confirmed(confirmed, self.holdout_share)
        # The held-out confirmed texts judge the candidate: they must not reach it as history.
        held_out_texts = {example.text for example in holdout}
        history = [text for text in self.hooks.message_history() if text not in held_out_texts]

        report(f"training candidate on {len(seed)} seed + {len(train_confirmed)} confirmed examples"
               + (f" + {len(history)} unlabeled messages" if history else ""), 0.05)
        candidate = self._train(seed, train_confirmed, lambda stage, f: report(f"candidate: {stage}", 0.05 + 0.25 * f),
                                history=history)

        current_version = self.store.current_version()
        candidate_metrics: dict[str, dict[str, float]] = {}
        current_metrics: dict[str, dict[str, float]] = {}
        gated = ["seed_cv"]
        bounds: dict[str, dict[str, float]] = {}
        if holdout:
            report(f"scoring on {len(holdout)} held-out confirmed labels", 0.32)
            candidate_labels = self._holdout_labels(candidate, holdout)
            candidate_metrics["holdout"] = macro_f1_by_head(holdout, candidate_labels)
            if current_version is not None:
                current_labels = self._holdout_labels(self._current_backend(current_version), holdout)
                current_metrics["holdout"] = macro_f1_by_head(holdout, current_labels)
                bounds["holdout"] = holdout_drop_bounds(holdout, current_labels, candidate_labels, self.confidence)
            if len(holdout) >= self.min_holdout:
                gated.append("holdout")
        cv_progress = lambda stage, f: report(f"candidate {stage}", 0.35 + 0.3 * f)  # noqa: E731
        candidate_metrics["seed_cv"] = self.seed_cv(seed, train_confirmed, cv_progress)
        if current_version is not None:
            current_metrics["seed_cv"] = self._current_seed_cv(
                current_version, seed, lambda stage, f: report(f"current model {stage}", 0.65 + 0.25 * f)
            )
        decision = quality_gate(current_metrics, candidate_metrics, self.margin, gated, bounds)

        metrics = {
            "learning": {
                "seed_cv": candidate_metrics["seed_cv"],
                "holdout": candidate_metrics.get("holdout", {}),
                "compared_with": current_version,
                "current": current_metrics,
                "drops": decision.drops,
                "drop_bounds": {e: {h: round(v, 4) for h, v in b.items()} for e, b in bounds.items()},
                "confidence": self.confidence,
                "gated": gated,
                "seed_examples": len(seed),
                "confirmed_train": len(train_confirmed),
                "confirmed_holdout": len(holdout),
                "unlabeled_history": len(history),
                "margin": self.margin,
            }
        }
        report("saving candidate", 0.92)
        version = self._save(candidate, metrics, decision, trigger, cutoff,
                             operating_point=self._urgent_curve(candidate, seed, train_confirmed))
        self._audit("model.trained", actor, {"version": version, "promoted": decision.promote, "reason": decision.reason})
        regraded = 0
        if decision.promote:
            regraded = self._change(version, actor, "model.promoted", f"quality gate: {decision.reason}",
                                    background=False).regraded or 0
        report(f"{'promoted' if decision.promote else 'rejected'} {version}: {decision.reason}", 1.0)
        self._prepared = {}
        return RetrainOutcome(version, decision.promote, decision.reason, metrics, regraded)

    def _current_backend(self, version: str):
        backend, _manifest = self.store.load(version)
        return backend

    def _urgent_curve(self, candidate, seed, confirmed) -> dict[str, Any] | None:
        """一级 recall and precision per threshold on the candidate's confirmed labels, out of
        fold (:mod:`models.operating_point`); ``TRIAGE_URGENT_RECALL`` reads it when serving."""
        from models.operating_point import curve_from_backend
        from triage.lexicons import load_lexicons

        return curve_from_backend(candidate, range(len(seed), len(seed) + len(confirmed)),
                                  [self._prepare(example.text) for example in confirmed],
                                  [example.labels["urgency"] for example in confirmed],
                                  lexicons=load_lexicons(self.lexicon_dir))

    def _save(self, backend, metrics, decision: GateDecision, trigger: str, cutoff: int | None,
              operating_point: dict[str, Any] | None = None) -> str:
        extra = {
            "metrics": metrics,
            "operating_point": operating_point,
            "status": "candidate" if decision.promote else "rejected",
            "reason": decision.reason,
            "trigger": trigger,
            "confirmed_up_to": cutoff,  # the newest review decision this version's data cut-off includes
        }
        return self.store.save(backend, manifest_extra=extra)

    # ----------------------------------------------------------------- promote / rollback

    def promote(self, version: str, actor: str, reason: str = "promoted by hand",
                background: bool = False) -> RegradeJob:
        """Make any saved version (also a rejected one) current, then re-grade the open cases:
        at once (``background=False``: the command line without a task queue) or as a
        background job (a thread, or a worker's ``models.regrade`` task with a task queue)."""
        self._manifest(version)  # NotFound for unknown versions
        if self.store.current_version() == version:
            raise Conflict(f"model version {version} is already the current one")
        return self._change(version, actor, "model.promoted", reason, background)

    def rollback(self, version: str, actor: str, reason: str = "rolled back by hand",
                 background: bool = False) -> RegradeJob:
        """Return to an earlier version (refuses versions created after the current one); the
        open cases are re-graded as :meth:`promote` says."""
        target = self._manifest(version)
        current = self.store.current_version()
        if current == version:
            raise Conflict(f"model version {version} is already the current one")
        if current is not None and str(target.get("created", "")) > str(self._manifest(current).get("created", "")):
            raise Conflict(f"{version} is newer than the current {current}; promote it instead of rolling back")
        return self._change(version, actor, "model.rolled_back", reason, background)

    def _change(self, version: str, actor: str, action: str, reason: str, background: bool) -> RegradeJob:
        triager = self._switch(version, actor, action, reason)
        job = RegradeJob(id=uuid.uuid4().hex[:12], version=version, actor=actor, started_at=_now())
        self.wait_regrades(timeout=0)  # forget the finished ones
        self._regrades[job.id] = job
        self._last_regrade = job
        if self.hooks.regrade is None:
            job.state, job.regraded, job.finished_at = "done", 0, _now()
            return job
        if not background:
            self._run_regrade(job, triager)
            return job
        runner = self.runner
        if getattr(runner, "remote", False):  # a worker runs it (models.regrade task)
            try:
                runner.enqueue("models.regrade", job=job.id, version=version, actor=actor)
                return job
            except Exception as exc:  # broker down: the switch stands; re-grade here instead
                print(f"[models] could not queue the re-grade ({exc}); re-grading in this process", file=sys.stderr)
                runner = DEFAULT_RUNNER
        self._regrade_tasks[job.id] = runner.submit(f"regrade-{job.id}", lambda: self._run_regrade(job, triager))
        return job

    def wait_regrades(self, timeout: float | None = None) -> list[RegradeJob]:
        """Block until the re-grades running on threads of this process end (shutdown, tests;
        ``timeout`` for each); returns the jobs waited for."""
        tasks = list(self._regrade_tasks.items())
        for _, task in tasks:
            task.join(timeout)
        self._regrade_tasks = {k: task for k, task in self._regrade_tasks.items() if task.alive}
        return [self._regrades[k] for k, _ in tasks]

    def run_queued_regrade(self, job: str, version: str, actor: str) -> RegradeJob:
        """The ``models.regrade`` task of a worker: re-grade the open cases with ``version``
        unless another version became current meanwhile (its own re-grade covers them)."""
        record = RegradeJob(id=job, version=version, actor=actor, started_at=_now())
        if self.store.current_version() != version:
            record.state, record.finished_at = "superseded", _now()
            self.ledger.end_regrade(job, actor, {"state": "superseded", "version": version})
            return record
        self._run_regrade(record, self._load_triager(self.store, version))
        return record

    def _run_regrade(self, job: RegradeJob, triager) -> None:
        job.state = "running"
        try:
            job.regraded = self.hooks.regrade(triager, f"model:{job.version}")
            job.state = "done"
            outcome = {"state": "done", "version": job.version, "regraded": job.regraded}
        except Exception as exc:  # the switch stands; the cases keep their labels until the next re-grade
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            outcome = {"state": "failed", "version": job.version, "error": job.error}
            traceback.print_exc(file=sys.stderr)
        finally:
            job.finished_at = _now()
        try:
            self.ledger.end_regrade(job.id, job.actor, outcome)
        except Exception as exc:  # the database went away meanwhile: the job's own state stands
            print(f"[models] re-grade {job.id} {job.state}, but its outcome could not be recorded ({exc})",
                  file=sys.stderr)

    def regrade_job(self, job_id: str | None = None) -> RegradeJob | None:
        """A re-grade by id (or the latest one this process started), with its outcome read
        from the ledger when another process (a worker) ran it."""
        job = self._last_regrade if job_id is None else self._regrades.get(job_id)
        if job_id is not None and job is None:
            raise NotFound(f"re-grade job {job_id!r} does not exist")
        if job is not None and job.state in ("queued", "running"):
            ended = self.ledger.outcome("regrade", job.id)
            if ended is not None:
                job.state = ended.get("state", job.state)
                job.regraded, job.error = ended.get("regraded"), ended.get("error", "")
                job.finished_at = ended.get("finished_at", "")
        return job

    def _switch(self, version: str, actor: str, action: str, reason: str):
        with self._activate_lock:
            previous = self.store.current_version()
            triager = self._load_triager(self.store, version)  # load first: a broken version never goes live
            self.store.set_current(version)
            self.store.update_manifest(version, status="promoted")
            self.holder.swap(triager)
        self._audit(action, actor, {"version": version, "previous": previous, "reason": reason})
        return triager

    def _audit(self, action: str, actor: str, details: dict) -> None:
        if self.hooks.audit is not None:
            self.hooks.audit(action, actor, details)

    # ----------------------------------------------------------------- background

    def start_retrain(self, actor: str, trigger: str = "manual", min_new: int = 0) -> RetrainJob | None:
        """Run :meth:`retrain` as a background job; Conflict if one is already running here or
        in another process. With ``min_new``, None (no job) unless at least that many
        confirmations arrived since the latest retrain's data cut-off."""
        remote = getattr(self.runner, "remote", False)  # queued jobs end on a worker: the ledger's claim decides
        with self._job_lock:
            if not remote and self._running is not None and self._running.state in ("queued", "running"):
                raise Conflict(f"a retrain is already running (job {self._running.id}, {self._running.stage})")
            job = RetrainJob(id=uuid.uuid4().hex[:12], actor=actor, trigger=trigger, started_at=_now())
            cutoff = self.ledger.claim(job.id, actor, trigger, min_new)
            if cutoff is None:
                return None
            self._jobs[job.id] = job
            self._running = job

        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, round(max(0.0, min(1.0, fraction)), 3)
            _stderr_progress(stage, fraction)

        def run() -> None:
            job.state = "running"
            try:
                outcome = self._run_claimed(job.id, cutoff, actor, progress, trigger)
                job.version, job.promoted, job.reason = outcome.version, outcome.promoted, outcome.reason
                job.metrics = outcome.metrics
                job.state = "done"
            except Exception as exc:  # the job reports it; the service keeps running the old model
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
            finally:
                job.finished_at = _now()

        if remote:  # a task queue: a `triage worker` runs it (retrain task)
            job.stage = "queued for a worker"
            try:
                self.runner.enqueue("retrain", job=job.id, cutoff=cutoff, actor=actor, trigger=trigger)
            except Exception as exc:  # broker down: release the claim so a later retrain may start
                self.ledger.end(job.id, actor, {"state": "failed", "error": f"not queued: {exc}"})
                job.state, job.error, job.finished_at = "failed", f"could not queue the retrain: {exc}", _now()
            return job
        self._task = self.runner.submit(f"retrain-{job.id}", run)
        return job

    def run_queued(self, job: str, cutoff: int | None, actor: str, trigger: str) -> RetrainOutcome:
        """The ``retrain`` task of a worker: the retrain claimed as ``job`` by the process
        that queued it; the claim is closed however it ends."""
        return self._run_claimed(job, cutoff, actor, _stderr_progress, trigger)

    def job(self, job_id: str | None = None) -> RetrainJob | None:
        """A job by id, or the latest one (None if none ran). A job queued for a worker shows
        the outcome the worker recorded in the ledger once it ended."""
        if job_id is None:
            job = self._running
        else:
            try:
                job = self._jobs[job_id]
            except KeyError:
                raise NotFound(f"retrain job {job_id!r} does not exist") from None
        if job is not None and job.state in ("queued", "running") and getattr(self.runner, "remote", False):
            ended = self.ledger.outcome("retrain", job.id)
            if ended is not None:
                job.state = "failed" if ended.get("state") == "failed" else "done"
                job.stage = "done" if job.state == "done" else "failed"
                job.progress = 1.0 if job.state == "done" else job.progress
                job.version, job.promoted = ended.get("version"), ended.get("promoted")
                job.reason, job.error = ended.get("reason", ""), ended.get("error", "")
                job.finished_at = ended.get("finished_at", "")
        return job

    def wait(self, timeout: float | None = None) -> RetrainJob | None:
        """Block until the running job ends (tests, CLI)."""
        task = self._task
        if task is not None:
            task.join(timeout)
        return self._running

    def note_confirmations(self, count: int = 1, actor: str = "system") -> RetrainJob | None:
        """Start a retrain once ``retrain_after`` confirmations arrived since the latest
        retrain's data cut-off (counted by the ledger, so restarts and other processes agree)."""
        self.ledger.note(count)
        if self.ledger.pending() < self.retrain_after:
            return None
        try:
            return self.start_retrain(actor, trigger="auto", min_new=self.retrain_after)
        except Conflict:
            return None  # one is running; its cut-off leaves the newer confirmations for the next one

    @property
    def confirmations_since_retrain(self) -> int:
        return self.ledger.pending()


# --------------------------------------------------------------------------- wiring


def wait_for_job(loop: "LearningLoop", timeout: float = 600.0) -> RetrainJob | None:
    """Block until the loop's latest retrain ends (tests, scripts); returns it."""
    loop.wait(timeout)
    return loop.job()


def backend_fitter(backend: str = "sklearn", sentiment: Callable[[], Any] | None = None, **params: Any):
    """``(fit, fit_quick)`` for a registered backend.

    ``fit_quick`` is used only for the gate's seed cross-validation: for the sklearn backend
    it skips probability calibration, which rescales scores but never changes the argmax,
    so the macro-F1 it measures is that of the full recipe at a quarter of the cost.
    ``sentiment()`` gives the weak sentiment signal (or None) for backends that take one.
    """
    from models.base import get_backend_class
    from models.training import with_sentiment

    backend_cls = get_backend_class(backend)

    def build(options):
        return with_sentiment(backend_cls(**options), sentiment() if sentiment is not None else None)

    def fit(texts, labels, weights, progress=None):
        return build(params).fit(texts, labels, sample_weight=weights, progress=progress)

    def fit_quick(texts, labels, weights, progress=None):
        quick = {**params, "calibration_folds": 0} if backend == "sklearn" else params
        return build(quick).fit(texts, labels, sample_weight=weights, progress=progress)

    return fit, fit_quick


def seed_examples_from(paths) -> Callable[[], list[LabeledExample]]:
    """A loader of the seed set (JSONL files or folders), read on every retrain so edits count."""
    from models.training import load_labeled

    def load() -> list[LabeledExample]:
        records, problems = load_labeled(paths)
        for problem in problems:
            print(f"[retrain] skipped seed line {problem}", file=sys.stderr)
        return [LabeledExample.from_record(r, key=f"seed-{r.get('id') or i}") for i, r in enumerate(records)]

    return load


def loop_for_service(service, store, settings=None, **kwargs) -> LearningLoop:
    """The learning loop of a running :class:`triage.service.TriageService`.

    Confirmed labels come from the service's review decisions, promotions re-grade open
    cases through ``service.regrade_open_cases`` and are audited with ``service.audit``;
    the service's model holder is the one that gets swapped.
    """
    from models.public_reviews import cached_public_reviews
    from triage.lexicons import DEFAULT_LEXICON_DIR
    from triage.text import prepare
    from triage.triager import Triager

    settings = settings or service.settings

    def confirmed() -> list[LabeledExample]:
        return [
            LabeledExample.from_record({**row["labels"], "text": row["text"], "id": row["case_id"]},
                                       confirmed=True, key=f"case-{row['case_id']}")
            for row in service.confirmed_examples()
        ]

    def audit(action: str, actor: str, details: dict) -> None:
        service.audit(action, actor, details, entity="model", entity_id=str(details.get("version", "-")))

    holder = service.models if isinstance(service.models, ModelHolder) else None
    if holder is None:
        holder = ModelHolder(service.models.triager if service.models.loaded else None)
        service.models = holder
    # The public reviews the default trains on (models/public_reviews.py) take part in every
    # retrain the same way: unlabeled text beside the stored messages, and the sentiment signal.
    public = cached_public_reviews(settings.public_reviews)

    def sentiment():
        reviews = public()
        return reviews.sentiment() if reviews else None

    fit, fit_quick = backend_fitter(settings.backend, sentiment=sentiment)

    def history() -> list[str]:
        reviews = public()
        return service.message_history(settings.history_limit) + (reviews.texts if reviews else [])

    # The public reviews are the same at every retrain: prepared once for the process's life
    # (the loop's own cache lasts one retrain, as stored messages and labels change). With the
    # shipped lexicons, the reviews' own prepared texts (made for the sentiment signal) serve.
    @functools.cache
    def public_prepared() -> dict[str, Any]:
        reviews = public()
        if reviews is None:
            return {}
        same = Path(settings.lexicon_dir).resolve() == DEFAULT_LEXICON_DIR.resolve()
        return dict(zip(reviews.texts, reviews.prepared if same else
                        (prepare(t, settings.lexicon_dir) for t in reviews.texts)))

    def prepare_text(text: str):
        found = public_prepared().get(text)
        return found if found is not None else prepare(text, settings.lexicon_dir)

    options = {
        "fit": fit,
        "fit_quick": fit_quick,
        "prepare": prepare_text,
        "load_triager": lambda store, version: Triager.from_store(store, version, lexicon_dir=settings.lexicon_dir),
        "margin": settings.promotion_margin,
        "confidence": settings.promotion_confidence,
        "retrain_after": settings.retrain_after_confirmations,
        "confirmed_weight": settings.confirmed_weight,
        "lexicon_dir": settings.lexicon_dir,
        **kwargs,
    }
    return LearningLoop(
        store,
        seed_examples=seed_examples_from([settings.seed_dir]),
        hooks=LearningHooks(confirmed_examples=confirmed, regrade=service.regrade_open_cases, audit=audit,
                            ledger=ServiceLedger(service),
                            message_history=history,
                            known_labels=lambda: public().known_labels() if public() else {}),
        holder=holder,
        **options,
    )
