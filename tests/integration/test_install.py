"""`cmake --install`: the layout, the systemd unit (systemd-analyze verify), the man pages and the config template."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, ROOT

PLUGINS = ["crm_update", "email_notify", "exec", "file_sink", "http_forward", "slack_post"]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("install") / "prefix"
    r = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def libdir(prefix):
    """lib, or Debian's multiarch lib/<triplet> when the prefix is /usr."""
    hits = list(prefix.glob("lib*/**/pkgconfig/hookd-plugin.pc"))
    assert len(hits) == 1, hits
    return hits[0].parent.parent


def unit(prefix):
    return prefix / "lib/systemd/system/hookd.service"


def parse_unit(path):
    """{(section, key): [values]} of a systemd unit file."""
    out, section = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, v = line.split("=", 1)
        out.setdefault((section, k), []).append(v)
    return out


def test_layout(prefix):
    lib = libdir(prefix)
    hookd = prefix / "bin/hookd"
    assert hookd.is_file() and os.access(hookd, os.X_OK)
    for p in PLUGINS:
        assert (lib / "hookd/plugins" / f"{p}.so").is_file(), p
    assert not list((lib / "hookd/plugins").glob("test_*.so")), "test plugins are installed"
    assert (prefix / "include/hookd/plugin.h").is_file()
    assert (lib / "pkgconfig/hookd-plugin.pc").is_file()
    for f in ("hookdConfig.cmake", "hookdConfigVersion.cmake", "hookdTargets.cmake"):
        assert (lib / "cmake/hookd" / f).is_file(), f
    assert (prefix / "share/hookd/examples/hookd.jsonc").is_file()
    assert (prefix / "share/hookd/hookd.jsonc").is_file()
    assert unit(prefix).is_file()
    assert (prefix / "lib/sysusers.d/hookd.conf").read_text().count("\nu hookd ") == 1
    assert (prefix / "share/man/man1/hookd.1").is_file()
    assert (prefix / "share/man/man5/hookd.jsonc.5").is_file()
    out = subprocess.run([str(hookd), "version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("hookd ")


def test_systemd_unit(prefix):
    u = parse_unit(unit(prefix))
    svc = lambda k: u.get(("Service", k), [])  # noqa: E731
    assert svc("Type") == ["notify"] and svc("NotifyAccess") == ["main"]
    assert int(svc("WatchdogSec")[0]) > 0
    assert svc("ExecStart") == [f"{prefix}/bin/hookd run -c {prefix}/etc/hookd/hookd.jsonc"]
    assert svc("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert svc("NoNewPrivileges") == ["yes"]
    assert svc("ProtectSystem") == ["strict"]
    assert "/var/lib/hookd" in " ".join(svc("ReadWritePaths")).split()
    assert svc("User") == ["hookd"] and svc("Group") == ["hookd"]
    assert svc("StateDirectory") == ["hookd"]
    # 2: a bad config, 3: a damaged spool; restarting helps neither.
    assert svc("RestartPreventExitStatus") == ["2 3"]
    # Longer than the default drain (shutdown_timeout_ms 30000).
    assert int(svc("TimeoutStopSec")[0]) > 30
    assert u[("Install", "WantedBy")] == ["multi-user.target"]
    # The template the unit's config is made from: data_dir is the writable path.
    template = (prefix / "share/hookd/hookd.jsonc").read_text()
    assert '"data_dir": "/var/lib/hookd"' in template
    assert f'"{libdir(prefix)}/hookd/plugins"' in template


def test_systemd_analyze_verify(prefix, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    env = dict(os.environ, MANPATH=str(prefix / "share/man"))  # Documentation=man:... resolves
    r = subprocess.run(["systemd-analyze", "verify", str(unit(prefix))], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and "hookd.service" not in r.stdout + r.stderr, r.stdout + r.stderr
    # The check can fail: a broken copy of the unit is refused.
    bad = tmp_path / "hookd.service"
    bad.write_text(unit(prefix).read_text().replace("ExecStart=/", "ExecStart=relative/"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0


def test_man_pages_render_and_cover_the_config(prefix):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    for page in ("man1/hookd.1", "man5/hookd.jsonc.5"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(prefix / "share/man" / page)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
    r = subprocess.run(["groff", "-man", "-Tascii", str(prefix / "share/man/man5/hookd.jsonc.5")],
                       capture_output=True, text=True, timeout=30)
    text = re.sub(r".\x08", "", r.stdout)
    # Every top-level key the config loader accepts is documented.
    src = (ROOT / "core/config/config.c").read_text()
    keys = re.search(r"top_keys\[\] = \{(.*?)NULL\}", src, re.S).group(1)
    for key in re.findall(r'"([a-z_]+)"', keys):
        assert re.search(rf"\b{key}\b", text), f"hookd.jsonc(5) does not mention {key}"
    r = subprocess.run(["groff", "-man", "-Tascii", str(prefix / "share/man/man1/hookd.1")],
                       capture_output=True, text=True, timeout=30)
    text = re.sub(r".\x08", "", r.stdout)
    for word in ("SYNOPSIS", "run", "check", "version", "SIGTERM", "SIGHUP", "/healthz",
                 "/readyz", "/metrics", "EXIT STATUS"):
        assert word in text, word


def test_installed_template_checks(prefix, tmp_path):
    """The production template is valid once its paths and secrets exist."""
    cfg = (prefix / "share/hookd/hookd.jsonc").read_text()
    cfg = cfg.replace("/var/lib/hookd", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    path = tmp_path / "hookd.jsonc"
    path.write_text(cfg)
    env = dict(os.environ, CIRRUS_SIGNING_KEY="k", HOOKD_ADMIN_TOKEN="t")
    r = subprocess.run([str(prefix / "bin/hookd"), "check", "-c", str(path)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    env.pop("HOOKD_ADMIN_TOKEN")
    r = subprocess.run([str(prefix / "bin/hookd"), "check", "-c", str(path)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2 and "admin_token" in r.stderr and "HOOKD_ADMIN_TOKEN" in r.stderr
