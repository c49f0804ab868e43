"""Shared fixtures for the integration tests: the real hookd binary on a free port."""
import hashlib
import hmac
import json
import os
import pathlib
import pty
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("HOOKD_BUILD_DIR", ROOT / "build")).resolve()
HOOKD = BUILD / "hookd"
PLUGIN_DIR = BUILD / "plugins"
PAYLOADS = ROOT / "examples" / "payloads"
# A build under AddressSanitizer (its memory figures are not comparable).
SANITIZED = HOOKD.exists() and b"__asan_init" in HOOKD.read_bytes()
SECRET = "test-secret"
# HOOKD_VALGRIND=1 runs every daemon under valgrind memcheck: an error or a
# definite/indirect leak in hookd makes it exit 99, which fails the test at
# teardown with valgrind's report.
VALGRIND = os.environ.get("HOOKD_VALGRIND", "") not in ("", "0")
SLOW = 8.0 if VALGRIND else 1.0  # timeouts scale by this under valgrind


def payload(name):
    """The bytes of examples/payloads/<name>.json (name without .json)."""
    return (PAYLOADS / f"{name}.json").read_bytes()


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

def on_a_terminal(argv, env=None, timeout=30.0):
    """Runs argv under a pty, as a user at a terminal would; returns (exit code, what it
    showed). Reads until the program closes the terminal or the deadline passes."""
    pid, fd = pty.fork()
    if pid == 0:
        if env is not None:
            os.environ.update(env)
        os.execv(argv[0], argv)
    text = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), text.decode(errors="replace")



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body, secret=SECRET, alg="sha256", enc="hex", prefix=""):
    mac = hmac.new(secret.encode(), body, getattr(hashlib, alg))
    if enc == "hex":
        return prefix + mac.hexdigest()
    import base64
    return prefix + base64.b64encode(mac.digest()).decode()


def cirrus_source(secret=SECRET, name="cirrus", path="/webhooks/cirrus"):
    """A Cirrus Insight source with HMAC-SHA256 hex in X-Signature."""
    return {"name": name, "path": path, "format": "cirrus-insight",
            "verify": {"scheme": "hmac", "algorithm": "sha256", "header": "X-Signature",
                       "encoding": "hex", "secrets": [secret]}}


def http_request(port, method, path, body=b"", headers=None, timeout=10.0):
    """One HTTP/1.1 request on a fresh connection; returns (status, headers, body)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Daemon:
    def __init__(self, cfg_path, tmp, port, env):
        self.cfg_path = cfg_path
        self.tmp = tmp
        self.port = port
        self.log_path = tmp / "hookd.log"
        self._log = open(self.log_path, "wb")
        cmd = [str(HOOKD), "run", "-c", str(cfg_path)]
        self.valgrind_log = tmp / "valgrind.log"
        if VALGRIND:
            cmd = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                   "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                   "--num-callers=30", f"--log-file={self.valgrind_log}"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.returncode = None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path, body, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return http_request(self.port, "POST", path, body, h)

    def request(self, method, path, body=b"", headers=None):
        return http_request(self.port, method, path, body, headers)

    def log(self):
        text = self.log_path.read_text(errors="replace")
        if VALGRIND and self.returncode is not None and self.valgrind_log.exists():
            text += "\n--- valgrind ---\n" + self.valgrind_log.read_text(errors="replace")
        return text

    def wait_for_log(self, regex, timeout=10.0):
        rx = re.compile(regex)
        return wait_until(lambda: rx.search(self.log()), timeout, what=f"log line /{regex}/")

    def wait_ready(self, timeout=10.0):
        timeout *= SLOW
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"hookd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_until(up, timeout, what="hookd to listen")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code."""
        timeout *= SLOW
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"hookd did not stop within {timeout}s:\n{self.log()}")
            self._log.close()
        return self.returncode


def send_event(daemon, body, secret=SECRET, path="/webhooks/cirrus", header="X-Signature"):
    """POSTs a signed event; returns the status."""
    status, _, _ = daemon.post(path, body, {header: sign(body, secret)})
    return status


# Plugin isolation (issue 12): the bundled plugins' suites (test_plugin_*.py,
# and test_delivery.py for file_sink and the delivery rules) run once per
# mode; every config a test writes then gets the mode on each plugin entry
# that does not name one. Elsewhere configs stay as written.
ISOLATION_MODES = ("thread", "process")
ISOLATION_SUITES = ("test_plugin_", "test_delivery")
_isolation = {"mode": None}


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.startswith(ISOLATION_SUITES) and \
            "isolation" in metafunc.fixturenames:
        metafunc.parametrize("isolation", ISOLATION_MODES, indirect=True)


@pytest.fixture(autouse=True)
def isolation(request):
    """The isolation mode this test's configs get: a parameter in the
    plugin suites, None (configs as written) elsewhere."""
    _isolation["mode"] = getattr(request, "param", None)
    yield _isolation["mode"]
    _isolation["mode"] = None


def _isolate(cfg):
    mode = _isolation["mode"]
    if mode and isinstance(cfg.get("plugins"), list):
        cfg["plugins"] = [dict(p, isolation=p.get("isolation", mode)) if isinstance(p, dict) else p
                          for p in cfg["plugins"]]
    return cfg


def plugin_child_pids(pid):
    """The pids of hookd's plugin children (process isolation), oldest first."""
    out = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    def is_plugin(c):
        try:
            return b"plugin-child" in pathlib.Path(f"/proc/{c}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
    return sorted(c for c in set(out) if is_plugin(c))


def _fill(config, tmp):
    cfg = _isolate(dict(config))
    cfg.setdefault("listen", f"127.0.0.1:{free_port()}")
    cfg.setdefault("data_dir", str(tmp / "var"))
    cfg.setdefault("plugin_dirs", [str(PLUGIN_DIR)])
    cfg.setdefault("log", {"level": "debug"})
    return cfg


def write_config(tmp, config):
    path = tmp / "hookd.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def daemon_factory(tmp_path):
    """daemon_factory(config: dict, env=None) -> Daemon, started and listening.
    Fills listen (free port), data_dir and plugin_dirs unless given. Every
    daemon is stopped at teardown and must exit 0."""
    started = []

    def make(config, env=None, expect_exit_zero=True):
        d = tmp_path / f"d{len(started)}"
        d.mkdir()
        cfg = _fill(config, d)
        path = write_config(d, cfg)
        e = dict(os.environ)
        e.update(env or {})
        entries = cfg["listen"] if isinstance(cfg["listen"], list) else [cfg["listen"]]
        addrs = [e if isinstance(e, str) else e["address"] for e in entries]
        port = int(addrs[0].rsplit(":", 1)[1])
        daemon = Daemon(path, d, port, e)
        daemon.expect_exit_zero = expect_exit_zero
        started.append(daemon)
        daemon.wait_ready()
        # Every other listener too: under valgrind the binds are slow
        # enough for a test to race the second one.
        others = addrs[1:] + \
            ([cfg["admin_listen"]] if cfg.get("admin_listen") else [])
        for addr in others:
            host, p = addr.rsplit(":", 1)
            host = host.strip("[]") or "127.0.0.1"
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

            def up(host=host, p=int(p)):
                if daemon.proc.poll() is not None:
                    raise AssertionError(f"hookd exited with {daemon.proc.returncode}:\n{daemon.log()}")
                try:
                    with socket.create_connection((host, p), timeout=0.2):
                        return True
                except OSError:
                    return False
            if int(p) != 0:
                wait_until(up, 10.0 * SLOW, what=f"hookd to listen on {addr}")
        return daemon

    yield make
    for daemon in started:
        rc = daemon.stop()
        if daemon.expect_exit_zero:
            assert rc == 0, f"hookd exited with {rc}:\n{daemon.log()}"


def hookd_check(config, tmp, env=None):
    """Runs `hookd check` on config (a dict, written as JSON, or a str written
    as it is); returns (returncode, combined output)."""
    if isinstance(config, dict):
        path = write_config(tmp, _fill(config, tmp))
    else:
        path = tmp / "hookd.jsonc"
        path.write_text(config)
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([str(HOOKD), "check", "-c", str(path)], capture_output=True, text=True,
                       env=e, timeout=30)
    return p.returncode, p.stdout + p.stderr


def read_jsonl(path):
    """The JSON lines of a file_sink output (empty list while absent)."""
    p = pathlib.Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def strip_jsonc(text):
    """Drops // and /* */ comments outside strings (the README blocks are JSONC)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


README_EXAMPLE = r"## Example\s+```jsonc\n(.*?)```"  # the jsonc block under "## Example"
README_FIRST_JSONC = r"```jsonc\n(.*?)```"  # the README's first jsonc block


def check_readme_config(plugin, tmp, env, block_re=README_EXAMPLE):
    """The config block of plugins/<plugin>/README.md (group 1 of block_re)
    must pass `hookd check` with env set."""
    readme = (ROOT / "plugins" / plugin / "README.md").read_text()
    block = re.search(block_re, readme, re.S).group(1)
    cfg = json.loads(strip_jsonc(block))
    for k in ("listen", "data_dir", "plugin_dirs", "admin_listen"):
        cfg.pop(k, None)  # the test's own port and directories
    rc, output = hookd_check(cfg, tmp, env=env)
    assert rc == 0, output


# --- TLS: a test CA made with `openssl req`, server and client certificates ----------------

class TestCA:
    """A CA (ECDSA P-256) with a server certificate for localhost, 127.0.0.1
    and ::1, and a client certificate from a second CA (for mutual TLS)."""

    def __init__(self, d):
        self.dir = d
        self.ca = d / "ca.pem"
        self.ca_key = d / "ca.key"
        self.client_ca = d / "client-ca.pem"
        self.client_ca_key = d / "client-ca.key"
        self._req("ca", self.ca, self.ca_key, "hookd test CA", ca=True)
        self._req("client-ca", self.client_ca, self.client_ca_key, "hookd test client CA", ca=True)
        self.cert, self.key = self.issue("server", "localhost")
        self.client_cert, self.client_key = self.issue("client", "sender.example", client=True)

    def _run(self, *args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    def _req(self, name, cert, key, cn, ca=False):
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", str(key), "-out", str(cert), "-days", "3", "-subj", f"/CN={cn}",
                  *(["-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"] if ca else []))
        os.chmod(key, 0o600)

    def issue(self, name, cn, client=False, days=3, key_type="ec"):
        """Issues a certificate (from the client CA when client); returns (cert, key) paths."""
        cert, key, csr = (self.dir / f"{name}.pem", self.dir / f"{name}.key", self.dir / f"{name}.csr")
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" \
            else ["-newkey", "rsa:2048"]
        self._run("req", *newkey, "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        os.chmod(key, 0o600)
        ext = self.dir / f"{name}.ext"
        ext.write_text("extendedKeyUsage=clientAuth\n" if client else
                       "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
        ca, ca_key = (self.client_ca, self.client_ca_key) if client else (self.ca, self.ca_key)
        self._run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                  "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext))
        return cert, key

    def context(self, client_cert=False):
        """A Python client context that trusts the test CA (and presents the client certificate)."""
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def tls_listen(ca, port=None, cert=None, key=None, client_ca=None):
    """A listen entry with TLS on 127.0.0.1 (a free port unless given)."""
    tls = {"cert": str(cert or ca.cert), "key": str(key or ca.key)}
    if client_ca:
        tls["client_ca"] = str(client_ca)
    return {"address": f"127.0.0.1:{port or free_port()}", "tls": tls}


def https_request(port, method, path, body=b"", headers=None, ctx=None, host="localhost",
                  timeout=10.0):
    """One request over TLS on a fresh connection; returns (status, headers, body)."""
    import http.client
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL 15 cluster shared by the session (pgcluster.py),
    always stopped and removed at the end. A server that cannot start fails
    the test: PostgreSQL tests are never skipped."""
    from pgcluster import PgCluster
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg(pg_cluster):
    """A fresh database in the session's cluster (running again if an earlier
    test left it stopped): .url for hookd, .sql() / .scalar() as superuser,
    .cluster to restart the server."""
    from pgcluster import PgDatabase
    if not pg_cluster.running:
        pg_cluster.start()
    return PgDatabase(pg_cluster)
