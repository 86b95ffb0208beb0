"""Past one machine (issue 17, serving): the database model store read by every host, and
server processes that follow a promotion or rollback made by another process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import text

from fixtures_db import clock, database, database_url, make_service, postgres_url, sqlite_template, tiny_triager  # noqa: F401
from models.db_store import DbModelStore, open_store
from models.store import ModelStore
from triage.errors import ModelError, NotFound
from triage.settings import PROJECT_ROOT, Settings

KEY = "scale-out-test-signing-key-0123456789"


def test_saved_on_one_host_loads_on_another(database_url, tiny_backend, tmp_path):
    here = DbModelStore(database_url, tmp_path / "host-a", KEY)
    there = DbModelStore(database_url, tmp_path / "host-b", KEY)
    assert there.current_version() is None and there.list_versions() == []
    version = here.save(tiny_backend, {"data_hash": "sha256:test"})
    here.set_current(version)
    assert there.current_version() == version
    backend, manifest = there.load()
    assert manifest["version"] == version and backend.predict_proba(["收到的麦克风没有声音"])
    assert [v["version"] for v in there.list_versions()] == [version] and there.list_versions()[0]["current"]
    # a status change made on one host is what the other reads next
    here.update_manifest(version, status="promoted", notes="checked")
    assert there.verify(version)["notes"] == "checked"
    assert there.list_versions()[0]["status"] == "promoted"
    with pytest.raises(NotFound):
        there.load("v-does-not-exist")


def _rows(store: DbModelStore, version: str) -> dict[str, bytes]:
    with store.engine.connect() as conn:
        return {p: bytes(c) for p, c in conn.execute(
            text("SELECT path, content FROM model_files WHERE version = :v"), {"v": version})}


def _put(store: DbModelStore, version: str, path: str, content: bytes) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE model_files SET content = :c WHERE version = :v AND path = :p"),
                     {"c": content, "v": version, "p": path})


def test_tampered_rows_are_refused_on_every_host(database_url, tiny_backend, tmp_path):
    here = DbModelStore(database_url, tmp_path / "host-a", KEY)
    version = here.save(tiny_backend)
    rows = _rows(here, version)
    # a backend file changed in the database: its hash no longer matches the signed manifest
    _put(here, version, "backend/backend.json", rows["backend/backend.json"] + b" ")
    with pytest.raises(ModelError, match="hash mismatch"):
        DbModelStore(database_url, tmp_path / "host-b", KEY).load(version)
    # ... and with the manifest's hash recomputed, the signature no longer matches
    manifest = json.loads(rows["manifest.json"])
    manifest["files"]["backend.json"] = hashlib.sha256(rows["backend/backend.json"] + b" ").hexdigest()
    _put(here, version, "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode())
    with pytest.raises(ModelError, match="wrong signature"):
        DbModelStore(database_url, tmp_path / "host-c", KEY).load(version)
    with pytest.raises(ModelError, match="wrong signature"):
        here.set_current(version)  # the pointer never moves to a refused version
    assert here.current_version() is None
    # another installation's key refuses an intact model
    _put(here, version, "manifest.json", rows["manifest.json"])
    _put(here, version, "backend/backend.json", rows["backend/backend.json"])
    DbModelStore(database_url, tmp_path / "host-d", KEY).load(version)
    with pytest.raises(ModelError, match="wrong signature"):
        DbModelStore(database_url, tmp_path / "host-e", "another-installations-key-0123").load(version)


def test_open_store_follows_the_setting(tmp_path):
    folder = open_store(Settings(var_dir=tmp_path))
    assert type(folder) is ModelStore and folder.root == tmp_path / "models"
    db = open_store(Settings(var_dir=tmp_path, model_store="db", database_url=f"sqlite:///{tmp_path / 't.db'}"))
    assert isinstance(db, DbModelStore) and db.root == tmp_path / "model-cache"
    with pytest.raises(ValueError):
        Settings(model_store="s3")


# ----------------------------------------------------------------------------- two server processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()[-3000:]}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return r.json()["model"]
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout} s")


@pytest.mark.parametrize("store_kind", ["folder", "db"])
def test_a_promotion_reaches_the_other_server_process(store_kind, database, database_url, tiny_backend, tmp_path):
    from models.learning import ModelHolder
    from triage.policy import Policy
    from triage.service import TriageService

    common = {"TRIAGE_DATABASE_URL": database_url, "TRIAGE_MODEL_SIGNING_KEY": KEY,
              "TRIAGE_MODEL_STORE": store_kind, "TRIAGE_MODEL_CHECK_INTERVAL_S": "1",
              "TRIAGE_SLA_MONITOR_INTERVAL_S": "3600", "TRIAGE_MODEL_DIR": str(tmp_path / "shared-models")}
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]  # with the db store, nothing on disk is shared
    settings = Settings(var_dir=hosts[0], database_url=database_url, model_store=store_kind,
                        model_dir=tmp_path / "shared-models")
    store = DbModelStore(database_url, hosts[0] / "model-cache", KEY) if store_kind == "db" \
        else ModelStore(tmp_path / "shared-models", KEY)
    first, second = store.save(tiny_backend), store.save(tiny_backend)
    store.set_current(first)
    service = TriageService(database, Policy.load(), ModelHolder(), settings, webhook_urls=[])
    service.create_user("lead", "admin")
    service.create_user("desk", "integration")
    admin = {"Authorization": f"Bearer {service.create_api_key('lead', ['admin', 'review'])[1]}"}
    ingest = {"Authorization": f"Bearer {service.create_api_key('desk', ['ingest'])[1]}"}

    procs, urls = [], []
    try:
        for host in hosts:
            port = _free_port()
            env = {**os.environ, **common, "TRIAGE_VAR_DIR": str(host), "PYTHONPATH": str(PROJECT_ROOT)}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "triage.cli", "serve", "--port", str(port), "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        assert [_wait_ready(u, p) for u, p in zip(urls, procs)] == [first, first]

        def served_by(url: str, n: int) -> str:
            r = httpx.post(f"{url}/v1/messages", headers=ingest, timeout=30, json={
                "source": "test", "external_id": f"{url}-{n}-{time.monotonic_ns()}", "text": "麦克风没有声音，要退货"})
            assert r.status_code == 201, r.text
            return r.json()["case"]["model_version"]

        for target, action in ((second, "promote"), (first, "rollback")):
            r = httpx.post(f"{urls[0]}/v1/models/{target}/{action}", headers=admin, json={}, timeout=120)
            assert r.status_code == 200, r.text
            assert served_by(urls[0], 0) == target  # the process that changed it, at once
            changed = time.monotonic()
            seen = []
            while time.monotonic() - changed < 20:
                seen.append(served_by(urls[1], len(seen)))
                if seen[-1] == target:
                    break
                time.sleep(0.2)
            waited = time.monotonic() - changed
            assert seen[-1] == target, (action, seen)
            assert set(seen) <= {first, second}  # every prediction names one version
            assert waited < 5, f"the other process took {waited:.1f} s to serve {target}"
            assert all(served_by(urls[1], 100 + i) == target for i in range(5))  # and stays on it
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.stderr.close()


# ----------------------------------------------------------------------------- the queue's copy of confidence


def test_cases_carry_their_current_predictions_confidence(make_service, database, tiny_triager, tiny_core_triager):
    """The uncertainty order walks an index on cases.confidence: it must be the confidence of
    the prediction the case shows, at ingestion and after a re-grade by another model."""
    from sqlalchemy import select

    from triage.store.tables import Case, Prediction

    service = make_service()
    service.ingest({"source": "s", "external_id": "1", "text": "麦克风没有声音，要退货"}, actor="test")
    service.ingest({"source": "s", "external_id": "2", "text": "客服一直不回复，太生气了，我要投诉到12315"}, actor="test")

    def pairs():
        with database.session() as s:
            return s.execute(select(Case.confidence, Prediction.confidence, Prediction.model_version)
                             .join(Prediction, Prediction.id == Case.prediction_id).order_by(Case.id)).all()

    before = pairs()
    assert len(before) == 2 and all(c == p and c is not None for c, p, _v in before)
    service.regrade_open_cases(tiny_core_triager, "test")
    after = pairs()
    assert {v for _c, _p, v in after} == {"test-version"}
    assert all(c == p for c, p, _v in after) and [c for c, _p, _v in after] != [c for c, _p, _v in before]
