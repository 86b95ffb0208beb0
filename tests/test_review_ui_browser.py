"""End to end in a real browser (Debian's chromium through Playwright): log in with a password,
see the queue in Chinese, correct a case, watch deadlines and tier change in the database and
the API, confirm with the keyboard, hit a conflict, retrain from the UI and see a new promoted
version; switch to English; deadlines in Beijing time; no request to any other host.

With ``TRIAGE_SCREENSHOTS=DIR`` set, the queue, case and dashboard screenshots for the README
are written to DIR (``docs/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import skip_unless_ci

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
XSS_TEXT = '摄像头黑屏<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>开不了机'
PASSWORDS = {"rita": "rita-pass-0001", "sam": "sam-pass-0002", "ann": "ann-pass-0003", "lin": "lin-pass-0004"}
BEIJING = timezone(timedelta(hours=8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(root, texts, **overrides):
    """The API and the desk on a free port, users rita (admin), sam and lin (reviewers), ann
    (agent) with passwords and keys, and one case per text."""
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        skip_unless_ci("Debian's chromium is not installed (make browser)")
    pytest.importorskip("playwright.sync_api")
    import uvicorn

    from api.app import create_app
    from review_fixtures import make_service, make_settings, train_tiny_model

    # margin 1.0: this test is about the flow; the gate itself is tested in test_learning.py
    settings = make_settings(root, per_type=12, promotion_margin=1.0, retrain_after_confirmations=1000, **overrides)
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    keys = {}
    for name, role in (("rita", "admin"), ("sam", "reviewer"), ("ann", "agent"), ("lin", "reviewer")):
        service.create_user(name, role)
        _, keys[name] = service.create_api_key(name, ["admin" if role == "admin" else "review"])
        service.set_password(name, PASSWORDS[name])
    cases = {i: service.ingest({"source": "ui", "external_id": f"u{i}", "text": text}).case.id
             for i, text in enumerate(texts)}
    app = create_app(settings, service=service, background=False)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.1)
    assert uv.started, "uvicorn did not start"
    try:
        yield {"url": f"http://127.0.0.1:{port}", "service": service, "store": store, "cases": cases, "keys": keys}
    finally:
        uv.should_exit = True
        thread.join(10)
        service.db.dispose()


TEXTS = [XSS_TEXT, "快递五天才到，客服也不回", "衣服颜色和图片有点不一样", "降价了不给保价，要求退差价",
         "耳机用了两天左边没声音了", "客服说给补发赠品一直没发"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("browser"), TEXTS) as running:
        yield running


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """Every first review goes to a second, blind reviewer."""
    with running_server(tmp_path_factory.mktemp("team"), TEXTS[1:], review_double_share=1.0) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def login(browser, server, user, locale="zh-CN", wait=True):
    """A fresh browser context (its own cookies) logged in as ``user`` with the password form;
    every request the page makes is recorded in ``page.requested``."""
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs, requested = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requested.append(r.url))
    page.requested = requested
    page.goto(server["url"] + "/review/")
    assert page.url.endswith("/review/login")
    page.locator("#username").fill(user)
    page.locator("#password").fill(PASSWORDS[user])
    page.locator("#login-btn").click()
    if wait:
        page.locator("#queue-table").wait_for(timeout=30000)
    return page, dialogs


def wait_text(page, selector, text, timeout=15000):
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel); return e && e.innerText.includes(text); }",
        arg=[selector, text], timeout=timeout)


def open_case(page, case_id):
    page.locator("#open-case input").fill(str(case_id))
    page.locator("#open-btn").click()
    page.wait_for_function(
        "id => { const e = document.querySelector('#item-text'); const t = e ? e.innerText : '';"
        " return t.includes('案件 ' + id + ' ·') || t.includes('Case ' + id + ' ·'); }",
        arg=case_id, timeout=15000)


def next_case_opened(page, case_id):
    """After a decision the queue's next case opens by itself (and no later update replaces it)."""
    page.wait_for_function(
        "id => { const e = document.querySelector('#item-text'); const t = e ? e.innerText : '';"
        " return t.length > 0 && !t.includes('案件 ' + id + ' ·') && !t.includes('Case ' + id + ' ·'); }",
        arg=case_id, timeout=15000)


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def status_text(page):
    return page.locator("#review-status").inner_text()


def case_version(service, case_id) -> int:
    from triage.store import Case

    with service.db.session() as s:
        return s.get(Case, case_id).version


def shoot(page, name, locator=None):
    folder = os.environ.get("TRIAGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (locator or page).screenshot(path=str(Path(folder) / f"{name}.png"))


def test_agent_role_and_wrong_password_cannot_log_in(browser, server):
    page, _ = login(browser, server, "ann", wait=False)  # the right password, but role agent
    page.locator("#login-error").wait_for(timeout=15000)
    assert "用户名或密码错误" in page.locator("#login-error").inner_text()
    assert page.locator("#queue-table").count() == 0
    page.locator("#password").fill("not-her-password")
    page.locator("#login-btn").click()
    page.locator("#login-error").wait_for(timeout=15000)
    # without a session the UI's own routes answer nothing
    import httpx

    assert httpx.get(server["url"] + "/review/config").status_code == 401
    page.context.close()


def test_review_flow_in_the_browser(browser, server):
    service, cases = server["service"], server["cases"]
    page, dialogs = login(browser, server, "rita")
    wait_text(page, "#queue-info", "待审")
    assert "争议类型" in page.locator("#label-type").inner_text()
    assert page.get_by_role("button", name="确认 (c)").is_visible() and page.get_by_role("button", name="跳过 (n)").is_visible()
    assert page.get_by_role("tab", name="待审队列").is_visible()
    shoot(page, "queue")

    # the complaint with HTML in it is shown as text, and nothing in it ran
    open_case(page, cases[0])
    shown = page.locator("#item-text .message-text").inner_text()
    assert "<img src=x" in shown and "<script>" in shown
    assert page.evaluate("window.__xss") is None and not dialogs
    assert page.locator("#item-text img").count() == 0 and page.locator("#item-text .message-text script").count() == 0
    assert page.locator("#item-details table.labels").count() == 1
    assert "紧急程度" in page.locator("#item-details table.labels").inner_text()
    assert page.locator("#item-guideline li").count() >= 3

    # the deadline in Beijing time (the policy's timezone), with a countdown
    case0 = service.get_case(cases[0])
    beijing = case0.respond_due_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")
    sla = page.locator("#item-details table.sla").inner_text()
    assert f"{beijing} 北京时间" in sla and "剩余" in sla
    assert case0.respond_due_at.strftime("%Y-%m-%d %H:%M") not in sla or case0.respond_due_at.utcoffset() == timedelta(hours=8)
    assert beijing in page.locator("#queue-table").inner_text()
    page.locator("#open-case").scroll_into_view_if_needed()
    page.evaluate("document.querySelector('#open-case').scrollIntoView({block: 'start'})")
    shoot(page, "case")
    page.evaluate("window.scrollTo(0, 0)")

    # correct grade and type: deadlines and tier follow the policy, in the DB and the API
    target = cases[2]
    before = service.get_case(target)
    new_grade = "一级 紧急" if before.grade != 1 else "三级 轻微"
    new_type = "质量问题" if before.dispute_type != "quality" else "服务履约"
    open_case(page, target)
    pick(page, "label-grade", new_grade)
    pick(page, "label-type", new_type)
    page.locator("#note textarea").fill("customer called again")
    page.locator("#correct-btn").click()
    wait_text(page, "#review-status", "已修改")
    next_case_opened(page, target)
    after = service.get_case(target)
    assert after.grade == (1 if new_grade.startswith("一") else 3)
    assert after.dispute_type == ("quality" if new_type == "质量问题" else "service") and after.labels_source == "review"
    assert after.respond_due_at != before.respond_due_at
    if after.grade == 1:
        assert after.tier != before.tier or before.grade == 1
    import httpx

    api = httpx.get(f"{server['url']}/v1/cases/{target}", headers={"Authorization": f"Bearer {server['keys']['rita']}"})
    assert api.status_code == 200 and api.json()["grade"] == after.grade and api.json()["tier"] == after.tier
    assert api.json()["respond_due_at"].startswith(after.respond_due_at.isoformat()[:16])  # the API stays ISO 8601

    # keyboard: 'c' confirms the open case
    open_case(page, cases[1])
    page.locator("#item-text").click()
    page.keyboard.press("c")
    wait_text(page, "#review-status", "已确认案件")
    next_case_opened(page, cases[1])
    assert service.get_case(cases[1]).labels_source == "review"

    # keyboard: number keys pick labels (1-5 type, g then 1-3 urgency), 'c' saves them
    open_case(page, cases[4])
    before = service.get_case(cases[4])
    type_key = "2" if before.dispute_type != "service" else "3"
    page.locator("#item-text").click()
    page.keyboard.press(type_key)
    page.keyboard.press("g")
    page.keyboard.press("1" if before.grade != 1 else "2")
    expected_type = {"2": "服务履约", "3": "宣传不符"}[type_key]
    expected_grade = "一级 紧急" if before.grade != 1 else "二级 一般"
    page.wait_for_function("([t, g]) => document.querySelector('#label-type input').value === t"
                           " && document.querySelector('#label-grade input').value === g",
                           arg=[expected_type, expected_grade], timeout=15000)
    page.locator("#item-text").click()
    page.keyboard.press("c")
    wait_text(page, "#review-status", "已修改")
    keyed = service.get_case(cases[4])
    assert keyed.dispute_type == {"2": "service", "3": "advertising"}[type_key]
    assert keyed.grade == (1 if before.grade != 1 else 2)
    next_case_opened(page, cases[4])  # ... and the next case opened at once

    # the case rita opened is hers for a few minutes: another reviewer's decision is refused
    open_case(page, cases[3])
    held = case_version(service, cases[3])
    r = httpx.post(f"{server['url']}/v1/cases/{cases[3]}/review", json={"action": "confirm", "expected_version": held},
                   headers={"Authorization": f"Bearer {server['keys']['sam']}"})
    assert r.status_code == 409 and "rita" in r.text
    # the case changed meanwhile (an agent answered): the UI says conflict, nothing is overwritten
    service.record_case_event(cases[3], "first_response", "api:desk", agent="小王")
    assert case_version(service, cases[3]) != held
    page.locator("#confirm-btn").click()
    wait_text(page, "#review-status", "冲突")
    with service.db.session() as s:
        from triage.store import ReviewDecision

        assert s.query(ReviewDecision).filter_by(case_id=cases[3]).count() == 0

    # history shows the correction
    open_case(page, target)
    assert "corrected" in page.locator("#item-history").inner_text()

    # retrain from the Models tab: a new version becomes current
    first = server["store"].current_version()
    page.get_by_role("tab", name="模型版本").click()
    page.locator("#retrain-btn").click()
    wait_text(page, "#job-status", "已完成", timeout=180000)
    current = server["store"].current_version()
    assert current != first and service.triager.version == current
    assert server["store"].read_manifest(current)["status"] == "promoted"
    wait_text(page, "#models-table", current)

    # dashboard renders its numbers and charts
    page.get_by_role("tab", name="统计看板").click()
    wait_text(page, "#dashboard-summary", "待审")
    assert "近30天审核： 3" in page.locator("#dashboard-summary").inner_text()
    wait_text(page, "#early-warning", "激增预警")
    assert "没有未处理的激增预警" in page.locator("#early-warning").inner_text()
    page.wait_for_function("document.querySelectorAll('img').length >= 3 || document.querySelectorAll('.js-plotly-plot, canvas, svg').length >= 3",
                           timeout=15000)
    page.wait_for_timeout(500)
    shoot(page, "dashboard")

    # every request went to this server: no web fonts, CDNs or analytics
    hosts = {urlsplit(u).netloc for u in page.requested if not u.startswith(("data:", "blob:"))}
    assert hosts == {urlsplit(server["url"]).netloc}, hosts
    assert not dialogs

    # log out: the session ends, the UI sends back to the log-in page
    page.get_by_role("tab", name="待审队列").click()
    page.locator("#logout-link").click()
    page.locator("#login-notice").wait_for(timeout=15000)
    page.goto(server["url"] + "/review/")
    assert page.url.endswith("/review/login?notice=expired") or page.url.endswith("/review/login")
    page.context.close()


def test_english_by_choice_and_by_browser(browser, server):
    service, cases = server["service"], server["cases"]
    page, _ = login(browser, server, "sam")
    wait_text(page, "#queue-info", "待审")
    page.get_by_label("English").check()
    wait_text(page, "#queue-info", "waiting")
    wait_text(page, "#label-type", "Dispute type")
    assert page.get_by_role("button", name="Confirm (c)").is_visible()
    assert page.get_by_role("tab", name="Queue").is_visible()
    assert "next deadline" in page.locator("#queue-table").inner_text()
    open_case(page, cases[5])
    assert "Beijing time" in page.locator("#item-details table.sla").inner_text()
    assert "Urgency" in page.locator("#item-details table.labels").inner_text()
    with service.db.session() as s:
        from triage.store import User

        assert s.query(User).filter_by(name="sam").one().language == "en"  # stored: the next log-in is English
    page.context.close()
    page, _ = login(browser, server, "sam", locale="zh-CN")
    wait_text(page, "#queue-info", "waiting")
    page.context.close()

    # no stored choice: the browser's Accept-Language decides
    page, _ = login(browser, server, "lin", locale="en-US")
    wait_text(page, "#queue-info", "waiting")
    page.context.close()
    page, _ = login(browser, server, "rita", locale="zh-CN")
    wait_text(page, "#queue-info", "待审")
    page.context.close()


def shown_case(page) -> int:
    page.wait_for_function("document.querySelector('#item-text .case-version')", timeout=15000)
    import re

    return int(re.search(r"(?:案件|Case) (\d+) ·", page.locator("#item-text").inner_text()).group(1))


def test_two_reviewers_get_different_cases_and_a_disagreement_reaches_the_supervisor(browser, team_server):
    service = team_server["service"]
    sam, _ = login(browser, team_server, "sam")
    lin, _ = login(browser, team_server, "lin")
    sam_case, lin_case = shown_case(sam), shown_case(lin)
    assert sam_case != lin_case  # each page claimed its own case
    assert "你正在处理此案件" in sam.locator("#item-text").inner_text()
    # lin's queue does not list the case sam holds; opening it says who holds it
    lin.locator("#refresh-btn").click()
    lin.wait_for_function("id => !document.querySelector('#queue-table').innerText.split('\\n')"
                          ".some(line => line.startsWith(String(id) + '\\t'))", arg=sam_case, timeout=15000)
    open_case(lin, sam_case)
    wait_text(lin, "#review-status", "sam 正在处理此案件")

    # sam confirms: with every case double-reviewed, it waits for a second, blind review
    sam.locator("#item-text").click()
    sam.keyboard.press("c")
    wait_text(sam, "#review-status", "交给另一位审核员")
    assert service.get_case(sam_case).labels_source == "model"

    # lin takes the second reviews: sam's case, without sam's decision; lin disagrees
    lin.get_by_label("复核（盲审）").check()
    lin.wait_for_function("id => document.querySelector('#item-text').innerText.includes('案件 ' + id + ' ·')",
                          arg=sam_case, timeout=15000)
    assert "sam" not in lin.locator("#item-history").inner_text()
    before = service.get_case(sam_case)
    other_grade = "一级 紧急" if before.grade != 1 else "三级 轻微"
    pick(lin, "label-grade", other_grade)
    lin.locator("#correct-btn").click()
    wait_text(lin, "#review-status", "已转主管裁定")
    assert service.get_case(sam_case).labels_source == "model"

    # rita (admin, a supervisor) adjudicates with both decisions in view; the final label is applied
    rita, _ = login(browser, team_server, "rita")
    rita.get_by_label("主管裁定").check()
    rita.wait_for_function("id => document.querySelector('#item-text').innerText.includes('案件 ' + id + ' ·')",
                           arg=sam_case, timeout=15000)
    decisions = rita.locator("#adjudication").inner_text()
    assert "sam" in decisions and "lin" in decisions
    pick(rita, "label-grade", other_grade)
    rita.locator("#correct-btn").click()
    wait_text(rita, "#review-status", "已修改")
    final = service.get_case(sam_case)
    assert final.labels_source == "review" and final.grade == (1 if other_grade.startswith("一") else 3)

    # the dashboard's agreement section counts the double review and the adjudication
    rita.get_by_role("tab", name="统计看板").click()
    wait_text(rita, "#agreement-summary", "主管裁定 1")
    rita.wait_for_timeout(800)
    rita.evaluate("document.querySelector('#agreement-summary').scrollIntoView({block: 'start'})")
    shoot(rita, "agreement")
    for page in (sam, lin, rita):
        page.context.close()
