"""The status page at the admin listener's /, in headless Chromium: what it shows, that values are escaped, and the replay button."""
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import (BUILD, cirrus_source, free_port, http_request, payload, send_event, sign,
                      wait_until)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="python3-websocket is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
pytest_plugins = ["fakehttp"]  # the fake_server fixture


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, tmp):
        self.profile = tmp / "chromium-profile"
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30,
                   what="chromium to start")
        port = int(port_file.read_text().split()[0])

        def page_target():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                    return pages[0]["webSocketDebuggerUrl"] if pages else None
            except OSError:
                return None
        self.ws = websocket.create_connection(wait_until(page_target, 30, what="a page"),
                                              timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def goto(self, url):
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        wait_until(lambda: self.eval("document.readyState") == "complete" and
                   self.eval("location.href") == url, 20, what=f"{url} to load")

    def screenshot(self, path):
        """The whole page, not only the window (the README shows these)."""
        import base64
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        pathlib.Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


def event(event_id, meeting, etype=None):
    ev = json.loads(payload("scheduling.smartscheduler.scheduled"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    if etype:
        ev["eventType"] = etype
    return json.dumps(ev).encode()


READ_PAGE = """(() => {
  const rows = sel => [...document.querySelectorAll(sel)];
  const text = el => el ? el.textContent.trim() : null;
  return {
    title: document.title,
    contentType: document.contentType,
    readiness: text(document.getElementById('readiness')),
    counters: Object.fromEntries(rows('#counters tr').map(r => [r.dataset.key, text(r.querySelector('td'))])),
    instances: Object.fromEntries(rows('#instances tbody tr').map(r => [r.dataset.instance,
        {health: text(r.querySelector('.health')), cells: [...r.cells].map(text)}])),
    events: rows('#events tbody tr').map(r => ({id: r.dataset.eventId, type: text(r.cells[3]),
        received: text(r.cells[0]),
        outcomes: Object.fromEntries([...r.querySelectorAll('.outcome')].map(o => [o.dataset.instance, text(o)]))})),
    dead: rows('#dead-letters tbody tr[data-dead-id]').map(r => ({id: r.dataset.deadId,
        event: text(r.cells[3]), instance: text(r.cells[5]), error: text(r.cells[7]),
        button: !!r.querySelector('button.replay')})),
    images: document.images.length,
    external: rows('script[src],link[href],img[src],iframe').length,
    pwned: window.pwned === 1,
  };
})()"""


def test_status_page_shows_state_and_replays(daemon_factory, tmp_path, browser):
    admin = free_port()
    bad_out = tmp_path / "bad.txt"
    d = daemon_factory({
        "admin_listen": f"127.0.0.1:{admin}",
        "sources": [cirrus_source()],
        "plugins": [
            {"name": "audit", "module": "file_sink", "config": {"path": str(tmp_path / "a.jsonl")}},
            {"name": "crm", "module": "test_plugin",
             "config": {"out": str(bad_out), "result": "fail"}},
        ],
        "routes": [{"events": ["**"], "to": ["audit", "crm"]}],
    })
    assert send_event(d, event("evt-ok-1", "m1")) == 200
    xss = "<img src=x onerror=window.pwned=1>"
    assert send_event(d, event("evt-<b>2</b>", "m2", etype=xss)) == 200

    def dead_letters():
        st = json.loads(http_request(admin, "GET", "/status.json")[2])
        return len(st["dead_letters"]) == 2 and st["dead_letters"]
    wait_until(dead_letters, 10, what="two dead letters")

    browser.goto(f"http://127.0.0.1:{admin}/")
    page = browser.eval(READ_PAGE)
    browser.screenshot(tmp_path / "status.png")
    assert page["title"] == "hookd status"
    assert page["contentType"] == "text/html"
    assert page["readiness"].startswith("Ready")
    assert page["counters"]["accepted"] == "2"
    assert page["counters"]["dead"] == "2"
    assert page["instances"]["audit"]["health"] == "ok"
    assert page["instances"]["crm"]["health"] == "failing"
    assert "test plugin says fail" in page["instances"]["crm"]["cells"][-1]
    # Newest first; the outcome per plugin instance.
    assert [e["id"] for e in page["events"]] == ["evt-<b>2</b>", "evt-ok-1"]
    assert page["events"][1]["outcomes"] == {"audit": "audit: delivered", "crm": "crm: dead"}
    assert page["events"][1]["type"] == "scheduling.smartscheduler.scheduled"
    assert page["events"][1]["received"].endswith("Z")
    # Sender-controlled text is shown as text, never run.
    assert page["events"][0]["type"] == xss
    assert page["images"] == 0 and not page["pwned"]
    assert page["external"] == 0
    assert {x["event"] for x in page["dead"]} == {"evt-ok-1", "evt-<b>2</b>"}
    assert all(x["instance"] == "crm" and x["button"] for x in page["dead"])

    target = next(x for x in page["dead"] if x["event"] == "evt-ok-1")
    assert bad_out.read_text().count("evt-ok-1 ") == 1
    browser.eval(f"document.querySelector('button.replay[data-id=\"{target['id']}\"]').click()")
    wait_until(lambda: browser.eval("document.getElementById('message').textContent") ==
               f"Replayed dead letter {target['id']}.", 10, what="the replay message")
    # The dead letter went back to the plugin instance.
    wait_until(lambda: bad_out.read_text().count("evt-ok-1 ") == 2, 10,
               what="the replayed delivery")
    d.wait_for_log(rf"admin: dead letter {target['id']} replayed")
    # After a reload the replayed event shows its new outcome.
    browser.goto(f"http://127.0.0.1:{admin}/")
    wait_until(lambda: browser.eval(READ_PAGE)["events"][1]["outcomes"].get("crm") == "crm: dead",
               10, what="the outcome after the replay")


def test_status_page_has_a_strict_content_security_policy(daemon_factory, tmp_path):
    admin = free_port()
    daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "sources": [cirrus_source()]})
    status, headers, body = http_request(admin, "GET", "/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert b"http://" not in body.replace(b'href="/', b"") and b"https://" not in body


# --- event detail, rejected requests, search, charts, controls --------------------------------

SHOTS = BUILD / "screenshots"

# What the destination answers, by event id (the webhook-id header of http_forward).
ANSWERS = {"evt-ok": [(200, "fine")],
           "evt-retry": [(503, "busy, try later"), (200, "ok now")],
           "evt-dead": [(422, '{"error":"invalid field meetingName"}')]}


def destination(fake_server):
    seen = {}

    def respond(req, n):
        eid = req.headers["webhook-id"]
        k = seen.get(eid, 0)
        seen[eid] = k + 1
        status, text = ANSWERS[eid][min(k, len(ANSWERS[eid]) - 1)]
        return status, {"Content-Type": "text/plain"}, text.encode()
    return fake_server(respond)


READ_DETAIL = """(() => {
  const text = el => el ? el.textContent.trim() : null;
  return {
    id: text(document.getElementById('event-id')),
    orderKey: text(document.getElementById('order-key')),
    headers: text(document.getElementById('headers')),
    body: document.getElementById('body') ? document.getElementById('body').textContent : null,
    deliveries: Object.fromEntries([...document.querySelectorAll('section.delivery')].map(s =>
      [s.dataset.instance, {state: s.dataset.state, attempts: [...s.querySelectorAll('tr.attempt')]
        .map(r => ({attempt: text(r.cells[0]), outcome: r.dataset.outcome, status: text(r.cells[4]),
                    answer: text(r.cells[5]), error: text(r.cells[6]), took: text(r.cells[2])}))}])),
  };
})()"""

READ_OVERVIEW = """(() => {
  const rows = sel => [...document.querySelectorAll(sel)];
  const text = el => el ? el.textContent.trim() : null;
  const traffic = document.getElementById('chart-traffic');
  const line = cls => traffic.querySelector('polyline.' + cls).getAttribute('points').split(' ')
    .map(p => Number(p.split(',')[1]));
  return {
    rejected: rows('#rejected tbody tr[data-status]').map(r => ({status: text(r.cells[3]),
        path: text(r.cells[2]), peer: text(r.cells[1]), reason: text(r.cells[4])})),
    traffic: {accepted: Number(traffic.dataset.accepted), rejected: Number(traffic.dataset.rejected),
              delivered: Number(traffic.dataset.delivered), acceptedY: line('accepted'),
              width: traffic.getBoundingClientRect().width},
    outcomes: Object.fromEntries(rows('svg.chart-outcomes').map(s => [s.dataset.instance,
        {delivered: Number(s.dataset.delivered), retried: Number(s.dataset.retried),
         dead: Number(s.dataset.dead), bars: s.querySelectorAll('rect').length}])),
    states: Object.fromEntries(rows('#instances tbody tr').map(r => [r.dataset.instance,
        text(r.querySelector('.state'))])),
    rates: Object.fromEntries(rows('#instances tbody tr').map(r => [r.dataset.instance,
        text(r.querySelector('.rate'))])),
  };
})()"""


def test_detail_rejected_search_charts_and_controls(daemon_factory, tmp_path, fake_server,
                                                    browser):
    SHOTS.mkdir(exist_ok=True)
    admin = free_port()
    dest = destination(fake_server)
    audit = tmp_path / "audit.jsonl"
    d = daemon_factory({
        "admin_listen": f"127.0.0.1:{admin}",
        "sources": [cirrus_source()],
        "plugins": [
            {"name": "audit", "module": "file_sink", "config": {"path": str(audit)}},
            {"name": "crm", "module": "http_forward", "config": {"url": dest.url("/hook")},
             "delivery": {"backoff_initial_ms": 100, "backoff_max_ms": 200, "rate": "20/s"}},
        ],
        "routes": [{"events": ["**"], "to": ["audit", "crm"]}],
    })
    for eid, meeting in [("evt-ok", "m-ok"), ("evt-retry", "m-retry"), ("evt-dead", "m-dead")]:
        assert send_event(d, event(eid, meeting)) == 200
    body = event("evt-unsigned", "m-x")
    assert d.post("/webhooks/cirrus", body, {"X-Signature": "00" * 32})[0] == 401
    assert d.post("/webhooks/cirrus", b"{not json", {"X-Signature": sign(b"{not json")})[0] == 400

    def settled():
        st = json.loads(http_request(admin, "GET", "/status.json")[2])
        crm = next(i for i in st["instances"] if i["name"] == "crm")
        return crm["delivered"] == 2 and crm["dead"] == 1
    wait_until(settled, 10, what="the three deliveries to settle")
    # Outcomes reach the spool with its next commit (within half a second).
    for eid, state in [("evt-ok", "delivered"), ("evt-retry", "delivered"), ("evt-dead", "dead")]:
        wait_until(lambda: f'data-instance="crm" data-state="{state}"'.encode() in
                   http_request(admin, "GET", f"/event?source=cirrus&id={eid}")[2], 5,
                   what=f"{eid} stored as {state}")

    browser.goto(f"http://127.0.0.1:{admin}/")
    page = browser.eval(READ_OVERVIEW)
    browser.screenshot(SHOTS / "status-overview.png")
    rejected = {r["status"]: r for r in page["rejected"]}
    assert rejected["401"]["reason"] == "signature missing or wrong"
    assert rejected["400"]["reason"] == "body is not JSON"
    assert rejected["401"]["path"] == "/webhooks/cirrus" and rejected["401"]["peer"].startswith("127.0.0.1:")
    t = page["traffic"]
    assert t["accepted"] == 3 and t["rejected"] == 2 and t["delivered"] == 5
    assert len(t["acceptedY"]) == 60 and min(t["acceptedY"]) < max(t["acceptedY"]) and t["width"] > 0
    assert page["outcomes"]["crm"] == {"delivered": 2, "retried": 1, "dead": 1,
                                       "bars": page["outcomes"]["crm"]["bars"]}
    assert page["outcomes"]["crm"]["bars"] >= 1 and page["outcomes"]["audit"]["delivered"] == 3
    assert page["states"] == {"audit": "ok", "crm": "ok"}
    assert page["rates"] == {"audit": "-", "crm": "20/s"}

    # The detail of a delivered, a retried and a dead-lettered event.
    details = {}
    for eid in ("evt-ok", "evt-retry", "evt-dead"):
        browser.goto(f"http://127.0.0.1:{admin}/event?source=cirrus&id={eid}")
        details[eid] = browser.eval(READ_DETAIL)
        browser.screenshot(SHOTS / f"status-event-{eid[4:]}.png")
    ok, retried, dead = (details[k]["deliveries"]["crm"] for k in ("evt-ok", "evt-retry", "evt-dead"))
    assert ok["state"] == "delivered"
    assert [(a["attempt"], a["outcome"], a["status"], a["answer"]) for a in ok["attempts"]] == \
        [("1", "delivered", "200", "fine")]
    assert retried["state"] == "delivered"
    assert [(a["attempt"], a["outcome"], a["status"], a["answer"]) for a in retried["attempts"]] == \
        [("1", "retry", "503", "busy, try later"), ("2", "delivered", "200", "ok now")]
    assert retried["attempts"][0]["error"] == "HTTP 503: busy, try later"
    assert all(a["took"].endswith(" ms") for a in retried["attempts"])
    assert dead["state"] == "dead"
    assert [(a["outcome"], a["status"]) for a in dead["attempts"]] == [("dead", "422")]
    assert "invalid field meetingName" in dead["attempts"][0]["answer"]
    assert details["evt-ok"]["deliveries"]["audit"]["attempts"][0]["outcome"] == "delivered"
    # Headers with the signature masked; the body pretty-printed.
    headers = details["evt-ok"]["headers"]
    assert "X-Signature: [masked, 64 bytes]" in headers and "Content-Type: application/json" in headers
    assert sign(event("evt-ok", "m-ok")) not in headers
    assert '\n  "eventId": "evt-ok",\n' in details["evt-ok"]["body"]
    assert '\n  "data": {\n    "id": "m-ok",\n' in details["evt-ok"]["body"]
    assert details["evt-ok"]["body"].rstrip().endswith('"eventType": "scheduling.smartscheduler.scheduled"\n}')
    assert details["evt-ok"]["orderKey"] == "m-ok"

    # Search by meeting id, through the form, then on to the event.
    browser.goto(f"http://127.0.0.1:{admin}/")
    browser.eval("document.querySelector('#search input[name=q]').value = 'm-retry';"
                 "document.getElementById('search').submit(); 1")
    wait_until(lambda: browser.eval("location.pathname + '|' + document.readyState") ==
               "/search|complete", 10, what="the search results")
    found = browser.eval("[...document.querySelectorAll('#results tbody tr[data-event-id]')]"
                         ".map(r => r.dataset.eventId)")
    browser.screenshot(SHOTS / "status-search.png")
    assert found == ["evt-retry"]
    browser.eval("document.querySelector('#results a').click(); 1")
    wait_until(lambda: browser.eval("location.pathname") == "/event" and
               browser.eval("document.readyState") == "complete", 10, what="the event page")
    assert browser.eval(READ_DETAIL)["id"] == "evt-retry"

    # Pause and resume from the page; a back-fill of the last hour to audit.
    browser.goto(f"http://127.0.0.1:{admin}/")
    msg = "document.getElementById('message').textContent"
    browser.eval("document.querySelector('button[data-action=pause][data-instance=crm]').click(); 1")
    wait_until(lambda: browser.eval(msg) == "Paused crm.", 10, what="the pause")
    assert browser.eval("document.querySelector('tr[data-instance=crm] .state').textContent") == "paused"
    wait_until(lambda: b'hookd_instance_state{instance="crm",state="paused"} 1' in
               http_request(admin, "GET", "/metrics")[2], 5, what="the paused state")
    browser.screenshot(SHOTS / "status-paused.png")
    browser.eval("document.querySelector('button[data-action=resume][data-instance=crm]').click(); 1")
    wait_until(lambda: browser.eval(msg) == "Resumed crm.", 10, what="the resume")
    browser.eval("document.querySelector('tr[data-instance=audit] input.since').value = '1h';"
                 "document.querySelector('button[data-action=backfill][data-instance=audit]').click(); 1")
    wait_until(lambda: browser.eval(msg).startswith("Replaying 3 event(s) of the last 1h to audit"),
               10, what="the back-fill message")
    wait_until(lambda: len(audit.read_text().splitlines()) == 6, 10, what="the back-fill")
    d.wait_for_log(r"admin: back-fill 1 asked: 3 events")
