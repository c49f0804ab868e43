"""Writes the seed corpus of every fuzz target into OUTDIR/<target>/, built from
examples/payloads, examples/hookd.jsonc and the published signature vectors.
Usage: seeds.py OUTDIR"""
import base64
import hashlib
import hmac
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAYLOADS = sorted((ROOT / "examples" / "payloads").glob("*.json"))
SECRET = b"test-secret"  # fuzz_http's hmac key


def write(out, target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def signed(body, path=b"/webhooks/cirrus", extra=b""):
    sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature: " + sig + b"\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n" + extra + b"\r\n" + body)


def chunked(body):
    sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 64]), body[i:i + 64])
                      for i in range(0, len(body), 64)) + b"0\r\n\r\n"
    return (b"POST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-Signature: " + sig + b"\r\n\r\n" + chunks)


def main():
    out = pathlib.Path(sys.argv[1])
    bodies = [p.read_bytes() for p in PAYLOADS]

    for p, body in zip(PAYLOADS, bodies):
        write(out, "fuzz_envelope", p.name, body)
        # The first byte of an http input picks the write size.
        write(out, "fuzz_http", p.stem, b"\xff" + signed(body))
        write(out, "fuzz_http", p.stem + ".split", b"\x01" + signed(body))
        write(out, "fuzz_http", p.stem + ".chunked", b"\x10" + chunked(body))
        write(out, "fuzz_template", p.stem,
              b"Meeting {{data.meetingInfo.meetingName|default:(no name)}} with "
              b"{{data.meetingInfo.primaryInviteeName|upper}} at {{data.meetingStart}} "
              b"{{data.meetingInfo.formValues.0.answerText|json}}\x00" + body)
    write(out, "fuzz_envelope", "generic.json",
          b'{"type":"a.b","meta":{"id":42},"data":{"items":[{"key":"k1"}]}}')
    pipelined = b"".join(signed(b) for b in bodies[:3])
    write(out, "fuzz_http", "pipelined", b"\xff" + pipelined + b"GET /nope HTTP/1.1\r\n\r\n")
    write(out, "fuzz_http", "pipelined-garbage", b"\xff" + signed(bodies[0]) + b"\x00\x01GARBAGE\r\n\r\n")
    write(out, "fuzz_http", "smuggle-cl-te",
          b"\xffPOST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    write(out, "fuzz_http", "smuggle-cl-cl",
          b"\xffPOST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    write(out, "fuzz_http", "keepalive-close",
          b"\x20" + signed(bodies[0], extra=b"Connection: keep-alive\r\n") +
          signed(bodies[1], extra=b"Connection: close\r\n"))
    write(out, "fuzz_http", "methods",
          b"\xffGET /webhooks/cirrus HTTP/1.1\r\nHost: x\r\n\r\nDELETE /deny HTTP/1.0\r\n\r\n"
          b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    write(out, "fuzz_http", "big-cl",
          b"\xffPOST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    write(out, "fuzz_http", "expect-100",
          b"\xffPOST /webhooks/cirrus HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
          b"Content-Length: 2\r\n\r\n{}")
    write(out, "fuzz_http", "http10", b"\xffPOST /webhooks/cirrus HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")

    for i, t in enumerate(["{{eventType}}", "{{data.id|upper|lower}}", "{{a.b.c|default:x|json}}",
              "plain text", "{{ data.meetingOwner.username }}", "{{data.isCanceled|json}}",
              "x {{data.meetingInfo.surveyQuestions.0.answer}} y"]):
        write(out, "fuzz_template", "t%d" % i, t.encode() + b"\x00" + bodies[-1])

    write(out, "fuzz_config", "example.jsonc", (ROOT / "examples" / "hookd.jsonc").read_bytes())
    write(out, "fuzz_config", "security.jsonc", b"""{
  // every security key of issue 5
  "listen": ["127.0.0.1:0", "[::1]:0"], "user": "nobody", "group": "nogroup",
  "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "fd00::/8"],
  "limits": {"max_body_bytes": 1000, "max_connections": 20000},
  "sources": [
    {"name": "cal", "path": "/cal", "format": "generic", "type_field": "event", "id_field": "payload.uri",
     "allow_ips": ["192.0.2.0/24", "2001:db8::/32"],
     "verify": {"scheme": "hmac", "header": "Calendly-Webhook-Signature", "timestamp_key": "t",
                "signature_key": "v1", "signed_payload": "{timestamp}.{body}", "tolerance_s": 180,
                "secrets": ["${CIRRUS_SIGNING_KEY}"]}},
    {"name": "zoom", "path": "/zoom", "format": "generic", "type_field": "event", "id_field": "event_ts",
     "verify": {"scheme": "hmac", "header": "x-zm-signature", "prefix": "v0=",
                "timestamp_header": "x-zm-request-timestamp", "signed_payload": "v0:{timestamp}:{body}",
                "secrets": ["${file:secret.txt}"]}},
    {"name": "sw", "path": "/sw", "verify": {"scheme": "standard-webhooks", "secrets": ["${file:secret.txt}"]}},
    {"name": "b", "path": "/b", "verify": {"scheme": "basic", "username": "u", "secrets": ["pw"]}}
  ],
  "plugins": [{"name": "audit", "module": "file_sink", "config": {"path": "x"}}],
  "routes": [{"events": ["**"], "to": ["audit"]}]
}
""")

    now = b"1700000000"
    gh = b"Hello, World!"
    write(out, "fuzz_verify_hmac", "github",
          b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n\n" + gh)
    body = b'{"event":"invitee.created"}'
    sig = hmac.new(b"fuzz-signing-key", now + b"." + body, hashlib.sha256).hexdigest().encode()
    write(out, "fuzz_verify_hmac", "calendly", b"t=" + now + b",v1=" + sig + b",v0=ab\n\n" + body)
    sig = hmac.new(b"fuzz-signing-key", b"v0:" + now + b":" + body, hashlib.sha256).hexdigest().encode()
    write(out, "fuzz_verify_hmac", "zoom", b"v0=" + sig + b"\n" + now + b"\n" + body)

    write(out, "fuzz_verify_stdwh", "spec",
          b"msg_p5jXN8AQM9LWM0D4loKWxJek\n1614265330\n"
          b"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,AAAA\n"
          b'{"test": 2432232314}')
    write(out, "fuzz_verify_basic", "good",
          b"Basic " + base64.b64encode(b"cirrus:p@ss:word") + b"\ns3cr3t-t0ken\n{}")
    write(out, "fuzz_verify_basic", "other", b"basic   " + base64.b64encode(b"a:b") + b"\nnope\n")

    write(out, "fuzz_access", "v4", b"10.0.0.0/8\n203.0.113.7, 10.0.0.1\n127.0.0.1:8080\n")
    write(out, "fuzz_access", "v6", b"2001:db8::/32\n[2001:db8::1]:443\n::ffff:192.0.2.1, fd00::1\n")
    write(out, "fuzz_access", "mapped", b"::ffff:10.0.0.0/104\n192.0.2.7\n\n")

    # fuzz_plugin_wire: a read size, then frames as a plugin's child sends them.
    def frame(kind, payload):
        return struct.pack("=II", len(payload), kind) + payload

    def wstr(s):
        return b"\xff\xff\xff\xff" if s is None else struct.pack("=I", len(s)) + s + b"\0"

    result = frame(4, struct.pack("=II", 1, 2500) + wstr(b"503 from the CRM"))
    log = frame(5, struct.pack("=I", 2) + wstr(b"evt-1") + wstr(None) + wstr(b"posted"))
    done = frame(2, struct.pack("=I", 1) + wstr(b"plugins[0].config.url") + wstr(b"expected a string")
                 + wstr(b"") + wstr(b"test_fault") + wstr(b"0.0.1"))
    write(out, "fuzz_plugin_wire", "call", b"\x07" + log + log + result)
    write(out, "fuzz_plugin_wire", "init", b"\x00" + log + done)
    write(out, "fuzz_plugin_wire", "bytewise", b"\x00" + result)

    tls_seeds(out)


def client_hello(version, alpn):
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    import ssl
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = version
    if alpn:
        c.set_alpn_protocols(alpn)
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = c.wrap_bio(inc, outg, server_hostname="localhost")
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def tls_seeds(out):
    """fuzz_tls: a chunk size byte, then a client's ClientHello (TLS 1.2 and
    1.3, with and without ALPN), whole and cut small; and plain HTTP."""
    import ssl
    for name, version in (("tls12", ssl.TLSVersion.TLSv1_2), ("tls13", ssl.TLSVersion.TLSv1_3)):
        for alpn in (None, ["http/1.1"], ["h2"]):
            hello = client_hello(version, alpn)
            tag = f"{name}-{alpn[0] if alpn else 'noalpn'}".replace("/", "")
            write(out, "fuzz_tls", tag, b"\xff" + hello)
            write(out, "fuzz_tls", tag + "-cut", b"\x06" + hello)
    write(out, "fuzz_tls", "plain-http", b"\xff" + signed(b"{}"))


if __name__ == "__main__":
    main()
