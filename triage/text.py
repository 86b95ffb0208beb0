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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import opencc

from triage.lexicons import load_lexicons

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


# The full-width marks of nearly every Chinese message, each with its NFKC form: its
# compatibility decomposition (plain ASCII, "..." for …), which is where NFKC starts.
_COMMON_COMPAT = tuple((c, unicodedata.normalize("NFKC", c)) for c in "，！？…；：（）")


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, exactly, about seven times faster on real messages.

    Python's NFKC decomposes and recomposes the whole string as soon as one character needs
    it; nearly every Chinese message has a full-width comma. Those few marks are replaced by
    str.replace (in C), and the full normalisation runs only if the result is still not NFKC
    (its quick check is cheap). Each replacement is the mark's own NFKC decomposition, which
    NFKC would have produced first, so the answer is the same (tested on random strings with
    combining marks and compatibility characters).
    """
    if unicodedata.is_normalized("NFKC", text):
        return text
    for mark, plain in _COMMON_COMPAT:
        if mark in text:
            text = text.replace(mark, plain)
    if unicodedata.is_normalized("NFKC", text):
        return text
    return unicodedata.normalize("NFKC", text)


def normalise_with_stats(text: str) -> tuple[str, PunctStats]:
    """:func:`normalise` plus the punctuation counts that folding would otherwise lose."""
    text = _CONTROL.sub(" ", text)
    text = nfkc(text)
    if _has_han_traditional_candidates(text):
        with _CONVERTER_LOCK:  # the OpenCC binding is not documented as thread-safe
            text = _CONVERTER.convert(text)
    text = _WHITESPACE.sub(" ", text).strip()
    stats = PunctStats(exclamations=text.count("!"), questions=text.count("?"))
    longest = 1 if (stats.exclamations or stats.questions) else 0
    if _PUNCT_RUN.search(text) is not None:  # most messages repeat no punctuation mark
        for match in _PUNCT_RUN.finditer(text):
            longest = max(longest, len(match.group(0)))
        text = _PUNCT_RUN.sub(r"\1", text)
    stats.longest_run = longest
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
# Which segmenter cuts the text (TRIAGE_SEGMENTER): "auto" is the compiled jieba-rs
# segmenter (PyPI rjieba) when it is installed, else jieba; "jieba" always uses jieba. Both
# read jieba's dictionary and the domain user dictionary and cut the same way (tested).
SEGMENTER_CHOICES = ("auto", "jieba")
_TOKENIZERS: dict[Path, "jieba.Tokenizer"] = {}
_CUTTERS: dict[tuple[Path, str], Callable[[str], list[str]]] = {}
_TOKENIZER_LOCK = threading.Lock()
_SKIP_TOKEN = re.compile(r"^[\s,.、;:，。；：\"'“”‘’()（）\[\]【】《》<>/\\|_`!]+$")  # '!' counts separately
_LONG_NUMBER = re.compile(r"^\d{7,}$")  # order/tracking numbers; 12315 stays


def _user_dict_entries(path: Path) -> list[tuple[str, int | None, str | None]]:
    """(word, frequency or None, tag or None) per line of a jieba user dictionary."""
    entries = []
    for entry in path.read_text(encoding="utf-8").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = entry.split()
        freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        entries.append((parts[0], freq, parts[2] if len(parts) > 2 else None))
    return entries


def get_tokenizer(lexicon_dir: Path | str | None = None) -> "jieba.Tokenizer":
    """A jieba tokenizer with the domain user dictionary; built once per lexicon folder.

    jieba is the reference segmenter (and the fallback when the compiled one is missing);
    it is imported only here, so a process that segments with the compiled one never
    loads jieba's dictionary (about a second).
    """
    lex = load_lexicons(lexicon_dir)
    tok = _TOKENIZERS.get(lex.directory)
    if tok is not None:
        return tok
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(lex.directory)
        if tok is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.initialize()
            for word, freq, tag in _user_dict_entries(lex.user_dict_path):
                tok.add_word(word, freq, tag)
            _TOKENIZERS[lex.directory] = tok
    return tok


def segmenter_choice() -> str:
    """The configured segmenter (``TRIAGE_SEGMENTER``): ``auto`` or ``jieba``."""
    global _get_settings
    if _get_settings is None:  # imported on first use: triage.settings imports pydantic-settings
        from triage.settings import get_settings as _get_settings
    return _get_settings().segmenter


_get_settings = None


def active_segmenter(lexicon_dir: Path | str | None = None, choice: str | None = None) -> str:
    """``compiled`` or ``jieba``: which one :func:`segment` uses under ``choice`` (default: the setting)."""
    return _cutter(lexicon_dir, choice)[0]


def _cutter(lexicon_dir: Path | str | None = None, choice: str | None = None) -> tuple[str, Callable[[str], list[str]]]:
    """(kind, function that cuts one text piece into words), built once per lexicon folder."""
    choice = choice or segmenter_choice()
    found = _CUTTER_BY_ARGS.get((lexicon_dir, choice))  # once per message: skip the lookups below
    if found is not None:
        return found
    found = _CUTTER_BY_ARGS[(lexicon_dir, choice)] = _find_cutter(lexicon_dir, choice)
    return found


_CUTTER_BY_ARGS: dict[tuple[Any, str], tuple[str, Callable[[str], list[str]]]] = {}


def _find_cutter(lexicon_dir: Path | str | None, choice: str) -> tuple[str, Callable[[str], list[str]]]:
    if choice not in SEGMENTER_CHOICES:
        raise ValueError(f"unknown segmenter {choice!r}; choose one of {', '.join(SEGMENTER_CHOICES)}")
    lex = load_lexicons(lexicon_dir)
    if choice == "auto":
        with _TOKENIZER_LOCK:
            cut = _CUTTERS.get((lex.directory, "compiled"))
            if cut is None:
                cut = _compiled_cutter(lex.user_dict_path)
                if cut is not None:
                    _CUTTERS[(lex.directory, "compiled")] = cut
        if cut is not None:
            return "compiled", cut
    tok = get_tokenizer(lexicon_dir)

    def jieba_cut(piece: str) -> list[str]:
        return tok.lcut(piece, HMM=USE_HMM)

    return "jieba", _CUTTERS.setdefault((lex.directory, "jieba"), jieba_cut)


def _rjieba_class():
    """rjieba's ``Jieba`` class, or None when rjieba is not installed.

    ``import rjieba`` builds a default instance at import (a second dictionary build, 0.1 to
    0.3 s of every start-up); loading its extension module directly gives the class alone.
    """
    import importlib.machinery
    import importlib.util
    import sys

    module = sys.modules.get("rjieba.rjieba")
    if module is None:
        spec = importlib.util.find_spec("rjieba")
        if spec is None:
            return None
        for folder in spec.submodule_search_locations or ():
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = Path(folder) / f"rjieba{suffix}"
                if path.is_file():
                    ext_spec = importlib.util.spec_from_file_location("rjieba.rjieba", path)
                    module = importlib.util.module_from_spec(ext_spec)
                    sys.modules["rjieba.rjieba"] = module  # a later `import rjieba` reuses it
                    ext_spec.loader.exec_module(module)
                    break
            if module is not None:
                break
    if module is None:  # an unusual layout: the ordinary import
        import rjieba

        return rjieba.Jieba
    return module.Jieba


# Never inside a jieba "han" block (letters, digits, CJK), so it is never segmented as a
# word: it only carries the dictionary total (see _compiled_cutter).
_TOTAL_SENTINEL = "\ue000"


def _compiled_cutter(user_dict_path: Path) -> Callable[[str], list[str]] | None:
    """jieba-rs (PyPI rjieba) with jieba's dictionary and the user dictionary, cutting as jieba does.

    jieba-rs embeds jieba's dictionary and scores paths with jieba's formula, in which the
    dictionary total enters every path's score (exact ties between paths of equal words, as in
    好好好好好, are decided by its last bits). Two differences in that total are repaired by a
    sentinel entry: jieba's ``add_word`` adds a user word's frequency even when the word was
    already in the dictionary (jieba-rs replaces the old one), and jieba counts a repeated
    dictionary line twice. Entries without a frequency get jieba-rs's suggested one (jieba's
    formula).
    """
    try:
        jieba_cls = _rjieba_class()
    except ImportError:
        return None
    if jieba_cls is None:
        return None
    entries = _user_dict_entries(user_dict_path)
    base, repeated = _jieba_dictionary_frequencies([w for w, _, _ in entries])
    seg = jieba_cls()
    added: dict[str, int] = {}
    offset, sentinel = repeated, 0  # how far jieba-rs's total is below jieba's; the sentinel's frequency
    for word, freq, tag in entries:
        if freq is None and offset != sentinel:  # the suggestion reads the total: make it jieba's
            seg.add_word(_TOTAL_SENTINEL, offset, None)
            sentinel = offset
        old = added.get(word, base.get(word, 0))  # what jieba-rs subtracts and jieba does not
        added[word] = seg.add_word(word, freq, tag)
        offset += old
    if offset != sentinel:
        seg.add_word(_TOTAL_SENTINEL, offset, None)
    cut = seg.cut
    hmm = USE_HMM

    def compiled_cut(piece: str) -> list[str]:
        return cut(piece, hmm)

    return compiled_cut


def _jieba_dictionary_frequencies(words: list[str]) -> tuple[dict[str, int], int]:
    """Frequencies of ``words`` in jieba's main dictionary, and the total of its repeated lines.

    jieba counts a repeated dictionary line (``B超 3`` twice) into its total again, jieba-rs
    does not. Scanning jieba's dictionary (349k lines) takes about 0.3 s; the answer depends
    only on the words and that file, so it is cached in the temporary folder, where jieba
    keeps its own cache.
    """
    import hashlib
    import importlib.util
    import json
    import os
    import tempfile

    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.origin:
        return {}, 0
    dict_path = Path(spec.origin).parent / "dict.txt"
    try:
        stat = dict_path.stat()
    except OSError:
        return {}, 0
    key = hashlib.sha256(
        "\n".join([str(dict_path), str(stat.st_size), str(stat.st_mtime_ns), *sorted(set(words))]).encode("utf-8")
    ).hexdigest()[:20]
    cache = Path(tempfile.gettempdir()) / f"triage-jieba-freq-{key}.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in cached["freq"].items()}, int(cached["repeated"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    wanted = set(words)
    found: dict[str, int] = {}
    seen: dict[str, int] = {}
    repeated = 0
    with dict_path.open(encoding="utf-8") as f:
        for line in f:
            word, _, rest = line.partition(" ")
            freq = int(rest.split(" ", 1)[0])
            if word in seen:
                repeated += seen[word]  # jieba-rs keeps the last line only
            seen[word] = freq
            if word in wanted:
                found[word] = freq
    try:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"freq": found, "repeated": repeated}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only temporary folder: scan again next time
    return found, repeated


def segment(
    text: str, drop_stopwords: bool = False, lexicon_dir: Path | str | None = None, segmenter: str | None = None
) -> list[str]:
    """Words of ``text`` (jieba's cut + domain dictionary); placeholders stay whole tokens.

    ``segmenter`` overrides ``TRIAGE_SEGMENTER`` (``auto``: compiled when installed; ``jieba``).

    Never raises on odd input: non-strings are rejected by the caller, anything else
    (empty, 100k characters, binary junk, mixed scripts) yields a list of tokens.
    """
    if not text:
        return []
    cut = _cutter(lexicon_dir, segmenter)[1]
    stop = load_lexicons(lexicon_dir).stopwords if drop_stopwords else frozenset()
    words: list[str] = []
    pieces = _PLACEHOLDER_RE.split(text) if "<" in text else [text]
    for piece in pieces:
        if not piece:
            continue
        if piece[0] == "<" and piece in PLACEHOLDERS:
            words.append(piece)
            continue
        if stop:
            words += [w for w in cut(piece) if not w.isspace() and w not in stop]
        elif " " not in piece and piece.isprintable():  # no whitespace (all others are unprintable)
            words += cut(piece)
        else:
            words += [w for w in cut(piece) if not w.isspace()]
    return words


def feature_tokens(words: list[str], lexicon_dir: Path | str | None = None) -> list[str]:
    """Words as the classifier sees them: no stopwords or bare punctuation, long numbers as <NUM>."""
    return list(filter(None, map(_feature_token_table(lexicon_dir).__getitem__, words)))  # None: dropped


class _FeatureTokenTable(dict):
    """word -> its feature token, or None for a stopword or bare punctuation; filled on first sight.

    The same few thousand words recur in every message, so each is classified once.
    """

    LIMIT = 200_000  # bounded memory in a long-running service

    def __init__(self, stopwords: frozenset[str]):
        super().__init__()
        self.stopwords = stopwords

    def __missing__(self, word: str) -> str | None:
        if len(self) >= self.LIMIT:
            self.clear()
        if word in self.stopwords or _SKIP_TOKEN.match(word):
            token = None
        else:
            token = ("<NUM>" if _LONG_NUMBER.match(word) else word).lower()  # "<num>", as always
        self[word] = token
        return token


_FEATURE_TOKEN_TABLES: dict[Path, _FeatureTokenTable] = {}


def _feature_token_table(lexicon_dir: Path | str | None) -> _FeatureTokenTable:
    lex = load_lexicons(lexicon_dir)
    table = _FEATURE_TOKEN_TABLES.get(lex.directory)
    if table is None or table.stopwords is not lex.stopwords:
        table = _FEATURE_TOKEN_TABLES[lex.directory] = _FeatureTokenTable(lex.stopwords)
    return table


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
    clean = masked.text
    if clean and "<" not in clean and " " not in clean and clean.isprintable():
        # The common case of segment() (one piece, nothing to drop) fused with feature_tokens().
        cut = _cutter(lexicon_dir, None)[1]
        tokens = list(filter(None, map(_feature_token_table(lexicon_dir).__getitem__, cut(clean))))
    else:
        tokens = feature_tokens(segment(clean, lexicon_dir=lexicon_dir), lexicon_dir)
    return PreparedText(clean, tokens, masked.counts, stats)


@lru_cache(maxsize=1)
def warm_up() -> None:
    """Build the tokenizer now (about a second) rather than on the first message."""
    segment("预热")
