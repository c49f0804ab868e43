"""A fake HTTP server for the plugin tests: records every request and answers
from a respond(request, n) callback. A test module gets the fake_server fixture
with pytest_plugins = ["fakehttp"], and imports answers() for canned replies.

PYTEST_DONT_REWRITE: no asserts here; the marker spares a module that also
imports answers the "already imported, cannot be rewritten" warning."""
import http.server
import json
import threading
import time

import pytest

from conftest import wait_until


class Request:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.at = time.monotonic()

    def json(self):
        return json.loads(self.body)


class FakeServer:
    """An HTTP server on 127.0.0.1:0 in a thread. respond(request, n) gives
    (status, headers, body) for the n-th request (1-based); every request is
    recorded in order."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, self.path,
                              {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(n) if n else b"")
                with outer.lock:
                    outer.requests.append(req)
                    count = len(outer.requests)
                status, headers, body = outer.respond(req, count)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = handle_one

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def got(self):
        with self.lock:
            return list(self.requests)

    def wait_count(self, n, timeout=10):
        return wait_until(lambda: len(self.got()) >= n and self.got(), timeout,
                          what=f"{n} request(s) at the fake server")

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def make(respond):
        s = FakeServer(respond)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def answers(*replies):
    """respond() that gives the replies in turn, then repeats the last."""
    def respond(req, n):
        status, headers, body = replies[min(n, len(replies)) - 1]
        return status, headers, body if isinstance(body, bytes) else body.encode()
    return respond
