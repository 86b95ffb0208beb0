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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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

PLACEHOLDERS = ("<PHONE>", "<ID>", "<BANKCARD>", "<EMAIL>", "<ADDRESS>")
_PLACEHOLDER_RE = re.compile(r"(<(?:PHONE|ID|BANKCARD|EMAIL|ADDRESS)>)")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_ID_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx])(?![0-9A-Za-z])")
# 13-19 digits, optionally in groups of 4 separated by one space or hyphen.
_CARD_CANDIDATE = re.compile(r"(?<![\d\-])(\d{4}(?:[ \-]?\d{4}){2,3}(?:[ \-]?\d{1,3})?|\d{13,19})(?![\d\-])")
_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[ \-]?)?(1[3-9]\d(?:[ \-]?\d{4}){2})(?!\d)")
_LANDLINE = re.compile(r"(?<![\d\-])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?\d{7,8}(?:-\d{1,5})?(?![\d\-])")
_ORDER_CONTEXT = re.compile(r"(?:订单|单号|运单|快递|物流|编号|流水号|工单|sn|SN|序列号|No\.?|NO\.?)[号码编是为:# ]{0,4}$")
_HAN = r"[\u4e00-\u9fa5]"
_ADDRESS = re.compile(
    rf"(?:{_HAN}{{2,7}}?(?:省|自治区|市|区|县|旗|镇|乡|街道))*"
    rf"{_HAN}{{1,12}}?(?:路|街|大道|巷|弄|胡同|村|小区|花园|公寓|大厦|广场|苑)"
    r"[\dA-Za-z\-]{1,6}(?:号院|号楼|号|弄|栋|幢|单元|室)"
    r"(?:[\dA-Za-z\-]{1,6}(?:号楼|号|栋|幢|单元|楼|层|室))*"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_number_valid(number: str) -> bool:
    """GB 11643 check digit of an 18-character resident ID number."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    if _ID_CHECK[total % 11] != number[17].upper():
        return False
    month, day = int(number[10:12]), int(number[12:14])
    return 1 <= month <= 12 and 1 <= day <= 31


def luhn_valid(digits: str) -> bool:
    """Luhn checksum, which every bank card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass
class MaskedText:
    """Text with personal data replaced by typed placeholders, and how many of each."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)  # placeholder type -> number replaced

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _after_order_word(text: str, start: int) -> bool:
    return bool(_ORDER_CONTEXT.search(text[max(0, start - 8) : start]))


def mask_personal_data(text: str) -> MaskedText:
    """Replace phones, ID numbers, bank cards, e-mails and street addresses by placeholders.

    Order numbers stay: long digit strings are masked only when they pass the ID check
    digit or (for cards) the Luhn check with a card-issuer prefix, and not right after a
    word such as 订单号/单号/快递.
    """
    counts: Counter[str] = Counter()
    if not any(ch.isdigit() or ch == "@" for ch in text) and not any(
        k in text for k in ("路", "街", "巷", "弄", "村", "区", "苑", "院", "厦", "寓", "园", "场")
    ):
        return MaskedText(text, {})

    def sub_email(m: re.Match) -> str:
        counts["EMAIL"] += 1
        return "<EMAIL>"

    if "@" in text:
        text = _EMAIL.sub(sub_email, text)

    def sub_id(m: re.Match) -> str:
        if id_number_valid(m.group(1)) and not _after_order_word(m.string, m.start()):
            counts["ID"] += 1
            return "<ID>"
        return m.group(0)

    def sub_card(m: re.Match) -> str:
        digits = re.sub(r"[ \-]", "", m.group(1))
        if (
            13 <= len(digits) <= 19
            and digits[0] in "3456"
            and luhn_valid(digits)
            and not _after_order_word(m.string, m.start())
        ):
            counts["BANKCARD"] += 1
            return "<BANKCARD>"
        return m.group(0)

    def sub_mobile(m: re.Match) -> str:
        if _after_order_word(m.string, m.start()):
            return m.group(0)
        counts["PHONE"] += 1
        return "<PHONE>"

    def sub_landline(m: re.Match) -> str:
        counts["PHONE"] += 1
        return "<PHONE>"

    def sub_address(m: re.Match) -> str:
        counts["ADDRESS"] += 1
        return "<ADDRESS>"

    if any(ch.isdigit() for ch in text):
        text = _ID_CANDIDATE.sub(sub_id, text)
        text = _CARD_CANDIDATE.sub(sub_card, text)
        text = _MOBILE.sub(sub_mobile, text)
        text = _LANDLINE.sub(sub_landline, text)
        text = _ADDRESS.sub(sub_address, text)
    return MaskedText(text, dict(counts))


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
    words = segment(masked.text, lexicon_dir=lexicon_dir)
    return PreparedText(masked.text, feature_tokens(words, lexicon_dir), masked.counts, stats)


@lru_cache(maxsize=1)
def warm_up() -> None:
    """Build the tokenizer now (about a second) rather than on the first message."""
    segment("预热")
