"""jieba's part-of-speech cut (``jieba.posseg.cut``, HMM on) without loading its whole dictionary.

The masking (:mod:`triage.pii`) asks jieba for the words and tags of a few short windows
around name cues. ``import jieba.posseg`` alone parses all 349k lines of jieba's dictionary
for the tags (0.3 s), and the first cut loads the 500k-entry prefix dictionary (0.5-0.9 s):
a second of every process that meets one name cue. This module gives the same cut from the
same data, fetched per first character:

- a cache beside jieba's own (the temporary folder) holds jieba's prefix dictionary
  (``jieba.Tokenizer.gen_pfdict``) and word tags, grouped by the first two characters of
  each word (one-character words alone); it is built once from ``dict.txt`` and keyed by
  jieba's version and that file's path, size and modification time (a stale, foreign or
  damaged file is rebuilt);
- before a cut, the groups of the characters and character pairs of the text are loaded
  into the tokenizer's dictionaries. Every look-up of a cut (``get_DAG``, ``calc``, the
  tags) is of a piece of the text, whose first two characters are a pair of the text, so
  it finds exactly what the full dictionary holds;
- the cut itself is ``jieba.posseg.POSTokenizer``'s (jieba 0.42, MIT licence), ported line
  for line below because importing ``jieba.posseg`` is what parses the dictionary; its HMM
  tables are loaded from jieba's files without that import.

``tests/test_posseg.py`` checks the pairs against ``jieba.posseg.cut`` and the cache's
invalidation.
"""

from __future__ import annotations

import importlib.util
import marshal
import mmap
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

CACHE_FORMAT = 2

# jieba/posseg/__init__.py
_RE_HAN_DETAIL = re.compile("([\u4E00-\u9FD5]+)")
_RE_SKIP_DETAIL = re.compile(r"([\.0-9]+|[a-zA-Z0-9]+)")
_RE_HAN_INTERNAL = re.compile(r"([\u4E00-\u9FD5a-zA-Z0-9+#&\._]+)")
_RE_SKIP_INTERNAL = re.compile(r"(\r\n|\s)")
_RE_ENG = re.compile("[a-zA-Z0-9]+")
_RE_NUM = re.compile(r"[\.0-9]+")


def jieba_dictionary() -> Path:
    """jieba's default dictionary file (what ``jieba.dt`` and ``jieba.posseg.dt`` read)."""
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.origin:
        raise ImportError("jieba is not installed")
    return Path(spec.origin).parent / "dict.txt"


def _cache_key(dict_path: Path) -> str:
    import jieba

    stat = dict_path.stat()
    return f"{CACHE_FORMAT}|{getattr(jieba, '__version__', '?')}|{dict_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def cache_path(dict_path: Path, cache_dir: Path | None = None) -> Path:
    import hashlib

    digest = hashlib.sha256(_cache_key(dict_path).encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir or tempfile.gettempdir()) / f"triage-jieba-pos-{digest}.bin"


def build_cache(dict_path: Path, target: Path) -> None:
    """Write the grouped dictionary of ``dict_path`` to ``target`` (atomically)."""
    import jieba

    with open(dict_path, "rb") as f:
        freq, total = jieba.Tokenizer.gen_pfdict(f)  # jieba's own prefix dictionary
    tags: dict[str, str] = {}
    with open(dict_path, "rb") as f:  # POSTokenizer.load_word_tag
        for lineno, line in enumerate(f, 1):
            line = line.strip().decode("utf-8")
            if not line:
                continue
            try:
                word, _, tag = line.split(" ")
            except ValueError:
                raise ValueError(f"invalid POS dictionary entry in {dict_path} at Line {lineno}: {line}") from None
            tags[word] = tag
    groups: dict[str, dict[str, tuple[dict[str, int], dict[str, str]]]] = {}
    for word, value in freq.items():
        groups.setdefault(word[0], {}).setdefault(word[1:2], ({}, {}))[0][word] = value
    for word, tag in tags.items():
        groups.setdefault(word[0], {}).setdefault(word[1:2], ({}, {}))[1][word] = tag
    bodies, index, offset = [], {}, 0
    for char, group in groups.items():
        body = marshal.dumps({second: marshal.dumps(pair) for second, pair in group.items()})
        index[char] = (offset, len(body))
        bodies.append(body)
        offset += len(body)
    header = marshal.dumps({"key": _cache_key(dict_path), "total": total, "index": index})
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for body in bodies:
            f.write(body)
    os.replace(tmp, target)


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # uses jieba's compiled __pycache__ files
    return module


def _hmm_tables():
    """jieba.posseg's viterbi and HMM tables, without running jieba/posseg/__init__.py."""
    loaded = sys.modules.get("jieba.posseg")
    if loaded is not None:
        return (sys.modules["jieba.posseg.viterbi"].viterbi, loaded.char_state_tab_P, loaded.start_P, loaded.trans_P, loaded.emit_P)
    folder = jieba_dictionary().parent / "posseg"
    parts = {
        name: _load_module(f"triage._jieba_posseg_{name}", folder / f"{name}.py")
        for name in ("viterbi", "char_state_tab", "prob_start", "prob_trans", "prob_emit")
    }
    return (parts["viterbi"].viterbi, parts["char_state_tab"].P, parts["prob_start"].P, parts["prob_trans"].P,
            parts["prob_emit"].P)


MIN_FLOAT = -3.14e100  # jieba.posseg.viterbi's missing emission


class _ArrayViterbi:
    """jieba.posseg's ``viterbi`` over numpy arrays: the same sums in the same order, and ties
    decided as its ``max`` over ``(probability, state)`` tuples does (the larger state wins),
    so the same route; about ten times faster on the short runs masking tags.

    Per step, jieba takes the states the character can have among those the previous states
    can reach (else all reachable states), and for each the best previous state by
    ``V[prev] + trans[prev][state] + emit[state][char]``; missing transitions are -inf,
    missing emissions -3.14e100.
    """

    CACHE_LIMIT = 50_000  # characters whose emission column is kept

    def __init__(self, states, start_p, trans_p, emit_p):
        import numpy as np

        self.np = np
        self.names = sorted(trans_p)  # index order = tuple order: the larger index wins a tie
        index = {s: i for i, s in enumerate(self.names)}
        n = len(self.names)
        self.trans = np.full((n, n), -np.inf)
        self.reach = np.zeros((n, n), dtype=bool)  # which states each state's table names
        for s0, row in trans_p.items():
            for s1, p in row.items():
                self.trans[index[s0], index[s1]] = p
                self.reach[index[s0], index[s1]] = True
        self.leaves = self.reach.any(axis=1)  # states with any next state
        self.start = np.array([start_p.get(s, np.nan) for s in self.names])
        self.index, self.states, self.emit_p = index, states, emit_p
        self._emit: dict[str, object] = {}
        self._char_states: dict[str, object] = {}
        self.all = np.arange(n)

    def _column(self, char: str):
        col = self._emit.get(char)
        if col is None:
            if len(self._emit) >= self.CACHE_LIMIT:
                self._emit.clear()
                self._char_states.clear()
            col = self._emit[char] = self.np.array([self.emit_p[s].get(char, MIN_FLOAT) for s in self.names])
            own = self.states.get(char)
            self._char_states[char] = None if own is None else self.np.array(sorted(self.index[s] for s in own))
        return col

    def __call__(self, obs: str):
        np = self.np
        n = len(self.names)
        emit = self._column(obs[0])
        first = self._char_states[obs[0]]
        active = self.all if first is None else first
        if np.isnan(self.start[active]).any():
            return None  # a state without a start probability: jieba's own code raises; let it
        V = np.full(n, -np.inf)
        V[active] = self.start[active] + emit[active]
        back = []
        for t in range(1, len(obs)):
            prev = active[self.leaves[active]]
            if not len(prev):
                return None  # jieba's max() of nothing: let its own code decide
            reachable = self.reach[prev].any(axis=0)
            emit = self._column(obs[t])
            own = self._char_states[obs[t]]
            if own is None:
                cand = np.flatnonzero(reachable)
            else:
                cand = own[reachable[own]]
                if not len(cand):
                    cand = np.flatnonzero(reachable)
            if not len(cand):
                cand = self.all
            scores = (V[prev][:, None] + self.trans[np.ix_(prev, cand)]) + emit[cand][None, :]
            last = len(prev) - 1 - np.argmax(scores[::-1], axis=0)  # ties: the larger state
            V = np.full(n, -np.inf)
            V[cand] = scores[last, np.arange(len(cand))]
            back.append(dict(zip(cand.tolist(), prev[last].tolist())))
            active = cand
        final = active[len(active) - 1 - int(np.argmax(V[active][::-1]))]
        prob = float(V[final])
        route = [0] * len(obs)
        state = int(final)
        for i in range(len(obs) - 1, -1, -1):
            route[i] = self.names[state]
            if i:
                state = back[i - 1][state]
        return prob, route


class PosTagger:
    """``jieba.posseg.cut(text, HMM=True)`` as a list of (word, tag), dictionary fetched by character.

    Not thread-safe: callers hold a lock (as :mod:`triage.pii` does).
    """

    def __init__(self, dict_path: Path | None = None, cache_dir: Path | None = None):
        import jieba

        self.dict_path = Path(dict_path) if dict_path is not None else jieba_dictionary()
        self.cache = cache_path(self.dict_path, cache_dir)
        self._open()
        self.tokenizer = jieba.Tokenizer(str(self.dict_path))
        self.tokenizer.FREQ = {}  # filled group by group (see _ensure)
        self.tokenizer.total = self.total
        self.tokenizer.initialized = True
        self.word_tag_tab: dict[str, str] = {}
        self._groups: dict[str, dict[str, bytes]] = {}  # first character -> second (or "") -> its group
        self._viterbi, self._states, self._start, self._trans, self._emit = _hmm_tables()
        self._fast_viterbi = _ArrayViterbi(self._states, self._start, self._trans, self._emit)

    def _open(self) -> None:
        for attempt in range(2):
            try:
                with open(self.cache, "rb") as f:
                    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                size = int.from_bytes(data[:8], "little")
                header = marshal.loads(data[8 : 8 + size])
                if header["key"] != _cache_key(self.dict_path):
                    raise ValueError("cache of another dictionary")
                self._data, self._base = data, 8 + size
                self.total, self._index = int(header["total"]), header["index"]
                return
            except (OSError, ValueError, EOFError, TypeError, KeyError):
                if attempt:
                    raise
                build_cache(self.dict_path, self.cache)

    def _ensure(self, text: str) -> None:
        """Load the dictionary groups of the characters and character pairs of ``text`` not loaded yet."""
        groups = self._groups
        for i, char in enumerate(text):
            group = groups.get(char)
            if group is None:
                where = self._index.get(char)
                if where is None:
                    group = groups[char] = {}
                else:
                    start = self._base + where[0]
                    group = groups[char] = marshal.loads(self._data[start : start + where[1]])
            for second in ("", text[i + 1 : i + 2]):
                body = group.pop(second, None)  # popped: loaded once
                if body is not None:
                    freq, tags = marshal.loads(body)
                    self.tokenizer.FREQ.update(freq)
                    self.word_tag_tab.update(tags)

    def cut(self, sentence: str) -> list[tuple[str, str]]:
        """POSTokenizer.__cut_internal(sentence, HMM=True)."""
        self._ensure(sentence)
        out: list[tuple[str, str]] = []
        for blk in _RE_HAN_INTERNAL.split(sentence):
            if _RE_HAN_INTERNAL.match(blk):
                self._cut_dag(blk, out)
            else:
                for x in _RE_SKIP_INTERNAL.split(blk):
                    if _RE_SKIP_INTERNAL.match(x):
                        out.append((x, "x"))
                    else:
                        for xx in x:
                            if _RE_NUM.match(xx):
                                out.append((xx, "m"))
                            elif _RE_ENG.match(x):  # sic: jieba tests the whole piece
                                out.append((xx, "eng"))
                            else:
                                out.append((xx, "x"))
        return out

    def _cut_hmm(self, sentence: str, out: list) -> None:
        """POSTokenizer.__cut."""
        found = self._fast_viterbi(sentence)
        if found is None:
            found = self._viterbi(sentence, self._states, self._start, self._trans, self._emit)
        _, pos_list = found
        begin, nexti = 0, 0
        for i, char in enumerate(sentence):
            pos = pos_list[i][0]
            if pos == "B":
                begin = i
            elif pos == "E":
                out.append((sentence[begin : i + 1], pos_list[i][1]))
                nexti = i + 1
            elif pos == "S":
                out.append((char, pos_list[i][1]))
                nexti = i + 1
        if nexti < len(sentence):
            out.append((sentence[nexti:], pos_list[nexti][1]))

    def _cut_detail(self, sentence: str, out: list) -> None:
        """POSTokenizer.__cut_detail."""
        for blk in _RE_HAN_DETAIL.split(sentence):
            if _RE_HAN_DETAIL.match(blk):
                self._cut_hmm(blk, out)
            else:
                for x in _RE_SKIP_DETAIL.split(blk):
                    if x:
                        if _RE_NUM.match(x):
                            out.append((x, "m"))
                        elif _RE_ENG.match(x):
                            out.append((x, "eng"))
                        else:
                            out.append((x, "x"))

    def _flush(self, buf: str, out: list) -> None:
        tags = self.word_tag_tab
        if len(buf) == 1:
            out.append((buf, tags.get(buf, "x")))
        elif not self.tokenizer.FREQ.get(buf):
            self._cut_detail(buf, out)
        else:
            for elem in buf:
                out.append((elem, tags.get(elem, "x")))

    def _cut_dag(self, sentence: str, out: list) -> None:
        """POSTokenizer.__cut_DAG."""
        dag = self.tokenizer.get_DAG(sentence)
        route: dict = {}
        self.tokenizer.calc(sentence, dag, route)
        x, buf, n = 0, "", len(sentence)
        while x < n:
            y = route[x][1] + 1
            l_word = sentence[x:y]
            if y - x == 1:
                buf += l_word
            else:
                if buf:
                    self._flush(buf, out)
                    buf = ""
                out.append((l_word, self.word_tag_tab.get(l_word, "x")))
            x = y
        if buf:
            self._flush(buf, out)


_TAGGER: PosTagger | None = None
_TAGGER_LOCK = threading.Lock()


def tagger() -> PosTagger:
    """The process's tagger over jieba's default dictionary, built on first use."""
    global _TAGGER
    if _TAGGER is None:
        with _TAGGER_LOCK:
            if _TAGGER is None:
                _TAGGER = PosTagger()
    return _TAGGER
