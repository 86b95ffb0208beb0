"""一级 by a recall target (``TRIAGE_URGENT_RECALL``) against the fixed operating point (issue 16).

After review, the model has the installation's confirmed labels. Every training with
confirmed labels stores 一级 recall and precision per threshold on them, out of fold
(``models/operating_point.py``); with a recall target the service grades at the largest
threshold that reaches it there. This benchmark asks whether the recall a team sets is the
recall it gets on messages nobody labeled, and what precision (reviewer load) it costs.

- Tuning pool: the after-review model of each of the 5x3 folds (seed + the train folds as
  confirmed labels, the shipped recipe with the public reviews), its curve from those
  confirmed labels, scored on the test fold at the fixed 0.3 and at each target: paired.
  Twice: with the confirmed labels only (``triage train --confirmed``), and with the
  confirmed messages also in the self-training history, as the service's retrain reads them
  from its stored messages (where a copy of a confirmed text sits among the pseudo-labels).
- Locked rows (once for this change set; nothing chosen on them): seed + the whole pool
  confirmed, with 95 % bootstrap intervals over the 424 rows.

Writes ``bench/results/operating_point.md`` and ``operating_point.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_accuracy import _resampled_metrics, metrics  # noqa: E402
from models.operating_point import curve_from_backend, threshold_for_recall  # noqa: E402
from recipe import bench_inputs  # noqa: E402
from triage.triager import Triager  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS = (0.8, 0.85, 0.9)
SHOWN = ("urgency", "u1_recall", "u1_precision")
RESAMPLES = 2000
ARMS = {False: "confirmed labels only", True: "confirmed messages also stored"}


def log(msg: str) -> None:
    print(f"[operating point] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    started = time.perf_counter()
    inputs = bench_inputs(log)
    if inputs is None:
        return 1
    settings, tune, locked, seed, recipe = inputs.settings, inputs.tune, inputs.locked, inputs.seed, inputs.recipe
    fixed = settings.urgent_threshold
    folds = inputs.folds(3)

    def after_review(confirmed, stored: bool):
        """Seed + ``confirmed``; with ``stored``, the confirmed messages are also in the
        self-training history, as a retrain reads them from the service's stored messages."""
        history = [recipe.prepared(r["text"]) for r in confirmed] if stored else []
        model = recipe.fit(seed, confirmed, history)
        curve = curve_from_backend(model, range(len(seed), len(seed) + len(confirmed)),
                                   [recipe.prepared(r["text"]) for r in confirmed],
                                   [r["urgency"] for r in confirmed])
        return model, curve

    def predict(model, rows, threshold):
        return Triager(model, "bench", max_chars=10**9, urgent_threshold=threshold).predict_many([r["text"] for r in rows])

    def arm(stored: bool) -> dict:
        pool: dict = {"fixed": [], **{str(t): [] for t in TARGETS}}
        chosen: dict[str, list] = {str(t): [] for t in TARGETS}
        for i, (train, test) in enumerate(folds):
            model, curve = after_review(train, stored)
            pool["fixed"].append(metrics(predict(model, test, fixed), test))
            for t in TARGETS:
                point = threshold_for_recall(curve, t)
                thr = point.threshold if point else fixed
                chosen[str(t)].append({"threshold": thr, "confirmed_recall": point.recall if point else None,
                                       "confirmed_precision": point.precision if point else None})
                pool[str(t)].append(metrics(predict(model, test, thr), test))
            log(f"{ARMS[stored]}: fold {i + 1}/{len(folds)}: thresholds {[c[-1]['threshold'] for c in chosen.values()]}")

        log(f"{ARMS[stored]}: locked rows, seed + the whole pool confirmed")
        model, curve = after_review(tune, stored)
        locked_preds = {"fixed": predict(model, locked, fixed)}
        locked_points = {}
        for t in TARGETS:
            point = threshold_for_recall(curve, t)
            locked_points[str(t)] = point.as_dict() if point else None
            locked_preds[str(t)] = predict(model, locked, point.threshold if point else fixed)
        samples = np.random.default_rng(0).integers(0, len(locked), size=(RESAMPLES, len(locked)))
        draws = {k: _resampled_metrics(locked, p, samples) for k, p in locked_preds.items()}
        locked_out = {k: {"value": metrics(p, locked),
                          "ci": {m: np.percentile(draws[k][m], [2.5, 97.5]).tolist() for m in SHOWN},
                          "paired_ci": None if k == "fixed" else
                          {m: np.percentile(draws[k][m] - draws["fixed"][m], [2.5, 97.5]).tolist() for m in SHOWN}}
                      for k, p in locked_preds.items()}
        return {"pool": pool, "chosen": chosen, "locked": locked_out, "locked_curve": curve, "locked_points": locked_points}

    out = {"fixed_threshold": fixed, "targets": list(TARGETS), "folds": len(folds), "pool_size": len(tune),
           "locked_size": len(locked), "arms": {ARMS[stored]: arm(stored) for stored in (False, True)}}
    out["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "operating_point.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    (RESULTS / "operating_point.md").write_text(report(out), encoding="utf-8")
    print(report(out))
    return 0


def _mean_sd(values, sign: bool = False) -> str:
    return f"{statistics.mean(values):{'+' if sign else ''}.3f} ± {statistics.stdev(values):.3f}"


def report(out: dict) -> str:
    lines = [
        f"一级 by a recall target after review: the after-review model (seed + confirmed labels, the shipped recipe) "
        f"grades 一级 at the largest threshold whose out-of-fold recall on its confirmed labels reaches the target "
        f"(`TRIAGE_URGENT_RECALL`), against the fixed `TRIAGE_URGENT_THRESHOLD` {out['fixed_threshold']}. "
        "Final labels (model + rules). Two setups: the confirmed labels only (as `triage train --confirmed`), and "
        "the confirmed messages also among the stored messages a retrain self-trains on (as the service retrains).",
        "",
        f"Tuning pool ({out['pool_size']} real complaints), {out['folds']} folds (5x3): each fold's model is trained "
        "with the other folds confirmed and scored on its test fold; mean ± standard deviation over the folds, and the "
        "paired difference against the fixed threshold.",
        "",
        "| setup | operating point | thresholds chosen (median, range) | urgency macro-F1 | 一级 recall | 一级 precision | "
        "paired: recall | paired: precision | paired: urgency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in out["arms"].items():
        pool, fixed = a["pool"], a["pool"]["fixed"]
        lines.append(f"| {name} | fixed {out['fixed_threshold']} | - | {_mean_sd([f['urgency'] for f in fixed])} | "
                     f"{_mean_sd([f['u1_recall'] for f in fixed])} | {_mean_sd([f['u1_precision'] for f in fixed])} | | | |")
        for t in out["targets"]:
            rows = pool[str(t)]
            thr = [c["threshold"] for c in a["chosen"][str(t)]]
            diff = {m: [x[m] - b[m] for x, b in zip(rows, fixed)] for m in SHOWN}
            lines.append(
                f"| {name} | recall target {t} | {statistics.median(thr):g} ({min(thr):g} to {max(thr):g}) | "
                f"{_mean_sd([f['urgency'] for f in rows])} | {_mean_sd([f['u1_recall'] for f in rows])} | "
                f"{_mean_sd([f['u1_precision'] for f in rows])} | {_mean_sd(diff['u1_recall'], True)} | "
                f"{_mean_sd(diff['u1_precision'], True)} | {_mean_sd(diff['urgency'], True)} |")
    lines += [
        "",
        f"Locked rows ({out['locked_size']}; scored once for this change set, nothing chosen on them): seed + the "
        "whole pool confirmed; 95 % bootstrap intervals, and the paired difference against the fixed threshold.",
        "",
        "| setup | operating point | threshold | recall on the confirmed labels (out of fold) | urgency macro-F1 | "
        "一级 recall | 一级 precision | paired: recall | paired: precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in out["arms"].items():
        for k, r in a["locked"].items():
            v, ci = r["value"], r["ci"]
            point = a["locked_points"].get(k)
            thr = out["fixed_threshold"] if k == "fixed" or not point else point["threshold"]
            op = f"fixed {out['fixed_threshold']}" if k == "fixed" else f"recall target {k}"
            conf = "-" if not point else f"{point['confirmed_recall']:.3f} (precision {point['confirmed_precision']:.3f})"
            paired = ("", "") if r["paired_ci"] is None else tuple(
                f"[{r['paired_ci'][m][0]:+.3f}, {r['paired_ci'][m][1]:+.3f}]" for m in ("u1_recall", "u1_precision"))
            lines.append(
                f"| {name} | {op} | {thr:g} | {conf} | {v['urgency']:.3f} [{ci['urgency'][0]:.3f}, {ci['urgency'][1]:.3f}] | "
                f"{v['u1_recall']:.3f} [{ci['u1_recall'][0]:.3f}, {ci['u1_recall'][1]:.3f}] | "
                f"{v['u1_precision']:.3f} [{ci['u1_precision'][0]:.3f}, {ci['u1_precision'][1]:.3f}] | "
                f"{paired[0]} | {paired[1]} |")
    lines += ["", f"Whole benchmark {out['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:  # the tables again from operating_point.json, without re-running
        print(report(json.loads((RESULTS / "operating_point.json").read_text(encoding="utf-8"))))
        sys.exit(0)
    sys.exit(main())
