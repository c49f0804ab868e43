"""Helpers for the delivery-engine fault tests: a restartable node on a fixed
config, a sender that keeps one connection, what test_plugin wrote, RSS."""
import http.client
import json
import os
import pathlib
import subprocess
import time

import pytest

from conftest import (HOOKD, PLUGIN_DIR, SLOW, cirrus_source, free_port, payload, sign,
                      wait_until)


def meeting_event(event_id, meeting, kind="rescheduled", pad=0):
    """A Cirrus Insight meeting event with the given ids; pad adds that many
    bytes of filler to the meeting's location (for big bodies)."""
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    if pad:
        ev["data"]["meetingInfo"]["location"] = "x" * pad
    return json.dumps(ev).encode()


def tp_entry(name, out, delivery=None, **config):
    entry = {"name": name, "module": "test_plugin", "config": {"out": str(out), **config}}
    if delivery:
        entry["delivery"] = delivery
    return entry


def node_config(tmp, plugins, routes, **extra):
    cfg = {"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp / "var"),
           "plugin_dirs": [str(PLUGIN_DIR)], "log": {"level": "info"},
           "sources": [cirrus_source()], "plugins": plugins, "routes": routes}
    cfg.update(extra)
    return cfg


_started = []  # every Node started by the current test


@pytest.fixture(autouse=True)
def no_leftover_nodes():
    """Kills the nodes a test leaves running (one that failed half-way);
    test modules import it so that it applies to them."""
    yield
    while _started:
        node = _started.pop()
        if node.alive():
            node.kill()


class Node:
    """One hookd on a config file that stays put, so that it can be
    restarted on the same data_dir and port (like systemd would)."""

    def __init__(self, tmp, cfg, name="node", env=None):
        self.tmp = tmp
        self.cfg = cfg
        self.path = tmp / f"{name}.json"
        self.path.write_text(json.dumps(cfg))
        self.port = int(cfg["listen"].rsplit(":", 1)[1])
        self.env = dict(os.environ, **(env or {}))
        self.name = name
        self.proc = None
        self.starts = 0
        self.logs = []

    def write(self, cfg):
        self.cfg = cfg
        self.path.write_text(json.dumps(cfg))
        self.port = int(cfg["listen"].rsplit(":", 1)[1])

    def start(self, wait=True):
        self.starts += 1
        log = self.tmp / f"{self.name}-{self.starts}.log"
        self.logs.append(log)
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(self.path)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env)
        if self not in _started:
            _started.append(self)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=10.0):
        import socket

        def up():
            if self.proc.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return "up"
            except OSError:
                return None
        return wait_until(up, timeout * SLOW, what="hookd to listen or exit")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def stop(self, timeout=20.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"hookd did not stop within {timeout}s:\n{self.log()}")
        self._log.close()
        return rc

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._log.close()

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def cli(self, *args):
        return subprocess.run([str(HOOKD), *args, "-c", str(self.path)], capture_output=True,
                              text=True, timeout=60 * SLOW)


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Sender:
    """POSTs signed events on one keep-alive connection, reconnecting after
    a failure (as a sender retrying would)."""

    def __init__(self, port, path="/webhooks/cirrus"):
        self.port = port
        self.path = path
        self.conn = None

    def post(self, body, timeout=10):
        """Returns the status, or None when the connection failed."""
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                           timeout=timeout)
                self.conn.request("POST", self.path, body, {"X-Signature": sign(body),
                                                            "Content-Type": "application/json"})
                r = self.conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status
            except (OSError, http.client.HTTPException):
                self.close()
        return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def plugin_lines(path):
    """test_plugin's output: (id, type, attempt, key, result) tuples, and
    marker lines (INIT pid, POISON id attempt, OVERLAP key, DESTROY)."""
    try:
        text = pathlib.Path(path).read_text()
    except FileNotFoundError:
        return []
    return [tuple(line.split(" ")) for line in text.splitlines()]


def delivered(path):
    """Ids test_plugin answered ok, in the order it did."""
    return [l[0] for l in plugin_lines(path) if len(l) == 5 and l[4] == "ok"]


def lives(path):
    """test_plugin's ok lines split at each INIT line (one list per process
    life of the instance)."""
    out = []
    for l in plugin_lines(path):
        if l[0] == "INIT":
            out.append([])
        elif len(l) == 5 and l[4] == "ok":
            if not out:
                out.append([])
            out[-1].append(l[0])
    return out


def check_key_order(ids, accept_order):
    """Within one list of delivered ids, each key's events come in accept
    order: accept_order maps id -> (key, position)."""
    last = {}
    for i in ids:
        key, pos = accept_order[i]
        assert pos > last.get(key, -1), f"{i} of {key} out of order in {ids}"
        last[key] = pos
