"""The unit files in systemd/: `systemd-analyze verify` clean, security exposure <= 2.0.

Traps handled here (see shared TRIO_NOTES):
* `verify` exits 0 on unknown keys (a typo such as WatchDogSec passes), so any output fails;
* `verify` wants ExecStart's binary to exist: the units are verified as copies whose ExecStart
  points at this Python interpreter;
* `security --threshold` compares on a 0-100 scale (1.4 is 14): the displayed score is parsed.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geminid.protocol.constants import runtime_dir as _default_runtime_dir

ROOT = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def staged(tmp_path: Path, unit_dir: Path) -> Path:
    out = tmp_path / unit_dir.name
    out.mkdir()
    for unit in unit_dir.glob("geminid.*"):
        text = unit.read_text()
        text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable}", text)
        (out / unit.name).write_text(text)
    return out


def analyze(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", **(env or {})},
    )


def assert_clean(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_system_units_verify_clean(tmp_path):
    d = staged(tmp_path, ROOT)
    assert_clean(analyze("verify", "./geminid.service", "./geminid.socket", cwd=d))


def test_user_units_verify_clean(tmp_path):
    d = staged(tmp_path, ROOT / "user")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    res = analyze(
        "--user",
        "verify",
        "./geminid.service",
        "./geminid.socket",
        cwd=d,
        env={"XDG_RUNTIME_DIR": str(run)},
    )
    assert_clean(res)


def test_verify_catches_a_typo(tmp_path):
    """Proof that 'no output' is a real check: verify exits 0 but prints for a bad key."""
    d = staged(tmp_path, ROOT)
    svc = d / "geminid.service"
    svc.write_text(svc.read_text().replace("WatchdogSec=", "WatchDogSec="))
    res = analyze("verify", "./geminid.service", cwd=d)
    assert res.returncode == 0 and "WatchDogSec" in res.stderr


def test_security_exposure_at_most_2(tmp_path):
    d = staged(tmp_path, ROOT)
    res = analyze("security", "--offline=true", "--no-pager", "./geminid.service", cwd=d)
    text = res.stdout + res.stderr
    m = re.search(r"Overall exposure level for geminid\.service: (\d+\.\d)", text)
    assert m, text
    assert float(m.group(1)) <= 2.0, text


def read_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


@pytest.mark.parametrize("unit_dir", [ROOT, ROOT / "user"], ids=["system", "user"])
def test_socket_is_not_inside_the_service_runtime_directory(unit_dir):
    svc = read_unit(unit_dir / "geminid.service")["Service"]
    listen = read_unit(unit_dir / "geminid.socket")["Socket"]["ListenStream"]
    runtime = svc.get("RuntimeDirectory")
    if runtime:
        base = "%t" if unit_dir.name == "user" else "/run"
        assert not listen.startswith(f"{base}/{runtime}/")
    assert svc["Type"] == "notify" and svc["WatchdogSec"] == "30"
    assert "ExecReload" in svc and "HUP" in svc["ExecReload"]


def test_socket_paths_match_the_daemon_defaults():
    """geminictl finds the socket where the daemon would put it without socket activation."""
    system = read_unit(ROOT / "geminid.socket")["Socket"]["ListenStream"]
    assert Path(system) == _default_runtime_dir({}) / "geminid.sock"
    user = read_unit(ROOT / "user" / "geminid.socket")["Socket"]["ListenStream"]
    assert Path(user.replace("%t", "/run/user/1000")) == (
        _default_runtime_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}) / "geminid.sock"
    )


def test_python_runs_under_memory_deny_write_execute():
    """MemoryDenyWriteExecute=yes: check CPython, trio, ssl under the kernel's equivalent
    (prctl PR_SET_MDWE, Linux >= 6.3)."""
    code = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("unsupported"); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("not enforced"); sys.exit(0)
except OSError:
    pass
import ssl, trio, trio_websocket, structlog, sqlite3
ssl.create_default_context()
import geminid.daemon.config_load, geminid.daemon.logsetup, geminid.daemon.sdnotify
async def main():
    async with trio.open_nursery() as n:
        n.start_soon(trio.sleep, 0.01)
trio.run(main)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    out = res.stdout.strip()
    if out in ("unsupported", "not enforced"):
        pytest.skip(f"PR_SET_MDWE {out} on this kernel")
    assert res.returncode == 0 and out == "ok", res.stderr


# -- #11.14: the units as shipped, against an install where they expect it -------------------

UNSHARE = shutil.which("unshare")
STUB = "#!/bin/sh\nexit 0\n"


def exec_start(unit: Path) -> str:
    return read_unit(unit)["Service"]["ExecStart"].split()[0]


def test_system_units_as_shipped_verify_with_geminid_where_the_unit_expects_it(tmp_path):
    """No ExecStart rewriting: a stub ``geminid`` is put at the unit's own path, inside a private
    mount namespace (a bind mount over its directory), so the host is not touched."""
    target = Path(exec_start(ROOT / "geminid.service"))
    assert target == Path("/usr/local/bin/geminid")  # where README's install puts it
    if UNSHARE is None:
        pytest.skip("unshare not installed: cannot stage a stub at the unit's ExecStart path")
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / target.name).write_text(STUB)
    (stub_dir / target.name).chmod(0o755)
    probe = subprocess.run([UNSHARE, "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here ({probe.stderr.strip()}): cannot stage the stub")
    script = (f"mount --bind {stub_dir} {target.parent} && cd {ROOT} && "
              f"{ANALYZE} verify ./geminid.service ./geminid.socket")
    res = subprocess.run([UNSHARE, "--mount", "sh", "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""})
    assert_clean(res)


def test_system_unit_as_shipped_fails_verify_without_geminid_installed(tmp_path):
    """The check above is real: without the stub, the shipped unit's ExecStart is reported."""
    target = exec_start(ROOT / "geminid.service")
    if os.path.exists(target):
        pytest.skip(f"{target} is installed on this host")
    res = analyze("verify", "./geminid.service", cwd=ROOT)
    assert f"Command {target} is not executable" in res.stderr


def test_user_units_as_shipped_verify_with_geminid_in_the_pipx_bin_dir(tmp_path):
    home = tmp_path / "home"
    assert exec_start(ROOT / "user" / "geminid.service") == "%h/.local/bin/geminid"
    stub = home / ".local" / "bin" / "geminid"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB)
    stub.chmod(0o755)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    res = analyze("--user", "verify", "./geminid.service", "./geminid.socket", cwd=ROOT / "user",
                  env={"XDG_RUNTIME_DIR": str(run), "HOME": str(home)})
    assert_clean(res)


@pytest.mark.parametrize("unit", sorted(p.relative_to(ROOT) for p in ROOT.rglob("geminid.*")), ids=str)
def test_units_point_only_at_documentation_that_exists(unit):
    text = (ROOT / unit).read_text()
    repo = ROOT.parent
    for uri in re.findall(r"(?m)^Documentation=(.+)$", text):
        for one in uri.split():
            assert not one.startswith("file://") or Path(one[7:]).exists(), one
    for ref in re.findall(r"(?<![\w/.~-])((?:docs|protocol|systemd)/[\w./-]+|README\.md)", text):
        assert (repo / ref).exists(), f"{unit} names {ref}, which is not in the source tree"
