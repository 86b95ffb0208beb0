"""Choose the weight of reviewer-confirmed labels (``TRIAGE_CONFIRMED_WEIGHT``) honestly.

The learning loop trains on the seed set plus confirmed labels, each confirmed label
counting ``w`` seed examples. This compares candidate weights by repeated stratified
cross-validation over the *review-pool* part of ``../shared/data/dev_labeled.jsonl`` only:
the held-out part that ``bench_learning_curve.py`` scores on is split off with the same
function and never read, so the learning-curve benchmark stays an honest test.

Each split trains seed + 2/3 of the pool (weight ``w``) and scores the other third:
macro-F1 per head of the model's argmax (the gate's quick recipe: no calibration, which
never moves the argmax). ``w = 0`` is the seed-only model, for reference.

    python bench/bench_confirmed_weight.py [--weights 0 1 2 3 5 8] [--repeats 3] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results"
HEADS = ("dispute_type", "urgency", "emotion", "escalation")


def say(message: str) -> None:
    print(f"[confirmed-weight] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 1, 2, 3, 5, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--holdout-share", type=float, default=0.35, help="must match bench_learning_curve.py")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from bench/results/confirmed_weight.json")
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads((RESULTS / "confirmed_weight.json").read_text(encoding="utf-8"))
        write_report({float(w): runs for w, runs in saved["weights"].items()}, saved["setup"])
        return 0

    from bench_learning_curve import DEV_FILE, split_dev
    if not DEV_FILE.exists():
        say(f"{DEV_FILE} not found: benchmark skipped")
        return 0
    from sklearn.model_selection import StratifiedKFold

    from models.learning import LabeledExample, backend_fitter, macro_f1_by_head, predict_labels, seed_examples_from
    from models.training import load_labeled
    from triage.settings import get_settings
    from triage.text import prepare

    settings = get_settings()
    records, _ = load_labeled([DEV_FILE])
    pool, _held_out_never_read = split_dev(records, args.holdout_share)
    pool_examples = [LabeledExample.from_record(r, confirmed=True) for r in pool]
    seed = seed_examples_from([settings.seed_dir])()
    say(f"{len(seed)} seed examples, {len(pool)} pool examples (held-out part left out)")
    cache: dict[str, object] = {}

    def prepared(examples):
        return [cache.setdefault(e.text, prepare(e.text, settings.lexicon_dir)) for e in examples]

    _, fit_quick = backend_fitter(settings.backend)
    scores: dict[float, list[dict[str, float]]] = {w: [] for w in args.weights}
    started = time.perf_counter()
    splits = [
        (repeat, fold, train_idx, test_idx)
        for repeat in range(args.repeats)
        for fold, (train_idx, test_idx) in enumerate(
            StratifiedKFold(args.folds, shuffle=True, random_state=repeat).split(
                pool_examples, [e.labels["dispute_type"] for e in pool_examples]))
    ]
    for n, (repeat, fold, train_idx, test_idx) in enumerate(splits, 1):
        train = [pool_examples[i] for i in train_idx]
        test = [pool_examples[i] for i in test_idx]
        for weight in args.weights:
            used = train if weight > 0 else []
            examples = [*seed, *used]
            backend = fit_quick(prepared(examples), {h: [e.labels[h] for e in examples] for h in HEADS},
                                [1.0] * len(seed) + [weight] * len(used))
            scores[weight].append(macro_f1_by_head(test, predict_labels(backend, prepared(test))))
        say(f"split {n}/{len(splits)} (repeat {repeat + 1}, fold {fold + 1}) done, "
            f"{time.perf_counter() - started:.0f} s")

    setup = {"pool": len(pool), "seed": len(seed), "repeats": args.repeats, "folds": args.folds}
    write_report(scores, setup)
    say(f"wrote {RESULTS / 'confirmed_weight.md'} in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def write_report(scores: dict[float, list[dict[str, float]]], setup: dict) -> None:
    """The table of means, and paired differences against the shipped default (same splits)."""
    from triage.settings import Settings

    default = float(Settings.model_fields["confirmed_weight"].default)
    lines = [
        "# Weight of confirmed labels: repeated CV on the review pool",
        "",
        (f"{setup['pool']} pool messages of `dev_labeled.jsonl` (the learning-curve benchmark's held-out part is "
         f"not used), {setup['repeats']} x {setup['folds']}-fold stratified CV; each split trains the seed set "
         f"({setup['seed']}) + 2/3 of the pool with the weight below, and scores macro-F1 on the other third. "
         "Mean (sd over splits)."),
        "",
        "| weight | dispute type | urgency | emotion | escalation | mean of heads |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for weight, runs in scores.items():
        cells = " | ".join(f"{statistics.mean(r[h] for r in runs):.3f} ({statistics.stdev(r[h] for r in runs):.3f})"
                           for h in HEADS)
        overall = statistics.mean(statistics.mean(r[h] for h in HEADS) for r in runs)
        lines.append(f"| {weight:g}{' (seed only)' if weight == 0 else ''} | {cells} | {overall:.3f} |")
    if default in scores:
        lines += ["", f"Paired against the default weight {default:g} on the same splits: mean difference "
                  "(splits where the weight is better / all).", "",
                  "| weight | dispute type | urgency | emotion |", "|---:|---:|---:|---:|"]
        for weight, runs in scores.items():
            cells = []
            for h in HEADS[:3]:
                diffs = [r[h] - b[h] for r, b in zip(runs, scores[default], strict=True)]
                cells.append(f"{statistics.mean(diffs):+.4f} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
            lines.append(f"| {weight:g} | {' | '.join(cells)} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "confirmed_weight.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (RESULTS / "confirmed_weight.json").write_text(
        json.dumps({"setup": setup, "weights": {str(w): runs for w, runs in scores.items()}}, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
