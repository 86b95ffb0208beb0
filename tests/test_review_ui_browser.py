"""End to end in a real browser (Debian's chromium through Playwright): log in, see the queue,
correct a case, watch deadlines and tier change in the database and the API, confirm with the
keyboard, hit a conflict, retrain from the UI and see a new promoted version.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import skip_unless_ci

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
XSS_TEXT = '摄像头黑屏<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>开不了机'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        skip_unless_ci("Debian's chromium is not installed (make browser)")
    pytest.importorskip("playwright.sync_api")
    import uvicorn

    from api.app import create_app
    from review_fixtures import make_service, make_settings, train_tiny_model

    root = tmp_path_factory.mktemp("browser")
    # margin 1.0: this test is about the flow; the gate itself is tested in test_learning.py
    settings = make_settings(root, per_type=12, promotion_margin=1.0, retrain_after_confirmations=1000)
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    service.create_user("rita", "admin")
    _, rita_key = service.create_api_key("rita", ["admin"])
    service.create_user("sam", "reviewer")
    _, sam_key = service.create_api_key("sam", ["review"])
    service.create_user("ann", "agent")
    _, ann_key = service.create_api_key("ann", ["review"])
    cases = {}
    for i, text in enumerate([XSS_TEXT, "快递五天才到，客服也不回", "衣服颜色和图片有点不一样", "降价了不给保价，要求退差价"]):
        cases[i] = service.ingest({"source": "ui", "external_id": f"u{i}", "text": text}).case.id
    app = create_app(settings, service=service, background=False)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.1)
    assert uv.started, "uvicorn did not start"
    yield {"url": f"http://127.0.0.1:{port}", "service": service, "store": store, "cases": cases,
           "keys": {"rita": rita_key, "sam": sam_key, "ann": ann_key}}
    uv.should_exit = True
    thread.join(10)
    service.db.dispose()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def login(browser, server, user):
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server["url"] + "/review/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(server["keys"][user])
    page.get_by_role("button", name="Login").click()
    return page, dialogs


def open_case(page, case_id):
    page.locator("#open-case input").fill(str(case_id))
    page.locator("#open-btn").click()
    page.wait_for_function(
        "id => document.querySelector('#item-text') && document.querySelector('#item-text').innerText.includes('Case ' + id)",
        arg=case_id, timeout=15000)


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def status_text(page):
    return page.locator("#review-status").inner_text()


def test_agent_role_cannot_log_in(browser, server):
    page, _ = login(browser, server, "ann")
    page.wait_for_timeout(1500)
    assert page.locator("#queue-table").count() == 0
    assert page.get_by_role("button", name="Login").is_visible()
    page.close()


def test_review_flow_in_the_browser(browser, server):
    service, cases = server["service"], server["cases"]
    page, dialogs = login(browser, server, "rita")
    page.locator("#queue-table").wait_for(timeout=30000)
    page.wait_for_function("document.querySelector('#queue-info').innerText.includes('waiting')", timeout=15000)

    # the complaint with HTML in it is shown as text, and nothing in it ran
    open_case(page, cases[0])
    shown = page.locator("#item-text .message-text").inner_text()
    assert "<img src=x" in shown and "<script>" in shown
    assert page.evaluate("window.__xss") is None and not dialogs
    assert page.locator("#item-text img").count() == 0 and page.locator("#item-text .message-text script").count() == 0
    assert page.locator("#item-details table.labels").count() == 1
    assert page.locator("#item-guideline li").count() >= 3

    # correct grade and type: deadlines and tier follow the policy, in the DB and the API
    target = cases[2]
    before = service.get_case(target)
    new_grade = "1 一级 紧急" if before.grade != 1 else "3 三级 轻微"
    new_type = "quality" if before.dispute_type != "quality" else "service"
    open_case(page, target)
    pick(page, "label-grade", new_grade)
    pick(page, "label-type", new_type)
    page.locator("#note textarea").fill("customer called again")
    page.locator("#correct-btn").click()
    page.wait_for_function("document.querySelector('#review-status').innerText.includes('Corrected')", timeout=15000)
    after = service.get_case(target)
    assert after.grade == int(new_grade[0]) and after.dispute_type == new_type and after.labels_source == "review"
    assert after.respond_due_at != before.respond_due_at
    if after.grade == 1:
        assert after.tier != before.tier or before.grade == 1
    import httpx

    api = httpx.get(f"{server['url']}/v1/cases/{target}", headers={"Authorization": f"Bearer {server['keys']['rita']}"})
    assert api.status_code == 200 and api.json()["grade"] == after.grade and api.json()["tier"] == after.tier
    assert api.json()["respond_due_at"].startswith(after.respond_due_at.isoformat()[:16])

    # keyboard: 'c' confirms the open case
    open_case(page, cases[1])
    page.locator("#item-text").click()
    page.keyboard.press("c")
    page.wait_for_function("document.querySelector('#review-status').innerText.includes('Confirmed case')", timeout=15000)
    assert service.get_case(cases[1]).labels_source == "review"

    # a second reviewer decided meanwhile: the UI says conflict, nothing is overwritten
    open_case(page, cases[3])
    version = httpx.get(f"{server['url']}/v1/review/queue", headers={"Authorization": f"Bearer {server['keys']['sam']}"}
                        ).json()["items"]
    version = next(i["version"] for i in version if i["case_id"] == cases[3])
    r = httpx.post(f"{server['url']}/v1/cases/{cases[3]}/review", json={"action": "confirm", "expected_version": version},
                   headers={"Authorization": f"Bearer {server['keys']['sam']}"})
    assert r.status_code == 200
    page.locator("#confirm-btn").click()
    page.wait_for_function("document.querySelector('#review-status').innerText.includes('Conflict')", timeout=15000)
    with service.db.session() as s:
        from triage.store import ReviewDecision

        assert [d.reviewer for d in s.query(ReviewDecision).filter_by(case_id=cases[3])] == ["sam"]

    # history shows the correction
    open_case(page, target)
    assert "corrected" in page.locator("#item-history").inner_text()

    # retrain from the Models tab: a new version becomes current
    first = server["store"].current_version()
    page.get_by_role("tab", name="Models").click()
    page.locator("#retrain-btn").click()
    page.wait_for_function("document.querySelector('#job-status').innerText.includes('finished')", timeout=180000)
    current = server["store"].current_version()
    assert current != first and service.triager.version == current
    assert server["store"].read_manifest(current)["status"] == "promoted"
    page.wait_for_function(f"document.querySelector('#models-table').innerText.includes('{current}')", timeout=15000)

    # dashboard renders its numbers
    page.get_by_role("tab", name="Dashboard").click()
    page.wait_for_function("document.querySelector('#dashboard-summary').innerText.includes('Queue')", timeout=15000)
    assert "reviews (30 days): 3" in page.locator("#dashboard-summary").inner_text()
    page.wait_for_function("document.querySelector('#early-warning').innerText.includes('Surge alerts')", timeout=15000)
    assert "No open surge alert" in page.locator("#early-warning").inner_text()
    assert not dialogs
    page.close()
