"""exec plugin: real scripts run by the real daemon; exit 0 / 75 / 1, a hang, env and stdin."""
import json
import os
import pathlib
import stat
import time

import pytest

from conftest import (README_FIRST_JSONC, check_readme_config, cirrus_source, hookd_check, payload,
                      send_event, wait_until)

# Short backoff so that retries happen within a test's patience.
FAST_DELIVERY = {"concurrency": 4, "max_attempts": 5, "backoff_initial_ms": 100,
                 "backoff_max_ms": 400, "timeout_ms": 30000}


def event(kind="scheduled", event_id=None, meeting_id=None):
    """A Cirrus Insight meeting event, optionally with its own ids."""
    doc = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    if event_id:
        doc["eventId"] = event_id
    if meeting_id:
        doc["data"]["id"] = meeting_id
    return json.dumps(doc, indent=1).encode()


def script(tmp, name, body):
    """Writes an executable /bin/sh script and returns its path."""
    p = pathlib.Path(tmp) / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(p)


def exec_config(command, **over):
    cfg = {"command": command}
    cfg.update(over)
    return {
        "sources": [cirrus_source()],
        "plugins": [{"name": "run", "module": "exec", "config": cfg}],
        "routes": [{"source": "cirrus", "events": ["**"], "to": ["run"]}],
        "delivery": dict(FAST_DELIVERY),
    }


def lines(path):
    p = pathlib.Path(path)
    return p.read_text().split() if p.exists() else []


def process_gone(pid):
    """True when pid no longer runs: absent, or a zombie nobody reaped yet
    (an orphan's parent in a container may be a pid 1 that does not reap)."""
    try:
        st = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return st.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_exit_zero_gets_body_and_environment(daemon_factory, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cmd = script(tmp_path, "ok.sh", f"""
cat > {out}/stdin
env > {out}/env
pwd > {out}/pwd
echo "hello from stdout"
echo "hello from stderr" >&2
exit 0
""")
    cwd = tmp_path / "work"
    cwd.mkdir()
    d = daemon_factory(exec_config([cmd], cwd=str(cwd), timeout_ms=5000,
                                   env={"MEETING": "{{data.meetingInfo.meetingName}}",
                                        "OWNER": "{{data.meetingOwner.username}}",
                                        "QUOTED": "a \"b\" {{data.missing|default:c}}"}))
    body = event()
    assert send_event(d, body) == 200
    wait_until(lambda: (out / "env").exists() and (out / "pwd").exists(), what="the script to run")
    assert (out / "stdin").read_bytes() == body  # the raw body, byte for byte
    env = dict(l.split("=", 1) for l in (out / "env").read_text().splitlines() if "=" in l)
    assert env["HOOKD_EVENT_ID"] == "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912"
    assert env["HOOKD_EVENT_TYPE"] == "scheduling.smartscheduler.scheduled"
    assert env["HOOKD_SOURCE"] == "cirrus"
    assert env["HOOKD_ATTEMPT"] == "1"
    assert env["MEETING"] == "Intro call: Prospect Inc"
    assert env["OWNER"] == "rep.one@example.com"
    assert env["QUOTED"] == 'a "b" c'
    assert "PATH" in env  # inherited environment
    assert (out / "pwd").read_text().strip() == str(cwd)
    d.wait_for_log(r"hello from stdout")
    d.wait_for_log(r"hello from stderr")
    time.sleep(0.5)
    assert lines(out / "pwd") == [str(cwd)], "an OK delivery must not run again"


def test_exit_75_is_retried_until_it_succeeds(daemon_factory, tmp_path):
    attempts = tmp_path / "attempts"
    cmd = script(tmp_path, "tempfail.sh", f"""
echo "$HOOKD_ATTEMPT" >> {attempts}
cat > /dev/null
[ "$HOOKD_ATTEMPT" -ge 3 ] && exit 0
echo "not yet" >&2
exit 75
""")
    d = daemon_factory(exec_config([cmd]))
    assert send_event(d, event()) == 200
    wait_until(lambda: lines(attempts) == ["1", "2", "3"], timeout=15,
               what="three attempts")
    time.sleep(1.0)  # longer than the backoff: a fourth attempt would show now
    assert lines(attempts) == ["1", "2", "3"]
    d.wait_for_log(r"exit status 75")


def test_exit_1_fails_after_one_attempt(daemon_factory, tmp_path):
    attempts = tmp_path / "attempts"
    cmd = script(tmp_path, "fail.sh", f"""
echo "$HOOKD_ATTEMPT" >> {attempts}
echo "bad input, giving up" >&2
exit 1
""")
    d = daemon_factory(exec_config([cmd]))
    assert send_event(d, event()) == 200
    wait_until(lambda: lines(attempts) == ["1"], what="the attempt")
    d.wait_for_log(r"exit status 1: bad input, giving up")
    time.sleep(1.5)  # several backoff periods: a retry would have happened
    assert lines(attempts) == ["1"]


def test_hanging_command_is_killed_and_retried(daemon_factory, tmp_path):
    pids = tmp_path / "pids"
    kids = tmp_path / "kids"
    # Attempt 1 hangs with a child of its own in the background; attempt 2
    # succeeds. Both processes of attempt 1 must be gone afterwards.
    cmd = script(tmp_path, "hang.sh", f"""
echo $$ >> {pids}
cat > /dev/null
if [ "$HOOKD_ATTEMPT" -eq 1 ]; then
  sleep 300 &
  echo $! >> {kids}
  sleep 300
fi
exit 0
""")
    d = daemon_factory(exec_config([cmd], timeout_ms=700))
    started = time.monotonic()
    assert send_event(d, event()) == 200
    wait_until(lambda: len(lines(pids)) == 2, timeout=15, what="the retry after the timeout")
    assert time.monotonic() - started >= 0.7
    d.wait_for_log(r"timed out after 700 ms")
    first, kid = lines(pids)[0], lines(kids)[0]
    wait_until(lambda: process_gone(int(first)) and process_gone(int(kid)), timeout=5,
               what="the hung script and its child to be killed")
    time.sleep(0.5)
    assert len(lines(pids)) == 2


def test_concurrent_deliveries_each_get_their_own_input(daemon_factory, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cmd = script(tmp_path, "slow.sh", f"""
cat > {out}/$HOOKD_EVENT_ID.tmp
sleep 0.5
mv {out}/$HOOKD_EVENT_ID.tmp {out}/$HOOKD_EVENT_ID.json
""")
    d = daemon_factory(exec_config([cmd]))
    bodies = {}
    started = time.monotonic()
    for i in range(8):
        eid = f"evt-{i:04d}"
        bodies[eid] = event(event_id=eid, meeting_id=f"meeting-{i}")
        assert send_event(d, bodies[eid]) == 200
    wait_until(lambda: len(list(out.glob("*.json"))) == 8, timeout=20, what="eight runs")
    # Eight half-second runs, four at a time (distinct order keys): well
    # under the four seconds they would take one after another.
    assert time.monotonic() - started < 3.5
    for eid, body in bodies.items():
        assert (out / f"{eid}.json").read_bytes() == body


def test_check_rejects_bad_config(tmp_path):
    base = exec_config(["/bin/true"])
    rc, output = hookd_check(base, tmp_path)
    assert rc == 0, output
    for i, (cfg, needle) in enumerate([
        ({"command": ["/bin/true"], "comand": ["x"]}, "comand"),
        ({"command": []}, "command"),
        ({"command": ["/nonexistent/program"]}, "nonexistent"),
        ({"command": ["/bin/true"], "timeout_ms": 0}, "timeout_ms"),
        ({"command": ["/bin/true"], "cwd": "/nonexistent-dir"}, "cwd"),
        ({"command": ["/bin/true"], "env": {"HOOKD_ATTEMPT": "1"}}, "HOOKD_ATTEMPT"),
        ({"command": ["/bin/true"], "env": {"BAD-NAME": "1"}}, "BAD-NAME"),
    ]):
        c = exec_config(**cfg)
        sub = tmp_path / f"c{i}"
        sub.mkdir()
        rc, output = hookd_check(c, sub)
        assert rc == 2, f"{cfg} was accepted:\n{output}"
        assert needle in output, output


def test_readme_config_is_accepted(tmp_path):
    check_readme_config("exec", tmp_path, block_re=README_FIRST_JSONC,
                        env={"ALERT_TOKEN": "t0ken", "CIRRUS_SIGNING_KEY": "k"})
