"""Routing and delivery through the real daemon: order per key, retries, dead letters, timeouts, shutdown."""
import json
import re
import signal
import threading
import time

from conftest import cirrus_source, payload, read_jsonl, send_event, sign, wait_until


def plugin(name, out, **config):
    return {"name": name, "module": "test_plugin", "config": {"out": str(out), **config}}


def lines(path):
    """Lines the test plugin wrote: (id, text, attempt, key, result), plus markers."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [tuple(l.split(" ")) for l in text.splitlines()]


def meeting_event(event_id, meeting, kind):
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    return json.dumps(ev).encode()


def test_one_meeting_in_order_to_file_sink(daemon_factory, tmp_path):
    out = tmp_path / "events.jsonl"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
        "routes": [{"source": "cirrus", "events": ["scheduling.smartscheduler.*"], "to": ["audit"]}],
    })
    for kind in ("scheduled", "rescheduled", "canceled"):
        assert send_event(d, payload(f"scheduling.smartscheduler.{kind}")) == 200
    got = wait_until(lambda: len(read_jsonl(out)) == 3 and read_jsonl(out))
    assert [g["type"] for g in got] == ["scheduling.smartscheduler.scheduled",
                                        "scheduling.smartscheduler.rescheduled",
                                        "scheduling.smartscheduler.canceled"]
    assert all(g["attempt"] == 1 and g["source"] == "cirrus" for g in got)
    assert got[2]["event"]["data"]["isCanceled"] is True


def test_order_per_key_under_concurrency(daemon_factory, tmp_path):
    """20 meetings x 5 events from 4 client threads; 4 workers with a slow
    plugin. Per meeting: accepted order, never two at once."""
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [dict(plugin("t", out, sleep_ms=5), delivery={"concurrency": 4})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    accepted = {}  # meeting -> event ids in accepted order
    lock = threading.Lock()

    def client(c):
        for m in range(c, 20, 4):
            for i in range(5):
                eid = f"m{m}-e{i}"
                # one client per meeting, so accept order is send order
                assert send_event(d, meeting_event(eid, f"meeting-{m}", "rescheduled")) == 200
                with lock:
                    accepted.setdefault(f"meeting-{m}", []).append(eid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = wait_until(lambda: len(lines(out)) >= 100 and lines(out), timeout=30)
    assert not [l for l in got if l[0] == "OVERLAP"]
    seen = {}
    for l in got:
        seen.setdefault(l[3], []).append(l[0])
    assert seen == accepted


def test_retry_then_ok_with_backoff(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [dict(plugin("t", out, retry_times=2),
                         delivery={"backoff_initial_ms": 100, "backoff_max_ms": 400})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    t0 = time.monotonic()
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    got = wait_until(lambda: len(lines(out)) == 3 and lines(out))
    assert [(l[2], l[4]) for l in got] == [("1", "retry"), ("2", "retry"), ("3", "ok")]
    # backoff: at least half of 100 ms, then half of 200 ms
    assert time.monotonic() - t0 >= 0.15
    assert len(re.findall(r"delivery attempt \d+ of .* failed, retry in", d.log())) == 2


def test_retry_holds_back_later_events_of_the_same_key(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [dict(plugin("t", out, retry_times=1),
                         delivery={"backoff_initial_ms": 300, "backoff_max_ms": 300})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    for i, kind in enumerate(("scheduled", "rescheduled", "canceled")):
        assert send_event(d, meeting_event(f"e{i}", "m1", kind)) == 200
    got = wait_until(lambda: len(lines(out)) == 6 and lines(out))
    # each event fails once then succeeds; the next never starts before
    assert [(l[0], l[4]) for l in got] == [("e0", "retry"), ("e0", "ok"), ("e1", "retry"),
                                           ("e1", "ok"), ("e2", "retry"), ("e2", "ok")]


def test_fail_is_dead_letter_after_one_attempt(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [plugin("t", out, result="fail")],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.canceled")) == 200
    d.wait_for_log(r"failed for good after 1 attempt\(s\): test plugin says fail.*"
                   r"event_id=5a6b7c8d-3333")
    d.stop()
    assert [(l[2], l[4]) for l in lines(out) if l[0] != "DESTROY"] == [("1", "fail")]


def test_max_attempts_then_dead(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [dict(plugin("t", out, result="retry"),
                         delivery={"max_attempts": 3, "backoff_initial_ms": 10,
                                   "backoff_max_ms": 20})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    d.wait_for_log(r"gave up after 3 attempts: test plugin says retry")
    d.stop()
    assert [l[2] for l in lines(out) if l[0] != "DESTROY"] == ["1", "2", "3"]


def test_retry_after_from_plugin_is_honoured(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [dict(plugin("t", out, retry_times=1, retry_after_ms=600),
                         delivery={"backoff_initial_ms": 10})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    wait_until(lambda: len(lines(out)) == 1)
    t0 = time.monotonic()
    wait_until(lambda: len(lines(out)) == 2)
    assert time.monotonic() - t0 >= 0.5
    assert "retry in 600 ms" in d.log()


def test_garbage_result_is_a_permanent_failure(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [plugin("t", out, result="garbage")],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    d.wait_for_log(r"plugin returned an invalid result \(42\)")


def test_deliver_over_timeout_is_a_failed_attempt(daemon_factory, tmp_path):
    """A deliver() past timeout_ms is written off: its attempt counts as
    failed, a new worker takes its place and runs the retry while the stuck
    call still sleeps, and the stuck call's late result is ignored."""
    from conftest import free_port, http_request
    out = tmp_path / "t.txt"
    admin = free_port()
    d = daemon_factory({
        "admin_listen": f"127.0.0.1:{admin}",
        "sources": [cirrus_source()],
        # Thread isolation's write-off (process isolation kills the child
        # instead: test_isolation.py).
        "plugins": [dict(plugin("t", out, sleep_ms=2500, sleep_attempts=1), isolation="thread",
                         delivery={"timeout_ms": 300, "concurrency": 1,
                                   "backoff_initial_ms": 100, "backoff_max_ms": 200})],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    d.wait_for_log(r"deliver\(\) still running after \d+ ms \(timeout_ms 300\): attempt 1 "
                   r"counts as failed", timeout=5)
    # attempt 2 ran on the replacement worker while attempt 1 still sleeps
    # (concurrency 1: without the write-off nothing else could run)
    def attempt(n):
        return [l for l in lines(out) if len(l) == 5 and l[2] == str(n) and l[4] == "ok"]
    wait_until(lambda: attempt(2), timeout=5, what="attempt 2")
    assert not attempt(1), "attempt 1 still sleeps"
    # then attempt 1 returns; its "ok" is ignored: the delivery was settled once
    wait_until(lambda: attempt(1), timeout=5, what="attempt 1 to return")
    d.wait_for_log(r"a written-off deliver\(\) returned after \d+ ms; its result is ignored")
    text = http_request(admin, "GET", "/metrics")[2].decode()
    assert 'hookd_delivery_timeouts_total{instance="t"} 1' in text
    assert 'hookd_delivery_written_off_total{instance="t"} 1' in text
    wait_until(lambda: 'hookd_deliveries_total{instance="t",outcome="delivered"} 1' in
               http_request(admin, "GET", "/metrics")[2].decode())
    assert 'hookd_delivery_stuck_calls{instance="t"} 0' in \
        http_request(admin, "GET", "/metrics")[2].decode()


def test_sigterm_waits_for_running_delivery(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [cirrus_source()],
        "plugins": [plugin("t", out, sleep_ms=1500)],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    time.sleep(0.3)  # let the worker enter deliver(); the delivery takes 1.5 s
    assert not lines(out)
    d.signal(signal.SIGTERM)
    assert d.stop() == 0
    got = lines(out)
    assert got[0][4] == "ok" and got[-1] == ("DESTROY",)


def test_routes_when_source_and_unrouted(daemon_factory, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    d = daemon_factory({
        "sources": [cirrus_source(), cirrus_source(name="other", path="/other")],
        "plugins": [plugin("a", a), plugin("b", b)],
        "routes": [
            {"source": "cirrus", "events": ["scheduling.smartscheduler.*"], "to": ["a"]},
            {"events": ["scheduling.smartscheduler.canceled"], "to": ["b", "a"],
             "when": {"data.meetingInfo.calendarPath": "intro-call"}},
        ],
    })
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    assert send_event(d, payload("scheduling.smartscheduler.canceled")) == 200
    # other source: only the `when` route applies
    ev = json.loads(payload("scheduling.smartscheduler.canceled"))
    ev["eventId"] = "other-1"
    assert send_event(d, json.dumps(ev).encode(), path="/other") == 200
    ev["eventId"] = "other-2"
    ev["data"]["meetingInfo"]["calendarPath"] = "demo"
    assert send_event(d, json.dumps(ev).encode(), path="/other") == 200
    assert send_event(d, payload("organization.setting.changed")) == 200
    ids = lambda p: [l[0] for l in lines(p) if l[0] != "DESTROY"]
    # A stop lets running deliveries finish but starts no new one: wait first.
    wait_until(lambda: len(ids(a)) == 3 and len(ids(b)) == 2, what="the deliveries")
    d.stop()
    # the canceled event matches both routes of "a" and arrives once; all
    # share one meeting id, so they arrive in accepted order
    assert ids(a) == ["5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912",
                      "5a6b7c8d-3333-4e2f-a3b4-c5d6e7f80912", "other-1"]
    assert ids(b) == ["5a6b7c8d-3333-4e2f-a3b4-c5d6e7f80912", "other-1"]
    assert re.search(r"accepted organization.setting.changed: no route matches", d.log())


def test_generic_source_with_token_and_templates(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [{"name": "shop", "path": "/shop", "format": "generic",
                     "type_field": "kind", "id_field": "meta.id", "order_key": "order.number",
                     "verify": {"scheme": "token", "header": "X-Token",
                                "secrets": ["old-token", "new-token"]}}],
        "plugins": [plugin("t", out, render="{{order.customer|upper}}/{{order.note|default:none}}")],
        "routes": [{"events": ["order.**"], "to": ["t"]}],
    })
    body = json.dumps({"kind": "order.paid.card", "meta": {"id": 77},
                       "order": {"number": 1001, "customer": "Ann\"A\""}}).encode()
    assert d.post("/shop", body, {"X-Token": "wrong"})[0] == 401
    assert d.post("/shop", body)[0] == 401
    assert d.post("/shop", body, {"X-Token": "new-token"})[0] == 200
    got = wait_until(lambda: lines(out))
    assert got[0] == ("77", 'ANN\\"A\\"/none', "1", "1001", "ok")


def test_hmac_base64_prefix_and_key_rotation(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    d = daemon_factory({
        "sources": [{"name": "gh", "path": "/gh", "verify": {
            "scheme": "hmac", "algorithm": "sha512", "header": "X-Sig", "encoding": "base64",
            "prefix": "sha512=", "secrets": ["new-key", "old-key"]}}],
        "plugins": [plugin("t", out)],
        "routes": [{"events": ["**"], "to": ["t"]}],
    })
    body = payload("scheduling.smartscheduler.scheduled")
    good_old = sign(body, "old-key", "sha512", "base64", "sha512=")
    assert d.post("/gh", body, {"X-Sig": good_old})[0] == 200
    assert d.post("/gh", body, {"X-Sig": good_old[len("sha512="):]})[0] == 401
    assert d.post("/gh", body, {"X-Sig": sign(body, "x", "sha512", "base64", "sha512=")})[0] == 401
    wait_until(lambda: lines(out))
