"""Domain rules: escalation with negation, safety, counterfeit, unusable, vulnerable customers."""

from __future__ import annotations

import pytest

from triage.lexicons import DEFAULT_LEXICON_DIR, load_lexicons
from triage.rules import apply_rules, find_escalation, find_safety
from triage.text import normalise


def rules_of(outcome) -> dict[str, list[str]]:
    return {hit.rule: hit.matched for hit in outcome.hits}


@pytest.mark.parametrize(
    "text, term",
    [
        ("再不处理我就打12315投诉", "12315"),
        ("不退款就去12315", "12315"),
        ("已经向消协反映了", "消协"),
        ("我要去市场监管局举报你们", "市场监管局"),
        ("等着收律师函吧", "律师函"),
        ("要求退一赔三！", "退一赔三"),
        ("我会在网上曝光你们这家店", "曝光"),
        ("别逼我找记者", "记者"),
        ("是否支持退一赔三？不支持我就去消协", "消协"),
    ],
)
def test_escalation_threat_detected(text, term):
    counted, _ = find_escalation(normalise(text))
    assert term in counted
    out = apply_rules(normalise(text), urgency=3)
    assert out.escalation is True
    assert out.urgency == 1
    assert term in rules_of(out)["escalation_threat"]


@pytest.mark.parametrize(
    "text",
    [
        "算了不打12315了，换个货就行",
        "我不想曝光你们，只想退款",
        "没必要找律师，好好处理就行",
        "是否支持假一赔十？",
        "请问支持退一赔三吗",
        "订单号2023123151234567还没到",  # 12315 inside a longer number
        "我的手机号是13123150000",
        "多媒体接口接触不良",
        "自动曝光有问题，画面过曝",
        "工商银行的卡付不了款",
    ],
)
def test_not_an_escalation(text):
    out = apply_rules(normalise(text), urgency=3)
    assert out.escalation is False
    assert out.urgency == 3


@pytest.mark.parametrize(
    "text",
    [
        "手机尾号12315的那个订单能改地址吗",  # a number, not the hotline
        "12315开头的电话是你们打的吗",
        "315那天下的单到现在没发",
        "本来想打12315的，想想算了，换个货吧",  # taken back
        "上次说要打12315是气话，别当真",
        "朋友叫我去消协，我还是先找你们",  # someone else's idea
        "客服说不满意可以去12315，我就问个发货时间",
        "看到新闻说有品牌被市场监管局罚了，你们家没事吧",  # the news
        "我表哥是律师，他推荐的这款麦",  # a profession
        "相机曝光补偿怎么调",  # the camera's exposure
        "不想闹到12345那一步，修好就行",
        "我不要什么退一赔三，原价退我就行",
        "我那个做律师的朋友推荐的这家",
        "他以前在电视台工作，口才很好",
        "学校消协社团想找你们赞助奖品",
        "快递单号后几位是12315，一直在中转",
        "说明书上的举报电话打过去是空号",
        "有人说要去微博曝光主播的私生活，无聊",  # someone else's intent is not the speaker's
        "刚看到新闻说某品牌声卡被市场监管局罚款了",
    ],
)
def test_a_mention_that_is_not_the_speakers_threat(text):
    counted, ignored = find_escalation(normalise(text))
    assert counted == []
    out = apply_rules(normalise(text), urgency=3, escalation=True)  # overrules the model too, where a term was ignored
    assert out.escalation is (not ignored)


@pytest.mark.parametrize(
    "text, term",
    [
        ("我已经打了12315，你们看着办", "12315"),
        ("朋友叫我去消协，我明天就去", "消协"),  # someone's idea, then the speaker's intent
        ("客服一直不回，我不得不向消费者协会求助了", "消费者协会"),  # 不得不 insists
        ("再拖下去我就走法律程序", "走法律程序"),
        ("我要找记者曝光你们", "记者"),
        ("我同事是记者，不给解决我就让他报道", "记者"),  # a profession that is the threat
        ("我在市场监管局投诉了你们", "市场监管局"),
        ("本来想算了，现在我决定去12315", "12315"),
        ("网友都说要曝光，我也要曝光你们", "曝光"),
    ],
)
def test_the_speakers_own_threat_still_counts(text, term):
    counted, _ = find_escalation(normalise(text))
    assert term in counted


def test_negated_mention_overrules_the_models_escalation():
    out = apply_rules("算了不打12315了", urgency=2, escalation=True)
    assert out.escalation is False
    assert "escalation_negated" in rules_of(out)


def test_model_escalation_without_lexicon_still_forces_urgency_one():
    out = apply_rules("你们等着瞧", urgency=3, escalation=True)
    assert out.escalation is True and out.urgency == 1
    assert "escalation_model" in rules_of(out)


@pytest.mark.parametrize("text", ["麦克风漏电了", "补光灯插上就冒烟", "声卡烧了", "吃了以后食物中毒进医院"])
def test_safety_raises_to_one(text):
    out = apply_rules(normalise(text), urgency=3)
    assert out.urgency == 1
    assert "safety" in rules_of(out)


@pytest.mark.parametrize("text", ["没有漏电，就是有杂音", "声音炸了，爆音严重", "电脑中毒了"])
def test_safety_negated_or_other_sense(text):
    assert find_safety(normalise(text)) == []


@pytest.mark.parametrize(
    "text, rule",
    [("怀疑是假货", "counterfeit"), ("这绝对不是正品", "counterfeit"), ("开不了机了", "unusable"), ("充不进电", "unusable"),
     ("发货晚了三天，耽误直播", "business_loss")],
)
def test_guideline_grade_one_cases(text, rule):
    out = apply_rules(text, urgency=2)
    assert out.urgency == 1 and rule in rules_of(out)


@pytest.mark.parametrize("text", ["这不是假货，就是包装旧", "不是开不了机，是有杂音", "还好没耽误直播"])
def test_negated_grade_one_cases_do_not_fire(text):
    assert apply_rules(text, urgency=2).urgency == 2


def test_vulnerable_customer_flagged_without_changing_urgency():
    out = apply_rules("给七十多岁的老人买的，字太小", urgency=3)
    assert out.vulnerable is True
    assert out.urgency == 3
    assert "七十多岁" in rules_of(out)["vulnerable_customer"]


@pytest.mark.parametrize("urgency", [1, 2, 3])
@pytest.mark.parametrize(
    "text", ["麦克风漏电，我要打12315", "算了不打12315", "很好用", "给孕妇用的", "开不了机", "是否支持假一赔十?"]
)
def test_rules_never_lower_urgency(text, urgency):
    assert apply_rules(normalise(text), urgency=urgency).urgency <= urgency


def test_lexicon_files_explain_how_to_extend():
    for path in DEFAULT_LEXICON_DIR.glob("*.txt"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("#"), f"{path.name} has no header comment"


def test_lexicons_are_read_from_the_given_folder(tmp_path):
    for path in DEFAULT_LEXICON_DIR.glob("*.txt"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    with (tmp_path / "escalation.txt").open("a", encoding="utf-8") as f:
        f.write("黑猫警长\tmedia\n")
    lex = load_lexicons(tmp_path)
    assert apply_rules("我要找黑猫警长", urgency=3, lexicons=lex).escalation is True
    assert apply_rules("我要找黑猫警长", urgency=3).escalation is False


@pytest.mark.parametrize("model_says, final", [("quality", "advertising"), ("refund", "advertising"), ("other", "other"), ("advertising", "advertising")])
def test_fake_goods_are_advertising(model_says, final):
    out = apply_rules("用了几天头皮屑更多了，怀疑是假货", urgency=2, dispute_type=model_says)
    assert out.dispute_type == final
    assert rules_of(out)["counterfeit"] == ["假货"]


def test_dispute_type_untouched_without_counterfeit():
    assert apply_rules("麦克风有杂音", urgency=2, dispute_type="quality").dispute_type == "quality"


@pytest.mark.parametrize("text", [
    "麦克风有杂音", "很好用，推荐", "补光灯冒烟了", "不打12315了，算了", "是否支持假一赔十？", "订单号123156789",
    "我妈妈七十多岁了，耽误直播，开不了机，假货", "多媒体文件打不开", "", "太垃圾了", "不是垃圾",
])
@pytest.mark.parametrize("model_escalation", [False, True])
def test_skipping_the_scans_changes_nothing(text, model_escalation, monkeypatch):
    """The any-term pre-check (issue 14) gives the outcome of running every scan."""
    import triage.rules as rules

    fast = apply_rules(text, urgency=3, escalation=model_escalation, dispute_type="quality", emotion="calm")
    monkeypatch.setattr(rules, "mentions_a_term", lambda text, lex: True)
    full = apply_rules(text, urgency=3, escalation=model_escalation, dispute_type="quality", emotion="calm")
    assert fast == full


def _every_rule_term(lex):
    return [t for t in (*lex.escalation, *lex.safety, *lex.counterfeit, *lex.unusable, *lex.loss, *lex.vulnerable,
                        *lex.anger) if t]


def test_the_any_term_check_finds_every_term_and_nothing_else():
    """The pre-check's prefix-factored pattern answers as a plain "is any term in the text" would."""
    import random

    from triage.rules import mentions_a_term

    lex = load_lexicons()
    terms = _every_rule_term(lex)
    rng = random.Random(7)
    for term in terms:  # each term alone, inside text, and cut short by one character
        assert mentions_a_term(term, lex)
        assert mentions_a_term("这个" + term + "。", lex)
    pieces = [t[: rng.randint(1, len(t))] for t in terms] + list("的了吗好差,!")
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        assert mentions_a_term(text, lex) == any(t in text for t in terms), text


@pytest.mark.parametrize("text, term", [
    ("太垃圾了，充一晚上才充到一半", "垃圾"),
    ("用了三天就坏，再也不买这家了", "再也不买"),
    ("大家千万别买，声卡底噪大", "千万别买"),
    ("别装了，你们就是骗子", "骗子"),
    ("不要坑人了，快退款", "坑人"),  # 不要 is no retraction of an insult
    ("客服态度真是不要脸", "不要脸"),
])
@pytest.mark.parametrize("model_says", ["calm", "upset"])
def test_anger_words_make_the_emotion_angry(text, term, model_says):
    out = apply_rules(normalise(text), urgency=3, emotion=model_says)
    assert out.emotion == "angry"
    hit = [h for h in out.hits if h.rule == "anger_words"][0]
    assert term in hit.matched and hit.effect == f"emotion {model_says} -> angry"
    assert out.urgency == 3  # anger alone does not change the grade


@pytest.mark.parametrize("text", [
    "不是垃圾，就是有点小毛病",  # negated
    "一点也不坑，价格公道",
    "送的垃圾袋太薄了",  # an exclusion: no insult
    "安装师傅装完走了，地上的垃圾一点没收拾",  # rubbish, not an insult
    "买给爸妈的平板，字体大",  # 妈的 inside 爸妈的
    "气死我了，又被种草买了一件哈哈",  # a joke
    "声卡有点底噪，有点失望",  # upset words belong to the model
    "",
])
@pytest.mark.parametrize("model_says", ["calm", "upset"])
def test_no_anger_rule_without_an_affirmed_anger_word(text, model_says):
    out = apply_rules(normalise(text), urgency=3, emotion=model_says)
    assert out.emotion == model_says
    assert "anger_words" not in rules_of(out)


def test_anger_rule_never_lowers_and_leaves_emotion_alone_when_not_given():
    assert apply_rules("垃圾", urgency=3, emotion="angry").emotion == "angry"
    assert [h.effect for h in apply_rules("垃圾", urgency=3, emotion="angry").hits] == ["none (already angry)"]
    out = apply_rules("垃圾", urgency=3)  # callers that do not pass the model's emotion
    assert out.emotion is None and rules_of(out)["anger_words"] == ["垃圾"]
    assert out.hits[0].effect == "anger words (no emotion given)"


def test_a_lexicon_folder_without_anger_words_still_loads(tmp_path):
    for path in DEFAULT_LEXICON_DIR.glob("*.txt"):
        if path.name != "anger.txt":
            (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    lex = load_lexicons(tmp_path)
    assert lex.anger == ()
    assert apply_rules("垃圾", urgency=3, emotion="calm", lexicons=lex).emotion == "calm"


# Cantonese and Taiwanese customers: the same rules in their words (written in traditional
# characters, as they are; the text pipeline converts them before the rules read them).
@pytest.mark.parametrize(
    "text, rule, effect",
    [
        ("部相機開唔到機，充咗成晚都冇反應", "unusable", ("urgency", 1)),
        ("補光燈插咗電就出煙，好驚", "safety", ("urgency", 1)),
        ("充電器用咗一陣就有燶味", "safety", ("urgency", 1)),
        ("食完你哋啲雞翼成家人肚痾", "safety", ("urgency", 1)),
        ("再唔退錢我就報海關，話你賣假貨", "escalation_threat", ("escalation", True)),
        ("我會去消費者委員會投訴你哋", "escalation_threat", ("escalation", True)),
        ("店家再不處理我就提告", "escalation_threat", ("escalation", True)),
        ("已經約了消保官，等著吧", "escalation_threat", ("escalation", True)),
        ("仆街，呃人㗎，再都唔買", "anger_words", ("emotion", "angry")),
        ("on9客服，成日搵唔到人", "anger_words", ("emotion", "angry")),
        ("唔好再呃人啦", "anger_words", ("emotion", "angry")),  # an imperative, like 不要坑人
    ],
)
def test_cantonese_and_taiwanese_words_fire_the_rules(text, rule, effect):
    out = apply_rules(normalise(text), urgency=2, escalation=False, emotion="upset")
    assert rule in rules_of(out), text
    field, value = effect
    assert getattr(out, field) == value, text


@pytest.mark.parametrize(
    "text",
    [
        "我唔會去消委會投訴，退返錢就得",  # negated in Cantonese
        "唔使報警咁誇張，換過部就得",
        "包裹俾海關扣咗三日",  # customs holding a parcel is no threat
        "唔係垃圾嚟㗎，幾好用",  # 唔係 takes the insult back
        "冇呃人，真係同描述一樣",
        "隔音一般，一晚上刺激死我啦",  # 刺激死我 is no 激死我
        "酒店越靠北越貴",
    ],
)
def test_cantonese_negations_and_look_alikes_do_not_fire(text):
    out = apply_rules(normalise(text), urgency=2, escalation=False, emotion="upset")
    assert out.escalation is False, text
    assert out.urgency == 2, text
    assert out.emotion == "upset", text


@pytest.mark.parametrize(
    "text",
    [
        "补光用的两盏60W的灯，曝光我是手动锁的，ISO 400、快门1/50",  # the camera's exposure, in a sentence about it
        "相機嘅曝光一直跳，係咪設定問題？",
        "我看有的店写“假一赔十”，你们店支持吗",  # other shops' promise, mentioned
        "别家都说假一赔十，你们呢",
    ],
)
def test_camera_exposure_and_other_shops_promises_are_no_threat(text):
    counted, ignored = find_escalation(normalise(text))
    assert counted == [] and ignored, text
    assert apply_rules(normalise(text), urgency=3).escalation is False


@pytest.mark.parametrize(
    "text",
    ["相机坏了，我要曝光你们", "镜头进灰了，不给换就曝光", "相机是二手翻新的，曝光你们这家黑店", "相机的事不解决，我就去曝光"],
)
def test_a_camera_owners_threat_to_expose_still_counts(text):
    counted, _ = find_escalation(normalise(text))
    assert counted == ["曝光"], text


def test_every_exclusion_in_the_default_lexicons_contains_one_of_their_terms():
    """An exclusion (a -word line) only ever matters around a term it contains: one that
    contains none is a typo or a broken line, and silently does nothing."""
    lex = load_lexicons(DEFAULT_LEXICON_DIR)
    for name in ("escalation", "safety", "counterfeit", "unusable", "loss", "anger"):
        terms = getattr(lex, name)
        dead = [x for x in getattr(lex, f"{name}_exclusions") if not any(t in x for t in terms)]
        assert dead == [], (name, dead)
