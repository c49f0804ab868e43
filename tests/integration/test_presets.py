"""Sender presets (format: github, stripe, slack, zoom, shopify, standard-webhooks) end to end:
each signed by the sender's own npm library where one exists (@octokit/webhooks-methods,
stripe, svix, standardwebhooks, run by node), otherwise by the sender's documented recipe,
accepted and routed with the right type and id; refused with one byte changed or an old
timestamp. Also the endpoint handshakes (challenge: zoom, slack), forged ones included."""
import base64
import hashlib
import hmac
import json
import pathlib
import re
import subprocess
import time
import uuid

import pytest

from conftest import free_port, hookd_check, http_request, read_jsonl, wait_until

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "node"
SECRETS = {
    "github": "It's a Secret to Everybody",
    "stripe": "whsec_test_stripe_secret_123",
    "slack": "8f742231b10e8888abcd99yyyzzz85a5",
    "zoom": "zoom-secret-token",
    "shopify": "shopify-app-secret",
    "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


@pytest.fixture(scope="session")
def node_libs():
    """The senders' libraries from tests/node/package-lock.json (make test runs npm ci;
    this does it too when they are missing)."""
    if not (NODE_DIR / "node_modules" / "svix").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR


def node_sign(lib, secret, body, tmp, msg_id="", ts=None):
    f = tmp / f"body-{uuid.uuid4().hex}.json"
    f.write_bytes(body)
    args = ["node", str(NODE_DIR / "sign.mjs"), lib, secret, str(f), msg_id]
    if ts is not None:
        args.append(str(ts))
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=NODE_DIR)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def hmac_hex(secret, data):
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def slack_headers(body, ts=None, secret=SECRETS["slack"]):
    ts = str(int(time.time()) if ts is None else ts)
    return {"X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": "v0=" + hmac_hex(secret, b"v0:" + ts.encode() + b":" + body)}


def zoom_headers(body, ts=None, secret=SECRETS["zoom"]):
    ts = str(int(time.time()) if ts is None else ts)
    return {"x-zm-request-timestamp": ts,
            "x-zm-signature": "v0=" + hmac_hex(secret, b"v0:" + ts.encode() + b":" + body)}


def shopify_headers(body, topic="orders/create", wid=None, secret=SECRETS["shopify"]):
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": wid or str(uuid.uuid4()),
            "X-Shopify-Hmac-Sha256": base64.b64encode(mac).decode()}


def source(fmt, **extra):
    s = {"name": fmt.replace("-", "_"), "path": f"/hooks/{fmt}", "format": fmt,
         "verify": {"secrets": [SECRETS[fmt]]}}
    s.update(extra)
    return s


@pytest.fixture
def presets_hookd(daemon_factory, tmp_path):
    aport = free_port()
    cfg = {"admin_listen": f"127.0.0.1:{aport}",
           "sources": [source(f) for f in SECRETS],
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp_path / "events.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    d = daemon_factory(cfg)
    d.admin_port = aport
    return d


def post(d, fmt, body, headers):
    h = {"Content-Type": "application/json"}
    h.update(headers)
    return d.post(f"/hooks/{fmt}", body, h)


def flip(body):
    """The body with one byte changed (a digit or letter of a value, so it stays JSON)."""
    i = body.rindex(b'"', 0, len(body) - 2) - 1
    return body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]


def cases(tmp, node):
    """(format, body, good headers, bad-body headers, old-timestamp headers or None,
    expected type, expected id) for every preset, signed now."""
    now = int(time.time())
    out = []
    gh = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"},
                     "pusher": {"name": "octocat"}}).encode()
    gid = str(uuid.uuid4())
    h = node_sign("github", SECRETS["github"], gh, tmp)
    h.update({"X-GitHub-Event": "push", "X-GitHub-Delivery": gid})
    out.append(("github", gh, h, None, "push", gid))
    st = json.dumps({"id": "evt_1PxYz", "object": "event", "type": "invoice.paid",
                     "data": {"object": {"id": "in_42", "object": "invoice"}}}).encode()
    out.append(("stripe", st, node_sign("stripe", SECRETS["stripe"], st, tmp, ts=now),
                node_sign("stripe", SECRETS["stripe"], st, tmp, ts=now - 600),
                "invoice.paid", "evt_1PxYz"))
    for lib in ("svix", "standardwebhooks"):
        mid = f"msg_{uuid.uuid4().hex[:20]}"
        sw = json.dumps({"type": "user.created", "timestamp": "2026-12-02T10:00:00Z",
                         "data": {"id": "u_1", "via": lib}}).encode()
        out.append(("standard-webhooks", sw,
                    node_sign(lib, SECRETS["standard-webhooks"], sw, tmp, mid, now),
                    node_sign(lib, SECRETS["standard-webhooks"], sw, tmp, mid, now - 600),
                    "user.created", mid))
    sl = json.dumps({"token": "x", "team_id": "T1", "type": "event_callback",
                     "event_id": "Ev08MFMKH6", "event_time": now,
                     "event": {"type": "app_mention", "channel": "C1", "text": "hi"}}).encode()
    out.append(("slack", sl, slack_headers(sl), slack_headers(sl, now - 600), "app_mention",
                "Ev08MFMKH6"))
    zm = json.dumps({"event": "meeting.started", "event_ts": now * 1000,
                     "payload": {"account_id": "A1", "object": {"id": "85123", "topic": "x"}}}).encode()
    out.append(("zoom", zm, zoom_headers(zm), zoom_headers(zm, now - 600), "meeting.started",
                "sha256:" + hashlib.sha256(zm).hexdigest()))
    sh = json.dumps({"id": 820982911946154508, "email": "jon@example.com",
                     "total_price": "12.00"}).encode()
    wid = str(uuid.uuid4())
    out.append(("shopify", sh, shopify_headers(sh, wid=wid), None, "orders/create", wid))
    return out


def test_every_preset_accepts_its_senders_signature_and_refuses_tampering(presets_hookd, tmp_path,
                                                                          node_libs):
    d = presets_hookd
    want = []
    for fmt, body, good, old, typ, eid in cases(tmp_path, node_libs):
        # One byte changed: 401, signed by the same library.
        status, _, _ = post(d, fmt, flip(body), good)
        assert status == 401, (fmt, "tampered")
        if old is not None:
            status, _, _ = post(d, fmt, body, old)
            assert status == 401, (fmt, "old timestamp")
        status, _, text = post(d, fmt, body, good)
        assert status == 200, (fmt, text)
        want.append((fmt.replace("-", "_"), typ, eid))
    got = wait_until(lambda: (lambda l: l if len(l) == len(want) else None)(
        read_jsonl(tmp_path / "events.jsonl")))
    assert sorted((e["source"], e["type"], e["event_id"]) for e in got) == sorted(want)


def test_repeated_signature_header_is_401(presets_hookd, tmp_path):
    d = presets_hookd
    body = json.dumps({"id": 1, "email": "a@b"}).encode()
    good = shopify_headers(body)
    # http.client sends a list of (name, value) pairs as they are.
    import http.client
    for dup in ("X-Shopify-Hmac-Sha256", "X-Shopify-Topic"):
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        conn.putrequest("POST", "/hooks/shopify")
        for k, v in good.items():
            conn.putheader(k, v)
        conn.putheader(dup, good[dup] if dup != "X-Shopify-Hmac-Sha256" else "AAAA")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        r.read()
        conn.close()
        # A second signature (even a wrong one next to the right one) is 401; a second
        # topic leaves the type unknown (400).
        assert r.status == (401 if dup == "X-Shopify-Hmac-Sha256" else 400), dup
    assert post(d, "shopify", body, good)[0] == 200


def test_zoom_url_validation(presets_hookd, tmp_path):
    d = presets_hookd
    body = json.dumps({"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
                       "event_ts": int(time.time() * 1000),
                       "event": "endpoint.url_validation"}).encode()
    status, headers, text = post(d, "zoom", body, zoom_headers(body))
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(text) == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": hmac_hex(SECRETS["zoom"], b"qgg8vlvZRS6UYooatFL8Aw")}
    # Forged (signed with another secret) and replayed (old timestamp): 401, no token.
    status, _, text = post(d, "zoom", body, zoom_headers(body, secret="not-the-secret"))
    assert status == 401 and b"encryptedToken" not in text
    status, _, _ = post(d, "zoom", body, zoom_headers(body, ts=int(time.time()) - 900))
    assert status == 401
    _check_handshakes_not_stored(d, tmp_path, "zoom", 1, 2)


def test_slack_url_verification(presets_hookd, tmp_path):
    d = presets_hookd
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "type": "url_verification",
                       "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).encode()
    status, headers, text = post(d, "slack", body, slack_headers(body))
    assert status == 200
    assert json.loads(text) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    status, _, text = post(d, "slack", body, slack_headers(body, secret="forged"))
    assert status == 401 and b"3eZbrw" not in text
    _check_handshakes_not_stored(d, tmp_path, "slack", 1, 1)


def _check_handshakes_not_stored(d, tmp_path, kind, ok, refused):
    _, _, m = http_request(d.admin_port, "GET", "/metrics")
    m = m.decode()
    src = kind
    assert f'hookd_endpoint_handshakes_total{{source="{src}",kind="{kind}",result="ok"}} {ok}' in m
    assert (f'hookd_endpoint_handshakes_total{{source="{src}",kind="{kind}",result="refused"}} '
            f'{refused}') in m
    assert "hookd_events_accepted_total 0" in m
    d.wait_for_log(rf"answered the {kind} endpoint handshake")
    time.sleep(0.2)
    assert read_jsonl(tmp_path / "events.jsonl") == []


def test_challenge_off_stores_the_handshake_like_any_event(daemon_factory, tmp_path):
    cfg = {"sources": [source("slack", challenge="none", type_field="type")],
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp_path / "events.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    d = daemon_factory(cfg)
    body = json.dumps({"type": "url_verification", "event_id": "Ev1", "challenge": "c"}).encode()
    status, _, text = post(d, "slack", body, slack_headers(body))
    assert status == 200 and text == b""
    wait_until(lambda: [e["type"] for e in read_jsonl(tmp_path / "events.jsonl")] ==
               ["url_verification"])


@pytest.mark.parametrize("src,needle", [
    ({"format": "github"}, "sources[0]: missing required key 'verify' (this preset needs your "
                           "signing secret"),
    ({"format": "github", "verify": {"secrets": ["s"], "prefix": 5}},
     "sources[0].verify.prefix: expected a string"),
    ({"format": "stripe", "verify": {"secrets": ["s"], "scheme": "token"}},
     "sources[0].verify: missing required key 'header'"),
    ({"format": "generic", "type_field": "t", "type_header": "X-T", "id_field": "i",
      "verify": {"scheme": "none"}}, "sources[0].type_header: give either type_field or "
                                     "type_header, not both"),
    ({"format": "generic", "type_header": "X T", "id_field": "i", "verify": {"scheme": "none"}},
     "sources[0].type_header: invalid header name 'X T'"),
    ({"format": "zoom", "challenge": "teams", "verify": {"secrets": ["s"]}},
     "sources[0].challenge: expected one of none, zoom, slack"),
])
def test_check_names_preset_mistakes(tmp_path, src, needle):
    s = {"name": "s", "path": "/h"}
    s.update(src)
    rc, out = hookd_check({"sources": [s]}, tmp_path)
    assert rc == 2 and needle in out, out


def test_preset_defaults_can_be_overridden(daemon_factory, tmp_path):
    # GitHub Enterprise style: another signature header, and the id from the body.
    cfg = {"sources": [source("github", id_field="hook_id",
                              verify={"secrets": [SECRETS["github"]], "header": "X-Sig"})],
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp_path / "events.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    d = daemon_factory(cfg)
    body = b'{"hook_id": 77, "zen": "Design for failure."}'
    sig = "sha256=" + hmac_hex(SECRETS["github"], body)
    assert post(d, "github", body, {"X-Hub-Signature-256": sig, "X-GitHub-Event": "ping"})[0] == 401
    assert post(d, "github", body, {"X-Sig": sig, "X-GitHub-Event": "ping"})[0] == 200
    got = wait_until(lambda: read_jsonl(tmp_path / "events.jsonl"))
    assert [(e["type"], e["event_id"]) for e in got] == [("ping", "77")]
