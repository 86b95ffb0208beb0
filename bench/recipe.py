"""The shipped training recipe, for benchmarks that train many models on the same texts.

Every benchmark that scores a configuration of the product (the default, after review, with
history) trains it through :func:`models.training.train_recipe`, the function ``triage train``
runs, so a benchmark measures what ships and no benchmark keeps its own copy of the recipe.
This adds what a benchmark needs on top: each text prepared once (masked and segmented by
:func:`triage.text.prepare`) however many folds train on it, and the public reviews loaded
once. Benchmarks import this module; the shipped service never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev_split import DEV_PATH, repeated_folds, split_dev
from models.history import SelfTraining
from models.public_reviews import load_public_reviews
from models.training import load_labeled, train_recipe
from triage.settings import Settings
from triage.text import prepare


class Recipe:
    """``fit(seed, confirmed, history)`` as the product trains; texts prepared once."""

    def __init__(self, settings: Settings | None = None, report: Callable[[str], None] | None = None):
        self.settings = settings or Settings()
        self.public = load_public_reviews(self.settings.public_reviews, report=report)
        self.self_training = SelfTraining()
        self._prepared: dict[str, Any] = {}

    def prepared(self, text: str):
        found = self._prepared.get(text)
        if found is None:
            found = self._prepared[text] = prepare(text)
        return found

    def warm(self, texts: Iterable[str]) -> None:
        """Prepare ``texts`` now (so that a timing of the first fit is the fit's alone)."""
        for text in texts:
            self.prepared(text)

    def rows(self, rows: Sequence[dict]) -> list[dict]:
        return [{**r, "text": self.prepared(r["text"])} for r in rows]

    def fit(self, seed: Sequence[dict], confirmed: Sequence[dict] = (), history: Sequence[Any] = (), *,
            previous: bool = False, **params: Any):
        """Seed (weight 1) + ``confirmed`` labels (``TRIAGE_CONFIRMED_WEIGHT`` each), self-trained
        on ``history`` (texts, prepared or not) and the public reviews, with their sentiment
        signal. ``previous``: the recipe before the public reviews (the seed and the confirmed
        labels alone), with ``params`` for the model parameters that differed then."""
        return train_recipe(self.rows(seed), self.rows(confirmed), history,
                            public=None if previous else self.public,
                            confirmed_weight=self.settings.confirmed_weight,
                            self_training=self.self_training, **params)


SEED_DIR = Path(__file__).resolve().parent.parent / "datasets" / "seed"


@dataclass
class Inputs:
    """What every accuracy benchmark starts from: the settings, the dev set's tuning pool
    and locked rows (``bench/dev_split.py``), the seed data and the recipe."""

    settings: Settings
    tune: list[dict]
    locked: list[dict]
    seed: list[dict]
    recipe: Recipe

    def folds(self, repeats: int) -> list[tuple[list[dict], list[dict]]]:
        """``repeats`` stratified 5-fold splits of the tuning pool."""
        return list(repeated_folds(self.tune, 5, repeats))


def bench_inputs(report: Callable[[str], None]) -> Inputs | None:
    """The benchmark's inputs, or None (said through ``report``) where ``../shared`` is absent."""
    if not DEV_PATH.is_file():
        report(f"{DEV_PATH} not found: nothing to measure")
        return None
    settings = Settings()
    tune, locked = split_dev()
    seed, _ = load_labeled(SEED_DIR)
    return Inputs(settings, tune, locked, seed, Recipe(settings, report=report))
