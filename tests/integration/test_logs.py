"""Logs: one info-or-above line naming the id per accepted, retried, dead-lettered or rejected event; JSON and text escaping; no secrets; the bounded drain at shutdown."""
import json
import base64
import re
import time

from conftest import cirrus_source, free_port, payload, send_event, sign, wait_until

pytest_plugins = ["fakehttp"]

SEVERE = ("info", "warn", "error")


def plugin(name, out, **config):
    return {"name": name, "module": "test_plugin", "config": {"out": str(out), **config}}


def event(event_id, meeting="m-1", etype=None):
    ev = json.loads(payload("scheduling.smartscheduler.scheduled"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    if etype is not None:
        ev["eventType"] = etype
    return json.dumps(ev).encode()


def json_records(daemon):
    """Every log line as a JSON object (each line must be one, UTF-8)."""
    raw = daemon.log_path.read_bytes()
    out = []
    for line in raw.split(b"\n"):
        if not line:
            continue
        rec = json.loads(line.decode("utf-8"))  # strict: invalid UTF-8 fails here
        assert set(rec) >= {"time", "level", "message"}, rec
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", rec["time"]), rec
        out.append(rec)
    return out


def about(records, event_id):
    return [r for r in records if r.get("event_id") == event_id and r["level"] in SEVERE]


def test_one_line_per_accepted_retried_dead_and_rejected_event(daemon_factory, tmp_path):
    d = daemon_factory({
        "log": {"level": "info", "format": "json"},
        "sources": [cirrus_source()],
        "plugins": [
            {"name": "audit", "module": "file_sink", "config": {"path": str(tmp_path / "a.jsonl")}},
            dict(plugin("flaky", tmp_path / "f.txt", retry_times=2),
                 delivery={"backoff_initial_ms": 20, "backoff_max_ms": 40}),
            plugin("broken", tmp_path / "b.txt", result="fail"),
        ],
        "routes": [{"events": ["**"], "to": ["audit", "flaky", "broken"]}],
    })
    assert send_event(d, event("evt-1")) == 200
    wait_until(lambda: (tmp_path / "f.txt").exists() and
               (tmp_path / "f.txt").read_text().count("evt-1 ") == 3, 10, what="flaky to succeed")
    assert send_event(d, event("evt-1")) == 200             # the sender retries: duplicate
    body = event("evt-forged")
    assert d.post("/webhooks/cirrus", body, {"X-Signature": sign(body, "wrong")})[0] == 401
    no_type = json.dumps({"eventId": "evt-notype", "data": {}}).encode()
    assert d.post("/webhooks/cirrus", no_type, {"X-Signature": sign(no_type)})[0] == 400
    time.sleep(0.3)
    d.stop()
    recs = json_records(d)

    lines = about(recs, "evt-1")
    msgs = [(r.get("instance"), r["level"], r["message"]) for r in lines]
    accepted = [m for m in msgs if m[2].startswith("accepted ")]
    duplicate = [m for m in msgs if m[2].startswith("duplicate ")]
    retried = [m for m in msgs if "retry in" in m[2]]
    dead = [m for m in msgs if "failed for good" in m[2]]
    assert len(accepted) == 1 and accepted[0][0] is None, msgs
    assert len(duplicate) == 1, msgs
    assert len(retried) == 2 and all(m[0] == "flaky" for m in retried), msgs
    assert len(dead) == 1 and dead[0][0] == "broken", msgs
    assert len(lines) == 5, msgs  # nothing else at info or above: "delivered" is debug
    assert all(r["source"] == "cirrus" for r in lines)
    # A request whose body cannot be trusted has no id to name: its line names the peer.
    rejected = [r for r in recs if r["message"].startswith("rejected:")]
    assert len(rejected) == 2, rejected
    assert all(r["level"] == "info" and r.get("peer", "").startswith("127.0.0.1:") for r in rejected)
    assert "evt-forged" not in d.log()


def test_event_rejected_with_503_names_its_id(daemon_factory, tmp_path):
    d = daemon_factory({"log": {"level": "info", "format": "json"},
                        "sources": [cirrus_source()], "spool": {"min_free_bytes": 2 ** 53 - 1}})
    assert send_event(d, event("evt-503")) == 503
    d.stop()
    lines = about(json_records(d), "evt-503")
    assert len(lines) == 1 and lines[0]["message"].startswith("rejected:"), lines
    assert "(503)" in lines[0]["message"]


def test_control_characters_and_bad_utf8_cannot_forge_lines(daemon_factory, tmp_path, fake_server):
    """Control characters in an event id, and bytes that are not UTF-8 in a destination's
    answer, are escaped in both log formats: no line can be forged, no raw byte gets out. An
    event whose type is not UTF-8 is refused at the door (400) and its bytes are not logged."""
    evil_id = 'id\n{"level":"error","message":"forged"}\x1b[31m\x07"quote\\'
    dest = fake_server(lambda req, n: (500, {"Content-Type": "text/plain"},
                                       b"nope \xff\xfe\x1b[31m\n{\"level\":\"error\"}"))
    cfg = {"sources": [cirrus_source()],
           "plugins": [{"name": "fwd", "module": "http_forward", "config": {"url": dest.url("/in")},
                        "delivery": {"max_attempts": 1}}],
           "routes": [{"events": ["**"], "to": ["fwd"]}]}
    for fmt in ("json", "text"):
        d = daemon_factory(dict(cfg, log={"level": "info", "format": fmt}))
        bad = event("bad-type").replace(b'"scheduling.smartscheduler.scheduled"',
                                        b'"scheduling.\xff\xfe.scheduled"')
        assert send_event(d, bad) == 400
        assert send_event(d, event(evil_id)) == 200
        d.wait_for_log("failed for good")
        d.stop()
        raw = d.log_path.read_bytes()
        assert b"\x1b" not in raw and b"\x07" not in raw and b"\xff" not in raw
        assert raw.count(b"rejected: event type is not valid UTF-8 (400)") == 1
        if fmt == "json":
            recs = json_records(d)
            assert not any(r["message"] == "forged" for r in recs)
            acc = [r for r in recs if r["message"].startswith("accepted")]
            assert len(acc) == 1 and acc[0]["event_id"] == evil_id
            failed = [r for r in recs if "nope" in r["message"]]
            assert failed and all(r["event_id"] == evil_id for r in failed), recs
            assert any("\ufffd" in r["message"] for r in failed), failed
        else:
            lines = raw.decode("utf-8").splitlines()
            acc = [l for l in lines if " accepted " in l]
            assert len(acc) == 1
            assert "\\x1b[31m\\x07" in acc[0] and "\\n{" in acc[0]
            assert 'event_id="id\\n{\\"level\\"' in acc[0]
            failed = [l for l in lines if "nope" in l]
            assert len(failed) == 1 and 'event_id="id\\n{' in failed[0], failed
            assert not any(l.startswith('{"level":"error"') for l in lines)


def test_no_secrets_in_logs_even_at_debug(daemon_factory, tmp_path):
    admin = free_port()
    secrets = {"SIGNING": "signing-key-7f3a9", "ADMIN": "admin-token-b81c2",
               "HOOK": "whsec_" + base64.b64encode(b"forward-secret-c0ffee").decode()}
    src = cirrus_source(secret="${SIGNING}")
    d = daemon_factory({
        "log": {"level": "debug", "format": "json"},
        "admin_listen": f"127.0.0.1:{admin}", "admin_token": "${ADMIN}",
        "sources": [src],
        "plugins": [{"name": "fwd", "module": "http_forward",
                     "config": {"url": f"http://127.0.0.1:{free_port()}/x", "secret": "${HOOK}"},
                     "delivery": {"max_attempts": 1}}],
        "routes": [{"events": ["**"], "to": ["fwd"]}],
    }, env=secrets)
    assert send_event(d, event("evt-s"), secret=secrets["SIGNING"]) == 200
    assert send_event(d, event("evt-bad"), secret=secrets["SIGNING"] + "x") == 401
    from conftest import http_request
    assert http_request(admin, "GET", "/metrics",
                        headers={"Authorization": "Bearer " + secrets["ADMIN"]})[0] == 200
    assert http_request(admin, "GET", "/metrics",
                        headers={"Authorization": "Bearer " + secrets["ADMIN"] + "x"})[0] == 401
    d.wait_for_log("failed for good")
    d.stop()
    text = d.log()
    for name, value in secrets.items():
        assert value not in text, f"{name} leaked into the log"
    json_records(d)


def test_shutdown_is_bounded_and_logs_what_is_left(daemon_factory, tmp_path):
    out = tmp_path / "t.txt"
    base = {"log": {"level": "info", "format": "json"}, "sources": [cirrus_source()],
            "routes": [{"events": ["**"], "to": ["slow"]}], "shutdown_timeout_ms": 500}
    d = daemon_factory(dict(base, plugins=[dict(plugin("slow", out, sleep_ms=20000),
                                                delivery={"concurrency": 1})]))
    for i in range(3):
        assert send_event(d, event(f"evt-{i}", meeting="same")) == 200
    time.sleep(0.3)  # the first deliver() is running
    t0 = time.monotonic()
    assert d.stop(timeout=10) == 0  # one SIGTERM
    took = time.monotonic() - t0
    assert took < 5, f"shutdown took {took:.1f}s with shutdown_timeout_ms 500"
    m = re.search(r"(\d+) deliveries left in the spool", d.log())
    assert m and int(m.group(1)) == 3, d.log()
    # They resume on the next start, from the same data_dir.
    d2 = daemon_factory(dict(base, data_dir=str(d.tmp / "var"),
                             plugins=[plugin("slow", tmp_path / "t2.txt")]))
    wait_until(lambda: (tmp_path / "t2.txt").exists() and
               len((tmp_path / "t2.txt").read_text().splitlines()) == 3, 10,
               what="the left deliveries to resume")
    assert [l.split()[0] for l in (tmp_path / "t2.txt").read_text().splitlines()] == \
        ["evt-0", "evt-1", "evt-2"]
    d2.stop()
