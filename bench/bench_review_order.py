"""Which review order teaches the model most per confirmation? (issue 16: better use of the
confirmed labels; the review queue's ``order``).

On the tuning pool only (``bench/dev_split.py``; the locked rows are left to
``bench_accuracy.py``, whose offline learning curve scores the queue's orders on them once):
one stratified 5-fold split; in each fold the default model (seed + public reviews, the
shipped recipe) ranks the train part as the queue would, the first N of each order are
confirmed (seed + N confirmed labels, retrained with the shipped recipe) and the model is
scored on the test part. Orders:

- ``random``: three seeded random orders (their mean per fold is the baseline);
- ``uncertainty``: the queue's uncertainty order (lowest confidence over the four heads first);
- ``learning``: the queue's learning order, decided one at a time
  (``bench_accuracy.learning_order``: the least sure case of the predicted dispute type
  with the fewest confirmations so far).

Gains are paired per fold against the same fold's default model and against the random mean.
Writes ``bench/results/review_order.md`` and ``review_order.json``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_accuracy import METRICS, learning_order, score  # noqa: E402
from recipe import bench_inputs  # noqa: E402
from triage.triager import Triager  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIZES = (100, 200)
RANDOM_ORDERS = 3
SHOWN = ("dispute", "urgency", "u1_recall", "u1_precision", "emotion")


def log(msg: str) -> None:
    print(f"[bench_review_order] {msg}", file=sys.stderr, flush=True)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> int:
    started = time.perf_counter()
    inputs = bench_inputs(log)
    if inputs is None:
        return 1
    settings, tune, seed, recipe, folds = inputs.settings, inputs.tune, inputs.seed, inputs.recipe, inputs.folds(1)
    threshold = settings.urgent_threshold

    def fit(confirmed=()):
        """Seed + confirmed labels with the shipped recipe (as ``bench_accuracy``'s after review)."""
        return recipe.fit(seed, confirmed)

    default = fit()
    triager = Triager(default, "bench", max_chars=10**9, urgent_threshold=threshold)
    predictions = triager.predict_many([r["text"] for r in tune])
    sure = {r["id"]: p.confidence for r, p in zip(tune, predictions)}
    predicted = {r["id"]: p.dispute_type for r, p in zip(tune, predictions)}
    gains: dict[str, list[dict[str, float]]] = {}  # "order@N" -> per fold, against the fold's default
    for f, (train, test) in enumerate(folds):
        base = score(default, test, threshold)
        ranked = sorted(train, key=lambda r: (sure[r["id"]], r["id"]))
        orders = {f"random{k}": random.Random(1000 * k + f).sample(train, len(train)) for k in range(RANDOM_ORDERS)}
        orders["uncertainty"] = ranked
        orders["learning"] = learning_order(ranked, predicted)
        for name, order in orders.items():
            for n in SIZES:
                s = score(fit(order[:n]), test, threshold)
                gains.setdefault(f"{name}@{n}", []).append({m: s[m] - base[m] for m in METRICS})
        log(f"fold {f + 1}/{len(folds)} done after {time.perf_counter() - started:.0f} s")
    for n in SIZES:
        gains[f"random@{n}"] = [{m: statistics.mean(gains[f"random{k}@{n}"][f][m] for k in range(RANDOM_ORDERS))
                                 for m in METRICS} for f in range(len(folds))]
    out = {"protocol": {"tuning_pool": len(tune), "folds": len(folds), "sizes": list(SIZES),
                        "random_orders": RANDOM_ORDERS, "confirmed_weight": settings.confirmed_weight},
           "gains": gains, "wall_s": time.perf_counter() - started, "load_average": os.getloadavg()[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "review_order.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    (RESULTS / "review_order.md").write_text(report(out), encoding="utf-8")
    log(f"wrote {RESULTS / 'review_order.md'} in {out['wall_s'] / 60:.1f} min")
    return 0


def report(out: dict) -> str:
    gains, folds = out["gains"], out["protocol"]["folds"]
    lines = [f"Tuning pool ({out['protocol']['tuning_pool']} real complaints), one stratified {folds}-fold split: "
             "seed + the first N of each order in the fold's train part confirmed, scored on its test part. "
             "Gain over the default model (no confirmations), mean ± standard deviation over the folds; "
             f"random: the mean of {out['protocol']['random_orders']} seeded orders per fold.", "",
             "| order | confirmed | " + " | ".join(SHOWN) + " |", "|---|---:|" + "---|" * len(SHOWN)]
    for n in out["protocol"]["sizes"]:
        for name in ("random", "uncertainty", "learning"):
            row = gains[f"{name}@{n}"]
            lines.append(f"| {name} | {n} | " + " | ".join("%+.3f ± %.3f" % mean_sd([g[m] for g in row]) for m in SHOWN) + " |")
    lines += ["", "Paired against the random orders (the same folds):", "",
              "| order | confirmed | " + " | ".join(SHOWN) + " |", "|---|---:|" + "---|" * len(SHOWN)]
    for n in out["protocol"]["sizes"]:
        for name in ("uncertainty", "learning"):
            row, rnd = gains[f"{name}@{n}"], gains[f"random@{n}"]
            lines.append(f"| {name} | {n} | " + " | ".join(
                "%+.3f ± %.3f" % mean_sd([g[m] - r[m] for g, r in zip(row, rnd)]) for m in SHOWN) + " |")
    lines += ["", f"Whole benchmark {out['wall_s'] / 60:.1f} min; load average at the end {out['load_average']:.1f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
