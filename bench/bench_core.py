"""Benchmark of the triage core: quality on real complaints, cross-validation, speed.

Quality: the default model (trained on ``datasets/seed`` only, plus the optional corpus
sentiment signal) scored on the real labeled complaints of ``../shared/data/dev_labeled.jsonl``'s
tuning pool (``bench/dev_split.py``: the locked rows are left out; ``bench_accuracy.py`` scores them),
beside a majority-class baseline and 5-fold cross-validation on the seed data. The model
is also trained without the corpus signal, to show what that signal is worth.
Speed: ``triage predict`` on a 10k-message JSONL sampled from the real review corpora
(in-process batch throughput and the whole command as a subprocess), single-message
latency p50/p99, and segmentation's share of the time.

Writes ``bench/results/core.md`` (and ``core.json``); exits 0 when it could measure,
whether or not targets are met (the table says which).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dev_split import split_dev  # noqa: E402
from models.evaluation import majority_baseline, score_predictions  # noqa: E402
from models.store import ModelStore  # noqa: E402
from models.training import CORPUS_FILES, cross_validate, fit_sentiment, load_labeled, train_backend  # noqa: E402
from triage.text import mask_personal_data, normalise, segment  # noqa: E402
from triage.triager import Triager  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEV = SHARED / "dev_labeled.jsonl"
CORPORA = SHARED / "corpora"
RESULTS = ROOT / "bench" / "results"
SEED = ROOT / "datasets" / "seed"
N_STREAM = 10_000
TARGETS = {"dispute_type": 0.70, "urgency": 0.60, "emotion": 0.65}
QUALITY_HEADS = ("dispute_type", "urgency", "emotion", "escalation")


def log(msg: str) -> None:
    print(f"[bench_core] {msg}", file=sys.stderr, flush=True)


def stream_texts(n: int = N_STREAM, seed: int = 0) -> list[str]:
    """n real reviews sampled from all corpora (texts stay in memory and a temp file only)."""
    texts = []
    for name in CORPUS_FILES:
        path = CORPORA / name
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace", newline="") as f:
                texts.extend(r["review"] for r in csv.DictReader(f) if (r.get("review") or "").strip())
    rng = random.Random(seed)
    rng.shuffle(texts)
    return [t[:10_000] for t in texts[:n]]


def quality(seed_records, dev, sentiment) -> dict:
    backend = train_backend(seed_records, "sklearn", sentiment=sentiment)
    triager = Triager(backend, "bench", max_chars=10**9)
    preds = triager.predict_many([r["text"] for r in dev])
    return {"final": score_predictions(dev, preds, rules=True), "model": score_predictions(dev, preds, rules=False)}


def fmt(x: float) -> str:
    return f"{x:.4f}"


def main() -> int:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    seed_records, problems = load_labeled(SEED)
    log(f"{len(seed_records)} seed messages ({len(problems)} bad lines)")
    have_dev = DEV.is_file()
    have_corpora = CORPORA.is_dir()
    out: dict = {"seed_messages": len(seed_records), "cpu_count": os.cpu_count()}

    t0 = time.perf_counter()
    sentiment = fit_sentiment(CORPORA) if have_corpora else None
    out["sentiment_fit_s"] = round(time.perf_counter() - t0, 1)

    # ---------------------------------------------------------------- quality on real complaints
    if have_dev:
        dev, _ = split_dev(DEV)  # the tuning pool: the locked rows are left out (bench_accuracy scores them)
        corpus_texts = set(stream_texts(10**7)) if have_corpora else set()
        out["dev_texts_also_in_corpora"] = sum(r["text"] in corpus_texts for r in dev)
        log("dev quality (with and without the corpus sentiment signal)")
        t0 = time.perf_counter()
        out["dev"] = quality(seed_records, dev, sentiment)
        out["train_s"] = round(time.perf_counter() - t0, 1)
        out["dev_no_corpora"] = quality(seed_records, dev, None) if sentiment is not None else None
        out["dev_majority"] = majority_baseline(seed_records, dev)
        out["dev_n"] = len(dev)
    else:
        log(f"{DEV} not found: dev quality skipped")

    log("5-fold cross-validation on the seed data")
    out["cv"] = cross_validate(seed_records, "sklearn", folds=5, sentiment=sentiment)
    out["cv_majority"] = majority_baseline(seed_records, seed_records)

    # ---------------------------------------------------------------- speed
    backend = train_backend(seed_records, "sklearn", sentiment=sentiment)
    texts = stream_texts() if have_corpora else [r["text"] for r in seed_records] * (N_STREAM // max(1, len(seed_records)) + 1)
    texts = texts[:N_STREAM]
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp) / "models")
        store.set_current(store.save(backend, {"data_hash": "bench"}))
        triager = Triager.from_store(store)
        triager.predict_many(texts[:200])  # warm-up: tokenizer, caches

        log(f"throughput on {len(texts)} real reviews (in process, batches of 512)")
        runs = []  # three passes; the machine is shared, so the median is quoted
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(texts), 512):
                triager.predict_many(texts[i : i + 512])
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        batch_s = statistics.median(r[0] for r in runs)
        batch_cpu_s = statistics.median(r[1] for r in runs)
        best_s = min(r[0] for r in runs)

        masked = [mask_personal_data(normalise(t)).text for t in texts]
        t0 = time.perf_counter()
        for t in masked:
            segment(t)
        segment_s = time.perf_counter() - t0

        log("latency of single messages")
        latencies, cpu_latencies = [], []
        for t in texts[:2000]:
            s, c = time.perf_counter(), time.process_time()
            triager.predict(t)
            latencies.append((time.perf_counter() - s) * 1000)
            cpu_latencies.append((time.process_time() - c) * 1000)
        latencies.sort()
        cpu_latencies.sort()

        log("`triage predict` as a subprocess on the 10k JSONL")
        inp, outp = Path(tmp) / "stream.jsonl", Path(tmp) / "out.jsonl"
        with inp.open("w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
        triage_bin = Path(sys.executable).parent / "triage"
        cmd = [str(triage_bin), "predict", "--model", str(store.root), str(inp), "-o", str(outp)]
        if not triage_bin.exists():
            cmd = [sys.executable, "-m", "triage.cli", *cmd[1:]]
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
        cli_s = time.perf_counter() - t0
        cli_lines = sum(1 for _ in outp.open(encoding="utf-8")) if outp.exists() else 0
    out["speed"] = {
        "messages": len(texts),
        "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
        "batch_msg_per_s": round(len(texts) / batch_s),
        "batch_msg_per_s_best": round(len(texts) / best_s),
        "batch_msg_per_cpu_s": round(len(texts) / batch_cpu_s),
        "cli_msg_per_s": round(cli_lines / cli_s) if rc == 0 else None,
        "cli_wall_s": round(cli_s, 2),
        "cli_rc": rc,
        "latency_p50_ms": round(latencies[len(latencies) // 2], 2),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "latency_cpu_p50_ms": round(cpu_latencies[len(cpu_latencies) // 2], 2),
        "segmentation_share": round(segment_s / batch_s, 3),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    out["total_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(out, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    (RESULTS / "core.md").write_text(render(out), encoding="utf-8")
    log(f"wrote {RESULTS / 'core.md'} in {out['total_s']} s")
    return 0


def render(out: dict) -> str:
    lines = []
    if out.get("dev"):
        final, model, base = out["dev"]["final"], out["dev"]["model"], out["dev_majority"]
        nocorp = out.get("dev_no_corpora")
        lines += [
            f"Quality on {out['dev_n']} real complaints (the tuning pool of `../shared/data/dev_labeled.jsonl`; "
            "its locked rows are left out: `bench_accuracy.py` scores them), model trained on "
            f"`datasets/seed` only ({out['seed_messages']} messages) plus the corpus sentiment signal; "
            "final = model + domain rules.",
            "",
            "| head | metric | target | final | model only | without corpus signal | majority baseline | met |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for head in QUALITY_HEADS:
            target = TARGETS.get(head)
            f1 = final[head]["macro_f1"]
            met = "" if target is None else ("yes" if f1 >= target else "**no**")
            lines.append(
                f"| {head} | macro-F1 | {fmt(target) if target else '-'} | {fmt(f1)} | {fmt(model[head]['macro_f1'])} | "
                f"{fmt(nocorp['final'][head]['macro_f1']) if nocorp else '-'} | {fmt(base[head]['macro_f1'])} | {met} |"
            )
        for head in QUALITY_HEADS:
            lines.append(
                f"| {head} | accuracy | - | {fmt(final[head]['accuracy'])} | {fmt(model[head]['accuracy'])} | "
                f"{fmt(nocorp['final'][head]['accuracy']) if nocorp else '-'} | {fmt(base[head]['accuracy'])} | |"
            )
        u1 = final["urgency"]["per_class"].get("1", {}).get("recall", 0.0)
        u1m = model["urgency"]["per_class"].get("1", {}).get("recall", 0.0)
        u1n = nocorp["final"]["urgency"]["per_class"].get("1", {}).get("recall", 0.0) if nocorp else None
        u1b = base["urgency"]["per_class"].get("1", {}).get("recall", 0.0)
        lines.append(
            f"| urgency | recall of 1 (一级) | 0.700 | {fmt(u1)} | {fmt(u1m)} | {fmt(u1n) if u1n is not None else '-'} | {fmt(u1b)} | "
            f"{'yes' if u1 >= 0.70 else '**no**'} |"
        )
        for head in ("dispute_type", "urgency", "emotion"):
            lines.append(f"| {head} | ECE | - | {fmt(final[head]['ece'])} | {fmt(model[head]['ece'])} | | | |")
        lines += [
            "",
            f"{out['dev_texts_also_in_corpora']} of these {out['dev_n']} texts also occur verbatim in the review corpora; the sentiment "
            "signal's training always leaves them out (`models.training.evaluation_texts`), so the figures above carry no leak.",
            "",
        ]
    cv, cvb = out["cv"], out["cv_majority"]
    lines += [
        f"5-fold cross-validation on the seed data ({out['seed_messages']} messages, stratified, model + rules):",
        "",
        "| head | macro-F1 | accuracy | ECE | majority macro-F1 | majority accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for head in QUALITY_HEADS:
        lines.append(
            f"| {head} | {fmt(cv[head]['macro_f1'])} | {fmt(cv[head]['accuracy'])} | {fmt(cv[head]['ece'])} | "
            f"{fmt(cvb[head]['macro_f1'])} | {fmt(cvb[head]['accuracy'])} |"
        )
    s = out["speed"]
    lines += [
        "",
        f"Speed on {s['messages']} real reviews from the corpora (mean {s['mean_chars']} characters), one process, "
        f"{out['cpu_count']} CPUs, load average {s['load_average_before']} before / {s['load_average_after']} after "
        "(other jobs on the machine slow these figures down):",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| in-process `predict_many` throughput (batches of 512), wall clock, median of 3 (best) | {s['batch_msg_per_s']} msg/s ({s['batch_msg_per_s_best']}) | 2000 msg/s |",
        f"| the same per CPU-second of this process (what an idle core gives) | {s['batch_msg_per_cpu_s']} msg/s | - |",
        f"| `triage predict` command, 10k-line JSONL, start-up included | {s['cli_msg_per_s']} msg/s ({s['cli_wall_s']} s) | 2000 msg/s |",
        f"| single-message latency p50 | {s['latency_p50_ms']} ms | 5 ms |",
        f"| single-message latency p99 | {s['latency_p99_ms']} ms | - |",
        f"| single-message CPU time p50 (latency on an idle core) | {s['latency_cpu_p50_ms']} ms | - |",
        f"| segmentation share of batch time (compiled jieba-rs; jieba without it) | {s['segmentation_share']:.0%} | - |",
        "",
        f"Sentiment signal fitted in {out['sentiment_fit_s']} s; whole benchmark {out['total_s']} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
