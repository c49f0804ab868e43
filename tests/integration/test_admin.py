"""The admin listener: /healthz, /readyz, /metrics (checked with promtool and a parser of our own), the token, replay."""
import base64
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
