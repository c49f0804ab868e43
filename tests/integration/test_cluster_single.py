"""The PostgreSQL spool on one node: config keys, the URL kept secret, an unreachable or newer
database refused clearly, spool check, leases taken back at a restart, crashes counted across
restarts, hookd dlq purge."""
import http.client
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import (HOOKD, PLUGIN_DIR, SLOW, cirrus_source, free_port, hookd_check,
                      http_request, read_jsonl, sign, wait_until)
from pgcluster import PASSWORD
from test_cluster import Node, meeting_event


def pg_config(extra_spool=None, plugins=None, routes=None):
    spool = {"backend": "postgres", "url": "${HOOKD_PG_URL}"}
    spool.update(extra_spool or {})
    return {"sources": [cirrus_source()], "plugins": plugins or [], "routes": routes or [],
            "spool": spool}


def post(node, body):
    return http_request(node.port, "POST", "/webhooks/cirrus", body,
                        {"X-Signature": sign(body), "Content-Type": "application/json"})[0]


def test_check_shows_the_url_with_its_password_masked(tmp_path):
    url = f"postgresql://hookd:{PASSWORD}@db.example:5432/hookd?sslmode=require"
    rc, out = hookd_check(pg_config({"lease_ms": 5000}), tmp_path, env={"HOOKD_PG_URL": url})
    assert rc == 0, out
    assert "spool: PostgreSQL at postgresql://hookd:***@db.example:5432/hookd?sslmode=require" in out
    assert "lease 5000 ms" in out and PASSWORD not in out
    kv = f"host=db.example user=hookd password={PASSWORD} dbname=hookd"
    rc, out = hookd_check(pg_config(), tmp_path, env={"HOOKD_PG_URL": kv})
    assert rc == 0 and "password=***" in out and PASSWORD not in out, out


@pytest.mark.parametrize("spool,env_url,message", [
    ({"backend": "postgres", "url": None}, None, 'spool: "backend": "postgres" needs "url"'),
    ({"url": "${HOOKD_PG_URL}"}, "postgresql://h/d", 'spool.url: applies only to "backend": "postgres"'),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}", "sync": "off"}, "postgresql://h/d",
     "spool.sync: applies only to the sqlite backend"),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}", "min_free_bytes": 1}, "postgresql://h/d",
     "spool.min_free_bytes: applies only to the sqlite backend"),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}", "lease_ms": 10}, "postgresql://h/d",
     "spool.lease_ms: expected an integer from 1000 to 86400000"),
    ({"backend": "mysql"}, None, "spool.backend: expected one of sqlite, postgres"),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}"},
     f"postgresql://hookd:{PASSWORD}@h/d?bogus=1",
     'spool.url: not a PostgreSQL connection URL'),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}"}, f"host=h password={PASSWORD} junk",
     'spool.url: not a PostgreSQL connection URL'),
    ({"backend": "postgres", "url": "${HOOKD_PG_URL}"}, None, "HOOKD_PG_URL"),
])
def test_spool_backend_config_errors(tmp_path, spool, env_url, message):
    cfg = pg_config()
    cfg["spool"] = {k: v for k, v in spool.items() if v is not None}
    env = {"HOOKD_PG_URL": env_url} if env_url else {}
    e = dict(os.environ)
    e.pop("HOOKD_PG_URL", None)
    e.update(env)
    path = tmp_path / "hookd.json"
    cfg.update({"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "var"),
                "plugin_dirs": [str(PLUGIN_DIR)]})
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(HOOKD), "check", "-c", str(path)], capture_output=True, text=True,
                       env=e, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert PASSWORD not in p.stdout + p.stderr


def run_once(tmp_path, url, timeout=20):
    """hookd run that is expected to exit by itself; (code, output)."""
    cfg = pg_config()
    cfg.update({"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "var"),
                "plugin_dirs": [str(PLUGIN_DIR)]})
    path = tmp_path / "hookd.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(HOOKD), "run", "-c", str(path)], capture_output=True, text=True,
                       env=dict(os.environ, HOOKD_PG_URL=url), timeout=timeout * SLOW)
    return p.returncode, p.stdout + p.stderr


def test_unreachable_database_at_start_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    rc, out = run_once(tmp_path, f"postgresql://hookd:{PASSWORD}@127.0.0.1:{port}/hookd")
    assert rc == 1, out
    assert f"cannot connect to PostgreSQL at postgresql://hookd:***@127.0.0.1:{port}/hookd" in out
    assert "Connection refused" in out and PASSWORD not in out
    assert time.monotonic() - t0 < 10


def test_wrong_password_is_a_clear_error_without_the_password(tmp_path, pg):
    url = pg.url.replace(PASSWORD, "not-the-password")
    rc, out = run_once(tmp_path, url)
    assert rc == 1 and "password authentication failed" in out, out
    assert "not-the-password" not in out


def test_newer_schema_is_refused(tmp_path, pg, daemon_factory):
    d = daemon_factory(pg_config(), env={"HOOKD_PG_URL": pg.url})
    assert d.stop() == 0
    assert pg.scalar("SELECT value FROM hookd_meta WHERE key = 'schema_version'") == "3"
    pg.sql("UPDATE hookd_meta SET value = '7' WHERE key = 'schema_version'")
    rc, out = run_once(tmp_path, pg.url)
    assert rc == 3, out
    assert "schema version 7 and this hookd knows versions up to 3: refusing" in out
    assert pg.scalar("SELECT value FROM hookd_meta WHERE key = 'schema_version'") == "7"


# What version 2 lacked (the circuit and hold shared by the nodes): undone by
# hand to make one.
TO_V2 = """
ALTER TABLE hookd_instances DROP COLUMN hold_until;
UPDATE hookd_meta SET value = '2' WHERE key = 'schema_version';
"""

# What version 1 (issue 17's first release) lacked: undone by hand to make one.
TO_V1 = TO_V2 + """
ALTER TABLE hookd_events DROP COLUMN headers;
ALTER TABLE hookd_deliveries DROP COLUMN tries, DROP COLUMN replay;
DROP TABLE hookd_attempts, hookd_backfills, hookd_backfill_events;
UPDATE hookd_meta SET value = '1' WHERE key = 'schema_version';
"""


def test_schema_version_1_is_upgraded_by_a_starting_node(tmp_path, pg):
    """A version 1 spool (before pause, attempts, back-fills and search) is
    upgraded by the first node of this version that starts on it: its
    pending delivery goes out, and the new tables work."""
    out = tmp_path / "a.jsonl"
    plugins = [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["audit"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes)
    assert node.cli("pause", "audit")[0] == 0
    assert post(node, meeting_event("v1-pending", "m", "scheduled")) == 200
    node.stop()
    pg.sql("DELETE FROM hookd_instances;" + TO_V1)
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state = 0") == "1"
    rc, text = node.cli("dlq", "list")  # a CLI does not upgrade: it says who does
    assert rc == 1 and "schema version 1; this hookd reads version 3 (an older spool is " \
        "upgraded when a hookd of this version starts on it)" in text, text
    rc, text = node.cli("spool", "check")
    assert rc == 1 and "an older spool is upgraded" in text, text  # not "damaged" (3)
    node.start()
    try:
        wait_until(lambda: len(read_jsonl(out)) == 1, 10, what="the pending delivery")
        assert "upgraded from schema version 1 to 2" in node.log()
        assert "upgraded from schema version 2 to 3" in node.log()
        assert pg.scalar("SELECT value FROM hookd_meta WHERE key = 'schema_version'") == "3"
        status, _, body = http_request(node.admin, "GET", "/event?source=cirrus&id=v1-pending")
        assert status == 200 and b'data-outcome="delivered"' in body, body
    finally:
        node.stop()


def test_schema_version_2_is_upgraded_by_a_starting_node(tmp_path, pg):
    """A version 2 spool (pause shared, circuit and hold per node) is
    upgraded by the first node of this version that starts on it: a pause
    stored before stays, the pending delivery goes out on resume, and a
    circuit's hold is stored in the new column."""
    out = tmp_path / "a.jsonl"
    plugins = [{"name": "audit", "module": "file_sink", "config": {"path": str(out)}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["audit"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes)
    assert node.cli("pause", "audit")[0] == 0
    assert post(node, meeting_event("v2-pending", "m", "scheduled")) == 200
    node.stop()
    pg.sql(TO_V2)
    rc, text = node.cli("dlq", "list")
    assert rc == 1 and "schema version 2; this hookd reads version 3 (an older spool is " \
        "upgraded when a hookd of this version starts on it)" in text, text
    node.start()
    try:
        assert "upgraded from schema version 2 to 3" in node.log()
        assert "upgraded from schema version 1 to 2" not in node.log()
        assert pg.scalar("SELECT value FROM hookd_meta WHERE key = 'schema_version'") == "3"
        assert pg.scalar("SELECT paused FROM hookd_instances WHERE instance = 'audit'") == "t"
        assert pg.scalar("SELECT hold_until FROM hookd_instances WHERE instance = 'audit'") == "0"
        assert node.cli("resume", "audit")[0] == 0
        wait_until(lambda: len(read_jsonl(out)) == 1, 10, what="the pending delivery")
    finally:
        node.stop()


def test_spool_check_healthy_then_damaged(tmp_path, pg):
    plugins = [{"name": "audit", "module": "file_sink", "config": {"path": str(tmp_path / "a.jsonl")}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["audit"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes)
    for i in range(5):
        assert post(node, meeting_event(f"chk-{i}", "m", "scheduled")) == 200
    wait_until(lambda: len(read_jsonl(tmp_path / "a.jsonl")) == 5, 10)
    rc, out = node.cli("spool", "check")
    assert rc == 0 and "healthy" in out and "events: 5" in out, out
    assert "postgresql://hookd:***@" in out and PASSWORD not in out
    node.stop()
    # A delivery whose event was deleted by hand: damaged, exit 3.
    pg.sql("INSERT INTO hookd_deliveries(seq, instance, next_ms, updated_ms) VALUES (999999, 'audit', 0, 0)")
    rc, out = node.cli("spool", "check")
    assert rc == 3, out
    assert "deliveries whose event is missing: 1  <- damaged" in out
    pg.sql("DELETE FROM hookd_deliveries WHERE seq = 999999")
    # A key whose pending delivery lost its head (changed by hand): nothing
    # of it would run again. Check says so; a starting node repairs it.
    pg.sql("UPDATE hookd_deliveries SET state = 0, head = false, lease_until = 0 WHERE id = "
           "(SELECT min(d.id) FROM hookd_deliveries d JOIN hookd_events e ON e.seq = d.seq "
           "WHERE e.event_id = 'chk-0')")
    pg.sql("UPDATE hookd_events SET done_ms = NULL WHERE event_id = 'chk-0'")
    rc, out = node.cli("spool", "check")
    assert rc == 3 and "order keys whose deliveries wait for no head: 1  <- damaged" in out, out
    node.start()
    wait_until(lambda: len(read_jsonl(tmp_path / "a.jsonl")) == 6, 10)
    assert "1 order key(s) had pending deliveries and none was their head" in node.log()
    node.stop()
    rc, out = node.cli("spool", "check")
    assert rc == 0 and "healthy" in out, out


def test_restart_takes_back_its_own_leases_at_once(tmp_path, pg):
    """A node killed with deliveries running gets them back when it starts
    again (its data_dir says it is the same node), without waiting for the
    lease (30 s here); what was running counts a crash."""
    out = tmp_path / "sink.txt"
    plugins = [{"name": "sink", "module": "test_plugin",
                "config": {"out": str(out), "sleep_ms": 2000, "sleep_attempts": 1}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["sink"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes, lease_ms=30000)
    for i in range(3):
        assert post(node, meeting_event(f"tb-{i}", f"m{i}", "scheduled")) == 200
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE started") == "3", 10)
    node.kill9()
    t0 = time.monotonic()
    node.start()
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, 15)
    assert time.monotonic() - t0 < 10, "waited for the lease instead of taking it back"
    lines = out.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["tb-0", "tb-1", "tb-2"]
    assert "took back 3 delivery lease(s) of this node's previous run" in node.log()
    assert "was running when its node stopped (crash 1 of 3)" in node.log()
    node.stop()


def test_crashes_across_restarts_make_a_dead_letter(tmp_path, pg):
    """A delivery that kills hookd each time it runs is counted at every
    restart (its run slot says it was running) and dead-lettered at
    max_crashes."""
    out = tmp_path / "sink.txt"
    plugins = [{"name": "sink", "module": "test_plugin",
                "config": {"out": str(out), "poison": ["boom"], "poison_action": "abort"}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["sink"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes, delivery={"max_crashes": 2})
    body = meeting_event("boom", "m", "scheduled")
    try:
        post(node, body)  # the delivery may abort hookd before the answer leaves
    except (OSError, http.client.HTTPException):
        pass
    assert pg.scalar("SELECT count(*) FROM hookd_events WHERE event_id = 'boom'") == "1"
    for run in range(2):  # crash 1 of 2 runs it again: hookd dies once more
        assert node.proc.wait(20 * SLOW) == -signal.SIGABRT, node.log()
        node._log.close()
        if run == 0:
            node.runs += 1
            node.log_path = node.dir / f"hookd-{node.runs}.log"
            node._log = open(node.log_path, "wb")
            node.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(node.cfg_path)],
                                         env=node.env, stdout=node._log, stderr=subprocess.STDOUT)
    node.start()  # crash 2 of 2: a dead letter, hookd stays up
    wait_until(lambda: "dead letter" in node.log(), 10)
    assert node.proc.poll() is None, node.log()
    assert "was running when its node stopped (crash 1 of 2)" in node.log()
    rc, listed = node.cli("dlq", "list")
    assert rc == 0 and "boom" in listed and "max_crashes" in listed, listed
    dl = listed.split()[0]
    rc, purged = node.cli("dlq", "purge", dl)
    assert rc == 0 and f"dead letter {dl} purged" in purged
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries WHERE state = 2") == "0"
    assert pg.scalar("SELECT count(*) FROM hookd_events WHERE event_id = 'boom'") == "0"
    assert out.read_text().count("POISON boom") == 2
    node.stop()


def test_readme_cluster_spool_block_passes_check(tmp_path):
    """The README's PostgreSQL spool block, as a user copies it."""
    import re
    from conftest import ROOT, strip_jsonc
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Several nodes: the PostgreSQL spool", 1)[1]
    block = re.search(r"```jsonc\n(.*?)```", section, re.S).group(1)
    spool = json.loads("{" + strip_jsonc(block) + "}")["spool"]
    cfg = pg_config()
    cfg["spool"] = spool
    rc, out = hookd_check(cfg, tmp_path, env={"HOOKD_PG_URL": f"postgresql://hookd:{PASSWORD}@db/h"})
    assert rc == 0, out
    assert "postgresql://hookd:***@db/h" in out


def test_retention_prunes_finished_events(tmp_path, pg):
    """Finished events leave the database after spool.retention; one with a
    dead letter stays."""
    audit = tmp_path / "a.jsonl"
    plugins = [{"name": "audit", "module": "file_sink", "config": {"path": str(audit)}},
               {"name": "never", "module": "test_plugin", "config": {"result": "fail"}}]
    routes = [{"source": "cirrus", "events": ["scheduling.smartscheduler.scheduled"], "to": ["audit"]},
              {"source": "cirrus", "events": ["scheduling.smartscheduler.canceled"], "to": ["never"]}]
    node = Node(tmp_path, "n", pg.url, plugins, routes)
    cfg = json.loads(node.cfg_path.read_text())
    node.stop()
    cfg["spool"]["retention"] = "2s"
    node.cfg_path.write_text(json.dumps(cfg))
    node.start()
    for i in range(5):
        assert post(node, meeting_event(f"ret-{i}", f"m{i}", "scheduled")) == 200
    assert post(node, meeting_event("ret-dead", "md", "canceled")) == 200
    wait_until(lambda: len(read_jsonl(audit)) == 5, 10)
    assert pg.scalar("SELECT count(*) FROM hookd_events") == "6"
    # A back-fill's record goes after retention too (it finishes at once: nothing selected).
    assert node.cli("replay", "--since", "1s", "--type", "no.such.**", "--to", "audit")[0] == 0
    wait_until(lambda: pg.scalar("SELECT (SELECT count(*) FROM hookd_attempts) + (SELECT "
                                 "count(*) FROM hookd_deliveries WHERE call_outcome IS NOT "
                                 "NULL)") == "6", 5, what="each call kept")
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_events") == "1", 15 * SLOW,
               what="finished events pruned")
    assert pg.scalar("SELECT event_id FROM hookd_events") == "ret-dead"
    assert pg.scalar("SELECT count(*) FROM hookd_deliveries") == "1"
    # Their attempt rows went with them; the dead letter's stays.
    assert pg.sql("SELECT e.event_id, a.outcome FROM hookd_attempts a JOIN hookd_events e "
                  "ON e.seq = a.seq") == [["ret-dead", "dead"]]
    assert pg.scalar("SELECT count(*) FROM hookd_attempts") == "1"
    wait_until(lambda: pg.scalar("SELECT count(*) FROM hookd_backfills") == "0", 15 * SLOW,
               what="the finished back-fill pruned")
    node.stop()


def maps_libpq(pid):
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rsplit("/", 1)[-1].startswith("libpq.so") for line in f.read().splitlines())


def test_libpq_is_mapped_only_by_a_postgres_node(tmp_path, pg, daemon_factory):
    """libpq pulls in about twenty libraries (Kerberos, LDAP, SASL, GnuTLS...): a hookd on the
    default SQLite spool never maps it; one on the PostgreSQL spool does, and works."""
    out = tmp_path / "sink.txt"
    plugins = [{"name": "sink", "module": "test_plugin", "config": {"out": str(out)}}]
    routes = [{"source": "cirrus", "events": ["**"], "to": ["sink"]}]
    sq = daemon_factory({"sources": [cirrus_source()], "plugins": plugins, "routes": routes})
    assert post(sq, meeting_event("lp-0", "m0", "scheduled")) == 200
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 1)
    assert not maps_libpq(sq.proc.pid)
    node = Node(tmp_path, "n", pg.url, plugins, routes)
    assert post(node, meeting_event("lp-1", "m1", "scheduled")) == 200
    wait_until(lambda: len(out.read_text().splitlines()) == 2)
    assert maps_libpq(node.proc.pid)
    node.stop()
