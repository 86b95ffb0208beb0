"""Triage speed against bare jieba on 20,000 real reviews (issue 14).

One run compares, round after round (median of the rounds), each in a fresh process:

* ``bare jieba``: ``jieba.lcut`` (its defaults) over the texts, dictionary loaded beforehand;
  the issue's yardstick. ``jieba, no HMM`` is the same with HMM off, as the pipeline cuts;
* ``compiled segmenter``: the pipeline's compiled segmenter (jieba-rs through rjieba, with the
  domain dictionary) over the same texts, built beforehand;
* ``triage predict`` (new path: compiled segmenter, numpy-only predictor) and the old path
  (``TRIAGE_SEGMENTER=jieba TRIAGE_FAST_PREDICT=false``: jieba and the scikit-learn backend)
  as subprocesses over a JSONL file of the texts, start-up included, output to a file;
* start-up: ``triage predict`` of an empty file, both paths;
* in-process latency: one ``Triager.predict`` call per message (p50, p99), both paths.

Label agreement is the new path's labels against the old path's (the pure-jieba pipeline)
on every text, with the differences listed. Texts: the ``review`` column of
``../shared/data/corpora/online_shopping_10_cats.csv``, read in place; the JSONL input lives
in a temporary folder. The model is the store's current one (``make bench`` trains it).
The machine is shared, so CPU seconds per message (user + system of the process) are given
beside wall time. Writes ``bench/results/speed.md`` and ``speed.json``.

    python bench/bench_speed.py [--n 20000] [--rounds 3] [--latency-n 1000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CORPUS = ROOT.parent / "shared" / "data" / "corpora" / "online_shopping_10_cats.csv"
HEADS = ("dispute_type", "urgency", "emotion", "escalation")
TARGET_RATIO, TARGET_RATE, TARGET_P50_MS, TARGET_STARTUP_S, TARGET_AGREEMENT = 1.0, 4000, 1.0, 0.8, 0.995
OLD_PATH = {"TRIAGE_SEGMENTER": "jieba", "TRIAGE_FAST_PREDICT": "false"}
NEW_PATH = {"TRIAGE_SEGMENTER": "auto", "TRIAGE_FAST_PREDICT": "true"}

# Measurements that run in their own interpreter: they print one JSON object.
SEGMENT_JIEBA = """
import json, sys, time, logging
import jieba
jieba.setLogLevel(logging.WARNING)
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
hmm = sys.argv[2] == "hmm"
jieba.initialize()
t = time.perf_counter(); c0 = time.process_time()
n = sum(len(jieba.lcut(x, HMM=hmm)) for x in texts)
print(json.dumps({"s": time.perf_counter() - t, "cpu": time.process_time() - c0, "words": n}))
"""
SEGMENT_COMPILED = """
import json, sys, time
from triage import text as T
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
kind, cut = T._cutter(choice="auto")
t = time.perf_counter(); c0 = time.process_time()
n = sum(len(cut(x)) for x in texts)
print(json.dumps({"s": time.perf_counter() - t, "cpu": time.process_time() - c0, "words": n, "kind": kind}))
"""
LATENCY = """
import json, statistics, sys, time
from models.store import ModelStore
from triage.settings import get_settings
from triage.triager import Triager
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")][: int(sys.argv[2])]
triager = Triager.from_store(ModelStore(get_settings().effective_model_dir))
triager.predict_many(texts[:50])  # warm: caches, first-call allocations
times = []
for x in texts:
    t = time.perf_counter(); triager.predict(x); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
                  "backend": type(triager.backend).__name__}))
"""


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], env_extra: dict[str, str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds (user + system) and the result of one child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    cpu0, t0 = child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({out.returncode}): {out.stderr[-2000:]}")
    return wall, cpu, out


def snippet(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    _, _, out = run([sys.executable, "-c", code, *args], env or {})
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict(path: Path, out: Path, env: dict[str, str]) -> tuple[float, float]:
    wall, cpu, _ = run([sys.executable, "-m", "triage.cli", "predict", str(path), "-o", str(out)], env)
    return wall, cpu


def read_reviews(n: int) -> list[str]:
    texts = []
    with CORPUS.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            review = (row.get("review") or "").strip()
            if review:
                texts.append(review)
                if len(texts) == n:
                    break
    return texts


def labels(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def compare(new: list[dict], old: list[dict], texts: list[str]) -> dict:
    """Label agreement of the new path with the old one, and each difference with its margin."""
    differences = []
    for a, b in zip(new, old):
        heads = [h for h in HEADS if a[h] != b[h]]
        if heads:
            h = heads[0]
            score = b["scores"][h] if h != "urgency" else b["scores"]["urgency"]
            differences.append({
                "id": a["id"], "heads": heads, "new": {k: a[k] for k in heads}, "old": {k: b[k] for k in heads},
                "old_scores": score, "new_scores": a["scores"][h], "chars": len(texts[a["id"]]),
            })
    score_diffs = [
        abs(a["scores"][h][k] - b["scores"][h][k]) for a, b in zip(new, old) for h in HEADS for k in b["scores"][h]
    ]
    return {
        "n": len(old), "agree": len(old) - len(differences), "share": (len(old) - len(differences)) / max(len(old), 1),
        "differences": differences[:20], "n_differences": len(differences),
        "max_score_diff": max(score_diffs) if score_diffs else 0.0,
        "explanations_present": sum(all(h in a["explanation"] for h in (*HEADS, "rules")) for a in new),
        "explanations_equal": sum(a["explanation"] == b["explanation"] for a, b in zip(new, old)),
        "lines": (len(new), len(old)),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-n", type=int, default=1000)
    args = parser.parse_args(argv)
    if not CORPUS.is_file():
        print(f"[speed] {CORPUS} is absent: nothing to measure", file=sys.stderr)
        return 1
    texts = read_reviews(args.n)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="triage-bench-speed-") as tmp:
        tmp = Path(tmp)
        inp = tmp / "reviews.jsonl"
        inp.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
                       encoding="utf-8")
        empty = tmp / "empty.jsonl"
        empty.write_text("", encoding="utf-8")
        # Warm the operating system's file cache and the segmenters' on-disk caches once.
        predict(empty, tmp / "warm.jsonl", NEW_PATH)
        predict(empty, tmp / "warm.jsonl", OLD_PATH)
        for r in range(args.rounds):
            row = {}
            row["jieba"] = snippet(SEGMENT_JIEBA, str(inp), "hmm")
            row["jieba_no_hmm"] = snippet(SEGMENT_JIEBA, str(inp), "nohmm")
            row["compiled"] = snippet(SEGMENT_COMPILED, str(inp), env=NEW_PATH)
            row["new_wall"], row["new_cpu"] = predict(inp, tmp / "new.jsonl", NEW_PATH)
            row["old_wall"], row["old_cpu"] = predict(inp, tmp / "old.jsonl", OLD_PATH)
            row["startup_new"], row["startup_new_cpu"] = predict(empty, tmp / "e.jsonl", NEW_PATH)
            row["startup_old"], row["startup_old_cpu"] = predict(empty, tmp / "e.jsonl", OLD_PATH)
            row["latency_new"] = snippet(LATENCY, str(inp), str(args.latency_n), env=NEW_PATH)
            row["latency_old"] = snippet(LATENCY, str(inp), str(args.latency_n), env=OLD_PATH)
            row["load"] = os.getloadavg()[0]
            rounds.append(row)
            print(f"[speed] round {r + 1}: new {args.n / row['new_wall']:.0f} msg/s, bare jieba "
                  f"{args.n / row['jieba']['s']:.0f} msg/s, old {args.n / row['old_wall']:.0f} msg/s", file=sys.stderr)
        agreement = compare(labels(tmp / "new.jsonl"), labels(tmp / "old.jsonl"), texts)
    report = summarise(rounds, agreement, args, load_before, time.perf_counter() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    (RESULTS / "speed.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def summarise(rounds: list[dict], agreement: dict, args, load_before: float, wall: float) -> dict:
    n = args.n
    med = statistics.median

    def rate(seconds: float) -> float:
        return n / seconds

    per_round_ratio = [r["jieba"]["s"] / r["new_wall"] for r in rounds]
    return {
        "n": n, "rounds": len(rounds), "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": load_before, "load_after": os.getloadavg()[0], "load_per_round": [r["load"] for r in rounds],
        "bench_wall_s": wall,
        "rates": {
            "bare jieba.lcut": rate(med(r["jieba"]["s"] for r in rounds)),
            "jieba.lcut, no HMM": rate(med(r["jieba_no_hmm"]["s"] for r in rounds)),
            "compiled segmenter": rate(med(r["compiled"]["s"] for r in rounds)),
            "triage predict, new path": rate(med(r["new_wall"] for r in rounds)),
            "triage predict, old path": rate(med(r["old_wall"] for r in rounds)),
        },
        "cpu_ms_per_message": {
            "bare jieba.lcut": 1000 * med(r["jieba"]["cpu"] for r in rounds) / n,
            "compiled segmenter": 1000 * med(r["compiled"]["cpu"] for r in rounds) / n,
            "triage predict, new path": 1000 * med(r["new_cpu"] for r in rounds) / n,
            "triage predict, old path": 1000 * med(r["old_cpu"] for r in rounds) / n,
        },
        "ratio_new_to_jieba": med(per_round_ratio),
        "ratio_new_to_jieba_per_round": per_round_ratio,
        "ratio_new_to_old": med(r["old_wall"] / r["new_wall"] for r in rounds),
        "ratio_old_to_jieba": med(r["jieba"]["s"] / r["old_wall"] for r in rounds),
        "ratio_cpu_new_to_jieba": med(r["jieba"]["cpu"] / r["new_cpu"] for r in rounds),
        "startup_s": {"new path": med(r["startup_new"] for r in rounds), "old path": med(r["startup_old"] for r in rounds)},
        "startup_cpu_s": {"new path": med(r["startup_new_cpu"] for r in rounds), "old path": med(r["startup_old_cpu"] for r in rounds)},
        "latency_ms": {
            "new path p50": med(r["latency_new"]["p50_ms"] for r in rounds),
            "new path p99": med(r["latency_new"]["p99_ms"] for r in rounds),
            "old path p50": med(r["latency_old"]["p50_ms"] for r in rounds),
            "old path p99": med(r["latency_old"]["p99_ms"] for r in rounds),
        },
        "backends": {"new": rounds[0]["latency_new"]["backend"], "old": rounds[0]["latency_old"]["backend"],
                     "segmenter": rounds[0]["compiled"]["kind"]},
        "agreement": agreement,
    }


def markdown(r: dict) -> str:
    a = r["agreement"]
    rates, cpu = r["rates"], r["cpu_ms_per_message"]
    lines = [
        f"{r['n']} real reviews (`online_shopping_10_cats.csv`, column `review`), {r['rounds']} rounds, medians. "
        f"Machine: {r['machine']}, shared: load average {r['load_before']:.1f} before, "
        f"{', '.join('%.1f' % x for x in r['load_per_round'])} after each round. Each line is its own process; "
        "`triage predict` includes its start-up (imports, model, dictionary) and writes every prediction to a file.",
        "",
        "| what | messages/s | CPU ms/message |",
        "|---|---:|---:|",
    ]
    for name, value in rates.items():
        c = cpu.get(name)
        lines.append(f"| {name} | {value:.0f} | {'%.3f' % c if c is not None else ''} |")
    s, sc, lat = r["startup_s"], r["startup_cpu_s"], r["latency_ms"]
    lines += [
        "",
        "| | new path | old path |",
        "|---|---:|---:|",
        f"| start-up of `triage predict` (empty input), s | {s['new path']:.2f} | {s['old path']:.2f} |",
        f"| start-up, CPU s | {sc['new path']:.2f} | {sc['old path']:.2f} |",
        f"| in-process single message p50, ms | {lat['new path p50']:.2f} | {lat['old path p50']:.2f} |",
        f"| in-process single message p99, ms | {lat['new path p99']:.2f} | {lat['old path p99']:.2f} |",
        "",
        f"New path: segmenter `{r['backends']['segmenter']}`, predictor `{r['backends']['new']}`; "
        f"old path: jieba and `{r['backends']['old']}` (`TRIAGE_SEGMENTER=jieba TRIAGE_FAST_PREDICT=false`).",
        "",
        f"Ratios (same rounds): new path / bare jieba **{r['ratio_new_to_jieba']:.2f}** "
        f"(rounds: {', '.join('%.2f' % x for x in r['ratio_new_to_jieba_per_round'])}); in CPU time "
        f"{r['ratio_cpu_new_to_jieba']:.2f}; new / old path {r['ratio_new_to_old']:.2f}; old path / bare jieba "
        f"{r['ratio_old_to_jieba']:.2f}.",
        "",
        f"Labels: the new path agrees with the pure-jieba pipeline on {a['agree']} of {a['n']} texts "
        f"({100 * a['share']:.2f} %) on all four heads; largest probability difference {a['max_score_diff']:.4f}; "
        f"explanations present on {a['explanations_present']} lines, identical to the old path's on "
        f"{a['explanations_equal']}.",
    ]
    for d in a["differences"]:
        lines.append(f"- text {d['id']} ({d['chars']} chars): {d['old']} -> {d['new']}; old scores {d['old_scores']}, new {d['new_scores']}")
    checks = [
        ("new path / bare jieba >= 1.0", r["ratio_new_to_jieba"] >= TARGET_RATIO),
        (">= 4000 messages/s", rates["triage predict, new path"] >= TARGET_RATE),
        ("single-message p50 <= 1 ms", lat["new path p50"] <= TARGET_P50_MS),
        ("start-up <= 0.8 s", s["new path"] <= TARGET_STARTUP_S),
        ("labels identical on >= 99.5 %", a["share"] >= TARGET_AGREEMENT),
    ]
    lines += ["", "Targets: " + "; ".join(f"{name}: {'met' if ok else '**NOT met**'}" for name, ok in checks) + "."]
    lines += ["", f"Benchmark wall time {r['bench_wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
