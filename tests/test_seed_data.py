"""The seed dataset's contract (issue: seed dataset): labels valid, minimum counts met,
no near-duplicate texts, nothing copied from the shared real data."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import skip_unless_ci
from triage.taxonomy import HEAD_LABELS

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "datasets" / "seed"
SHARED_DEV = ROOT.parent / "shared" / "data" / "dev_labeled.jsonl"
FIELDS = {"id", "text", "source", "dispute_type", "urgency", "emotion", "escalation"}

MINIMUMS = {
    ("total", None): 1500,
    ("dispute_type", "quality"): 150,
    ("dispute_type", "service"): 150,
    ("dispute_type", "advertising"): 150,
    ("dispute_type", "other"): 150,
    ("dispute_type", "refund"): 100,
    ("urgency", 1): 150,
    ("emotion", "angry"): 200,
    ("escalation", True): 100,
}


def trigrams(text: str) -> frozenset[str]:
    t = "".join(text.split())
    return frozenset(t[i : i + 3] for i in range(max(len(t) - 2, 1)))


def near_duplicates(texts: list[str], threshold: float = 0.7) -> list[tuple[int, int, float]]:
    """Pairs with character-trigram Jaccard above ``threshold``, found through an inverted
    index so only pairs sharing a trigram are compared."""
    grams = [trigrams(t) for t in texts]
    postings: dict[str, list[int]] = defaultdict(list)
    pairs = []
    for i, g in enumerate(grams):
        shared: Counter[int] = Counter()
        for gram in g:
            for j in postings[gram]:
                shared[j] += 1
            postings[gram].append(i)
        for j, inter in shared.items():
            jac = inter / (len(g) + len(grams[j]) - inter)
            if jac > threshold:
                pairs.append((j, i, jac))
    return pairs


def load_seed() -> list[dict]:
    rows = []
    for path in sorted(SEED_DIR.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                row["_where"] = f"{path.name}:{n}"
                rows.append(row)
    return rows


@pytest.fixture(scope="module")
def seed() -> list[dict]:
    rows = load_seed()
    assert rows, f"no seed data under {SEED_DIR}"
    return rows


def test_near_duplicate_detector_flags_copies_and_passes_rewrites():
    texts = [
        "摄像头用了三天就对不上焦，直播画面一直糊",
        "摄像头用了三天就对不上焦，直播画面一直糊！",
        "快递说48小时到，结果第五天才送来，发布会直播都错过了",
    ]
    found = {(i, j) for i, j, _ in near_duplicates(texts)}
    assert found == {(0, 1)}


def test_every_row_has_the_fields_and_valid_labels(seed):
    ids = Counter(r["id"] for r in seed)
    assert [i for i, c in ids.items() if c > 1] == []
    for r in seed:
        assert set(r) - {"_where"} == FIELDS, r["_where"]
        assert isinstance(r["text"], str) and r["text"].strip(), r["_where"]
        assert 5 <= len(r["text"]) <= 1200, (r["_where"], len(r["text"]))
        assert r["source"].startswith("seed/"), r["_where"]
        for head, labels in HEAD_LABELS.items():
            assert r[head] in labels and type(r[head]) is type(labels[0]), (r["_where"], head, r[head])


def test_label_rules_of_the_guideline_hold(seed):
    for r in seed:
        if r["dispute_type"] == "other":
            assert r["urgency"] == 3, f"{r['_where']}: every `other` message is urgency 3"
        if r["escalation"]:
            assert r["urgency"] == 1, f"{r['_where']}: an escalation threat is urgency 1"


def test_minimum_counts(seed):
    counts = Counter()
    counts[("total", None)] = len(seed)
    for r in seed:
        for head in HEAD_LABELS:
            counts[(head, r[head])] += 1
    short = {k: (counts[k], v) for k, v in MINIMUMS.items() if counts[k] < v}
    assert short == {}, f"below minimum (have, need): {short}"


def test_no_near_duplicate_texts(seed):
    texts = [r["text"] for r in seed]
    pairs = near_duplicates(texts)
    shown = [(seed[i]["_where"], seed[j]["_where"], round(s, 2)) for i, j, s in pairs[:20]]
    assert pairs == [], f"{len(pairs)} near-duplicate pairs, e.g. {shown}"


def test_no_text_copied_from_the_shared_real_complaints(seed):
    if not SHARED_DEV.exists():
        skip_unless_ci("../shared/data is not beside the repository")
    real = [json.loads(line)["text"].strip() for line in SHARED_DEV.open(encoding="utf-8")]
    probes = {t[:20] for t in real if len(t) >= 20}
    seed_texts = [r["text"] for r in seed]
    copied = [p for p in probes if any(p in s for s in seed_texts)]
    assert copied == []
    # near-copies too: a seed text that is a light paraphrase of a real one
    pairs = near_duplicates(real + seed_texts, threshold=0.6)
    crossing = [(i, j) for i, j, _ in pairs if i < len(real) <= j]
    assert crossing == [], [seed[j - len(real)]["_where"] for _, j in crossing[:10]]


def render_counts_table(rows: list[dict]) -> str:
    """The label-count table of datasets/README.md, per head and per source."""
    sources = sorted({r["source"] for r in rows})
    columns = [(h, label) for h, labels in HEAD_LABELS.items() for label in labels]
    head = "| source | n | " + " | ".join(f"{h[:4]}={str(v).lower()}" for h, v in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for src in [*sources, "all"]:
        sel = [r for r in rows if src in ("all", r["source"])]
        cells = [str(sum(1 for r in sel if r[h] == v)) for h, v in columns]
        lines.append(f"| {src} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_datasheet_counts_match_the_data(seed):
    sheet = (ROOT / "datasets" / "README.md").read_text(encoding="utf-8")
    table = render_counts_table(seed)
    assert table in sheet, "datasets/README.md counts are stale; the current table is:\n" + table
