"""Several hookd nodes on one PostgreSQL (DESIGN §10): exactly once per instance, per-meeting order
across nodes, kill -9 and lease takeover, one event id at two nodes at once, PostgreSQL restarted
mid-stream, a dead letter replayed from any node."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (HOOKD, PLUGIN_DIR, SLOW, cirrus_source, free_port, http_request, payload,
                      read_jsonl, sign, wait_until)

pytest_plugins = ["fakehttp"]

LEASE_MS = 2000
KINDS = ["scheduled"] + ["rescheduled"] * 8 + ["canceled"]  # ten events per meeting


def meeting_event(event_id, meeting, kind):
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    return json.dumps(ev).encode()


class Node:
    """One hookd of the cluster: a config file of its own (so that a restart
    reuses its data_dir and ports), started, killed and started again."""

    def __init__(self, tmp, name, pg_url, plugins, routes, delivery=None, lease_ms=LEASE_MS):
        self.dir = tmp / name
        self.dir.mkdir()
        self.name = name
        self.port = free_port()
        self.admin = free_port()
        cfg = {"listen": f"127.0.0.1:{self.port}", "admin_listen": f"127.0.0.1:{self.admin}",
               "data_dir": str(self.dir / "var"), "plugin_dirs": [str(PLUGIN_DIR)],
               "log": {"level": "info"},
               "spool": {"backend": "postgres", "url": "${HOOKD_PG_URL}", "lease_ms": lease_ms},
               "sources": [cirrus_source()], "plugins": plugins, "routes": routes,
               "delivery": delivery or {"concurrency": 8}}
        self.cfg_path = self.dir / "hookd.json"
        self.cfg_path.write_text(json.dumps(cfg, indent=2))
        self.env = dict(os.environ, HOOKD_PG_URL=pg_url)
        self.proc = None
        self.runs = 0
        self.start()

    def start(self):
        self.runs += 1
        self.log_path = self.dir / f"hookd-{self.runs}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(self.cfg_path)], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            st, _, _ = self.admin_get("/readyz")
            return st == 200
        wait_until(up, 15 * SLOW, what=f"{self.name} ready")

    def admin_get(self, path):
        try:
            return http_request(self.admin, "GET", path, timeout=2)
        except OSError:
            return 0, {}, b""

    def log(self):
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("hookd-*.log")))

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not stop:\n{self.log()}")
            self._log.close()
            assert rc == 0, f"{self.name} exited with {rc}:\n{self.log()}"

    def cli(self, *args):
        p = subprocess.run([str(HOOKD), *args, "-c", str(self.cfg_path)], env=self.env,
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout + p.stderr


@pytest.fixture
def cluster(pg, tmp_path):
    """cluster(n, plugins, routes) -> [Node]; every node is stopped at the end
    (a node the test killed stays down) and must exit 0."""
    nodes = []

    def make(n, plugins, routes, delivery=None):
        for i in range(n):
            nodes.append(Node(tmp_path, f"n{len(nodes)}", pg.url, plugins, routes, delivery))
        return nodes[-n:]

    yield make
    errors = []
    for node in nodes:
        try:
            if node.proc.poll() is None:
                node.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


def sink_plugins(tmp, sleep_ms=0):
    """'sink' (test_plugin: START and end lines in one file for all nodes)
    and 'audit' (file_sink), both routed every meeting event."""
    plugins = [{"name": "sink", "module": "test_plugin",
                "config": {"out": str(tmp / "sink.txt"), "trace_start": True, "sleep_ms": sleep_ms}},
               {"name": "audit", "module": "file_sink", "config": {"path": str(tmp / "audit.jsonl")}}]
    routes = [{"source": "cirrus", "events": ["scheduling.smartscheduler.*"],
               "to": ["sink", "audit"]}]
    return plugins, routes


class Sender:
    """Posts signed events over keep-alive connections (one per thread and
    node), the way a sender behind a load balancer would: a node that does
    not answer, or answers 503, gets the same event again on the next node."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.local = threading.local()
        self.lock = threading.Lock()
        self.answers = {}  # event id -> final status
        self.statuses = []  # every answer: (status, node name, retry-after header)
        self.alive = set(range(len(nodes)))

    def _conn(self, i):
        conns = self.local.__dict__.setdefault("conns", {})
        if i not in conns:
            conns[i] = http.client.HTTPConnection("127.0.0.1", self.nodes[i].port, timeout=10)
        return conns[i]

    def _drop(self, i):
        conns = self.local.__dict__.get("conns", {})
        c = conns.pop(i, None)
        if c:
            c.close()

    def post(self, event_id, body, first, deadline_s=30.0):
        """Sends body to node `first`, then to the next alive ones, until one
        answers 200. Returns the node index that did."""
        headers = {"X-Signature": sign(body), "Content-Type": "application/json"}
        i, end = first, time.monotonic() + deadline_s * SLOW
        while time.monotonic() < end:
            with self.lock:
                alive = sorted(self.alive)
            if i not in alive:
                i = next((a for a in alive if a > i), alive[0])
            try:
                c = self._conn(i)
                c.request("POST", "/webhooks/cirrus", body, headers)
                r = c.getresponse()
                r.read()
                with self.lock:
                    self.statuses.append((r.status, self.nodes[i].name, r.getheader("Retry-After")))
                if r.status == 200:
                    with self.lock:
                        self.answers[event_id] = 200
                    return i
                if r.status != 503:
                    raise AssertionError(f"{event_id}: {r.status} from {self.nodes[i].name}")
                time.sleep(0.05)
            except (OSError, http.client.HTTPException):
                self._drop(i)
                time.sleep(0.02)
            i = (i + 1) % len(self.nodes)
        raise AssertionError(f"{event_id}: no node answered 200 within {deadline_s}s")


def send_meetings(sender, prefix, meetings, kinds=KINDS, clients=12, rounds=None, on_round=None):
    """Sends every meeting's events in order (each waits for the 200 of the
    one before), round-robin over the nodes: event k of meeting m goes to
    node (m + k) % n first, so one meeting's events reach different nodes.
    Meetings run in parallel over `clients` threads, a round at a time."""
    n = len(sender.nodes)
    rounds = rounds if rounds is not None else range(len(kinds))
    for k in rounds:
        def client(c):
            for m in range(c, meetings, clients):
                eid = f"{prefix}-{m}-{k}"
                sender.post(eid, meeting_event(eid, f"{prefix}-m{m}", kinds[k]), (m + k) % n)
        with ThreadPoolExecutor(clients) as pool:
            for f in [pool.submit(client, c) for c in range(clients)]:
                f.result()
        if on_round:
            on_round(k)


def read_sink(path):
    """(starts, ends): (id, key) pairs from START lines and from the lines
    written when deliver() ended, in file order."""
    starts, ends, seq = [], [], []
    if not path.exists():
        return starts, ends, seq
    for line in path.read_text().splitlines():
        parts = line.split()
        assert parts[0] != "OVERLAP", f"two deliveries of {parts[1:]} at once in one node"
        if parts[0] == "START":
            starts.append((parts[1], parts[2]))
            seq.append(("S", parts[1], parts[2]))
        elif parts[0] != "DESTROY":
            ends.append((parts[0], parts[3]))
            seq.append(("E", parts[0], parts[3]))
    return starts, ends, seq


def check_order(path, expected, crash_ok=False):
    """Per meeting (order key), deliveries never overlap and come in accept
    order. With crash_ok a delivery may start again after a START without
    its end (its node was killed), and consecutive repeats of one event are
    collapsed (at-least-once). Returns the end lines per event id."""
    _, ends, seq = read_sink(path)
    running, order = {}, {}
    for kind, eid, key in seq:
        if kind == "S":
            other = running.get(key)
            assert other is None or (crash_ok and other == eid), \
                f"meeting {key}: {eid} started while {other} ran"
            running[key] = eid
        else:
            assert running.get(key) == eid, f"meeting {key}: {eid} ended without its start"
            running[key] = None
            got = order.setdefault(key, [])
            if not (crash_ok and got and got[-1] == eid):
                got.append(eid)
    for key, ids in expected.items():
        assert order.get(key) == ids, f"meeting {key}: delivered {order.get(key)}, accepted {ids}"
    counts = {}
    for eid, _ in ends:
        counts[eid] = counts.get(eid, 0) + 1
    return counts


def expected_order(prefix, meetings, kinds=KINDS, accepted=None):
    exp = {}
    for m in range(meetings):
        ids = [f"{prefix}-{m}-{k}" for k in range(len(kinds))]
        exp[f"{prefix}-m{m}"] = [i for i in ids if accepted is None or i in accepted]
    return exp


def audit_counts(path):
    counts = {}
    for rec in read_jsonl(path):
        counts[rec["event_id"]] = counts.get(rec["event_id"], 0) + 1
    return counts


def wait_delivered(tmp, ids, timeout):
    """Until every id is in both sinks."""
    ids = set(ids)

    def done():
        _, ends, _ = read_sink(tmp / "sink.txt")
        return ids <= {e for e, _ in ends} and ids <= set(audit_counts(tmp / "audit.jsonl"))
    wait_until(done, timeout * SLOW, interval=0.1, what=f"{len(ids)} events delivered to both sinks")


def test_three_nodes_round_robin_exactly_once_in_order(cluster, pg, tmp_path):
    plugins, routes = sink_plugins(tmp_path)
    nodes = cluster(3, plugins, routes)
    sender = Sender(nodes)
    t0 = time.monotonic()
    send_meetings(sender, "rr", 300)
    sent = time.monotonic() - t0
    ids = [f"rr-{m}-{k}" for m in range(300) for k in range(10)]
    assert len(sender.answers) == 3000
    assert {s for s, _, _ in sender.statuses} == {200}, "every event answered 200 at once"
    wait_delivered(tmp_path, ids, 60)
    counts = check_order(tmp_path / "sink.txt", expected_order("rr", 300))
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}, "sink: exactly once"
    audit = audit_counts(tmp_path / "audit.jsonl")
    assert sorted(audit) == sorted(ids) and set(audit.values()) == {1}, "audit: exactly once"
    # Every node took part in accepting and in delivering.
    by_node = {name for _, name, _ in sender.statuses}
    assert by_node == {"n0", "n1", "n2"}
    owners = pg.sql("SELECT lease_owner, count(*) FROM hookd_deliveries GROUP BY 1")
    assert len(owners) >= 2, f"deliveries by node: {owners}"
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state <> 1") == "0"
    print(f"3000 events sent in {sent:.1f}s; deliveries by node: {owners}")


def test_kill9_one_node_mid_stream_leases_taken_over(cluster, pg, tmp_path):
    plugins, routes = sink_plugins(tmp_path, sleep_ms=30)  # a backlog: every node holds claims
    nodes = cluster(3, plugins, routes)
    sender = Sender(nodes)
    victim = nodes[2]
    killed = {}

    def kill_during_sending():
        # Dies with requests in flight and deliveries claimed and running.
        wait_until(lambda: len(sender.answers) >= 400, 30, interval=0.005, what="400 answers")
        pid = victim.proc.pid
        victim.kill9()
        killed["at"] = time.monotonic()
        with sender.lock:
            sender.alive.discard(2)
        # What the dead node held: claimed (leased) and perhaps running.
        killed["held"] = pg.sql(f"SELECT id, started FROM hookd_deliveries WHERE state = 0 AND "
                                f"lease_until > 0 AND lease_owner LIKE '%-{pid}-%'")
        killed["pid"] = pid

    killer = threading.Thread(target=kill_during_sending)
    killer.start()
    send_meetings(sender, "k9", 300, rounds=range(0, 4))
    killer.join()
    # Everything answered 200 so far is delivered by the two others once
    # the dead node's leases expire: the dead node held claims (it was
    # delivering), and what it had started counts as a crash.
    first = list(sender.answers)
    wait_delivered(tmp_path, first, LEASE_MS / 1000 + 15)
    took = time.monotonic() - killed["at"]
    assert took < LEASE_MS / 1000 + 10, f"took {took:.1f}s after the kill"
    held = killed["held"]
    assert held, "the killed node held no claims: the test proves nothing"
    ids = ",".join(i for i, _ in held)
    rows = pg.sql(f"SELECT state, lease_owner FROM hookd_deliveries WHERE id IN ({ids})")
    assert all(st == "1" and f"-{killed['pid']}-" not in owner for st, owner in rows), rows
    if any(started == "t" for _, started in held):
        survivors = nodes[0].log() + nodes[1].log()
        assert "was running when its node stopped" in survivors, "no crash counted on takeover"
    send_meetings(sender, "k9", 300, rounds=range(4, 7))
    # Restarted later: it joins again and takes its share.
    victim.start()
    with sender.lock:
        sender.alive.add(2)
    send_meetings(sender, "k9", 300, rounds=range(7, 10))
    ids = [f"k9-{m}-{k}" for m in range(300) for k in range(10)]
    assert sorted(sender.answers) == sorted(ids)
    wait_delivered(tmp_path, ids, 60)
    counts = check_order(tmp_path / "sink.txt", expected_order("k9", 300), crash_ok=True)
    assert set(counts) == set(ids)
    audit = audit_counts(tmp_path / "audit.jsonl")
    assert set(audit) == set(ids)
    dups = {i: c for i, c in counts.items() if c > 1}
    # Only what the killed node had running can run twice.
    assert len(dups) <= 2 * 8, f"delivered more than once: {dups}"
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state <> 1") == "0"
    print(f"after kill -9: everything accepted delivered {took:.1f}s later (lease {LEASE_MS} ms); "
          f"{len(dups)} event(s) delivered twice")


def test_same_event_id_to_two_nodes_at_once_delivered_once(cluster, pg, tmp_path):
    plugins, routes = sink_plugins(tmp_path)
    a, b = cluster(2, plugins, routes)
    n = 40
    results = []

    def pair(i):
        body = meeting_event(f"dup-{i}", f"dup-m{i}", "scheduled")
        barrier = threading.Barrier(2)

        def one(node):
            barrier.wait()
            return http_request(node.port, "POST", "/webhooks/cirrus", body,
                                {"X-Signature": sign(body), "Content-Type": "application/json"})[0]
        with ThreadPoolExecutor(2) as pool:
            return [f.result() for f in [pool.submit(one, a), pool.submit(one, b)]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(pair, range(n)))
    assert all(r == [200, 200] for r in results), results
    ids = [f"dup-{i}" for i in range(n)]
    wait_delivered(tmp_path, ids, 30)
    time.sleep(0.5)  # a second delivery would show up here
    counts = check_order(tmp_path / "sink.txt", {})
    assert counts == {i: 1 for i in ids}
    assert audit_counts(tmp_path / "audit.jsonl") == {i: 1 for i in ids}
    assert pg.scalar("SELECT count(*) FROM hookd_events WHERE event_id LIKE 'dup-%'") == str(n)


def test_postgres_restart_mid_stream(cluster, pg, tmp_path):
    plugins, routes = sink_plugins(tmp_path)
    a, b = cluster(2, plugins, routes)
    sender = Sender([a, b])
    seen_down = {}

    def outage(k):
        if k != 1:
            return
        pg.cluster.stop("fast")
        # While it is down: /readyz says why, new events get 503 + Retry-After.
        def ready_503():
            st, _, body = a.admin_get("/readyz")
            return st == 503 and b"PostgreSQL" in body and body
        seen_down["readyz"] = wait_until(ready_503, 20, what="/readyz 503 naming PostgreSQL")
        body = meeting_event("pgdown-probe", "pgdown-probe", "scheduled")
        t0 = time.monotonic()
        st, h, _ = http_request(b.port, "POST", "/webhooks/cirrus", body,
                                {"X-Signature": sign(body), "Content-Type": "application/json"})
        seen_down["probe"] = (st, h.get("retry-after"), time.monotonic() - t0)
        time.sleep(1.0)
        pg.cluster.start()

    # Meetings keep coming while PostgreSQL is down: the sender retries
    # every 503 (on the other node) until the database is back.
    stop_bg = threading.Event()

    def background():
        i = 0
        while not stop_bg.is_set():
            eid = f"bg-{i}"
            sender.post(eid, meeting_event(eid, f"bg-m{i % 7}", "rescheduled"), i % 2)
            i += 1
        return i

    with ThreadPoolExecutor(1) as pool:
        bg = pool.submit(background)
        send_meetings(sender, "pr", 60, kinds=KINDS[:5], clients=6, on_round=outage)
        stop_bg.set()
        n_bg = bg.result()
    st, retry_after, took = seen_down["probe"]
    assert st == 503 and retry_after, seen_down
    assert took < 1.5, f"a request waited {took:.2f}s during the outage"
    assert any(s == 503 and ra for s, _, ra in sender.statuses), "503s while PostgreSQL was down"
    # Every event answered 200 is delivered, in order, once PostgreSQL is back.
    ids = list(sender.answers)
    wait_delivered(tmp_path, ids, 60)
    exp = expected_order("pr", 60, KINDS[:5])
    exp.update({f"bg-m{j}": [f"bg-{i}" for i in range(n_bg) if i % 7 == j] for j in range(7)})
    counts = check_order(tmp_path / "sink.txt", exp, crash_ok=True)
    assert set(ids) <= set(counts)
    assert a.admin_get("/readyz")[0] == 200 and b.admin_get("/readyz")[0] == 200
    assert "PostgreSQL connection is back" in a.log()
    assert "pg-secret" not in a.log() + b.log()


def test_dead_letter_replayed_from_any_node(cluster, pg, tmp_path, fake_server):
    fixed = threading.Event()

    def respond(req, n):
        return (200, {}, b"ok") if fixed.is_set() else (400, {}, b"no such record")
    crm = fake_server(respond)
    plugins = [{"name": "crm", "module": "http_forward", "config": {"url": crm.url("/hook")}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["crm"]}]
    a, b = cluster(2, plugins, routes)
    body = meeting_event("dead-1", "dead-m1", "scheduled")
    st, _, _ = http_request(a.port, "POST", "/webhooks/cirrus", body,
                            {"X-Signature": sign(body), "Content-Type": "application/json"})
    assert st == 200
    crm.wait_count(1)
    # The other node sees the dead letter.
    def listed():
        rc, out = b.cli("dlq", "list")
        return rc == 0 and "dead-1" in out and out
    out = wait_until(listed, 10, what="the dead letter in `hookd dlq list` on the other node")
    dl_id = out.split()[0]
    rc, shown = b.cli("dlq", "show", dl_id)
    assert rc == 0 and "dead-1" in shown and "400" in shown, shown
    fixed.set()
    rc, out = b.cli("dlq", "replay", dl_id)
    assert rc == 0 and "1 dead letter" in out, out
    got = crm.wait_count(2, timeout=10)
    assert json.loads(got[1].body)["eventId"] == "dead-1"
    rc, out = a.cli("dlq", "list")
    assert rc == 0 and "no dead letters" in out, out
    time.sleep(0.5)
    assert len(crm.got()) == 2, "replayed once, delivered once"


def test_clean_stop_hands_claims_over_at_once_and_reload_keeps_order(cluster, pg, tmp_path):
    """A node stopped with SIGTERM gives back the claims it had not started,
    so the others deliver them at once, not after lease_ms; a reload (SIGHUP)
    of the other node keeps per-meeting order."""
    out = tmp_path / "sink.txt"
    plugins = [{"name": "sink", "module": "test_plugin",
                "config": {"out": str(out), "trace_start": True, "sleep_ms": 100}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["sink"]}]
    a, b = cluster(2, plugins, routes, delivery={"concurrency": 1})
    for n in (a, b):  # a long lease: only a handover can explain a prompt delivery
        cfg = json.loads(n.cfg_path.read_text())
        cfg["spool"]["lease_ms"] = 60000
        n.cfg_path.write_text(json.dumps(cfg))
        n.stop()
    b.start()  # b first: a must not be the only one claiming
    a.start()
    sender = Sender([a, b])
    send_meetings(sender, "cs", 2, kinds=KINDS, clients=2)  # 20 events, 2 meetings
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state = 0 AND "
                                 f"lease_until > 0 AND lease_owner LIKE '%-{a.proc.pid}-%'") != "0",
               10, what="a node holding claims")
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log = wait_until(lambda: "reload" in b.log(), 10)
    t0 = time.monotonic()
    a.stop()
    wait_delivered_sink(out, list(sender.answers), 20)
    took = time.monotonic() - t0
    assert took < 15, f"waited {took:.1f}s: the stopped node's claims were not handed over"
    check_order(out, expected_order("cs", 2))


def wait_delivered_sink(path, ids, timeout):
    ids = set(ids)
    wait_until(lambda: ids <= {e for e, _ in read_sink(path)[1]}, timeout * SLOW, interval=0.1,
               what=f"{len(ids)} events in the sink")
