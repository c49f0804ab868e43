"""The status page at the admin listener's /, in headless Chromium: what it shows, that values are escaped, and the replay button."""
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import cirrus_source, free_port, http_request, payload, send_event, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="python3-websocket is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


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
        import base64
        data = self.call("Page.captureScreenshot", format="png")["data"]
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
