"""Shared test fixtures: a tiny labeled set written for the tests, and a model trained on it.

The texts here are the tests' own (never copied from ``../shared/data``); the model trains
in about a second, so tests that need "a model" stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for path in (str(ROOT), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

SHARED_DATA = ROOT.parent / "shared" / "data"

# Every training in the suite uses the tests' own tiny data: the public reviews that the
# default model self-trains on (models/public_reviews.py) would add about 20 s to each.
# tests/test_public_reviews.py turns them on where it tests them; subprocesses inherit this.
os.environ.setdefault("TRIAGE_PUBLIC_REVIEWS", "none")


def skip_unless_ci(reason: str) -> None:
    """Skip on a developer's machine that lacks a service or data; in CI (``CI`` set) the
    same gap fails the run, so a green CI never hides tests that did not run."""
    import os

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)

_TEMPLATES = {
    ("quality", 2, "upset", False): [
        "{p}用了三天就有杂音，很失望",
        "{p}经常死机，影响直播",
        "{p}发热严重，时好时坏",
        "{p}的接口松了，接触不良",
    ],
    ("quality", 1, "angry", False): [
        "{p}收到就是坏的，根本用不了，垃圾！！！",
        "{p}用了一天彻底坏了，耽误我直播，坑人",
    ],
    ("service", 2, "upset", False): [
        "说好48小时发货，五天了{p}还没到",
        "快递太慢了，{p}等了一个星期，客服也不回复",
    ],
    ("advertising", 2, "upset", False): [
        "{p}颜色和图片不一样，与描述不符",
        "页面写的参数和收到的{p}不一致",
    ],
    ("refund", 2, "upset", False): [
        "{p}申请退货退款一周了还没处理",
        "刚买{p}就降价了，不给保价",
    ],
    ("refund", 1, "angry", True): [
        "{p}再不退款我就打12315投诉你们",
        "{p}是假货，必须退一赔三，不然就起诉",
    ],
    ("other", 3, "calm", False): [
        "{p}很好用，推荐大家买",
        "物流很快，{p}不错，五星好评",
        "请问{p}支持安卓手机吗",
    ],
}
_PRODUCTS = ["摄像头", "麦克风", "声卡", "补光灯", "采集卡"]


def make_records() -> list[dict]:
    """About a hundred labeled messages covering every class of every head."""
    records = []
    for (dispute, urgency, emotion, escalation), templates in _TEMPLATES.items():
        for template in templates:
            for product in _PRODUCTS:
                records.append(
                    {
                        "id": f"t{len(records):03d}",
                        "text": template.format(p=product),
                        "dispute_type": dispute,
                        "urgency": urgency,
                        "emotion": emotion,
                        "escalation": escalation,
                    }
                )
    return records


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_records() -> list[dict]:
    return make_records()


@pytest.fixture(scope="session")
def tiny_backend(tiny_records):
    from models.training import train_backend

    return train_backend(tiny_records, "sklearn")


@pytest.fixture
def tiny_store(tmp_path, tiny_backend):
    from models.store import ModelStore

    store = ModelStore(tmp_path / "models")
    store.set_current(store.save(tiny_backend, {"data_hash": "sha256:test"}))
    return store


@pytest.fixture(scope="session")
def tiny_core_triager(tiny_backend):
    from triage.triager import Triager

    return Triager(tiny_backend, "test-version")
