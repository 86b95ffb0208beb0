"""The one small interface every classifier backend implements, and the registry by name.

A backend is multi-head: one object predicts every head of ``triage.taxonomy.HEADS``
(dispute type, urgency, emotion, escalation). Inputs are texts that already went
through ``triage.text`` (normalised and masked). Heavy libraries (torch, transformers)
are imported only inside their backend module, so the registry maps names to
``module:Class`` strings and imports on first use.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ProgressFn = Callable[[str, float], None]  # (stage description, fraction done 0..1)


class ClassifierBackend(ABC):
    """fit / predict_proba / explain / save / load for all heads at once."""

    name: ClassVar[str]
    classes_: dict[str, list[Any]]  # head -> labels, the column order of predict_proba

    @abstractmethod
    def fit(
        self,
        texts: Sequence[str],
        labels: dict[str, Sequence[Any]],
        sample_weight: Sequence[float] | None = None,
        progress: ProgressFn | None = None,
    ) -> "ClassifierBackend":
        """Train every head in ``labels`` (head -> one label per text)."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """head -> array of shape (len(texts), len(classes_[head])), rows sum to 1."""

    @abstractmethod
    def explain(self, text: str, head: str, label: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """The words or n-grams of ``text`` that pushed ``head`` towards ``label``, strongest first."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the fitted backend into the (existing, empty) directory ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> "ClassifierBackend":
        """Read a backend written by :meth:`save`; raise ``triage.errors.ModelError`` otherwise."""


_REGISTRY: dict[str, str] = {
    "sklearn": "models.sklearn_backend:SklearnBackend",
    "transformers": "models.transformers_backend:TransformersBackend",
    "ensemble": "models.ensemble:EnsembleBackend",
}


# Predict-only twins of backends (``module:Class`` with a ``load(path)`` classmethod): lighter to
# import and faster per message; they raise models.sklearn_predictor.PredictorUnsupported (a
# ModelError) for a saved model they cannot reproduce exactly, and the store loads the backend.
_PREDICTORS: dict[str, str] = {
    "sklearn": "models.sklearn_predictor:SklearnPredictor",
}


def get_predictor_class(name: str):
    """The predict-only class registered for backend ``name``, or None."""
    target = _PREDICTORS.get(name)
    if target is None:
        return None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def register_backend(name: str, target: str) -> None:
    """Register ``module:Class`` under ``name`` (plugins call this)."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend_class(name: str) -> type[ClassifierBackend]:
    from triage.errors import ModelError

    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown backend {name!r}; known: {', '.join(backend_names())}") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"backend {name!r} needs a library that is not installed ({exc}); "
            "install the project with its extras: pip install -e '.[transformers]'"
        ) from exc
    return getattr(module, cls_name)
