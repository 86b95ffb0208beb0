"""The prediction half of the scikit-learn backend in numpy alone (issue 14).

:class:`models.sklearn_backend.SklearnBackend` is the reference: it trains, saves and
predicts through scikit-learn's vectorizers and scipy's sparse matrices. Importing those
takes seconds, which is most of a ``triage predict`` run, and their per-n-gram Python
loops are most of the rest. :class:`SklearnPredictor` reads the same saved files and
computes the same feature matrix (word and character TF-IDF, intensity cues, the review
sentiment signal), probabilities and explanations with whole-batch numpy operations:
character n-grams are looked up as packed code points in hash tables, word n-grams by
token ids (the sentiment signal's n-grams among them); older models' hashed sentiment
signal through one cached dictionary.

It only predicts (no fit, no save). It reads exactly one backend format; a model of any
other format or with a parameter it does not know makes :meth:`SklearnPredictor.load`
raise :class:`PredictorUnsupported`, and the model store then loads the full backend.
``tests/test_sklearn_predictor.py`` checks it against the backend, feature by feature.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from triage.errors import ModelError
from triage.text import PreparedText, prepare

# What this predictor reproduces of models/sklearn_backend.py; any change there needs the same here.
FORMAT = "sklearn-tfidf-logreg/3"
# Parameters of the saved backend this predictor reproduces; C, calibration_folds and
# ordinal_heads shape training only (an ordinal head is saved as ordinary class weights).
KNOWN_PARAMS = {"word_ngram", "char_ngram", "word_min_df", "char_min_df", "char_max_features", "C",
                "calibration_folds", "sentiment_scale", "ordinal_heads"}
INTENSITY_NAMES = ["<!!>", "<!!!>", "<??>", "<personal data>"]
INTENSITY_SCALE = 0.3
SENTIMENT_NAMES = ["<negative review>", "<clearly positive>", "<rather positive>", "<rather negative>", "<clearly negative>"]
SENTIMENT_BINS = [0.15, 0.5, 0.85]
SENTIMENT_FEATURES = 2**18  # SentimentModel.N_FEATURES: hashed word uni- and bigrams, l2-normalised
WORDS_ONLY_HEADS = ("dispute_type", "escalation")
MAX_CHAR_N = 3  # three code points (21 bits each) pack into one int64

_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's whitespace folding before character n-grams
_GRAM_CACHE_LIMIT = 300_000


class PredictorUnsupported(ModelError):
    """The saved model is not one this predictor reproduces exactly; use the full backend."""


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _label_key(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _word_grams(tokens: list[str], lo: int, hi: int) -> list[str]:
    """scikit-learn's word n-grams of ``tokens``, in its order."""
    grams = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
        if n == 2:
            grams += [a + " " + b for a, b in zip(tokens, tokens[1:])]
        else:
            grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return grams


def _pack(codes: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """One int64 per n-gram of code points beginning at ``starts``."""
    packed = codes[starts].copy()
    for k in range(1, n):
        packed = (packed << 21) | codes[starts + k]
    return packed


def _l2_normalise(data: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """scikit-learn's row l2 normalisation in place (squares in float32, sums in float64)."""
    sq = np.bincount(rows, weights=(data * data).astype(np.float64), minlength=n_rows)
    norms = np.sqrt(sq)
    norms[norms == 0.0] = 1.0
    data[:] = data / norms[rows]


def _tfidf(rows: np.ndarray, cols: np.ndarray, n_rows: int, width: int, idf: np.ndarray):
    """Sublinear TF-IDF, l2-normalised per row, of (row, column) occurrences: (rows, cols, data) row-major."""
    keys, counts = np.unique(rows.astype(np.int64) * width + cols, return_counts=True)
    r, c = keys // width, keys % width
    data = counts.astype(np.float32)
    np.log(data, data)
    data += 1.0
    data *= idf[c]
    _l2_normalise(data, r, n_rows)
    return r, c, data


def _by_row_then_descending(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.lexsort((-values, rows))`` for positive float32 ``values``, in one stable sort.

    A positive float32's bit pattern grows with its value, so row and reversed bits pack into
    one int64 key; equal keys keep their order, as in lexsort.
    """
    if values.dtype != np.float32 or not len(values):
        return np.lexsort((-values, rows))
    key = rows.astype(np.int64) << 31
    key |= 0x7FFFFFFF - values.view(np.int32).astype(np.int64)
    return np.argsort(key, kind="stable")


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing's multiplier


class _HashIndex:
    """Non-negative int64 keys -> int64 values, looked up for a whole array at once: open
    addressing with linear probing at a load of at most 1/2, in numpy. For a batch, about
    three times faster than a binary search in a sorted array of tens of thousands of
    n-grams; a few hundred queries (one message) still take the binary search, which costs
    fewer numpy calls."""

    SMALL = 2048  # fewer queries than this: binary search

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        keys, values = np.asarray(keys, dtype=np.int64), np.asarray(values, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self._sorted_keys, self._sorted_values = keys[order], values[order]
        bits = max(int(np.ceil(np.log2(max(len(keys), 1) * 2))), 4)
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self.keys = np.full(1 << bits, -1, dtype=np.int64)
        self.values = np.full(1 << bits, -1, dtype=np.int64)
        slot = self._slot(keys)
        pending = np.arange(len(keys))
        while len(pending):  # each round places one key in every free slot asked for
            s = slot[pending]
            free = self.keys[s] == -1
            taken, first = np.unique(s[free], return_index=True)
            won = pending[free][first]
            self.keys[taken] = keys[won]
            self.values[taken] = values[won]
            placed = np.zeros(len(keys), dtype=bool)
            placed[won] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & self._mask

    def __len__(self) -> int:
        return len(self._sorted_keys)

    def _slot(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _GOLDEN) >> self._shift).astype(np.int64)

    def get(self, queries: np.ndarray) -> np.ndarray:
        """The value of each query, -1 where it is not a key."""
        if len(queries) < self.SMALL:
            keys = self._sorted_keys
            if not len(keys):
                return np.full(len(queries), -1, dtype=np.int64)
            at = np.searchsorted(keys, queries)
            at[at == len(keys)] = 0
            return np.where(keys[at] == queries, self._sorted_values[at], -1)
        out = np.full(len(queries), -1, dtype=np.int64)
        slot = self._slot(queries)
        found = self.keys[slot]
        hit = found == queries
        out[hit] = self.values[slot[hit]]
        todo = np.flatnonzero(~hit & (found != -1))
        while len(todo):
            s = (slot[todo] + 1) & self._mask
            slot[todo] = s
            found = self.keys[s]
            hit = found == queries[todo]
            out[todo[hit]] = self.values[s[hit]]
            todo = todo[~hit & (found != -1)]
        return out


class _GramCodes:
    """word n-gram -> (word column + 1) * SENTIMENT_FEATURES + sentiment hash index, cached.

    Real messages bring new n-grams all the time, so the misses of a batch are filled in bulk
    (C-level map over the vocabulary and the hash) rather than one Python call each.
    """

    LIMIT = 500_000  # bounded memory in a long-running service

    def __init__(self, vocabulary: dict[str, int], hashed: bool):
        self.vocabulary = vocabulary
        self.hash = _murmurhash() if hashed else None
        self.cache: dict[str, int] = {}

    def codes(self, grams: list[str]) -> np.ndarray:
        codes = np.fromiter(map(self.cache.get, grams, repeat(-1)), dtype=np.int64, count=len(grams))
        missing = np.flatnonzero(codes < 0)
        if len(missing):
            new = [grams[i] for i in missing.tolist()]
            cols = np.fromiter(map(self.vocabulary.get, new, repeat(-1)), dtype=np.int64, count=len(new))
            fresh = (cols + 1) * SENTIMENT_FEATURES
            if self.hash is not None:
                h = np.fromiter(map(self.hash, new), dtype=np.int64, count=len(new))  # signed, seed 0
                fresh += np.where(h == -(2**31), _MIN_HASH_INDEX, np.abs(h) % SENTIMENT_FEATURES)
            codes[missing] = fresh
            if len(self.cache) + len(new) > self.LIMIT:
                self.cache.clear()
            self.cache.update(zip(new, fresh.tolist()))
        return codes


# scikit-learn's FeatureHasher column for the hash -2**31, whose abs() overflows an int32.
_MIN_HASH_INDEX = (2**31 - 1 - (SENTIMENT_FEATURES - 1)) % SENTIMENT_FEATURES


def _hash_index(gram: str) -> int:
    """scikit-learn's FeatureHasher column of ``gram`` (signed murmurhash3, seed 0)."""
    h = _murmurhash()(gram, 0, True)
    return abs(h) % SENTIMENT_FEATURES if h != -(2**31) else _MIN_HASH_INDEX


def _murmurhash():
    """mmh3.hash: the same murmurhash3_x86_32 as scikit-learn's, without importing scikit-learn."""
    try:
        import mmh3
    except ImportError:
        raise PredictorUnsupported("the sentiment signal's hashing needs mmh3 (pip install mmh3)") from None
    return mmh3.hash


class SklearnPredictor:
    """Probabilities and explanations of a saved scikit-learn backend, bit for bit its features."""

    name = "sklearn"

    def __init__(self) -> None:
        self.classes_: dict[str, list[Any]] = {}
        self.params: dict[str, Any] = {}
        self.temperatures: dict[str, float] = {}
        self.heads: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}  # None: a constant head
        self.sentiment: tuple[np.ndarray, float] | None = None
        self._sentiment_terms: list[str] | None = None  # the signal's n-grams; None: hashed (older models)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path) -> "SklearnPredictor":
        path = Path(path)
        try:
            meta = json.loads((path / "backend.json").read_text(encoding="utf-8"))
            vocab = json.loads((path / "vocabulary.json").read_text(encoding="utf-8"))
            with np.load(path / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # the full backend gives the precise error
            raise PredictorUnsupported(f"{path}: not readable as an sklearn backend ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PredictorUnsupported(f"{path}: format {meta.get('format') if isinstance(meta, dict) else None!r}")
        params = dict(meta.get("params", {}))
        unknown = set(params) - KNOWN_PARAMS
        char_ngram, word_ngram = tuple(params.get("char_ngram", (1, 3))), tuple(params.get("word_ngram", (1, 2)))
        if unknown or char_ngram[1] > MAX_CHAR_N or char_ngram[0] < 1 or word_ngram[0] < 1:
            raise PredictorUnsupported(f"{path}: parameters this predictor does not reproduce ({sorted(unknown)})")
        self = cls()
        try:
            self.params = {**params, "char_ngram": char_ngram, "word_ngram": word_ngram}
            self.classes_ = {h: list(c) for h, c in meta["classes"].items()}
            self.temperatures = {h: float(t) for h, t in meta["temperatures"].items()}
            constant = set(meta.get("constant_heads", []))
            self.heads = {
                h: None if h in constant
                else (arrays[f"head_{h}_W"].astype(np.float32), arrays[f"head_{h}_b"].astype(np.float64))
                for h in self.classes_
            }
            if meta.get("sentiment"):
                self.sentiment = (arrays["sentiment_W"].astype(np.float32), float(arrays["sentiment_b"][0]))
                self._sentiment_terms = vocab.get("sentiment")  # None: the hashed signal of older models
                if self._sentiment_terms is not None and len(self._sentiment_terms) != len(self.sentiment[0]):
                    raise ValueError("sentiment vocabulary and weights differ in length")
                if self._sentiment_terms is not None and not (word_ngram[0] == 1 and word_ngram[1] >= 2):
                    raise PredictorUnsupported(f"{path}: the sentiment signal's bigrams need word n-grams from 1 to 2 or more")
            self._index_words(vocab["word"], arrays["word_idf"])
            self._index_chars(vocab["char"], arrays["char_idf"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorUnsupported(f"{path}: inconsistent backend files ({exc!r})") from None
        self._n_extra = len(INTENSITY_NAMES) + (len(SENTIMENT_NAMES) if self.sentiment is not None else 0)
        self.width = self.n_words + self.n_chars + self._n_extra
        for h, head in self.heads.items():
            if head is not None and head[0].shape != (len(self.classes_[h]), self.width):
                raise PredictorUnsupported(f"{path}: head {h} has weights of shape {head[0].shape}")
        self._index_explanations(vocab["word"], vocab["char"])
        return self

    def _index_words(self, terms: list[str], idf: np.ndarray) -> None:
        """Word n-grams are looked up among the heads' terms followed by the sentiment signal's
        terms that are not among them (usually none): a hit's index below ``n_words`` is a
        TF-IDF column, and ``_sentiment_of[index]`` its sentiment weight's position (-1: none)."""
        self.n_words = len(terms)
        self.word_idf = np.asarray(idf, dtype=np.float64)
        self._token_ids: dict[str, int] | None = None
        self._hashed = self.sentiment is not None and self._sentiment_terms is None
        self._sentiment_of: np.ndarray | None = None
        lookup = terms
        if self.sentiment is not None and not self._hashed:
            position = {t: i for i, t in enumerate(terms)}
            extra = [t for t in self._sentiment_terms if t not in position]
            lookup = terms + extra
            position.update((t, self.n_words + i) for i, t in enumerate(extra))
            self._sentiment_of = np.full(len(lookup), -1, dtype=np.int64)
            self._sentiment_of[np.fromiter(map(position.__getitem__, self._sentiment_terms), dtype=np.int64,
                                           count=len(self._sentiment_terms))] = np.arange(len(self._sentiment_terms))
        if tuple(self.params["word_ngram"]) == (1, 2) and not self._hashed:
            self._index_word_pairs(lookup)
        if self._token_ids is None:  # the n-gram strings path
            self._grams = _GramCodes({t: i for i, t in enumerate(lookup)}, hashed=self._hashed)

    def _index_word_pairs(self, terms: list[str]) -> None:
        """The default word n-grams (1, 2) as numbers: an id per token of the vocabulary, the
        column of each token that is a unigram term, and the bigram terms as sorted codes
        ``id(a) * n_ids + id(b)``, so a batch's bigrams are found without building their strings."""
        spaces = np.fromiter(map(str.count, terms, repeat(" ")), dtype=np.int64, count=len(terms))
        if len(terms) == 0 or spaces.max() > 1:
            return  # not a (1, 2) vocabulary after all: the string path reads it
        parts = " ".join(terms).split(" ")  # in C: a start-up cost of milliseconds, not a loop per term
        ids = {part: i for i, part in enumerate(dict.fromkeys(parts))}
        part_ids = np.fromiter(map(ids.__getitem__, parts), dtype=np.int64, count=len(parts))
        first = np.cumsum(spaces + 1) - (spaces + 1)  # index in ``parts`` of each term's first token
        self._n_ids = max(len(ids), 1)
        self._unigram_cols = np.full(self._n_ids + 1, -1, dtype=np.int64)  # the last slot: unknown token
        unigram = np.flatnonzero(spaces == 0)
        self._unigram_cols[part_ids[first[unigram]]] = unigram
        bigram = np.flatnonzero(spaces == 1)
        codes = part_ids[first[bigram]] * self._n_ids + part_ids[first[bigram] + 1]
        self._pairs = _HashIndex(codes, bigram)
        self._token_ids = ids

    def _index_chars(self, terms: list[str], idf: np.ndarray) -> None:
        """Per n-gram length, the packed code points of the vocabulary's terms, sorted, and their columns."""
        self.n_chars = len(terms)
        self.char_idf = np.asarray(idf, dtype=np.float64)
        self._char_tables: dict[int, _HashIndex | None] = {}  # None: one code point, the dense table
        lengths = np.array([len(t) for t in terms], dtype=np.int64)
        lo, hi = self.params["char_ngram"]
        for n in range(lo, hi + 1):
            cols = np.flatnonzero(lengths == n)
            if not len(cols):
                continue
            text = "".join(terms[i] for i in cols)
            codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
            packed = _pack(codes, np.arange(0, len(codes), n), n)
            self._char_tables[n] = _HashIndex(packed, cols) if n > 1 else None
            if n == 1:  # code point -> column, -1 for none; its last slot stands for every larger code point
                self._unigram_columns = np.full(int(packed.max()) + 2, -1, dtype=np.int64)
                self._unigram_columns[packed] = cols

    def _index_explanations(self, word_terms: list[str], char_terms: list[str]) -> None:
        """SklearnBackend._index_weights: readable names and per-class weights relative to the class mean."""
        joined = [w.replace(" ", "") for w in word_terms]
        unigrams = {w for w, j in zip(word_terms, joined) if w == j}
        words = [w if w == j else ("" if j in unigrams else j) for w, j in zip(word_terms, joined)]
        seen = set(words)
        chars = [n if len(n) > 1 and n.isalnum() and not n.isascii() and n not in seen else "" for n in char_terms]
        names = words + chars + INTENSITY_NAMES + (SENTIMENT_NAMES if self.sentiment is not None else [])
        self._feature_names = np.array(names, dtype=object)
        self._explainable = np.array([bool(n) for n in names], dtype=bool)
        self._explainable_words = self._explainable.copy()
        self._explainable_words[len(words) + len(chars) :] = False
        live = [h for h, head in self.heads.items() if head is not None]
        self._weights = {h: self.heads[h][0] for h in live}  # the heads that explain
        # Column-major for the look-ups: one row per feature with every live head's class
        # weights side by side, so a nonzero's weights are read from one place in memory.
        stacked = np.vstack([self.heads[h][0] for h in live]) if live else np.zeros((0, self.width), np.float32)
        self._stacked_weights = np.ascontiguousarray(stacked.T)
        bounds = np.cumsum([0] + [self.heads[h][0].shape[0] for h in live]).tolist()
        self._head_rows = {h: (bounds[i], bounds[i + 1]) for i, h in enumerate(live)}
        self._relative = np.ascontiguousarray(np.vstack(
            [(self.heads[h][0] - self.heads[h][0].mean(axis=0, keepdims=True)).astype(np.float32) for h in live]
        ).T) if live else self._stacked_weights

    # ------------------------------------------------------------------ features

    def featurize(self, texts: Sequence[str | PreparedText]):
        """The backend's feature matrix as CSR arrays: (data, indices, indptr, row of each value)."""
        prepared = [t if isinstance(t, PreparedText) else prepare(t) for t in texts]
        n = len(prepared)
        words, sentiment = self._word_block(prepared)
        blocks = [words, self._char_block(prepared), self._intensity_block(prepared)]
        if self.sentiment is not None:
            blocks.append(self._sentiment_features(sentiment, n))
        rows = np.concatenate([b[0] for b in blocks])
        order = np.argsort(rows, kind="stable")  # row-major; within a row the blocks (and columns) stay in order
        rows = rows[order]
        indices = np.concatenate([b[1] for b in blocks])[order]
        data = np.concatenate([b[2] for b in blocks]).astype(np.float32)[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return data, indices, indptr, rows

    def _word_block(self, prepared: list[PreparedText]):
        """Word n-gram TF-IDF, and the sentiment signal's P(negative) per message (None without one)."""
        lo, hi = self.params["word_ngram"]
        n = len(prepared)
        # The vectorizers' tokens of " ".join(p.tokens): feature tokens never hold whitespace.
        token_lists = [p.tokens for p in prepared]
        docs = np.arange(n)
        if self._token_ids is not None:  # the default (1, 2) without the sentiment hash: by numbers
            rows, cols = self._word_pair_hits(token_lists, n)
            return self._word_tfidf(rows, cols, n), self._sentiment_from_hits(rows, cols, n)
        if (lo, hi) == (1, 2):  # the default, in two flat passes over the batch
            grams = [t for tokens in token_lists for t in tokens]
            grams += [a + " " + b for tokens in token_lists for a, b in zip(tokens, tokens[1:])]
            lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
            rows = np.concatenate([np.repeat(docs, lengths), np.repeat(docs, np.maximum(lengths - 1, 0))])
        else:
            per_doc = [_word_grams(tokens, lo, hi) for tokens in token_lists]
            grams = [g for doc_grams in per_doc for g in doc_grams]
            rows = np.repeat(docs, [len(doc_grams) for doc_grams in per_doc])
        if not self._hashed:  # no hash to cache: one look-up in the vocabulary (-1: not in it)
            cols = np.fromiter(map(self._grams.vocabulary.get, grams, repeat(-1)), dtype=np.int64, count=len(grams))
            known = cols >= 0
            rows, cols = rows[known], cols[known]
            return self._word_tfidf(rows, cols, n), self._sentiment_from_hits(rows, cols, n)
        else:
            codes = self._grams.codes(grams)
            cols = codes // SENTIMENT_FEATURES - 1
            if (lo, hi) == (1, 2):
                hashed = (rows, codes % SENTIMENT_FEATURES)
            else:
                per_doc = [_word_grams(tokens, 1, 2) for tokens in token_lists]
                hashed = (
                    np.repeat(docs, [len(doc_grams) for doc_grams in per_doc]),
                    np.array([_hash_index(g) for doc_grams in per_doc for g in doc_grams], dtype=np.int64),
                )
        known = cols >= 0
        return _tfidf(rows[known], cols[known], n, self.n_words, self.word_idf), self._hashed_sentiment(hashed, n)

    def _word_tfidf(self, rows: np.ndarray, cols: np.ndarray, n: int):
        if self._sentiment_of is not None and len(self._sentiment_of) > self.n_words:
            heads = cols < self.n_words  # leave out the sentiment-only terms
            rows, cols = rows[heads], cols[heads]
        return _tfidf(rows, cols, n, self.n_words, self.word_idf)

    def _word_pair_hits(self, token_lists: list[list[str]], n: int):
        """(row, term) of every word uni- and bigram found, through token ids (see :meth:`_index_word_pairs`)."""
        flat = [t for tokens in token_lists for t in tokens]
        unknown = self._n_ids
        ids = np.fromiter(map(self._token_ids.get, flat, repeat(unknown)), dtype=np.int64, count=len(flat))
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
        doc_of = np.repeat(np.arange(n), lengths)
        cols = self._unigram_cols[ids]
        known = cols >= 0
        rows, cols = doc_of[known], cols[known]
        if len(ids) > 1 and len(self._pairs):
            first, second = ids[:-1], ids[1:]
            pair = (doc_of[:-1] == doc_of[1:]) & (first != unknown) & (second != unknown)
            pair_cols = self._pairs.get(first[pair] * self._n_ids + second[pair])
            hit = pair_cols >= 0
            rows = np.concatenate([rows, doc_of[:-1][pair][hit]])
            cols = np.concatenate([cols, pair_cols[hit]])
        return rows, cols

    def _char_block(self, prepared: list[PreparedText]):
        """Character n-grams of the lower-cased text without '!' (SklearnBackend._char_input)."""
        fold = _WHITE_SPACES.sub
        docs = [fold(" ", p.text.replace("!", "").lower()) for p in prepared]
        n = len(docs)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=n)
        codes = np.frombuffer("".join(docs).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        doc_of = np.repeat(np.arange(n), lengths)
        ends = np.cumsum(lengths)[doc_of] if len(codes) else np.zeros(0, dtype=np.int64)
        positions = np.arange(len(codes))
        all_rows, all_cols = [], []
        for gram_len, table in self._char_tables.items():
            if table is None:  # one code point: a direct look-up table
                dense = self._unigram_columns
                cols = dense[np.minimum(codes, len(dense) - 1)]
                hit = cols >= 0
                all_rows.append(doc_of[hit])
                all_cols.append(cols[hit])
                continue
            starts = positions[positions + gram_len <= ends]
            if not len(starts):
                continue
            found = table.get(_pack(codes, starts, gram_len))
            hit = found >= 0
            all_rows.append(doc_of[starts[hit]])
            all_cols.append(found[hit])
        rows = np.concatenate(all_rows) if all_rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(all_cols) if all_cols else np.zeros(0, dtype=np.int64)
        r, c, data = _tfidf(rows, cols, n, self.n_chars, self.char_idf)
        return r, c + self.n_words, data

    def _intensity_block(self, prepared: list[PreparedText]):
        dense = np.array([p.intensity for p in prepared], dtype=np.float32).reshape(-1, len(INTENSITY_NAMES)) * INTENSITY_SCALE
        r, c = np.nonzero(dense)
        return r, c + self.n_words + self.n_chars, dense[r, c]

    def _sentiment_from_hits(self, rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray | None:
        """P(negative review) from the sentiment signal's own terms among the n-grams found."""
        if self.sentiment is None:
            return None
        at = self._sentiment_of[cols]
        mine = at >= 0
        return self._sentiment_proba(rows[mine], at[mine], len(self.sentiment[0]), n)

    def _hashed_sentiment(self, hashed: tuple[np.ndarray, np.ndarray] | None, n: int) -> np.ndarray | None:
        """P(negative review) from the hashed word n-grams (models saved before the vocabulary)."""
        if hashed is None:
            return None
        return self._sentiment_proba(hashed[0], hashed[1], SENTIMENT_FEATURES, n)

    def _sentiment_proba(self, rows: np.ndarray, idx: np.ndarray, width: int, n: int) -> np.ndarray:
        W, b = self.sentiment
        keys, counts = np.unique(rows * width + idx, return_counts=True)
        r, c = keys // width, keys % width
        data = counts.astype(np.float32)
        _l2_normalise(data, r, n)
        z = (np.bincount(r, weights=(data * W[c]).astype(np.float64), minlength=n) + b).astype(np.float32)
        return 1.0 / (1.0 + np.exp(-z))

    def _sentiment_features(self, p_neg: np.ndarray, n: int):
        """P(negative review) and its four bins (SentimentModel.features)."""
        scale = float(self.params.get("sentiment_scale", 0.5))
        bins = np.digitize(p_neg, SENTIMENT_BINS)
        dense = np.zeros((n, 5), dtype=np.float32)
        dense[:, 0] = p_neg
        dense[np.arange(n), bins + 1] = 1.0
        dense *= scale
        rr, cc = np.nonzero(dense)
        return rr, cc + self.n_words + self.n_chars + len(INTENSITY_NAMES), dense[rr, cc]

    # ------------------------------------------------------------------ prediction

    def _gather(self, indices: np.ndarray) -> np.ndarray:
        """Every live head's class weights at the matrix's columns, (nonzeros, all classes): one gather."""
        return self._stacked_weights[indices]

    def _proba(self, X, gathered: np.ndarray | None = None) -> dict[str, np.ndarray]:
        data, indices, indptr, _rows = X
        n = len(indptr) - 1
        gathered = gathered if gathered is not None else self._gather(indices)
        out = {}
        # X @ W.T for every head at once: the products per nonzero, summed over each row's run
        # of nonzeros (rows are contiguous), in order, as bincount did; an empty row scores 0.
        nonempty = np.flatnonzero(indptr[1:] > indptr[:-1])
        sums = None
        if len(data) and len(nonempty) and self._head_rows:
            products = (gathered * data[:, None]).astype(np.float64)
            sums = np.zeros((n, products.shape[1]))
            sums[nonempty] = np.add.reduceat(products, indptr[:-1][nonempty], axis=0)
        for head, model in self.heads.items():
            if model is None:
                out[head] = np.ones((n, 1))
                continue
            b = model[1]
            if sums is None:
                scores = np.zeros((n, len(b)))
            else:
                start, stop = self._head_rows[head]
                scores = sums[:, start:stop]
            out[head] = _softmax((scores + b) / self.temperatures[head])
        return out

    def predict_proba(self, texts) -> dict[str, np.ndarray]:
        return self._proba(self.featurize(texts))

    def predict_explained(
        self, texts, top_k: int = 5, labels: dict[str, Sequence[Any]] | Callable[..., dict[str, Sequence[Any]]] | None = None
    ) -> tuple[dict[str, np.ndarray], list[dict[str, list[tuple[str, float]]]]]:
        """SklearnBackend.predict_explained: probabilities and the top features behind each head's label."""
        X = self.featurize(texts)
        data, indices, indptr, rows = X
        gathered = self._gather(indices)
        proba = self._proba(X, gathered)
        if callable(labels):  # labels decided from these probabilities (the triager's operating point)
            labels = labels(proba)
        n = len(indptr) - 1
        explainable_at = {False: self._explainable[indices], True: self._explainable_words[indices]}
        per_head: dict[str, list[list]] = {}
        for head, p in proba.items():
            if head not in self._weights:
                per_head[head] = [[] for _ in range(n)]
                continue
            if labels and head in labels:
                target = np.array([self.classes_[head].index(_label_key(v)) for v in labels[head]])
            else:
                target = p.argmax(axis=1)
            # The target class's weight relative to the class mean, at each nonzero.
            contrib = data * self._relative[indices, self._head_rows[head][0] + target[rows]]
            cand = np.flatnonzero((contrib > 0) & explainable_at[head in WORDS_ONLY_HEADS])
            if n == 1:  # one message (the API): a stable sort by weight is the same order
                keep = cand[np.argsort(-contrib[cand], kind="stable")[:top_k]]
            else:
                order = cand[_by_row_then_descending(rows[cand], contrib[cand])]
                r_sorted = rows[order]
                starts = np.searchsorted(r_sorted, r_sorted, side="left")
                keep = order[(np.arange(len(order)) - starts) < top_k]
            # [word, weight] lists: the JSON shape the triager hands on (SklearnBackend gives tuples).
            pairs = list(map(list, zip(self._feature_names[indices[keep]].tolist(), np.round(contrib[keep].astype(np.float64), 4).tolist())))
            if n == 1:
                per_head[head] = [pairs]
            else:
                bounds = np.searchsorted(rows[keep], np.arange(n + 1)).tolist()
                per_head[head] = [pairs[start:stop] for start, stop in zip(bounds, bounds[1:])]
        heads = list(per_head)
        explanations = [dict(zip(heads, row)) for row in zip(*per_head.values())]
        return proba, explanations

    def explain(self, text, head, label, top_k: int = 5) -> list[tuple[str, float]]:
        if head not in self.classes_:
            raise ModelError(f"unknown head {head!r}; this model has {', '.join(self.classes_)}")
        if _label_key(label) not in self.classes_[head]:
            raise ModelError(f"{head} has no label {label!r}; labels: {self.classes_[head]}")
        _, explanations = self.predict_explained([text], top_k=top_k, labels={head: [label]})
        return explanations[0][head]

