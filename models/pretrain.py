"""Pretrain a small Chinese BERT on unlabeled messages, for teams without a checkpoint.

The transformers backend needs an encoder that already knows Chinese characters; with no
hub access, this module builds one locally: a character vocabulary learnt with
``tokenizers`` and a few-layer BERT trained by masked-language modelling on the user's
own message history (or public review corpora). The defaults are sized to finish on a
2-core CPU in well under 30 minutes. The result is an ordinary Hugging Face checkpoint
directory (config, weights, tokenizer) that ``TRIAGE_BASE_MODEL`` can point at.

torch/transformers/tokenizers are imported only inside the functions that need them.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from triage.errors import InvalidInput

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEXT_COLUMNS = ("text", "review", "content", "message", "body")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class PretrainConfig:
    """Sizes of the vocabulary, the encoder and the run; defaults fit a 2-core CPU."""

    vocab_size: int = 6000
    min_frequency: int = 3
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    mask_probability: float = 0.15
    max_steps: int = 20_000
    max_minutes: float = 20.0
    max_texts: int | None = None
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    corpus: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """The triage pipeline's normalisation and masking: pretrain on what the classifier sees."""
    from triage.text import mask_personal_data
    from triage.text import normalise as normalise_text

    return mask_personal_data(normalise_text(text)).text


def read_corpus(paths: Sequence[Path | str], max_texts: int | None = None) -> list[str]:
    """Texts from .csv (a text/review column), .jsonl (a "text" field) or .txt (one per line).

    Duplicates and empty lines are dropped; a missing file or a CSV without a text column is
    an ``InvalidInput`` naming the file.
    """
    seen: set[str] = set()
    texts: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in {".csv", ".jsonl", ".txt"})
            if not files:
                raise InvalidInput(f"corpus folder {path} holds no .csv, .jsonl or .txt file", "corpus")
        elif path.is_file():
            files = [path]
        else:
            raise InvalidInput(f"corpus file {path} does not exist", "corpus")
        for file in files:
            for text in _iter_file(file):
                text = normalise(text)
                if text and text not in seen:
                    seen.add(text)
                    texts.append(text)
    if not texts:
        raise InvalidInput("the corpus holds no text", "corpus")
    if max_texts is not None and len(texts) > max_texts:
        texts = random.Random(0).sample(texts, max_texts)
    return texts


def _iter_file(path: Path) -> Iterator[str]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            column = next((c for c in TEXT_COLUMNS if c in (reader.fieldnames or [])), None)
            if column is None:
                raise InvalidInput(
                    f"{path}: no text column; expected one of {', '.join(TEXT_COLUMNS)}, "
                    f"found {reader.fieldnames}",
                    "corpus",
                )
            for row in reader:
                yield row[column] or ""
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path}:{lineno}: not JSON ({exc})", "corpus") from None
                yield str(record.get("text", "")) if isinstance(record, dict) else ""
    else:
        with path.open(encoding="utf-8") as fh:
            yield from fh


def build_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int, out_dir: Path):
    """A BERT WordPiece tokenizer whose Chinese units are single characters.

    BERT's normaliser puts spaces around every CJK character, so the vocabulary is one entry
    per frequent character plus word pieces for Latin words and numbers (model names, "4K").
    Returns a ``BertTokenizerFast`` saved in ``out_dir``.
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
    )
    wordpiece.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(out_dir))
    tokenizer = BertTokenizerFast(
        vocab_file=str(out_dir / "vocab.txt"),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=False,
    )
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _mask_tokens(input_ids, special_mask, tokenizer, probability: float, generator):
    """BERT's 80/10/10 masking; returns (masked ids, labels with -100 where not predicted)."""
    import torch

    labels = input_ids.clone()
    probs = torch.full(labels.shape, probability)
    probs.masked_fill_(special_mask, 0.0)
    chosen = torch.bernoulli(probs, generator=generator).bool()
    labels[~chosen] = -100
    ids = input_ids.clone()
    replace = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & chosen
    ids[replace] = tokenizer.mask_token_id
    randomise = (
        torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool() & chosen & ~replace
    )
    ids[randomise] = torch.randint(len(tokenizer), labels.shape, generator=generator)[randomise]
    return ids, labels


def _pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """Right-pad to the longest sequence; returns (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return ids, attention


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def pretrain(
    corpus: Sequence[Path | str],
    out_dir: Path,
    config: PretrainConfig | None = None,
    exclude: Sequence[Path | str] = (),
    log=None,
) -> Path:
    """Build the vocabulary, pretrain the encoder by MLM, save a checkpoint in ``out_dir``.

    Stops at ``max_steps`` or ``max_minutes``, whichever comes first; the learning rate
    decays over that budget so a run cut by time still ends with a small step size.
    Texts found in ``exclude`` (e.g. an evaluation set) are left out, so a benchmark never
    pretrains on the messages it scores. Progress (step, loss, time left) goes to stderr.
    """
    import torch
    from tqdm import tqdm
    from transformers import BertConfig, BertForMaskedLM

    config = config or PretrainConfig()
    config.corpus = [str(p) for p in corpus]
    config.excluded = [str(p) for p in exclude]
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidInput(f"output folder {out_dir} is not empty; choose a new one", "out")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    started = time.monotonic()
    texts = read_corpus(corpus, config.max_texts)
    if exclude:
        held_out = set(read_corpus(exclude))
        before = len(texts)
        texts = [t for t in texts if t not in held_out]
        log(f"left out {before - len(texts)} texts found in {', '.join(map(str, exclude))}")
    log(f"corpus: {len(texts)} distinct texts, {sum(map(len, texts))} characters")
    tokenizer = build_tokenizer(texts, config.vocab_size, config.min_frequency, out_dir)
    log(f"vocabulary: {len(tokenizer)} entries")

    encoded = tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]
    encoded = [ids for ids in encoded if len(ids) > 3]
    lengths = [len(ids) for ids in encoded]

    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_length,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    params = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    budget_s = config.max_minutes * 60.0
    log(
        f"encoder: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
        f"budget {config.max_steps} steps or {config.max_minutes:g} min"
    )

    step, epoch, smoothed = 0, 0, None
    train_start = time.monotonic()
    # The bar counts percent of the budget (steps or minutes, whichever runs out first).
    bar = tqdm(total=100, desc="pretrain", unit="%", file=sys.stderr, mininterval=5)
    done = False
    while not done:
        epoch += 1
        for batch_idx in _length_batches(lengths, config.batch_size, rng):
            elapsed = time.monotonic() - train_start
            progress = max(step / config.max_steps, elapsed / budget_s)
            if progress >= 1.0:
                done = True
                break
            lr = config.learning_rate * min(1.0, progress / config.warmup_fraction) * (1 - progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            input_ids, attention = _pad([encoded[i] for i in batch_idx], tokenizer.pad_token_id)
            special = (
                (input_ids == tokenizer.pad_token_id)
                | (input_ids == tokenizer.cls_token_id)
                | (input_ids == tokenizer.sep_token_id)
            )
            masked_ids, labels = _mask_tokens(
                input_ids, special, tokenizer, config.mask_probability, generator
            )
            hidden = model.bert(input_ids=masked_ids, attention_mask=attention).last_hidden_state
            where = labels != -100
            if not where.any():
                continue
            # Only masked positions go through the vocabulary projection: a third of the cost.
            logits = model.cls(hidden[where])
            loss = torch.nn.functional.cross_entropy(logits, labels[where])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
            if step % 50 == 0:
                bar.n = int(100 * progress)
                bar.set_postfix(step=step, loss=f"{smoothed:.3f}", epoch=epoch, lr=f"{lr:.1e}")
            if step % 500 == 0:
                log(
                    f"step {step} epoch {epoch} loss {smoothed:.3f} "
                    f"elapsed {elapsed / 60:.1f} min"
                )
    bar.n = 100
    bar.close()
    model.eval()
    model.save_pretrained(str(out_dir))
    info = {
        "config": asdict(config),
        "steps": step,
        "epochs_started": epoch,
        "texts": len(encoded),
        "final_loss": smoothed,
        "train_minutes": (time.monotonic() - train_start) / 60,
        "total_minutes": (time.monotonic() - started) / 60,
    }
    (out_dir / "pretrain_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
    log(
        f"saved checkpoint to {out_dir}: {step} steps, loss {smoothed if smoothed else float('nan'):.3f}, "
        f"{info['total_minutes']:.1f} min"
    )
    return out_dir


def is_checkpoint(path: Path) -> bool:
    """A folder the backend can fine-tune: a config and a tokenizer vocabulary."""
    path = Path(path)
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("tokenizer.json", "vocab.txt")
    )

