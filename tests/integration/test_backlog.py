"""Backlogs on disk: per-instance budgets, memory that does not grow with a backlog, restarts
with a backlog, and per-key order across reloads."""
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SANITIZED, SLOW, VALGRIND, free_port, http_request, wait_until
from engine import (Node, Sender, check_key_order, delivered, meeting_event, node_config,
                    plugin_lines, rss_kib, tp_entry)
from engine import no_leftover_nodes  # noqa: F401 (an autouse fixture)

# Memory bounds mean nothing under ASan or valgrind (their own allocators).
memory_bounds = pytest.mark.skipif(SANITIZED or VALGRIND,
                                   reason="RSS under a sanitizer is not hookd's")


def post_all(port, events, clients=8):
    """POSTs (id, body, key) triples from `clients` keep-alive connections,
    each key's events from one client in list order (so that accept order
    per key is list order); returns {id: status}."""
    out = {}
    shares = [[] for _ in range(clients)]
    for e in events:
        shares[hash(e[2]) % clients].append(e)

    def client(c):
        s = Sender(port)
        for eid, body, _ in shares[c]:
            out[eid] = s.post(body, timeout=30)
        s.close()

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, c) for c in range(clients)]:
            f.result()
    return out


def test_a_down_destination_fills_only_its_own_budget(tmp_path):
    """An instance whose destination is down reaches its max_pending: events
    routed to it get 503 with Retry-After, events routed only to a healthy
    instance keep getting 200 and are delivered, and /readyz stays 200 and
    names the saturated instance."""
    down, up = tmp_path / "down.txt", tmp_path / "up.txt"
    admin = free_port()
    cfg = node_config(tmp_path,
                      [tp_entry("down", down, result="retry",
                                delivery={"max_pending": 5, "backoff_initial_ms": 60000,
                                          "backoff_max_ms": 60000}),
                       tp_entry("up", up)],
                      [{"events": ["scheduling.smartscheduler.scheduled"], "to": ["down", "up"]},
                       {"events": ["scheduling.smartscheduler.canceled"], "to": ["up"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    s = Sender(node.port)
    for n in range(5):
        assert s.post(meeting_event(f"both-{n}", f"m{n}", kind="scheduled")) == 200
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    body = meeting_event("both-5", "m5", kind="scheduled")
    from conftest import sign
    conn.request("POST", "/webhooks/cirrus", body, {"X-Signature": sign(body)})
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 503 and r.getheader("Retry-After")
    assert "plugin instance 'down' has 5 unfinished deliveries (its max_pending)" in node.log()
    for n in range(20):
        assert s.post(meeting_event(f"up-{n}", f"u{n}", kind="canceled")) == 200
    wait_until(lambda: len(delivered(up)) == 25, what="the healthy instance's deliveries")
    status, _, text = http_request(admin, "GET", "/readyz")
    assert status == 200 and b"plugin instance 'down' is saturated" in text, text
    metrics = http_request(admin, "GET", "/metrics")[2].decode()
    assert 'hookd_instance_saturated{instance="down"} 1' in metrics
    assert 'hookd_instance_saturated{instance="up"} 0' in metrics
    assert 'hookd_instance_pending_deliveries{instance="down"} 5' in metrics
    assert node.stop() == 0


@memory_bounds
def test_a_backlog_lives_on_disk_not_in_memory(tmp_path):
    """20,000 events of 1.7 KiB for a destination that is down: RSS grows by
    less than 24 MiB. Restarted with that backlog, hookd answers /healthz
    within 2 s with RSS under 40 MiB, and the backlog drains in order once
    the destination is back."""
    out = tmp_path / "t.txt"
    admin = free_port()

    def config(result):
        return node_config(tmp_path,
                           [tp_entry("crm", out, result=result,
                                     delivery={"backoff_initial_ms": 3000,
                                               "backoff_max_ms": 3000})],
                           [{"events": ["**"], "to": ["crm"]}],
                           admin_listen=f"127.0.0.1:{admin}", spool={"sync": "off"},
                           log={"level": "warn"})
    node = Node(tmp_path, config("retry")).start()
    time.sleep(0.3)
    before = node.rss_kib()
    events = [(f"e{n}", meeting_event(f"e{n}", f"m{n // 3}", pad=360), f"m{n // 3}")
              for n in range(20000)]
    assert 1700 < len(events[0][1]) < 1800
    got = post_all(node.port, events)
    assert set(got.values()) == {200}
    grown = node.rss_kib() - before
    assert grown < 24 * 1024, f"RSS grew by {grown} KiB with 20,000 pending"
    metrics = http_request(admin, "GET", "/metrics")[2].decode()
    assert "hookd_spool_pending_deliveries 20000" in metrics
    assert node.stop() == 0
    # the destination is back; a restart reads back windows, not the backlog
    node.write(config("ok"))
    t0 = time.monotonic()
    node.start(wait=False)

    def healthy():
        try:
            return http_request(admin, "GET", "/healthz", timeout=0.5)[0] == 200
        except OSError:
            return False
    wait_until(healthy, timeout=10, interval=0.01, what="/healthz")
    assert time.monotonic() - t0 < 2.0
    assert node.rss_kib() < 40 * 1024
    wait_until(lambda: len(delivered(out)) == 20000, timeout=120, interval=0.5,
               what="the backlog to drain")
    assert node.rss_kib() < 40 * 1024
    order = {f"e{n}": (f"m{n // 3}", n) for n in range(20000)}
    check_key_order(delivered(out), order)
    assert node.stop() == 0


@memory_bounds
def test_big_bodies_in_a_backlog_keep_memory_bounded(tmp_path):
    """800 events of 512 KiB for a destination that is down: RSS stays under
    64 MiB (a window holds bodies up to a byte budget, the rest stay on
    disk)."""
    out = tmp_path / "t.txt"
    cfg = node_config(tmp_path,
                      [tp_entry("crm", out, result="retry",
                                delivery={"backoff_initial_ms": 600000, "backoff_max_ms": 600000})],
                      [{"events": ["**"], "to": ["crm"]}], spool={"sync": "off"},
                      log={"level": "warn"})
    node = Node(tmp_path, cfg).start()
    pad = 512 * 1024 - 1800
    events = [(f"b{n}", meeting_event(f"b{n}", f"m{n}", pad=pad), f"m{n}") for n in range(800)]
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, node.rss_kib())
            time.sleep(0.05)
    t = threading.Thread(target=sample)
    t.start()
    try:
        got = post_all(node.port, events, clients=4)
    finally:
        done.set()
        t.join()
    assert set(got.values()) == {200}
    peak = max(peak, node.rss_kib())
    assert peak < 64 * 1024, f"peak RSS {peak} KiB"
    assert node.stop() == 0


def test_retry_reload_and_a_later_event_keep_key_order(tmp_path):
    """E1 gets RETRY, E2 (same key) waits behind it, SIGHUP, E3 (same key):
    the instance sees E1, E1 again, E2, E3."""
    out = tmp_path / "t.txt"

    def config(extra):
        return node_config(tmp_path,
                           [tp_entry("t", out, retry_times=1, render=extra,
                                     delivery={"backoff_initial_ms": 1500,
                                               "backoff_max_ms": 1500})],
                           [{"events": ["**"], "to": ["t"]}])
    node = Node(tmp_path, config("{{eventType}}")).start()
    s = Sender(node.port)
    assert s.post(meeting_event("E1", "K")) == 200
    wait_until(lambda: [l for l in plugin_lines(out) if l[0] == "E1" and l[4] == "retry"])
    assert s.post(meeting_event("E2", "K")) == 200
    node.write(config("{{data.id}}"))  # a real change: what the instance writes
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded " in node.log(), what="the reload")
    assert s.post(meeting_event("E3", "K")) == 200
    wait_until(lambda: len(delivered(out)) == 3, timeout=10 * SLOW)
    rows = [(l[0], l[2], l[4]) for l in plugin_lines(out) if len(l) == 5]
    assert rows == [("E1", "1", "retry"), ("E1", "2", "ok"), ("E2", "1", "retry"),
                    ("E2", "2", "ok"), ("E3", "1", "retry"), ("E3", "2", "ok")], rows
    assert not [l for l in plugin_lines(out) if l[0] == "OVERLAP"]
    assert node.stop() == 0


def test_twenty_reloads_under_load_keep_every_key_in_order(tmp_path):
    """2,000 events for 200 meetings flow while hookd reloads 20 times: each
    event is delivered exactly once, each meeting in accept order."""
    out = tmp_path / "t.txt"
    base = node_config(tmp_path, [], [{"events": ["**"], "to": ["t"]}])

    def config(n):
        return dict(base, plugins=[tp_entry("t", out, retry_pct=5 if n % 2 else 0,
                                            delivery={"backoff_initial_ms": 50,
                                                      "backoff_max_ms": 100,
                                                      "concurrency": 4})])
    node = Node(tmp_path, config(0)).start()
    order, per_meeting = {}, {}
    for m in range(200):
        for k in range(10):
            eid = f"m{m}-{k}"
            order[eid] = (f"m{m}", k)
    stop = threading.Event()

    def reloads():
        for n in range(1, 21):
            node.write(config(n))
            node.proc.send_signal(signal.SIGHUP)
            time.sleep(0.15)
        stop.set()

    def client(c):
        s = Sender(node.port)
        for k in range(10):
            for m in range(c, 200, 8):
                eid = f"m{m}-{k}"
                assert s.post(meeting_event(eid, f"m{m}")) == 200
        s.close()

    r = threading.Thread(target=reloads)
    r.start()
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(client, c) for c in range(8)]:
            f.result()
    r.join()
    wait_until(lambda: len(delivered(out)) >= 2000, timeout=60 * SLOW, interval=0.2)
    got = delivered(out)
    assert sorted(got) == sorted(order), "each event exactly once"
    check_key_order(got, order)
    assert not [l for l in plugin_lines(out) if l[0] == "OVERLAP"]
    assert node.log().count("reloaded ") >= 10
    assert node.stop() == 0
