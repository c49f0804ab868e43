"""The plugin author's kit: `hookd plugins` lists modules and prints option tables that every
bundled plugin's README must match; `hookd try` runs one delivery against a real far side."""
import json
import re
import subprocess

import pytest

from conftest import HOOKD, PAYLOADS, PLUGIN_DIR, ROOT, _fill, cirrus_source, write_config

pytest_plugins = ["fakehttp"]  # the fake_server fixture

BUNDLED = ["crm_update", "email_notify", "exec", "file_sink", "http_forward", "slack_post"]


def hookd(*args, timeout=30):
    return subprocess.run([str(HOOKD), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def config(tmp_path, plugins, routes=None):
    cfg = _fill({"sources": [cirrus_source()], "plugins": plugins,
                 "routes": routes or [{"events": ["**"], "to": [p["name"] for p in plugins]}]},
                tmp_path)
    return write_config(tmp_path, cfg)


def options_of(module, tmp_path):
    """{name: type} from `hookd plugins MODULE`."""
    cfg = config(tmp_path, [{"name": "a", "module": "file_sink", "config": {"path": "x"}}])
    p = hookd("plugins", module, "-c", cfg)
    assert p.returncode == 0, p.stderr
    rows = re.findall(r"^  (\w+)  \(((?:string|template) list|template map|[a-z]+)", p.stdout, re.M)
    return p.stdout, dict(rows)


def readme_options(module):
    """{name: type} from the option tables of plugins/MODULE/README.md: rows of
    | `name` | type | default | description |."""
    text = (ROOT / "plugins" / module / "README.md").read_text()
    rows = []
    for table in re.findall(r"^\| key \| type \|.*\n((?:\|.*\n)+)", text, re.M):
        rows += re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", table, re.M)
    return dict((name, kind.strip()) for name, kind in rows)


def test_plugins_lists_every_bundled_module(tmp_path):
    cfg = config(tmp_path, [{"name": "a", "module": "file_sink", "config": {"path": "x"}}])
    p = hookd("plugins", "-c", cfg)
    assert p.returncode == 0, p.stderr
    lines = {l.split()[0]: l for l in p.stdout.splitlines()[1:]}
    for module in BUNDLED:
        assert re.match(rf"{module} +1\.\d+\.\d+ +1\.1 +\S", lines[module]), lines[module]
        assert "options not declared" not in lines[module]
    # Refusals are listed with their reason, not fatal to the listing.
    assert "cannot load:" in lines["test_wrong_abi"] and "ABI 2.0" in lines["test_wrong_abi"]
    assert "1.0" in lines["test_abi10"] and "options not declared" in lines["test_abi10"]


@pytest.mark.parametrize("module", BUNDLED)
def test_readme_lists_the_declared_options(module, tmp_path):
    out, declared = options_of(module, tmp_path)
    assert declared, out
    assert readme_options(module) == declared, \
        f"plugins/{module}/README.md option rows differ from `hookd plugins {module}`:\n{out}"


def test_plugins_module_help_and_unknown_module(tmp_path):
    out, opts = options_of("file_sink", tmp_path)
    assert "file_sink 1.1.0 (plugin ABI 1.1)" in out
    assert "  path  (path; required)\n" in out and "  fsync  (bool; default false)\n" in out
    cfg = config(tmp_path, [{"name": "a", "module": "file_sink", "config": {"path": "x"}}])
    p = hookd("plugins", "nosuch", "-c", cfg)
    assert p.returncode == 1 and "module 'nosuch' not found" in p.stderr
    p = hookd("plugins", "a", "b", "-c", cfg)
    assert p.returncode == 2


def try_event(cfg, instance, event="scheduling.smartscheduler.scheduled", *extra):
    return hookd("try", "-c", cfg, "--instance", instance, PAYLOADS / f"{event}.json", *extra)


def test_try_exit_codes_follow_the_outcome(tmp_path):
    out = tmp_path / "lines"
    cfg = config(tmp_path, [
        {"name": "ok", "module": "test_plugin", "config": {"out": str(out)}},
        {"name": "later", "module": "test_plugin",
         "config": {"result": "retry", "retry_after_ms": 1500}},
        {"name": "never", "module": "test_plugin", "config": {"result": "fail"}}])
    p = try_event(cfg, "ok", "scheduling.smartscheduler.canceled", "--attempt", "4")
    assert p.returncode == 0 and p.stdout.startswith("outcome: OK\n"), p.stdout + p.stderr
    # The plugin saw the event, its type, the attempt number and the order key, once.
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["5a6b7c8d-3333-4e2f-a3b4-c5d6e7f80912",
                                "scheduling.smartscheduler.canceled", "4",
                                "c0ffee00-1234-4abc-9def-0123456789ab", "ok"]
    assert lines[1:] == ["DESTROY"]
    assert "test plugin: ok" in p.stderr and "instance=ok" in p.stderr  # its log lines
    p = try_event(cfg, "later")
    assert p.returncode == 75, p.stdout + p.stderr
    assert "outcome: RETRY\nmessage: test plugin says retry\nretry-after: 1500 ms\n" == p.stdout
    p = try_event(cfg, "never")
    assert p.returncode == 1 and "outcome: FAIL\nmessage: test plugin says fail\n" == p.stdout
    # Nothing was stored: the data directory was never created.
    assert not (tmp_path / "var").exists()


def test_try_refusals(tmp_path):
    cfg = config(tmp_path, [{"name": "ok", "module": "test_plugin", "config": {}}])
    p = try_event(cfg, "nobody")
    assert p.returncode == 2 and "no plugin instance 'nobody'" in p.stderr
    p = hookd("try", "-c", cfg, "--instance", "ok", tmp_path / "missing.json")
    assert p.returncode == 2 and "cannot read" in p.stderr and "No such file" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"eventId": "x"}')
    p = hookd("try", "-c", cfg, "--instance", "ok", bad)
    assert p.returncode == 2 and "eventType" in p.stderr, p.stderr
    p = hookd("try", "-c", cfg, "--instance", "ok")
    assert p.returncode == 2 and "usage: hookd try" in p.stderr
    p = try_event(cfg, "ok", "scheduling.smartscheduler.scheduled", "--attempt", "0")
    assert p.returncode == 2 and "--attempt" in p.stderr
    # A config error of the instance is reported with its position.
    cfg = config(tmp_path, [{"name": "s", "module": "file_sink", "config": {"pth": "x"}}])
    p = try_event(cfg, "s")
    assert p.returncode == 2 and "plugins[0].config.pth: unknown key (did you mean 'path'?)" \
        in p.stderr, p.stderr


def test_try_posts_to_a_real_server(tmp_path, fake_server):
    from fakehttp import answers
    srv = fake_server(answers((429, {"Retry-After": "7"}, b"slow down"), (200, {}, b"ok")))
    cfg = config(tmp_path, [{"name": "fwd", "module": "http_forward",
                             "config": {"url": srv.url("/in"),
                                        "headers": {"X-Meeting": "{{data.id}}"}}}])
    p = try_event(cfg, "fwd")
    assert p.returncode == 75 and "retry-after: 7000 ms" in p.stdout, p.stdout + p.stderr
    p = try_event(cfg, "fwd")
    assert p.returncode == 0, p.stdout + p.stderr
    got = srv.got()
    assert len(got) == 2
    body = (PAYLOADS / "scheduling.smartscheduler.scheduled.json").read_bytes()
    assert got[1].body == body and got[1].headers["x-meeting"] == "c0ffee00-1234-4abc-9def-0123456789ab"


def test_file_sink_readme_example_passes_check(tmp_path):
    from conftest import check_readme_config
    check_readme_config("file_sink", tmp_path, env={"CIRRUS_SIGNING_KEY": "k"})
