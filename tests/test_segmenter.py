"""The compiled segmenter (jieba-rs through PyPI rjieba) cuts exactly as jieba does (issue 14).

jieba is the reference: the model's word features were always jieba's words. The compiled
one must give the same words for the domain vocabulary, for the test sentences below (our
own), for random mixtures of them, and for real reviews when ../shared/data is present.
"""

from __future__ import annotations

import csv
import itertools
import shutil

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, SHARED_DATA
from triage import text as T
from triage.lexicons import load_lexicons

needs_compiled = pytest.mark.skipif(
    T.active_segmenter(choice="auto") != "compiled", reason="rjieba (the compiled segmenter) is not installed"
)

DOMAIN_WORDS = [w for w, _, _ in T._user_dict_entries(load_lexicons().user_dict_path)]

SENTENCES = [
    "直播前一小时采集卡插上就冒烟了，今晚的带货直播全泡汤！！我要去12315投诉",
    "麦克风底噪很大，直播时观众都说有电流声",
    "领夹麦克风和无线麦都连不上声卡，客服踢皮球",
    "补光灯色温不准，美颜灯也是，退一赔三！",
    "手持云台用了两天稳定器就坏了，申请七天无理由退货",
    "其他用户也反映过这个问题",  # a user-dictionary word's frequency moves this split
    "我把软件全删了还是闪退",  # and this one
    "好好好好好很好。",  # an exact tie between paths, decided by the dictionary total's last bits
    "好好的一个摄像头，用了三天好好好坏掉了",
    "吃吃吃买买买，行行行，对对对",
    "订单号2023112512345678，快递单号SF1234567890123",
    "联系我<PHONE>或者<EMAIL>，地址<ADDRESS>",
    "OBS推流1080p 60fps掉帧，USB3.0采集卡HDMI输入没信号",
    "iPhone15连Type-C声卡没声音？？？",
    "😡😡气死了，垃圾产品🙄",
    "双十一买的，降价了不给保价，12315见",
    "   多个   空格\t和制表符  ",
    "a" * 300 + "麦克风" * 50,
    "㐀㐁好好好㐂 中日韩扩展字符与麦克风",
    "Ünïcödé çhàrs and 中文 mixed",
]


def both(text: str) -> tuple[list[str], list[str]]:
    return T.segment(text, segmenter="jieba"), T.segment(text, segmenter="auto")


@needs_compiled
def test_domain_vocabulary_alone_and_in_sentences():
    templates = ["{w}", "我买的{w}坏了，客服不理人", "{w}{w2}都有问题", "这个{w}和{w2}不配套"]
    for w, w2 in zip(DOMAIN_WORDS, DOMAIN_WORDS[1:] + DOMAIN_WORDS[:1]):
        for template in templates:
            text = template.format(w=w, w2=w2)
            jieba_words, compiled_words = both(text)
            assert compiled_words == jieba_words, text


@needs_compiled
def test_domain_words_stay_whole_in_both():
    whole = [w for w in DOMAIN_WORDS if T.segment(w, segmenter="jieba") == [w]]
    assert len(whole) > 0.9 * len(DOMAIN_WORDS)  # the dictionary does its job
    assert all(T.segment(w, segmenter="auto") == [w] for w in whole)


@needs_compiled
@pytest.mark.parametrize("text", SENTENCES)
def test_test_sentences(text):
    jieba_words, compiled_words = both(T.mask_personal_data(T.normalise(text)).text)
    assert compiled_words == jieba_words


_PIECES = DOMAIN_WORDS[:80] + list("好的了不是我很坏直播退款吗？！，。 的麦声卡灯") + ["12315", "abc", "A1", "㐀", "😡", "\t", "  ", "-", "_", ".", "#"]


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_random_mixtures(text):
    jieba_words, compiled_words = both(text)
    assert compiled_words == jieba_words


@needs_compiled
def test_real_reviews_when_present():
    corpus = SHARED_DATA / "corpora" / "online_shopping_10_cats.csv"
    if not corpus.is_file():
        pytest.skip("../shared/data is absent")
    with corpus.open(encoding="utf-8") as f:
        reviews = [row["review"] for row in itertools.islice(csv.DictReader(f), 0, 60000, 20) if row["review"]]
    differ = []
    for review in reviews:
        text = T.mask_personal_data(T.normalise(review)).text
        jieba_words, compiled_words = both(text)
        if compiled_words != jieba_words:
            differ.append(text)
    assert not differ, differ[:5]


def test_jieba_is_the_fallback_without_rjieba(tmp_path, monkeypatch):
    lexicons = tmp_path / "lexicons"
    shutil.copytree(ROOT / "datasets" / "lexicons", lexicons)
    monkeypatch.setattr(T, "_rjieba_class", lambda: None)
    assert T.active_segmenter(lexicons, choice="auto") == "jieba"
    assert "采集卡" in T.segment("采集卡坏了", lexicon_dir=lexicons)


def test_the_setting_chooses_jieba(monkeypatch):
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_SEGMENTER", "jieba")
    get_settings.cache_clear()
    try:
        assert T.active_segmenter() == "jieba"
    finally:
        monkeypatch.delenv("TRIAGE_SEGMENTER")
        get_settings.cache_clear()


def test_unknown_segmenter_is_refused():
    with pytest.raises(ValueError, match="unknown segmenter"):
        T.segment("麦克风", segmenter="pkuseg")
