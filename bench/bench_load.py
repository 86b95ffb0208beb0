"""Ingestion load benchmark: 50 concurrent clients POST /v1/messages on loopback.

Scenarios, each against a fresh database and a server in its own process (``uvicorn``,
one worker, the real app with the store's current model):

* ``ceiling``: a bare FastAPI endpoint that parses the same JSON body and answers; the
  most this machine's HTTP stack can do, so the service is quoted as a share of it;
* ``sqlite``: the service on SQLite (WAL) under a temporary directory;
* ``postgres``: the service on PostgreSQL (a fresh schema, dropped afterwards), skipped
  when the server is unreachable.

Every request carries one message with a new external id (so each is a real triage and
insert). Texts come from ``../shared/data/dev_labeled.jsonl`` (read in place, never
copied), else from the project's seed data. Bounded: a fixed number of requests per
scenario. The load generator shares the machine's cores with the server, as a helpdesk
on the same host would. Writes ``bench/results/load.md``.

    python bench/bench_load.py [--requests 3000] [--repeat 3] [--concurrency 50] [--workers 1]
                               [--scenarios ceiling,sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared" / "data" / "dev_labeled.jsonl"
PG_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_RATE, TARGET_P99_MS = 300, 200

sys.path.insert(0, str(ROOT))

CEILING_APP = '''
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    external_id: str
    text: str

app = FastAPI()

@app.post("/v1/messages", status_code=201)
def post(message: MessageIn):
    return {"created": True, "external_id": message.external_id, "length": len(message.text)}
'''


def say(message: str) -> None:
    print(f"[bench_load] {message}", file=sys.stderr, flush=True)


def load_texts() -> tuple[list[str], str]:
    if SHARED.exists():
        texts = [json.loads(line)["text"] for line in SHARED.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, f"{len(texts)} real complaints from ../shared/data/dev_labeled.jsonl"
    texts = []
    for path in sorted((ROOT / "datasets" / "seed").glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts, f"{len(texts)} seed messages (../shared/data not found)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(base + path, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {base} not ready after {timeout} s")


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams.

    httpx costs about a millisecond of CPU per request, which on a 2-core machine would
    measure the load generator rather than the server; this costs a few microseconds."""

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader = self.writer = None

    async def post(self, path: str, payload: dict) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self):
        if self.writer is not None:
            self.writer.close()


async def drive(base: str, headers: dict, texts: list[str], requests: int, concurrency: int) -> dict:
    """``concurrency`` clients, each posting one message at a time until ``requests`` are done."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    run = uuid.uuid4().hex[:8]
    connections = [Connection(host, int(port), headers) for _ in range(concurrency)]

    async def client_loop(conn: Connection):
        for i in counter:
            body = {"source": "bench", "external_id": f"{run}-{i}", "text": texts[i % len(texts)]}
            started = time.perf_counter()
            status = await conn.post("/v1/messages", body)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    # warm-up: a few requests on every connection before the clock starts
    await asyncio.gather(*(c.post("/v1/messages", {"source": "bench-warm", "external_id": f"{run}-w{j}",
                                                   "text": texts[j % len(texts)]}) for j, c in enumerate(connections)))
    started = time.perf_counter()
    await asyncio.gather(*(client_loop(c) for c in connections))
    elapsed = time.perf_counter() - started
    for c in connections:
        await c.close()
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "statuses": statuses,
    }


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its live children (uvicorn workers), from
    Linux /proc, for the CPU cost per message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return None
    return own + sum(cpu_seconds(int(child)) or 0.0 for child in children)


def measured(server: subprocess.Popen, make_run, repeat: int) -> dict:
    """Run ``repeat`` rounds against one server; the median of each figure over the rounds."""
    rounds = []
    for _ in range(repeat):
        before = cpu_seconds(server.pid)
        result = run_async(make_run())
        after = cpu_seconds(server.pid)
        result["server_cpu_ms"] = (after - before) / result["requests"] * 1000 if before is not None else None
        rounds.append(result)
    median = {key: statistics.median(r[key] for r in rounds)
              for key in ("rate", "p50_ms", "p99_ms")}
    cpu = [r["server_cpu_ms"] for r in rounds if r["server_cpu_ms"] is not None]
    median["server_cpu_ms"] = statistics.median(cpu) if cpu else None
    median["requests"] = sum(r["requests"] for r in rounds)
    median["statuses"] = {}
    for r in rounds:
        for code, n in r["statuses"].items():
            median["statuses"][code] = median["statuses"].get(code, 0) + n
    return median


def start_server(module_or_factory: list[str], env: dict, port: int, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", *module_or_factory, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(command, cwd=cwd, env=env)


def service_env(database_url: str, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update({
        "TRIAGE_DATABASE_URL": database_url,
        "TRIAGE_VAR_DIR": str(tmp / "var"),
        "TRIAGE_MODEL_DIR": str(model_dir()),
        "TRIAGE_SLA_MONITOR_INTERVAL_S": "30",
        "PYTHONPATH": str(ROOT),
    })
    return env


def model_dir() -> Path:
    from triage.settings import Settings

    return Settings().effective_model_dir


def make_key(database_url: str, tmp: Path) -> str:
    """Migrate the fresh database and create an ingest key, as an operator would."""
    from triage.service import TriageService
    from triage.settings import Settings

    service = TriageService.from_settings(Settings(database_url=database_url, var_dir=tmp / "var"))
    service.create_user("bench", "integration")
    _, secret = service.create_api_key("bench", ["ingest"])
    service.db.dispose()
    return secret


def run_service(name: str, database_url: str, tmp: Path, texts, args) -> dict:
    key = make_key(database_url, tmp)
    port = free_port()
    server = start_server(["api.app:create_app", "--factory", "--workers", str(args.workers)],
                          service_env(database_url, tmp), port, ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, "/healthz")
        ready = httpx.get(base + "/readyz").json()
        if ready.get("status") != "ready":
            raise RuntimeError(f"service not ready: {ready}")
        say(f"{name}: {args.requests} requests, {args.concurrency} clients, model {ready['model']}")
        result = measured(server, lambda: drive(base, {"Authorization": f"Bearer {key}"}, texts, args.requests,
                                                args.concurrency), args.repeat)
    finally:
        server.terminate()
        server.wait(30)
    return result


def run_ceiling(tmp: Path, texts, args) -> dict:
    (tmp / "ceiling_app.py").write_text(CEILING_APP, encoding="utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp)}
    server = start_server(["ceiling_app:app"], env, port, tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, "/docs")
        say(f"ceiling: {args.requests} requests, {args.concurrency} clients")
        return measured(server, lambda: drive(base, {}, texts, args.requests, args.concurrency), args.repeat)
    finally:
        server.terminate()
        server.wait(30)


def postgres_schema_url():
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        say(f"postgres unreachable ({exc.__class__.__name__}); skipped")
        return None, None
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return url, drop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--scenarios", default="ceiling,sqlite,postgres")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes for the service")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per scenario; the table shows medians")
    args = parser.parse_args(argv)
    from models.store import ModelStore

    if not ModelStore(model_dir()).current_version():
        say(f"no current model in {model_dir()}; run `triage ensure-model` (make bench does) first")
        return 1
    texts, text_source = load_texts()
    args.load_before = "%.1f" % os.getloadavg()[0]
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.scenarios.split(","):
            try:
                outcome = run_scenario(name, tmp, texts, args, parser)
            except Exception as exc:  # report it and keep the other scenarios
                say(f"{name}: failed: {exc}")
                failures[name] = str(exc)
                continue
            if outcome is None:
                continue
            results[name] = r = outcome
            say(f"{name}: {r['rate']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"server CPU {r['server_cpu_ms'] or 0:.2f} ms/message, {r['statuses']}")
    write_report(results, args, text_source, failures)
    return 1 if failures else 0


def run_scenario(name: str, tmp: Path, texts, args, parser) -> dict | None:
    if name == "ceiling":
        return run_ceiling(tmp, texts, args)
    if name == "sqlite":
        return run_service(name, f"sqlite:///{tmp / 'bench.db'}", tmp, texts, args)
    if name == "postgres":
        url, drop = postgres_schema_url()
        if url is None:
            return None
        try:
            return run_service(name, url, tmp, texts, args)
        finally:
            drop()
    parser.error(f"unknown scenario {name!r}")


def write_report(results: dict, args, text_source: str, failures: dict[str, str]) -> None:
    ceiling = results.get("ceiling", {}).get("rate")
    lines = [
        f"Ingestion on loopback: {args.concurrency} concurrent clients, {args.repeat} rounds of {args.requests} "
        f"requests per scenario (medians over the rounds), "
        f"one message per request (each a new external id: a full triage and insert), {args.workers} uvicorn "
        f"worker(s) for the service, one for the ceiling; "
        f"texts: {text_source}. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; the load generator runs on the same cores. Load average before the "
        f"run: {args.load_before}; after: {'%.1f' % os.getloadavg()[0]} (other processes on the machine "
        f"take cores from both the server and the clients).",
        "",
        "| scenario | messages/s | p50 ms | p99 ms | share of ceiling | server CPU ms/message | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        share = f"{r['rate'] / ceiling:.0%}" if ceiling else "-"
        bad = sum(n for code, n in r["statuses"].items() if not 200 <= code < 300)
        cpu = f"{r['server_cpu_ms']:.2f}" if r.get("server_cpu_ms") is not None else "-"
        lines.append(f"| {name} | {r['rate']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {share} | {cpu} | {bad} |")
    cpu_rows = [(name, r["server_cpu_ms"]) for name, r in results.items() if name != "ceiling" and r.get("server_cpu_ms")]
    if cpu_rows:
        lines += ["", "Server CPU per message bounds what one core can ingest whatever the contention: "
                  + ", ".join(f"{name} {1000 / cpu:.0f} messages/s per core" for name, cpu in cpu_rows) + "."]
    if "sqlite" in results:
        r = results["sqlite"]
        ok = r["rate"] >= TARGET_RATE and r["p99_ms"] < TARGET_P99_MS
        lines += ["", f"Target on SQLite (>= {TARGET_RATE} messages/s with p99 < {TARGET_P99_MS} ms): "
                      f"{'met' if ok else 'NOT met'}."]
    for name, error in failures.items():
        lines += ["", f"Scenario {name} failed: {error}"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
