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
    path: Path, parse: Callable[[Any], dict[str, Any]], problems: list[LineProblem]
) -> list[dict[str, Any]]:
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
                records.append(parse(obj))
            except ValueError as exc:
                problems.append(LineProblem(str(path), lineno, str(exc)))
    return records


def load_labeled(
    paths: Sequence[Path | str] | Path | str, require_labels: bool = True
) -> tuple[list[dict[str, Any]], list[LineProblem]]:
    """Records with all four labels from JSONL files or folders, and the lines skipped."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    problems: list[LineProblem] = []
    records: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        records.extend(read_jsonl(path, lambda o: parse_record(o, require_labels), problems))
    return records, problems


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


def train_backend(
    records: Sequence[dict[str, Any]],
    backend: str = "sklearn",
    sample_weight: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
    **params: Any,
) -> ClassifierBackend:
    """Fit a fresh backend of the registered name ``backend`` on labeled ``records``."""
    if not records:
        raise ModelError("no labeled records to train on")
    missing = [h for h in HEADS if any(h not in r for r in records)]
    if missing:
        raise ModelError(f"every training record needs the labels {', '.join(missing)}")
    if sample_weight is not None and len(sample_weight) != len(records):
        raise ModelError(f"{len(sample_weight)} sample weights for {len(records)} records")
    model = get_backend_class(backend)(**params)
    texts = [r["text"] for r in records]
    labels = {h: [r[h] for r in records] for h in HEADS}
    return model.fit(texts, labels, sample_weight=sample_weight, progress=progress)


def train_default(
    settings=None,
    data_paths: Sequence[Path | str] | None = None,
    store=None,
    set_current: bool = True,
    cv_folds: int = 0,
    progress: ProgressFn | None = None,
    report: Callable[[str], None] | None = None,
) -> str:
    """Train on ``datasets/seed`` (or ``data_paths``), save a version, make it current.

    ``cv_folds`` > 1 adds k-fold cross-validation metrics to the manifest (slower).
    Returns the new version id.
    """
    from models.evaluation import cross_validate
    from models.store import ModelStore
    from triage.settings import get_settings

    settings = settings or get_settings()
    paths = list(data_paths) if data_paths else [settings.seed_dir]
    records, problems = load_labeled(paths)
    say = report or (lambda msg: None)
    for problem in problems:
        say(f"skipped {problem}")
    if not records:
        raise ModelError(f"no usable labeled records in {', '.join(map(str, paths))}")
    say(f"training {settings.backend} on {len(records)} messages from {', '.join(map(str, paths))}")
    backend = train_backend(records, settings.backend, progress=progress)
    metrics: dict[str, Any] = {}
    if cv_folds and cv_folds > 1:
        say(f"{cv_folds}-fold cross-validation")
        cv = cross_validate(records, settings.backend, folds=cv_folds)
        metrics["cv"] = {h: {k: cv[h][k] for k in ("accuracy", "macro_f1", "ece")} for h in HEADS}
    store = store or ModelStore(settings.effective_model_dir)
    version = store.save(
        backend,
        {
            "data_hash": data_hash(records),
            "metrics": metrics,
            "training": {
                "records": len(records),
                "skipped_lines": len(problems),
                "paths": [str(p) for p in paths],
                "labels": label_counts(records),
            },
        },
    )
    if set_current:
        store.set_current(version)
    return version
