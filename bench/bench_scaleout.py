"""Scale-out benchmark: ingestion with 1, 2 and 4 API processes on PostgreSQL (with a broker,
so the API processes run no background threads), and backfill with 1 and 2 `triage worker`
processes, beside the single-process SQLite default, in one run.

Ingestion reuses bench_load's load generator (concurrent keep-alive clients, one new
message per request) and measures messages/s, p50/p99 and the server's CPU per message
(all API processes together). Backfill triages an archive of ``--archive`` messages in
chunks of ``--chunk`` through the workers (wall time from enqueue to the job done, and
the workers' CPU per message); the SQLite row is `triage backfill` in-process without a
broker. Texts as in bench_load. Writes ``bench/results/scaleout.md``.

    python bench/bench_scaleout.py [--requests 2000] [--concurrency 50] [--archive 4000] [--chunk 250]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_load as load  # noqa: E402

ROOT = load.ROOT
REDIS = os.environ.get("TRIAGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def say(message: str) -> None:
    print(f"[bench_scaleout] {message}", file=sys.stderr, flush=True)


def env_for(database_url: str, tmp: Path, broker: bool, namespace: str) -> dict:
    env = load.service_env(database_url, tmp)
    if broker:
        env.update(TRIAGE_BROKER_URL=REDIS, TRIAGE_BROKER_NAMESPACE=namespace)
    return env


def ingestion(name: str, database_url: str, tmp: Path, texts, args, processes: int, broker: bool) -> dict:
    key = load.make_key(database_url, tmp)
    port = load.free_port()
    env = env_for(database_url, tmp, broker, f"bench-{uuid.uuid4().hex[:8]}")
    server = load.start_server(["api.app:create_app", "--factory", "--workers", str(processes)], env, port, ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        load.wait_ready(base, server, "/healthz")
        for _ in range(100):  # every worker process up and with its model
            if httpx.get(base + "/readyz").status_code == 200:
                break
            time.sleep(0.3)
        time.sleep(2.0 * processes)
        say(f"{name}: {args.requests} requests, {args.concurrency} clients")
        return load.measured(server, lambda: load.drive(base, {"Authorization": f"Bearer {key}"}, texts,
                                                        args.requests, args.concurrency), 1)
    finally:
        server.terminate()
        server.wait(30)


def backfill(name: str, database_url: str, tmp: Path, archive: Path, args, workers: int) -> dict:
    load.make_key(database_url, tmp)  # migrates the fresh database
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = env_for(database_url, tmp, workers > 0, namespace)
    procs = [subprocess.Popen([sys.executable, "-m", "triage.cli", "worker", "--threads", "2"], cwd=ROOT, env=env,
                              stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        time.sleep(8 if workers else 0)  # the workers load the model before taking tasks
        before = sum(load.cpu_seconds(p.pid) or 0 for p in procs)
        started = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "triage.cli", "backfill", str(archive), "--chunk-size",
                              str(args.chunk)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        elapsed = time.perf_counter() - started
        if cli.returncode != 0:
            raise RuntimeError(cli.stderr[-2000:])
        report = json.loads(cli.stdout)
        cpu = sum(load.cpu_seconds(p.pid) or 0 for p in procs) - before if procs else None
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        if workers:
            import redis

            client = redis.Redis.from_url(REDIS)
            for k in client.scan_iter(f"{namespace}:*"):
                client.delete(k)
    say(f"{name}: {report['created']} messages in {elapsed:.1f} s")
    return {"messages": report["created"], "elapsed_s": elapsed, "rate": report["created"] / elapsed,
            "worker_cpu_ms": cpu / report["created"] * 1000 if cpu is not None else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--archive", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args(argv)
    from models.store import ModelStore

    if not ModelStore(load.model_dir()).current_version():
        say(f"no current model in {load.model_dir()}; run `triage ensure-model` first")
        return 1
    texts, source = load.load_texts()
    load_before = os.getloadavg()[0]
    ingest: dict[str, dict] = {}
    fill: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "archive.jsonl"
        run = uuid.uuid4().hex[:8]
        with archive.open("w", encoding="utf-8") as f:
            for i in range(args.archive):
                f.write(json.dumps({"source": "archive", "external_id": f"{run}-{i}",
                                    "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
        ingest["SQLite, 1 process, no broker"] = ingestion("sqlite", f"sqlite:///{tmp / 'i.db'}", tmp, texts, args,
                                                          1, broker=False)
        for n in [int(x) for x in args.processes.split(",")]:
            url, drop = load.postgres_schema_url()
            try:
                ingest[f"PostgreSQL, {n} API process{'es' if n > 1 else ''}"] = ingestion(
                    f"postgres x{n}", url, tmp, texts, args, n, broker=True)
            finally:
                drop()
        fill["SQLite, in-process (no broker)"] = backfill("sqlite backfill", f"sqlite:///{tmp / 'b.db'}", tmp,
                                                          archive, args, 0)
        for n in (1, 2):
            url, drop = load.postgres_schema_url()
            try:
                fill[f"PostgreSQL, {n} worker{'s' if n > 1 else ''} x 2 threads"] = backfill(
                    f"postgres backfill x{n}", url, tmp, archive, args, n)
            finally:
                drop()
    lines = [f"Scale-out on one machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
             f"(other processes share the cores). Texts: {source}.", "",
             f"Ingestion: {args.concurrency} clients, {args.requests} requests per row, one new message per request; "
             "API processes are uvicorn workers on one port (PostgreSQL rows with a broker, so no background "
             "threads in them); server CPU is all API processes together.", "",
             "| ingestion | messages/s | p50 ms | p99 ms | server CPU ms/message | non-2xx |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in ingest.items():
        bad = sum(n for code, n in r["statuses"].items() if not 200 <= int(code) < 300)
        lines.append(f"| {name} | {r['rate']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['server_cpu_ms'] or 0:.2f} | {bad} |")
    lines += ["", f"Backfill: {args.archive} messages in chunks of {args.chunk}, `triage backfill` waiting for "
                  "the job to finish.", "",
              "| backfill | messages/s | wall s | worker CPU ms/message |", "|---|---:|---:|---:|"]
    for name, r in fill.items():
        cpu = f"{r['worker_cpu_ms']:.2f}" if r["worker_cpu_ms"] is not None else "(in the CLI)"
        lines.append(f"| {name} | {r['rate']:.0f} | {r['elapsed_s']:.1f} | {cpu} |")
    (load.RESULTS / "scaleout.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
