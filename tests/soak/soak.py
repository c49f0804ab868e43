#!/usr/bin/python3
"""hookd soak: a long, bounded run with faults, checked at the end.

SOAK_EVENTS events (default 1,000,000) for SOAK_MEETINGS meetings (100,000),
ten per meeting, sent in order per meeting through `spool.sync: full` to two
plugin instances of the test plugin: `steady` delivers everything, `flaky`
answers RETRY to 1 % of attempts at random and segfaults (killing hookd) on
three marked events. A supervisor restarts hookd whenever it dies, as systemd
would, and kills it with SIGKILL every SOAK_KILL_EVERY seconds (120). RSS and
open fds are sampled every second.

Afterwards: every event answered 200 reached both instances, each meeting in
accept order within each process life; the three poison deliveries are dead
letters of `flaky`; RSS and fds stayed flat. Prints the figures, writes
samples.csv and rss.svg (the plot) into SOAK_OUT. Exit 0 when all holds.

Usage: tests/soak/soak.py BUILD_DIR  (make soak builds a Release tree first)
"""
import http.client
import hashlib
import hmac
import json
import multiprocessing
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build-soak").resolve()
HOOKD = BUILD / "hookd"
EVENTS = int(os.environ.get("SOAK_EVENTS", 1_000_000))
MEETINGS = int(os.environ.get("SOAK_MEETINGS", 100_000))
PER = max(1, EVENTS // MEETINGS)
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", 120))
SENDERS = int(os.environ.get("SOAK_SENDERS", 6))
OUT = pathlib.Path(os.environ.get("SOAK_OUT") or tempfile.mkdtemp(prefix="hookd-soak."))
SECRET = b"soak-secret"
POISON = [f"m17-{min(3, PER - 1)}", f"m{MEETINGS // 2 + 3}-{min(5, PER - 1)}", f"m{MEETINGS - 7}-1"]
KINDS = ["scheduled", "rescheduled", "canceled"]
BASE = {k: json.loads((ROOT / "examples/payloads" /
                       f"scheduling.smartscheduler.{k}.json").read_text()) for k in KINDS}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(m, k):
    kind = "scheduled" if k == 0 else "canceled" if k == PER - 1 else "rescheduled"
    ev = json.loads(json.dumps(BASE[kind]))
    ev["eventId"] = f"m{m}-{k}"
    ev["data"]["id"] = f"m{m}"
    return json.dumps(ev, separators=(",", ":")).encode()


def sender(port, share, n_shares, acked_path):
    """Sends event k of every meeting of its share, k = 0..PER-1 in order,
    each until it is answered 200 (the sender's retry across hookd deaths)."""
    meetings = range(share, MEETINGS, n_shares)
    conn = None
    with open(acked_path, "w") as acked:
        for k in range(PER):
            for m in meetings:
                b = body(m, k)
                sig = hmac.new(SECRET, b, hashlib.sha256).hexdigest()
                while True:
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        conn.request("POST", "/webhooks/cirrus", b,
                                     {"X-Signature": sig, "Content-Type": "application/json"})
                        r = conn.getresponse()
                        r.read()
                        if r.status == 200:
                            acked.write(f"m{m}-{k}\n")
                            break
                        time.sleep(0.2)  # 503: hookd is busy or starting
                    except (OSError, http.client.HTTPException):
                        if conn is not None:
                            conn.close()
                        conn = None
                        time.sleep(0.2)


class Supervisor:
    def __init__(self, cfg_path):
        self.cfg_path = cfg_path
        self.proc = None
        self.starts = 0
        self.deaths = []
        self.kills = 0
        self.stop = False
        self.lock = threading.Lock()

    def start(self):
        self.starts += 1
        log = open(OUT / f"hookd-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([str(HOOKD), "run", "-c", str(self.cfg_path)], stdout=log,
                                     stderr=subprocess.STDOUT)

    def run(self):
        last_kill = time.monotonic()
        while not self.stop:
            time.sleep(0.1)
            with self.lock:
                rc = self.proc.poll()
                if rc is not None:
                    self.deaths.append(rc)
                    self.start()
                    continue
                if KILL_EVERY and time.monotonic() - last_kill > KILL_EVERY:
                    last_kill = time.monotonic()
                    self.proc.kill()
                    self.proc.wait()
                    self.kills += 1
                    self.deaths.append("SIGKILL")
                    self.start()


def sample(sup, rows, stop):
    t0 = time.monotonic()
    while not stop.is_set():
        with sup.lock:
            pid = sup.proc.pid
        try:
            rss = next(int(l.split()[1]) for l in
                       pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                       if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            rows.append((time.monotonic() - t0, pid, rss, fds))
        except (OSError, StopIteration):
            pass
        time.sleep(1)


def svg(rows, path):
    """RSS over time as a small SVG line chart (one colour per process life)."""
    w, h, pad = 900, 300, 40
    tmax = max(r[0] for r in rows) or 1
    rmax = max(r[2] for r in rows) or 1
    x = lambda t: pad + (w - 2 * pad) * t / tmax  # noqa: E731
    y = lambda v: h - pad - (h - 2 * pad) * v / rmax  # noqa: E731
    lines, cur, pid = [], [], None
    for t, p, rss, _ in rows:
        if p != pid and cur:
            lines.append(cur)
            cur = []
        pid = p
        cur.append(f"{x(t):.1f},{y(rss):.1f}")
    if cur:
        lines.append(cur)
    polys = "".join(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" '
                    f'points="{" ".join(c)}"/>' for c in lines)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
        f'<text x="{pad}" y="{pad - 8}">RSS of hookd (max {rmax / 1024:.1f} MiB) over '
        f'{tmax:.0f} s; a gap is a restart</text>'
        f'<text x="{w - pad}" y="{h - 10}" text-anchor="end">seconds</text>{polys}</svg>')


def plugin_oks(path):
    """Per process life (split at INIT), the ids answered ok, in order."""
    lives, cur = [], None
    with open(path) as f:
        for line in f:
            p = line.split()
            if p and p[0] == "INIT":
                cur = []
                lives.append(cur)
            elif len(p) == 5 and p[4] == "ok":
                if cur is None:
                    cur = []
                    lives.append(cur)
                cur.append(p[0])
    return lives


def check_instance(name, path, acked, expect):
    lives = plugin_oks(path)
    got = set()
    problems = 0
    for life in lives:
        last = {}
        for eid in life:
            m, k = eid.rsplit("-", 1)
            k = int(k)
            if k <= last.get(m, -1):
                problems += 1
            last[m] = k
            got.add(eid)
    missing = expect - got
    print(f"{name}: {sum(len(l) for l in lives)} ok deliveries in {len(lives)} lives, "
          f"{len(got)} distinct, {len(missing)} acked events missing, {problems} out of order")
    return not missing and problems == 0


def main():
    if not HOOKD.exists():
        sys.exit(f"no {HOOKD}: build first (make soak)")
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "data_dir": str(OUT / "var"),
        "plugin_dirs": [str(BUILD / "plugins")],
        "log": {"level": "warn"},
        "spool": {"sync": "full"},
        "sources": [{"name": "cirrus", "path": "/webhooks/cirrus", "format": "cirrus-insight",
                     "verify": {"scheme": "hmac", "algorithm": "sha256", "header": "X-Signature",
                                "encoding": "hex", "secrets": [SECRET.decode()]}}],
        "plugins": [
            {"name": "steady", "module": "test_plugin",
             "config": {"out": str(OUT / "steady.txt"), "mark_init": True}},
            {"name": "flaky", "module": "test_plugin",
             "config": {"out": str(OUT / "flaky.txt"), "mark_init": True, "retry_pct": 1,
                        "poison": POISON},
             "delivery": {"backoff_initial_ms": 200, "backoff_max_ms": 2000, "max_crashes": 3}},
        ],
        "routes": [{"events": ["**"], "to": ["steady", "flaky"]}],
    }
    cfg_path = OUT / "hookd.json"
    cfg_path.write_text(json.dumps(cfg))
    print(f"soak: {MEETINGS * PER} events, {MEETINGS} meetings, kill -9 every {KILL_EVERY:.0f} s,"
          f" output in {OUT}", flush=True)
    sup = Supervisor(cfg_path)
    sup.start()
    time.sleep(0.5)
    sup_thread = threading.Thread(target=sup.run)
    sup_thread.start()
    rows, stop_sampling = [], threading.Event()
    sampler = threading.Thread(target=sample, args=(sup, rows, stop_sampling))
    sampler.start()
    t0 = time.monotonic()
    procs = [multiprocessing.Process(target=sender, args=(port, s, SENDERS,
                                                          OUT / f"acked-{s}.txt"))
             for s in range(SENDERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    t_sent = time.monotonic() - t0
    acked = set()
    for s in range(SENDERS):
        acked.update(l.strip() for l in open(OUT / f"acked-{s}.txt"))
    print(f"sent: {len(acked)} events answered 200 in {t_sent:.0f} s "
          f"({len(acked) / t_sent:.0f}/s)", flush=True)
    want_flaky = acked - set(POISON)

    def done():
        try:
            s = {l.split()[0] for l in open(OUT / "steady.txt") if l.endswith(" ok\n")}
            f = {l.split()[0] for l in open(OUT / "flaky.txt") if l.endswith(" ok\n")}
        except OSError:
            return False
        return acked <= s and want_flaky <= f
    deadline = time.monotonic() + 1800
    while not done() and time.monotonic() < deadline:
        time.sleep(5)
    t_done = time.monotonic() - t0
    time.sleep(3)
    sup.stop = True
    sup_thread.join()
    stop_sampling.set()
    sampler.join()
    with sup.lock:
        sup.proc.send_signal(signal.SIGTERM)
        rc = sup.proc.wait(60)
    dlq = subprocess.run([str(HOOKD), "dlq", "list", "-c", str(cfg_path)], capture_output=True,
                         text=True)
    dead = {l.split()[3] for l in dlq.stdout.splitlines()
            if len(l.split()) > 3 and l.split()[2] == "flaky"}
    ok = True
    ok &= check_instance("steady", OUT / "steady.txt", acked, acked)
    ok &= check_instance("flaky", OUT / "flaky.txt", acked, want_flaky)
    print(f"dead letters of flaky: {sorted(dead)}")
    ok &= set(POISON) <= dead
    print(f"hookd: {sup.starts} starts, {sup.kills} kill -9, deaths {sup.deaths}; "
          f"last exit {rc}; all delivered after {t_done:.0f} s")
    with open(OUT / "samples.csv", "w") as f:
        f.write("seconds,pid,rss_kib,fds\n")
        for r in rows:
            f.write(f"{r[0]:.1f},{r[1]},{r[2]},{r[3]}\n")
    svg(rows, OUT / "rss.svg")
    warm = [r for r in rows if r[0] > 30] or rows
    third = max(1, len(warm) // 3)
    first, last = warm[:third], warm[-third:]
    avg = lambda rs, i: sum(r[i] for r in rs) / len(rs)  # noqa: E731
    print(f"RSS KiB: max {max(r[2] for r in rows)}, first third {avg(first, 2):.0f}, "
          f"last third {avg(last, 2):.0f}; fds: max {max(r[3] for r in rows)}, first third "
          f"{avg(first, 3):.1f}, last third {avg(last, 3):.1f}")
    flat = avg(last, 2) < avg(first, 2) * 1.25 + 4096 and avg(last, 3) <= avg(first, 3) + 4
    print(f"RSS and fds flat: {flat}")
    ok &= flat and rc == 0
    print("soak:", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
