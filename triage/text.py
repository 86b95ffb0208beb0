"""Text pipeline: normalise, mask personal data, segment.

Order matters: normalisation first (so full-width digits become digits the masks can
see), masking before anything is stored, segmented or trained on (PIPL), segmentation
last. :func:`prepare` runs the three in one pass for the triager and the trainer.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jieba
import opencc

from triage.lexicons import load_lexicons

jieba.setLogLevel(logging.WARNING)

# --------------------------------------------------------------------------- normalise

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffd\ufeff\u200b-\u200f\u2028-\u202e]")
_WHITESPACE = re.compile(r"\s+")
_PUNCT_RUN = re.compile(r"([!?.,~。，、;:…\-=*^])\1+")
_CONVERTER = opencc.OpenCC("t2s")
_CONVERTER_LOCK = threading.Lock()


@dataclass
class PunctStats:
    """What folding repeated punctuation removed, kept as emotion features."""

    exclamations: int = 0  # '!' before folding
    questions: int = 0  # '?' before folding
    longest_run: int = 0  # longest run of one punctuation mark (!!! -> 3)


def _has_han_traditional_candidates(text: str) -> bool:
    # OpenCC is the slowest step of normalisation; pure ASCII text cannot change.
    return not text.isascii()


def normalise_with_stats(text: str) -> tuple[str, PunctStats]:
    """:func:`normalise` plus the punctuation counts that folding would otherwise lose."""
    text = _CONTROL.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    if _has_han_traditional_candidates(text):
        with _CONVERTER_LOCK:  # the OpenCC binding is not documented as thread-safe
            text = _CONVERTER.convert(text)
    text = _WHITESPACE.sub(" ", text).strip()
    stats = PunctStats(exclamations=text.count("!"), questions=text.count("?"))
    longest = 1 if (stats.exclamations or stats.questions) else 0
    for match in _PUNCT_RUN.finditer(text):
        longest = max(longest, len(match.group(0)))
    stats.longest_run = longest
    text = _PUNCT_RUN.sub(r"\1", text)
    return text, stats


def normalise(text: str) -> str:
    """NFKC (full-width to half-width), traditional to simplified, whitespace and
    repeated punctuation folded, control characters removed; emoji are kept."""
    return normalise_with_stats(text)[0]


# --------------------------------------------------------------------------- masking

# The detectors live in triage/pii.py (measured by bench/bench_masking.py); this is the API.
from triage.pii import PLACEHOLDERS, MaskedText, id_number_valid, luhn_valid  # noqa: E402,F401 (re-exported)
from triage.pii import mask as _mask_pii  # noqa: E402

_PLACEHOLDER_RE = re.compile("(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")")


def mask_personal_data(text: str) -> MaskedText:
    """Replace phones, ID numbers, bank cards, e-mails, WeChat and QQ ids, street addresses
    and person names in normalised ``text`` by typed placeholders (``<PHONE>``...).

    Order numbers stay: long digit strings are masked only when they pass the ID check
    digit or (for cards) the Luhn check, and not right after a word such as 订单号/单号/快递.
    """
    return _mask_pii(text)


# --------------------------------------------------------------------------- segmentation

# jieba's HMM guesses unknown words; off, segmentation is about 30% faster and the
# character n-grams already cover unknown words. Models depend on it: retrain after changing.
USE_HMM = False
_TOKENIZERS: dict[Path, jieba.Tokenizer] = {}
_TOKENIZER_LOCK = threading.Lock()
_SKIP_TOKEN = re.compile(r"^[\s,.、;:，。；：\"'“”‘’()（）\[\]【】《》<>/\\|_`!]+$")  # '!' counts separately
_LONG_NUMBER = re.compile(r"^\d{7,}$")  # order/tracking numbers; 12315 stays


def get_tokenizer(lexicon_dir: Path | str | None = None) -> jieba.Tokenizer:
    """A jieba tokenizer with the domain user dictionary; built once per lexicon folder."""
    lex = load_lexicons(lexicon_dir)
    tok = _TOKENIZERS.get(lex.directory)
    if tok is not None:
        return tok
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(lex.directory)
        if tok is None:
            tok = jieba.Tokenizer()
            tok.initialize()
            for entry in (lex.user_dict_path.read_text(encoding="utf-8")).splitlines():
                entry = entry.strip()
                if not entry or entry.startswith("#"):
                    continue
                parts = entry.split()
                word = parts[0]
                freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
                tag = parts[2] if len(parts) > 2 else None
                tok.add_word(word, freq, tag)
            _TOKENIZERS[lex.directory] = tok
    return tok


def segment(text: str, drop_stopwords: bool = False, lexicon_dir: Path | str | None = None) -> list[str]:
    """Words of ``text`` (jieba + domain dictionary); placeholders stay whole tokens.

    Never raises on odd input: non-strings are rejected by the caller, anything else
    (empty, 100k characters, binary junk, mixed scripts) yields a list of tokens.
    """
    if not text:
        return []
    tok = get_tokenizer(lexicon_dir)
    stop = load_lexicons(lexicon_dir).stopwords if drop_stopwords else frozenset()
    words: list[str] = []
    pieces = _PLACEHOLDER_RE.split(text) if "<" in text else [text]
    for piece in pieces:
        if not piece:
            continue
        if piece[0] == "<" and piece in PLACEHOLDERS:
            words.append(piece)
            continue
        for word in tok.cut(piece, HMM=USE_HMM):
            if word.isspace() or word in stop:
                continue
            words.append(word)
    return words


def feature_tokens(words: list[str], lexicon_dir: Path | str | None = None) -> list[str]:
    """Words as the classifier sees them: no stopwords or bare punctuation, long numbers as <NUM>."""
    stop = load_lexicons(lexicon_dir).stopwords
    out = []
    for w in words:
        if w in stop or _SKIP_TOKEN.match(w):
            continue
        if _LONG_NUMBER.match(w):
            w = "<NUM>"
        out.append(w.lower())
    return out


# --------------------------------------------------------------------------- combined


@dataclass
class PreparedText:
    """Everything downstream needs from one raw message, computed once."""

    text: str  # normalised and masked: the only form that is stored or trained on
    tokens: list[str]  # feature tokens (see feature_tokens)
    masked: dict[str, int]  # placeholder type -> count
    punct: PunctStats

    @property
    def feature_string(self) -> str:
        """Tokens joined by spaces, for the word vectorizer."""
        return " ".join(self.tokens)

    @property
    def intensity(self) -> tuple[float, float, float, float]:
        """Binary emotion/urgency cues folding removed: two or more '!', three or more '!', '??', masked personal data."""
        p = self.punct
        return (
            float(p.exclamations >= 2),
            float(p.exclamations >= 3 or p.longest_run >= 3),
            float(p.questions >= 2),
            float(bool(self.masked)),
        )


def prepare(text: str, lexicon_dir: Path | str | None = None) -> PreparedText:
    """Normalise, mask and segment ``text`` in one pass (the triager's and trainer's entry)."""
    norm, stats = normalise_with_stats(text)
    masked = mask_personal_data(norm)
    words = segment(masked.text, lexicon_dir=lexicon_dir)
    return PreparedText(masked.text, feature_tokens(words, lexicon_dir), masked.counts, stats)


@lru_cache(maxsize=1)
def warm_up() -> None:
    """Build the tokenizer now (about a second) rather than on the first message."""
    segment("预热")
