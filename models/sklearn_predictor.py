"""The prediction half of the scikit-learn backend in numpy alone (issue 14).

:class:`models.sklearn_backend.SklearnBackend` is the reference: it trains, saves and
predicts through scikit-learn's vectorizers and scipy's sparse matrices. Importing those
takes seconds, which is most of a ``triage predict`` run, and their per-n-gram Python
loops are most of the rest. :class:`SklearnPredictor` reads the same saved files and
computes the same feature matrix (word and character TF-IDF, intensity cues, the corpus
sentiment signal), probabilities and explanations with whole-batch numpy operations:
character n-grams are looked up as packed code points in sorted arrays, word n-grams and
their sentiment hash through one cached dictionary.

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
KNOWN_PARAMS = {"word_ngram", "char_ngram", "word_min_df", "char_min_df", "char_max_features", "C",
                "calibration_folds", "sentiment_scale"}
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
        self.n_words = len(terms)
        self.word_idf = np.asarray(idf, dtype=np.float64)
        self._token_ids: dict[str, int] | None = None
        if tuple(self.params["word_ngram"]) == (1, 2) and self.sentiment is None:
            self._index_word_pairs(terms)
        if self._token_ids is None:  # the n-gram strings path
            self._grams = _GramCodes({t: i for i, t in enumerate(terms)}, hashed=self.sentiment is not None)

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
        order = np.argsort(codes, kind="stable")
        self._pair_codes = codes[order]
        self._pair_cols = bigram[order]
        self._token_ids = ids

    def _index_chars(self, terms: list[str], idf: np.ndarray) -> None:
        """Per n-gram length, the packed code points of the vocabulary's terms, sorted, and their columns."""
        self.n_chars = len(terms)
        self.char_idf = np.asarray(idf, dtype=np.float64)
        self._char_tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        lengths = np.array([len(t) for t in terms], dtype=np.int64)
        lo, hi = self.params["char_ngram"]
        for n in range(lo, hi + 1):
            cols = np.flatnonzero(lengths == n)
            if not len(cols):
                continue
            text = "".join(terms[i] for i in cols)
            codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
            packed = _pack(codes, np.arange(0, len(codes), n), n)
            order = np.argsort(packed, kind="stable")
            self._char_tables[n] = (packed[order], cols[order])
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
        self._stacked_weights = np.vstack([self.heads[h][0] for h in live]) if live else np.zeros((0, self.width), np.float32)
        bounds = np.cumsum([0] + [self.heads[h][0].shape[0] for h in live]).tolist()
        self._head_rows = {h: (bounds[i], bounds[i + 1]) for i, h in enumerate(live)}
        self._relative = np.vstack(
            [(self.heads[h][0] - self.heads[h][0].mean(axis=0, keepdims=True)).astype(np.float32) for h in live]
        ) if live else self._stacked_weights

    # ------------------------------------------------------------------ features

    def featurize(self, texts: Sequence[str | PreparedText]):
        """The backend's feature matrix as CSR arrays: (data, indices, indptr, row of each value)."""
        prepared = [t if isinstance(t, PreparedText) else prepare(t) for t in texts]
        n = len(prepared)
        words, hashed = self._word_block(prepared)
        blocks = [words, self._char_block(prepared), self._intensity_block(prepared)]
        if self.sentiment is not None:
            blocks.append(self._sentiment_block(hashed, n))
        rows = np.concatenate([b[0] for b in blocks])
        order = np.argsort(rows, kind="stable")  # row-major; within a row the blocks (and columns) stay in order
        rows = rows[order]
        indices = np.concatenate([b[1] for b in blocks])[order]
        data = np.concatenate([b[2] for b in blocks]).astype(np.float32)[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return data, indices, indptr, rows

    def _word_block(self, prepared: list[PreparedText]):
        """Word n-gram TF-IDF, and the (row, hash column) pairs of the sentiment signal's n-grams."""
        lo, hi = self.params["word_ngram"]
        n = len(prepared)
        # The vectorizers' tokens of " ".join(p.tokens): feature tokens never hold whitespace.
        token_lists = [p.tokens for p in prepared]
        docs = np.arange(n)
        if self._token_ids is not None:  # the default (1, 2) without the sentiment hash: by numbers
            return self._word_pairs_block(token_lists, n), None
        if (lo, hi) == (1, 2):  # the default, in two flat passes over the batch
            grams = [t for tokens in token_lists for t in tokens]
            grams += [a + " " + b for tokens in token_lists for a, b in zip(tokens, tokens[1:])]
            lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
            rows = np.concatenate([np.repeat(docs, lengths), np.repeat(docs, np.maximum(lengths - 1, 0))])
        else:
            per_doc = [_word_grams(tokens, lo, hi) for tokens in token_lists]
            grams = [g for doc_grams in per_doc for g in doc_grams]
            rows = np.repeat(docs, [len(doc_grams) for doc_grams in per_doc])
        hashed = None
        if self.sentiment is None:  # no hash to cache: one look-up in the vocabulary (-1: not in it)
            cols = np.fromiter(map(self._grams.vocabulary.get, grams, repeat(-1)), dtype=np.int64, count=len(grams))
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
        return _tfidf(rows[known], cols[known], n, self.n_words, self.word_idf), hashed

    def _word_pairs_block(self, token_lists: list[list[str]], n: int):
        """Word uni- and bigram TF-IDF through token ids (see :meth:`_index_word_pairs`)."""
        flat = [t for tokens in token_lists for t in tokens]
        unknown = self._n_ids
        ids = np.fromiter(map(self._token_ids.get, flat, repeat(unknown)), dtype=np.int64, count=len(flat))
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
        doc_of = np.repeat(np.arange(n), lengths)
        cols = self._unigram_cols[ids]
        known = cols >= 0
        rows, cols = doc_of[known], cols[known]
        if len(ids) > 1 and len(self._pair_codes):
            first, second = ids[:-1], ids[1:]
            pair = (doc_of[:-1] == doc_of[1:]) & (first != unknown) & (second != unknown)
            codes = first[pair] * self._n_ids + second[pair]
            at = np.searchsorted(self._pair_codes, codes)
            at[at == len(self._pair_codes)] = 0
            hit = self._pair_codes[at] == codes
            rows = np.concatenate([rows, doc_of[:-1][pair][hit]])
            cols = np.concatenate([cols, self._pair_cols[at[hit]]])
        return _tfidf(rows, cols, n, self.n_words, self.word_idf)

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
        for gram_len, (table, table_cols) in self._char_tables.items():
            if gram_len == 1:  # one code point: a direct look-up table
                dense = self._unigram_columns
                cols = dense[np.minimum(codes, len(dense) - 1)]
                hit = cols >= 0
                all_rows.append(doc_of[hit])
                all_cols.append(cols[hit])
                continue
            starts = positions[positions + gram_len <= ends]
            if not len(starts):
                continue
            packed = _pack(codes, starts, gram_len)
            at = np.searchsorted(table, packed)
            at[at == len(table)] = 0
            hit = table[at] == packed
            all_rows.append(doc_of[starts[hit]])
            all_cols.append(table_cols[at[hit]])
        rows = np.concatenate(all_rows) if all_rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(all_cols) if all_cols else np.zeros(0, dtype=np.int64)
        r, c, data = _tfidf(rows, cols, n, self.n_chars, self.char_idf)
        return r, c + self.n_words, data

    def _intensity_block(self, prepared: list[PreparedText]):
        dense = np.array([p.intensity for p in prepared], dtype=np.float32).reshape(-1, len(INTENSITY_NAMES)) * INTENSITY_SCALE
        r, c = np.nonzero(dense)
        return r, c + self.n_words + self.n_chars, dense[r, c]

    def _sentiment_block(self, hashed: tuple[np.ndarray, np.ndarray], n: int):
        """P(negative review) from the hashed word n-grams, and its four bins (SentimentModel.features)."""
        W, b = self.sentiment
        rows, idx = hashed
        keys, counts = np.unique(rows * SENTIMENT_FEATURES + idx, return_counts=True)
        r, c = keys // SENTIMENT_FEATURES, keys % SENTIMENT_FEATURES
        data = counts.astype(np.float32)
        _l2_normalise(data, r, n)
        z = (np.bincount(r, weights=(data * W[c]).astype(np.float64), minlength=n) + b).astype(np.float32)
        p_neg = 1.0 / (1.0 + np.exp(-z))
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
        """Every live head's weight rows at the matrix's columns, (all classes, nonzeros): one gather."""
        return self._stacked_weights[:, indices]

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
            products = (gathered * data).astype(np.float64)
            sums = np.zeros((products.shape[0], n))
            sums[:, nonempty] = np.add.reduceat(products, indptr[:-1][nonempty], axis=1)
        for head, model in self.heads.items():
            if model is None:
                out[head] = np.ones((n, 1))
                continue
            b = model[1]
            if sums is None:
                scores = np.zeros((n, len(b)))
            else:
                start, stop = self._head_rows[head]
                scores = sums[start:stop].T
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
            contrib = data * self._relative[self._head_rows[head][0] + target[rows], indices]
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

