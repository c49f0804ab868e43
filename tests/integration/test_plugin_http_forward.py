"""http_forward plugin: the real daemon relays events to a local receiver that verifies the
Standard Webhooks signature the way a downstream service would."""
import base64
import hashlib
import hmac
import json
import re
import time

import pytest

from conftest import (check_readme_config, cirrus_source, free_port, hookd_check, payload,
                      plugin_child_pids, send_event, sign, wait_until)

pytest_plugins = ["fakehttp"]  # the fake_server fixture

FAST_DELIVERY = {"concurrency": 4, "max_attempts": 5, "backoff_initial_ms": 100,
                 "backoff_max_ms": 2000, "timeout_ms": 30000}

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def signature_ok(secret, headers, body, tolerance=300):
    """Standard Webhooks verification, as a receiver implements it."""
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not ts or not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    for sig in headers.get("webhook-signature", "").split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def receiver(secret, first=()):
    """respond(): the first answers forced (status, body), then 204 for a valid
    signature and 401 for anything else."""
    def respond(req, n):
        req.verified = signature_ok(secret, req.headers, req.body)
        if n <= len(first):
            status, body = first[n - 1]
            return status, {}, body.encode()
        return (204, {}, b"") if req.verified else (401, {}, b"bad signature")
    return respond


def event(kind="scheduled", event_id=None):
    doc = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    if event_id:
        doc["eventId"] = event_id
    return json.dumps(doc, indent=1).encode()


def fwd_config(cfg):
    return {
        "sources": [cirrus_source()],
        "plugins": [{"name": "fwd", "module": "http_forward", "config": cfg}],
        "routes": [{"source": "cirrus", "events": ["**"], "to": ["fwd"]}],
        "delivery": dict(FAST_DELIVERY),
    }


def delivered(d, etype, attempt=1):
    d.wait_for_log(rf"delivered {re.escape(etype)} \(attempt {attempt}\)")


def dead(d, message_regex):
    d.wait_for_log(r"failed for good after \d+ attempt\(s\): " + message_regex)


def test_forwards_raw_body_signed(daemon_factory, fake_server):
    rx = fake_server(receiver(SECRET))
    d = daemon_factory(fwd_config({"url": rx.url("/in/cirrus"), "secret": SECRET,
                                   "headers": {"X-Event-Type": "{{eventType}}",
                                               "Authorization": "Bearer next-hop"}}))
    body = event()
    before = int(time.time())
    assert send_event(d, body) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    reqs = rx.got()
    assert len(reqs) == 1
    r = reqs[0]
    assert (r.method, r.path) == ("POST", "/in/cirrus")
    assert r.body == body  # byte for byte, as signed by the sender
    assert r.verified
    assert r.headers["webhook-id"] == "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912"
    assert before - 1 <= int(r.headers["webhook-timestamp"]) <= time.time() + 1
    assert r.headers["webhook-signature"].startswith("v1,")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-event-type"] == "scheduling.smartscheduler.scheduled"
    assert r.headers["authorization"] == "Bearer next-hop"


def test_original_content_type_is_kept(daemon_factory, fake_server):
    rx = fake_server(receiver(SECRET))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET}))
    body = payload("developer.webhook.test")
    status, _, _ = d.post("/webhooks/cirrus", body, {
        "Content-Type": "application/json; charset=utf-8", "X-Signature": sign(body)})
    assert status == 200
    delivered(d, "developer.webhook.test")
    r = rx.got()[0]
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.body == body and r.verified


def test_secret_without_prefix_is_the_same_key(daemon_factory, fake_server):
    rx = fake_server(receiver(SECRET))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET[len("whsec_"):]}))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    assert [r.verified for r in rx.got()] == [True]


def test_retry_keeps_id_and_signs_again(daemon_factory, fake_server):
    rx = fake_server(receiver(SECRET, first=[(503, "busy"), (429, "slow down")]))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET}))
    assert send_event(d, event()) == 200
    # The 503 uses an attempt, the 429 only holds the instance (no attempt).
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=2)
    reqs = rx.got()
    assert len(reqs) == 3
    assert {r.headers["webhook-id"] for r in reqs} == {"5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912"}
    assert all(r.verified for r in reqs)
    assert reqs[0].body == reqs[1].body == reqs[2].body


def test_receiver_with_another_key_refuses(daemon_factory, fake_server):
    other = "whsec_" + base64.b64encode(b"another key of thirty-two bytes!").decode()
    rx = fake_server(receiver(other))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET}))
    assert send_event(d, event()) == 200
    dead(d, r"HTTP 401: bad signature")
    reqs = rx.got()
    assert len(reqs) == 1 and not reqs[0].verified


def test_several_events_each_signed(daemon_factory, fake_server):
    rx = fake_server(receiver(SECRET))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET}))
    bodies = {f"evt-{i}": event(event_id=f"evt-{i}") for i in range(5)}
    for body in bodies.values():
        assert send_event(d, body) == 200
    rx.wait_count(5)
    done = re.compile(r"delivered scheduling\.smartscheduler\.scheduled \(attempt 1\)")
    wait_until(lambda: len(done.findall(d.log())) == 5, what="five deliveries")
    got = {r.headers["webhook-id"]: r for r in rx.got()}
    assert sorted(got) == sorted(bodies)
    for eid, body in bodies.items():
        assert got[eid].body == body and got[eid].verified
    assert len(rx.got()) == 5


def test_without_secret_no_signature(daemon_factory, fake_server):
    rx = fake_server(lambda req, n: (200, {}, b"ok"))
    d = daemon_factory(fwd_config({"url": rx.url("/in")}))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    r = rx.got()[0]
    assert r.headers["webhook-id"] == "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912"
    assert "webhook-timestamp" in r.headers
    assert "webhook-signature" not in r.headers


def test_connection_refused_is_retried(daemon_factory, fake_server):
    d = daemon_factory(fwd_config({"url": f"http://127.0.0.1:{free_port()}/in",
                                   "secret": SECRET}))
    assert send_event(d, event()) == 200
    d.wait_for_log(r"retry in \d+ ms: .*(Couldn't connect|Connection refused|Failed to connect)")


@pytest.mark.parametrize("cfg,needle", [
    ({"url": "http://127.0.0.1:9/", "secret": SECRET, "sekret": "x"}, "sekret"),
    ({"secret": SECRET}, "url"),
    ({"url": "127.0.0.1:9/in"}, "url"),
    ({"url": "http://127.0.0.1:9/", "secret": "whsec_not base64!"}, "secret"),
    ({"url": "http://127.0.0.1:9/", "secret": ""}, "secret"),
    ({"url": "http://127.0.0.1:9/", "headers": {"webhook-signature": "x"}}, "webhook-signature"),
    ({"url": "http://127.0.0.1:9/", "headers": {"Content-Type": "text/plain"}}, "Content-Type"),
    ({"url": "http://127.0.0.1:9/", "headers": {"X-A": "{{unclosed"}}, "X-A"),
    ({"url": "http://127.0.0.1:9/", "timeout_ms": -1}, "timeout_ms"),
])
def test_check_rejects_bad_config(tmp_path, cfg, needle):
    rc, output = hookd_check(fwd_config(cfg), tmp_path)
    assert rc == 2, f"{cfg} was accepted:\n{output}"
    assert needle in output, output


def test_readme_config_is_accepted(tmp_path):
    check_readme_config("http_forward", tmp_path, env={"CIRRUS_SIGNING_KEY": "k",
                                                       "FORWARD_SECRET": SECRET})


def maps_libcurl(d, pid=None):
    with open(f"/proc/{pid or d.proc.pid}/maps") as f:
        return [line for line in f.read().splitlines()
                if line.rsplit("/", 1)[-1].startswith("libcurl.so")]


def test_libcurl_is_loaded_at_the_first_request_only(daemon_factory, fake_server, isolation):
    """libcurl (and the TLS, SSH, LDAP and Kerberos libraries it pulls in,
    ~4 MiB resident) is mapped only when a plugin first sends HTTP."""
    rx = fake_server(receiver(SECRET))
    d = daemon_factory(fwd_config({"url": rx.url("/in"), "secret": SECRET}))
    assert not maps_libcurl(d)
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    if isolation == "process":  # in the plugin's own process; hookd never maps it
        assert not maps_libcurl(d) and maps_libcurl(d, plugin_child_pids(d.proc.pid)[0])
    else:
        assert maps_libcurl(d)
    assert len(rx.got()) == 1
