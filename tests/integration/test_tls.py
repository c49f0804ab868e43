"""Native TLS on the webhook listener: curl, Python and node (undici) clients against a CA the
suite makes, protocol versions and ALPN with openssl s_client, session resumption, mutual
TLS, certificate reload on SIGHUP (a bad one keeps the old), the handshake under the header
timeout, and TLS errors that never reach a plugin."""
import json
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import (SLOW, cirrus_source, free_port, hookd_check, https_request, payload,
                      read_jsonl, sign, tls_listen, wait_until, http_request)


def config(tmp, ca, admin_port, **extra):
    cfg = {"listen": [tls_listen(ca)],
           "admin_listen": f"127.0.0.1:{admin_port}",
           "sources": [cirrus_source()],
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp / "events.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    cfg.update(extra)
    return cfg


def metric(admin_port, name, labels=""):
    _, _, text = http_request(admin_port, "GET", "/metrics")
    rx = re.compile(r"^" + re.escape(name + labels) + r" (\S+)$", re.M)
    m = rx.search(text.decode())
    return float(m.group(1)) if m else None


def signed_headers(body):
    return {"Content-Type": "application/json", "X-Signature": sign(body)}


def event(i, kind="scheduling.smartscheduler.scheduled"):
    body = json.loads(payload(kind))
    body["eventId"] = f"tls-{i}-{time.monotonic_ns()}"
    return json.dumps(body).encode()


def s_client(port, *args, stdin=b"", ca=None):
    """openssl s_client against 127.0.0.1:port; returns its combined output."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    if ca:
        cmd += ["-CAfile", str(ca)]
    p = subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=20)
    return (p.stdout + p.stderr).decode(errors="replace")


@pytest.fixture
def tls_hookd(daemon_factory, tmp_path, test_ca):
    aport = free_port()
    d = daemon_factory(config(tmp_path, test_ca, aport))
    d.admin_port = aport
    return d


def test_curl_python_and_node_clients_deliver_over_tls(tls_hookd, tmp_path, test_ca):
    d = tls_hookd
    # curl, two requests on one connection (keep-alive).
    b1, b2 = event(1), event(2)
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(test_ca.ca), "-o", "/dev/null", "-w", "%{http_code} ",
         "-H", "Content-Type: application/json", "-H", f"X-Signature: {sign(b1)}",
         "--data-binary", b1.decode(), f"https://localhost:{d.port}/webhooks/cirrus", "--next",
         "--cacert", str(test_ca.ca), "-o", "/dev/null", "-w", "%{http_code} %{num_connects}",
         "-H", "Content-Type: application/json", "-H", f"X-Signature: {sign(b2)}",
         "--data-binary", b2.decode(), f"https://localhost:{d.port}/webhooks/cirrus"],
        capture_output=True, text=True, timeout=20)
    assert out.stdout == "200 200 0", out.stdout + out.stderr  # the second reused the connection
    # Python's ssl module.
    b3 = event(3)
    status, _, _ = https_request(d.port, "POST", "/webhooks/cirrus", b3, signed_headers(b3),
                                 ctx=test_ca.context())
    assert status == 200
    # node's built-in fetch (undici), three requests on one kept-alive connection.
    before = metric(d.admin_port, "hookd_tls_handshakes_total", '{resumed="false"}')
    bodies = [event(10 + i) for i in range(3)]
    script = """
const [url, ...rest] = process.argv.slice(1);
(async () => {
  const out = [];
  for (let i = 0; i < rest.length; i += 2) {
    const r = await fetch(url, {method: 'POST', body: rest[i],
      headers: {'content-type': 'application/json', 'x-signature': rest[i + 1]}});
    out.push(r.status); await r.text();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
"""
    args = [f"https://localhost:{d.port}/webhooks/cirrus"]
    for b in bodies:
        args += [b.decode(), sign(b)]
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(test_ca.ca))
    p = subprocess.run(["node", "-e", script, *args], capture_output=True, text=True, env=env,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [200, 200, 200]
    after = metric(d.admin_port, "hookd_tls_handshakes_total", '{resumed="false"}')
    assert after - before == 1  # undici kept its connection alive
    want = {json.loads(b)["eventId"] for b in [b1, b2, b3] + bodies}
    wait_until(lambda: {e["event_id"] for e in read_jsonl(tmp_path / "events.jsonl")} == want)


def test_protocol_versions_and_alpn(tls_hookd, test_ca):
    d = tls_hookd
    for v in ("-tls1_2", "-tls1_3"):
        out = s_client(d.port, v, "-alpn", "http/1.1", ca=test_ca.ca)
        assert "Verify return code: 0 (ok)" in out, out
        assert "ALPN protocol: http/1.1" in out, out
        assert ("TLSv1.3" if v == "-tls1_3" else "TLSv1.2") in out
    for v in ("-tls1", "-tls1_1"):
        out = s_client(d.port, v, "-cipher", "DEFAULT@SECLEVEL=0", ca=test_ca.ca)
        assert "alert protocol version" in out or "no protocols available" in out, out
    # A client that offers only h2 gets no_application_protocol.
    out = s_client(d.port, "-alpn", "h2", ca=test_ca.ca)
    assert "no application protocol" in out, out
    wait_until(lambda: metric(d.admin_port, "hookd_tls_handshake_failures_total",
                              '{reason="alpn"}') == 1)
    assert metric(d.admin_port, "hookd_tls_handshake_failures_total",
                  '{reason="protocol_version"}') >= 1


def test_session_resumption(tls_hookd, test_ca):
    d = tls_hookd
    ctx = test_ca.context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known right after the handshake
    with socket.create_connection(("127.0.0.1", d.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            sess = s.session
            assert not s.session_reused
    with socket.create_connection(("127.0.0.1", d.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            assert s.session_reused
    # TLS 1.3: the ticket arrives after the handshake, with the first answer.
    ctx13 = test_ca.context()
    ctx13.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", d.port)) as raw:
        with ctx13.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 404")
            sess = s.session
    with socket.create_connection(("127.0.0.1", d.port)) as raw:
        with ctx13.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            assert s.session_reused and s.version() == "TLSv1.3"
    assert metric(d.admin_port, "hookd_tls_handshakes_total", '{resumed="true"}') == 2


def test_plain_http_on_the_tls_port_and_garbage_never_reach_plugins(tls_hookd, tmp_path, test_ca):
    d = tls_hookd
    body = event(1)
    # Plain HTTP: told to use https, never a request.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nX-Signature: " +
                  sign(body).encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 400 ") and b"use https://" in got
    # Random bytes, and a ClientHello cut short by the client.
    for junk in (os.urandom(300), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40):
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    # The good event afterwards is the only one a plugin sees.
    good = event(2)
    status, _, _ = https_request(d.port, "POST", "/webhooks/cirrus", good, signed_headers(good),
                                 ctx=test_ca.context())
    assert status == 200
    wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    time.sleep(0.2)
    assert [e["event_id"] for e in read_jsonl(tmp_path / "events.jsonl")] == [
        json.loads(good)["eventId"]]
    assert metric(d.admin_port, "hookd_tls_handshake_failures_total", '{reason="plain_http"}') == 1
    assert metric(d.admin_port, "hookd_tls_handshake_failures_total", '{reason="malformed"}') + \
        metric(d.admin_port, "hookd_tls_handshake_failures_total", '{reason="closed"}') + \
        metric(d.admin_port, "hookd_tls_handshake_failures_total", '{reason="other"}') == 2


def test_handshake_counts_against_the_header_timeout(daemon_factory, tmp_path, test_ca):
    aport = free_port()
    cfg = config(tmp_path, test_ca, aport, limits={"header_timeout_ms": 1500})
    d = daemon_factory(cfg)
    # Half a ClientHello, then nothing: closed at the header deadline.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert s.recv(100) == b""
    took = time.monotonic() - t0
    assert 1.3 <= took < 3.0 * SLOW, took
    wait_until(lambda: metric(aport, "hookd_tls_handshake_failures_total",
                              '{reason="timeout"}') == 1)
    # A slow handshake leaves less time for the headers: 1 s of waiting before
    # the ClientHello, then headers that never end, answered at 1.5 s from
    # the accept (not 1 s after the handshake).
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    t0 = time.monotonic()
    time.sleep(1.0)
    s = test_ca.context().wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\n")
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ssl.SSLError, ConnectionResetError):
        pass
    took = time.monotonic() - t0
    s.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert 1.3 <= took < 2.2 * SLOW, took


def test_mutual_tls(daemon_factory, tmp_path, test_ca):
    aport = free_port()
    cfg = config(tmp_path, test_ca, aport)
    cfg["listen"] = [tls_listen(test_ca, client_ca=test_ca.client_ca)]
    d = daemon_factory(cfg)
    body = event(1)
    status, _, _ = https_request(d.port, "POST", "/webhooks/cirrus", body, signed_headers(body),
                                 ctx=test_ca.context(client_cert=True))
    assert status == 200
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        https_request(d.port, "POST", "/webhooks/cirrus", body, signed_headers(body),
                      ctx=test_ca.context())
    wait_until(lambda: metric(aport, "hookd_tls_handshake_failures_total",
                              '{reason="client_certificate"}') == 1)
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 1)


def test_certificate_reload_keeps_connections_and_refuses_a_bad_one(daemon_factory, tmp_path,
                                                                       test_ca):
    import shutil
    aport = free_port()
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(test_ca.cert, cert)
    shutil.copy(test_ca.key, key)
    os.chmod(key, 0o600)
    cfg = config(tmp_path, test_ca, aport)
    cfg["listen"] = [tls_listen(test_ca, cert=cert, key=key)]
    d = daemon_factory(cfg)
    assert "subject=CN = localhost" in s_client(d.port, ca=test_ca.ca)
    # A kept-alive connection opened before the reload.
    import http.client
    conn = http.client.HTTPSConnection("localhost", d.port, context=test_ca.context(), timeout=10)
    b1 = event(1)
    conn.request("POST", "/webhooks/cirrus", b1, signed_headers(b1))
    assert conn.getresponse().read() == b""
    # Renewed certificate (another key, another name): SIGHUP serves it.
    new_cert, new_key = test_ca.issue("renewed", "renewed.localhost")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    d.signal(1)
    d.wait_for_log(r"serves the certificate /CN=renewed.localhost")
    assert "subject=CN = renewed.localhost" in s_client(d.port, ca=test_ca.ca)
    b2 = event(2)
    conn.request("POST", "/webhooks/cirrus", b2, signed_headers(b2))
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""  # the old connection was not dropped
    # A broken certificate: the reload fails, the one in use stays.
    cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    d.signal(1)
    d.wait_for_log(r"reload failed, config unchanged: .*listen\[0\]\.tls\.cert: cannot load")
    assert "subject=CN = renewed.localhost" in s_client(d.port, ca=test_ca.ca)
    assert metric(aport, "hookd_tls_certificate_reloads_total", '{result="failed"}') == 1
    assert metric(aport, "hookd_tls_certificate_reloads_total", '{result="ok"}') == 1
    # POST /reload says why too.
    status, _, text = http_request(aport, "POST", "/reload", headers={"X-Hookd-Admin": "1"})
    assert status == 400 and b"listen[0].tls.cert" in text
    b3 = event(3)
    conn.request("POST", "/webhooks/cirrus", b3, signed_headers(b3))
    assert conn.getresponse().status == 200
    conn.close()
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 3)


@pytest.mark.parametrize("breakage,needle", [
    ("missing_key", "listen[0].tls.key: cannot read"),
    ("wrong_key", "listen[0].tls.key: the key does not match"),
    ("not_pem", "listen[0].tls.cert: cannot load a PEM certificate chain"),
    ("no_key_field", "listen[0].tls: missing required key 'key'"),
    ("unknown_field", "listen[0].tls.certs: unknown key (did you mean 'cert'?)"),
])
def test_check_names_the_broken_tls_setting(tmp_path, test_ca, breakage, needle):
    tls = {"cert": str(test_ca.cert), "key": str(test_ca.key)}
    if breakage == "missing_key":
        tls["key"] = str(tmp_path / "nope.key")
    elif breakage == "wrong_key":
        tls["key"] = str(test_ca.client_key)
    elif breakage == "not_pem":
        (tmp_path / "bad.pem").write_text("hello\n")
        tls["cert"] = str(tmp_path / "bad.pem")
    elif breakage == "no_key_field":
        del tls["key"]
    else:
        tls["certs"] = tls.pop("cert")
    cfg = {"listen": [{"address": "127.0.0.1:0", "tls": tls}], "sources": [cirrus_source()]}
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 2 and needle in out, out


def test_a_key_readable_by_others_is_warned_about(tmp_path, test_ca):
    import shutil
    key = tmp_path / "open.key"
    shutil.copy(test_ca.key, key)
    os.chmod(key, 0o644)
    cfg = {"listen": [{"address": "127.0.0.1:0",
                       "tls": {"cert": str(test_ca.cert), "key": str(key)}}],
           "sources": [cirrus_source()]}
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 0, out
    assert f"TLS private key '{key}' is readable by every user (mode 644)" in out
    os.chmod(key, 0o600)
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 0 and "readable by" not in out
