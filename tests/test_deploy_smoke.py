"""CI starts the deployment's process list for real: deploy/smoke.sh runs two API processes,
a scheduler and two workers on PostgreSQL and Redis, ingests, checks triage, webhook
delivery and a backfill by the workers, and stops everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_db import postgres_reachable

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_deploy_smoke_script_runs_the_process_list(tiny_store):
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    if shutil.which("curl") is None or shutil.which("setsid") is None:
        pytest.skip("deploy/smoke.sh needs curl and setsid")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(PY=sys.executable, TRIAGE_MODEL_DIR=str(tiny_store.root))
    run = subprocess.run(["bash", str(ROOT / "deploy" / "smoke.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-6000:]
    for step in ("3 messages triaged", "delivered the 3 triaged webhooks", "2-chunk backfill", "smoke: ok"):
        assert step in run.stderr
