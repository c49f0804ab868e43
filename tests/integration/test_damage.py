"""A spool that is damaged, full or cannot be written: hookd says so (exit 3, /readyz 503 with
the reason), recovers when the fault is gone, and loses nothing it accepted."""
import os
import pathlib
import pwd
import shutil
import subprocess
import time

import pytest

from conftest import HOOKD, SLOW, free_port, http_request, wait_until
from engine import (Node, Sender, delivered, meeting_event, node_config, tp_entry)
from engine import no_leftover_nodes  # noqa: F401 (an autouse fixture)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, chown)")


def spool_with_backlog(tmp, n=3000):
    """A stopped node whose spool holds n pending deliveries (the
    destination is down)."""
    out = tmp / "t.txt"
    cfg = node_config(tmp, [tp_entry("crm", out, result="retry",
                                     delivery={"backoff_initial_ms": 600000,
                                               "backoff_max_ms": 600000})],
                      [{"events": ["**"], "to": ["crm"]}], spool={"sync": "off"})
    node = Node(tmp, cfg).start()
    s = Sender(node.port)
    for i in range(n):
        assert s.post(meeting_event(f"e{i}", f"m{i}")) == 200
    assert node.stop() == 0
    return node


def run_exit(node, timeout=30):
    p = subprocess.run([str(HOOKD), "run", "-c", str(node.path)], capture_output=True, text=True,
                       timeout=timeout * SLOW)
    return p.returncode, p.stdout + p.stderr


def test_damaged_spools_are_refused_with_exit_3(tmp_path):
    """Garbage pages in the middle of spool.db, a file of garbage, a
    truncated file: hookd exits 3 naming the file and what to do, and
    `hookd spool check` exits 3 on each and 0 on a healthy spool."""
    node = spool_with_backlog(tmp_path)
    db = tmp_path / "var" / "spool.db"
    check = node.cli("spool", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok" in check.stdout
    healthy = db.read_bytes()
    assert len(healthy) > 1 << 20

    def damaged(name, data):
        db.write_bytes(data)
        for side in ("-wal", "-shm"):
            pathlib.Path(str(db) + side).unlink(missing_ok=True)
        rc, text = run_exit(node)
        assert rc == 3, (name, rc, text)
        assert str(db) in text and "damaged" in text, (name, text)
        assert "hookd spool check" in text and "move it" in text, (name, text)
        check = node.cli("spool", "check")
        assert check.returncode == 3, (name, check.stdout, check.stderr)
        assert "damaged" in check.stdout, (name, check.stdout)

    mid = len(healthy) // 2 // 4096 * 4096
    damaged("64 KiB of garbage in the middle",
            healthy[:mid] + os.urandom(64 * 1024) + healthy[mid + 64 * 1024:])
    damaged("garbage", os.urandom(len(healthy)))
    damaged("truncated", healthy[:len(healthy) // 3])
    # the healthy file again: hookd starts and holds all 3,000
    db.write_bytes(healthy)
    assert node.cli("spool", "check").returncode == 0
    node.start()
    assert node.alive()
    assert "resuming 3000 unfinished deliveries" in node.log()
    assert node.stop() == 0


@ROOT_ONLY
def test_a_full_disk_gives_503_and_recovers(tmp_path):
    """data_dir on a small tmpfs, min_free_bytes 0: when the disk fills,
    events get 503 and /readyz says why; once space is freed hookd accepts
    again, and every event it answered 200 is delivered."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        out = tmp_path / "t.txt"
        admin = free_port()
        cfg = node_config(tmp_path, [tp_entry("t", out)], [{"events": ["**"], "to": ["t"]}],
                          data_dir=str(mnt / "var"), admin_listen=f"127.0.0.1:{admin}",
                          spool={"min_free_bytes": 0})
        node = Node(tmp_path, cfg).start()
        s = Sender(node.port)
        accepted = []
        for i in range(10):
            assert s.post(meeting_event(f"a{i}", f"m{i}")) == 200
            accepted.append(f"a{i}")
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        statuses = []
        for i in range(40):
            st = s.post(meeting_event(f"b{i}", f"m{i}", pad=4000))
            statuses.append(st)
            if st == 200:
                accepted.append(f"b{i}")
        assert 503 in statuses, statuses
        status, _, body = http_request(admin, "GET", "/readyz")
        assert status == 503 and b"full" in body, body
        filler.unlink()
        wait_until(lambda: http_request(admin, "GET", "/readyz")[0] == 200, timeout=10,
                   what="readiness after the disk has room again")
        for i in range(10):
            assert s.post(meeting_event(f"c{i}", f"m{i}")) == 200
            accepted.append(f"c{i}")
        wait_until(lambda: set(accepted) <= set(delivered(out)), timeout=15,
                   what="every accepted event delivered")
        assert node.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


@ROOT_ONLY
def test_a_spool_hookd_cannot_write_gives_503_until_fixed(tmp_path):
    """hookd runs as an unprivileged user and spool.db belongs to root:
    hookd starts, /healthz is 200, /readyz is 503 naming the file, the
    owner and "Permission denied", events get 503; once the file is handed
    to hookd's user it accepts and delivers without a restart."""
    nobody = pwd.getpwnam("nobody")
    base = pathlib.Path(f"/tmp/hookd-unwritable-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    try:
        var = base / "var"
        out = base / "out"
        out.mkdir()
        (out / "t.txt").touch()
        for p in (out, out / "t.txt"):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        admin = free_port()
        cfg = node_config(base, [tp_entry("t", out / "t.txt")], [{"events": ["**"], "to": ["t"]}],
                          admin_listen=f"127.0.0.1:{admin}")
        # made by root first (a root run, or a restored backup)
        node = Node(base, cfg).start()
        assert Sender(node.port).post(meeting_event("root-1", "m1")) == 200
        assert node.stop() == 0
        os.chmod(base, 0o755)
        os.chown(var, nobody.pw_uid, nobody.pw_gid)  # the directory is hookd's ...
        os.chmod(var / "spool.db", 0o644)            # ... the file still root's
        for p in base.glob("*.json"):
            os.chmod(p, 0o644)
        node.env["HOME"] = "/"
        node.proc = None
        env = dict(node.env)
        log = open(base / "nobody.log", "wb")
        node.logs.append(base / "nobody.log")
        node.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(node.path)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, user=nobody.pw_uid,
                                     group=nobody.pw_gid, extra_groups=[])
        node._log = log
        assert node.wait_listening() == "up", node.log()
        assert http_request(admin, "GET", "/healthz")[0] == 200
        status, _, body = http_request(admin, "GET", "/readyz")
        assert status == 503, body
        assert str(var / "spool.db").encode() in body and b"Permission denied" in body, body
        assert b"belongs to uid 0" in body, body
        s = Sender(node.port)
        assert s.post(meeting_event("x-1", "m1")) == 503
        os.chown(var / "spool.db", nobody.pw_uid, nobody.pw_gid)
        wait_until(lambda: http_request(admin, "GET", "/readyz")[0] == 200, timeout=10,
                   what="readiness once the file is hookd's")
        assert s.post(meeting_event("x-2", "m1")) == 200
        wait_until(lambda: "x-2" in delivered(out / "t.txt"), timeout=10)
        assert "root-1" in delivered(out / "t.txt")
        assert node.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
