"""Delivery controls against real destinations: delivery.rate against a Slack stand-in that
allows one message a second, "too many requests" holding the whole instance without using
attempts, the circuit breaker through an outage, and pause/resume across a restart."""
import json
import re
import threading
import time

import pytest

from conftest import free_port, http_request, read_jsonl, sign, wait_until
from engine import Node, meeting_event, node_config

pytest_plugins = ["fakehttp"]  # the fake_server fixture


def metric(admin, name, **labels):
    """One sample of /metrics (labels matched exactly), or None."""
    body = http_request(admin, "GET", "/metrics")[2].decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in body.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return None


def send_event(node, body):
    """POSTs a signed event to a Node; returns the status."""
    return http_request(node.port, "POST", "/webhooks/cirrus", body,
                        {"X-Signature": sign(body), "Content-Type": "application/json"})[0]


def state_of(admin, instance):
    for s in ("ok", "open", "paused", "saturated"):
        if metric(admin, "hookd_instance_state", instance=instance, state=s) == 1:
            return s
    return None


def status_json(admin):
    return json.loads(http_request(admin, "GET", "/status.json")[2])


class SlackStandIn:
    """An incoming webhook that takes one message a second (a window of 0.9 s,
    so that a sender spacing its posts one second apart is never refused) and
    answers 429 with Retry-After: 1 otherwise, as Slack does."""

    def __init__(self, fake_server, window=0.9):
        self.window = window
        self.lock = threading.Lock()
        self.last_ok = None
        self.log = []  # (monotonic time, status, text of the message)
        self.server = fake_server(self.respond)

    def respond(self, req, n):
        text = json.loads(req.body)["text"]
        with self.lock:
            now = time.monotonic()
            if self.last_ok is not None and now - self.last_ok < self.window:
                self.log.append((now, 429, text))
                return 429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"rate_limited"
            self.last_ok = now
            self.log.append((now, 200, text))
            return 200, {"Content-Type": "text/html"}, b"ok"

    def delivered(self):
        with self.lock:
            return [t for _, s, t in self.log if s == 200]

    def statuses(self):
        with self.lock:
            return [s for _, s, _ in self.log]


def slack_node(tmp_path, url, delivery, admin, isolation="thread"):
    plugins = [{"name": "slack", "module": "slack_post", "isolation": isolation,
                "config": {"webhook_url": url, "text": "{{eventId}} {{data.id}}"},
                "delivery": delivery}]
    cfg = node_config(tmp_path, plugins, [{"events": ["**"], "to": ["slack"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    return Node(tmp_path, cfg).start()


# Four events on two meetings: m1 gets e1 then e3, m2 gets e2 then e4.
EVENTS = [("e1", "m1"), ("e2", "m2"), ("e3", "m1"), ("e4", "m2")]


def send_all(node, events=EVENTS):
    for eid, meeting in events:
        assert send_event(node, meeting_event(eid, meeting)) == 200


def assert_key_order(texts):
    order = {}
    for t in texts:
        eid, meeting = t.split()
        order.setdefault(meeting, []).append(eid)
    assert order == {"m1": ["e1", "e3"], "m2": ["e2", "e4"]}, texts


def test_rate_one_per_second_never_sees_a_429(tmp_path, fake_server):
    slack = SlackStandIn(fake_server)
    admin = free_port()
    node = slack_node(tmp_path, slack.server.url("/services/T0/B0/x"),
                      {"rate": "1/s", "concurrency": 4}, admin)
    try:
        t0 = time.monotonic()
        send_all(node)
        wait_until(lambda: len(slack.delivered()) == 4, 10, what="four messages")
        assert slack.statuses() == [200, 200, 200, 200]
        # Evenly spaced starts: the last comes about three seconds after the first.
        times = [t for t, _, _ in slack.log]
        assert all(b - a >= 0.9 for a, b in zip(times, times[1:])), times
        assert time.monotonic() - t0 >= 2.9
        assert_key_order(slack.delivered())
        assert metric(admin, "hookd_delivery_held_total", instance="slack",
                      reason="rate_limited") == 0
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_too_many_requests_holds_the_instance_without_using_attempts(tmp_path, fake_server,
                                                                     isolation):
    """No rate: 429s come back, each holds the whole instance for its
    Retry-After, and costs no attempt (max_attempts 2 would otherwise kill
    them), so nothing is dead-lettered. In a plugin process too: the outcome
    crosses the wire with its flags."""
    slack = SlackStandIn(fake_server)
    admin = free_port()
    node = slack_node(tmp_path, slack.server.url("/services/T0/B0/x"),
                      {"concurrency": 4, "max_attempts": 2, "backoff_initial_ms": 100,
                       "backoff_max_ms": 200}, admin, isolation)
    try:
        send_all(node)
        wait_until(lambda: len(slack.delivered()) == 4, 20, what="four messages")
        log = list(slack.log)
        refused = [t for t, s, _ in log if s == 429]
        assert len(refused) >= 2, log
        # After a 429 nothing is sent until its Retry-After has passed.
        for t429 in refused:
            too_soon = [t - t429 for t, _, _ in log if 0.1 < t - t429 < 0.95]
            assert not too_soon, (t429, log)
        assert_key_order(slack.delivered())
        st = status_json(admin)
        assert st["counters"]["dead"] == 0
        held = metric(admin, "hookd_delivery_held_total", instance="slack", reason="rate_limited")
        assert held == len(refused)
        assert "too many requests" in node.log()
    finally:
        assert node.stop() == 0


class Destination:
    """An HTTP endpoint with an outage switch: 503 while down, 200 when up."""

    def __init__(self, fake_server):
        self.down = True
        self.server = fake_server(self.respond)

    def respond(self, req, n):
        if self.down:
            return 503, {"Content-Type": "text/plain"}, b"down for maintenance"
        return 200, {"Content-Type": "text/plain"}, b"thanks"

    def calls(self):
        return [(r.at, r.headers["webhook-id"]) for r in self.server.got()]


def test_breaker_opens_probes_and_closes_without_using_up_attempts(tmp_path, fake_server):
    guarded, unguarded = Destination(fake_server), Destination(fake_server)
    admin = free_port()
    fast = {"concurrency": 1, "max_attempts": 3, "backoff_initial_ms": 100,
            "backoff_max_ms": 200}
    plugins = [
        {"name": "guarded", "module": "http_forward", "config": {"url": guarded.server.url("/in")},
         "delivery": dict(fast, breaker={"failures": 3, "cooldown_ms": 300})},
        # The same outage without a breaker: every delivery dies.
        {"name": "unguarded", "module": "http_forward",
         "config": {"url": unguarded.server.url("/in")},
         "delivery": dict(fast, breaker={"failures": 0})},
    ]
    cfg = node_config(tmp_path, plugins, [{"events": ["**"], "to": ["guarded", "unguarded"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    try:
        ids = [f"b{i}" for i in range(6)]
        for i in ids:
            assert send_event(node, meeting_event(i, "m-" + i)) == 200
        wait_until(lambda: state_of(admin, "guarded") == "open", 10, what="the circuit to open")
        t_open = time.monotonic()
        opened = 3  # the three consecutive failures, then only probes
        assert len(guarded.calls()) in (3, 4), guarded.calls()
        wait_until(lambda: status_json(admin)["counters"]["dead"] == 6, 10,
                   what="the unguarded deliveries to die")
        time.sleep(1.6)  # the outage goes on: probes, one every cooldown_ms
        probes = guarded.calls()[opened:]
        assert 3 <= len(probes) <= (time.monotonic() - t_open) / 0.3 + 1, probes
        gaps = [b[0] - a[0] for a, b in zip(probes, probes[1:])]
        assert all(g >= 0.28 for g in gaps), gaps
        guarded.down = False
        wait_until(lambda: state_of(admin, "guarded") == "ok", 5, what="the circuit to close")
        insts = lambda: {i["name"]: i for i in status_json(admin)["instances"]}
        wait_until(lambda: insts()["guarded"]["delivered"] == 6, 10, what="every guarded delivery")
        assert sorted({w for _, w in guarded.calls()[opened + len(probes):]}) == sorted(ids)
        inst = insts()
        assert inst["guarded"]["dead"] == 0 and inst["guarded"]["delivered"] == 6
        assert inst["unguarded"]["dead"] == 6
        assert inst["guarded"]["circuit_opens"] == 1
        # One log line per state change.
        log = node.log()
        assert len(re.findall(r"instance state ok -> open .*instance=guarded", log)) == 1
        assert len(re.findall(r"instance state open -> ok instance=guarded", log)) == 1
        assert "circuit open after 3 consecutive failed attempts (last: HTTP 503" in log
        assert metric(admin, "hookd_delivery_held_total", instance="guarded",
                      reason="circuit_open") >= len(probes)
    finally:
        assert node.stop() == 0


def test_pause_and_resume_across_a_restart(tmp_path):
    admin = free_port()
    out = tmp_path / "audit.jsonl"
    plugins = [{"name": "audit", "module": "file_sink", "config": {"path": str(out)},
                "delivery": {"max_pending": 4}}]
    cfg = node_config(tmp_path, plugins, [{"events": ["**"], "to": ["audit"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    try:
        assert send_event(node, meeting_event("p0", "m1")) == 200
        wait_until(lambda: len(read_jsonl(out)) == 1, 5, what="the first delivery")
        p = node.cli("pause", "audit")
        assert p.returncode == 0 and "audit paused" in p.stdout, p.stderr
        t0 = time.monotonic()
        wait_until(lambda: state_of(admin, "audit") == "paused", 3, what="the pause")
        assert time.monotonic() - t0 < 1.5  # seen within a second (plus a scrape)
        for i in range(1, 5):
            assert send_event(node, meeting_event(f"p{i}", "m1")) == 200
        # Still accepting into its budget: the fifth unfinished delivery is over max_pending 4.
        assert send_event(node, meeting_event("p5", "m1")) == 503
        time.sleep(0.8)
        assert len(read_jsonl(out)) == 1
        assert node.stop() == 0
        node.start()
        assert state_of(admin, "audit") == "paused"
        time.sleep(0.8)
        assert len(read_jsonl(out)) == 1, "a restart must not resume a paused instance"
        # The admin endpoint needs X-Hookd-Admin, and a configured name.
        assert http_request(admin, "POST", "/instances/audit/resume")[0] == 403
        assert http_request(admin, "POST", "/instances/nosuch/resume",
                            headers={"X-Hookd-Admin": "1"})[0] == 404
        status, _, body = http_request(admin, "POST", "/instances/audit/resume",
                                       headers={"X-Hookd-Admin": "1"})
        assert status == 200 and json.loads(body) == {"paused": False}
        wait_until(lambda: len(read_jsonl(out)) == 5, 5, what="the drain")
        assert [e["event_id"] for e in read_jsonl(out)] == ["p0", "p1", "p2", "p3", "p4"]
        assert state_of(admin, "audit") == "ok"
        log = node.log()
        assert "instance state ok -> paused" in log and "instance state paused -> ok" in log
    finally:
        assert node.stop() == 0
    # The CLI refuses what the config does not name, with the names it has.
    p = node.cli("pause", "nosuch")
    assert p.returncode == 2 and "no plugin instance 'nosuch' (it has: audit)" in p.stderr
