"""Personal data in Chinese complaint text: find it as typed spans, replace it by placeholders.

Everything runs on normalised text (half-width digits and punctuation, simplified
characters). Each kind has its own detector; overlapping finds are resolved in favour of
the longer span, so an address keeps its house number and a phone inside a WeChat cue stays
a phone. Measured on the labeled set ``datasets/pii/cases.jsonl`` by
``bench/bench_masking.py`` (recall and precision per kind in the README).

- Numbers (phones, IDs, cards, QQ) are masked only where their form or checksum says so
  (ID check digit, Luhn for cards, a cue word for QQ and WeChat ids), and never right after
  an order word (订单号, 单号, 快递, 序列号...): order numbers, SKUs and prices stay.
- Addresses are chains of parts (province/city/district, road with section and number,
  residential compound, village and group, building, unit, floor, room); a chain is masked
  when it reaches street level (a road, compound or village with a number or building part,
  or an administrative prefix before one). A city or district alone is not personal.
- Names are masked where a cue says a name follows or precedes (我叫, 我姓, 收件人, 联系人,
  姓名, 本人; 先生, 女士, 师傅...), from a list of common and compound surnames; jieba's
  part-of-speech tags decide the length of the given name. Bare jieba ``nr`` tags without a
  cue were measured and mask product and common words (麦克风, 荣耀, 张力): not used.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

PLACEHOLDERS = ("<PHONE>", "<ID>", "<BANKCARD>", "<EMAIL>", "<ADDRESS>", "<NAME>", "<WECHAT>", "<QQ>")
KINDS = tuple(p.strip("<>") for p in PLACEHOLDERS)


@dataclass(frozen=True, order=True)
class Span:
    """Characters ``[start, end)`` of the text hold personal data of ``kind``."""

    start: int
    end: int
    kind: str


@dataclass
class MaskedText:
    """Text with personal data replaced by typed placeholders, and how many of each."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)  # placeholder type -> number replaced

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# ------------------------------------------------------------------ checksums

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


# ------------------------------------------------------------------ numbers and ids

_ORDER_CONTEXT = re.compile(
    r"(?:订单|单号|运单|快递|物流|编号|流水号|工单|sn|SN|序列号|型号|SKU|sku|No\.?|NO\.?)[号码编是为:# ]{0,4}$"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_ID_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])(\d{6} ?\d{8} ?\d{3}[\dXx])(?![0-9A-Za-z])")
# 13-19 digits, optionally in groups of 4 separated by one space or hyphen.
_CARD_CANDIDATE = re.compile(r"(?<![\d\-])(\d{4}(?:[ \-]?\d{4}){2,3}(?:[ \-]?\d{1,3})?|\d{13,19})(?![\d\-])")
_ID_CUE = re.compile(r"(?:身份证|证件|身份号码|身份证号码?)[号码是为:： ]{0,4}$")
_CARD_CUE = re.compile(r"(?:卡号|银行卡|储蓄卡|借记卡|信用卡|银行账号|账号|卡)[号码是为: ]{0,4}$")
_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[ \-]?)?(1[3-9]\d(?:[ \-]?\d{4}){2})(?!\d)")
_LANDLINE = re.compile(
    r"(?<![\d\-])(?:\(0\d{2,3}\) ?|0\d{2,3}[\- ])(?:\d{7,8}|\d{3,4}[ \-]\d{4})(?:-\d{1,5})?(?![\d\-])"
    r"|(?<=电话|座机|固话|手机|号码|方式)[:： ]{0,2}0\d{9,11}(?!\d)"
)
_QQ = re.compile(r"(?:QQ|qq|Qq|扣扣|企鹅|Q号)(?:号码|号)?(?:也是|是|为)?[:：\s]{0,2}([1-9]\d{4,11})(?!\d)")
_WECHAT = re.compile(
    r"(?:微信号|微信|威信|薇信|v信|V信|vx|VX|Vx|wx|WX|Wx|wechat|WeChat)(?:号码|号|id|ID)?(?:也是|是|为)?[:：\s]{0,2}"
    r"([A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_\-])"
)


_DIGIT = re.compile(r"\d")


def _after(pattern: re.Pattern, text: str, start: int, window: int = 10) -> bool:
    return bool(pattern.search(text[max(0, start - window) : start]))


def _number_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    if "@" in text:
        spans += [Span(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text)]
    if not _DIGIT.search(text):  # every pattern below needs a \d (str.isdigit's extra digits never match)
        return spans + [Span(m.start(1), m.end(1), "WECHAT") for m in _WECHAT.finditer(text)]
    for m in _ID_CANDIDATE.finditer(text):
        number = m.group(1).replace(" ", "")
        if (id_number_valid(number) or _after(_ID_CUE, text, m.start())) and not _after(_ORDER_CONTEXT, text, m.start()):
            spans.append(Span(m.start(1), m.end(1), "ID"))
    for m in _CARD_CANDIDATE.finditer(text):
        digits = re.sub(r"[ \-]", "", m.group(1))
        if not 13 <= len(digits) <= 19 or _after(_ORDER_CONTEXT, text, m.start()):
            continue
        if (digits[0] in "3456" and luhn_valid(digits)) or (len(digits) >= 15 and _after(_CARD_CUE, text, m.start())):
            spans.append(Span(m.start(1), m.end(1), "BANKCARD"))
    for m in _MOBILE.finditer(text):
        if not _after(_ORDER_CONTEXT, text, m.start()):
            spans.append(Span(m.start(), m.end(), "PHONE"))
    for m in _LANDLINE.finditer(text):
        if not _after(_ORDER_CONTEXT, text, m.start()):
            spans.append(Span(m.start(), m.end(), "PHONE"))
    spans += [Span(m.start(1), m.end(1), "QQ") for m in _QQ.finditer(text)]
    spans += [Span(m.start(1), m.end(1), "WECHAT") for m in _WECHAT.finditer(text)]
    return spans


# ------------------------------------------------------------------ addresses

_NUM = r"(?:\d{1,5}|[零〇一二三四五六七八九十百两]{1,5})"
_CODE = r"(?:[A-Za-z]?\d{1,5}[A-Za-z]?|[A-Za-z]|[零〇一二三四五六七八九十百两]{1,4}|[东西南北中][区院])"
# Characters a place name may hold: Han and Latin letters, but not the function words and
# verbs that usually stand before an address (寄到, 住在, 地址是, 我家...).
_NOT_PLACE = "的了是在到往给把被我你您他她它们这那哪谁寄送发住址请麻烦就还也或及与从收件快递改为要帮"
_PLACE = rf"[^\W\d_{_NOT_PLACE}]"
_PLACE_LATIN = rf"(?:{_PLACE}|[A-Za-z])"

_ADDRESS_PARTS: list[tuple[str, re.Pattern]] = [
    (
        "admin",
        re.compile(
            rf"{_PLACE}{{1,7}}?(?:特别行政区|自治区|自治州|自治县|省|市|地区|盟|新区|开发区|工业园区|区|县|旗|镇|乡|街道)"
        ),
    ),
    (
        "road",
        re.compile(
            rf"{_PLACE}{{1,7}}?(?:大道|大街|路|街|巷|弄|胡同|道|里)"
            rf"(?:[东西南北中]?{_NUM}?段|[东西南北中]段)?"
        ),
    ),
    (
        "compound",
        re.compile(
            rf"{_PLACE_LATIN}{{1,9}}?(?:小区|花园|公寓|大厦|广场|家园|新村|新城|山庄|公馆|社区|宿舍楼|宿舍|家属院|大楼|"
            rf"中心|园区|软件园|科技园|产业园|工业园|国际|小镇|天街|华庭|华府|苑|院|府|城|庭|湾|园|一号|号院)"
            rf"(?:{_NUM}[期区])?"
        ),
    ),
    ("village", re.compile(rf"{_PLACE}{{1,5}}?村")),
    ("number", re.compile(rf"{_NUM}(?:[\-－]{_NUM})?(?:号院|号楼|号|弄|巷|支巷)(?:附{_NUM}号)?")),
    ("group", re.compile(rf"{_NUM}(?:组|队|社)")),
    # 座/塔 only with a letter or digit (A座, 2座): 一座楼 is a building, not an address.
    ("building", re.compile(rf"{_CODE}(?:号楼|栋|幢|楼栋|号院)|[A-Za-z]?\d{{0,3}}[A-Za-z]?(?<=[A-Za-z\d])(?:座|塔)")),
    ("unit", re.compile(rf"{_CODE}单元")),
    ("floor", re.compile(rf"{_NUM}(?:楼|层)(?!下|上|道|梯)")),
    ("compact", re.compile(r"(?<![A-Za-z\d\-])\d{1,4}-\d{1,2}-\d{3,4}(?![\d\-])")),  # 12-3-502
    # A bare room number has 3-5 digits (502, 1201); with 室/房/号 any (3室 is rare but real).
    ("room", re.compile(r"(?:\d{1,5}(?:室|房|号)|\d{3,5}(?:[\-－]\d{1,5}){0,2})(?![\d.%:元块岁天年月日个台次件分点米公])")),
]
_AREA_PARTS = {"road", "compound", "village"}
_DETAIL_PARTS = {"number", "group", "building", "unit", "floor", "room", "compact"}
# A floor (2楼, 一层) is part of an address but makes none: 国货广场一楼 is a public place.
_STRONG_DETAILS = _DETAIL_PARTS - {"floor"}
# A bare number counts as a room only after a building, unit or floor (3栋2单元502), or as
# the last part of a compact 12-3-502 after a compound.
_ROOM_AFTER = {"building", "unit", "floor", "compound", "number"}
_ADDRESS_HINT = re.compile(r"[省市区县镇乡村路街道巷弄里苑园院府城庭湾楼栋幢座室单元号组厦场寓心際际街]|\d-\d{1,2}-\d")


_NAMED_PARTS = {"admin", "road", "compound", "village"}


_MAX_ADDRESS_PARTS = 24  # a real address has fewer; bounds the recursion on junk such as 1号1号1号...


def _address_chain(
    text: str, pos: int, after: str | None = None, memo: dict | None = None, depth: int = 0
) -> tuple[int, list[str]]:
    """The longest chain of address parts starting at ``pos``: (end, part kinds).

    A numbered part (building, unit, room...) takes its longest match; among named parts
    (district, road, compound) every match is tried and the one whose chain reaches
    furthest wins (花园路 is a road, not the compound 花园 followed by 路).
    """
    memo = {} if memo is None else memo
    key = (pos, after in _ROOM_AFTER)
    if key in memo:
        return memo[key]
    if depth >= _MAX_ADDRESS_PARTS:
        return pos, []
    memo[key] = (pos, [])  # guards against cycles while computing
    best: tuple[int, list[str]] = (pos, [])
    if pos < len(text):
        detail_end, detail_kind, named = pos, None, []
        for kind, pattern in _ADDRESS_PARTS:
            if kind == "room" and after not in _ROOM_AFTER:
                continue
            m = pattern.match(text, pos)
            if not m or m.end() == pos:
                continue
            if kind in _NAMED_PARTS:
                named.append((m.end(), kind))
            elif m.end() > detail_end:
                detail_end, detail_kind = m.end(), kind
        if detail_kind is not None:
            end, kinds = _address_chain(text, detail_end, detail_kind, memo, depth + 1)
            best = (end, [detail_kind] + kinds)
        else:
            for end0, kind in sorted(named):
                end, kinds = _address_chain(text, end0, kind, memo, depth + 1)
                if end > best[0]:
                    best = (end, [kind] + kinds)
            if not named and after in _NAMED_PARTS and text[pos] == " ":
                end, kinds = _address_chain(text, pos + 1, after, memo, depth + 1)  # 北京市 朝阳区 建国路88号
                if kinds and not set(kinds) <= {"admin"}:
                    best = (end, kinds)
    memo[key] = best
    return best


def _is_street_address(kinds: list[str]) -> bool:
    """Whether a chain of parts reaches street level (see the module docstring)."""
    areas = [i for i, k in enumerate(kinds) if k in _AREA_PARTS]
    if areas and any(k in _STRONG_DETAILS for k in kinds[areas[0] + 1 :]):
        return True  # 建国路88号, 幸福小区3栋, 王楼村3组: a number after the road or compound
    if "admin" in kinds and kinds[-1] == "village":
        return True  # 罗坳镇石桥村
    # 18栋五单元1201室, 3号楼502 with no compound name we know.
    strong = [k for k in kinds if k in _STRONG_DETAILS]
    return len(strong) >= 2 and any(k in ("building", "unit") for k in strong)


_PLACE_CHAR = re.compile(_PLACE_LATIN)
_ANCHOR = re.compile(r"[省市区县旗盟镇乡村路街道巷弄胡同里苑园院府城庭湾楼栋幢座塔室单元号组队社厦场寓心际镇期\d]")
_LEAD_VERBS = {"改成", "换成", "写成", "寄回", "发回", "送回", "退回", "返回", "寄往", "发往"}


# What every street address holds (see _is_street_address): a strong detail (a number,
# group, building, unit, room or 12-3-502, each a digit, numeral, letter or 东西南北中区/院
# right before its marker) or a village, or a bare room number of 3 digits. A bare room
# counts only right after a floor or a compound (3楼502, 幸福小区502, 二期502, 小区 502) and
# a 12-3-502 holds -502, so its 3 digits follow a floor or compound suffix, a space or a
# hyphen (prices such as 200元 do not). A text without a hint has no address.
_ROOM_BEFORE = "楼层区园寓厦场城庄馆舍院心际镇街庭府苑湾号期村 \\-－"
_STREET_HINT = re.compile(
    rf"[\d零〇一二三四五六七八九十百两A-Za-z区院](?:号|弄|巷|支巷|组|队|社|栋|幢|楼栋|单元|座|塔|室|房)|村|(?<=[{_ROOM_BEFORE}])\d{{3}}"
)


# No address part holds any other character, so no chain crosses one.
_CHAIN_BREAK = re.compile(r"[^\w\-－ ]+")


def _stretches_without_address(text: str) -> list[tuple[int, int]]:
    """[start, end) stretches between chain breaks that hold no street hint: a chain starting
    there stays there, so it cannot reach street level."""
    dead, prev = [], 0
    for m in [*_CHAIN_BREAK.finditer(text), None]:
        stop = m.start() if m is not None else len(text)
        if stop > prev and not _STREET_HINT.search(text, prev, stop):
            dead.append((prev, stop))
        if m is not None:
            prev = m.end()
    return dead


def _address_spans(text: str) -> list[Span]:
    if not _ADDRESS_HINT.search(text) or not _STREET_HINT.search(text):
        return []
    spans: list[Span] = []
    memo: dict = {}
    pos = 0
    n = len(text)
    # Every part ends in a suffix character or a digit at most 12 characters from where it
    # starts: chains are tried only at positions that close to one.
    anchors = [m.start() for m in _ANCHOR.finditer(text)]
    dead = _stretches_without_address(text)
    k = d = 0
    while pos < n:
        while k < len(anchors) and anchors[k] < pos:
            k += 1
        if k == len(anchors):
            break
        if anchors[k] - pos > 12:
            pos = anchors[k] - 12
        while d < len(dead) and dead[d][1] <= pos:
            d += 1
        if d < len(dead) and dead[d][0] <= pos:
            pos = dead[d][1]  # no chain from here can reach street level
            continue
        end, kinds = _address_chain(text, pos, None, memo)
        start = pos
        if kinds and kinds[0] in _DETAIL_PARTS:
            # A compound name we do not know (锦绣江南18栋): the place characters before.
            floor = spans[-1].end if spans else 0
            while start > floor and pos - start < 10 and (_PLACE_CHAR.match(text[start - 1]) or text[start - 1].isdigit()):
                start -= 1
            while start < pos and text[start].isdigit():
                start += 1
        if kinds and (_is_street_address(kinds) or (kinds[0] == "compact" and start < pos)):
            if text[start] == "放" or text[start - 1 : start + 1] in _LEAD_VERBS:
                start += 1  # 快递放幸福小区..., 寄回..., 改成...
            if spans and spans[-1].end == start:  # 新华街465号 + 望京SOHO9幢1506室
                start = spans.pop().start
            spans.append(Span(start, end, "ADDRESS"))
            pos = end
        else:
            pos += 1
    return spans


# ------------------------------------------------------------------ names

# Common single surnames and compound surnames. Left out: surnames that are mostly
# function words in messages (和, 那, 时, 来, 但, 全) and 西门 (西门子).
_SURNAMES_1 = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔"
    "向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕"
    "单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳穆农司卓古吉缪简车项连芦麦褚"
    "娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池"
    "查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅屠豆朴"
    "盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修邰赫杭况"
    "宿鲜印逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭尉冶斯元束檀衣信展阴昝智幸奉植衡富尧"
)
_SURNAMES_2 = {
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "司徒", "夏侯", "令狐", "端木", "南宫",
    "长孙", "宇文", "轩辕", "独孤", "呼延", "申屠", "闻人", "万俟", "澹台", "公冶", "太史", "淳于", "单于",
}
# Characters that end a name: function words, verbs and nouns that follow a name in messages.
_NOT_GIVEN = set(
    "的了是在说要想和跟给把被对从到电手地这那个们啊吧呢吗呀哦嗯我你他她它先女师老经总同阿大姐哥弟妹帮打买"
    "收寄发退换处理问找也都就还很太又再已没不有用叫姓名称号码话机址件人货单客服快递联系谢谢麻烦请您好吗今"
    "昨上下午晚早天周月年元块钱以可能会让等过着去来回拿送放取"
)
_SURNAME_CUE = re.compile(r"(?:我姓|免贵姓|本人姓|他姓|她姓|客户姓|贵姓是?)\s?|(?<=[\u4e00-\u9fff])姓(?=[\u4e00-\u9fff]{1,2}(?:[,，。;；!?\s叫的]|$))")
_NAME_BEFORE = re.compile(
    r"(?:我叫|我的名字是|我的名字叫|名字是|名叫|本人|我是|收件人|收货人|寄件人|联系人|签收人|购买人|下单人|户名|"
    r"持卡人|姓名|称呼|找|客户)[:：\s]{0,2}"
)
_TITLE_AFTER = re.compile(r"先生|女士|小姐|师傅|老师|经理|阿姨|大姐|大哥|总监|主管|同学|老板|太太|医生|律师")
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")

_POSSEG_LOCK = threading.Lock()


def _posseg(text: str) -> list[tuple[str, str]]:
    """``jieba.posseg.cut(text, HMM=True)`` as (word, tag) pairs, through :mod:`triage.posseg`,
    which loads only the part of jieba's dictionary the text needs."""
    from triage.posseg import tagger

    with _POSSEG_LOCK:
        return tagger().cut(text)


def _posseg_first(text: str) -> tuple[str, str] | None:
    """jieba's first word and its part-of-speech tag for ``text`` (a short window)."""
    pairs = _posseg(text)
    return pairs[0] if pairs else None


def _surname_at(text: str, pos: int) -> str | None:
    two = text[pos : pos + 2]
    if two in _SURNAMES_2:
        return two
    if pos < len(text) and text[pos] in _SURNAMES_1:
        return text[pos]
    return None


def _given_length(text: str, start: int) -> int:
    """How many characters at ``text[start:]`` can be a given name (0-2)."""
    chars = 0
    while chars < 2 and start + chars < len(text):
        ch = text[start + chars]
        if not _HAN_RE.match(ch) or ch in _NOT_GIVEN:
            break
        chars += 1
    return chars


def _full_name_at(text: str, pos: int) -> int:
    """End of the full name starting at ``pos`` (surname + given name), or ``pos`` if none."""
    surname = _surname_at(text, pos)
    if surname is None:
        return pos
    after = pos + len(surname)
    # A title right after the surname (王先生): the surname is the name.
    if _TITLE_AFTER.match(text, after):
        return after
    given = _given_length(text, after)
    if given == 0:
        return pos
    first = _posseg_first(text[pos : pos + 8])
    if first and len(first[0]) > len(surname) and not first[1].startswith("nr") and first[0] in text[pos : after + given]:
        return pos  # jieba reads a word there (本人怀疑, 联系方式), not a name
    if given == 2:
        # jieba decides between a 2- and a 3-character name (王明今天 vs 王小明).
        if first and first[1].startswith("nr") and first[0].startswith(surname):
            length = len(first[0])
            if len(surname) < length <= len(surname) + 2:
                return pos + length
            if length == len(surname):  # jieba split the surname off: trust the pattern
                return after + given
        if text[after + 1 : after + 3] in ("先生", "女士", "小姐", "师傅"):
            return after + 1
    return after + given


def _name_spans(text: str) -> list[Span]:
    if not _HAN_RE.search(text):
        return []
    spans: list[Span] = []
    for m in _SURNAME_CUE.finditer(text) if "姓" in text else ():  # every surname cue holds 姓
        surname = _surname_at(text, m.end())
        if surname:
            spans.append(Span(m.end(), m.end() + len(surname), "NAME"))
    for m in _NAME_BEFORE.finditer(text):
        pos = m.end()
        end = _full_name_at(text, pos)
        if end > pos:
            cue = m.group(0).rstrip(":： ")
            weak = cue in ("我是", "找", "客户", "本人")  # 本人于清明假期, 本人认为
            # After a weak cue (我是老客户, 客户那边) only what jieba also reads as a person name.
            if weak and not _TITLE_AFTER.match(text, end):
                first = _posseg_first(text[pos : end + 3])
                clause_end = end == len(text) or not _HAN_RE.match(text[end])
                if not first or not (
                    (first[1].startswith("nr") and len(first[0]) == end - pos)
                    or (clause_end and first[0] == _surname_at(text, pos))
                ):
                    continue
            spans.append(Span(pos, end, "NAME"))
    for m in _TITLE_AFTER.finditer(text):
        start = m.start()
        # 王小明先生 / 王先生 / 欧阳女士: a surname (and given name) right before the title.
        for length in (4, 3, 2, 1):
            if start - length < 0:
                continue
            cand = text[start - length : start]
            if not all(_HAN_RE.match(c) for c in cand):
                continue
            surname = _surname_at(cand, 0)
            if surname is None:
                continue
            given = cand[len(surname) :]
            if len(given) > 2 or any(c in _NOT_GIVEN for c in given):
                continue
            if given and _full_name_at(text, start - length) != start:
                continue
            if not _name_before_title(text, start - length, start):
                continue
            spans.append(Span(start - length, start, "NAME"))
            break
    return spans


# Words before a bare surname + title that leave it a name (我是王先生, 找陈经理, 快递员张师傅).
_BEFORE_SURNAME_TITLE = set("是找请叫员给位问让跟告和与称谢被由")


def _name_before_title(text: str, start: int, title: int) -> bool:
    """Whether ``text[start:title]`` is a name and not the end of a word (安装师傅, 多谢老板, 上门安装师傅).

    jieba, on a short window, must start a word at ``start`` that does not run past the
    title's start, and a one-character surname that jieba reads as a verb, preposition or
    adverb (由师傅, 干律师) counts only right after a cue such as 是/找/请 or after no Chinese.
    """
    lo = max(0, start - 6)
    pos = lo
    spans = []
    for word, flag in _posseg(text[lo : title + 3]):
        spans.append((pos, pos + len(word), flag))
        pos += len(word)
    for i, (pos, end, flag) in enumerate(spans):
        if pos <= start < end:
            if pos != start:
                return False  # the surname is the tail of a longer word
            if end > title and not flag.startswith("nr"):
                return False
            if text[start:title] in _SURNAMES_2:
                return True  # 欧阳经理
            if title - start > 1:
                # 王小明先生 or 钱/秀英女士, not 安装师傅 or 和/按摩小姐: jieba reads a person's
                # name there, or the surname alone and then a given name.
                if flag.startswith("nr"):
                    return True
                given = [f for p, e, f in spans[i + 1 :] if p < title]
                return end == start + len(_surname_at(text, start) or "") and bool(given) and all(
                    f.startswith("nr") or f in ("zg", "ng") for f in given
                )
            if flag.startswith("n"):
                return True
            before = text[start - 1] if start else ""
            return not _HAN_RE.match(before) or before in _BEFORE_SURNAME_TITLE
    return False


_BLOCK_BEFORE = re.compile(r"(?:^|(?<=[,，;；。!?:：\s]))([\u4e00-\u9fff]{2,4})[,，\s]{0,2}$")


def _contact_block_names(text: str, found: list[Span]) -> list[Span]:
    """A bare name that stands as its own item right before a phone or address (王小明, 138...)."""
    spans = []
    for s in found:
        if s.kind not in ("PHONE", "ADDRESS"):
            continue
        m = _BLOCK_BEFORE.search(text, max(0, s.start - 7), s.start)
        if not m:
            continue
        cand = m.group(1)
        start = m.start(1)
        if _full_name_at(text, start) == start + len(cand) and _surname_at(cand, 0) != cand:
            spans.append(Span(start, start + len(cand), "NAME"))
    return spans


def jieba_person_spans(text: str) -> list[Span]:
    """Every word jieba tags as a person name (``nr``), with no cue: the alternative measured."""
    spans, pos = [], 0
    for word, flag in _posseg(text):
        if flag == "nr" and len(word) >= 2:
            spans.append(Span(pos, pos + len(word), "NAME"))
        pos += len(word)
    return spans


# ------------------------------------------------------------------ together

_PRIORITY = {k: i for i, k in enumerate(("EMAIL", "ID", "BANKCARD", "PHONE", "QQ", "WECHAT", "ADDRESS", "NAME"))}


class _Taken:
    """Non-overlapping spans kept sorted, with an O(log n) overlap test."""

    def __init__(self, spans: list[Span] = ()):
        self.spans = sorted(spans)
        self.starts = [s.start for s in self.spans]

    def free(self, s: Span) -> bool:
        i = bisect.bisect_left(self.starts, s.end)  # spans starting before s ends
        return i == 0 or self.spans[i - 1].end <= s.start

    def add(self, s: Span) -> None:
        i = bisect.bisect_left(self.starts, s.start)
        self.spans.insert(i, s)
        self.starts.insert(i, s.start)


def _resolve(spans: list[Span], taken: list[Span] = ()) -> list[Span]:
    """``taken`` plus those of ``spans`` that overlap nothing kept before them: longer first,
    ties to the more specific kind (numbers before addresses before names)."""
    if not spans:  # most messages: nothing found
        return sorted(taken)
    kept = _Taken(taken)
    for s in sorted(spans, key=lambda s: (-(s.end - s.start), _PRIORITY[s.kind], s.start)):
        if kept.free(s):
            kept.add(s)
    return kept.spans


def find_personal_data(text: str, names: str = "cues") -> list[Span]:
    """Personal data in normalised ``text`` as non-overlapping spans in text order.

    ``names``: ``"cues"`` (the default), ``"jieba"`` (every ``nr`` word) or ``"both"``;
    the alternatives exist so the benchmark can measure them.
    """
    if names not in ("cues", "jieba", "both"):
        raise ValueError(f"names must be 'cues', 'jieba' or 'both', not {names!r}")
    spans = _number_spans(text)
    spans += _address_spans(text)
    spans = _resolve(spans)
    name_spans = []
    if names in ("cues", "both"):
        name_spans += _name_spans(text)
        if spans:
            name_spans += _contact_block_names(text, spans)
    if names in ("jieba", "both"):
        name_spans += jieba_person_spans(text)
    return _resolve(name_spans, taken=spans)  # a name never overrides a number or an address


def mask_spans(text: str, spans: list[Span]) -> MaskedText:
    """Replace ``spans`` (non-overlapping) of ``text`` by their placeholders."""
    if not spans:
        return MaskedText(text, {})
    counts: Counter[str] = Counter()
    out, pos = [], 0
    for s in spans:
        out.append(text[pos : s.start])
        out.append(f"<{s.kind}>")
        counts[s.kind] += 1
        pos = s.end
    out.append(text[pos:])
    return MaskedText("".join(out), dict(counts))


def mask(text: str) -> MaskedText:
    """Replace every piece of personal data in normalised ``text`` by its typed placeholder."""
    return mask_spans(text, find_personal_data(text))
