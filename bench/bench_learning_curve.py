"""Learning-curve benchmark: does reviewing real messages make the model better, and does the
order in which reviewers see them matter?

Starting from a model trained on the project's seed data only, simulated reviewers confirm
(or correct) the real messages of ``../shared/data/dev_labeled.jsonl`` through the HTTP API
(ingest with ``POST /v1/messages``, pick from ``GET /v1/review/queue``, decide with
``POST /v1/cases/{id}/review``) in batches of 25. The service retrains on its own after every
25 confirmations (``TRIAGE_RETRAIN_AFTER_CONFIRMATIONS``), through the real quality gate.
Every version, promoted or rejected, is scored on a fixed held-out part of the file that is
never ingested. Three orders are compared, each in its own process, database and model store:

* ``uncertainty``: the queue's uncertainty order (lowest model confidence first);
* ``learning``: the queue's learning order (the least sure case of each predicted dispute
  type in turns, a type starting late by the turns its latest decisions had);
* ``random``: a seeded random sample of the queue.

Writes ``bench/results/learning.md`` and ``bench/results/learning_curve.png``. Texts are read
in place, never copied. Target: after 200 confirmations, dispute-type macro-F1 on the
held-out part at least 0.08 above the seed-only model.

    python bench/bench_learning_curve.py [--batches 0 (until the pool runs out)] [--batch-size 25] [--holdout-share 0.35]
                                         [--orders uncertainty,learning,random] [--jobs 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
DEV_FILE = ROOT.parent / "shared" / "data" / "dev_labeled.jsonl"
TARGET_GAIN = 0.08
HEADS = ("dispute_type", "urgency", "emotion", "escalation")
ORDERS = ("uncertainty", "learning", "random")  # "random" samples the queue; the others are its orders


def say(message: str) -> None:
    print(f"[learning] {message}", file=sys.stderr, flush=True)


def split_dev(records: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """(pool, held-out): a fixed split, stratified by dispute type, by a hash of each id.

    Stratified because the rare classes decide a macro-F1: an unstratified 30 % split of
    this file can leave two refund messages in the held-out part, and one of them flipping
    moves the score by 0.1.
    """
    from collections import defaultdict

    from models.learning import _unit_hash

    by_type: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_type[record["dispute_type"]].append(record)
    pool, held = [], []
    for rows in by_type.values():
        rows = sorted(rows, key=lambda r: _unit_hash(str(r["id"]), "bench-holdout"))
        cut = round(len(rows) * share)
        held += rows[:cut]
        pool += rows[cut:]
    return pool, held


def score(store, version: str, held: list[dict], lexicon_dir) -> dict[str, float]:
    """Macro-F1 per head of the whole triager (model + rules) on the held-out records."""
    from models.learning import LabeledExample, macro_f1_by_head
    from triage.triager import Triager

    triager = Triager.from_store(store, version, lexicon_dir=lexicon_dir)
    predictions = triager.predict_many([r["text"] for r in held])
    predicted = {h: [getattr(p, h) for p in predictions] for h in HEADS}
    examples = [LabeledExample.from_record(r) for r in held]
    return {h: round(v, 4) for h, v in macro_f1_by_head(examples, predicted).items()}


def train_seed_model(store_dir: Path) -> str:
    """The seed-only starting model, with the service's own training recipe."""
    from models.learning import backend_fitter, seed_examples_from
    from models.store import ModelStore
    from triage.settings import get_settings

    settings = get_settings()
    fit, _ = backend_fitter(settings.backend)
    seed = seed_examples_from([settings.seed_dir])()
    backend = fit([e.text for e in seed], {h: [e.labels[h] for e in seed] for h in HEADS}, None)
    store = ModelStore(store_dir)
    version = store.save(backend, manifest_extra={"status": "promoted", "trigger": "bench-seed"})
    store.set_current(version)
    return version


def run_arm(order: str, seed_store: str, pool: list[dict], held: list[dict], batches: int, batch_size: int,
            rng_seed: int) -> dict:
    """One reviewing order end to end, in a fresh database and a copy of the seed store."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.store import KEY_FILE_NAME, ModelStore
    from triage.settings import get_settings

    work = Path(tempfile.mkdtemp(prefix=f"bench-learning-{order}-"))
    try:
        shutil.copytree(seed_store, work / "models")
        key_file = Path(seed_store).parent / KEY_FILE_NAME
        if key_file.is_file():  # the copy's signatures need the key they were made with
            shutil.copy(key_file, work / KEY_FILE_NAME)
        base = get_settings()
        settings = base.model_copy(update={
            "var_dir": work, "database_url": f"sqlite:///{work / 'triage.db'}", "model_dir": work / "models",
            "retrain_after_confirmations": batch_size, "sla_monitor_interval_s": 3600.0, "webhook_url": None,
        })
        app = create_app(settings, background=False)
        service = app.state.service
        service.create_user("bench-reviewer", "reviewer")
        _, key = service.create_api_key("bench-reviewer", ["ingest", "review"])
        headers = {"Authorization": f"Bearer {key}"}
        store = ModelStore(work / "models")
        truth = {}
        steps = []
        with TestClient(app) as client:
            ingest_started = time.perf_counter()
            for start in range(0, len(pool), 200):
                chunk = pool[start:start + 200]
                body = {"messages": [{"source": "dev", "external_id": str(r["id"]), "text": r["text"]} for r in chunk]}
                response = client.post("/v1/messages", json=body, headers=headers)
                response.raise_for_status()
                for r, result in zip(chunk, response.json()["results"], strict=True):
                    truth[result["case"]["id"]] = r
            say(f"{order}: ingested {len(truth)} messages in {time.perf_counter() - ingest_started:.1f} s")
            seed_version = store.current_version()
            scores = {seed_version: score(store, seed_version, held, settings.lexicon_dir)}
            steps.append({"confirmed": 0, "candidate": seed_version, "promoted": True, "current": seed_version,
                          "candidate_f1": scores[seed_version], "current_f1": scores[seed_version], "reason": "seed model",
                          "corrections": 0, "seconds": 0.0})
            rng = random.Random(rng_seed)
            confirmed = 0
            for batch in itertools.count() if batches <= 0 else range(batches):
                started = time.perf_counter()
                params = {"order": "uncertainty", "limit": 1000} if order == "random" else {"order": order, "limit": batch_size}
                queue = client.get("/v1/review/queue", params=params, headers=headers).json()["items"]
                picked = rng.sample(queue, min(batch_size, len(queue))) if order == "random" else queue
                if len(picked) < batch_size:
                    say(f"{order}: the pool ran out after {confirmed} confirmations")
                    break
                corrections = 0
                previous_job = (client.get("/v1/models", headers=headers).json()["retrain"] or {}).get("id")
                for item in picked:
                    record = truth[item["case_id"]]
                    changes = {h: record[h] for h in HEADS if item["labels"][h] != record[h]}
                    body = {"action": "correct", "labels": changes} if changes else {"action": "confirm"}
                    body["expected_version"] = item["version"]
                    response = client.post(f"/v1/cases/{item['case_id']}/review", json=body, headers=headers)
                    response.raise_for_status()
                    corrections += bool(changes)
                confirmed += len(picked)
                reviewed_at = time.perf_counter()
                job = wait_for_auto_retrain(client, headers, previous_job)
                retrained_at = time.perf_counter()
                candidate, current = job["version"], store.current_version()
                for version in (candidate, current):
                    if version not in scores:
                        scores[version] = score(store, version, held, settings.lexicon_dir)
                say(f"{order}: batch {batch + 1}: review {reviewed_at - started:.1f} s, retrain+re-grade "
                    f"{retrained_at - reviewed_at:.1f} s, scoring {time.perf_counter() - retrained_at:.1f} s")
                steps.append({
                    "confirmed": confirmed, "candidate": candidate, "promoted": bool(job["promoted"]),
                    "current": current, "candidate_f1": scores[candidate], "current_f1": scores[current],
                    "reason": job["reason"], "corrections": corrections,
                    "seconds": round(time.perf_counter() - started, 1),
                })
                say(f"{order}: {confirmed} confirmed, candidate dispute F1 {scores[candidate]['dispute_type']:.3f} "
                    f"({'promoted' if job['promoted'] else 'rejected'}), current {scores[current]['dispute_type']:.3f}")
        service.db.dispose()
        return {"order": order, "steps": steps}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_for_auto_retrain(client, headers, previous_job: str | None, timeout: float = 600.0) -> dict:
    """The automatic retrain the last confirmation started, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get("/v1/models", headers=headers).json()["retrain"]
        if job and job["id"] != previous_job and job["state"] in ("done", "failed"):
            if job["state"] == "failed":
                raise RuntimeError(f"retrain failed: {job['error']}")
            if job["trigger"] != "auto":
                raise RuntimeError(f"expected the automatic retrain, got trigger {job['trigger']!r}")
            return job
        time.sleep(0.5)
    raise TimeoutError("no automatic retrain finished in time")


def plot(arms: list[dict], seed_f1: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), tight_layout=True)
    ax = fig.subplots()
    colours = {"uncertainty": "#2563eb", "learning": "#059669", "random": "#f59e0b"}
    for arm in arms:
        xs = [s["confirmed"] for s in arm["steps"]]
        ax.plot(xs, [s["current_f1"]["dispute_type"] for s in arm["steps"]], marker="o",
                color=colours[arm["order"]], label=f"{arm['order']} order: serving model")
        ax.plot(xs, [s["candidate_f1"]["dispute_type"] for s in arm["steps"]], linestyle=":",
                color=colours[arm["order"]], label=f"{arm['order']} order: each candidate")
    ax.axhline(seed_f1 + TARGET_GAIN, color="#6b7280", linestyle="--", linewidth=1, label="target (seed + 0.08)")
    values = [s[k]["dispute_type"] for arm in arms for s in arm["steps"] for k in ("current_f1", "candidate_f1")]
    ax.set_ylim(min(values) - 0.02, max(max(values), seed_f1 + TARGET_GAIN) + 0.02)
    ax.set_xlabel("confirmed reviews")
    ax.set_ylabel("dispute-type macro-F1 (held-out)")
    ax.set_title("Learning curve on real complaints (dev_labeled held-out part)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def report(arms: list[dict], n_pool: int, n_held: int, elapsed: float, args) -> str:
    from triage.settings import get_settings

    settings = get_settings()  # the service under test reads the same environment
    seed_f1 = arms[0]["steps"][0]["current_f1"]
    lines = [
        "# Learning curve: seed model + reviewer confirmations",
        "",
        f"Real messages from `../shared/data/dev_labeled.jsonl`: {n_pool} in the review pool, {n_held} held out "
        f"(never ingested; stratified by dispute type, fixed by a hash of the ids). Reviewers confirm or correct through the HTTP API in batches of {args.batch_size}; "
        "the service retrains automatically after each batch and promotes only through the quality gate "
        f"(margin {settings.promotion_margin:g}; on the held-out confirmed labels, a drop beyond it with confidence "
        f"{settings.promotion_confidence:g}); a confirmed label weighs {settings.confirmed_weight:g} seed messages "
        "(`TRIAGE_CONFIRMED_WEIGHT`). Scores: macro-F1 of the whole triager (model + rules) on the held-out part. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; total "
        f"{elapsed / 60:.1f} min ({len(arms)} orders, {args.jobs} at a time, one process each; 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f}: the `s` column is wall time per batch and grows with other work on the machine).",
        "",
        "![learning curve](learning_curve.png)",
        "",
    ]
    for arm in arms:
        lines += [f"## {arm['order']} order", "",
                  "| confirmed | corrected | candidate dispute F1 | gate | serving dispute F1 | urgency | emotion | escalation | s |",
                  "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for s in arm["steps"]:
            gate = "seed" if s["confirmed"] == 0 else ("promoted" if s["promoted"] else "rejected")
            c = s["current_f1"]
            lines.append(f"| {s['confirmed']} | {s['corrections']} | {s['candidate_f1']['dispute_type']:.3f} | {gate} | "
                         f"{c['dispute_type']:.3f} | {c.get('urgency', 0):.3f} | {c.get('emotion', 0):.3f} | "
                         f"{c.get('escalation', 0):.3f} | {s['seconds']:.0f} |")
        rejected = [s for s in arm["steps"] if s["confirmed"] and not s["promoted"]]
        for s in rejected:
            lines.append(f"\nRejected at {s['confirmed']}: {s['reason']}")
        lines.append("")
    lines += ["## Target", ""]
    for arm in arms:
        at = next((s for s in arm["steps"] if s["confirmed"] >= 200), None)
        if at is None:
            lines.append(f"- {arm['order']}: fewer than 200 confirmations were possible")
            continue
        gain = at["current_f1"]["dispute_type"] - seed_f1["dispute_type"]
        verdict = "met" if gain >= TARGET_GAIN else "NOT met"
        lines.append(f"- {arm['order']} order, after {at['confirmed']} confirmations: dispute-type macro-F1 "
                     f"{seed_f1['dispute_type']:.3f} -> {at['current_f1']['dispute_type']:.3f} "
                     f"({gain:+.3f}; target +{TARGET_GAIN:.2f}: **{verdict}**)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=0,
                        help="batches per order; 0 (default): until the review pool runs out (29 of 25 here)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--holdout-share", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=7, help="random order's seed")
    parser.add_argument("--orders", default=",".join(ORDERS), help=f"comma-separated, from {', '.join(ORDERS)}")
    parser.add_argument("--jobs", type=int, default=3, help="orders run in parallel (one process each)")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from bench/results/learning.json")
    args = parser.parse_args(argv)
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    if not orders or set(orders) - set(ORDERS):
        parser.error(f"--orders: choose from {', '.join(ORDERS)}, got {args.orders!r}")
    if args.replot:
        arms = json.loads((RESULTS / "learning.json").read_text(encoding="utf-8"))
        plot(arms, arms[0]["steps"][0]["current_f1"]["dispute_type"], RESULTS / "learning_curve.png")
        return 0
    if not DEV_FILE.exists():
        say(f"{DEV_FILE} not found: benchmark skipped")
        return 0
    from models.training import load_labeled

    records, problems = load_labeled([DEV_FILE])
    pool, held = split_dev(records, args.holdout_share)
    say(f"{len(records)} labeled messages ({len(problems)} skipped): {len(pool)} to review, {len(held)} held out")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-learning-seed-") as tmp:
        say("training the seed-only model")
        train_seed_model(Path(tmp) / "models")
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool_exec:
            futures = [pool_exec.submit(run_arm, order, str(Path(tmp) / "models"), pool, held, args.batches,
                                        args.batch_size, args.seed) for order in orders]
            arms = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(arms, arms[0]["steps"][0]["current_f1"]["dispute_type"], RESULTS / "learning_curve.png")
    (RESULTS / "learning.md").write_text(report(arms, len(pool), len(held), elapsed, args), encoding="utf-8")
    (RESULTS / "learning.json").write_text(json.dumps(arms, indent=1), encoding="utf-8")
    say(f"wrote {RESULTS / 'learning.md'} and learning_curve.png in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
