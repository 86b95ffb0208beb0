"""Shared set-up for the review and learning tests: a tiny real model and a real service.

The model is the real sklearn backend trained on a balanced slice of the project's own
seed data (``datasets/seed``), without calibration, so it trains in seconds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from models.learning import ModelHolder
from models.sklearn_backend import SklearnBackend
from models.store import ModelStore
from models.training import load_labeled
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import PROJECT_ROOT, Settings
from triage.store import Database
from triage.taxonomy import HEADS
from triage.triager import Triager

SEED_DIR = PROJECT_ROOT / "datasets" / "seed"
LEXICON_DIR = PROJECT_ROOT / "datasets" / "lexicons"


def seed_slice(per_type: int = 30) -> list[dict]:
    """The first ``per_type`` seed records of every dispute type (deterministic)."""
    records, _ = load_labeled([SEED_DIR])
    by_type: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if len(by_type[record["dispute_type"]]) < per_type:
            by_type[record["dispute_type"]].append(record)
    return [r for rows in by_type.values() for r in rows]


def make_settings(root: Path, database_url: str = "", per_type: int = 30, **overrides) -> Settings:
    """Settings under ``root`` whose seed set is a small slice (so retrains take seconds)."""
    datasets = root / "datasets"
    (datasets / "seed").mkdir(parents=True, exist_ok=True)
    if not (datasets / "lexicons").exists():
        (datasets / "lexicons").symlink_to(LEXICON_DIR, target_is_directory=True)
    with (datasets / "seed" / "slice.jsonl").open("w", encoding="utf-8") as f:
        for record in seed_slice(per_type):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Settings(var_dir=root / "var", datasets_dir=datasets, database_url=database_url,
                    sla_monitor_interval_s=3600, **overrides)


def train_tiny_model(settings: Settings) -> ModelStore:
    """A first model version in the settings' store, trained on the seed slice, made current."""
    store = ModelStore(settings.effective_model_dir)
    records, _ = load_labeled([settings.seed_dir])
    backend = SklearnBackend(calibration_folds=0).fit(
        [r["text"] for r in records], {h: [r[h] for r in records] for h in HEADS}
    )
    version = store.save(backend, manifest_extra={"status": "promoted", "metrics": {}})
    store.set_current(version)
    return store


def make_service(settings: Settings, store: ModelStore) -> TriageService:
    db = Database.from_settings(settings)
    db.upgrade()
    holder = ModelHolder(Triager.from_store(store, lexicon_dir=settings.lexicon_dir))
    return TriageService(db, Policy.from_settings(settings), holder, settings)
