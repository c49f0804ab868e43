"""The delivery engine under plugin faults: a deliver() that crashes hookd again and again, calls
that hang, a reload that blocks, and systemd's readiness and watchdog."""
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time

from conftest import HOOKD, SLOW, free_port, http_request, wait_until
from engine import (Node, Sender, check_key_order, delivered, lives, meeting_event, node_config,
                    plugin_lines, tp_entry)
from engine import no_leftover_nodes  # noqa: F401 (an autouse fixture)


def test_poison_segfault_ends_as_a_dead_letter_and_hookd_stays_up(tmp_path):
    """A plugin segfaults on one event. Restarted like systemd would, hookd
    starts at most max_crashes + 1 times, then stays up with that delivery a
    dead letter; every other event reaches both instances, per key in accept
    order, and the healthy instance gets each event once per process life."""
    p_out, h_out = tmp_path / "poisoned.txt", tmp_path / "healthy.txt"
    cfg = node_config(tmp_path,
                      [tp_entry("poisoned", p_out, poison=["poison-1"], mark_init=True,
                                delivery={"max_crashes": 3, "concurrency": 2}),
                       tp_entry("healthy", h_out, mark_init=True)],
                      [{"events": ["**"], "to": ["poisoned", "healthy"]}])
    # Under AddressSanitizer its own SIGSEGV handler would report and exit 1
    # in place of hookd's (which names the delivery and dies of the signal).
    asan = os.environ.get("ASAN_OPTIONS", "")
    node = Node(tmp_path, cfg,
                env={"ASAN_OPTIONS": f"{asan}:handle_segv=0" if asan else "handle_segv=0"}).start()
    order, events = {}, []
    for k in range(6):
        for n in range(4):
            eid = "poison-1" if (k, n) == (2, 1) else f"m{k}-{n}"
            order[eid] = (f"m{k}", n)
            events.append((eid, meeting_event(eid, f"m{k}")))
    sender = Sender(node.port)
    deaths = []
    i = 0
    deadline = time.monotonic() + 90 * SLOW
    # Send in order; a request the dying hookd did not answer is sent again
    # after the restart, as the sender would.
    while time.monotonic() < deadline:
        if not node.alive():
            deaths.append(node.proc.wait())
            node._log.close()
            node.start()
            continue
        if i < len(events):
            if sender.post(events[i][1]) == 200:
                i += 1
            continue
        if set(delivered(p_out)) >= set(order) - {"poison-1"} and \
                set(delivered(h_out)) >= set(order) and node.alive():
            break
        time.sleep(0.05)
    assert i == len(events), node.log()
    time.sleep(1)  # it stays up with nothing left to run
    assert node.alive(), node.log()
    assert deaths == [-signal.SIGSEGV] * 3, (deaths, node.log())
    assert node.starts == 4  # max_crashes + 1
    log = node.log()
    assert "fatal signal SIGSEGV in deliver()" in log and "instance=poisoned" in log
    assert "event_id=poison-1" in log
    dlq = node.cli("dlq", "list")
    assert dlq.returncode == 0
    dead = [l for l in dlq.stdout.splitlines() if "poison-1" in l]
    assert len(dead) == 1 and "poisoned" in dead[0], dlq.stdout
    assert "hookd stopped 3 time(s) while this delivery was running in plugin instance " \
           "'poisoned'" in dead[0]
    # the poison ran three times, each a counted attempt
    assert [l for l in plugin_lines(p_out) if l[0] == "POISON"] == \
        [("POISON", "poison-1", "1"), ("POISON", "poison-1", "2"), ("POISON", "poison-1", "3")]
    for out, want in ((p_out, set(order) - {"poison-1"}), (h_out, set(order))):
        assert set(delivered(out)) == want
        for life in lives(out):
            assert len(life) == len(set(life)), f"{out.name}: twice in one life: {life}"
            check_key_order(life, order)
    assert node.stop() == 0


def test_two_hung_calls_cost_an_attempt_each_not_the_instance(tmp_path):
    """concurrency 2 and two deliver() calls that never return: both are
    written off after timeout_ms, replacement workers deliver twenty events
    of other keys within seconds, and the hung deliveries succeed on their
    second attempt."""
    out = tmp_path / "t.txt"
    admin = free_port()
    cfg = node_config(tmp_path,
                      [tp_entry("slow", out, poison=["hang-1", "hang-2"], poison_action="hang",
                                poison_attempts=1,
                                delivery={"concurrency": 2, "timeout_ms": 400,
                                          "backoff_initial_ms": 3000, "backoff_max_ms": 3000})],
                      [{"events": ["**"], "to": ["slow"]}], admin_listen=f"127.0.0.1:{admin}")
    node = Node(tmp_path, cfg).start()
    s = Sender(node.port)
    assert s.post(meeting_event("hang-1", "A")) == 200
    assert s.post(meeting_event("hang-2", "B")) == 200
    wait_until(lambda: len([l for l in plugin_lines(out) if l[0] == "POISON"]) == 2,
               what="both calls to hang")
    t0 = time.monotonic()
    for n in range(20):
        assert s.post(meeting_event(f"e{n}", f"C{n}")) == 200
    wait_until(lambda: len(delivered(out)) == 20, timeout=8 * SLOW, what="twenty deliveries")
    assert time.monotonic() - t0 < 5 * SLOW
    # the hung ones: attempt 1 written off (a failed attempt), attempt 2 ok
    wait_until(lambda: {"hang-1", "hang-2"} <= set(delivered(out)), timeout=10 * SLOW)
    ok = {l[0]: l[2] for l in plugin_lines(out) if len(l) == 5 and l[4] == "ok"}
    assert ok["hang-1"] == "2" and ok["hang-2"] == "2"
    metrics = http_request(admin, "GET", "/metrics")[2].decode()
    assert 'hookd_delivery_written_off_total{instance="slow"} 2' in metrics
    assert 'hookd_delivery_stuck_calls{instance="slow"} 2' in metrics
    status, _, body = http_request(admin, "GET", "/readyz")
    assert status == 200, body
    log = node.log()
    assert log.count("counts as failed and the call is written off") == 2
    assert node.stop() == 0


def test_a_reload_blocked_on_a_fifo_blocks_nothing(tmp_path):
    """A SIGHUP whose config reads ${file:} from a FIFO nobody writes: the
    reload waits on its own thread, webhooks and /healthz are answered, the
    reload is abandoned after reload_timeout_ms, and SIGTERM stops hookd."""
    out = tmp_path / "t.txt"
    secret_file = tmp_path / "secret"
    secret_file.write_text("test-secret\n")
    admin = free_port()
    cfg = node_config(tmp_path, [tp_entry("t", out)], [{"events": ["**"], "to": ["t"]}],
                      admin_listen=f"127.0.0.1:{admin}", reload_timeout_ms=1500)
    cfg["sources"][0]["verify"]["secrets"] = ["${file:" + str(secret_file) + "}"]
    node = Node(tmp_path, cfg).start()
    s = Sender(node.port)
    assert s.post(meeting_event("before", "K")) == 200
    secret_file.unlink()
    os.mkfifo(secret_file)
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloading" in node.log())
    t0 = time.monotonic()
    for n in range(5):
        assert s.post(meeting_event(f"during-{n}", "K")) == 200
        assert http_request(admin, "GET", "/healthz")[0] == 200
    assert time.monotonic() - t0 < 3 * SLOW
    wait_until(lambda: "reload abandoned after reload_timeout_ms" in node.log(), timeout=5 * SLOW)
    assert "reloaded " not in node.log()
    # a second SIGHUP while the first thread still hangs: abandoned as well,
    # and POST /reload reports why
    status, _, body = http_request(admin, "POST", "/reload", headers={"X-Hookd-Admin": "1"})
    assert status == 503 and b"abandoned" in body
    wait_until(lambda: len(delivered(out)) == 6)
    t0 = time.monotonic()
    assert node.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5 * SLOW
    assert "stopped with a reload still running" in node.log()


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, tmp):
        self.path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.got = []  # (monotonic time, message)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.got.append((time.monotonic(), msg))

    def times(self, msg):
        return [t for t, m in self.got if msg in m.split("\n")]

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_systemd_ready_watchdog_and_a_wedged_writer(tmp_path):
    """READY=1 once listening, WATCHDOG=1 at half the interval, none while
    the spool writer is stuck behind another writer's lock, pets again once
    it is free, STOPPING=1 at SIGTERM."""
    notify = NotifySocket(tmp_path)
    out = tmp_path / "t.txt"
    cfg = node_config(tmp_path, [tp_entry("t", out)], [{"events": ["**"], "to": ["t"]}])
    node = Node(tmp_path, cfg, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    try:
        node.start()
        wait_until(lambda: notify.times("READY=1"), what="READY=1")
        wait_until(lambda: len(notify.times("WATCHDOG=1")) >= 4, timeout=5, what="pets")
        pets = notify.times("WATCHDOG=1")
        gaps = [b - a for a, b in zip(pets, pets[1:])]
        assert max(gaps) < 0.9, gaps  # every 500 ms
        # Another process takes the spool's write lock: the writer waits in
        # its busy handler (5 s), and the pets stop.
        db = sqlite3.connect(str(tmp_path / "var" / "spool.db"), isolation_level=None,
                             timeout=10)
        db.execute("BEGIN IMMEDIATE")
        s = Sender(node.port)
        sent = threading.Thread(target=lambda: s.post(meeting_event("w1", "K"), timeout=30))
        t_block = time.monotonic()
        sent.start()
        time.sleep(3)
        quiet = [t for t in notify.times("WATCHDOG=1") if t > t_block + 1.6]
        assert not quiet, "petted while the writer was stuck"
        assert "not petting the systemd watchdog" in node.log()
        db.execute("ROLLBACK")
        db.close()
        sent.join(30)
        t_free = time.monotonic()
        wait_until(lambda: [t for t in notify.times("WATCHDOG=1") if t > t_free], timeout=8,
                   what="pets after the writer is free")
        assert node.stop() == 0
        wait_until(lambda: notify.times("STOPPING=1"), what="STOPPING=1")
    finally:
        if node.alive():
            node.kill()
        notify.close()


def test_thread_cap_is_a_config_error(tmp_path):
    """Instances whose concurrency adds up past delivery.max_threads: hookd
    check and run refuse with exit 2 naming the key."""
    cfg = node_config(tmp_path, [tp_entry(f"p{i}", tmp_path / f"{i}.txt",
                                          delivery={"concurrency": 8}) for i in range(5)],
                      [], delivery={"max_threads": 32})
    node = Node(tmp_path, cfg)
    p = node.cli("check")
    assert p.returncode == 2
    assert "delivery.max_threads: the plugin instances need 40 worker threads" in p.stderr
    p = subprocess.run([str(HOOKD), "run", "-c", str(node.path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "max_threads" in p.stderr
