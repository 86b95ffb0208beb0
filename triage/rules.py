"""Domain rules on top of the classifiers: escalation threats, safety hazards, counterfeit
goods, completely unusable products, direct economic loss (the guideline's 一级 cases), vulnerable
customers, and the guideline's anger words (insults, 再也不买, 千万别买: emotion angry).

The lexicons live in ``datasets/lexicons/`` so after-sales staff can extend them. Rules
only ever raise urgency (1 is the top grade) and emotion (to angry), never lower them, and
every rule that fired is reported with the words that matched and what it changed.

Escalation matching is careful about the cases a bare substring search gets wrong:
negation in the same clause (算了不打12315, 不想曝光), questions (是否支持假一赔十？),
digit terms inside longer numbers or naming one (an order number containing 12315, 尾号12315),
longer words that merely contain a term (多媒体, 自动曝光), and mentions that are not the
speaker's threat: taken back (想打12315的，想想算了), someone else's (朋友叫我去消协), the news
(看到新闻说…被市场监管局查处) or a profession (我朋友是律师). A clause that states the
speaker's own intent (我要, 已经, 打了) still counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from triage.lexicons import Lexicons, load_lexicons
from triage.prediction import RuleHit

_CLAUSE_BOUNDARY = re.compile(r"[,.!?;。，！？；\n]")
# Words allowed between a negation cue and the term it negates: 不(去)(打)12315, 没必要(找)律师.
_NEGATION_GAP = re.compile(
    r"^(?:去|打|找|向|到|给|请|上|发|报|用|再|会|想|要|了|的|去找|去打|拨打|联系|投诉|闹到|搞到|闹|搞|走到|打算|想着|懂|什么)*$"
)
_QUESTION_CUES = ("是否", "能否", "可否", "吗", "支不支持", "支持不支持", "有没有", "可不可以", "能不能", "怎么")
_INTENT_CUES = ("我要", "我会", "我就", "就去", "就打", "必须", "一定", "马上", "已经", "直接", "准备", "打算去", "要去", "会去",
                "打了", "报了", "投诉到", "投诉了", "举报了", "告到")
# The speaker's own going, in the clause after the mention (朋友叫我去消协，我明天就去).
_GOING_CUES = ("就去", "就打", "会去", "要去", "已经", "打了", "报了", "投诉到", "告到")
# A digit term right after these is part of an order, parcel or phone number (尾号12315的订单),
# or right before these (12315开头的电话, 315那天下的单).
_NUMBER_CUES_BEFORE = ("尾号", "单号", "订单号", "编号", "号码", "手机号", "尾数", "号是", "订单", "几位")
_NUMBER_CUES_AFTER = ("开头", "后面", "的那单", "的那个订单", "的订单", "那单", "那天", "的包裹")
# The speaker takes the threat back, later in the clause or in the next one (想打12315的，想想算了;
# 律师函警告什么的太夸张了; 上次说要打12315是气话) ...
_RETRACTION_CUES = ("算了", "没必要", "劝住", "气话", "别当真", "撤回", "撤诉", "和解", "不去了", "不打了",
                    "不想那样", "太麻烦", "太夸张", "开玩笑", "玩梗")
# ... or only thought of it (本来想打12315) ...
_HYPOTHETICAL_CUES = ("本来", "原本", "差点", "本想", "以为能")
# ... or it is someone else's idea, words or deed (朋友叫我去消协, 客服说可以去12315, 有网友说要起诉),
# or the news (看到新闻说…被市场监管局查处): unless the speaker then states their own intent.
_THIRD_PARTY_CUES = ("别人", "有人", "网友", "人家", "评论里", "朋友", "我妈", "家人", "同事", "客服说", "主播说",
                     "观众", "新闻", "报道", "听说", "看到", "看了", "网上说", "有的店", "别家", "别的店", "其他店", "其他家")
# 曝光 is also a camera's exposure (曝光我是手动锁的，ISO 400; 相机嘅曝光一直跳): in a sentence about
# the camera it is the setting, unless the clause threatens (我要曝光你们, 不给换就曝光).
_CAMERA_CUES = ("相机", "镜头", "快门", "光圈", "ISO", "iso", "白平衡", "对焦", "测光", "摄像头", "过曝", "欠曝", "逆光")
_EXPOSING_NEXT = ("你们", "你家", "你哋", "他们", "出去", "到网上", "网上", "给媒体", "这家", "这个店", "商家")
_SENTENCE_BOUNDARY = re.compile(r"[.!?;。！？；\n]")
_FIRST_PERSON_INTENT = ("我要", "我也要", "我会", "我就", "我已经", "我决定", "我明天", "我马上")
# A condition the speaker sets in the next clause: 不给解决我就让他报道, 再拖就…, 否则…
_THREAT_NEXT = re.compile(r"(?:再|不|没).{0,8}就|否则|不然")
# A profession or workplace, not a threat: 我是律师, 我朋友是律师, 在市场监管局上班, 做电视台摄像.
_ROLE_TERMS = ("律师", "记者", "电视台", "市场监管局", "市场监督管理局", "工商局")
_ROLE_CUES = ("是", "做", "当", "干", "在")
_NEGATION_WINDOW = 6
# Cues that take an anger word back (不是垃圾, 并不是骗子, 不算坑人). Fewer than the escalation
# negations: 别坑人了 and 不要坑人 are angry, not a retraction. Cantonese: 唔系垃圾, 冇呃人 (唔好呃人 is
# an imperative: 好 is no light verb, so it stays angry).
_ANGER_NEGATIONS = ("并不是", "不是", "并非", "不算", "算不上", "谈不上", "没有", "没", "不", "并唔系", "唔系", "唔算", "冇", "唔")
ANGRY = "angry"
# Laughter marks a joke (气死我了，又被种草了哈哈; 千万别买！除非你想天天追剧哈哈): its anger words do not count.
_JOKE_CUES = ("哈哈", "嘻嘻", "hhh")
FAKE_GOODS_REROUTED = ("quality", "service", "refund")  # guideline: fake goods -> advertising  # characters before a term searched for a negation cue


@dataclass
class TermHit:
    term: str
    start: int
    category: str = ""


@dataclass
class RuleOutcome:
    """Labels after the rules, and which rules fired."""

    urgency: int
    escalation: bool
    vulnerable: bool = False
    hits: list[RuleHit] = field(default_factory=list)
    dispute_type: str | None = None
    emotion: str | None = None


def _clause_bounds(text: str, start: int, end: int) -> tuple[int, int, str]:
    """Start and end of the clause around [start, end), and the mark that closes it."""
    left = 0
    for m in _CLAUSE_BOUNDARY.finditer(text, 0, start):
        left = m.end()
    m = _CLAUSE_BOUNDARY.search(text, end)
    right = m.start() if m else len(text)
    closing = text[right] if m else ""
    return left, right, closing


@lru_cache(maxsize=64)
def _pattern(terms: tuple[str, ...]) -> re.Pattern | None:
    """One alternation of ``terms``, longest first, so a scan finds the leftmost-longest term."""
    if not terms:
        return None
    ordered = sorted(set(terms), key=lambda t: (-len(t), t))
    return re.compile("|".join(re.escape(t) for t in ordered))


_PATTERNS_BY_ID: dict[int, tuple[object, re.Pattern | None]] = {}


def _pattern_of(terms) -> re.Pattern | None:
    """:func:`_pattern` of a lexicon's term collection, found by identity: hashing a tuple of a
    few hundred terms on each of the six scans of every message cost more than the scan."""
    entry = _PATTERNS_BY_ID.get(id(terms))
    if entry is None or entry[0] is not terms:
        if len(_PATTERNS_BY_ID) > 256:  # callers passing fresh collections each time
            _PATTERNS_BY_ID.clear()
        entry = _PATTERNS_BY_ID[id(terms)] = (terms, _pattern(tuple(terms)))  # holds terms: the id stays theirs
    return entry[1]


def _find_terms(text: str, terms, exclusions) -> list[TermHit]:
    """Non-overlapping occurrences of ``terms``, minus those inside an exclusion word."""
    pattern = _pattern_of(terms)
    if pattern is None:
        return []
    hits = []
    excluded_spans = None
    n = len(text)
    for m in pattern.finditer(text):
        term, (start, end) = m.group(), m.span()
        # 12315 inside an order or phone number is no threat.
        if term.isdigit() and ((start > 0 and text[start - 1].isdigit()) or (end < n and text[end].isdigit())):
            continue
        if exclusions:
            if excluded_spans is None:
                ex = _pattern_of(exclusions)
                excluded_spans = [e.span() for e in ex.finditer(text)] if ex else []
            if any(a <= start and end <= b for a, b in excluded_spans):
                continue
        hits.append(TermHit(term, start))
    return hits


def _negated(text: str, hit: TermHit, negations, clause_start: int) -> bool:
    """A negation cue shortly before the term, in the same clause, with only light verbs between."""
    window_start = max(clause_start, hit.start - _NEGATION_WINDOW)
    prefix = text[window_start : hit.start]
    for cue in negations:
        idx = prefix.rfind(cue)
        while idx >= 0:
            gap = prefix[idx + len(cue) :]
            at = window_start + idx
            if _NEGATION_GAP.match(gap) and text[max(0, at - 2) : at] != "不得":  # 不得不 insists
                return True
            idx = prefix.rfind(cue, 0, idx)
    # Retraction anywhere earlier in the clause: 算了，… is a boundary, but 算了不投诉了 is not.
    clause_prefix = text[clause_start : hit.start]
    return "算了" in clause_prefix and any(n in clause_prefix for n in ("不", "没"))


def _is_question(text: str, hit: TermHit, clause_start: int, clause_end: int, closing: str) -> bool:
    """是否支持假一赔十？ asks about a remedy; 再不处理我就打12315? still threatens."""
    clause = text[clause_start:clause_end]
    if any(cue in clause for cue in _INTENT_CUES):
        return False
    return closing == "?" or any(cue in clause for cue in _QUESTION_CUES)


def _in_a_number(text: str, hit: TermHit) -> bool:
    """尾号12315, 单号是12315…, 12315开头的号码: a digit term that names a number, not the hotline."""
    if not hit.term.isdigit():
        return False
    before = text[max(0, hit.start - 8) : hit.start]
    after = text[hit.start + len(hit.term) : hit.start + len(hit.term) + 5]
    return any(cue in before for cue in _NUMBER_CUES_BEFORE) or after.startswith(_NUMBER_CUES_AFTER)


def _not_the_speakers_threat(text: str, hit: TermHit, clause_start: int, clause_end: int) -> bool:
    """The term is mentioned, not threatened: taken back, hypothetical, someone else's, in the
    news, or a profession. The speaker's own intent in this clause or the next (我要, 已经,
    打了, 就去…) still counts."""
    end = hit.start + len(hit.term)
    following = _CLAUSE_BOUNDARY.search(text, clause_end + 1)
    rest = text[end : following.start() if following else len(text)]  # this clause and the next
    prefix = text[clause_start : hit.start]
    goes = any(cue in rest for cue in _GOING_CUES) or _THREAT_NEXT.search(rest) is not None
    third = max((prefix.rfind(cue) for cue in _THIRD_PARTY_CUES), default=-1)
    if third >= 0:  # someone else's: counts only once the speaker states their own intent
        return not (goes or any(cue in prefix[third:] for cue in _FIRST_PERSON_INTENT))
    if goes or any(cue in text[clause_start:clause_end] for cue in _INTENT_CUES):
        return False
    if any(cue in rest for cue in _RETRACTION_CUES) or any(cue in prefix for cue in _HYPOTHETICAL_CUES):
        return True
    if hit.term in _ROLE_TERMS:
        near = text[max(clause_start, hit.start - 8) : hit.start]
        return any(cue in near for cue in _ROLE_CUES) or text[end : end + 2] in ("朋友", "写的", "事务")
    return False


def _camera_exposure(text: str, hit: TermHit, clause_start: int, clause_end: int) -> bool:
    """曝光 as the camera's exposure: a camera word in the sentence, and no threat in the clause."""
    if hit.term != "曝光":
        return False
    clause = text[clause_start:clause_end]
    if any(cue in clause for cue in _INTENT_CUES) or _THREAT_NEXT.search(clause):
        return False
    end = hit.start + len(hit.term)
    if text[end : end + 4].startswith(_EXPOSING_NEXT):
        return False
    starts = [m.end() for m in _SENTENCE_BOUNDARY.finditer(text, 0, hit.start)]
    following = _SENTENCE_BOUNDARY.search(text, end)
    sentence = text[starts[-1] if starts else 0 : following.start() if following else len(text)]
    return any(cue in sentence for cue in _CAMERA_CUES)


def find_escalation(text: str, lexicons: Lexicons | None = None) -> tuple[list[str], list[str]]:
    """Escalation terms that count, and those ignored (negated, asked about, or only
    mentioned), in order."""
    lex = lexicons or load_lexicons()
    counted, ignored = [], []
    for hit in _find_terms(text, lex.escalation, lex.escalation_exclusions):
        if _in_a_number(text, hit):
            continue
        left, right, closing = _clause_bounds(text, hit.start, hit.start + len(hit.term))
        if (
            _negated(text, hit, lex.negations, left)
            or _is_question(text, hit, left, right, closing)
            or _not_the_speakers_threat(text, hit, left, right)
            or _camera_exposure(text, hit, left, right)
        ):
            ignored.append(hit.term)
        else:
            counted.append(hit.term)
    return counted, ignored


def _find_affirmed(text: str, terms, exclusions, negations, unnegatable=None) -> list[str]:
    """Terms not negated in their clause; ``unnegatable(text, hit)`` names hits that count
    whatever cue stands before them."""
    found = []
    for hit in _find_terms(text, terms, exclusions):
        left, _, _ = _clause_bounds(text, hit.start, hit.start + len(hit.term))
        if (unnegatable is not None and unnegatable(text, hit)) or not _negated(text, hit, negations, left):
            found.append(hit.term)
    return found


def find_safety(text: str, lexicons: Lexicons | None = None) -> list[str]:
    """Safety-hazard terms of ``text`` that are not negated (没有漏电 does not count)."""
    lex = lexicons or load_lexicons()
    return _find_affirmed(text, lex.safety, lex.safety_exclusions, lex.negations)


def find_counterfeit(text: str, lexicons: Lexicons | None = None) -> list[str]:
    """Counterfeit suspicions (假货, 不是正品); questions count, negations (不是假货) do not."""
    lex = lexicons or load_lexicons()
    # "不" before 是正品 is part of the term 不是正品, so only cues before the whole term negate.
    return _find_affirmed(text, lex.counterfeit, lex.counterfeit_exclusions, lex.negations)


def find_loss(text: str, lexicons: Lexicons | None = None) -> list[str]:
    """Direct economic loss or missed business (耽误直播, 经济损失) that is not negated."""
    lex = lexicons or load_lexicons()
    return _find_affirmed(text, lex.loss, lex.loss_exclusions, lex.negations)


def find_unusable(text: str, lexicons: Lexicons | None = None) -> list[str]:
    """Completely-unusable terms (开不了机, 充不进电) that are not negated."""
    lex = lexicons or load_lexicons()
    return _find_affirmed(text, lex.unusable, lex.unusable_exclusions, lex.negations)


def find_anger(text: str, lexicons: Lexicons | None = None) -> list[str]:
    """The guideline's anger words in ``text`` that are not negated (不是垃圾 does not count) in a
    message that is not a joke (laughter: 哈哈)."""
    lex = lexicons or load_lexicons()
    if any(cue in text for cue in _JOKE_CUES):
        return []
    return _find_affirmed(text, lex.anger, lex.anger_exclusions, _ANGER_NEGATIONS, _imperative)


def _imperative(text: str, hit: TermHit) -> bool:
    """不要坑人 / 别坑人 tell the seller to stop: an imperative, not a retraction."""
    return text[max(0, hit.start - 2) : hit.start] == "不要" or text[hit.start - 1 : hit.start] == "别"


def find_vulnerable(text: str, lexicons: Lexicons | None = None) -> list[str]:
    lex = lexicons or load_lexicons()
    return [h.term for h in _find_terms(text, lex.vulnerable, ())]


_ANY_TERM_BY_ID: dict[int, tuple[Lexicons, re.Pattern | None]] = {}


def mentions_a_term(text: str, lex: Lexicons) -> bool:
    """Whether any term of any rule lexicon occurs in ``text`` (most messages: none, and then
    no rule but the model's escalation can fire, so the six scans are skipped)."""
    entry = _ANY_TERM_BY_ID.get(id(lex))
    if entry is None or entry[0] is not lex:
        if len(_ANY_TERM_BY_ID) > 64:
            _ANY_TERM_BY_ID.clear()
        terms = (*lex.escalation, *lex.safety, *lex.counterfeit, *lex.unusable, *lex.loss, *lex.vulnerable, *lex.anger)
        entry = _ANY_TERM_BY_ID[id(lex)] = (lex, _trie_pattern(terms))
    return entry[1] is not None and entry[1].search(text) is not None


def _trie_pattern(terms) -> re.Pattern | None:
    """A pattern that finds whether any of ``terms`` occurs, with the terms' common prefixes
    factored (一点|一直 as 一(?:点|直)): Python's regex engine then tries each distinct first
    character once per position instead of every term, 1.5 to 1.8 times faster on real
    messages. It answers "is there one?", not which: finding terms stays with :func:`_pattern`."""
    root: dict = {}
    for term in set(terms):
        if term:
            node = root
            for char in term:
                node = node.setdefault(char, {})
            node[""] = {}  # a term ends here

    def alternatives(node: dict) -> str:
        if "" in node:
            return ""  # a shorter term ends here: any longer one also contains a match
        branches = [re.escape(char) + alternatives(child) for char, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return re.compile(alternatives(root)) if root else None


def _raise_to(urgency: int, target: int) -> int:
    return min(urgency, target)  # 1 is the most urgent grade: raising means a smaller number


def apply_rules(
    text: str,
    urgency: int,
    escalation: bool = False,
    lexicons: Lexicons | None = None,
    lexicon_dir: Path | str | None = None,
    dispute_type: str | None = None,
    emotion: str | None = None,
) -> RuleOutcome:
    """Apply the domain rules to one normalised text and the model's labels.

    ``dispute_type`` (the model's) is changed by one rule only, the guideline's "fake
    goods -> advertising": a counterfeit suspicion routes a quality, service or refund
    complaint to advertising (``other``, not a dispute, stays).

    ``emotion`` (the model's) is raised to angry by an anger word that is not negated.

    ``escalation`` is the model's own escalation decision. A counted lexicon term sets it;
    a term that was only negated or asked about clears it; otherwise the model's decision
    stands. Escalation always means urgency 1.
    """
    lex = lexicons or load_lexicons(lexicon_dir)
    out = RuleOutcome(urgency=urgency, escalation=escalation, dispute_type=dispute_type, emotion=emotion)
    scan = mentions_a_term(text, lex)

    counted, ignored = find_escalation(text, lex) if scan else ([], [])
    if counted:
        before = out.urgency
        out.escalation = True
        out.urgency = _raise_to(out.urgency, 1)
        effect = "escalation=true" + (f", urgency {before} -> 1" if before != 1 else "")
        out.hits.append(RuleHit(rule="escalation_threat", matched=counted, effect=effect))
    elif ignored:
        # The customer mentioned a channel only to rule it out (or asked about it): the model,
        # which sees the word but not the negation, is overruled.
        effect = "escalation=false (negated or a question)" if escalation else "none (negated or a question)"
        out.escalation = False
        out.hits.append(RuleHit(rule="escalation_negated", matched=ignored, effect=effect))
    elif out.escalation:
        before = out.urgency
        out.urgency = _raise_to(out.urgency, 1)
        effect = "escalation=true (model)" + (f", urgency {before} -> 1" if before != 1 else "")
        out.hits.append(RuleHit(rule="escalation_model", matched=[], effect=effect))

    safety = find_safety(text, lex) if scan else []
    if safety:
        before = out.urgency
        out.urgency = _raise_to(out.urgency, 1)
        effect = f"urgency {before} -> 1" if before != 1 else "none (already 1)"
        out.hits.append(RuleHit(rule="safety", matched=safety, effect=effect))

    grade_one = (
        ("counterfeit", find_counterfeit(text, lex) if scan else []),
        ("unusable", find_unusable(text, lex) if scan else []),
        ("business_loss", find_loss(text, lex) if scan else []),
    )
    for rule, terms in grade_one:
        if terms:
            before = out.urgency
            out.urgency = _raise_to(out.urgency, 1)
            effects = [f"urgency {before} -> 1"] if before != 1 else []
            if rule == "counterfeit" and dispute_type in FAKE_GOODS_REROUTED:
                out.dispute_type = "advertising"
                effects.append(f"dispute_type {dispute_type} -> advertising")
            out.hits.append(RuleHit(rule=rule, matched=terms, effect=", ".join(effects) or "none (already 1)"))

    vulnerable = find_vulnerable(text, lex) if scan else []
    if vulnerable:
        out.vulnerable = True
        out.hits.append(RuleHit(rule="vulnerable_customer", matched=vulnerable, effect="vulnerable=true"))

    anger = find_anger(text, lex) if scan else []
    if anger:
        if emotion is None:  # a caller without the model's emotion: report the words only
            effect = "anger words (no emotion given)"
        elif emotion == ANGRY:
            effect = "none (already angry)"
        else:
            effect = f"emotion {emotion} -> {ANGRY}"
            out.emotion = ANGRY
        out.hits.append(RuleHit(rule="anger_words", matched=anger, effect=effect))
    return out
