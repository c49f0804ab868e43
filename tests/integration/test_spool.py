"""The durable spool: crash recovery, order across restarts, dedup, backpressure, disk faults, dead letters, retention."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (HOOKD, PLUGIN_DIR, cirrus_source, free_port, payload, read_jsonl,
                      send_event, sign, wait_until, write_config, Daemon)


def meeting_event(event_id, meeting, kind="rescheduled"):
    ev = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    ev["eventId"] = event_id
    ev["data"]["id"] = meeting
    return json.dumps(ev).encode()


def start(tmp, cfg, name="d"):
    """Starts hookd on a fixed config file (so a restart reuses data_dir and port)."""
    path = tmp / f"{name}.json"
    if not path.exists():
        path.write_text(json.dumps(cfg))
    port = int(cfg["listen"].rsplit(":", 1)[1])
    d = Daemon(path, tmp, port, dict(os.environ))
    d.log_path = tmp / f"{name}-{time.monotonic_ns()}.log"
    d._log.close()
    d._log = open(d.log_path, "wb")
    d.proc.kill()
    d.proc.wait()
    d.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(path)], stdout=d._log,
                              stderr=subprocess.STDOUT)
    d.wait_ready()
    return d


def base_config(tmp, plugins, routes, **extra):
    cfg = {"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp / "var"),
           "plugin_dirs": [str(PLUGIN_DIR)], "log": {"level": "info"},
           "sources": [cirrus_source()], "plugins": plugins, "routes": routes}
    cfg.update(extra)
    return cfg


def integrity(tmp):
    db = sqlite3.connect(tmp / "var" / "spool.db")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def post_many(d, prefix, n, clients=8, timeout=10):
    """Posts events prefix-0 .. prefix-(n-1) (meeting m<i>) from `clients`
    keep-alive connections at once. Returns every status, in no particular
    order, and the slowest request's seconds."""
    import http.client

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
        got, slowest = [], 0.0
        for i in range(c, n, clients):
            body = meeting_event(f"{prefix}-{i}", f"m{i}")
            t0 = time.monotonic()
            conn.request("POST", "/webhooks/cirrus", body,
                         {"X-Signature": sign(body), "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            slowest = max(slowest, time.monotonic() - t0)
            got.append(r.status)
        conn.close()
        return got, slowest

    with ThreadPoolExecutor(clients) as pool:
        results = [f.result() for f in [pool.submit(client, c) for c in range(clients)]]
    return [s for got, _ in results for s in got], max(slowest for _, slowest in results)


def metric(admin_port, name):
    """The value of an unlabelled sample on the admin listener's /metrics."""
    from conftest import http_request
    body = http_request(admin_port, "GET", "/metrics")[2].decode()
    return int(float(next(line.split()[1] for line in body.splitlines()
                           if line.startswith(name + " "))))


def test_kill9_loses_nothing_and_keeps_order(tmp_path):
    """2,000 events for 200 meetings from 16 clients; SIGKILL in the middle;
    every event that got a 200 reaches file_sink, each meeting in order."""
    out = tmp_path / "events.jsonl"
    cfg = base_config(tmp_path,
                      [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
                      [{"events": ["**"], "to": ["audit"]}], spool={"sync": "full"},
                      log={"level": "warn"})
    d = start(tmp_path, cfg)
    accepted = {}  # meeting -> [event ids in accepted order]
    lock = threading.Lock()
    killed = threading.Event()

    def client(daemon, c):
        """Sends meetings c, c+16, ... their ten events each, in order; stops
        at the first request that gets no 200 (the daemon died)."""
        import http.client
        conn = None
        for m in range(c, 200, 16):
            with lock:
                first = len(accepted.get(f"meeting-{m}", []))
            for i in range(first, 10):
                if killed.is_set():
                    return
                eid = f"m{m}-e{i}"
                body = meeting_event(eid, f"meeting-{m}")
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
                    conn.request("POST", "/webhooks/cirrus", body,
                                 {"X-Signature": sign(body), "Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except OSError:
                    return  # the server died mid-request: not accepted
                if not ok:
                    return
                with lock:
                    accepted.setdefault(f"meeting-{m}", []).append(eid)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(client, d, c) for c in range(16)]
        wait_until(lambda: sum(len(v) for v in accepted.values()) >= 700, timeout=60)
        d.proc.send_signal(signal.SIGKILL)
        killed.set()
        d.proc.wait()
        for f in futures:
            f.result()
    n_before = sum(len(v) for v in accepted.values())
    assert 700 <= n_before < 2000
    assert integrity(tmp_path) == "ok"

    # Restart and send the rest of the 2,000 from 16 clients again: each
    # meeting's order must hold across the crash.
    d2 = start(tmp_path, cfg, name="d")
    killed.clear()
    with ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(client, d2, c) for c in range(16)]:
            f.result()
    total = sum(len(v) for v in accepted.values())
    assert total == 2000

    def delivered():
        seen = {}
        for line in read_jsonl(out):
            seen.setdefault(line["event"]["data"]["id"], []).append(line["event_id"])
        return seen

    wait_until(lambda: all(set(accepted[m]) <= set(delivered().get(m, [])) for m in accepted),
               timeout=60, what="every accepted event delivered")
    assert d2.stop() == 0
    seen = delivered()
    for m, ids in accepted.items():
        got = seen[m]
        # at least once; in accepted order (a redelivery after the crash may
        # repeat the last ones, never reorder them)
        firsts = []
        for e in got:
            if e not in firsts:
                firsts.append(e)
        assert [e for e in firsts if e in ids] == ids, m
    assert integrity(tmp_path) == "ok"


def test_retry_continues_across_restart_with_right_attempt(tmp_path):
    out = tmp_path / "t.txt"
    cfg = base_config(tmp_path,
                      [{"name": "t", "module": "test_plugin",
                        "config": {"out": str(out), "retry_times": 3},
                        "delivery": {"backoff_initial_ms": 200, "backoff_max_ms": 300}}],
                      [{"events": ["**"], "to": ["t"]}])
    d = start(tmp_path, cfg)
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 2)
    assert d.stop() == 0
    attempts_before = [l.split()[2] for l in out.read_text().splitlines() if l != "DESTROY"]
    d = start(tmp_path, cfg)
    wait_until(lambda: " ok" in out.read_text(), timeout=15)
    assert d.stop() == 0
    rows = [l.split() for l in out.read_text().splitlines() if l != "DESTROY"]
    attempts = [r[2] for r in rows]
    assert attempts == ["1", "2", "3", "4"], (attempts_before, attempts)
    assert [r[4] for r in rows] == ["retry", "retry", "retry", "ok"]
    assert "resuming 1 unfinished deliveries" in d.log()


def test_duplicate_after_restart_is_not_stored_again(tmp_path):
    out = tmp_path / "events.jsonl"
    cfg = base_config(tmp_path,
                      [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
                      [{"events": ["**"], "to": ["audit"]}])
    d = start(tmp_path, cfg)
    body = payload("scheduling.smartscheduler.scheduled")
    assert send_event(d, body) == 200
    wait_until(lambda: len(read_jsonl(out)) == 1)
    assert d.stop() == 0
    d = start(tmp_path, cfg)
    again = json.loads(body)
    again["deliveryAttempt"] = 3  # the sender's retry: same eventId, new body
    assert send_event(d, json.dumps(again).encode()) == 200
    assert send_event(d, payload("developer.webhook.test")) == 200
    wait_until(lambda: len(read_jsonl(out)) == 2)
    assert d.stop() == 0
    assert [l["type"] for l in read_jsonl(out)] == ["scheduling.smartscheduler.scheduled",
                                                    "developer.webhook.test"]
    assert "duplicate of an accepted event" in d.log()


def test_backpressure_503_then_recovery(tmp_path):
    out = tmp_path / "t.txt"
    cfg = base_config(tmp_path,
                      [{"name": "t", "module": "test_plugin",
                        "config": {"out": str(out), "sleep_ms": 300},
                        "delivery": {"concurrency": 1}}],
                      [{"events": ["**"], "to": ["t"]}], spool={"max_pending": 3})
    d = start(tmp_path, cfg)
    statuses = [send_event(d, meeting_event(f"e{i}", f"m{i}")) for i in range(6)]
    assert statuses[:3] == [200, 200, 200]
    assert 503 in statuses[3:]
    status, headers, _ = d.post("/webhooks/cirrus", meeting_event("x", "mx"),
                                {"X-Signature": sign(meeting_event("x", "mx"))})
    assert status == 503 and "retry-after" in headers
    # once deliveries drain, new events are accepted again; nothing stored is touched
    wait_until(lambda: send_event(d, meeting_event("late", "m-late")) == 200, timeout=15)
    wait_until(lambda: out.exists() and "\nlate " in "\n" + out.read_text(), timeout=15)
    assert d.stop() == 0
    ids = [l.split()[0] for l in out.read_text().splitlines() if l != "DESTROY"]
    accepted = [f"e{i}" for i, s in enumerate(statuses) if s == 200]
    assert set(accepted) <= set(ids)
    assert "too many pending deliveries" in d.log()


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs",
                                            str(mnt)]).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_answers_503_and_recovers(tmp_path, small_fs):
    out = tmp_path / "events.jsonl"
    cfg = base_config(tmp_path,
                      [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
                      [{"events": ["**"], "to": ["audit"]}],
                      data_dir=str(small_fs / "var"), spool={"min_free_bytes": 0})
    d = start(tmp_path, cfg)
    assert send_event(d, payload("developer.webhook.test")) == 200
    # Fill the file system from outside, as another process would.
    filler = small_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    statuses = [send_event(d, meeting_event(f"full-{i}", f"m{i}")) for i in range(20)]
    assert 503 in statuses
    assert all(s in (200, 503) for s in statuses)
    os.unlink(filler)
    wait_until(lambda: send_event(d, meeting_event("after", "m-after")) == 200, timeout=15)
    accepted = [f"full-{i}" for i, s in enumerate(statuses) if s == 200] + ["after"]
    wait_until(lambda: set(accepted) <= {l["event_id"] for l in read_jsonl(out)}, timeout=15)
    assert d.stop() == 0
    db = sqlite3.connect(small_fs / "var" / "spool.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert "commit failed" in d.log()


def test_disk_floor_answers_503(tmp_path, small_fs):
    cfg = base_config(tmp_path, [], [], data_dir=str(small_fs / "var"),
                      spool={"min_free_bytes": 10 * 1024 * 1024})
    d = start(tmp_path, cfg)
    wait_until(lambda: d.post("/webhooks/cirrus", payload("developer.webhook.test"),
                              {"X-Signature": sign(payload("developer.webhook.test"))})[0] == 503)
    assert d.stop() == 0
    assert "below spool.min_free_bytes" in d.log()


def test_read_only_data_dir_refuses_to_start(tmp_path):
    if os.geteuid() == 0:
        # root ignores directory modes; use a read-only bind of an empty dir
        ro = tmp_path / "ro"
        ro.mkdir()
        if subprocess.run(["mount", "--bind", str(ro), str(ro)]).returncode != 0 or \
           subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)]).returncode != 0:
            pytest.skip("cannot make a read-only mount")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    try:
        cfg = base_config(tmp_path, [], [], data_dir=str(ro / "var"))
        path = write_config(tmp_path, cfg)
        p = subprocess.run([str(HOOKD), "run", "-c", str(path)], capture_output=True, text=True,
                           timeout=20)
        assert p.returncode == 1
        assert "data_dir" in p.stderr or "spool" in p.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)])


def test_schema_from_another_version_is_refused(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    db = sqlite3.connect(var / "spool.db")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES('schema_version', '7')")
    db.commit()
    db.close()
    cfg = base_config(tmp_path, [], [])
    path = write_config(tmp_path, cfg)
    p = subprocess.run([str(HOOKD), "run", "-c", str(path)], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 1
    assert "schema version 7, this hookd reads versions 1 and 2" in p.stderr


def dlq(path, *args):
    return subprocess.run([str(HOOKD), "dlq", *args, "-c", str(path)], capture_output=True,
                          text=True, timeout=20)


def test_dead_letters_list_show_replay_purge(tmp_path):
    out = tmp_path / "t.txt"
    cfg = base_config(tmp_path,
                      [{"name": "t", "module": "test_plugin",
                        "config": {"out": str(out), "result": "fail"}}],
                      [{"events": ["**"], "to": ["t"]}])
    d = start(tmp_path, cfg)
    for kind in ("scheduled", "canceled"):
        assert send_event(d, payload(f"scheduling.smartscheduler.{kind}")) == 200
    d.wait_for_log(r"failed for good.*5a6b7c8d-3333")
    path = tmp_path / "d.json"
    wait_until(lambda: dlq(path, "list").stdout.count("test plugin says fail") == 2)
    p = dlq(path, "list")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert "5a6b7c8d-3333" in lines[0] and "5a6b7c8d-1111" in lines[1]  # newest first
    ids = [l.split()[0] for l in lines]
    p = dlq(path, "show", ids[0])
    assert p.returncode == 0 and '"eventType": "scheduling.smartscheduler.canceled"' in p.stdout
    assert dlq(path, "show", "999").returncode == 1
    # replay while running: the plugin now succeeds; the delivery starts within a second
    assert d.stop() == 0
    cfg["plugins"][0]["config"]["result"] = "ok"
    path.write_text(json.dumps(cfg))
    d = start(tmp_path, cfg)
    t0 = time.monotonic()
    p = dlq(path, "replay", ids[0])
    assert p.returncode == 0 and "1 dead letter(s)" in p.stdout
    wait_until(lambda: "5a6b7c8d-3333-4e2f-a3b4-c5d6e7f80912 scheduling.smartscheduler.canceled 1"
               in out.read_text(), timeout=5)
    assert time.monotonic() - t0 < 2.5
    # purge the other while stopped
    assert d.stop() == 0
    p = dlq(path, "purge", ids[1])
    assert p.returncode == 0
    assert dlq(path, "list").stdout.strip() == "no dead letters"
    assert dlq(path, "purge", ids[1]).returncode == 1
    assert integrity(tmp_path) == "ok"


def test_replay_all_while_stopped_is_delivered_on_start(tmp_path):
    out = tmp_path / "t.txt"
    cfg = base_config(tmp_path,
                      [{"name": "t", "module": "test_plugin",
                        "config": {"out": str(out), "result": "retry"},
                        "delivery": {"max_attempts": 2, "backoff_initial_ms": 10}}],
                      [{"events": ["**"], "to": ["t"]}])
    d = start(tmp_path, cfg)
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    d.wait_for_log("gave up after 2 attempts")
    assert d.stop() == 0
    path = tmp_path / "d.json"
    wait_until(lambda: "attempts=2" in dlq(path, "list").stdout)
    assert "1 dead letter(s)" in dlq(path, "replay", "--all").stdout
    cfg["plugins"][0]["config"]["result"] = "ok"
    path.write_text(json.dumps(cfg))
    d = start(tmp_path, cfg)
    wait_until(lambda: " ok" in out.read_text())
    assert d.stop() == 0
    assert dlq(path, "list").stdout.strip() == "no dead letters"


def test_retention_prunes_finished_events(tmp_path):
    out = tmp_path / "events.jsonl"
    cfg = base_config(tmp_path,
                      [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
                      [{"events": ["scheduling.**"], "to": ["audit"]}],
                      spool={"retention": "1s"})
    d = start(tmp_path, cfg)
    assert send_event(d, payload("scheduling.smartscheduler.scheduled")) == 200
    assert send_event(d, payload("organization.setting.changed")) == 200  # unrouted
    wait_until(lambda: len(read_jsonl(out)) == 1)
    db = sqlite3.connect(tmp_path / "var" / "spool.db")

    def events():
        return db.execute("SELECT count(*) FROM events").fetchone()[0]

    wait_until(lambda: events() == 0, timeout=10, what="finished events pruned")
    assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    db.close()
    assert d.stop() == 0


def test_bad_spool_settings_are_config_errors(tmp_path):
    from conftest import hookd_check
    rc, out = hookd_check(base_config(tmp_path, [], [], spool={"retention": "forever"}), tmp_path)
    assert rc == 2 and "spool.retention" in out
    rc, out = hookd_check(base_config(tmp_path, [], [], spool={"sync": "sometimes"}), tmp_path)
    assert rc == 2 and "spool.sync" in out


def test_more_events_than_the_dedup_cache_holds(daemon_factory, tmp_path):
    """The loop thread remembers the last 4,096 ids; past that, ids are
    forgotten there (oldest first) and the database's UNIQUE constraint
    still answers a resend of an old one."""
    d = daemon_factory(base_config(tmp_path, [], [], spool={"sync": "off"},
                                   log={"level": "warn"}))

    statuses, _ = post_many(d, "many", 4600)
    assert statuses == [200] * 4600
    # many-0 left the in-memory cache long ago: the database says duplicate
    assert send_event(d, meeting_event("many-0", "m0")) == 200
    assert send_event(d, meeting_event("fresh", "m-fresh")) == 200
    db = sqlite3.connect(tmp_path / "var" / "spool.db")
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 4601
    db.close()


def test_checkpoints_run_beside_the_writer(daemon_factory, tmp_path):
    """The WAL is copied into spool.db by the checkpoint thread while events
    keep coming: checkpoints are counted, the WAL starts over instead of
    growing with every event, and everything stored is in the database."""
    admin = free_port()
    d = daemon_factory(base_config(tmp_path, [], [], spool={"sync": "normal"},
                                   log={"level": "warn"}, admin_listen=f"127.0.0.1:{admin}"))
    n = 6000  # ~1.7 KiB each: several times the 1,000-page checkpoint threshold

    statuses, _ = post_many(d, "ck", n)
    assert statuses == [200] * n

    wait_until(lambda: metric(admin, "hookd_spool_checkpoints_total") >= 2, 20,
               what="checkpoints by the checkpoint thread")
    # 6,000 events wrote well over 2,000 WAL pages; the WAL started over
    assert metric(admin, "hookd_spool_wal_pages") < 2000
    db_path = tmp_path / "var" / "spool.db"
    assert db_path.stat().st_size > 4 * 1024 * 1024  # the events reached the database file
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == n
    db.close()
    d.stop()
    assert integrity(tmp_path) == "ok"


def test_event_is_done_only_when_every_delivery_is(tmp_path):
    """An event for two instances is finished (and so pruned later) only
    after both delivered: a delivered delivery's row is deleted, a dead
    letter keeps its row and so its event; after the dead letter is replayed
    and delivered the event has no row left."""
    ok_out, bad_out = tmp_path / "ok.txt", tmp_path / "bad.txt"
    plugins = [{"name": "ok", "module": "test_plugin",
                "config": {"out": str(ok_out), "result": "ok"}},
               {"name": "bad", "module": "test_plugin",
                "config": {"out": str(bad_out), "result": "fail"}}]
    cfg = base_config(tmp_path, plugins,
                      [{"events": ["scheduling.smartscheduler.scheduled"], "to": ["ok", "bad"]},
                       {"events": ["scheduling.smartscheduler.canceled"], "to": ["ok"]},
                       {"events": ["scheduling.smartscheduler.canceled"], "to": ["ok"]}],
                      spool={"sync": "normal"})
    d = start(tmp_path, cfg)
    assert send_event(d, meeting_event("two-targets", "m1", "scheduled")) == 200
    assert send_event(d, meeting_event("one-target", "m2", "canceled")) == 200
    d.wait_for_log(r"failed for good.*two-targets")
    db = sqlite3.connect(tmp_path / "var" / "spool.db")

    def rows(event_id):
        return db.execute("SELECT count(*) FROM deliveries d JOIN events e ON e.seq = d.seq "
                          "WHERE e.event_id = ?", (event_id,)).fetchone()[0]

    def done(event_id):
        return rows(event_id) == 0

    wait_until(lambda: done("one-target"), what="the event with one delivery finished")
    wait_until(lambda: rows("two-targets") == 1, what="the ok delivery of two-targets written")
    assert db.execute("SELECT state FROM deliveries d JOIN events e ON e.seq = d.seq "
                      "WHERE e.event_id = 'two-targets'").fetchone()[0] == 2  # the dead letter
    assert ok_out.read_text().count("two-targets") == 1
    # the dead letter replayed, now succeeding: the event is done
    assert d.stop() == 0
    cfg["plugins"][1]["config"]["result"] = "ok"
    path = tmp_path / "d.json"
    path.write_text(json.dumps(cfg))
    assert "1 dead letter(s)" in dlq(path, "replay", "--all").stdout
    d = start(tmp_path, cfg)
    wait_until(lambda: done("two-targets"), what="the replayed event marked done")
    assert ok_out.read_text().count("two-targets") == 1  # 'ok' was not delivered again
    assert bad_out.read_text().count("two-targets") == 2
    db.close()
    assert d.stop() == 0


def test_spool_of_schema_version_1_is_upgraded(tmp_path):
    """A spool written by an earlier hookd (schema version 1: an index over
    every delivery, no crash counts, reusable delivery ids) is upgraded in
    place: what it held as pending resumes, its dead letter is still listed,
    and the tables and indexes are version 2's."""
    var = tmp_path / "var"
    var.mkdir()
    db = sqlite3.connect(var / "spool.db")
    db.executescript("""
        PRAGMA journal_mode = WAL;
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES('schema_version', '1');
        CREATE TABLE events(seq INTEGER PRIMARY KEY, source TEXT NOT NULL,
          event_id TEXT NOT NULL, type TEXT NOT NULL, order_key TEXT,
          content_type TEXT NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL,
          done_ms INTEGER, UNIQUE(source, event_id));
        CREATE TABLE deliveries(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL,
          instance TEXT NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL,
          next_ms INTEGER NOT NULL, last_error TEXT, updated_ms INTEGER NOT NULL);
        CREATE INDEX deliveries_state ON deliveries(state, seq);
        CREATE INDEX deliveries_seq ON deliveries(seq);
        CREATE INDEX events_done ON events(done_ms) WHERE done_ms IS NOT NULL;
    """)
    for seq, (eid, state) in enumerate([("old-done", 1), ("old-pending", 0), ("old-dead", 2)], 1):
        body = meeting_event(eid, f"m{seq}").decode()
        db.execute("INSERT INTO events VALUES(?, 'cirrus', ?, "
                   "'scheduling.smartscheduler.rescheduled', ?, 'application/json', 1, ?, ?)",
                   (seq, eid, f"m{seq}", body, 2 if state == 1 else None))
        db.execute("INSERT INTO deliveries VALUES(?, ?, 'audit', ?, 1, 0, ?, 1)",
                   (seq, seq, state, "boom" if state == 2 else None))
    db.commit()
    db.close()
    out = tmp_path / "events.jsonl"
    cfg = base_config(tmp_path,
                      [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}],
                      [{"events": ["**"], "to": ["audit"]}])
    d = start(tmp_path, cfg)
    wait_until(lambda: len(read_jsonl(out)) == 1, what="the pending delivery resumed")
    assert read_jsonl(out)[0]["event_id"] == "old-pending"
    p = dlq(tmp_path / "d.json", "list")
    assert p.returncode == 0 and "old-dead" in p.stdout and "old-pending" not in p.stdout
    assert d.stop() == 0
    db = sqlite3.connect(var / "spool.db")
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    cols = [r[1] for r in db.execute("PRAGMA table_info(deliveries)")]
    delivered_rows = db.execute("SELECT count(*) FROM deliveries WHERE state = 1").fetchone()[0]
    db.close()
    assert not {"deliveries_state", "deliveries_open", "events_done"} & names
    assert {"deliveries_lane", "deliveries_dead", "deliveries_seq"} <= names
    assert version == "2" and {"crashes", "parked", "okey"} <= set(cols)
    assert delivered_rows == 0  # version 2 deletes what was delivered
    assert "upgrading" in d.log() and "from schema version 1 to 2" in d.log()
    assert integrity(tmp_path) == "ok"
    assert len(read_jsonl(out)) == 1  # the done one was not delivered again
    # the dead letter of the old file can be replayed after the upgrade
    dead_id = next(l.split()[0] for l in p.stdout.splitlines() if "old-dead" in l)
    d = start(tmp_path, cfg)
    assert dlq(tmp_path / "d.json", "replay", dead_id).returncode == 0
    wait_until(lambda: len(read_jsonl(out)) == 2, what="the replayed dead letter")
    assert read_jsonl(out)[1]["event_id"] == "old-dead"
    assert d.stop() == 0


def test_reader_holding_a_snapshot_does_not_hold_up_ingest(daemon_factory, tmp_path):
    """A reader that keeps a read transaction open on spool.db (an sqlite3
    shell, a slow `hookd dlq`) pins the WAL: checkpoints cannot finish and the
    WAL grows, but no request waits for the reader; once it lets go the WAL
    is copied and starts over."""
    admin = free_port()
    d = daemon_factory(base_config(tmp_path, [], [], spool={"sync": "normal"},
                                   log={"level": "warn"}, admin_listen=f"127.0.0.1:{admin}"))
    assert send_event(d, meeting_event("before-reader", "m0")) == 200
    reader = sqlite3.connect(tmp_path / "var" / "spool.db", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    n = 6000

    statuses, slowest = post_many(d, "pinned", n, timeout=30)
    assert statuses == [200] * n
    # a checkpoint that waited for the reader would have held requests for seconds
    assert slowest < 2.0

    assert metric(admin, "hookd_spool_wal_pages") > 2000  # pinned: it could not start over
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1  # its snapshot
    reader.execute("COMMIT")
    reader.close()
    i = 0

    def wal_started_over():
        nonlocal i
        i += 1
        assert send_event(d, meeting_event(f"after-reader-{i}", "m1")) == 200
        return metric(admin, "hookd_spool_wal_pages") < 1000

    wait_until(wal_started_over, 20, interval=0.05, what="the WAL to start over")
    d.stop()
    assert integrity(tmp_path) == "ok"
