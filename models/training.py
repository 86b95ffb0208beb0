"""Read labeled JSONL, train a backend, and put the default model into the store.

Every bad line is reported with its file and line number and skipped; nothing is dropped
silently. Texts are masked by :func:`triage.text.prepare` before any model sees them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base import ClassifierBackend, ProgressFn, get_backend_class
from triage.errors import InvalidInput, ModelError
from triage.taxonomy import HEADS, validate_label


@dataclass(frozen=True)
class LineProblem:
    """One input line that was skipped, and why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """JSONL files named directly, plus every ``*.jsonl`` inside named folders (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.rglob("*.jsonl"))
            if not found:
                raise InvalidInput(f"folder {path} contains no .jsonl files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInput(f"data path {path} does not exist")
    return files


def parse_record(obj: Any, require_labels: bool = True) -> dict[str, Any]:
    """A clean record from one decoded JSON line; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if text is None:
        raise ValueError("no 'text' field")
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("'text' is empty")
    record: dict[str, Any] = {"id": obj.get("id"), "text": text}
    if "source" in obj:
        record["source"] = obj["source"]
    for head in HEADS:
        if head not in obj:
            if require_labels:
                raise ValueError(f"no '{head}' label")
            continue
        record[head] = validate_label(head, obj[head])
    return record


def read_jsonl(
    path: Path, parse: Callable[[Any], dict[str, Any]], problems: list[LineProblem], where: bool = False
) -> list[dict[str, Any]]:
    """The records of one JSONL file; with ``where``, each says its ``"file:line"``."""
    records = []
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(LineProblem(str(path), lineno, f"not JSON ({exc.msg})"))
                continue
            try:
                record = parse(obj)
            except ValueError as exc:
                problems.append(LineProblem(str(path), lineno, str(exc)))
                continue
            if where:
                record["where"] = f"{path}:{lineno}"
            records.append(record)
    return records


def load_labeled(
    paths: Sequence[Path | str] | Path | str, require_labels: bool = True, where: bool = False
) -> tuple[list[dict[str, Any]], list[LineProblem]]:
    """Records with all four labels from JSONL files or folders, and the lines skipped
    (``where``: each record also says its ``"file:line"``)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    problems: list[LineProblem] = []
    records: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        records.extend(read_jsonl(path, lambda o: parse_record(o, require_labels), problems, where))
    return records, problems


def read_unlabeled(paths: Iterable[Path | str], limit: int | None = None,
                   report: Callable[[str], None] | None = None) -> list[str]:
    """Texts of the installation's own messages, for self-training (:mod:`models.history`):
    JSONL (a ``text`` field) or CSV (a ``review`` or ``text`` column) files.

    Bad lines are reported with their file and line number and skipped; a file of another
    kind, or a CSV without such a column, is an error that names it. Blank and repeated
    texts are dropped; with ``limit``, the first ``limit`` texts are kept.
    """
    import csv
    import sys

    say = report or (lambda msg: print(msg, file=sys.stderr))

    def text_of(obj: Any) -> str:
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError("no 'text' string")
        return obj["text"]

    texts: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise InvalidInput(f"unlabeled data {path} does not exist or is not a file")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            problems: list[LineProblem] = []
            texts.extend(read_jsonl(path, text_of, problems))
            for problem in problems:
                say(f"skipped {problem}")
        elif suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", errors="replace", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                column = next((c for c in ("review", "text") if c in (reader.fieldnames or [])), None)
                if column is None:
                    raise InvalidInput(f"{path} has no 'review' or 'text' column (columns: {reader.fieldnames})")
                texts.extend(row.get(column) or "" for row in reader)
        else:
            raise InvalidInput(f"{path}: unlabeled data must be .jsonl (a 'text' field) or .csv (a 'review' or 'text' column)")
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    return unique if limit is None else unique[:limit]


def data_hash(records: Sequence[dict[str, Any]]) -> str:
    """Order-independent SHA-256 of texts and labels: the same data gives the same hash."""
    lines = sorted(
        json.dumps([r["text"]] + [r.get(h) for h in HEADS], ensure_ascii=False) for r in records
    )
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def label_counts(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {h: {str(k): v for k, v in sorted(Counter(r[h] for r in records).items(), key=str)} for h in HEADS}


def default_corpora_dir() -> Path | None:
    """Real review corpora for the sentiment signal: ``TRIAGE_CORPORA_DIR`` (settings
    ``corpora_dir``; "none", the default, turns the signal off)."""
    from triage.settings import Settings

    configured = Settings().corpora_dir.strip()
    return None if configured.lower() in ("", "none", "off") else Path(configured)


CORPUS_FILES = ("online_shopping_10_cats.csv", "waimai_10k.csv", "ChnSentiCorp_htl_all.csv")


def evaluation_texts(folder: Path | None) -> set[str]:
    """Texts of the labeled evaluation file next to the corpora (``../dev_labeled.jsonl``).

    The corpora contain those very reviews; training the sentiment signal on them would
    leak the evaluation set into the model, so they are always left out.
    """
    texts: set[str] = set()
    if folder is None:
        return texts
    for path in sorted(Path(folder).parent.glob("*labeled*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    text = json.loads(line).get("text")
                except (ValueError, AttributeError):
                    continue
                if isinstance(text, str):
                    texts.add(text.strip())
    return texts


def load_sentiment_corpora(
    folder: Path | str | None = None, limit: int = 40_000, seed: int = 0
) -> tuple[list[str], list[int]]:
    """Review texts and 1 = negative / 0 = positive from the corpora CSVs (``label`` 1 = positive).

    Returns empty lists when the folder is absent: the weak signal is optional. At most
    ``limit`` reviews, sampled evenly per file and class so no file or class dominates.
    Reviews that appear in a labeled evaluation file beside the corpora are left out.
    """
    import csv
    import random

    folder = Path(folder) if folder else default_corpora_dir()
    if folder is None:
        return [], []
    held_out = evaluation_texts(folder)
    groups: dict[tuple[str, int], list[str]] = {}
    for name in CORPUS_FILES:
        path = folder / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.DictReader(f):
                text, label = (row.get("review") or "").strip(), (row.get("label") or "").strip()
                if text and label in ("0", "1") and text not in held_out:
                    groups.setdefault((name, int(label)), []).append(text)
    if not groups:
        return [], []
    rng = random.Random(seed)
    per_group = max(1, limit // len(groups))
    texts, negative = [], []
    for (name, label), items in sorted(groups.items()):
        picked = items if len(items) <= per_group else rng.sample(items, per_group)
        texts.extend(picked)
        negative.extend([1 - label] * len(picked))
    return texts, negative


def fit_sentiment(folder: Path | str | None = None, limit: int = 40_000, report: Callable[[str], None] | None = None):
    """A :class:`models.sklearn_backend.SentimentModel` from the corpora, or None without them."""
    from models.sklearn_backend import SentimentModel

    texts, negative = load_sentiment_corpora(folder, limit)
    if not texts:
        if report:
            report("no review corpora found; training without the sentiment signal")
        return None
    if report:
        report(f"sentiment signal: {len(texts)} real reviews from {folder or default_corpora_dir()}")
    return SentimentModel().fit(texts, negative)


def with_sentiment(model: ClassifierBackend, sentiment) -> ClassifierBackend:
    """``model`` with the weak sentiment signal set where it takes one (an ensemble: its members)."""
    if sentiment is not None:
        for part in getattr(model, "members", [model]):
            if hasattr(part, "sentiment"):
                part.sentiment = sentiment
    return model


def train_backend(
    records: Sequence[dict[str, Any]],
    backend: str = "sklearn",
    sample_weight: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
    sentiment=None,
    unlabeled: Sequence[str] | None = None,
    self_training=None,
    report: Callable[[str], None] | None = None,
    known_labels=None,
    **params: Any,
) -> ClassifierBackend:
    """Fit a fresh backend of the registered name ``backend`` on labeled ``records``.

    ``sentiment`` (a fitted SentimentModel) adds the corpora's weak signal to backends
    that support it. ``unlabeled`` texts (the installation's message history) are used by
    self-training (:mod:`models.history`, settings in ``self_training``) where the backend
    supports it; ``known_labels`` (text -> head -> label) replace pseudo-labels there.
    """
    from models.history import SelfTraining, self_train, supports_partial_labels

    if not records:
        raise ModelError("no labeled records to train on")
    missing = [h for h in HEADS if any(h not in r for r in records)]
    if missing:
        raise ModelError(f"every training record needs the labels {', '.join(missing)}")
    if sample_weight is not None and len(sample_weight) != len(records):
        raise ModelError(f"{len(sample_weight)} sample weights for {len(records)} records")
    backend_cls = get_backend_class(backend)

    def fit(inputs, labels, weights, fit_progress):
        model = with_sentiment(backend_cls(**params), sentiment)
        return model.fit(inputs, labels, sample_weight=weights, progress=fit_progress)

    texts: list[Any] = [r["text"] for r in records]
    labels = {h: [r[h] for r in records] for h in HEADS}
    if not unlabeled:
        return fit(texts, labels, sample_weight, progress)
    history: list[Any] = list(unlabeled)
    if supports_partial_labels(backend_cls):  # both rounds see the same texts: prepare them once
        from triage.text import PreparedText, prepare

        texts, history = ([t if isinstance(t, PreparedText) else prepare(t) for t in items] for items in (texts, history))
    return self_train(fit, texts, labels, sample_weight, history, self_training or SelfTraining(),
                      progress=progress, report=report, known=known_labels)


PUBLIC_SENTIMENT = "public"  # train_recipe's default: the public reviews' sentiment signal


def train_recipe(
    records: Sequence[dict[str, Any]],
    confirmed: Sequence[dict[str, Any]] = (),
    history: Sequence[Any] = (),
    *,
    public=None,
    confirmed_weight: float | None = None,
    backend: str = "sklearn",
    sentiment: Any = PUBLIC_SENTIMENT,
    self_training=None,
    progress: ProgressFn | None = None,
    report: Callable[[str], None] | None = None,
    **params: Any,
) -> ClassifierBackend:
    """The shipped recipe, as ``triage train`` runs it: the labeled ``records`` (the seed)
    weigh 1 each and the reviewers' ``confirmed`` labels ``confirmed_weight`` each (default:
    the settings' default, ``TRIAGE_CONFIRMED_WEIGHT``);
    self-training reads the installation's ``history`` and then the ``public`` reviews
    (:class:`models.public_reviews.PublicReviews`, or None), whose known labels replace
    pseudo-labels. ``sentiment``: the public reviews' signal by default, a fitted
    SentimentModel (e.g. from the corpora), or None for none. Texts may be prepared
    already (:func:`triage.text.prepare`), as benchmarks that train many times do."""
    if isinstance(sentiment, str) and sentiment == PUBLIC_SENTIMENT:
        sentiment = public.sentiment() if public is not None else None
    if confirmed_weight is None:
        from triage.settings import Settings

        confirmed_weight = Settings.model_fields["confirmed_weight"].default
    weights = [1.0] * len(records) + [confirmed_weight] * len(confirmed) if confirmed else None
    unlabeled = [*history, *(public.prepared if public is not None else [])]
    return train_backend([*records, *confirmed], backend, sample_weight=weights, progress=progress,
                         sentiment=sentiment, unlabeled=unlabeled or None, self_training=self_training,
                         report=report, known_labels=public.known_labels() if public is not None else None, **params)


def train_default(
    settings=None,
    data_paths: Sequence[Path | str] | None = None,
    store=None,
    set_current: bool = True,
    cv_folds: int = 0,
    progress: ProgressFn | None = None,
    report: Callable[[str], None] | None = None,
    corpora: Path | str | None | bool = None,
    confirmed_paths: Sequence[Path | str] | None = None,
    unlabeled_paths: Sequence[Path | str] | None = None,
) -> str:
    """Train on ``datasets/seed`` (or ``data_paths``), save a version, make it current.

    ``confirmed_paths``: labeled JSONL trained with the same recipe as a retrain from
    reviewers' labels (each weighs ``TRIAGE_CONFIRMED_WEIGHT`` seed messages).
    ``unlabeled_paths``: JSONL (``text``) or CSV (``review``/``text``) of the installation's
    own messages, used by self-training (at most ``TRIAGE_HISTORY_LIMIT`` of them).
    ``corpora``: folder of labeled review corpora for the optional sentiment signal (off
    unless ``TRIAGE_CORPORA_DIR`` or this names one; ``False`` to train without).
    ``cv_folds`` > 1 adds k-fold cross-validation metrics to the manifest (slower).
    Returns the new version id.
    """
    from models.db_store import open_store
    from models.public_reviews import load_public_reviews
    from triage.settings import get_settings

    settings = settings or get_settings()
    paths = list(data_paths) if data_paths else [settings.seed_dir]
    records, problems = load_labeled(paths)
    say = report or (lambda msg: None)
    for problem in problems:
        say(f"skipped {problem}")
    if not records:
        raise ModelError(f"no usable labeled records in {', '.join(map(str, paths))}")
    confirmed: list[dict[str, Any]] = []
    if confirmed_paths:
        confirmed, bad = load_labeled(list(confirmed_paths))
        for problem in bad:
            say(f"skipped {problem}")
        if not confirmed:
            raise ModelError(f"no usable confirmed records in {', '.join(map(str, confirmed_paths))}")
        say(f"{len(confirmed)} confirmed labels, each weighing {settings.confirmed_weight:g} seed messages")
    history: list[str] = []
    if unlabeled_paths and settings.history_limit > 0:
        history = read_unlabeled(unlabeled_paths, limit=settings.history_limit, report=say)
        say(f"{len(history)} unlabeled messages for self-training")
    labeled = records + confirmed
    public = load_public_reviews(settings.public_reviews, report=say)
    sentiment = None  # the corpora's signal when asked for, else the public reviews'
    if settings.backend in ("sklearn", "ensemble"):
        if corpora or (corpora is not False and default_corpora_dir() is not None):
            sentiment = fit_sentiment(corpora or None, report=say)
        elif public is not None:
            sentiment = public.sentiment()
    say(f"training {settings.backend} on {len(labeled)} messages from {', '.join(map(str, paths))}"
        + (" and the confirmed labels" if confirmed else ""))
    backend = train_recipe(records, confirmed, history, public=public, confirmed_weight=settings.confirmed_weight,
                           backend=settings.backend, sentiment=sentiment, progress=progress, report=say)
    operating_point = None
    if confirmed:
        from models.operating_point import curve_from_backend
        from triage.lexicons import load_lexicons

        operating_point = curve_from_backend(
            backend, range(len(records), len(labeled)), [r["text"] for r in confirmed], [r["urgency"] for r in confirmed],
            lexicons=load_lexicons(settings.lexicon_dir))
        if operating_point:
            say(f"一级 curve on the {operating_point['confirmed']} confirmed labels (out of fold): "
                + ", ".join(f"{pt['threshold']:g} -> recall {pt['recall']:.2f} precision {pt['precision']:.2f}"
                            for pt in operating_point["points"] if pt["threshold"] in (0.5, 0.3, 0.2, 0.1)))
    metrics: dict[str, Any] = {}
    if cv_folds and cv_folds > 1:
        say(f"{cv_folds}-fold cross-validation")
        cv = cross_validate(records, settings.backend, folds=cv_folds, sentiment=sentiment)
        metrics["cv"] = {h: {k: cv[h][k] for k in ("accuracy", "macro_f1", "ece")} for h in HEADS}
    store = store or open_store(settings)
    version = store.save(
        backend,
        {
            "data_hash": data_hash(labeled),
            "metrics": metrics,
            "operating_point": operating_point,
            "training": {
                "records": len(records),
                "confirmed": len(confirmed),
                "unlabeled_history": len(history),
                "skipped_lines": len(problems),
                "paths": [str(p) for p in paths],
                "labels": label_counts(records),
                "public_reviews": public.describe() if public else None,
                "sentiment_corpora": None if sentiment is None else str(corpora or default_corpora_dir() or public.source),
            },
        },
    )
    if set_current:
        store.set_current(version)
    return version


def cross_validate(
    records: Sequence[dict[str, Any]],
    backend: str = "sklearn",
    folds: int = 5,
    seed: int = 0,
    rules: bool = True,
    progress: Callable[[str, float], None] | None = None,
    sentiment=None,
    **params: Any,
) -> dict[str, Any]:
    """Stratified (by dispute type) k-fold CV of the whole triager; pooled out-of-fold metrics."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from models.evaluation import score_predictions
    from triage.triager import Triager

    records = list(records)
    strata = [f"{r['dispute_type']}|{r['urgency']}" for r in records]
    counts = Counter(strata)
    strata = [s if counts[s] >= folds else s.split("|")[0] for s in strata]
    preds: list[Any] = [None] * len(records)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(records)), strata)):
        if progress:
            progress(f"fold {k + 1}/{folds}", k / folds)
        model = train_backend([records[i] for i in train], backend, sentiment=sentiment, **params)
        triager = Triager(model, f"cv-fold-{k + 1}", max_chars=10**9)
        for i, p in zip(test, triager.predict_many([records[i]["text"] for i in test])):
            preds[i] = p
    if progress:
        progress("done", 1.0)
    return score_predictions(records, preds, rules=rules)
