"""Early warning: products and batches found in the text, the Poisson surge test, and surge
alerts on generated streams with received times (steady background, a burst, a backfill,
two monitors on one database), their API and the recall incidents opened from them."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from fixtures_db import T0
from triage.catalogue import Catalogue, find_batch
from triage.jobs.sla_monitor import SlaMonitor
from triage.policy import Policy, SurveillanceSpec
from triage.service import TriageService
from triage.settings import PROJECT_ROOT
from triage.store import Database, SurgeAlert, WebhookDelivery
from triage.surveillance import Complaint, detect, poisson_p_value

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL

H = timedelta(hours=1)
DAY = timedelta(days=1)
PRODUCTS = {"SND-X5": "X5声卡", "LGT-RING18": "R18补光灯", "MIC-LAV2": "L2领夹麦", "CAM-4K60": "C1摄像机",
            "FOOD-BEEF": "牛肉干"}
BACKGROUND = (
    "买的{p}用了一周就有杂音，怎么处理",
    "{p}发货太慢了，客服一直不回复",
    "{p}申请退款三天了还没处理",
    "{p}和直播间里说的参数不一样",
    "{p}收到的时候外包装破了，想换一个",
)
BURST = "{p}插上电脑就没声音了，直播完全用不了，尽快处理"
BURST_SAFETY = "{p}插上电源就冒烟了，还漏电，吓死人"


def background_stream(start: datetime, days: int, per_day: float = 3.0, seed: int = 7, products=PRODUCTS):
    """Messages about several products at a steady Poisson rate, uniformly in time."""
    rng = np.random.default_rng(seed)
    out = []
    for sku, name in products.items():
        for day in range(days):
            for _ in range(rng.poisson(per_day)):
                at = start + day * DAY + timedelta(seconds=float(rng.uniform(0, 86400)))
                text = BACKGROUND[int(rng.integers(len(BACKGROUND)))].format(p=name)
                out.append({"source": "shop", "external_id": f"bg-{sku}-{len(out)}", "text": text,
                            "received_at": at.isoformat()})
    return sorted(out, key=lambda m: m["received_at"])


def burst(start: datetime, name: str = "X5声卡", n: int = 8, safety: int = 3, span=2 * H, tag="burst"):
    """``n`` quality complaints about one product within ``span``; ``safety`` of them with safety words."""
    return [{"source": "shop", "external_id": f"{tag}-{i}",
             "text": (BURST_SAFETY if i < safety else BURST).format(p=name),
             "received_at": (start + span * i / max(n - 1, 1)).isoformat()} for i in range(n)]


def ingest(service, messages):
    for start in range(0, len(messages), 1000):
        results = service.ingest_many(messages[start:start + 1000])
        assert not [r.error for r in results if r.error]


# ----------------------------------------------------------------------------- domain


def test_catalogue_finds_products_and_batches():
    catalogue = Catalogue.load(PROJECT_ROOT / "datasets" / "catalogue.csv")
    assert len(catalogue.products) >= 30
    assert catalogue.find("我在直播间买的X5声卡插上就冒烟").sku == "SND-X5"
    assert catalogue.find("ｘ５声卡坏了").sku == "SND-X5"  # full-width, any case
    assert catalogue.find("补光灯一直闪") is None  # no model named: no guess
    assert catalogue.resolve("声卡X5") == "SND-X5" and catalogue.resolve("unknown-9") == "unknown-9"
    assert find_batch("批号：L-0412，昨天到的") == "L-0412"
    assert find_batch("生产日期2026.04.03的那批") == "2026.04.03"
    assert find_batch("盒子上写着 lot 7734A") == "7734A"
    assert find_batch("批次是B2305。") == "B2305"
    assert find_batch("没写批次") is None


def test_catalogue_errors_name_the_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("sku,name,aliases,category\nA1,甲,,x\nA1,乙,,x\n", encoding="utf-8")
    with pytest.raises(Exception, match="line 3"):
        Catalogue.load(path)
    path.write_text("sku,name\nA1,甲\n", encoding="utf-8")
    with pytest.raises(Exception, match="lacks the columns"):
        Catalogue.load(path)


def test_poisson_test_names_both_scopes_and_safety_lowers_the_bar():
    spec = SurveillanceSpec()
    at = T0 + 30 * DAY
    steady = [Complaint(i, T0 + i * 8 * H, "service") for i in range(90)]  # 3 a day for 30 days
    assert detect(steady, spec, at) == []
    quality = [Complaint(1000 + i, at - 2 * H + i * 15 * timedelta(minutes=1), "quality") for i in range(8)]
    signals = detect(steady + quality, spec, quality[-1].received_at)
    assert [s.scope for s in signals] == ["product", "product x quality"]
    assert signals[0].count >= 8 and signals[0].p_value <= spec.alpha
    assert signals[0].expected == pytest.approx(3.0 * 6 / 24, rel=0.1)
    assert poisson_p_value(signals[0].count, signals[0].expected) == signals[0].p_value
    # Four quality complaints: below the minimum count; with two safety ones, a surge.
    four = quality[:4]
    assert detect(steady + four, spec, four[-1].received_at) == []
    unsafe = [Complaint(c.case_id, c.received_at, c.dispute_type, safety=i < 2) for i, c in enumerate(four)]
    fired = detect(steady + unsafe, spec, unsafe[-1].received_at)
    assert fired and fired[0].safety_count == 2 and fired[0].alpha == spec.safety_alpha


def test_policy_sections_are_validated():
    import tomllib

    from triage.errors import PolicyError
    from triage.policy import DEFAULT_POLICY_PATH

    data = tomllib.loads(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    assert Policy.from_dict(data).spec.surveillance == SurveillanceSpec()  # the file states the defaults
    for section, key, value, message in (("recall", "owner", "ceo", "recall.owner"),
                                         ("surveillance", "alpha", 1.5, "surveillance.alpha"),
                                         ("followup", "due_hours", 0, "followup.due_hours"),
                                         ("surveillance", "window", 6, "surveillance.window")):
        bad = {**data, section: {**data[section], key: value}}
        with pytest.raises(PolicyError, match=message.replace(".", r"\.")):
            Policy.from_dict(bad)


# ----------------------------------------------------------------------------- service


def test_case_carries_product_batch_and_order(make_service):
    service = make_service()
    given = service.ingest({"source": "s", "external_id": "1", "text": "声卡坏了", "product": "X5声卡",
                            "batch": "B-77", "order_id": "DD-1"}).case
    assert (given.product, given.product_source, given.batch, given.order_id) == ("SND-X5", "field", "B-77", "DD-1")
    found = service.ingest({"source": "s", "external_id": "2", "text": "R18补光灯一直闪，批号L-0412"}).case
    assert (found.product, found.product_source, found.batch) == ("LGT-RING18", "text", "L-0412")
    none = service.ingest({"source": "s", "external_id": "3", "text": "客服不回复"}).case
    assert (none.product, none.product_source, none.batch) == (None, None, None)
    assert service.get_case(found.id).product == "LGT-RING18"


def test_steady_background_raises_nothing_and_a_burst_raises_one_alert(make_service, clock, database):
    service = make_service(webhook_urls=["http://127.0.0.1:9/hook"])
    end = T0 + 30 * DAY
    clock.moment = end
    ingest(service, background_stream(T0, 30))
    monitor = SlaMonitor(service)
    report = monitor.run_once()
    assert report.surges == [] and service.list_alerts() == []

    clock.moment = end + 2 * H
    ingest(service, burst(end))
    report = monitor.run_once()
    alerts = service.list_alerts()
    assert len(alerts) == 1 and report.surges == [alerts[0].id]
    alert = alerts[0]
    assert alert.product == "SND-X5" and "product" in alert.scopes and alert.status == "open"
    burst_ids = {c.id for c in service.list_cases(limit=1000) if c.external_id.startswith("burst-")}
    assert burst_ids <= set(alert.case_ids)
    # the three safety complaints came first: the safety bar raised it at the third
    assert alert.safety_count == 3 and alert.alpha == 0.01 and alert.p_value <= alert.alpha and alert.count >= 3
    assert monitor.run_once().surges == [] and len(service.list_alerts()) == 1  # once
    assert service.list_alerts(product="LGT-RING18") == [] and len(service.list_alerts(product="X5声卡")) == 1

    # a later complaint of the same surge joins the alert instead of raising another
    clock.moment = end + 3 * H
    ingest(service, burst(end + 2.5 * H, n=1, safety=1, tag="late"))
    monitor.run_once()
    [again] = service.list_alerts()
    assert len(again.case_ids) == len(alert.case_ids) + 1
    with database.session() as s:
        surge_events = [d.payload for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "surge"))]
    assert len(surge_events) == 1 and surge_events[0]["alert"]["product"] == "SND-X5"
    # the product-level and the quality-level tests fired on the same cases: one alert names both
    assert set(again.scopes) == {"product", "product x quality"} and again.dispute_type is None
    assert {a.action for a in service.list_audit("alert", alert.id)} == {"alert.raised", "alert.widened"}


def test_backfill_raises_the_historic_alert_once(make_service, clock):
    service = make_service()
    clock.moment = T0 + 40 * DAY
    products = dict(list(PRODUCTS.items())[:3])
    surge_at = T0 + 20 * DAY + 10 * H
    stream = background_stream(T0, 30, products=products, seed=11) + burst(surge_at, name="L2领夹麦", safety=0)
    ingest(service, sorted(stream, key=lambda m: m["received_at"]))
    first = service.list_cases(limit=1)[0]
    assert len(service.scan_surges(clock.moment).raised) == 1
    assert service.get_case(first.id).updated_at == first.updated_at  # surveying is not a change of the case
    monitor = SlaMonitor(service)
    assert monitor.run_once().surges == [] and monitor.run_once().surges == []
    [alert] = service.list_alerts()
    assert alert.product == "MIC-LAV2" and alert.safety_count == 0
    assert surge_at <= alert.window_end <= surge_at + 2 * H  # judged at the month it came from
    assert alert.detected_at == clock.moment
    assert service.list_alerts(since=T0 + 25 * DAY) == [] and len(service.list_alerts(since=T0 + 20 * DAY)) == 1


def test_two_monitors_on_one_database_raise_one_alert(make_service, clock, database, database_url, tiny_triager):
    service = make_service()
    other_db = Database(database_url)
    other = TriageService(other_db, Policy.load(), tiny_triager, service.settings, now=clock, webhook_urls=[])
    clock.moment = T0 + 10 * DAY
    ingest(service, background_stream(T0, 9, products=dict(list(PRODUCTS.items())[:2]), seed=3)
           + burst(T0 + 9 * DAY + 12 * H))
    barrier = threading.Barrier(2)
    errors = []

    def scan(svc):
        try:
            barrier.wait()
            SlaMonitor(svc).run_once()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scan, args=(s,)) for s in (service, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other_db.dispose()
    assert errors == []
    SlaMonitor(service).run_once()  # whoever skipped the tick catches up: still one
    with database.session() as s:
        assert len(s.scalars(select(SurgeAlert)).all()) == 1


SCAN_IN_ANOTHER_PROCESS = """
import sys, time
from datetime import datetime
from triage.jobs.sla_monitor import SlaMonitor
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import Database

url, now, start_at, var_dir = sys.argv[1], datetime.fromisoformat(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
service = TriageService(Database(url), Policy.load(), None, Settings(var_dir=var_dir), webhook_urls=[])
time.sleep(max(0.0, start_at - time.time()))  # both processes scan at the same moment
print(SlaMonitor(service).run_once(now).surges)
"""


def test_two_server_processes_raise_one_alert(make_service, clock, database, database_url, tmp_path):
    import os
    import subprocess
    import sys
    import time

    service = make_service()
    clock.moment = T0 + 10 * DAY
    ingest(service, background_stream(T0, 9, products=dict(list(PRODUCTS.items())[:2]), seed=5)
           + burst(T0 + 9 * DAY + 12 * H))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    start_at = str(time.time() + 8)
    procs = [subprocess.Popen([sys.executable, "-c", SCAN_IN_ANOTHER_PROCESS, database_url, clock.moment.isoformat(),
                               start_at, str(tmp_path / f"var{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    raised = [out.strip() for out, _ in outputs]
    assert raised.count("[]") == 1, raised  # one of them raised it, the other found nothing left
    with database.session() as s:
        assert len(s.scalars(select(SurgeAlert)).all()) == 1


# ----------------------------------------------------------------------------- API


@pytest.fixture
def surge_client(make_service, clock):
    service = make_service()
    service.create_user("li", "reviewer")
    service.create_user("desk", "integration")
    keys = {"review": service.create_api_key("li", ["review"])[1],
            "ingest": service.create_api_key("desk", ["ingest"])[1]}
    clock.moment = T0 + 3 * H
    ingest(service, burst(T0, name="X5声卡", safety=3))
    SlaMonitor(service).run_once()
    app = create_app(service.settings, service=service, background=False)
    with TestClient(app) as client:
        yield client, service, keys


def hdr(key):
    return {"Authorization": f"Bearer {key}"}


def test_alerts_api_filters_and_bad_input(surge_client):
    client, service, keys = surge_client
    r = client.get("/v1/alerts", headers=hdr(keys["ingest"]))
    assert r.status_code == 200
    [alert] = r.json()["alerts"]
    assert alert["product"] == "SND-X5" and len(alert["case_ids"]) == 8 and alert["expected"] > 0
    assert client.get("/v1/alerts?status=dismissed", headers=hdr(keys["review"])).json()["alerts"] == []
    assert client.get("/v1/alerts?product=R18补光灯", headers=hdr(keys["review"])).json()["alerts"] == []
    assert client.get(f"/v1/alerts/{alert['id']}", headers=hdr(keys["review"])).json()["id"] == alert["id"]
    assert client.get("/v1/alerts/999", headers=hdr(keys["review"])).status_code == 404
    for query in ("status=bogus", "since=2026-05-01T00:00:00", "limit=0"):
        r = client.get(f"/v1/alerts?{query}", headers=hdr(keys["review"]))
        assert r.status_code == 422, query
    assert client.get("/v1/alerts").status_code == 401
    r = client.post(f"/v1/alerts/{alert['id']}/events", json={"event": "acknowledge"}, headers=hdr(keys["ingest"]))
    assert r.status_code == 403
    r = client.post(f"/v1/alerts/{alert['id']}/events", json={"event": "dismiss"}, headers=hdr(keys["review"]))
    assert r.status_code == 422 and "reason" in r.text
    r = client.post(f"/v1/alerts/{alert['id']}/events", json={"event": "explode"}, headers=hdr(keys["review"]))
    assert r.status_code == 422
    assert service.get_alert(alert["id"]).status == "open"  # nothing changed by bad input
    r = client.post("/v1/messages", json={"source": "s", "external_id": "x", "text": "坏了", "product": "  "},
                    headers=hdr(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "product"
    r = client.post("/v1/messages", json={"source": "s", "external_id": "x", "text": "坏了", "batch": "b" * 101},
                    headers=hdr(keys["ingest"]))
    assert r.status_code == 422


def test_acknowledge_dismiss_and_recall_incident(surge_client, clock):
    client, service, keys = surge_client
    alert_id = service.list_alerts()[0].id
    r = client.post(f"/v1/alerts/{alert_id}/events", json={"event": "acknowledge"}, headers=hdr(keys["review"]))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = client.post(f"/v1/alerts/{alert_id}/events", json={"event": "acknowledge"}, headers=hdr(keys["review"]))
    assert r.status_code == 409
    r = client.post(f"/v1/alerts/{alert_id}/events", json={"event": "open_recall", "reason": "冒烟，安全问题"},
                    headers=hdr(keys["review"]))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "recall" and body["incident_id"]
    incident = client.get(f"/v1/incidents/{body['incident_id']}", headers=hdr(keys["review"])).json()
    assert incident["owner"] == "team_leader" and incident["status"] == "open" and not incident["overdue"]
    assert datetime.fromisoformat(incident["due_at"]) == clock.moment + 24 * H
    assert incident["case_ids"] == body["case_ids"]
    r = client.post(f"/v1/alerts/{alert_id}/events", json={"event": "dismiss", "reason": "x"},
                    headers=hdr(keys["review"]))
    assert r.status_code == 409

    # a new complaint about the product, a day later and outside the window, joins the incident
    clock.moment += 30 * H
    ingest(service, [{"source": "shop", "external_id": "after", "text": "X5声卡也冒烟了",
                      "received_at": (clock.moment - H).isoformat()}])
    SlaMonitor(service).run_once()
    incident = client.get(f"/v1/incidents/{body['incident_id']}", headers=hdr(keys["review"])).json()
    assert len(incident["case_ids"]) == 9 and incident["overdue"]
    assert len(service.list_alerts()) == 1

    r = client.patch(f"/v1/incidents/{incident['id']}", json={"owner": "王经理", "status": "recalling",
                                                               "note": "召回批次"}, headers=hdr(keys["review"]))
    assert r.status_code == 200 and r.json()["owner"] == "王经理" and not r.json()["overdue"]
    assert client.patch(f"/v1/incidents/{incident['id']}", json={"status": "nope"},
                        headers=hdr(keys["review"])).status_code == 422
    assert client.patch(f"/v1/incidents/{incident['id']}", json={}, headers=hdr(keys["review"])).status_code == 422
    assert client.patch("/v1/incidents/999", json={"note": "x"}, headers=hdr(keys["review"])).status_code == 404
    audit = service.list_audit("incident", incident["id"])
    assert [a.action for a in audit] == ["incident.opened", "incident.updated"]
    assert audit[1].before == {"owner": "team_leader", "status": "open", "note": "冒烟，安全问题"}
    assert [a.action for a in service.list_audit("alert", alert_id)] == [
        "alert.raised", "alert.acknowledge", "alert.open_recall"]
    listed = client.get("/v1/incidents?status=recalling", headers=hdr(keys["ingest"])).json()["incidents"]
    assert [i["id"] for i in listed] == [incident["id"]]


def test_dismiss_with_reason(surge_client):
    client, service, keys = surge_client
    alert_id = service.list_alerts()[0].id
    r = client.post(f"/v1/alerts/{alert_id}/events", json={"event": "dismiss", "reason": "测试数据"},
                    headers=hdr(keys["review"]))
    assert r.status_code == 200 and r.json()["status"] == "dismissed" and r.json()["reason"] == "测试数据"
    assert [a["id"] for a in client.get("/v1/alerts?status=dismissed",
                                        headers=hdr(keys["review"])).json()["alerts"]] == [alert_id]


def test_review_dashboard_lists_open_alerts_and_incidents(surge_client):
    from review_ui import render

    from review_ui.messages import Translator

    client, service, keys = surge_client
    alert = service.list_alerts()[0]
    en = Translator("en")
    html = render.early_warning(service.list_alerts(), service.list_incidents(), tr=en)
    assert "SND-X5" in html and "No open recall incident" in html
    service.alert_event(alert.id, "open_recall", "li", owner="<b>王</b>")
    html = render.early_warning(service.list_alerts(), service.list_incidents(), tr=en)
    assert "&lt;b&gt;王&lt;/b&gt;" in html and "<b>王</b>" not in html and "No open recall incident" not in html


# ----------------------------------------------------------------------------- daily series


def test_daily_series_counts_per_policy_day_and_carries_the_alert(make_service, clock):
    """Complaints per calendar day in the policy's timezone (Asia/Shanghai), zero days included,
    with the alert of the surge; the same series over the API and as the dashboard's chart."""
    from zoneinfo import ZoneInfo

    from review_ui import charts

    service = make_service()
    end = T0 + 10 * DAY
    clock.moment = end + 3 * H
    ingest(service, background_stream(T0, 10, per_day=2.0, products={"SND-X5": "X5声卡", "MIC-LAV2": "L2领夹麦"}))
    ingest(service, burst(end))
    SlaMonitor(service).run_once()
    [alert] = service.list_alerts()
    series = service.daily_series("X5声卡", days=12)
    assert series.product == "SND-X5" and series.timezone == "Asia/Shanghai" and len(series.days) == 12
    zone = ZoneInfo("Asia/Shanghai")
    cases = [c for c in service.list_cases(limit=1000) if c.product == "SND-X5"]
    by_day = {}
    for c in cases:
        by_day[c.received_at.astimezone(zone).date()] = by_day.get(c.received_at.astimezone(zone).date(), 0) + 1
    assert {d.day: d.count for d in series.days if d.count} == by_day
    assert series.days[-1].day == (end + 3 * H).astimezone(zone).date()
    assert sum(d.count for d in series.days) == len(cases) and [a.id for a in series.alerts] == [alert.id]
    # a window before the surge has no alert; another product has none
    assert service.daily_series("SND-X5", days=3, until=T0 + 5 * DAY).alerts == []
    assert service.daily_series("MIC-LAV2").alerts == []
    # the chart marks the alert: a band over its days and a labelled triangle on the day it was raised
    from review_ui.messages import Translator

    fig = charts.daily_complaints([series, service.daily_series("MIC-LAV2", days=12)], Translator("en"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [f"alert {alert.id}"] and len(ax.patches) == 1
    zh = charts.daily_complaints([series], Translator("zh"))  # the desk's default language
    assert [t.get_text() for t in zh.axes[0].texts] == [f"预警 {alert.id}"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SND-X5", "MIC-LAV2"]
    assert charts.daily_complaints([], Translator("en")).axes[0].texts[0].get_text().startswith("no product")


def test_daily_series_api_and_bad_input(surge_client):
    client, service, keys = surge_client
    r = client.get("/v1/products/X5声卡/daily?days=2", headers=hdr(keys["ingest"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product"] == "SND-X5" and len(body["days"]) == 2 and sum(d["count"] for d in body["days"]) == 8
    assert [a["id"] for a in body["alerts"]] == [a.id for a in service.list_alerts()]
    assert client.get("/v1/products/X5声卡/daily").status_code == 401
    for query in ("days=0", "days=400", "days=x", "until=2026-05-06T10:00:00", "until=yesterday"):
        r = client.get(f"/v1/products/X5声卡/daily?{query}", headers=hdr(keys["review"]))
        assert r.status_code == 422, (query, r.text)
    assert client.get("/v1/products/X5%00/daily", headers=hdr(keys["review"])).status_code == 422
    unknown = client.get("/v1/products/NO-SUCH/daily?days=1", headers=hdr(keys["review"])).json()
    assert unknown["days"][0]["count"] == 0 and unknown["alerts"] == []


# ----------------------------------------------------------------------------- batches, dismissal


def test_batch_level_test_sees_a_bad_lot_the_product_rate_hides():
    spec = SurveillanceSpec()
    at = T0 + 30 * DAY
    # 40 a day over 30 days, half service, half quality, no batch named
    steady = [Complaint(i, T0 + i * 36 * timedelta(minutes=1), ("service", "quality")[i % 2]) for i in range(1200)]
    lot = [Complaint(5000 + i, at - 2 * H + i * 20 * timedelta(minutes=1), "quality", batch="B2405") for i in range(6)]
    signals = detect(steady + lot, spec, lot[-1].received_at)
    assert [s.scope for s in signals] == ["product x batch B2405"]  # the product and its types are within their rates
    assert signals[0].batch == "B2405" and set(signals[0].case_ids) == {c.case_id for c in lot}
    # the same six without a batch raise nothing; five of another batch beside them do not join B2405
    plain = [Complaint(c.case_id, c.received_at, c.dispute_type) for c in lot]
    assert detect(steady + plain, spec, lot[-1].received_at) == []
    # a discounted (dismissed) lot leaves the window count: nothing fires
    assert detect(steady + lot, spec, lot[-1].received_at, discounted={c.case_id for c in lot}) == []


def test_cases_sharing_a_batch_raise_a_batch_alert(make_service, clock):
    service = make_service()
    end = T0 + 10 * DAY
    clock.moment = end + 3 * H
    ingest(service, background_stream(T0, 10, per_day=20.0, products={"SND-X5": "X5声卡"}))
    ingest(service, [{**m, "batch": "B2405"} for m in burst(end, n=6, safety=0)])
    SlaMonitor(service).run_once()
    # (a product's first hours at 20 a day against the floor rate may alert at T0: not this test's business)
    [alert] = [a for a in service.list_alerts() if a.last_case_at >= end]
    assert "product x batch B2405" in alert.scopes and alert.batch == "B2405"
    lot = {c.id for c in service.list_cases(limit=1000) if c.external_id.startswith("burst-")}
    assert lot <= set(alert.case_ids)


def test_a_dismissed_alert_takes_no_new_cases_and_a_new_surge_raises_a_new_alert(surge_client, clock):
    client, service, keys = surge_client
    [old] = service.list_alerts()
    r = client.post(f"/v1/alerts/{old.id}/events", json={"event": "dismiss", "reason": "刷单，不是质量问题"},
                    headers=hdr(keys["review"]))
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    monitor = SlaMonitor(service)
    # two more complaints within its window: not absorbed by the dismissed alert, and no surge on their own
    ingest(service, burst(T0 + 2.5 * H, n=2, safety=0, span=0.25 * H, tag="after"))
    monitor.run_once()
    assert [(a.id, a.case_ids) for a in service.list_alerts()] == [(old.id, old.case_ids)]
    # a new surge, improbable on its own cases against the baseline, raises a new alert
    clock.moment = T0 + 6 * H
    ingest(service, burst(T0 + 3 * H, n=6, safety=0, tag="again"))
    assert monitor.run_once().surges
    dismissed, new = service.list_alerts()
    assert dismissed.id == old.id and dismissed.case_ids == old.case_ids and dismissed.status == "dismissed"
    fresh = {c.id for c in service.list_cases(limit=1000) if c.external_id.startswith(("after-", "again-"))}
    assert new.status == "open" and set(new.case_ids) == fresh
