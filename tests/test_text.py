"""Text pipeline: normalisation, personal-data masking, segmentation."""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from triage.text import (
    id_number_valid,
    luhn_valid,
    mask_personal_data,
    nfkc,
    normalise,
    normalise_with_stats,
    prepare,
    segment,
)

VALID_ID = "11010519491231002X"  # the GB 11643 example number
VALID_CARD = "6222021234567890128"  # Luhn-valid, UnionPay prefix


# ------------------------------------------------------------------ normalise


def test_full_width_becomes_half_width():
    assert normalise("４Ｋ６０帧，ＡＢＣ！") == "4K60帧,ABC!"


# Marks the fast path replaces, compatibility characters around them, and combining marks
# that NFKC reorders or composes with what precedes them (a mark's neighbours matter).
_NFKC_ALPHABET = "，！？…；：（）。、,.!?AaＡａ０９ｶﾞ\u3000\u00a0\u00b4\u0301\u0308\u0323\u0338\u3099\u309a\u1100\u1161\u11a8ﬁ①㎏好が"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_NFKC_ALPHABET, max_size=12) | st.text(max_size=12))
def test_the_fast_nfkc_is_exactly_unicode_nfkc(text):
    assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_the_fast_nfkc_on_messages_with_full_width_marks():
    for text in ("好用，推荐！", "真的？…", "（赠品）：没有；", "Ａ，\u0301", "，\u0338", "…\u0301好"):
        assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_traditional_becomes_simplified():
    assert normalise("這個麥克風的聲音很差") == "这个麦克风的声音很差"


def test_whitespace_and_repeated_punctuation_fold_but_counts_survive():
    text, stats = normalise_with_stats("太差了！！！\n\n   真的？？  ")
    assert text == "太差了! 真的?"
    assert stats.exclamations == 3
    assert stats.questions == 2
    assert stats.longest_run == 3


def test_emoji_are_kept_as_tokens():
    assert "😡" in normalise("气死了😡")
    assert "😡" in segment(normalise("气死了😡"))


def test_control_characters_removed():
    assert normalise("坏\x00了\x07") == "坏 了"


# ------------------------------------------------------------------ masking


@pytest.mark.parametrize(
    "raw, placeholder",
    [
        ("我的手机13812345678请回电", "<PHONE>"),
        ("电话 138-1234-5678", "<PHONE>"),
        ("+86 13912345678", "<PHONE>"),
        ("座机 010-12345678", "<PHONE>"),
        ("座机(0755)87654321", "<PHONE>"),
        (f"身份证{VALID_ID}", "<ID>"),
        (f"卡号{VALID_CARD}", "<BANKCARD>"),
        ("卡号 6222 0212 3456 7890 128", "<BANKCARD>"),
        ("邮箱 someone.name@example.com", "<EMAIL>"),
        ("寄到北京市朝阳区建国路88号3栋2单元501室谢谢", "<ADDRESS>"),
    ],
)
def test_personal_data_masked_with_typed_placeholder(raw, placeholder):
    masked = mask_personal_data(normalise(raw))
    assert placeholder in masked.text
    assert masked.counts[placeholder.strip("<>")] == 1


def test_masking_removes_the_digits():
    masked = mask_personal_data(f"手机13812345678 身份证{VALID_ID} 卡{VALID_CARD}")
    for secret in ("13812345678", VALID_ID, VALID_CARD):
        assert secret not in masked.text
    assert masked.total == 3


def test_id_with_wrong_check_digit_is_not_an_id():
    assert not id_number_valid("110105194912310021")
    assert "<ID>" not in mask_personal_data("编号110105194912310021").text


def test_card_failing_luhn_is_not_a_card():
    assert not luhn_valid("6222021234567890127")
    assert "<BANKCARD>" not in mask_personal_data("6222021234567890127").text


def test_order_numbers_stay():
    for text in (f"订单号{VALID_CARD}一直没发货", "订单号：202311110001234567 还没到", "快递单号 SF1234567890123"):
        masked = mask_personal_data(normalise(text))
        assert masked.counts == {}, text
        assert masked.text == normalise(text)


def test_plain_text_untouched():
    assert mask_personal_data("麦克风有电流声").counts == {}


# ------------------------------------------------------------------ segmentation


def test_domain_words_stay_whole():
    words = segment("补光灯和采集卡都坏了，申请七天无理由退货，不然打12315")
    for term in ("补光灯", "采集卡", "七天无理由", "12315"):
        assert term in words


def test_placeholders_are_single_tokens():
    words = segment(mask_personal_data("联系我13812345678").text)
    assert "<PHONE>" in words
    assert "PHONE" not in words


def test_stopwords_can_be_dropped():
    assert "的" in segment("我的麦克风")
    assert "的" not in segment("我的麦克风", drop_stopwords=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "摄像头坏了" * 20_000,  # 100k characters
        "".join(chr(c) for c in range(0, 0x3000, 3)),
        "Mic 麦克风 マイク 마이크 микрофон 🎤🎤 ١٢٣ \t\n",
    ],
    ids=["empty", "blank", "100k", "binary-junk", "mixed-scripts"],
)
def test_segmentation_never_crashes(text):
    prepared = prepare(text)
    assert isinstance(prepared.tokens, list)
    assert isinstance(segment(normalise(text)), list)


@pytest.mark.timeout(60)
def test_random_unicode_never_crashes():
    rng = random.Random(7)
    for _ in range(50):
        text = "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 300)))
        prepare(text)


def test_prepare_combines_the_steps():
    p = prepare("這個補光燈壞了！！！電話13812345678")
    assert p.text == "这个补光灯坏了!电话<PHONE>"
    assert p.masked == {"PHONE": 1}
    assert "补光灯" in p.tokens and "<phone>" in p.tokens
    assert p.intensity[0] == 1.0 and p.intensity[1] == 1.0
