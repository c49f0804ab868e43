"""Back-fill replay (`hookd replay`): a week-old window of stored events delivered again to a
newly added instance, with hookd running or stopped, --dry-run, filters, progress on a
terminal; and the spool's upgrade from schema version 2."""
import json
import sqlite3
import time

from conftest import (HOOKD, SLOW, free_port, http_request, on_a_terminal, payload, read_jsonl,
                      sign, wait_until)
from engine import Node, meeting_event, node_config

DAY_MS = 86400000


def post(node, body):
    return http_request(node.port, "POST", "/webhooks/cirrus", body,
                        {"X-Signature": sign(body), "Content-Type": "application/json"})[0]


def org_event(event_id):
    ev = json.loads(payload("organization.setting.changed"))
    ev["eventId"] = event_id
    return json.dumps(ev).encode()


def age_events(tmp_path, ages_days):
    """Sets each event's accept time (stopped hookd) to that many days ago."""
    db = sqlite3.connect(tmp_path / "var" / "spool.db")
    now = int(time.time() * 1000)
    for event_id, days in ages_days.items():
        n = db.execute("UPDATE events SET received_ms = ? WHERE event_id = ?",
                       (now - int(days * DAY_MS), event_id)).rowcount
        assert n == 1, event_id
    db.commit()
    db.close()


def file_sink(name, path):
    return {"name": name, "module": "file_sink", "config": {"path": str(path)}}


# Accept order: two meetings interleaved, then an organization event, then a
# meeting event nine days old (outside a 7-day window).
MEETINGS = [("w1", "m1"), ("w2", "m2"), ("w3", "m1"), ("w4", "m2"), ("w5", "m1")]


def test_backfill_a_week_to_a_new_instance(tmp_path):
    audit, crm = tmp_path / "audit.jsonl", tmp_path / "crm.jsonl"
    admin = free_port()
    cfg = node_config(tmp_path, [file_sink("audit", audit)], [{"events": ["**"], "to": ["audit"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    for eid, meeting in MEETINGS:
        assert post(node, meeting_event(eid, meeting)) == 200
    assert post(node, org_event("w-org")) == 200
    assert post(node, meeting_event("w-old", "m1")) == 200
    wait_until(lambda: len(read_jsonl(audit)) == 7, 10, what="the first deliveries")
    assert node.stop() == 0
    # A week ago and older, as the test stores them.
    age_events(tmp_path, {"w1": 6.9, "w2": 6.5, "w3": 6, "w4": 5, "w5": 4, "w-org": 3,
                          "w-old": 9})
    # A new instance, routed nothing: only the back-fill reaches it.
    cfg["plugins"].append(file_sink("crm", crm))
    node.write(cfg)
    node.start()
    try:
        p = node.cli("replay", "--since", "1h", "--to", "crm", "--dry-run")
        assert p.returncode == 0 and p.stdout == "0 events\n", p.stdout + p.stderr
        p = node.cli("replay", "--since", "7d", "--to", "crm", "--dry-run")
        assert p.stdout == "6 events\n"
        p = node.cli("replay", "--since", "7d", "--type", "scheduling.**", "--to", "crm",
                     "--dry-run")
        assert p.stdout == "5 events\n"
        p = node.cli("replay", "--since", "7d", "--source", "other", "--to", "crm", "--dry-run")
        assert p.stdout == "0 events\n"
        time.sleep(0.3)
        assert read_jsonl(crm) == []  # a dry run changes nothing
        p = node.cli("replay", "--since", "7d", "--type", "scheduling.**", "--to", "crm")
        assert p.returncode == 0 and "5 events" in p.stdout and "to crm" in p.stdout, p.stderr
        wait_until(lambda: len(read_jsonl(crm)) == 5, 10, what="the back-fill")
        # In accept order (per key, and here overall: one at a time per key).
        got = [e["event_id"] for e in read_jsonl(crm)]
        for meeting in ("m1", "m2"):
            want = [e for e, m in MEETINGS if m == meeting]
            assert [e for e in got if e in want] == want
        assert sorted(got) == sorted(e for e, _ in MEETINGS)
        assert len(read_jsonl(audit)) == 7  # the old instance got nothing again
        assert "back-fill 1 queued all its deliveries" in node.log()
    finally:
        assert node.stop() == 0
    # hookd stopped: the request waits in the spool, and the next start
    # delivers it.
    p = node.cli("replay", "--since", "7d", "--type", "organization.**", "--to", "crm")
    assert p.returncode == 0 and "1 event " in p.stdout, p.stdout + p.stderr
    node.start()
    try:
        wait_until(lambda: len(read_jsonl(crm)) == 6, 10, what="the back-fill after a start")
        assert read_jsonl(crm)[-1]["event_id"] == "w-org"
        db = sqlite3.connect(tmp_path / "var" / "spool.db")
        rows = db.execute("SELECT id, total, queued, finished_ms IS NOT NULL FROM backfills "
                          "ORDER BY id").fetchall()
        left = db.execute("SELECT count(*) FROM backfill_events").fetchone()[0]
        db.close()
        assert rows == [(1, 5, 5, 1), (2, 1, 1, 1)] and left == 0
    finally:
        assert node.stop() == 0


def test_replay_shows_progress_on_a_terminal_and_refuses_bad_usage(tmp_path):
    out = tmp_path / "new.jsonl"
    cfg = node_config(tmp_path, [file_sink("audit", tmp_path / "a.jsonl"), file_sink("new", out)],
                      [{"events": ["**"], "to": ["audit"]}])
    node = Node(tmp_path, cfg).start()
    try:
        for i in range(20):
            assert post(node, meeting_event(f"t{i}", f"m{i % 3}")) == 200
        # On a terminal: progress lines until every event is delivered.
        rc, shown = on_a_terminal([str(HOOKD), "replay", "--since", "1h", "--to", "new", "-c",
                                   str(node.path)], timeout=20 * SLOW)
        assert rc == 0, shown
        assert "20 events" in shown and "Ctrl-C stops watching" in shown
        assert "queued 20/20" in shown and "delivered 20" in shown and "/s" in shown
        assert "back-fill 1 done: 20 delivered to new, 0 dead letters" in shown
        assert len(read_jsonl(out)) == 20
    finally:
        assert node.stop() == 0
    for args, err in [(("--since", "7d"), "needs --since DURATION and --to INSTANCE"),
                      (("--since", "forever", "--to", "new"), "expected a duration"),
                      (("--since", "1h", "--to", "new", "--type", "a.**.b"), "--type 'a.**.b'"),
                      (("--since", "1h", "--to", "nope"), "no plugin instance 'nope'"),
                      (("--since", "1h", "--to", "new", "--bogus"), "unknown argument")]:
        p = node.cli("replay", *args)
        assert p.returncode == 2 and err in p.stderr, (args, p.stderr)


V2_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '2');
CREATE TABLE events(seq INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL,
  type TEXT NOT NULL, order_key TEXT, content_type TEXT NOT NULL, received_ms INTEGER NOT NULL,
  body BLOB NOT NULL, done_ms INTEGER, UNIQUE(source, event_id));
CREATE TABLE deliveries(id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL,
  instance TEXT NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL,
  next_ms INTEGER NOT NULL, last_error TEXT, updated_ms INTEGER NOT NULL,
  crashes INTEGER NOT NULL DEFAULT 0, okey TEXT, parked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE running(id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL);
CREATE INDEX deliveries_lane ON deliveries(instance, state) WHERE state <> 1;
CREATE INDEX deliveries_dead ON deliveries(state) WHERE state >= 2;
CREATE INDEX deliveries_seq ON deliveries(seq);
CREATE INDEX events_done ON events(done_ms) WHERE done_ms IS NOT NULL;
"""


def test_spool_of_schema_version_2_is_upgraded(tmp_path):
    """A version 2 spool (before attempts, pause and back-fills) is upgraded
    in place: its pending delivery resumes, its dead letter stays listed, and
    pause, replay and attempt rows work on it."""
    var = tmp_path / "var"
    var.mkdir()
    db = sqlite3.connect(var / "spool.db")
    db.executescript(V2_SCHEMA)
    for seq, (eid, state) in enumerate([("v2-pending", 0), ("v2-dead", 2)], 1):
        db.execute("INSERT INTO events VALUES(?, 'cirrus', ?, "
                   "'scheduling.smartscheduler.rescheduled', 'm1', 'application/json', ?, ?, NULL)",
                   (seq, eid, int(time.time() * 1000) - 60000, meeting_event(eid, "m1").decode()))
        db.execute("INSERT INTO deliveries(seq, instance, state, attempt, next_ms, last_error, "
                   "updated_ms, okey) VALUES(?, 'audit', ?, 1, 0, ?, 1, 'm1')",
                   (seq, state, "boom" if state == 2 else None))
    db.commit()
    db.close()
    out = tmp_path / "audit.jsonl"
    admin = free_port()
    cfg = node_config(tmp_path, [file_sink("audit", out)], [{"events": ["**"], "to": ["audit"]}],
                      admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    try:
        wait_until(lambda: len(read_jsonl(out)) == 1, 10, what="the pending delivery")
        assert "from schema version 2 to 3" in node.log()
        p = node.cli("dlq", "list")
        assert p.returncode == 0 and "v2-dead" in p.stdout
        assert node.cli("pause", "audit").returncode == 0
        assert node.cli("resume", "audit").returncode == 0
        p = node.cli("replay", "--since", "1h", "--to", "audit")
        assert p.returncode == 0 and "2 events" in p.stdout
        wait_until(lambda: len(read_jsonl(out)) == 3, 10, what="the replay")
        status, _, body = http_request(admin, "GET", "/event?source=cirrus&id=v2-pending")
        assert status == 200 and b'data-outcome="delivered"' in body
    finally:
        assert node.stop() == 0
    db = sqlite3.connect(var / "spool.db")
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    check = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    assert version == "3" and check == "ok"
    assert {"attempts", "instance_state", "backfills", "backfill_events"} <= tables
