"""A throwaway PostgreSQL 15 cluster for tests: initdb/pg_ctl as the postgres user in a temp dir, always stopped."""
import atexit
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

PG_BIN = pathlib.Path(os.environ.get("HOOKD_PG_BIN", "/usr/lib/postgresql/15/bin"))
# The role and password hookd connects with; the password is what tests
# look for in logs and `hookd check` output (it must never appear there).
ROLE = "hookd"
PASSWORD = "pg-secret-7c1e"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgError(AssertionError):
    """The server could not be set up: a test failure, never a skip."""


class PgCluster:
    """One cluster in a directory of its own, owned by the postgres user when
    the tests run as root (initdb refuses root), listening on a Unix socket
    in that directory and on a free loopback port.

    start() / stop() / restart() / kill() drive the postmaster; psql() runs
    SQL as the superuser over the socket; create_database() gives a test a
    fresh database and returns its URL for hookd (TCP, password auth)."""

    def __init__(self, settings=None):
        initdb = PG_BIN / "initdb"
        if not initdb.exists():
            raise PgError(f"{initdb} is missing: PostgreSQL 15 tests need the postgresql-15 "
                          "package (make test installs it)")
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: its parents are mode 0700 and the
        # postgres user could not reach a directory below them.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="hookd-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.port = _free_port()
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "60",
            "shared_buffers": "32MB",
            # Test data need not survive a power cut: skip the disk flushes
            # (the benchmark sets its own). A restart still keeps every
            # commit: the WAL is written, only not fsynced.
            "fsync": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        self.settings.update(settings or {})
        self.running = False
        self._dbs = 0
        self._own()
        try:
            self._run([str(initdb), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--no-sync", "--no-instructions"])
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        # hookd connects over TCP with a password, as in production; the
        # superuser reaches the socket without one.
        (self.data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        self._write_conf()
        self._own()
        atexit.register(self.destroy)

    # --- running things as the cluster's owner ---------------------------------

    def _own(self):
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            for p in self.dir.rglob("*"):
                shutil.chown(p, "postgres", "postgres")

    def _cmd(self, argv):
        return (["runuser", "-u", "postgres", "--"] if self.as_root else []) + argv

    def _run(self, argv, timeout=60, check=True, input=None):
        p = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and p.returncode != 0:
            raise PgError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}{p.stderr}"
                          f"{self.log_tail()}")
        return p

    def _write_conf(self):
        lines = [f"{k} = {v}" for k, v in self.settings.items()]
        (self.data / "postgresql.auto.conf").write_text("\n".join(lines) + "\n")

    def log_tail(self, n=30):
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n--- postgres.log ---\n" + "\n".join(lines[-n:])

    # --- the postmaster -----------------------------------------------------------

    def start(self):
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                   "-w", "-t", "30", "start"])
        self.running = True
        if self._dbs == 0:
            self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'", db="postgres")
            self._dbs = 1
        return self

    def stop(self, mode="fast"):
        """pg_ctl stop -m fast|immediate; the sessions of clients are cut."""
        if self.running:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                       "stop"])
            self.running = False

    def restart(self, down_seconds=0.0, mode="fast"):
        """Stops the server, stays down for down_seconds, starts it again."""
        self.stop(mode)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def set(self, **settings):
        """Changes settings (postgresql.auto.conf) and reloads the server."""
        self.settings.update({k: str(v) for k, v in settings.items()})
        self._write_conf()
        self._own()
        if self.running:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "reload"])

    def destroy(self):
        try:
            self.stop("immediate")
        except Exception:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # last resort: the postmaster by its own pid
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 9)
                except (OSError, ValueError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- SQL --------------------------------------------------------------------------

    def psql(self, sql, db="postgres"):
        """Runs sql as the superuser; returns the rows as lists of strings."""
        p = self._run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                       "-h", str(self.dir), "-p", str(self.port), "-d", db, "-f", "-"],
                      input=sql)
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def create_database(self):
        """A fresh database owned by the hookd role; returns its name."""
        name = f"t{self._dbs}"
        self._dbs += 1
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def url(self, db):
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{db}"


class PgDatabase:
    """One test's database in a (shared) cluster."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.name = cluster.create_database()
        self.url = cluster.url(self.name)

    def sql(self, text):
        return self.cluster.psql(text, db=self.name)

    def scalar(self, text):
        rows = self.sql(text)
        return rows[0][0] if rows else None
