"""One settings object for every entry point (CLI, API, review UI, benchmarks).

Values come from ``TRIAGE_*`` environment variables (or a ``.env`` file); defaults give a
working single-machine installation with SQLite under ``var/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    var_dir: Path = PROJECT_ROOT / "var"
    datasets_dir: Path = PROJECT_ROOT / "datasets"
    database_url: str = ""  # empty: sqlite:///<var_dir>/triage.db
    model_dir: Path | None = None  # empty: <var_dir>/models (the versioned model store)
    backend: str = "sklearn"  # name in models.registry
    base_model: str | None = None  # local checkpoint for the transformers backend
    policy_path: Path | None = None  # empty: the policy shipped in triage/policy/default.toml
    max_text_chars: int = 10_000
    # The model's P(escalation) that counts as a threat when no lexicon term decides (a
    # counted term sets escalation, a negated or questioned one clears it). Escalation means
    # urgency 1, so lowering this trades reviewer load for recall on unusual wordings.
    escalation_threshold: float = Field(default=0.5, gt=0, lt=1)
    store_raw_text: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = "change-me-in-production"  # signs review UI sessions
    webhook_url: str | None = None
    webhook_secret: str = "change-me-webhook-secret"
    sla_warning_share: float = 0.75
    sla_monitor_interval_s: float = 30.0
    retrain_after_confirmations: int = 50
    promotion_margin: float = 0.02
    # How many seed examples one reviewer-confirmed label counts as in a retrain. Chosen by
    # repeated CV on the review-pool part of the real dev set (bench/bench_confirmed_weight.py,
    # bench/results/confirmed_weight.md), never on the learning-curve benchmark's held-out part:
    # dispute type is flat from 2 to 12 (within split noise); urgency and emotion gain up to about 5.
    confirmed_weight: float = Field(default=5.0, gt=0)
    # Real review corpora for the optional sentiment signal; "none" turns it off. The
    # default is the shared folder beside the project, absent on most installations.
    corpora_dir: str = str(PROJECT_ROOT.parent / "shared" / "data" / "corpora")
    # Word segmentation: "auto" is the compiled jieba-rs segmenter (PyPI rjieba) when it is
    # installed, else jieba; "jieba" forces jieba. Both cut the same way (tests/test_segmenter.py).
    segmenter: Literal["auto", "jieba"] = "auto"
    # Triage through the backend's numpy-only predictor where it has one (scikit-learn is then
    # never imported to predict; same features and probabilities, tests/test_sklearn_predictor.py);
    # false loads the full backend, the reference path.
    fast_predict: bool = True

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'triage.db'}"

    @property
    def effective_model_dir(self) -> Path:
        return self.model_dir or self.var_dir / "models"

    @property
    def seed_dir(self) -> Path:
        return self.datasets_dir / "seed"

    @property
    def lexicon_dir(self) -> Path:
        return self.datasets_dir / "lexicons"


@lru_cache
def get_settings() -> Settings:
    return Settings()
