"""Benchmark of personal-data masking on our labeled set ``datasets/pii/cases.jsonl``.

Scores the public API, ``triage.text.mask_personal_data`` on normalised text, so any
masking code can be measured the same way (``--baseline-ref REF`` also scores the masking
of an older commit). Per kind:

- recall: share of labeled spans whose every non-space character was replaced by some
  placeholder (a phone masked as <WECHAT> still counts as hidden);
- precision: share of placeholders of that kind that cover part of a labeled span;
- the share of must-stay substrings (product names, order numbers, SKUs, prices) that
  survive untouched, and how many characters outside any labeled span were masked.

Names are also scored with jieba's ``nr`` tags (with no cue, and added to the cues), the
alternative the issue asked to measure. Writes ``bench/results/masking.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "datasets" / "pii" / "cases.jsonl"
# Written by hand after the detectors were first built on CASES, to check they generalise.
HOLDOUT = ROOT / "datasets" / "pii" / "holdout.jsonl"
RESULTS = ROOT / "bench" / "results"
KINDS = ("ADDRESS", "NAME", "PHONE", "ID", "BANKCARD", "EMAIL", "WECHAT", "QQ")
TARGETS = {"ADDRESS": 0.98, "PHONE": 0.98, "ID": 0.98, "BANKCARD": 0.98, "NAME": 0.90}


def load_cases(path: Path = CASES) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def masked_spans(original: str, masked: str) -> list[tuple[int, int, str]]:
    """Spans of ``original`` that became placeholders in ``masked`` (by alignment)."""
    import re

    kinds: list[str] = []

    def token(m: re.Match) -> str:
        kinds.append(m.group(1))
        return chr(0xE000 + len(kinds) - 1)  # one private-use character per placeholder

    compact = re.sub(r"<([A-Z]+)>", token, masked)
    spans = []
    matcher = difflib.SequenceMatcher(None, original, compact, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        marks = [c for c in compact[j1:j2] if ord(c) >= 0xE000 and ord(c) - 0xE000 < len(kinds)]
        if marks:
            spans.append((i1, i2, kinds[ord(marks[0]) - 0xE000]))
    return spans


def gold_spans(text: str, pii: list[dict]) -> list[tuple[int, int, str]]:
    out, pos = [], 0
    for item in pii:
        at = text.find(item["text"], pos)
        if at < 0:
            at = text.find(item["text"])
        if at < 0:
            raise ValueError(f"labeled span {item['text']!r} not in {text!r}")
        out.append((at, at + len(item["text"]), item["type"]))
        pos = at + len(item["text"])
    return out


def score(cases: list[dict], mask_fn, normalise_fn) -> dict:
    """Recall/precision per kind, must-stay survival and over-masked characters."""
    gold_n, hit_n, pred_n, good_n = Counter(), Counter(), Counter(), Counter()
    keep_total = keep_ok = outside_chars = 0
    misses: list[str] = []
    false_pos: list[str] = []
    for case in cases:
        text = normalise_fn(case["text"])
        gold = gold_spans(text, [{"type": p["type"], "text": normalise_fn(p["text"])} for p in case["pii"]])
        pred = masked_spans(text, mask_fn(text))
        covered = set()
        for s, e, _ in pred:
            covered.update(range(s, e))
        gold_chars = set()
        for s, e, kind in gold:
            gold_chars.update(range(s, e))
            gold_n[kind] += 1
            if all(i in covered for i in range(s, e) if not text[i].isspace()):
                hit_n[kind] += 1
            else:
                misses.append(f"{kind}: {text[s:e]!r} in {text!r}")
        for s, e, kind in pred:
            pred_n[kind] += 1
            if any(i in gold_chars for i in range(s, e)):
                good_n[kind] += 1
            else:
                false_pos.append(f"{kind}: {text[s:e]!r} in {text!r}")
        outside_chars += sum(1 for i in covered if i not in gold_chars and not text[i].isspace())
        masked_text = mask_fn(text)
        for k in case["keep"]:
            keep_total += 1
            keep_ok += normalise_fn(k) in masked_text
    per_kind = {
        k: {
            "labeled": gold_n[k],
            "recall": hit_n[k] / gold_n[k] if gold_n[k] else None,
            "masked": pred_n[k],
            "precision": good_n[k] / pred_n[k] if pred_n[k] else None,
        }
        for k in KINDS
    }
    return {
        "per_kind": per_kind,
        "keep_total": keep_total,
        "keep_ok": keep_ok,
        "outside_chars": outside_chars,
        "misses": misses,
        "false_positives": false_pos,
    }


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def baseline_masker(ref: str):
    """``mask_personal_data`` of an older commit, run in a subprocess on all texts at once."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_masking_"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "wt"), ref], check=True, capture_output=True)
    try:
        texts = [c["text"] for c in load_cases()]
        code = (
            "import json,sys\nfrom triage.text import mask_personal_data, normalise\n"
            "texts=json.load(sys.stdin)\nout={normalise(t): mask_personal_data(normalise(t)).text for t in texts}\n"
            "json.dump(out, sys.stdout, ensure_ascii=False)"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True,
            cwd=tmp / "wt", env={"PYTHONPATH": str(tmp / "wt"), "PATH": "/usr/bin:/bin"},
        )
        table = json.loads(res.stdout)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "wt")], capture_output=True)
    return lambda text: table[text]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="also score the masking of this git commit")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from triage.pii import find_personal_data, mask_spans
    from triage.text import mask_personal_data, normalise

    cases = load_cases()
    mask_personal_data("收件人王小明先生")  # loads jieba's tagger (about a second) before timing
    start = time.perf_counter()
    current = score(cases, lambda t: mask_personal_data(t).text, normalise)
    elapsed = time.perf_counter() - start
    variants = {"this version (name cues)": current}
    for label, names in (("names: jieba nr only", "jieba"), ("names: cues + jieba nr", "both")):
        variants[label] = score(cases, lambda t, n=names: mask_spans(t, find_personal_data(t, names=n)).text, normalise)
    if args.baseline_ref:
        variants[f"before ({args.baseline_ref})"] = score(cases, baseline_masker(args.baseline_ref), normalise)
    holdout_cases = load_cases(HOLDOUT)
    holdout = score(holdout_cases, lambda t: mask_personal_data(t).text, normalise)

    n_labeled = sum(len(c["pii"]) for c in cases)
    lines = [
        f"Personal-data masking on `datasets/pii/cases.jsonl`: {len(cases)} messages written by us "
        f"(`bench/make_pii_cases.py`: templates over component lists plus hand-written cases), "
        f"{n_labeled} labeled spans, {sum(len(c['keep']) for c in cases)} must-stay substrings. "
        f"Recall: labeled spans fully masked; precision: placeholders that cover a labeled span. "
        f"{len(cases) / elapsed:.0f} messages/s on one core.",
        "",
        "| kind | labeled | " + " | ".join(f"recall: {v}" for v in variants) + " | "
        + " | ".join(f"precision: {v}" for v in variants) + " | target recall |",
        "|---|---:|" + "---:|" * (2 * len(variants)) + "---:|",
    ]
    for k in KINDS:
        row = [k, str(current["per_kind"][k]["labeled"])]
        row += [_fmt(v["per_kind"][k]["recall"]) for v in variants.values()]
        row += [_fmt(v["per_kind"][k]["precision"]) for v in variants.values()]
        row.append(f">= {TARGETS[k]:.2f}" if k in TARGETS else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        "| must-stay kept | " + str(current["keep_total"]) + " | "
        + " | ".join(f"{v['keep_ok'] / v['keep_total']:.3f}" for v in variants.values())
        + " | " + " | ".join("" for _ in variants) + " | 1.00 |"
    )
    lines.append(
        "| characters masked outside labels | - | " + " | ".join(str(v["outside_chars"]) for v in variants.values())
        + " | " + " | ".join("" for _ in variants) + " | - |"
    )
    lines += [
        "",
        f"Hand-written second set `datasets/pii/holdout.jsonl` ({len(holdout_cases)} messages, "
        f"{sum(len(c['pii']) for c in holdout_cases)} labeled spans), this version:",
        "",
        "| kind | labeled | recall | precision |",
        "|---|---:|---:|---:|",
    ]
    for k in KINDS:
        v = holdout["per_kind"][k]
        lines.append(f"| {k} | {v['labeled']} | {_fmt(v['recall'])} | {_fmt(v['precision'])} |")
    lines.append(f"| must-stay kept | {holdout['keep_total']} | {holdout['keep_ok'] / holdout['keep_total']:.3f} | |")
    met = all(
        (current["per_kind"][k]["recall"] or 0) >= t for k, t in TARGETS.items()
    ) and current["keep_ok"] == current["keep_total"] and holdout["keep_ok"] == holdout["keep_total"]
    lines += ["", f"Targets (recall, must-stay kept): {'met' if met else '**NOT met**'}."]
    misses = current["misses"] + holdout["misses"]
    false_pos = current["false_positives"] + holdout["false_positives"]
    if misses:
        lines += ["", "Missed by this version:", ""] + [f"- {m}" for m in misses[:15]]
    if false_pos:
        lines += ["", "Masked without a label in this version:", ""] + [f"- {m}" for m in false_pos[:15]]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "masking.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (RESULTS / "masking.json").write_text(
        json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ("misses", "false_positives")} for k, v in variants.items()}, indent=1),
        encoding="utf-8",
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
