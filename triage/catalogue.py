"""The product catalogue (a CSV the user edits: sku, name, aliases, category) and finding a
message's product and production batch in its text.

Early warning counts complaints per product, so a message that names no product in its
``product`` field is matched here: the longest catalogue term (SKU, name or alias) found in
the normalised text wins. Batches follow the patterns the plans' forms use
(批次/批号/生产日期/lot).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from triage.errors import PolicyError
from triage.text import normalise

CATALOGUE_COLUMNS = ("sku", "name", "aliases", "category")

# 批次: B2305, 批号 L-0412, 生产日期 2026-04-03 / 2026.4.3 / 20260403, lot 7734A
_BATCH = re.compile(
    r"(?:批次号?|批号|生产批次|生产日期|lot(?:\s*(?:no\.?|number|#))?)\s*(?:是|为)?\s*[:：#]?\s*"
    r"([A-Za-z0-9][A-Za-z0-9\-_/.]{1,39})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    aliases: tuple[str, ...]
    category: str


class Catalogue:
    """Products by SKU and the terms that name them in a text."""

    def __init__(self, products: list[Product], source: str = "<memory>"):
        self.source = source
        self.products = {p.sku: p for p in products}
        terms: dict[str, str] = {}
        for p in products:
            for term in (p.sku, p.name, *p.aliases):
                key = normalise(term).lower()
                if key:
                    terms.setdefault(key, p.sku)
        self._terms = sorted(terms.items(), key=lambda kv: -len(kv[0]))  # longest first

    @classmethod
    def load(cls, path: Path | str) -> "Catalogue":
        """Read the CSV; a missing file is an empty catalogue, a malformed one an error naming the line."""
        path = Path(path)
        if not path.exists():
            return cls([], str(path))
        products = []
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CATALOGUE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PolicyError(f"catalogue {path} lacks the columns {missing}; expected {list(CATALOGUE_COLUMNS)}")
            seen = set()
            for line, row in enumerate(reader, start=2):
                sku = (row["sku"] or "").strip()
                if not sku or not (row["name"] or "").strip():
                    raise PolicyError(f"catalogue {path} line {line}: sku and name are required")
                if sku in seen:
                    raise PolicyError(f"catalogue {path} line {line}: sku {sku!r} appears twice")
                seen.add(sku)
                aliases = tuple(a.strip() for a in (row["aliases"] or "").split("|") if a.strip())
                products.append(Product(sku, row["name"].strip(), aliases, (row["category"] or "").strip()))
        return cls(products, str(path))

    def resolve(self, given: str) -> str:
        """The SKU a ``product`` field names (a SKU, name or alias), else the value as given."""
        key = normalise(given).lower()
        for term, sku in self._terms:
            if term == key:
                return sku
        return given.strip()

    def find(self, text: str) -> Product | None:
        """The product the text names (longest matching term), or None."""
        haystack = normalise(text).lower()
        for term, sku in self._terms:
            if term in haystack:
                return self.products[sku]
        return None


def find_batch(text: str) -> str | None:
    """The production batch or lot a text mentions (批次/批号/生产日期/lot), or None."""
    match = _BATCH.search(normalise(text))
    return match.group(1).rstrip("./-_") if match else None
