"""Read the editable word lists in ``datasets/lexicons/`` (policy as data, not code).

Every file is plain UTF-8 text, one entry a line, ``#`` starts a comment. The files say
in their header how to extend them. Results are cached per directory because the
triager reads them on every start and the rules consult them on every message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from triage.errors import PolicyError

DEFAULT_LEXICON_DIR = Path(__file__).resolve().parent.parent / "datasets" / "lexicons"

USER_DICT = "user_dict.txt"
STOPWORDS = "stopwords.txt"
ESCALATION = "escalation.txt"
NEGATIONS = "negations.txt"
SAFETY = "safety.txt"
VULNERABLE = "vulnerable.txt"
COUNTERFEIT = "counterfeit.txt"
UNUSABLE = "unusable.txt"
LOSS = "loss.txt"
ANGER = "anger.txt"


@dataclass(frozen=True)
class Lexicons:
    """All domain word lists of one lexicon directory."""

    directory: Path
    user_dict_path: Path
    stopwords: frozenset[str]
    escalation: dict[str, str]  # term -> category (regulator, media, legal, report, punitive)
    escalation_exclusions: tuple[str, ...]  # longer words containing a term that are not escalation
    negations: tuple[str, ...]
    safety: tuple[str, ...]
    safety_exclusions: tuple[str, ...]
    vulnerable: tuple[str, ...]
    counterfeit: tuple[str, ...] = ()
    counterfeit_exclusions: tuple[str, ...] = ()
    unusable: tuple[str, ...] = ()
    unusable_exclusions: tuple[str, ...] = ()
    loss: tuple[str, ...] = ()
    loss_exclusions: tuple[str, ...] = ()
    anger: tuple[str, ...] = ()
    anger_exclusions: tuple[str, ...] = ()
    domain_words: tuple[str, ...] = field(default=())


def read_entries(path: Path) -> list[str]:
    """Non-empty, non-comment lines of ``path``, stripped."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"lexicon file {path} is missing; restore it from the repository") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"lexicon file {path} is not UTF-8 text ({exc})") from None
    entries = []
    for line in raw.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def _split_exclusions(entries: list[str]) -> tuple[list[str], list[str]]:
    """Entries and the ``-word`` exclusion lines of a lexicon."""
    terms = [e for e in entries if not e.startswith("-")]
    exclusions = [e[1:].strip() for e in entries if e.startswith("-") and e[1:].strip()]
    return terms, exclusions


def _longest_first(terms) -> tuple[str, ...]:
    return tuple(sorted(set(terms), key=lambda t: (-len(t), t)))


@lru_cache(maxsize=8)
def load_lexicons(directory: Path | str | None = None) -> Lexicons:
    """Load (and cache) the lexicons of ``directory`` (default: the shipped ``datasets/lexicons``)."""
    directory = Path(directory) if directory else DEFAULT_LEXICON_DIR
    escalation: dict[str, str] = {}
    entries, exclusions = _split_exclusions(read_entries(directory / ESCALATION))
    for entry in entries:
        term, _, category = entry.partition("\t")
        escalation[term.strip()] = category.strip() or "other"
    safety, safety_exclusions = _split_exclusions(read_entries(directory / SAFETY))
    counterfeit, counterfeit_exclusions = _split_exclusions(read_entries(directory / COUNTERFEIT))
    unusable, unusable_exclusions = _split_exclusions(read_entries(directory / UNUSABLE))
    loss, loss_exclusions = _split_exclusions(read_entries(directory / LOSS))
    # anger.txt came later than the other lists: a lexicon folder copied before it has none.
    anger_path = directory / ANGER
    anger, anger_exclusions = _split_exclusions(read_entries(anger_path)) if anger_path.exists() else ([], [])
    domain_words = tuple(e.split()[0] for e in read_entries(directory / USER_DICT))
    return Lexicons(
        directory=directory,
        user_dict_path=directory / USER_DICT,
        stopwords=frozenset(read_entries(directory / STOPWORDS)),
        escalation=escalation,
        escalation_exclusions=_longest_first(exclusions),
        negations=_longest_first(read_entries(directory / NEGATIONS)),
        safety=_longest_first(safety),
        safety_exclusions=_longest_first(safety_exclusions),
        vulnerable=_longest_first(read_entries(directory / VULNERABLE)),
        counterfeit=_longest_first(counterfeit),
        counterfeit_exclusions=_longest_first(counterfeit_exclusions),
        unusable=_longest_first(unusable),
        unusable_exclusions=_longest_first(unusable_exclusions),
        loss=_longest_first(loss),
        loss_exclusions=_longest_first(loss_exclusions),
        anger=_longest_first(anger),
        anger_exclusions=_longest_first(anger_exclusions),
        domain_words=domain_words,
    )
