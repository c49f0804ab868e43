"""HTTP answers of DESIGN §7, limits and connection handling, against the real daemon."""
import json
import socket
import time

import pytest

from conftest import (SLOW, cirrus_source, payload, read_jsonl, send_event, sign, wait_until,
                      http_request)


def sink_config(tmp, **extra):
    cfg = {
        "sources": [cirrus_source()],
        "plugins": [{"name": "audit", "module": "file_sink",
                     "config": {"path": str(tmp / "events.jsonl")}}],
        "routes": [{"events": ["**"], "to": ["audit"]}],
    }
    cfg.update(extra)
    return cfg


def raw(port, data, timeout=5.0, shut=False):
    """Sends raw bytes and reads until the server closes or timeout; returns bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def statuses(resp):
    return [int(line.split()[1]) for line in resp.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def signed_request(body, path="/webhooks/cirrus", extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature: " + sign(body).encode() + b"\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


@pytest.fixture
def hookd(daemon_factory, tmp_path):
    return daemon_factory(sink_config(tmp_path))


def test_accepted_event_is_200_and_delivered(hookd, tmp_path):
    assert send_event(hookd, payload("developer.webhook.test")) == 200
    lines = wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    assert [l["type"] for l in lines] == ["developer.webhook.test"]
    assert lines[0]["event_id"] == "9d1c0f6e-2b7a-4c3d-8e9f-0a1b2c3d4e5f"
    assert lines[0]["event"]["data"]["username"] == "dev.admin@example.com"


def test_wrong_or_missing_signature_is_401_and_nothing_delivered(hookd, tmp_path):
    body = payload("scheduling.smartscheduler.scheduled")
    assert send_event(hookd, body, secret="not-the-secret") == 401
    status, _, text = hookd.post("/webhooks/cirrus", body)
    assert status == 401 and text == b"unauthorized\n"  # no detail on which
    status, _, _ = hookd.post("/webhooks/cirrus", body, {"X-Signature": "zz"})
    assert status == 401
    # one more good event, to know the pipeline ran: only it arrives
    assert send_event(hookd, payload("developer.webhook.test")) == 200
    wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    hookd.stop()
    assert [l["type"] for l in read_jsonl(tmp_path / "events.jsonl")] == ["developer.webhook.test"]
    assert hookd.log().count("rejected: signature missing or wrong (401)") == 3


@pytest.mark.parametrize("body,reason", [
    (b"{not json", b"body is not JSON"),
    (b"[1,2]", b"body is not a JSON object"),
    (b'{"eventId": "x1", "data": {}}', b"eventType"),
    (b'{"eventType": "a.b", "data": {}}', b"eventId"),
])
def test_bad_json_is_400_with_reason(hookd, body, reason):
    status, _, text = hookd.post("/webhooks/cirrus", body, {"X-Signature": sign(body)})
    assert status == 400
    assert reason in text and text.count(b"\n") == 1


@pytest.mark.parametrize("body,reason", [
    (b'{"eventType": "a.b", "eventId": "x\xff1", "data": {}}', b"event id is not valid UTF-8"),
    (b'{"eventType": "a.\xc3(", "eventId": "x2", "data": {}}', b"event type is not valid UTF-8"),
    (b'{"eventType": "a.b", "eventId": "x3", "data": {"id": "m\xed\xa0\x80"}}',
     b"order key is not valid UTF-8"),
])
def test_id_type_or_key_not_utf8_is_400_not_stored(hookd, tmp_path, body, reason):
    """Neither JSON parser checks UTF-8; a stored id that is not (PostgreSQL refuses it) would
    get 503 on every retry for ever. A clear 400 instead; valid non-ASCII text is accepted."""
    status, _, text = hookd.post("/webhooks/cirrus", body, {"X-Signature": sign(body)})
    assert (status, text) == (400, reason + b"\n")
    ok = '{"eventType": "a.b", "eventId": "r\u00e9union-1", "data": {"id": "caf\u00e9"}}'
    ok = ok.encode()
    assert send_event(hookd, ok) == 200
    lines = wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    assert [l["event_id"] for l in lines] == ["r\u00e9union-1"]
    assert hookd.log().count("rejected: " + reason.decode() + " (400)") == 1


def test_unknown_path_404_and_wrong_method_405(hookd):
    assert hookd.post("/nope", b"{}")[0] == 404
    status, headers, _ = hookd.request("GET", "/webhooks/cirrus")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = hookd.request("PUT", "/webhooks/cirrus", b"{}")
    assert status == 405


def test_malformed_http_is_400_and_closed(hookd):
    out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost x\r\n\r\n")
    assert statuses(out) == [400] and b"Connection: close" in out
    out = raw(hookd.port, b"GARBAGE\r\n\r\n")
    assert statuses(out) == [400]


def test_smuggling_content_length_with_chunked_is_400(hookd):
    body = b"0\r\n\r\n"
    out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert statuses(out) == [400]
    out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"Content-Length: 3\r\n\r\n{}")
    assert statuses(out) == [400]


def test_content_length_over_limit_is_413_before_body(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"max_body_bytes": 1000}))
    # The body is never sent: the answer comes from the Content-Length alone.
    out = raw(d.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
    assert statuses(out) == [413]
    # A chunked body that grows past the limit
    chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
    out = raw(d.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunk * 2)
    assert statuses(out) == [413]
    # A body within the limit still works
    body = payload("developer.webhook.test")
    assert len(body) < 1000
    assert send_event(d, body) == 200


def test_header_limit_is_431(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"max_header_bytes": 2048}))
    out = raw(d.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert statuses(out) == [431]


def test_slow_headers_and_slow_body_are_408_and_closed(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"header_timeout_ms": 300, "body_timeout_ms": 300}))
    t0 = time.monotonic()
    out = raw(d.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\n")
    assert statuses(out) == [408] and b"Connection: close" in out
    assert time.monotonic() - t0 < 3
    out = raw(d.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
    assert statuses(out) == [408]


def test_idle_keepalive_connection_is_closed(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"idle_timeout_ms": 300}))
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(signed_request(payload("developer.webhook.test")))
    data = s.recv(4096)
    assert statuses(data) == [200]
    t0 = time.monotonic()
    assert s.recv(4096) == b""  # closed by the server, silently
    assert time.monotonic() - t0 < 3
    s.close()


def test_pipelined_requests_answered_in_order(hookd, tmp_path):
    reqs = b"".join(signed_request(payload(n)) for n in (
        "scheduling.smartscheduler.scheduled", "scheduling.smartscheduler.rescheduled"))
    reqs += b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    reqs += signed_request(payload("scheduling.smartscheduler.canceled"), extra=b"Connection: close\r\n")
    out = raw(hookd.port, reqs)
    assert statuses(out) == [200, 200, 404, 200]
    lines = wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 3 and
                       read_jsonl(tmp_path / "events.jsonl"))
    assert [l["type"].rsplit(".", 1)[1] for l in lines] == ["scheduled", "rescheduled", "canceled"]


def test_chunked_body_is_accepted(hookd, tmp_path):
    body = payload("scheduling.smartscheduler.scheduled")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                      for i in range(0, len(body), 100)) + b"0\r\n\r\n"
    out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\nX-Signature: " + sign(body).encode() + b"\r\n\r\n" + chunks)
    assert statuses(out) == [200]
    wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))


def test_body_split_across_many_writes(hookd, tmp_path):
    req = signed_request(payload("scheduling.smartscheduler.scheduled"), extra=b"Connection: close\r\n")
    s = socket.create_connection(("127.0.0.1", hookd.port), timeout=5)
    for i in range(0, len(req), 37):
        s.sendall(req[i:i + 37])
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert statuses(data) == [200]


def test_duplicate_is_200_and_delivered_once(hookd, tmp_path):
    body = payload("scheduling.smartscheduler.scheduled")
    assert send_event(hookd, body) == 200
    # Cirrus Insight resends the same eventId with a new deliveryAttempt
    again = json.loads(body)
    again["deliveryAttempt"] = 2
    again["deliveryTimestamp"] = "2026-11-26T15:25:04Z"
    assert send_event(hookd, json.dumps(again).encode()) == 200
    assert send_event(hookd, payload("developer.webhook.test")) == 200
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 2)
    hookd.stop()
    assert sorted(l["type"] for l in read_jsonl(tmp_path / "events.jsonl")) == [
        "developer.webhook.test", "scheduling.smartscheduler.scheduled"]
    assert "duplicate of an accepted event" in hookd.log()


def test_max_connections_answers_503(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"max_connections": 2}))
    a = socket.create_connection(("127.0.0.1", d.port))
    b = socket.create_connection(("127.0.0.1", d.port))
    out = raw(d.port, b"")
    assert statuses(out) == [503] and b"Retry-After:" in out
    a.close()
    b.close()
    # once they are gone, requests go through again
    wait_until(lambda: send_event(d, payload("developer.webhook.test")) == 200)


def test_shutdown_refuses_new_work_and_exits_zero(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path))
    assert send_event(d, payload("developer.webhook.test")) == 200
    assert d.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=1)


def test_ipv6_and_ipv4_listeners(daemon_factory, tmp_path):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    from conftest import free_port
    port = free_port()
    d = daemon_factory(sink_config(tmp_path, listen=[f"127.0.0.1:{port}", f"[::1]:{port}"]))
    body = payload("developer.webhook.test")
    s = socket.create_connection(("::1", port), timeout=5)
    s.sendall(signed_request(body, extra=b"Connection: close\r\n"))
    data = s.recv(4096)
    s.close()
    assert statuses(data) == [200]
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200


def test_admin_endpoints(daemon_factory, tmp_path):
    from conftest import free_port
    admin = free_port()
    d = daemon_factory(sink_config(tmp_path, admin_listen=f"127.0.0.1:{admin}"))
    assert http_request(admin, "GET", "/healthz")[0] == 200
    assert http_request(admin, "GET", "/readyz")[0] == 200
    assert send_event(d, payload("developer.webhook.test")) == 200
    assert send_event(d, payload("developer.webhook.test"), secret="bad") == 401
    wait_until(lambda: b'hookd_deliveries_total{instance="audit",outcome="delivered"} 1' in
               http_request(admin, "GET", "/metrics")[2])
    text = http_request(admin, "GET", "/metrics")[2].decode()
    assert 'hookd_http_requests_total{source="cirrus",status="401"} 1' in text
    assert "hookd_events_accepted_total 1" in text


def test_shutdown_cuts_off_slow_clients_after_the_timeout(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, shutdown_timeout_ms=500,
                                   limits={"header_timeout_ms": 60000}))
    slow = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    slow.sendall(b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    assert send_event(d, payload("developer.webhook.test")) == 200
    t0 = time.monotonic()
    assert d.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 4
    assert slow.recv(4096) == b""  # closed without an answer
    slow.close()
    assert "requests still open after shutdown_timeout_ms; closing them" in d.log()


# --- Expect: 100-continue (RFC 9110 10.1.1) ---------------------------------------------

def big_event(size):
    """A signed Cirrus event padded to `size` bytes."""
    body = json.loads(payload("scheduling.smartscheduler.scheduled"))
    body["eventId"] = f"big-{size}-{time.monotonic_ns()}"
    body["data"]["padding"] = ""
    base = len(json.dumps(body).encode())
    body["data"]["padding"] = "x" * (size - base)
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


@pytest.mark.parametrize("size,header", [(200 * 1024, True), (1536 * 1024, False)])
def test_expect_100_continue_with_curl_is_answered_at_once(daemon_factory, tmp_path, size, header):
    import subprocess
    d = daemon_factory(sink_config(tmp_path, limits={"max_body_bytes": 2 * 1024 * 1024}))
    body = big_event(size)
    f = tmp_path / "body.json"
    f.write_bytes(body)
    # curl adds Expect by itself past 1 MiB; below that the user asks for it.
    extra = ["-H", "Expect: 100-continue"] if header else []
    p = subprocess.run(["curl", "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                        "-H", "Content-Type: application/json", "-H", f"X-Signature: {sign(body)}",
                        *extra, "--data-binary", f"@{f}", d.url("/webhooks/cirrus")],
                       capture_output=True, text=True, timeout=30)
    code, took = p.stdout.split()
    assert "Expect: 100-continue" in p.stderr and "HTTP/1.1 100 Continue" in p.stderr, p.stderr
    assert code == "200"
    print(f"\nExpect: 100-continue, {size // 1024} KiB body: answered in {float(took) * 1000:.1f} ms")
    assert float(took) < 0.1 * SLOW, took  # curl's own wait for a 100 would be 1 s
    def complete():
        try:  # the sink may be half-way through writing a 1.5 MiB line
            return read_jsonl(tmp_path / "events.jsonl")
        except ValueError:
            return None
    lines = wait_until(complete)
    assert [l["event_id"] for l in lines] == [json.loads(body)["eventId"]]


def expect_exchange(d, head, tls_ctx=None):
    """Sends the request head, returns (first answer bytes, seconds it took)."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    if tls_ctx is not None:
        s = tls_ctx.wrap_socket(s, server_hostname="localhost")
    t0 = time.monotonic()
    s.sendall(head)
    got = s.recv(65536)
    return s, got, time.monotonic() - t0


@pytest.mark.parametrize("over_tls", [False, True])
def test_expect_100_continue_raw(daemon_factory, tmp_path, test_ca, over_tls):
    from conftest import tls_listen
    cfg = sink_config(tmp_path, limits={"max_body_bytes": 4096})
    if over_tls:
        cfg["listen"] = [tls_listen(test_ca)]
    d = daemon_factory(cfg)
    ctx = test_ca.context() if over_tls else None
    body = payload("developer.webhook.test")
    head = (b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature: " + sign(body).encode() + b"\r\nExpect: 100-continue\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    s, got, took = expect_exchange(d, head, ctx)
    assert got == b"HTTP/1.1 100 Continue\r\n\r\n" and took < 0.1 * SLOW, (got, took)
    s.sendall(body)
    assert statuses(s.recv(65536)) == [200]
    s.close()
    # Refused at the headers: the final answer at once, no 100, connection closed.
    for path, extra, status in [(b"/nope", b"Content-Length: 10\r\n", 404),
                                (b"/webhooks/cirrus", b"Content-Length: 5000\r\n", 413)]:
        s, got, took = expect_exchange(
            d, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + extra + b"\r\n",
            ctx)
        rest = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except (OSError, Exception):
            pass
        s.close()
        got += rest
        assert statuses(got) == [status] and b"100 Continue" not in got and took < 0.1 * SLOW, got
        assert b"Connection: close" in got
    # An expectation hookd cannot meet: 417.
    s, got, _ = expect_exchange(d, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\n"
                                b"Expect: something-else\r\nContent-Length: 2\r\n\r\n{}", ctx)
    s.close()
    assert statuses(got) == [417] and b"100-continue" in got
    lines = wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    assert len(lines) == 1


# --- content codings, request targets, folding, repeated signature headers ----------------

def gz(data):
    import gzip
    return gzip.compress(data)


def test_gzip_body_is_inflated_and_verified(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"max_body_bytes": 64 * 1024}))
    body = payload("scheduling.smartscheduler.scheduled")
    # The signature covers the JSON as the plugins see it (inflated).
    for enc in ("gzip", "x-gzip"):
        b = body.replace(b'"eventId": "', b'"eventId": "' + enc.encode() + b"-")
        status, _, text = d.post("/webhooks/cirrus", gz(b), {"Content-Encoding": enc,
                                                             "X-Signature": sign(b)})
        assert status == 200, text
    lines = wait_until(lambda: (lambda l: l if len(l) == 2 else None)(
        read_jsonl(tmp_path / "events.jsonl")))
    assert {l["event"]["eventId"].split("-")[0] for l in lines} == {"gzip", "x"}
    # Over max_body_bytes once inflated (the compressed bytes are tiny).
    big = big_event(100 * 1024)
    status, _, text = d.post("/webhooks/cirrus", gz(big), {"Content-Encoding": "gzip",
                                                           "X-Signature": sign(big)})
    assert status == 413 and b"inflated body larger than max_body_bytes" in text
    # Not gzip at all, and a stream cut short.
    for bad in (b"not gzip", gz(body)[:-10]):
        status, _, text = d.post("/webhooks/cirrus", bad, {"Content-Encoding": "gzip",
                                                           "X-Signature": sign(body)})
        assert status == 400 and b"not valid gzip" in text


def test_gzip_bomb_is_413_under_the_size_limit(daemon_factory, tmp_path):
    d = daemon_factory(sink_config(tmp_path, limits={"max_body_bytes": 8 * 1024 * 1024}))
    bomb = gz(b'{"eventType": "x", "eventId": "b", "pad": "' + b"0" * (4 * 1024 * 1024) + b'"}')
    assert len(bomb) < 8 * 1024  # ~4 MiB from a few KiB: a ratio of hundreds
    t0 = time.monotonic()
    status, _, text = d.post("/webhooks/cirrus", bomb, {"Content-Encoding": "gzip",
                                                        "X-Signature": "00"})
    assert status == 413 and b"inflates more than 100 times" in text
    assert time.monotonic() - t0 < 1.0


def test_other_content_codings_are_415(hookd):
    body = payload("developer.webhook.test")
    for enc in ("br", "deflate", "gzip, gzip", "compress"):
        status, _, text = hookd.post("/webhooks/cirrus", body, {"Content-Encoding": enc,
                                                                "X-Signature": sign(body)})
        assert status == 415 and b"gzip or none" in text, enc
    status, _, _ = hookd.post("/webhooks/cirrus", body, {"Content-Encoding": "identity",
                                                         "X-Signature": sign(body)})
    assert status == 200
    # The path is judged first.
    assert hookd.post("/nope", body, {"Content-Encoding": "br"})[0] == 404


def test_absolute_form_target_is_accepted(hookd, tmp_path):
    body = payload("developer.webhook.test")
    out = raw(hookd.port, b"POST http://hookd.example:8080/webhooks/cirrus?x=1 HTTP/1.1\r\n"
              b"Host: hookd.example:8080\r\nContent-Type: application/json\r\nX-Signature: " +
              sign(body).encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\nConnection: close\r\n\r\n" + body)
    assert statuses(out) == [200], out
    out = raw(hookd.port, b"POST HTTPS://hookd.example HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert statuses(out) == [404]
    wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))


def test_obsolete_line_folding_is_400(hookd, tmp_path):
    body = payload("developer.webhook.test")
    sig = sign(body).encode()
    out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nX-Signature: " +
              sig[:10] + b"\r\n " + sig[10:] + b"\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    assert statuses(out) == [400] and b"obsolete line folding" in out, out
    assert b"Connection: close" in out
    time.sleep(0.2)
    assert read_jsonl(tmp_path / "events.jsonl") == []


def test_repeated_signature_header_is_401(hookd, tmp_path):
    body = payload("developer.webhook.test")
    good = sign(body).encode()
    for first, second in ((good, b"00"), (b"00", good), (good, good)):
        out = raw(hookd.port, b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nX-Signature: " +
                  first + b"\r\nX-Signature: " + second + b"\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        assert statuses(out) == [401], (first, second)
    time.sleep(0.2)
    assert read_jsonl(tmp_path / "events.jsonl") == []
