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
from typing import Any

from models.history import SelfTraining
from models.public_reviews import load_public_reviews
from models.training import train_recipe
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
