"""triage.posseg: jieba's part-of-speech cut from a dictionary loaded by character (issue 14)."""

from __future__ import annotations

import os

import jieba
import jieba.posseg
import pytest

from triage.posseg import PosTagger, cache_path

SENTENCES = [
    "我姓王，叫王小明，电话打不通",
    "收件人李秀英女士",
    "本人怀疑是二手机，联系方式在订单里",
    "快递员张师傅态度很好",
    "欧阳经理说会处理",
    "我是老客户了，客户那边说没问题",
    "找陈经理退款，安装师傅没来",
    "华为P40 Pro屏幕有绿线，iPhone 12也一样!!",
    "京东618买的，3.5折，型号ABC-123，序列号SN12345",
    "地址：北京市朝阳区建国路88号 3栋2单元502",
    "好好好好好",
    "  空格\t和\r\n换行  ",
    "C++ & C# 编程书，第2版._下划线",
    "由师傅上门，干律师这行的和按摩小姐",
    "一",
    "",
]


def reference(text: str, pos_tokenizer=None) -> list[tuple[str, str]]:
    cut = pos_tokenizer.cut if pos_tokenizer is not None else jieba.posseg.cut
    return [(p.word, p.flag) for p in cut(text, HMM=True)]


def test_the_tagger_cuts_and_tags_as_jieba_posseg(tmp_path):
    tagger = PosTagger(cache_dir=tmp_path)
    for text in SENTENCES:
        assert tagger.cut(text) == reference(text), text
    # Also once the dictionary groups of many characters are in (a long-running process).
    for text in reversed(SENTENCES):
        assert tagger.cut(text) == reference(text), text
    assert len(tagger.tokenizer.FREQ) < len(jieba.dt.FREQ) / 4  # only the groups of the texts' characters


def write_dictionary(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def small_reference(path, tmp_path, text):
    tokenizer = jieba.Tokenizer(str(path))
    tokenizer.tmp_dir = str(tmp_path / f"jieba-{os.urandom(4).hex()}")  # jieba's own cache, fresh each time
    os.makedirs(tokenizer.tmp_dir)
    return reference(text, jieba.posseg.POSTokenizer(tokenizer))


def test_the_cache_follows_the_dictionary_and_survives_damage(tmp_path):
    dictionary = tmp_path / "dict.txt"
    write_dictionary(dictionary, ["王小明 50 nr", "王 100 nr", "小明 30 nr", "电话 80 n", "打 60 v", "不通 20 a"])
    text = "王小明电话打不通"
    first = PosTagger(dictionary, cache_dir=tmp_path)
    assert first.cut(text) == small_reference(dictionary, tmp_path, text)
    assert first.cut(text)[0] == ("王小明", "nr")
    cache = cache_path(dictionary, tmp_path)
    assert cache.is_file()

    # An edited dictionary (new size and time) gets a cache of its own, with the new words.
    write_dictionary(dictionary, ["王 100 nr", "小明 30 nr", "电话 80 vn", "打 60 v", "不通 20 a"])
    os.utime(dictionary, ns=(os.stat(dictionary).st_atime_ns, os.stat(dictionary).st_mtime_ns + 10**9))
    assert cache_path(dictionary, tmp_path) != cache
    second = PosTagger(dictionary, cache_dir=tmp_path)
    assert second.cut(text) == small_reference(dictionary, tmp_path, text)
    assert ("王小明", "nr") not in second.cut(text)
    assert ("电话", "vn") in second.cut(text)  # a changed tag

    # A damaged or foreign cache file is rebuilt, not trusted.
    current = cache_path(dictionary, tmp_path)
    for junk in (b"", b"\x00" * 40, cache.read_bytes()):  # the last: the old dictionary's cache
        current.write_bytes(junk)
        again = PosTagger(dictionary, cache_dir=tmp_path)
        assert again.cut(text) == second.cut(text)


def test_a_malformed_dictionary_line_is_reported(tmp_path):
    dictionary = tmp_path / "dict.txt"
    write_dictionary(dictionary, ["王 100 nr", "坏行 5"])
    with pytest.raises(ValueError, match="Line 2"):
        PosTagger(dictionary, cache_dir=tmp_path)


def test_the_array_viterbi_gives_jiebas_probability_and_route(tmp_path):
    """The numpy viterbi must reproduce jieba.posseg's exactly (the same float sums, the same
    tie rule): every run of Han characters of the seed data, and overlapping windows of it."""
    import json
    import re
    from pathlib import Path

    tagger = PosTagger(cache_dir=tmp_path)
    seed = Path(__file__).resolve().parent.parent / "datasets" / "seed"
    runs = []
    for path in sorted(seed.glob("*.jsonl"))[:3]:
        for line in path.read_text(encoding="utf-8").splitlines()[:150]:
            for run in re.findall(r"[\u4e00-\u9fff]{2,}", json.loads(line)["text"]):
                runs += [run, run[1:9], run[-5:]]
    runs += ["好好好好好", "王小明", "欧阳娜娜说", "一"]
    assert len(runs) > 500
    for run in runs:
        expected = tagger._viterbi(run, tagger._states, tagger._start, tagger._trans, tagger._emit)
        assert tagger._fast_viterbi(run) == expected, run
