"""The command line: help, version, check (exit 0 or 2 with file:line:col messages), run failures."""
import json
import os
import subprocess

from conftest import HOOKD, PLUGIN_DIR, ROOT, cirrus_source, hookd_check


def run(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(HOOKD), *args], capture_output=True, text=True, timeout=30, env=e)


def base(tmp, **extra):
    cfg = {"sources": [cirrus_source()],
           "plugins": [{"name": "audit", "module": "file_sink",
                        "config": {"path": str(tmp / "e.jsonl")}}],
           "routes": [{"events": ["**"], "to": ["audit"]}]}
    cfg.update(extra)
    return cfg


def test_help_and_version():
    p = run("--help")
    assert p.returncode == 0 and "hookd check -c FILE" not in p.stderr
    assert "check -c FILE" in p.stdout and "run -c FILE" in p.stdout
    v = run("version").stdout
    for name in ("hookd 0.", "plugin ABI 1.1", "libuv 1.", "llhttp 8.1", "cJSON 1.", "SQLite 3."):
        assert name in v
    assert run().returncode == 2
    assert run("frobnicate", "-c", "x").returncode == 2
    assert run("check").returncode == 2


def test_example_config_checks(tmp_path):
    # The example points at ../build/plugins (what `make run` builds); the
    # suite may run from another build directory, so point the copy at it.
    text = (ROOT / "examples" / "hookd.jsonc").read_text()
    assert '"plugin_dirs": ["../build/plugins"' in text
    example = ROOT / "examples" / f".check-{os.getpid()}.jsonc"
    example.write_text(text.replace('"../build/plugins"', json.dumps(str(PLUGIN_DIR))))
    try:
        p = run("check", "-c", str(example), env={"CIRRUS_SIGNING_KEY": "k"})
    finally:
        example.unlink()
    assert p.returncode == 0, p.stderr
    # without the variable: a positioned error naming it
    e = {k: v for k, v in os.environ.items() if k != "CIRRUS_SIGNING_KEY"}
    p = subprocess.run([str(HOOKD), "check", "-c", str(ROOT / "examples" / "hookd.jsonc")],
                       capture_output=True, text=True, env=e)
    assert p.returncode == 2
    assert "hookd.jsonc:" in p.stderr and "CIRRUS_SIGNING_KEY" in p.stderr
    assert "sources[0].verify.secrets[0]" in p.stderr


def test_check_good_config(tmp_path):
    rc, out = hookd_check(base(tmp_path), tmp_path)
    assert rc == 0 and "OK (1 source(s), 1 plugin instance(s), 1 route(s))" in out


def test_check_reports_position_of_unknown_key(tmp_path):
    text = """{
  "listen": "127.0.0.1:0",
  "plugin_dirs": ["%s"],
  "sources": [{"name": "s", "path": "/s", "verify": {"scheme": "none"}}],
  "plugins": [{"name": "a", "module": "file_sink",
               "config": {"path": "x.jsonl", "fsynk": true}}],
  "routes": []
}
""" % PLUGIN_DIR
    rc, out = hookd_check(text, tmp_path)
    assert rc == 2
    assert "hookd.jsonc:6:" in out and "plugins[0].config.fsynk: unknown key" in out


def test_check_core_config_errors(tmp_path):
    text = '{\n  "listen": "127.0.0.1:0",\n  // a comment\n  "sources": [],\n  "limts": {}\n}\n'
    rc, out = hookd_check(text, tmp_path)
    assert rc == 2 and "hookd.jsonc:5:" in out and "limts" in out
    rc, out = hookd_check('{"listen": 8080}', tmp_path)
    assert rc == 2 and "listen" in out
    rc, out = hookd_check("{\n  \"listen\": \"127.0.0.1:0\",\n  oops\n}", tmp_path)
    assert rc == 2 and "hookd.jsonc:3:3" in out


def test_check_refuses_bad_plugins(tmp_path):
    def check_module(module, **config):
        cfg = base(tmp_path)
        cfg["plugins"] = [{"name": "p", "module": module, "config": config}]
        cfg["routes"] = [{"events": ["**"], "to": ["p"]}]
        return hookd_check(cfg, tmp_path)

    rc, out = check_module("test_wrong_abi")
    assert rc == 2 and "built for plugin ABI 2.0, this hookd has ABI 1.1" in out
    rc, out = check_module("test_no_entry")
    assert rc == 2 and "no 'hookd_plugin_entry' symbol" in out
    rc, out = check_module("test_plugin", init_fail=True)
    assert rc == 2 and "init failed: told to fail" in out and "'p'" in out
    rc, out = check_module("no_such_module")
    assert rc == 2 and "module 'no_such_module' not found" in out
    rc, out = check_module("test_plugin", sleep_ms="slow")
    assert rc == 2 and "plugins[0].config.sleep_ms: expected an integer" in out
    rc, out = check_module("../plugins/file_sink")
    assert rc == 2 and "plugins[0].module" in out


def test_check_route_to_unknown_instance(tmp_path):
    cfg = base(tmp_path)
    cfg["routes"] = [{"events": ["**"], "to": ["audit", "nobody"]}]
    rc, out = hookd_check(cfg, tmp_path)
    assert rc == 2 and "routes[0].to[1]" in out and "nobody" in out


def test_run_refuses_bad_config_and_busy_port(tmp_path, daemon_factory):
    cfg_path = tmp_path / "bad.json"
    cfg_path.write_text('{"sources": 1}')
    p = run("run", "-c", str(cfg_path))
    assert p.returncode == 2 and "sources" in p.stderr
    d = daemon_factory(base(tmp_path))
    import json
    cfg = base(tmp_path, listen=f"127.0.0.1:{d.port}", plugin_dirs=[str(PLUGIN_DIR)],
               data_dir=str(tmp_path / "v2"))
    cfg_path.write_text(json.dumps(cfg))
    p = run("run", "-c", str(cfg_path))
    assert p.returncode == 1 and "cannot listen on 127.0.0.1:%d" % d.port in p.stderr
