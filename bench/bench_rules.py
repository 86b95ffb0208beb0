"""What each domain rule adds on real complaints (issue 16): an ablation on the tuning pool.

The rules (``triage/rules.py``, lexicons in ``datasets/lexicons/``) sit on top of the model:
escalation threats, the 一级 cases (safety, completely unusable, counterfeit, economic loss)
and the anger words. Here the shipped default model (seed + public reviews, as
``bench_accuracy.py`` trains it) and the after-review models of one 5-fold split of the
tuning pool (``bench/dev_split.py``) score the pool with every rule, and again with one rule
switched off. Per rule: how many pool messages it changed, how many of those changes agree
with the real label, and the paired macro-F1 / 一级 recall difference over the test folds.
The locked rows are not used.

Writes ``bench/results/rules.md`` and ``rules.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_accuracy import metrics  # noqa: E402
from recipe import bench_inputs  # noqa: E402
import triage.rules as rules  # noqa: E402
from triage.triager import Triager  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# rule -> (the finder switched off, what it returns when off, the head it changes)
RULES = {
    "anger words": ("find_anger", [], "emotion"),
    "safety": ("find_safety", [], "urgency"),
    "unusable": ("find_unusable", [], "urgency"),
    "counterfeit": ("find_counterfeit", [], "urgency"),
    "business loss": ("find_loss", [], "urgency"),
    "escalation threat": ("find_escalation", ([], []), "urgency"),
}
HEAD_METRIC = {"emotion": "emotion", "urgency": "urgency"}


def log(msg: str) -> None:
    print(f"[bench_rules] {msg}", file=sys.stderr, flush=True)


@contextmanager
def switched_off(finder: str, value):
    original = getattr(rules, finder)
    setattr(rules, finder, lambda *a, **k: value)
    try:
        yield
    finally:
        setattr(rules, finder, original)


def main() -> int:
    started = time.perf_counter()
    inputs = bench_inputs(log)
    if inputs is None:
        return 1
    settings, tune, seed, recipe = inputs.settings, inputs.tune, inputs.seed, inputs.recipe  # the shipped recipe
    folds = inputs.folds(3)

    def fit(confirmed=()):
        return recipe.fit(seed, confirmed)

    def triager(model):
        return Triager(model, "bench", max_chars=10**9, urgent_threshold=settings.urgent_threshold)

    # (model, test rows) pairs: the default scores every fold; after review, its own model per fold.
    default = triager(fit())
    setups = {"default": [(default, test) for _, test in folds]}
    log(f"default trained; after review on {len(folds[:5])} folds")
    setups["after review"] = [(triager(fit(train)), test) for train, test in folds[:5]]

    out: dict = {"pool": len(tune), "folds": {"default": len(folds), "after review": 5}, "rules": {}}
    for config, pairs in setups.items():
        base = [(t.predict_many([r["text"] for r in test]), test) for t, test in pairs]
        base_scores = [metrics(p, test) for p, test in base]
        for name, (finder, off, head) in RULES.items():
            with switched_off(finder, off):
                ablated = [(t.predict_many([r["text"] for r in test]), test) for t, test in pairs]
            scores = [metrics(p, test) for p, test in ablated]
            changed = agree = 0
            seen = set()
            for (on_preds, test), (off_preds, _) in zip(base, ablated):
                for p_on, p_off, row in zip(on_preds, off_preds, test):
                    if row["id"] in seen:  # the default's 15 folds repeat each row three times
                        continue
                    seen.add(row["id"])
                    if getattr(p_on, head) != getattr(p_off, head):
                        changed += 1
                        agree += getattr(p_on, head) == row[head]
            gains = {}
            for m in (HEAD_METRIC[head], "u1_recall", "u1_precision") if head == "urgency" else (HEAD_METRIC[head],):
                d = [a[m] - b[m] for a, b in zip(base_scores, scores)]
                gains[m] = [statistics.mean(d), statistics.stdev(d)]
            out["rules"].setdefault(name, {"head": head})[config] = {"changed": changed, "agree": agree, "gain": gains}
            log(f"{config} / {name}: changed {changed}, agreeing {agree}, {gains}")
    out["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rules.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    (RESULTS / "rules.md").write_text(report(out), encoding="utf-8")
    print(report(out))
    return 0


def report(out: dict) -> str:
    lines = [
        f"What each rule adds on the tuning pool ({out['pool']} real complaints; the locked rows are not used): "
        f"the shipped default model ({out['folds']['default']} test folds) and after review (seed + the train "
        f"folds as confirmed labels, {out['folds']['after review']} folds), scored with every rule and with one "
        "rule switched off. Changed: pool messages whose label of that head the rule changed; agreeing: of "
        "those, how many now carry the real label. Gain: the paired difference (rule on - off) over the "
        "test folds, mean ± standard deviation.",
        "",
        "| rule | head | configuration | changed | agreeing | gain |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, r in out["rules"].items():
        for config in ("default", "after review"):
            c = r.get(config)
            if c is None:
                continue
            gain = "; ".join(f"{m} {v[0]:+.3f} ± {v[1]:.3f}" for m, v in c["gain"].items())
            lines.append(f"| {name} | {r['head']} | {config} | {c['changed']} | {c['agree']} | {gain} |")
    lines += ["", f"Whole benchmark {out['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
