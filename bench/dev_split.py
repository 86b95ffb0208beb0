"""The evaluation protocol for ``../shared/data/dev_labeled.jsonl`` (issue: accuracy on real text).

The first 332 rows (``d0000``-``d0331``) were looked at while the project's first choices
were made; the 800 rows ``d1000``+ are new. Half of the new rows, chosen by a hash of the id
(so the split never depends on file order or on us), are **locked**: nothing is chosen on
them; they are scored once per change set, for the final figures. Everything else is the
**tuning pool**, scored by repeated stratified cross-validation (mean and spread over
splits). A gain smaller than the spread is noise.

Benchmarks and tests import this module; the shipped service never does (an installation
has no ``../shared``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DEV_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev_labeled.jsonl"
CORPORA_DIR = DEV_PATH.parent / "corpora"
LOCK_SALT = "triage-lock-2026-12-01"


def is_locked(row_id: str) -> bool:
    """Half of the rows added on 2026-12-01 (ids ``d1000``+), by a salted hash of the id."""
    if not row_id.startswith("d") or int(row_id[1:]) < 1000:
        return False
    return hashlib.sha256(f"{LOCK_SALT}:{row_id}".encode()).digest()[0] % 2 == 0


def load_dev(path: Path = DEV_PATH) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_dev(path: Path = DEV_PATH) -> tuple[list[dict], list[dict]]:
    """(tuning pool, locked set)."""
    rows = load_dev(path)
    return [r for r in rows if not is_locked(r["id"])], [r for r in rows if is_locked(r["id"])]


def repeated_folds(rows: list[dict], k: int = 5, repeats: int = 3, seed: int = 0):
    """Yield (train, test) lists: ``repeats`` times a stratified (by dispute type) k-fold."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = [r["dispute_type"] for r in rows]
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    for train_idx, test_idx in splitter.split(rows, y):
        yield [rows[i] for i in train_idx], [rows[i] for i in test_idx]


if __name__ == "__main__":
    tune, locked = split_dev()
    print(f"tuning pool {len(tune)} (of which d1000+: {sum(r['id'] >= 'd1000' for r in tune)}), locked {len(locked)}")
