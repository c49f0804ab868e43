"""The admin listener: /healthz, /readyz, /metrics (checked with promtool and a parser of our own), the token, replay."""
import base64
import os
import json
import math
import re
import shutil
import subprocess

import pytest

from conftest import (cirrus_source, free_port, http_request, payload, send_event, sign,
                      wait_until)


def plugin(name, out, **config):
    return {"name": name, "module": "test_plugin", "config": {"out": str(out), **config}}


def event(event_id, kind="scheduled", meeting="m-1", etype=None):
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    if etype:
        ev["eventType"] = etype
    return json.dumps(ev).encode()


# --- a parser of the Prometheus text format (what promtool checks, and the values) ---

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, f"bad labels: {text!r}"
        assert m.group(1) not in labels, f"label {m.group(1)} twice in {text!r}"
        labels[m.group(1)] = m.group(2).encode().decode("unicode_escape")
        pos = m.end()
    return labels


def parse_metrics(text):
    """Checks the exposition format and returns ({(name, frozenset(labels)): value}, types)."""
    assert text.endswith("\n")
    samples, types, helps, seen_families = {}, {}, {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = True
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"TYPE twice for {name}"
            assert name not in seen_families, f"TYPE for {name} after its samples"
            types[name] = kind
            if kind == "counter":
                assert name.endswith("_total"), f"counter {name} without _total"
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), m.group(4)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} without TYPE"
        seen_families.append(family)
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = math.inf if value == "+Inf" else float(value)
    # Histograms: cumulative buckets ending at +Inf == _count.
    for fam, kind in types.items():
        if kind != "histogram":
            continue
        groups = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                rest = frozenset((k, x) for k, x in labels if k != "le")
                le = dict(labels)["le"]
                groups.setdefault(rest, []).append((math.inf if le == "+Inf" else float(le), v))
        for rest, buckets in groups.items():
            buckets.sort()
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{fam} buckets not cumulative"
            assert buckets[-1][0] == math.inf
            assert samples[(fam + "_count", rest)] == values[-1]
            assert (fam + "_sum", rest) in samples
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def scrape(port, headers=None):
    status, hdrs, body = http_request(port, "GET", "/metrics", headers=headers)
    assert status == 200, (status, body)
    return body.decode()


def promtool_check(text):
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout + p.stderr


# --- tests ----------------------------------------------------------------------------


def test_health_ready_and_unknown(daemon_factory, tmp_path):
    admin = free_port()
    daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "sources": [cirrus_source()],
                    "plugins": [plugin("t", tmp_path / "t.txt")],
                    "routes": [{"events": ["**"], "to": ["t"]}]})
    status, _, body = http_request(admin, "GET", "/healthz")
    assert (status, body.strip()) == (200, b"ok")
    status, _, body = http_request(admin, "GET", "/readyz")
    assert (status, body.strip()) == (200, b"ready")
    assert http_request(admin, "GET", "/nope")[0] == 404
    assert http_request(admin, "POST", "/metrics")[0] == 405


def test_readyz_says_why_when_the_spool_refuses_events(daemon_factory, tmp_path):
    admin = free_port()
    d = daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "sources": [cirrus_source()],
                        "spool": {"min_free_bytes": 2 ** 53 - 1},
                        "plugins": [plugin("t", tmp_path / "t.txt")],
                        "routes": [{"events": ["**"], "to": ["t"]}]})
    status, _, body = http_request(admin, "GET", "/readyz")
    assert status == 503
    assert b"spool refuses new events" in body
    assert http_request(admin, "GET", "/healthz")[0] == 200
    assert send_event(d, event("refused-1")) == 503
    samples, _ = parse_metrics(scrape(admin))
    assert value(samples, "hookd_ready") == 0


def test_metrics_cover_requests_events_deliveries_and_pass_promtool(daemon_factory, tmp_path):
    admin = free_port()
    d = daemon_factory({
        "admin_listen": f"127.0.0.1:{admin}",
        "sources": [cirrus_source()],
        "plugins": [
            {"name": "audit", "module": "file_sink", "config": {"path": str(tmp_path / "a.jsonl")}},
            plugin("broken", tmp_path / "b.txt", result="fail"),
            dict(plugin("flaky", tmp_path / "f.txt", result="retry"),
                 delivery={"max_attempts": 100, "backoff_initial_ms": 60000}),
        ],
        "routes": [{"events": ["scheduling.smartscheduler.*"], "to": ["audit", "broken", "flaky"]}],
    })
    for i in range(3):
        assert send_event(d, event(f"ev-{i}", meeting=f"m-{i}")) == 200
    assert send_event(d, event("ev-0", meeting="m-0")) == 200          # duplicate
    assert send_event(d, event("ev-x"), secret="wrong") == 401
    assert d.post("/webhooks/cirrus", b"{}", {"X-Signature": sign(b"{}")})[0] == 400
    assert d.request("GET", "/nowhere")[0] == 404
    unrouted = json.dumps({**json.loads(payload("developer.webhook.test")),
                           "eventId": "ev-unrouted"}).encode()
    assert send_event(d, unrouted) == 200

    def settled():
        s, _ = parse_metrics(scrape(admin))
        return (value(s, "hookd_deliveries_total", instance="broken", outcome="dead") == 3 and
                value(s, "hookd_deliveries_total", instance="audit", outcome="delivered") == 3 and
                value(s, "hookd_retry_queue_length", instance="flaky") == 3) and s
    wait_until(settled, 15, what="deliveries to settle")
    # The oldest pending delivery of "flaky" ages while it waits for its retry.
    wait_until(lambda: value(parse_metrics(scrape(admin))[0],
                             "hookd_oldest_pending_delivery_age_seconds", instance="flaky") >= 1,
               10, what="pending age")
    text = scrape(admin)
    samples, types = parse_metrics(text)
    promtool_check(text)

    v = lambda name, **l: value(samples, name, **l)  # noqa: E731
    assert v("hookd_http_requests_total", source="cirrus", status="200") == 5
    assert v("hookd_http_requests_total", source="cirrus", status="401") == 1
    assert v("hookd_http_requests_total", source="cirrus", status="400") == 1
    assert v("hookd_http_requests_total", source="", status="404") == 1
    assert v("hookd_events_total", source="cirrus", type="scheduling.smartscheduler.scheduled") == 3
    assert v("hookd_events_total", source="cirrus", type="developer.webhook.test") == 1
    assert v("hookd_events_accepted_total") == 4
    assert v("hookd_events_duplicate_total") == 1
    assert v("hookd_events_unrouted_total") == 1
    assert v("hookd_delivery_attempts_total", instance="audit", result="ok") == 3
    assert v("hookd_delivery_attempts_total", instance="broken", result="fail") == 3
    assert v("hookd_delivery_attempts_total", instance="flaky", result="retry") == 3
    assert v("hookd_deliveries_total", instance="flaky", outcome="delivered") == 0
    assert v("hookd_deliveries_queued", instance="flaky") == 3
    assert v("hookd_deliveries_queued", instance="audit") == 0
    assert v("hookd_retry_queue_length", instance="audit") == 0
    assert v("hookd_oldest_pending_delivery_age_seconds", instance="audit") == 0
    assert v("hookd_dead_letters") == 3
    assert v("hookd_spool_pending_deliveries") == 3
    assert v("hookd_spool_size_bytes") > 0
    assert v("hookd_connections_open") >= 1
    assert v("hookd_plugin_instance_up", instance="flaky", module="test_plugin") == 1
    assert v("hookd_ready") == 1
    assert types["hookd_ingest_latency_seconds"] == "histogram"
    # 5 answers of the store path and the fast paths, 401 and 400 included.
    assert v("hookd_ingest_latency_seconds_count", source="cirrus") == 7
    assert v("hookd_delivery_latency_seconds_count", instance="audit") == 3
    assert v("hookd_deliver_duration_seconds_count", instance="broken") == 3
    build = [dict(l) for (n, l) in samples if n == "hookd_build_info"]
    assert len(build) == 1 and re.match(r"^\d+\.\d+\.\d+$", build[0]["version"])
    for name, kind in types.items():
        assert name.startswith("hookd_"), name
        if name.endswith("_seconds") or name.endswith("_bytes"):
            assert kind in ("gauge", "histogram"), name


def test_event_type_label_cardinality_is_bounded(daemon_factory, tmp_path):
    admin = free_port()
    d = daemon_factory({
        "admin_listen": f"127.0.0.1:{admin}",
        "sources": [{"name": "gen", "path": "/gen", "format": "generic", "type_field": "type",
                     "id_field": "id", "verify": {"scheme": "none"}}],
    })
    for i in range(80):
        body = json.dumps({"type": f"kind.{i}", "id": f"id-{i}"}).encode()
        assert d.post("/gen", body)[0] == 200
    samples, _ = parse_metrics(scrape(admin))
    series = {dict(l)["type"]: v for (n, l), v in samples.items() if n == "hookd_events_total"}
    assert len(series) <= 65
    assert series["other"] == 80 - (len(series) - 1)
    assert sum(series.values()) == 80
    promtool_check(scrape(admin))


def test_admin_token_guards_everything_but_health(daemon_factory, tmp_path):
    admin = free_port()
    token = "s3cret-admin-token"
    d = daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "admin_token": "${ADMIN_TOKEN}",
                        "sources": [cirrus_source()]}, env={"ADMIN_TOKEN": token})
    assert http_request(admin, "GET", "/healthz")[0] == 200
    assert http_request(admin, "GET", "/readyz")[0] == 200
    for path in ("/metrics", "/", "/status.json"):
        status, headers, _ = http_request(admin, "GET", path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Basic")
    assert http_request(admin, "GET", "/metrics",
                        headers={"Authorization": "Bearer wrong"})[0] == 401
    assert http_request(admin, "GET", "/metrics",
                        headers={"Authorization": "Bearer " + token[:-1]})[0] == 401
    assert http_request(admin, "POST", "/dead-letters/1/replay",
                        headers={"X-Hookd-Admin": "1"})[0] == 401
    assert http_request(admin, "GET", "/metrics",
                        headers={"Authorization": "Bearer " + token})[0] == 200
    basic = base64.b64encode(f"anyone:{token}".encode()).decode()
    status, _, body = http_request(admin, "GET", "/", headers={"Authorization": "Basic " + basic})
    assert status == 200 and b"<h1>hookd" in body
    wrong = base64.b64encode(b"anyone:nope").decode()
    assert http_request(admin, "GET", "/", headers={"Authorization": "Basic " + wrong})[0] == 401
    samples, _ = parse_metrics(scrape(admin, {"Authorization": "Bearer " + token}))
    assert value(samples, "hookd_admin_requests_total", status="401") >= 7
    d.stop()
    assert token not in d.log()


def test_replay_endpoint(daemon_factory, tmp_path):
    admin = free_port()
    out = tmp_path / "t.txt"
    d = daemon_factory({"admin_listen": f"127.0.0.1:{admin}", "sources": [cirrus_source()],
                        "plugins": [plugin("broken", out, result="fail")],
                        "routes": [{"events": ["**"], "to": ["broken"]}]})
    assert send_event(d, event("dead-1")) == 200

    def dead():
        st = json.loads(http_request(admin, "GET", "/status.json")[2])
        return st["dead_letters"]
    letters = wait_until(dead, 10, what="a dead letter")
    assert letters[0]["event_id"] == "dead-1" and letters[0]["instance"] == "broken"
    assert letters[0]["error"] == "test plugin says fail"
    dl = letters[0]["id"]
    path = f"/dead-letters/{dl}/replay"
    # Not from a page on another site: the header is required, and without a
    # token the Host must be an address.
    assert http_request(admin, "POST", path)[0] == 403
    assert http_request(admin, "POST", path, headers={"X-Hookd-Admin": "1",
                                                      "Host": "rebind.example"})[0] == 403
    assert http_request(admin, "GET", path)[0] == 405
    assert http_request(admin, "POST", "/dead-letters/999999/replay",
                        headers={"X-Hookd-Admin": "1"})[0] == 404
    assert out.read_text().count("dead-1 ") == 1
    status, _, body = http_request(admin, "POST", path, headers={"X-Hookd-Admin": "1"})
    assert status == 200 and json.loads(body) == {"replayed": 1}
    wait_until(lambda: out.read_text().count("dead-1 ") == 2, 10, what="the replayed delivery")
    d.wait_for_log(r"admin: dead letter \d+ replayed")


# --- lock-down: admin_token off loopback, Host checks, scrubbed answers, secret files -------

def test_non_loopback_admin_listen_needs_a_token(tmp_path):
    import subprocess
    from conftest import HOOKD, _fill, hookd_check, write_config
    cfg = {"admin_listen": "0.0.0.0:0", "sources": [cirrus_source()]}
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 2 and "admin_listen: '0.0.0.0:0' is reachable from other hosts: set " \
                       "\"admin_token\"" in out, out
    path = write_config(tmp_path, _fill(cfg, tmp_path))
    p = subprocess.run([str(HOOKD), "run", "-c", str(path)], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 2 and "admin_token" in p.stderr
    cfg["admin_token"] = "${ADMIN_TOKEN}"
    rc, out = hookd_check(cfg, tmp_path, env={"ADMIN_TOKEN": "a-long-admin-token"})
    assert rc == 0, out


def raw_admin(port, head):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out:
                return out


def test_without_a_token_every_admin_request_checks_host(daemon_factory, tmp_path):
    from conftest import free_port
    aport = free_port()
    d = daemon_factory({"admin_listen": f"127.0.0.1:{aport}", "sources": [cirrus_source()]})
    def get(path, host):
        out = raw_admin(aport, b"GET " + path + b" HTTP/1.1\r\n" +
                        (b"Host: " + host + b"\r\n" if host is not None else b"") +
                        b"Connection: close\r\n\r\n")
        return int(out.split()[1]), out
    for host in (b"localhost", b"LOCALHOST:%d" % aport, b"127.0.0.1:%d" % aport, b"127.9.9.9",
                 b"[::1]:%d" % aport):
        for path in (b"/status.json", b"/healthz", b"/metrics"):
            assert get(path, host)[0] == 200, (path, host)
    # DNS rebinding: a name that resolves to 127.0.0.1 for the attacker's page.
    for host in (b"evil.example", b"evil.example:%d" % aport, b"127.0.0.1.evil.example",
                 b"[2001:db8::1]", b"10.0.0.1", None):
        for path in (b"/status.json", b"/", b"/healthz"):
            status, out = get(path, host)
            assert status == 403 and b"admin_token" in out, (path, host, out)
    out = raw_admin(aport, b"GET /status.json HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n"
                    b"Connection: close\r\n\r\n")
    assert int(out.split()[1]) == 403
    # POST too (reload, replay), even with the admin header.
    out = raw_admin(aport, b"POST /reload HTTP/1.1\r\nHost: evil.example\r\nX-Hookd-Admin: 1\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert int(out.split()[1]) == 403
    d.stop()
    assert "reloaded" not in d.log()


def test_with_a_token_any_host_that_presents_it(daemon_factory, tmp_path):
    from conftest import free_port
    aport = free_port()
    daemon_factory({"admin_listen": f"127.0.0.1:{aport}", "admin_token": "${T}",
                    "sources": [cirrus_source()]}, env={"T": "tok-123456789"})
    out = raw_admin(aport, b"GET /status.json HTTP/1.1\r\nHost: hookd.internal\r\n"
                    b"Authorization: Bearer tok-123456789\r\nConnection: close\r\n\r\n")
    assert int(out.split()[1]) == 200
    out = raw_admin(aport, b"GET /status.json HTTP/1.1\r\nHost: hookd.internal\r\n"
                    b"Connection: close\r\n\r\n")
    assert int(out.split()[1]) == 401


def test_destination_answers_are_scrubbed_everywhere(daemon_factory, tmp_path):
    import fakehttp
    from conftest import free_port, sign
    token = "Bearer s3cr3t-Bearer-t0ken-9f8e7d"
    echo = json.dumps({"error": "forbidden", "you_sent": {"Authorization": token},
                       "note": "your signing key test-secret is not allowed here"}).encode()
    srv = fakehttp.FakeServer(fakehttp.answers((403, {"Content-Type": "application/json"}, echo)))
    try:
        aport = free_port()
        d = daemon_factory({
            "admin_listen": f"127.0.0.1:{aport}",
            "sources": [cirrus_source()],
            "plugins": [{"name": "fwd", "module": "http_forward",
                         "config": {"url": srv.url("/in"),
                                    "headers": {"Authorization": "${FWD_AUTH}"}}}],
            "routes": [{"events": ["**"], "to": ["fwd"]}]}, env={"FWD_AUTH": token})
        body = payload("developer.webhook.test")
        assert d.post("/webhooks/cirrus", body, {"X-Signature": sign(body)})[0] == 200
        srv.wait_count(1)
        assert srv.got()[0].headers["authorization"] == token  # it was really sent
        d.wait_for_log(r"failed for good")
        texts = {"log": d.log()}
        for path in ("/status.json", "/"):
            texts[path] = http_request(aport, "GET", path)[2].decode()
        wait_until(lambda: "forbidden" in http_request(aport, "GET", "/status.json")[2].decode())
        texts["/status.json"] = http_request(aport, "GET", "/status.json")[2].decode()
        for where, text in texts.items():
            assert "s3cr3t-Bearer-t0ken" not in text, where
            assert "test-secret" not in text, where
        assert "[redacted]" in texts["/status.json"] and "forbidden" in texts["/status.json"]
        assert "[redacted]" in texts["log"]
    finally:
        srv.close()


def test_secret_file_readable_by_others_is_warned_about(tmp_path):
    from conftest import hookd_check
    secret = tmp_path / "signing.key"
    secret.write_text("file-secret-123\n")
    os.chmod(secret, 0o640)
    src = cirrus_source(secret="${file:signing.key}")
    rc, out = hookd_check({"sources": [src]}, tmp_path)
    assert rc == 0 and f"secret file '{secret}' is readable by its group (mode 640)" in out, out
    os.chmod(secret, 0o600)
    rc, out = hookd_check({"sources": [src]}, tmp_path)
    assert rc == 0 and "readable by" not in out
