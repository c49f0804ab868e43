"""Delivery controls and the status page's data on the PostgreSQL spool, with two nodes on one
database: pause on one node seen by the other within a second, across a restart of every node,
drained in per-meeting order on resume; a back-fill of a week-old window to a newly added
instance (--dry-run, progress on a terminal, a running and a stopped cluster); the event detail
with its attempts and search by meeting id, read from the other node."""
import json
import re
import time

from conftest import HOOKD, SLOW, http_request, on_a_terminal, sign, wait_until
from test_cluster import (Sender, check_order, cluster, meeting_event, read_sink,  # noqa: F401
                          wait_delivered_sink)

pytest_plugins = ["fakehttp"]

ADMIN = {"X-Hookd-Admin": "1"}


def state_of(node, instance):
    """The instance's state in the node's /status.json (ok, open, paused, saturated)."""
    st, _, body = node.admin_get("/status.json")
    if st != 200:
        return None
    return next(i["state"] for i in json.loads(body)["instances"] if i["name"] == instance)


def pending_of(node, instance):
    body = node.admin_get("/metrics")[2].decode()
    m = re.search(r'^hookd_instance_pending_deliveries\{instance="%s"\} (\S+)$' % instance, body,
                  re.M)
    return float(m.group(1)) if m else None


def post(node, body):
    return http_request(node.port, "POST", "/webhooks/cirrus", body,
                        {"X-Signature": sign(body), "Content-Type": "application/json"})[0]


def sink(tmp_path, name="sink", **delivery):
    p = {"name": name, "module": "test_plugin",
         "config": {"out": str(tmp_path / f"{name}.txt"), "trace_start": True}}
    if delivery:
        p["delivery"] = delivery
    return p


def test_pause_seen_by_every_node_survives_a_restart_and_drains_in_order(cluster, pg, tmp_path):
    out = tmp_path / "sink.txt"
    routes = [{"source": "cirrus", "events": ["scheduling.smartscheduler.*"], "to": ["sink"]}]
    a, b = cluster(2, [sink(tmp_path, max_pending=12)], routes)
    sender = Sender([a, b])
    sender.post("pz-first", meeting_event("pz-first", "pz-m0", "scheduled"), 0)
    wait_delivered_sink(out, ["pz-first"], 10)
    # Paused through node a's endpoint: node b stops too, within a second.
    t0 = time.monotonic()
    st, _, body = http_request(a.admin, "POST", "/instances/sink/pause", headers=ADMIN)
    assert st == 200 and json.loads(body) == {"paused": True}, body
    assert state_of(a, "sink") == "paused"
    wait_until(lambda: state_of(b, "sink") == "paused", 1.0, interval=0.01,
               what="node b to see the pause")
    seen = time.monotonic() - t0
    assert pg.sql("SELECT instance, paused FROM hookd_instances") == [["sink", "t"]]
    # Still accepting, on both nodes, up to max_pending (12 unfinished).
    expected = {"pz-m0": ["pz-first"], "pz-m1": [], "pz-m2": []}
    for k in range(4):
        for m in range(3):
            eid = f"pz-{m}-{k}"
            expected[f"pz-m{m}"].append(eid)
            assert post((a, b)[(m + k) % 2], meeting_event(eid, f"pz-m{m}", "rescheduled")) == 200
    wait_until(lambda: pending_of(a, "sink") == 12 and pending_of(b, "sink") == 12, 5,
               what="both nodes counting 12 unfinished deliveries")
    assert post(b, meeting_event("pz-over", "pz-m9", "scheduled")) == 503
    # Every node restarted: still paused, nothing delivered.
    for n in (a, b):
        n.stop()
    for n in (a, b):
        n.start()
        assert state_of(n, "sink") == "paused", f"{n.name} forgot the pause at its start"
    time.sleep(0.8)  # a delivery would show up here
    assert [e for e, _ in read_sink(out)[1]] == ["pz-first"]
    rc, text = a.cli("spool", "check")
    assert rc == 0 and "paused instances: 1\n" in text and "unfinished deliveries: 12\n" in text, text
    # Resumed with the CLI of node b: drained in per-meeting accept order, by both nodes.
    rc, text = b.cli("resume", "sink")
    assert rc == 0 and "sink resumed" in text, text
    ids = [e for ids in expected.values() for e in ids]
    wait_delivered_sink(out, ids, 10)
    counts = check_order(out, expected)
    assert counts == {i: 1 for i in ids}, counts
    wait_until(lambda: state_of(a, "sink") == "ok" and state_of(b, "sink") == "ok", 2,
               what="both nodes to say ok")
    assert "instance state ok -> paused" in a.log() + b.log()
    print(f"pause seen by the other node {seen * 1000:.0f} ms after the request")


def age_events(pg, ages_days):
    """Sets each event's accept time in PostgreSQL, as the test stores it, that many days ago."""
    values = ",".join(f"('{eid}', {days})" for eid, days in ages_days.items())
    n = pg.scalar(f"WITH a(id, days) AS (VALUES {values}), u AS (UPDATE hookd_events e SET "
                  "received_ms = (extract(epoch FROM now()) * 1000)::int8 - "
                  "(a.days * 86400000)::int8 FROM a WHERE e.event_id = a.id RETURNING 1) "
                  "SELECT count(*) FROM u")
    assert n == str(len(ages_days))


def add_plugin_and_restart(nodes, plugin):
    for n in nodes:
        n.stop()
    for n in nodes:
        cfg = json.loads(n.cfg_path.read_text())
        cfg["plugins"].append(plugin)
        n.cfg_path.write_text(json.dumps(cfg))
    for n in nodes:
        n.start()


def replay_on_a_terminal(node, *args):
    """Runs `hookd replay` under a pty (as a user would); its exit code and what it showed."""
    return on_a_terminal([str(HOOKD), "replay", *args, "-c", str(node.cfg_path)], node.env,
                         30 * SLOW)


def test_backfill_a_week_to_a_new_instance_running_and_stopped(cluster, pg, tmp_path):
    audit = sink(tmp_path, "audit")
    routes = [{"source": "cirrus", "events": ["**"], "to": ["audit"]}]
    nodes = cluster(2, [audit], routes)
    sender = Sender(nodes)
    # Ten meetings with four events each, in accept order over six days, an
    # organization event three days old, and two meeting events nine days
    # old (outside a seven-day window).
    ages, expected = {}, {}
    for k in range(4):
        for m in range(10):
            eid = f"bf-{m}-{k}"
            sender.post(eid, meeting_event(eid, f"bf-m{m}", "rescheduled"), (m + k) % 2)
            ages[eid] = 6.5 - (k * 10 + m) * 0.1
            expected.setdefault(f"bf-m{m}", []).append(eid)
    org = json.loads(meeting_event("bf-org", "x", "scheduled"))
    org.update(eventType="organization.setting.changed", eventId="bf-org")
    assert post(nodes[0], json.dumps(org).encode()) == 200
    for eid in ("bf-old-1", "bf-old-2"):
        sender.post(eid, meeting_event(eid, "bf-m0", "canceled"), 1)
    ages.update({"bf-org": 3, "bf-old-1": 9, "bf-old-2": 9})
    wait_delivered_sink(tmp_path / "audit.txt", list(ages), 10)
    age_events(pg, ages)
    add_plugin_and_restart(nodes, sink(tmp_path, "crm"))  # routed nothing: only back-fills reach it
    a, b = nodes
    for args, want in [(("--since", "1h"), "0 events\n"), (("--since", "7d"), "41 events\n"),
                       (("--since", "7d", "--type", "scheduling.**"), "40 events\n"),
                       (("--since", "7d", "--source", "other"), "0 events\n"),
                       (("--since", "10d", "--type", "organization.**"), "1 event\n")]:
        rc, text = a.cli("replay", *args, "--to", "crm", "--dry-run")
        assert rc == 0 and text == want, (args, text)
    crm = tmp_path / "crm.txt"
    time.sleep(0.3)
    assert read_sink(crm)[0] == [], "a dry run changes nothing"
    # Running cluster, asked on node b, on a terminal: progress until delivered.
    rc, shown = replay_on_a_terminal(b, "--since", "7d", "--type", "scheduling.**", "--to", "crm")
    assert rc == 0, shown
    assert "40 events (since 7d, type scheduling.**) to be delivered again to crm" in shown
    assert "queued 40/40" in shown and "/s" in shown, shown
    assert "back-fill 1 done: 40 delivered to crm, 0 dead letters" in shown, shown
    counts = check_order(crm, expected)  # per meeting in accept order, never two at once
    assert counts == {e: 1 for ids in expected.values() for e in ids}, counts
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE replay = 1 AND "
                                 "state = 1") == "40", 5, what="the outcomes stored")
    by_node = pg.sql("SELECT lease_owner, count(*) FROM hookd_deliveries WHERE replay = 1 GROUP BY 1")
    assert len(read_sink(tmp_path / "audit.txt")[1]) == 43, "the old instance got nothing again"
    assert "back-fill 1 queued all its deliveries" in a.log() + b.log()
    # The page's Replay button (node a): the two old cancellations, after the rest of bf-m0.
    st, _, body = http_request(a.admin, "POST", "/instances/crm/replay",
                               b"since=10d&type=scheduling.smartscheduler.canceled",
                               dict(ADMIN, **{"Content-Type": "application/x-www-form-urlencoded"}))
    assert st == 200 and json.loads(body) == {"backfill": 2, "events": 2}, body
    wait_delivered_sink(crm, ["bf-old-1", "bf-old-2"], 10)
    expected["bf-m0"] += ["bf-old-1", "bf-old-2"]
    assert check_order(crm, expected) == {e: 1 for ids in expected.values() for e in ids}
    # A stopped cluster: the request waits in PostgreSQL, the next start delivers it.
    for n in nodes:
        n.stop()
    rc, text = a.cli("replay", "--since", "7d", "--type", "organization.**", "--to", "crm")
    assert rc == 0 and "back-fill 3: 1 event (since 7d, type organization.**)" in text, text
    b.start()
    wait_delivered_sink(crm, ["bf-org"], 10)
    assert pg.sql("SELECT id, total, queued, finished_ms IS NOT NULL FROM hookd_backfills "
                  "ORDER BY id") == [["1", "40", "40", "t"], ["2", "2", "2", "t"],
                                     ["3", "1", "1", "t"]]
    assert pg.scalar("SELECT count(*) FROM hookd_backfill_events") == "0"
    print(f"back-fill deliveries by node: {by_node}")


ATTEMPT_ROW = re.compile(r'<tr class="attempt" data-outcome="([^"]*)"><td class="num">(\d+)</td>'
                         r'<td>[^<]*</td><td class="num">\d+ ms</td><td class="outcome">[^<]*'
                         r'</td><td class="num status">([^<]*)</td><td class="answer">([^<]*)'
                         r'</td><td class="error">([^<]*)</td></tr>')


def deliveries_on_page(html):
    """{instance: (state, [(outcome, attempt, status, answer, error)])} of an event's page."""
    got = {}
    for m in re.finditer(r'<section class="delivery" data-instance="([^"]*)" data-state="([^"]*)">'
                         r'(.*?)</section>', html, re.S):
        got[m.group(1)] = (m.group(2), [r.groups() for r in ATTEMPT_ROW.finditer(m.group(3))])
    return got


def test_event_detail_with_attempts_and_search_by_meeting_from_any_node(cluster, pg, tmp_path,
                                                                       fake_server):
    answers = {"dt-retry": [(503, "busy, try later"), (200, "ok now")],
               "dt-dead": [(422, "invalid field meetingName")], "dt-ok": [(200, "fine")],
               "dt-ok-2": [(200, "fine")]}
    seen = {}

    def respond(req, n):
        eid = req.headers["webhook-id"]
        k = seen[eid] = seen.get(eid, -1) + 1
        status, text = answers[eid][min(k, len(answers[eid]) - 1)]
        return status, {"Content-Type": "text/plain"}, text.encode()
    dest = fake_server(respond)
    plugins = [{"name": "crm", "module": "http_forward", "config": {"url": dest.url("/hook")},
                "delivery": {"backoff_initial_ms": 100, "backoff_max_ms": 200}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["crm"]}]
    a, b = cluster(2, plugins, routes)
    for eid, meeting in [("dt-ok", "dt-m1"), ("dt-retry", "dt-m2"), ("dt-dead", "dt-m3"),
                         ("dt-ok-2", "dt-m1")]:
        assert post(a, meeting_event(eid, meeting, "scheduled")) == 200

    def page(eid):
        st, _, body = http_request(b.admin, "GET", f"/event?source=cirrus&id={eid}")
        return st, body.decode()
    for eid, state in [("dt-ok", "delivered"), ("dt-retry", "delivered"), ("dt-dead", "dead"),
                       ("dt-ok-2", "delivered")]:
        wait_until(lambda: f'data-instance="crm" data-state="{state}"' in page(eid)[1], 10,
                   what=f"{eid} stored as {state}")
    st, html = page("dt-retry")
    assert st == 200
    retried = deliveries_on_page(html)["crm"]
    assert retried[0] == "delivered"
    assert [(o, n, s, ans) for o, n, s, ans, _ in retried[1]] == \
        [("retry", "1", "503", "busy, try later"), ("delivered", "2", "200", "ok now")], retried
    assert retried[1][0][4] == "HTTP 503: busy, try later"
    assert deliveries_on_page(page("dt-dead")[1])["crm"] == \
        ("dead", [("dead", "1", "422", "invalid field meetingName",
                   "HTTP 422: invalid field meetingName")])
    st, html = page("dt-ok")
    assert deliveries_on_page(html)["crm"] == ("delivered", [("delivered", "1", "200", "fine", "")])
    # The request's headers are kept, the signature masked; the body indented.
    assert "X-Signature: [masked, 64 bytes]" in html and "Content-Type: application/json" in html
    assert sign(meeting_event("dt-ok", "dt-m1", "scheduled")) not in html
    assert '\n  &quot;eventId&quot;: &quot;dt-ok&quot;,\n' in html
    assert page("no-such-event")[0] == 404
    # Search by meeting id (the order key) and by event id, on either node.
    for node in (a, b):
        st, _, body = http_request(node.admin, "GET", "/search?q=dt-m1")
        found = re.findall(r'<tr data-event-id="([^"]+)"', body.decode())
        assert st == 200 and found == ["dt-ok-2", "dt-ok"], found  # newest first
    st, _, body = http_request(a.admin, "GET", "/search?q=dt-dead")
    assert re.findall(r'<tr data-event-id="([^"]+)"', body.decode()) == ["dt-dead"]
    # The calls of deliveries done at their first are kept in their rows; the others in
    # hookd_attempts: the dead one's, and the retried one's two.
    assert pg.sql("SELECT e.event_id, a.attempt, a.outcome FROM hookd_attempts a JOIN "
                  "hookd_events e ON e.seq = a.seq ORDER BY 1, 2") == \
        [["dt-dead", "1", "dead"], ["dt-retry", "1", "retry"], ["dt-retry", "2", "delivered"]]
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE call_outcome = 'delivered'") == "2"
