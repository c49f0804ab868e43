"""The circuit breaker and a destination's "too many requests" hold shared by the nodes of one
PostgreSQL spool (issue 17): a circuit that opens on one node holds every node, one probe runs
per cooldown in the whole cluster, a success closes it everywhere and every event then arrives
once, per meeting in order; a 429 with Retry-After on one node holds the others too."""
import json
import re
import threading
import time

from conftest import SLOW, wait_until
from test_cluster import Sender, cluster, meeting_event  # noqa: F401

pytest_plugins = ["fakehttp"]

COOLDOWN_MS = 1000


class Destination:
    """The instance's HTTP endpoint: 503 while down (or what answer() says),
    200 when up. Every request is kept with its event id, meeting, arrival
    time and the status it got."""

    def __init__(self, fake_server, answer=None):
        self.down = True
        self.answer = answer
        self.lock = threading.Lock()
        self.log = []  # (monotonic time, event id, meeting, status)
        self.server = fake_server(self.respond)

    def respond(self, req, n):
        if self.answer:
            status, headers = self.answer(n)
        elif self.down:
            status, headers = 503, {}
        else:
            status, headers = 200, {}
        with self.lock:
            self.log.append((time.monotonic(), req.headers["webhook-id"],
                             json.loads(req.body)["data"]["id"], status))
        return status, dict(headers, **{"Content-Type": "text/plain"}), b"answer %d" % status

    def calls(self):
        with self.lock:
            return list(self.log)


def crm(url, **delivery):
    plugins = [{"name": "crm", "module": "http_forward", "config": {"url": url},
                "delivery": dict({"concurrency": 2, "max_attempts": 50, "backoff_initial_ms": 100,
                                  "backoff_max_ms": 200}, **delivery)}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["crm"]}]
    return plugins, routes


def instance(node):
    """crm's entry in the node's /status.json, or None while it does not answer."""
    st, _, body = node.admin_get("/status.json")
    if st != 200:
        return None
    return next(i for i in json.loads(body)["instances"] if i["name"] == "crm")


def state_metric(node):
    """The state whose hookd_instance_state{instance="crm"} is 1 in the node's /metrics."""
    body = node.admin_get("/metrics")[2].decode()
    on = re.findall(r'^hookd_instance_state\{instance="crm",state="(\w+)"\} 1$', body, re.M)
    return on[0] if len(on) == 1 else None


def send(sender, events):
    """Posts (id, meeting) pairs, round-robin over the nodes, each after the
    200 of the one before (so accept order is list order)."""
    for i, (eid, meeting) in enumerate(events):
        sender.post(eid, meeting_event(eid, meeting, "rescheduled"), i % len(sender.nodes))


def check_delivered_once_in_order(dest, events):
    """Every event got exactly one 200, and per meeting the 200s came in
    accept order."""
    ok = [(eid, meeting) for _, eid, meeting, status in dest.calls() if status == 200]
    counts = {}
    for eid, _ in ok:
        counts[eid] = counts.get(eid, 0) + 1
    assert counts == {eid: 1 for eid, _ in events}, f"200s per event: {counts}"
    for meeting in {m for _, m in events}:
        want = [e for e, m in events if m == meeting]
        got = [e for e, m in ok if m == meeting]
        assert got == want, f"meeting {meeting}: delivered {got}, accepted {want}"


def test_circuit_opened_on_one_node_holds_every_node_one_probe_per_cooldown(cluster, pg,
                                                                             tmp_path, fake_server):
    dest = Destination(fake_server)
    # n0 opens after three failures; n1 and n2 would take a thousand, so
    # only what n0 stored can hold them (at their own pace they would go on
    # failing ten times a second each).
    plugins, routes = crm(dest.server.url("/in"),
                          breaker={"failures": 3, "cooldown_ms": COOLDOWN_MS})
    slow_plugins, _ = crm(dest.server.url("/in"),
                          breaker={"failures": 1000, "cooldown_ms": COOLDOWN_MS})
    nodes = cluster(1, plugins, routes) + cluster(2, slow_plugins, routes)
    sender = Sender(nodes)
    events = [(f"cb-{m}-{k}", f"cb-m{m}") for k in range(4) for m in range(6)]
    send(sender, events)
    wait_until(lambda: instance(nodes[0])["state"] == "open", 15 * SLOW,
               what="the circuit to open on n0")
    # The others hear of it within moments (a NOTIFY; at worst the reload
    # of every second).
    wait_until(lambda: all(instance(n)["state"] == "open" for n in nodes), 3 * SLOW,
               what="every node to hold the open circuit")
    assert all(state_metric(n) == "open" for n in nodes), [state_metric(n) for n in nodes]
    assert pg.scalar("SELECT circuit_open_until > 0 FROM hookd_instances WHERE instance = 'crm'") \
        == "t"
    assert "circuit open after 3 consecutive failed attempts" in nodes[0].log()
    for n in nodes[1:]:
        assert "circuit open on another node" in n.log(), n.log()
    assert [instance(n)["circuit_opens"] for n in nodes] == [1, 0, 0]
    # The outage goes on: attempts stop in the whole cluster but for the
    # probes, one per cooldown for all three nodes together (each node
    # probing on its own would make about three per cooldown).
    t0 = time.monotonic()
    before = len(dest.calls())
    window = 4.5
    time.sleep(window)  # a measurement window, not a wait for something to happen
    during = [c for c in dest.calls()[before:] if c[0] <= t0 + window]
    # Calls that had started before the last node heard of it may arrive in
    # the first moments; after that only probes, a cooldown apart.
    probes = [c for c in during if c[0] > t0 + 0.3]
    assert len(probes) <= window / (COOLDOWN_MS / 1000) + 1, probes
    assert len(probes) >= 2, f"no probes while open: {during}"
    gaps = [b[0] - a[0] for a, b in zip(probes, probes[1:])]
    assert all(g >= 0.9 * COOLDOWN_MS / 1000 for g in gaps), f"probes closer than a cooldown: {gaps}"
    assert len(during) - len(probes) <= 3 * 2, f"calls after the circuit opened: {during}"
    assert all(instance(n)["state"] == "open" for n in nodes)
    assert all(instance(n)["dead"] == 0 for n in nodes), "an open circuit uses no attempts"
    rc, text = nodes[2].cli("spool", "check")
    assert rc == 0 and "instances with an open circuit: 1\n" in text, text
    # The destination recovers: a probe closes the circuit on every node
    # and everything goes out once, per meeting in order.
    dest.down = False
    wait_until(lambda: all(instance(n)["state"] == "ok" for n in nodes),
               (COOLDOWN_MS / 1000 + 5) * SLOW, what="the circuit to close on every node")
    assert pg.scalar("SELECT circuit_open_until FROM hookd_instances WHERE instance = 'crm'") \
        == "0"
    wait_until(lambda: sum(1 for c in dest.calls() if c[3] == 200) >= len(events), 20 * SLOW,
               what="every event delivered")
    check_delivered_once_in_order(dest, events)
    # The destination's 200 comes before the outcome's commit.
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state <> 1") == "0",
               5 * SLOW, what="every delivery done in the spool")
    # One node's probe closed it; the two others closed on hearing of it.
    probed = [n.log().count("circuit closed: the probe got through") for n in nodes]
    closed = [n.log().count("circuit closed: a delivery got through on another node") for n in nodes]
    assert sum(probed) == 1 and sum(closed) == 2, (probed, closed)


def test_too_many_requests_on_one_node_holds_every_node(cluster, pg, tmp_path, fake_server):
    hold_s = 3
    t429 = []

    def answer(n):
        if n == 1:
            t429.append(time.monotonic())
            return 429, {"Retry-After": str(hold_s)}
        return 200, {}
    dest = Destination(fake_server, answer)
    plugins, routes = crm(dest.server.url("/in"))
    a, b = cluster(2, plugins, routes)
    sender = Sender([a, b])
    first = [("tm-0", "tm-m0")]
    send(sender, first)
    wait_until(lambda: t429, 10 * SLOW, what="the 429")
    # Whichever node got it, both hold for its Retry-After.
    wait_until(lambda: all(instance(n)["hold_ms"] > 0 for n in (a, b)), 2 * SLOW,
               what="both nodes to hold")
    got = [n for n in (a, b) if "the destination says too many requests" in n.log()]
    other = [n for n in (a, b) if n not in got]
    assert len(got) == 1 and len(other) == 1, "one node got the 429"
    assert "the destination said too many requests to another node" in other[0].log()
    assert pg.scalar("SELECT hold_until > 0 FROM hookd_instances WHERE instance = 'crm'") == "t"
    rc, text = other[0].cli("spool", "check")
    held = re.search(r"instances held by a destination \(too many requests\): (\d+)\n", text)
    assert rc == 0 and held and "instances with an open circuit: 0\n" in text, text
    # 1 while the 3 s hold lasts (a slow sanitizer build may reach its end first).
    assert held.group(1) == "1" or pg.scalar(
        "SELECT hold_until <= (extract(epoch FROM clock_timestamp()) * 1000)::int8 "
        "FROM hookd_instances WHERE instance = 'crm'") == "t", text
    # Events for both nodes meanwhile: none goes out before the hold ends.
    more = [(f"tm-{m}-{k}", f"tm-m{m}") for k in range(3) for m in range(1, 5)]
    send(sender, more)
    events = first + more
    wait_until(lambda: sum(1 for c in dest.calls() if c[3] == 200) >= len(events), 20 * SLOW,
               what="every event delivered")
    calls = dest.calls()
    too_soon = [c for c in calls[1:] if c[0] < t429[0] + hold_s - 0.2]
    assert not too_soon, f"sent during the hold: {too_soon}"
    check_delivered_once_in_order(dest, events)
    assert all(instance(n)["dead"] == 0 for n in (a, b))
