"""Hot reload (SIGHUP and POST /reload): validate, swap, drain the old plugin instances; a broken config changes nothing."""
import json
import signal
import threading

from conftest import (cirrus_source, free_port, http_request, payload, read_jsonl, send_event,
                      wait_until)


def meeting_event(event_id, meeting="m1", kind="rescheduled"):
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    return json.dumps(ev).encode()


def lines(path):
    return [l.split(" ") for l in path.read_text().splitlines()] if path.exists() else []


def rewrite(d, cfg):
    """Replaces the running daemon's config file (keeping what the fixture filled in)."""
    cur = json.loads(d.cfg_path.read_text())
    cur.update(cfg)
    d.cfg_path.write_text(json.dumps(cur))


def test_reload_under_load_loses_nothing(daemon_factory, tmp_path):
    out = tmp_path / "events.jsonl"
    audit = {"name": "audit", "module": "file_sink", "config": {"path": str(out)}}
    d = daemon_factory({"sources": [cirrus_source()], "plugins": [audit],
                        "routes": [{"events": ["**"], "to": ["audit"]}], "log": {"level": "info"}})
    statuses = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c):
        i = 0
        while not stop.is_set() and i < 150:
            st = send_event(d, meeting_event(f"c{c}-{i}", meeting=f"m{c}"))
            with lock:
                statuses.append((f"c{c}-{i}", st))
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for n in range(3):
        wait_until(lambda: len(statuses) >= 100 * (n + 1), timeout=30)
        # each reload also changes something real: the sink's fsync setting
        rewrite(d, {"plugins": [dict(audit, config={"path": str(out), "fsync": n % 2 == 0})]})
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.log().count("reloaded ") == n + 1, timeout=10, what="the reload")
    for t in threads:
        t.join()
    assert d.log().count("reloaded ") == 3
    assert all(st == 200 for _, st in statuses), [s for s in statuses if s[1] != 200][:5]
    accepted = [eid for eid, _ in statuses]
    wait_until(lambda: len(read_jsonl(out)) >= len(accepted), timeout=30)
    assert d.stop() == 0
    got = [l["event_id"] for l in read_jsonl(out)]
    assert sorted(got) == sorted(accepted)  # each exactly once
    # order per meeting held across the swaps
    for c in range(4):
        mine = [e for e in got if e.startswith(f"c{c}-")]
        assert mine == sorted(mine, key=lambda e: int(e.split("-")[1]))
    assert "drained and closed" in d.log()


def test_broken_reload_changes_nothing(daemon_factory, tmp_path):
    out = tmp_path / "events.jsonl"
    admin = free_port()
    d = daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "sources": [cirrus_source()],
                        "plugins": [{"name": "audit", "module": "file_sink",
                                     "config": {"path": str(out)}}],
                        "routes": [{"events": ["**"], "to": ["audit"]}]})
    good = d.cfg_path.read_text()
    d.cfg_path.write_text(good.replace('"routes"', '"rootes"'))
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"reload failed, config unchanged: .*rootes.*unknown key")
    status, _, body = http_request(admin, "POST", "/reload", headers={"X-Hookd-Admin": "1"})
    assert status == 400 and b"rootes" in body
    # a plugin that refuses its new config is a failed reload too
    cfg = json.loads(good)
    cfg["plugins"][0]["config"]["bogus"] = 1
    d.cfg_path.write_text(json.dumps(cfg))
    status, _, body = http_request(admin, "POST", "/reload", headers={"X-Hookd-Admin": "1"})
    assert status == 400 and b"plugins[0].config.bogus" in body
    # still running on the old config
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    wait_until(lambda: len(read_jsonl(out)) == 1)
    assert "reloaded " not in d.log()
    # and a good config reloads through the admin endpoint
    d.cfg_path.write_text(good)
    status, _, body = http_request(admin, "POST", "/reload", headers={"X-Hookd-Admin": "1"})
    assert status == 200 and body == b"reloaded\n"


def test_reload_removing_a_plugin_with_queued_deliveries(daemon_factory, tmp_path):
    slow_out, audit_out = tmp_path / "slow.txt", tmp_path / "events.jsonl"
    slow = {"name": "slow", "module": "test_plugin",
            "config": {"out": str(slow_out), "sleep_ms": 200}, "delivery": {"concurrency": 1}}
    audit = {"name": "audit", "module": "file_sink", "config": {"path": str(audit_out)}}
    d = daemon_factory({"sources": [cirrus_source()], "plugins": [slow, audit],
                        "routes": [{"events": ["**"], "to": ["slow"]}]})
    for i in range(5):
        assert send_event(d, meeting_event(f"q{i}")) == 200
    rewrite(d, {"plugins": [audit], "routes": [{"events": ["**"], "to": ["audit"]}]})
    d.signal(signal.SIGHUP)
    d.wait_for_log("reloaded ")
    assert send_event(d, meeting_event("after")) == 200
    # the queued ones finish on the old instance, in order; then it is destroyed
    wait_until(lambda: lines(slow_out)[-1:] == [["DESTROY"]], timeout=20)
    assert [l[0] for l in lines(slow_out)] == ["q0", "q1", "q2", "q3", "q4", "DESTROY"]
    wait_until(lambda: [l["event_id"] for l in read_jsonl(audit_out)] == ["after"])
    d.wait_for_log("drained and closed")


def test_reload_adds_an_instance_and_route(daemon_factory, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    pa = {"name": "a", "module": "test_plugin", "config": {"out": str(a)}}
    pb = {"name": "b", "module": "test_plugin", "config": {"out": str(b)}}
    d = daemon_factory({"sources": [cirrus_source()], "plugins": [pa],
                        "routes": [{"events": ["**"], "to": ["a"]}]})
    assert send_event(d, meeting_event("one")) == 200
    rewrite(d, {"plugins": [pa, pb], "routes": [{"events": ["**"], "to": ["a", "b"]}],
                "listen": "127.0.0.1:1"})
    d.signal(signal.SIGHUP)
    d.wait_for_log("reloaded ")
    assert "listen changed; that takes a restart" in d.log()
    assert send_event(d, meeting_event("two")) == 200  # still on the old port
    wait_until(lambda: [l[0] for l in lines(b)] == ["two"])
    wait_until(lambda: [l[0] for l in lines(a) if l[0] != "DESTROY"] == ["one", "two"])


def test_request_spanning_a_reload_uses_the_config_that_took_it(daemon_factory, tmp_path):
    """Headers before the reload, body after: the old generation (its source
    and routes) must stay alive for that request."""
    import socket
    from conftest import sign
    out = tmp_path / "events.jsonl"
    d = daemon_factory({"sources": [cirrus_source()],
                        "plugins": [{"name": "audit", "module": "file_sink",
                                     "config": {"path": str(out)}}],
                        "routes": [{"events": ["**"], "to": ["audit"]}]})
    body = meeting_event("spanning")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Signature: " + sign(body).encode() + b"\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    # a new config whose source has another path: the old one must still answer
    rewrite(d, {"sources": [cirrus_source(path="/elsewhere")]})
    d.signal(signal.SIGHUP)
    d.wait_for_log("drained and closed|reloaded ")
    s.sendall(body[10:])
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    wait_until(lambda: [l["event_id"] for l in read_jsonl(out)] == ["spanning"])
    assert send_event(d, meeting_event("after"), path="/elsewhere") == 200
    wait_until(lambda: len(read_jsonl(out)) == 2)
    d.wait_for_log("drained and closed")
