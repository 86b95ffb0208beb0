"""Cost of normal requests as history grows: 10k and 100k stored cases (SQLite and PostgreSQL).

Cases are bulk-inserted through the store's bulk path (``triage.store.queries.insert_returning_ids``:
messages, predictions, cases, as ingestion writes them), shaped like a year of traffic: the
newest ``--open`` cases (default 2,000) are open and unreviewed (the review queue), the rest
is history (resolved or closed; one in five reviewed), one in ten history cases breached a
deadline (an SLA event), 300 review decisions and SLA events in the last 30 days, 20 surge
alerts. Texts, labels and confidences are synthetic (this measures the database, not the
model). ``--all-open`` makes every case open and unreviewed instead (the worst case for the
queue: it then holds every stored case).

Then each request runs ``--repeat`` times through the ASGI app (FastAPI TestClient, API key
auth included): p50 and p99 in ms. The dashboard has no API route (the review UI calls the
review service): it is timed as that service call.

    python bench/bench_scale.py                         # 10k and 100k, SQLite and PostgreSQL
    python bench/bench_scale.py --sizes 50000 --db sqlite --all-open

Writes bench/results/scale.md (the default run) or prints the table (other runs).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from triage.store import Database  # noqa: E402
from triage.store.queries import insert_returning_ids  # noqa: E402
from triage.store.tables import Case, Message, Prediction, ReviewDecision, SlaEvent, SurgeAlert  # noqa: E402

OUT = ROOT / "bench" / "results" / "scale.md"
PG_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime.now(timezone.utc).replace(microsecond=0)
TYPES = ["quality", "service", "advertising", "refund", "other"]
EMOTIONS = ["calm", "upset", "angry"]
TIERS = ["frontline", "supervisor", "team_lead", "legal"]
CHUNK = 5000


def bulk_cases(db: Database, n: int, open_n: int, rng: random.Random) -> None:
    """``n`` cases, oldest first, one per minute-ish over the past; the newest ``open_n`` open."""
    start = NOW - timedelta(minutes=n * 5)
    made = 0
    while made < n:
        k = min(CHUNK, n - made)
        messages, predictions, cases = [], [], []
        for i in range(made, made + k):
            received = start + timedelta(minutes=5 * i)
            is_open = i >= n - open_n
            grade = rng.choice([1, 2, 2, 3, 3, 3])
            dispute = rng.choice(TYPES)
            emotion = rng.choice(EMOTIONS)
            confidence = rng.random()
            messages.append(Message(source="bench", external_id=f"m{i}", channel="chat", text_masked=f"合成投诉 {i}",
                                    received_at=received, created_at=received))
            predictions.append(Prediction(model_version="bench", dispute_type=dispute, urgency=grade, emotion=emotion,
                                          escalation=False, vulnerable=False, confidence=confidence,
                                          scores={"dispute_type": {dispute: confidence}}, explanation={}, rules=[],
                                          created_at=received))
            responded = None if is_open and rng.random() < 0.7 else received + timedelta(hours=1)
            status = rng.choice(["open", "open", "pending"]) if is_open else rng.choice(["resolved", "closed", "closed"])
            breached = rng.random() < 0.1
            cases.append(Case(
                dispute_type=dispute, grade=grade, priority_grade=grade, emotion=emotion, angry=emotion == "angry",
                confidence=confidence,
                escalation=False, vulnerable=False,
                labels_source="model" if is_open or rng.random() < 0.8 else "review",
                status=status, tier=rng.choice(TIERS), teams=["frontline"], hints=[], actions=[],
                received_at=received, respond_due_at=received + timedelta(hours=4 * grade),
                resolve_due_at=received + timedelta(hours=24 * grade),
                respond_warn_at=None, resolve_warn_at=None,
                next_check_at=received + timedelta(hours=3 * grade) if is_open else None,
                first_response_at=responded, resolved_at=None if is_open else received + timedelta(days=1),
                closed_at=None if is_open or status != "closed" else received + timedelta(days=2), pauses=[],
                respond_warned=breached, resolve_warned=False, respond_breached=breached, resolve_breached=False,
                breach_count=int(breached), created_at=received, updated_at=received, version=1,
                product=None, surveyed_at=received, followup_warned=False, followup_breached=False))
        with db.session(write=True) as session:
            ids = insert_returning_ids(session, Message, messages)
            for p, mid in zip(predictions, ids):
                p.message_id = mid
            pids = insert_returning_ids(session, Prediction, predictions)
            for c, mid, pid in zip(cases, ids, pids):
                c.message_id, c.prediction_id = mid, pid
            cids = insert_returning_ids(session, Case, cases)
            events = [{"case_id": cid, "kind": "breach", "deadline": "respond", "due_at": c.respond_due_at,
                       "occurred_at": c.respond_due_at, "detected_at": c.respond_due_at, "tier_before": c.tier,
                       "tier_after": c.tier} for c, cid in zip(cases, cids) if c.respond_breached]
            if events:
                session.connection().execute(insert(SlaEvent.__table__), events)
        made += k
        print(f"  inserted {made:,}/{n:,} cases", file=sys.stderr, flush=True)
    with db.session(write=True) as session:
        recent = session.execute(text("SELECT id, message_id FROM cases ORDER BY id DESC LIMIT 300")).all()
        session.connection().execute(insert(ReviewDecision.__table__), [
            {"case_id": cid, "message_id": mid, "reviewer": "bench", "labels": {"grade": 1}, "previous": {"grade": 2},
             "changed": True, "reason": None, "model_version": "bench", "trained_in_version": None,
             "created_at": NOW - timedelta(hours=i)} for i, (cid, mid) in enumerate(recent)])
        session.connection().execute(insert(SlaEvent.__table__), [
            {"case_id": cid, "kind": "warning", "deadline": "respond", "due_at": NOW, "occurred_at": NOW - timedelta(hours=i),
             "detected_at": NOW - timedelta(hours=i), "tier_before": None, "tier_after": None}
            for i, (cid, _mid) in enumerate(recent)])
        session.connection().execute(insert(SurgeAlert.__table__), [
            {"product": f"P{i}", "dispute_type": None, "scopes": ["product"], "batch": None,
             "window_start": NOW - timedelta(days=i, hours=2), "window_end": NOW - timedelta(days=i), "count": 8,
             "expected": 1.0, "p_value": 1e-6, "alpha": 1e-4, "safety_count": 0,
             "first_case_at": NOW - timedelta(days=i, hours=2), "last_case_at": NOW - timedelta(days=i),
             "status": "open" if i % 3 else "dismissed", "reason": None, "detected_at": NOW - timedelta(days=i),
             "updated_at": NOW - timedelta(days=i)} for i in range(20)])


def requests(mid_id: int) -> dict[str, str]:
    since = (NOW - timedelta(days=7)).isoformat()
    return {
        "queue, deadline order": "/v1/review/queue?limit=20",
        "queue, uncertainty order": "/v1/review/queue?order=uncertainty&limit=20",
        "queue, learning order": "/v1/review/queue?order=learning&limit=20",
        "queue, grade 1": "/v1/review/queue?grade=1&limit=20",
        "queue, refund + breached": "/v1/review/queue?type=refund&breached=true&limit=20",
        "queue, page 5": "/v1/review/queue?limit=20&offset=80",
        "cases, first page": "/v1/cases?limit=50",
        "cases, open": "/v1/cases?status=open&limit=50",
        "cases, open grade 1": "/v1/cases?status=open&grade=1&limit=50",
        "cases, breached": "/v1/cases?breached=true&limit=50",
        "cases, a later page": f"/v1/cases?limit=50&after_id={mid_id}",
        "breaches": "/v1/sla/breaches?limit=100",
        "breaches, last 7 days": f"/v1/sla/breaches?limit=100&since={since.replace('+', '%2B')}",
        "alerts, open": "/v1/alerts?status=open",
    }


def measure(url: str, n: int, open_n: int, repeat: int, var: Path) -> dict[str, tuple[float, float]]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.learning import ModelHolder
    from triage.policy import Policy
    from triage.service import TriageService
    from triage.settings import Settings

    db = Database(url)
    db.upgrade()
    t0 = time.perf_counter()
    bulk_cases(db, n, open_n, random.Random(n))
    print(f"  bulk insert of {n:,}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if db.is_postgres:  # what autovacuum does after a bulk load; SQLite stays without statistics, as installed
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    settings = Settings(var_dir=var, database_url=url, sla_monitor_interval_s=3600, model_check_interval_s=0)
    service = TriageService(db, Policy.load(), ModelHolder(), settings, webhook_urls=[])
    service.create_user("bench", "admin")
    key = service.create_api_key("bench", ["review", "ingest", "admin"])[1]
    headers = {"Authorization": f"Bearer {key}"}
    with db.engine.connect() as conn:
        mid_id = conn.execute(text("SELECT max(id) FROM cases")).scalar() // 2
    out: dict[str, tuple[float, float]] = {}
    app = create_app(settings, service=service, background=False)
    with TestClient(app) as client:
        for name, path in requests(mid_id).items():
            times = []
            for i in range(repeat + 3):
                t = time.perf_counter()
                r = client.get(path, headers=headers)
                elapsed = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")
                if i >= 3:  # the first calls warm caches
                    times.append(elapsed)
            out[name] = _p(times)
        from api.routes_review import review_context

        review = review_context(app).review
        times = []
        for i in range(repeat + 3):
            t = time.perf_counter()
            review.dashboard()
            if i >= 3:
                times.append((time.perf_counter() - t) * 1000)
        out["dashboard (service call)"] = _p(times)
    db.dispose()
    return out


def _p(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]


def fresh_url(kind: str, tmp: Path) -> tuple[str, callable]:
    if kind == "sqlite":
        path = tmp / f"scale-{uuid.uuid4().hex[:6]}.db"
        return f"sqlite:///{path}", lambda: None
    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    from sqlalchemy.engine import make_url

    return make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False), drop


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--open", type=int, default=2000, help="open, unreviewed cases (the review queue)")
    parser.add_argument("--all-open", action="store_true", help="every case open and unreviewed")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    default_run = not argv
    sizes = [int(s) for s in args.sizes.split(",")]
    columns, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            for n in sizes:
                print(f"[scale] {kind}, {n:,} cases", file=sys.stderr, flush=True)
                url, drop = fresh_url(kind, Path(tmp))
                try:
                    res = measure(url, n, n if args.all_open else min(args.open, n), args.repeat, Path(tmp) / "var")
                finally:
                    drop()
                col = f"{kind} {n // 1000}k"
                columns.append(col)
                for name, value in res.items():
                    results.setdefault(name, {})[col] = value
    queue = "every case open and unreviewed" if args.all_open else f"{args.open:,} open unreviewed cases, the rest history"
    lines = [f"p50 / p99 in ms over {args.repeat} requests each, through the ASGI app ({queue}; "
             f"`{' '.join(['python bench/bench_scale.py', *argv])}`).", "",
             "| request | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, by_col in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_col[c][0]:.1f} / {by_col[c][1]:.1f}" for c in columns) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if default_run:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
