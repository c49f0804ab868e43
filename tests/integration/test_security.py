"""Issue 5 against the real daemon: verify schemes with replay protection, basic auth,
allow_ips / trusted_proxies, plugin loading safety, privilege drop, secrets kept out of
logs and `hookd check`, and log injection."""
import base64
import hashlib
import hmac
import json
import os
import pathlib
import pwd
import grp
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import (HOOKD, PLUGIN_DIR, SECRET, hookd_check, http_request, payload, read_jsonl,
                      send_event, wait_until)

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in [g.gr_name for g in grp.getgrall()] else NOBODY
AS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not AS_ROOT, reason="needs root (CI runs as root)")


def hexmac(key, *parts):
    return hmac.new(key.encode(), b"".join(parts), hashlib.sha256).hexdigest()


def generic(name, path, verify, **extra):
    src = {"name": name, "path": path, "format": "generic", "type_field": "type",
           "id_field": "id", "verify": verify}
    src.update(extra)
    return src


def sink(tmp, sources, **extra):
    cfg = {"sources": sources,
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp / "events.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    cfg.update(extra)
    return cfg


def event(i):
    return json.dumps({"type": "test.event", "id": f"evt-{i}-{time.monotonic_ns()}"}).encode()


def post(d, path, body, headers):
    h = {"Content-Type": "application/json"}
    h.update(headers)
    return d.post(path, body, h)[0]


# ---- hmac with a timestamp ---------------------------------------------------

CAL = {"scheme": "hmac", "header": "Calendly-Webhook-Signature", "timestamp_key": "t",
       "signature_key": "v1", "signed_payload": "{timestamp}.{body}", "secrets": ["cal-key"]}
ZOOM = {"scheme": "hmac", "header": "x-zm-signature", "prefix": "v0=",
        "timestamp_header": "x-zm-request-timestamp", "signed_payload": "v0:{timestamp}:{body}",
        "tolerance_s": 60, "secrets": ["zoom-key"]}


def test_calendly_style_signature_and_replay(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("cal", "/cal", CAL)]))
    body = event(1)
    t = str(int(time.time()))
    good = f"t={t},v1={hexmac('cal-key', t.encode(), b'.', body)}"
    assert post(d, "/cal", body, {"Calendly-Webhook-Signature": good}) == 200
    # A request captured earlier and replayed: its signature is valid, its
    # timestamp is not (default tolerance 300 s).
    old = str(int(time.time()) - 301)
    replay = f"t={old},v1={hexmac('cal-key', old.encode(), b'.', body)}"
    assert post(d, "/cal", event(2), {"Calendly-Webhook-Signature": replay}) == 401
    body3 = event(3)
    replay = f"t={old},v1={hexmac('cal-key', old.encode(), b'.', body3)}"
    assert post(d, "/cal", body3, {"Calendly-Webhook-Signature": replay}) == 401
    # Tampered body, moved timestamp, missing header, other key.
    assert post(d, "/cal", body + b" ", {"Calendly-Webhook-Signature": good}) == 401
    moved = good.replace(f"t={t}", f"t={int(t) + 1}")
    assert post(d, "/cal", event(4), {"Calendly-Webhook-Signature": moved}) == 401
    assert post(d, "/cal", event(5), {}) == 401
    b6 = event(6)
    assert post(d, "/cal", b6, {"Calendly-Webhook-Signature":
                                f"t={t},v1={hexmac('other', t.encode(), b'.', b6)}"}) == 401
    lines = wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    d.stop()
    assert len(read_jsonl(tmp_path / "events.jsonl")) == 1 == len(lines)


def test_zoom_style_signature_and_tolerance(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("zoom", "/zoom", ZOOM)]))

    def send(body, t, sig_t=None):
        sig_t = t if sig_t is None else sig_t
        sig = "v0=" + hexmac("zoom-key", b"v0:", str(sig_t).encode(), b":", body)
        return post(d, "/zoom", body, {"x-zm-signature": sig, "x-zm-request-timestamp": str(t)})

    now = int(time.time())
    assert send(event(1), now) == 200
    assert send(event(2), now - 50) == 200
    assert send(event(3), now - 120) == 401  # tolerance_s 60
    assert send(event(4), now + 120) == 401
    assert send(event(5), now, sig_t=now - 1) == 401
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 2)


def test_standard_webhooks_end_to_end(daemon_factory, tmp_path):
    key_b64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    d = daemon_factory(sink(tmp_path, [generic("sw", "/sw", {
        "scheme": "standard-webhooks", "secrets": ["whsec_" + key_b64]})]))
    key = base64.b64decode(key_b64)
    body = event(1)
    t = str(int(time.time()))
    sig = base64.b64encode(hmac.new(key, b"msg_1." + t.encode() + b"." + body,
                                    hashlib.sha256).digest()).decode()
    h = {"webhook-id": "msg_1", "webhook-timestamp": t, "webhook-signature": f"v1,{sig}"}
    assert post(d, "/sw", body, h) == 200
    # The published vector is from 2021: a valid signature, refused as a replay.
    assert post(d, "/sw", b'{"test": 2432232314}', {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}) == 401


def test_basic_auth(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("b", "/b", {
        "scheme": "basic", "username": "cirrus", "secrets": ["${BASIC_PW}", "older-pw"]})]),
        env={"BASIC_PW": "p@ss:word"})

    def auth(u, p):
        return {"Authorization": "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()}

    assert post(d, "/b", event(1), auth("cirrus", "p@ss:word")) == 200
    assert post(d, "/b", event(2), auth("cirrus", "older-pw")) == 200
    assert post(d, "/b", event(3), auth("cirrus", "p@ss:wor")) == 401
    assert post(d, "/b", event(4), auth("admin", "p@ss:word")) == 401
    assert post(d, "/b", event(5), {"Authorization": "Bearer p@ss:word"}) == 401
    assert post(d, "/b", event(6), {}) == 401
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 2)


@pytest.mark.parametrize("verify,needle", [
    ({"scheme": "hmac", "header": "X", "timestamp_header": "X-Ts", "secrets": ["k"]},
     "sources[0].verify: the timestamp must be signed"),
    ({"scheme": "hmac", "header": "X", "signed_payload": "{timestamp}.{body}", "secrets": ["k"]},
     "sources[0].verify.signed_payload: signed_payload uses {timestamp}"),
    ({"scheme": "hmac", "header": "X", "timestamp_header": "X-Ts",
      "signed_payload": "{timestmp}.{body}", "secrets": ["k"]},
     "sources[0].verify.signed_payload: unknown placeholder '{timestmp}'"),
    ({"scheme": "hmac", "header": "X", "timestamp_key": "t", "signed_payload": "{timestamp}.{body}",
      "secrets": ["k"]}, "timestamp_key needs signature_key"),
    ({"scheme": "basic", "secrets": ["k"]}, "sources[0].verify: missing required key 'username'"),
    ({"scheme": "basic", "username": "a:b", "secrets": ["k"]}, "sources[0].verify.username:"),
    ({"scheme": "token", "header": "X", "username": "u", "secrets": ["k"]},
     "sources[0].verify.username: not used by scheme 'token'"),
])
def test_check_rejects_bad_verify(tmp_path, verify, needle):
    rc, out = hookd_check(sink(tmp_path, [generic("s", "/s", verify)]), tmp_path)
    assert rc == 2 and needle in out, out


# ---- allow_ips and trusted_proxies -------------------------------------------

def closed_at_accept(port, host="127.0.0.1", family=socket.AF_INET):
    """True when the server closes a new connection without answering."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        try:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            data = s.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""
    finally:
        s.close()


def test_allow_ips_closes_at_accept_and_403_per_source(daemon_factory, tmp_path):
    none = {"scheme": "none"}
    d = daemon_factory(sink(tmp_path, [generic("far", "/far", none, allow_ips=["10.0.0.0/8"])]))
    assert closed_at_accept(d.port)
    assert "connection closed at accept" in d.log()

    d2 = daemon_factory(sink(tmp_path, [
        generic("far", "/far", none, allow_ips=["10.0.0.0/8", "2001:db8::/32"]),
        generic("near", "/near", none, allow_ips=["192.0.2.0/24", "127.0.0.0/8"]),
        generic("open", "/open", none)]))
    assert post(d2, "/near", event(1), {}) == 200
    assert post(d2, "/open", event(2), {}) == 200
    assert post(d2, "/far", event(3), {}) == 403
    assert "rejected: client 127.0.0.1 is not in allow_ips (403)" in d2.log()
    # Without trusted_proxies, X-Forwarded-For changes nothing.
    assert post(d2, "/far", event(4), {"X-Forwarded-For": "10.1.2.3"}) == 403
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == 2)


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listening6(port):
    def up():
        try:
            with socket.create_connection(("::1", port), timeout=0.2):
                return True
        except OSError:
            return False
    wait_until(up, 30, what=f"[::1]:{port}")


def free_port6():
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_allow_ips_ipv6(daemon_factory, tmp_path):
    import http.client
    from conftest import free_port
    p6 = free_port6()
    # The IPv4 listener comes first: the fixture waits on it.
    d = daemon_factory(sink(tmp_path, [generic("v6", "/v6", {"scheme": "none"},
                                               allow_ips=["::1/128"])],
                            listen=[f"127.0.0.1:{free_port()}", f"[::1]:{p6}"]))
    listening6(p6)
    c = http.client.HTTPConnection("::1", p6, timeout=5)
    c.request("POST", "/v6", body=event(1), headers={"Content-Type": "application/json"})
    assert c.getresponse().status == 200
    c.close()
    assert closed_at_accept(d.port)  # 127.0.0.1 is not ::1
    p6 = free_port6()
    d2 = daemon_factory(sink(tmp_path, [generic("v6", "/v6", {"scheme": "none"},
                                                allow_ips=["2001:db8::/32", "127.0.0.1"])],
                             listen=[f"127.0.0.1:{free_port()}", f"[::1]:{p6}"]))
    listening6(p6)
    assert closed_at_accept(p6, "::1", socket.AF_INET6)
    assert post(d2, "/v6", event(2), {}) == 200


def test_x_forwarded_for_from_trusted_proxy(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("s", "/s", {"scheme": "none"},
                                               allow_ips=["203.0.113.0/24", "2001:db8::/32"])],
                            trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"]))
    ok = [
        "203.0.113.9",
        "198.51.100.1, 203.0.113.9",          # only the rightmost untrusted entry counts
        "203.0.113.9, 10.1.1.1",              # through a second trusted proxy
        "[2001:db8::5]:443",
        " 203.0.113.9 ",
    ]
    for i, xff in enumerate(ok):
        assert post(d, "/s", event(i), {"X-Forwarded-For": xff}) == 200, xff
    bad = [
        "198.51.100.1",
        "203.0.113.9, 198.51.100.1",          # a client cannot put itself on the list
        "not-an-address",
        "203.0.113.9, garbage",
        "",
    ]
    for i, xff in enumerate(bad):
        assert post(d, "/s", event(100 + i), {"X-Forwarded-For": xff}) == 403, xff
    # No header: the client is the proxy itself, not allowed.
    assert post(d, "/s", event(200), {}) == 403
    # Two header lines are one list, in order.
    raw = (b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1\r\n"
           b"Connection: close\r\nContent-Length: 2\r\n\r\n{}")
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(raw)
        assert s.recv(100).startswith(b"HTTP/1.1 403")
    wait_until(lambda: len(read_jsonl(tmp_path / "events.jsonl")) == len(ok))


@pytest.mark.parametrize("key,value,needle", [
    ("allow_ips", ["10.1.2.3/8"], "sources[0].allow_ips[0]: address has bits set beyond the prefix"),
    ("allow_ips", ["10.0.0.0/33"], "sources[0].allow_ips[0]: IPv4 prefix length is at most 32"),
    ("allow_ips", ["example.com"], "sources[0].allow_ips[0]: expected an address or CIDR"),
    ("allow_ips", [], "sources[0].allow_ips: expected at least one network"),
    ("trusted_proxies", ["::1/129"], "trusted_proxies[0]: IPv6 prefix length is at most 128"),
    ("user", "", "user: expected a non-empty string"),
    ("group", "nogroup", "group: \"group\" needs \"user\""),
])
def test_check_rejects_bad_access_config(tmp_path, key, value, needle):
    src = generic("s", "/s", {"scheme": "none"})
    cfg = sink(tmp_path, [src])
    if key == "allow_ips":
        src[key] = value
    else:
        cfg[key] = value
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 2 and needle in out, out


# ---- plugin loading safety ----------------------------------------------------

def plugin_cfg(tmp, dirs, module="noop"):
    return {"listen": "127.0.0.1:0", "data_dir": str(tmp / "var"), "plugin_dirs": [str(x) for x in dirs],
            "sources": [{"name": "s", "path": "/s", "verify": {"scheme": "none"}}],
            "plugins": [{"name": "n", "module": module}],
            "routes": [{"events": ["**"], "to": ["n"]}]}


def safe_plugin_dir(tmp, name="plugins"):
    d = tmp / name
    d.mkdir()
    os.chmod(d, 0o755)
    shutil.copy(PLUGIN_DIR / "noop.so", d / "noop.so")
    os.chmod(d / "noop.so", 0o755)
    return d


def test_plugin_from_a_safe_directory_loads(tmp_path):
    d = safe_plugin_dir(tmp_path)
    rc, out = hookd_check(plugin_cfg(tmp_path, [d]), tmp_path)
    assert rc == 0, out


@pytest.mark.parametrize("what,mode,needle", [
    ("dir", 0o777, "plugin directory {dir}: writable by others (mode 0777)"),
    ("dir", 0o775, "plugin directory {dir}: writable by its group (mode 0775)"),
    ("so", 0o766, "plugin {dir}/noop.so: writable by others (mode 0766)"),
    ("so", 0o775, "plugin {dir}/noop.so: writable by its group (mode 0775)"),
])
def test_writable_plugin_or_directory_is_refused(tmp_path, what, mode, needle):
    d = safe_plugin_dir(tmp_path)
    os.chmod(d if what == "dir" else d / "noop.so", mode)
    rc, out = hookd_check(plugin_cfg(tmp_path, [d]), tmp_path)
    assert rc == 2 and needle.format(dir=d) in out, out
    assert "chmod go-w" in out


@root_only
@pytest.mark.parametrize("what", ["dir", "so"])
def test_plugin_owned_by_another_user_is_refused(tmp_path, what):
    d = safe_plugin_dir(tmp_path)
    os.chown(d if what == "dir" else d / "noop.so", NOBODY, -1)
    rc, out = hookd_check(plugin_cfg(tmp_path, [d]), tmp_path)
    assert rc == 2 and f"owned by uid {NOBODY}, neither root nor the user hookd runs as" in out, out


def test_unsafe_directory_before_the_module_is_refused(tmp_path):
    """An attacker who can write an earlier plugin_dirs entry could plant a
    module that shadows the real one: searching it is refused."""
    early = tmp_path / "early"
    early.mkdir()
    os.chmod(early, 0o777)
    d = safe_plugin_dir(tmp_path)
    rc, out = hookd_check(plugin_cfg(tmp_path, [early, d]), tmp_path)
    assert rc == 2 and f"plugin directory {early}: writable by others" in out, out
    # A missing directory is skipped as before.
    rc, out = hookd_check(plugin_cfg(tmp_path, [tmp_path / "absent", d]), tmp_path)
    assert rc == 0, out


def test_symlink_into_an_unsafe_directory_is_refused(tmp_path):
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    shutil.copy(PLUGIN_DIR / "noop.so", unsafe / "real.so")
    os.chmod(unsafe / "real.so", 0o755)
    os.chmod(unsafe, 0o777)
    d = tmp_path / "plugins"
    d.mkdir()
    os.chmod(d, 0o755)
    (d / "noop.so").symlink_to(unsafe / "real.so")
    rc, out = hookd_check(plugin_cfg(tmp_path, [d]), tmp_path)
    assert rc == 2 and f"plugin directory {unsafe}: writable by others" in out, out


@pytest.mark.parametrize("module", ["../noop", "/tmp/noop", "sub/noop", ".hidden", "noop.so"])
def test_module_names_cannot_leave_plugin_dirs(tmp_path, module):
    d = safe_plugin_dir(tmp_path)
    rc, out = hookd_check(plugin_cfg(tmp_path, [d], module=module), tmp_path)
    assert rc == 2 and "plugins[0].module: invalid module name" in out, out


def test_run_refuses_unsafe_plugin_too(tmp_path):
    d = safe_plugin_dir(tmp_path)
    os.chmod(d / "noop.so", 0o777)
    cfg = tmp_path / "hookd.json"
    cfg.write_text(json.dumps(plugin_cfg(tmp_path, [d])))
    p = subprocess.run([str(HOOKD), "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "writable by others" in p.stderr, p.stderr


# ---- privileges ---------------------------------------------------------------

def proc_ids(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ([int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()],
            [int(x) for x in fields["Groups"].split()])


@root_only
def test_drops_root_to_user_and_group_after_binding(daemon_factory):
    # pytest's tmp_path is private to root: give nobody a directory of its own.
    top = pathlib.Path(tempfile.mkdtemp(prefix="hookd-privs-"))
    try:
        os.chmod(top, 0o755)
        work = top / "work"
        work.mkdir()
        os.chown(work, NOBODY, NOGROUP)
        cfg = sink(work, [generic("s", "/s", {"scheme": "none"})], user="nobody", group="nogroup",
                   data_dir=str(work / "var"))
        # A privileged port would prove binding came first; any port proves the drop.
        d = daemon_factory(cfg)
        d.wait_for_log("running as user nobody", timeout=30)
        uids, gids, groups = proc_ids(d.proc.pid)
        assert uids == [NOBODY] * 4 and gids == [NOGROUP] * 4 and groups in ([NOGROUP], []), (uids, gids, groups)
        assert post(d, "/s", event(1), {}) == 200
        lines = wait_until(lambda: read_jsonl(work / "events.jsonl"))
        assert len(lines) == 1
        # The spool created data_dir as root; it now belongs to nobody.
        assert os.stat(work / "var").st_uid == NOBODY
        assert "running as user nobody" in d.log()
        assert "running as root" not in d.log()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@root_only
def test_warns_when_root_without_user(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("s", "/s", {"scheme": "none"})]))
    d.wait_for_log(r"warn running as root: set \"user\"")


@root_only
def test_drop_fails_when_data_dir_is_not_writable(tmp_path):
    top = pathlib.Path(tempfile.mkdtemp(prefix="hookd-privs-"))
    try:
        os.chmod(top, 0o755)
        # A data_dir of another user (uid 1) is not handed over.
        (top / "var").mkdir()
        os.chown(top / "var", 1, 1)
        os.chmod(top / "var", 0o755)
        cfg = sink(top, [generic("s", "/s", {"scheme": "none"})], user="nobody",
                   data_dir=str(top / "var"), listen="127.0.0.1:0",
                   plugin_dirs=[str(PLUGIN_DIR)])
        path = top / "hookd.json"
        path.write_text(json.dumps(cfg))
        p = subprocess.run([str(HOOKD), "run", "-c", str(path)], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0
        assert f"data_dir {top / 'var'} is not writable by user 'nobody'" in p.stderr, p.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_check_reports_unknown_user(tmp_path):
    cfg = sink(tmp_path, [generic("s", "/s", {"scheme": "none"})], user="no-such-user-hookd")
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 2 and "user 'no-such-user-hookd'" in out, out


# ---- secrets and log injection ----------------------------------------------------

SECRETS = {"HMAC_KEY": "hmac-Secret-0001", "TOKEN": "token-Secret-0002", "PW": "basic-Secret-0003",
           "SW": "whsec_c2VjcmV0LVNlY3JldC0wMDA0LWJ5dGVz", "SLACK": "https://hooks.example/Secret-0005"}


def secret_config(tmp):
    return {
        "sources": [
            generic("h", "/h", {"scheme": "hmac", "header": "X-Sig", "secrets": ["${HMAC_KEY}"]}),
            generic("t", "/t", {"scheme": "token", "header": "X-Token", "secrets": ["${TOKEN}"]}),
            generic("b", "/b", {"scheme": "basic", "username": "u", "secrets": ["${PW}"]}),
            generic("w", "/w", {"scheme": "standard-webhooks", "secrets": ["${SW}"]}),
        ],
        "plugins": [{"name": "audit", "module": "file_sink", "config": {"path": str(tmp / "e.jsonl")}},
                    {"name": "slack", "module": "slack_post",
                     "config": {"webhook_url": "${SLACK}"}}],
        "routes": [{"events": ["**"], "to": ["audit"]}],
    }


def assert_no_secret(text):
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked: {text}"
        assert "Secret-000" not in text, text


def test_secrets_stay_out_of_logs(daemon_factory, tmp_path):
    d = daemon_factory(secret_config(tmp_path), env=SECRETS)
    body = event(1)
    assert post(d, "/h", body, {"X-Sig": hexmac(SECRETS["HMAC_KEY"], body)}) == 200
    assert post(d, "/h", event(2), {"X-Sig": "00" * 32}) == 401
    assert post(d, "/t", event(3), {"X-Token": SECRETS["TOKEN"]}) == 200
    assert post(d, "/t", event(4), {"X-Token": SECRETS["TOKEN"] + "x"}) == 401
    auth = "Basic " + base64.b64encode(b"u:" + SECRETS["PW"].encode()).decode()
    assert post(d, "/b", event(5), {"Authorization": auth}) == 200
    assert post(d, "/w", event(6), {"webhook-id": "x", "webhook-timestamp": "1",
                                     "webhook-signature": "v1,AAAA"}) == 401
    wait_until(lambda: len(read_jsonl(tmp_path / "e.jsonl")) == 3)
    d.stop()
    log = d.log()
    assert "rejected: signature missing or wrong (401)" in log  # debug logging is on
    assert_no_secret(log)


@pytest.mark.parametrize("breakage", [
    lambda c: c["sources"][0]["verify"].update(header="bad header"),
    lambda c: c["plugins"][1]["config"].update(channel=5),
    lambda c: c["plugins"][1]["config"].update(unknown_key="x"),
    lambda c: c["sources"][3]["verify"].update(secrets=["${SW_BAD}"]),
    lambda c: c["routes"].append({"events": ["**"], "to": ["nope"]}),
    lambda c: None,
])
def test_secrets_stay_out_of_check_output(tmp_path, breakage):
    cfg = secret_config(tmp_path)
    breakage(cfg)
    env = dict(SECRETS, SW_BAD="whsec_!!Secret-0006!!")
    rc, out = hookd_check(cfg, tmp_path, env=env)
    assert_no_secret(out)
    assert "Secret-0006" not in out


def test_control_characters_in_event_fields_are_escaped_in_the_log(daemon_factory, tmp_path):
    d = daemon_factory(sink(tmp_path, [generic("s", "/s", {"scheme": "none"})]))
    evil_id = "id-1\n2025-01-01T00:00:00.000Z error FORGED line\r\x1b[31m\x07"
    body = json.dumps({"type": "t.x\nFORGED-TYPE", "id": evil_id}).encode()
    assert post(d, "/s", body, {}) == 200
    # The reason of a 400 quotes nothing from the body, but a type/id path
    # never lets a newline through either.
    assert post(d, "/s", json.dumps({"type": "t", "id": None}).encode(), {}) == 400
    wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    d.stop()
    log = d.log()
    assert "FORGED" in log
    for line in log.splitlines():
        assert not line.startswith("2025-01-01T00:00:00.000Z error FORGED"), line
        assert not line.startswith("FORGED-TYPE"), line
        assert "\x1b" not in line and "\x07" not in line and "\r" not in line, repr(line)
    assert "id-1\\n2025-01-01" in log and "\\x1b[31m\\x07" in log
