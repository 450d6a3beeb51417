"""geminid.daemon.config_load: sources, precedence, validation messages, rendering."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import attrs
import pytest

from geminid.daemon import config_load as cl
from geminid.daemon import logsetup
from geminid.daemon.config import Config
from geminid.daemon.errors import ConfigError

KEY = "AIzaTESTKEY0123456789abcdefghijklmnop"


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cl.add_config_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home)}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(env: dict[str, str], *argv: str) -> Config:
    return cl.load_config(parse(*argv), env)


def error(env: dict[str, str], *argv: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load(env, *argv)
    msg = ei.value.message
    assert "\n" not in msg
    return msg


def test_defaults_without_any_source(env):
    cfg = load(env)
    assert cfg.source is None
    assert cfg.upstream.api_key is None and cfg.embedded_fake
    assert cfg.log.level == "info"
    assert cfg.state_dir == Path(env["HOME"]) / ".local/state/geminid"
    assert cfg.backoff == Config().backoff


def test_default_paths_follow_the_given_environment(env, tmp_path):
    env.update(STATE_DIRECTORY=str(tmp_path / "st"), RUNTIME_DIRECTORY=str(tmp_path / "rt"))
    cfg = load(env)
    assert cfg.state_dir == tmp_path / "st"
    assert cfg.server.socket_path == tmp_path / "rt" / "geminid.sock"


def test_precedence_flags_over_env_over_file(env, tmp_path):
    f = write(
        tmp_path / "c.toml",
        '[log]\nlevel = "debug"\nformat = "json"\n[upstream]\nendpoint = "ws://file:1/"\n'
        "connect_timeout = 3\n",
    )
    cfg = load(env, "--config", str(f))
    assert (cfg.log.level, cfg.upstream.endpoint, cfg.source) == ("debug", "ws://file:1/", f)
    assert cfg.upstream.connect_timeout == 3.0
    env.update(GEMINID_LOG_LEVEL="warning", GEMINID_UPSTREAM_ENDPOINT="ws://env:1/")
    cfg = load(env, "--config", str(f))
    assert (cfg.log.level, cfg.upstream.endpoint, cfg.log.format) == (
        "warning",
        "ws://env:1/",
        "json",
    )
    cfg = load(env, "--config", str(f), "--log-level", "error", "--endpoint", "wss://flag/")
    assert (cfg.log.level, cfg.upstream.endpoint) == ("error", "wss://flag/")


def test_config_path_from_env_and_default_locations(env, tmp_path):
    f = write(tmp_path / "c.toml", "shutdown_timeout = 4\n")
    assert load({**env, "GEMINID_CONFIG": str(f)}).shutdown_timeout == 4.0
    xdg = tmp_path / "xdg"
    write(xdg / "geminid/config.toml", "shutdown_timeout = 5\n")
    assert cl.default_config_path({**env, "XDG_CONFIG_HOME": str(xdg)}, euid=1000) == (
        xdg / "geminid/config.toml"
    )
    assert (
        cl.default_config_path(env, euid=1000) == Path(env["HOME"]) / ".config/geminid/config.toml"
    )
    assert cl.default_config_path(env, euid=0) == Path("/etc/geminid/config.toml")
    # system service (DynamicUser: not root) vs user service (MANAGERPID set)
    assert cl.default_config_path({**env, "INVOCATION_ID": "x"}, euid=61234) == Path(
        "/etc/geminid/config.toml"
    )
    user = {**env, "INVOCATION_ID": "x", "MANAGERPID": "1", "XDG_CONFIG_HOME": str(xdg)}
    assert cl.default_config_path(user, euid=1000) == xdg / "geminid/config.toml"
    assert cl.default_config_path({"CONFIGURATION_DIRECTORY": "/etc/x"}, euid=0) == Path(
        "/etc/x/config.toml"
    )


def test_missing_default_file_is_fine_missing_explicit_file_is_not(env, tmp_path):
    load({**env, "XDG_CONFIG_HOME": str(tmp_path / "nothing")})
    msg = error(env, "--config", str(tmp_path / "nope.toml"))
    assert msg == f"config: {tmp_path / 'nope.toml'}: no such file"


def test_invalid_toml_is_one_line(env, tmp_path):
    f = write(tmp_path / "c.toml", "[log\nlevel=\n")
    assert error(env, "--config", str(f)).startswith(f"config: {f}: invalid TOML: ")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[upstream]\nendpont = "ws://x/"\n',
            "upstream.endpont: unknown key (did you mean upstream.endpoint?)",
        ),
        ("statedir = '/x'\n", "statedir: unknown key (did you mean state_dir?)"),
        ("[logging]\nlevel = 'info'\n", "logging: unknown key"),
        ("log = 'debug'\n", 'log: must be a table ([log]), got "debug"'),
        ('[backoff]\ncap = "x"\n', 'backoff.cap: must be a number > 0, got "x"'),
        ("[backoff]\ncap = 0\n", "backoff.cap: must be a number > 0, got 0"),
        ("[backoff]\ncap = true\n", "backoff.cap: must be a number > 0, got true"),
        (
            "[backoff]\nmax_attempts = 1.5\n",
            "backoff.max_attempts: must be an integer >= 0, got 1.5",
        ),
        ("[backoff]\ncap = 0.1\n", "backoff.cap: must be >= backoff.initial (0.4), got 0.1"),
        (
            '[upstream]\nendpoint = "https://x/"\n',
            'upstream.endpoint: must be a ws:// or wss:// URL with a host, got "https://x/"',
        ),
        (
            '[log]\nlevel = "verbose"\n',
            'log.level: must be one of debug, info, warning, error, got "verbose"',
        ),
        (
            "[session]\naudio_staleness = -1\n",
            "session.audio_staleness: must be a number >= 0, got -1",
        ),
        (
            "[upstream]\ntransparent = 1\n",
            "upstream.transparent: must be a boolean (true/false), got 1",
        ),
        (
            "[server]\nallowed_uids = [1, 'a']\n",
            'server.allowed_uids: must be a list of uids >= 0, got [1, "a"]',
        ),
        (
            "[server]\nsocket_group = 'no-such-group-geminid'\n",
            'server.socket_group: must be an existing group name or a gid, got "no-such-group-geminid"',
        ),
        (
            "[upstream]\napi_key = 'k'\napi_key_file = '/k'\n",
            "upstream.api_key: set either api_key or api_key_file, not both",
        ),
    ],
)
def test_file_values_refused_with_key_and_reason(env, tmp_path, toml, expected):
    f = write(tmp_path / "c.toml", toml)
    msg = error(env, "--config", str(f))
    assert msg == f"{expected} ({f})"


def test_env_values_refused_with_variable(env):
    assert error({**env, "GEMINID_BACKOFF_CAP": "x"}) == (
        'backoff.cap: must be a number > 0, got "x" (env GEMINID_BACKOFF_CAP)'
    )
    assert error({**env, "GEMINID_LOG_LEVL": "debug"}) == (
        "GEMINID_LOG_LEVL: unknown variable (did you mean GEMINID_LOG_LEVEL?) (env)"
    )
    assert "GEMINI_API_KEY" in error({**env, "GEMINID_UPSTREAM_API_KEY": "k"})
    assert error({**env, "GEMINID_UPSTREAM_TRANSPARENT": "maybe"}).startswith(
        "upstream.transparent: must be a boolean"
    )


def test_flag_values_refused_with_flag(env):
    assert error(env, "--log-level", "loud") == (
        'log.level: must be one of debug, info, warning, error, got "loud" (--log-level)'
    )
    assert error(env, "--endpoint", "http://x").endswith("(--endpoint)")
    assert error(env, "--log-format", "xml").startswith("log.format:")


def test_env_text_is_converted(env):
    cfg = load(
        {
            **env,
            "GEMINID_UPSTREAM_TRANSPARENT": "yes",
            "GEMINID_SERVER_ALLOWED_UIDS": "1000, 1001",
            "GEMINID_SESSION_EVENT_RING": "10",
            "GEMINID_SERVER_SOCKET_GROUP": "",
            "GEMINID_FAKE_SCRIPT": "passes through",
            "GEMINID_SHUTDOWN_TIMEOUT": "2.5",
        }
    )
    assert cfg.upstream.transparent is True
    assert cfg.server.allowed_uids == (1000, 1001)
    assert cfg.session.event_ring == 10
    assert cfg.server.socket_group is None
    assert cfg.shutdown_timeout == 2.5


def test_relative_paths(env, tmp_path, monkeypatch):
    f = write(tmp_path / "etc/c.toml", 'state_dir = "state"\n[server]\nsocket_path = "~/s.sock"\n')
    cfg = load(env, "--config", str(f))
    assert cfg.state_dir == tmp_path / "etc/state"
    assert cfg.server.socket_path == Path(env["HOME"]) / "s.sock"
    monkeypatch.chdir(tmp_path)
    assert load(env, "--state-dir", "here").state_dir == tmp_path / "here"


def test_socket_path_too_long(env):
    msg = error(env, "--socket", "/" + "x" * 120)
    assert msg.startswith("server.socket_path: too long for a Unix socket (121 bytes > 107)")


def test_api_key_from_env(env):
    cfg = load({**env, "GEMINI_API_KEY": KEY + "\n"})
    assert cfg.upstream.api_key.reveal() == KEY
    assert cfg.upstream.api_key_source == "env GEMINI_API_KEY"
    assert not cfg.embedded_fake
    assert KEY not in repr(cfg)
    # empty means unset
    assert load({**env, "GEMINI_API_KEY": " "}).upstream.api_key is None


def test_api_key_file_read_stripped_and_errors_name_the_path(env, tmp_path):
    kf = write(tmp_path / "key", f"  {KEY}\n\n")
    cfg = load(env, "--api-key-file", str(kf))
    assert cfg.upstream.api_key.reveal() == KEY
    assert cfg.upstream.api_key_file == kf
    assert cfg.upstream.api_key_source == f"file {kf}"
    write(kf, "\n \n")
    assert error(env, "--api-key-file", str(kf)) == f"upstream.api_key_file: {kf}: file is empty"
    assert error(env, "--api-key-file", str(tmp_path / "gone")) == (
        f"upstream.api_key_file: {tmp_path / 'gone'}: no such file"
    )
    assert error(env, "--api-key-file", str(tmp_path)) == (
        f"upstream.api_key_file: {tmp_path}: is a directory"
    )
    write(kf, "two\nkeys\n")
    assert "one key on one line" in error(env, "--api-key-file", str(kf))


def test_systemd_credential_and_key_precedence(env, tmp_path):
    creds = tmp_path / "creds"
    write(creds / "gemini_api_key", KEY + "C\n")
    f = write(tmp_path / "c.toml", f'[upstream]\napi_key = "{KEY}F"\n')
    base = {**env, "CREDENTIALS_DIRECTORY": str(creds)}
    cfg = load(base, "--config", str(f))  # credential beats the file
    assert cfg.upstream.api_key.reveal() == KEY + "C"
    assert cfg.upstream.api_key_source == f"credential {creds / 'gemini_api_key'}"
    cfg = load({**base, "GEMINI_API_KEY": KEY + "E"}, "--config", str(f))  # env beats credential
    assert cfg.upstream.api_key.reveal() == KEY + "E"
    assert cfg.upstream.api_key_file is None
    kf = write(tmp_path / "flagkey", KEY + "X")
    cfg = load({**base, "GEMINI_API_KEY": KEY + "E"}, "--api-key-file", str(kf))  # flag wins
    assert cfg.upstream.api_key.reveal() == KEY + "X"
    # only the file: source names the config file
    cfg = load(env, "--config", str(f))
    assert cfg.upstream.api_key_source == f"config file {f}"
    both = {**env, "GEMINI_API_KEY": KEY, "GEMINID_UPSTREAM_API_KEY_FILE": str(kf)}
    assert "not both" in error(both)


def test_reload_api_key_rotates(env, tmp_path):
    kf = write(tmp_path / "key", KEY)
    cfg = load(env, "--api-key-file", str(kf))
    assert cl.reload_api_key(cfg) is cfg
    write(kf, KEY + "NEW\n")
    new = cl.reload_api_key(cfg)
    assert new.upstream.api_key.reveal() == KEY + "NEW"
    assert cl.key_rotated(cfg, new)
    assert logsetup.redact_text(KEY + "NEW").startswith("<redacted:")
    kf.unlink()
    with pytest.raises(ConfigError, match=str(kf)):
        cl.reload_api_key(new)
    env_cfg = load({**env, "GEMINI_API_KEY": KEY})
    assert cl.reload_api_key(env_cfg) is env_cfg


def test_load_registers_the_key_for_redaction(env):
    load({**env, "GEMINI_API_KEY": KEY + "REG"})
    assert KEY + "REG" not in logsetup.redact_text(f"url?key={KEY}REG")


def test_render_config_hides_key_and_round_trips(env, tmp_path):
    f = write(tmp_path / "c.toml", "[backoff]\ncap = 12.5\n[server]\nallowed_uids = [7]\n")
    cfg = load({**env, "GEMINI_API_KEY": KEY}, "--config", str(f))
    text = cl.render_config(cfg)
    assert KEY not in text
    assert 'api_key = "<set: from env GEMINI_API_KEY>"' in text
    assert "GEMINID_BACKOFF_CAP" in text
    data = tomllib.loads(text)
    del data["upstream"]["api_key"]
    again = write(tmp_path / "again.toml", "")
    again.write_text(text.replace('api_key = "<set', '# api_key = "<set'))
    cfg2 = load(env, "--config", str(again))
    assert attrs.evolve(cfg2, source=None) == attrs.evolve(
        cfg, source=None, upstream=attrs.evolve(cfg.upstream, api_key=None, api_key_source=None)
    )
    # every key of the schema appears, set or as a comment
    for k in cl.SCHEMA.values():
        assert k.field in text


def test_check_config_main(env, tmp_path, capsys, monkeypatch):
    for name in list(os.environ):
        if name.startswith("GEMINID_") or name in ("GEMINI_API_KEY", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", env["HOME"])
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    f = write(tmp_path / "c.toml", "[log]\nlevel = 'debug'\n")
    assert cl.check_config_main(parse("--config", str(f))) == 0
    out, err = capsys.readouterr()
    assert 'level = "debug"' in out and KEY not in out and err == ""
    write(f, "[backoff]\ncap = 'x'\n")
    assert cl.check_config_main(parse("--config", str(f))) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f'geminid: config error: backoff.cap: must be a number > 0, got "x" ({f})\n'


def test_no_api_key_flag(capsys):
    p = argparse.ArgumentParser()
    cl.add_config_arguments(p)
    assert "--api-key " not in p.format_help() and "--api-key-file" in p.format_help()
    for argv in (["--api-key", "x"], ["--api-key=x"], ["--api-ke", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        err = capsys.readouterr().err
        assert "not supported" in err or "ambiguous" in err


def test_every_config_key_has_an_env_name():
    names = [k.env for k in cl.SCHEMA.values()]
    assert len(set(names)) == len(names)
    assert cl.SCHEMA["log.level"].env == "GEMINID_LOG_LEVEL"
    assert cl.SCHEMA["state_dir"].env == "GEMINID_STATE_DIR"
    assert cl.SCHEMA["upstream.endpoint"].env == "GEMINID_UPSTREAM_ENDPOINT"
    assert "source" not in cl.SCHEMA and "upstream.api_key_source" not in cl.SCHEMA


# -- #11.12 environment traps, #9.6 passthrough ---------------------------------------------


def test_google_api_key_is_a_fallback_and_the_source_says_so(env):
    cfg = load({**env, "GOOGLE_API_KEY": KEY})
    assert cfg.upstream.api_key.reveal() == KEY and not cfg.embedded_fake
    assert cfg.upstream.api_key_source == "env GOOGLE_API_KEY"
    both = load({**env, "GOOGLE_API_KEY": "other-key", "GEMINI_API_KEY": KEY})
    assert both.upstream.api_key.reveal() == KEY
    assert both.upstream.api_key_source == "env GEMINI_API_KEY"
    blank = load({**env, "GEMINI_API_KEY": " ", "GOOGLE_API_KEY": KEY})
    assert blank.upstream.api_key_source == "env GOOGLE_API_KEY"
    assert KEY not in cl.render_config(cfg)


def test_google_api_key_and_a_key_file_in_the_environment_conflict(env, tmp_path):
    kf = write(tmp_path / "k", KEY)
    msg = error({**env, "GOOGLE_API_KEY": KEY, "GEMINID_UPSTREAM_API_KEY_FILE": str(kf)})
    assert msg.startswith("upstream.api_key: set either")


def test_daemon_honours_geminid_socket(env, tmp_path):
    sock = tmp_path / "via-env.sock"
    assert load({**env, "GEMINID_SOCKET": str(sock)}).server.socket_path == sock
    # the flag still wins over the environment
    assert load({**env, "GEMINID_SOCKET": str(sock)}, "--socket", "/tmp/f.sock").server.socket_path == Path("/tmp/f.sock")
    same = {**env, "GEMINID_SOCKET": str(sock), "GEMINID_SERVER_SOCKET_PATH": str(sock)}
    assert load(same).server.socket_path == sock
    msg = error({**env, "GEMINID_SOCKET": str(sock), "GEMINID_SERVER_SOCKET_PATH": "/tmp/other"})
    assert msg.startswith("server.socket_path: GEMINID_SOCKET and GEMINID_SERVER_SOCKET_PATH")


def test_passthrough_prefixes_are_immutable_and_let_no_test_variable_through(env):
    assert isinstance(cl.ENV_PASSTHROUGH_PREFIXES, tuple)
    assert not any("TEST" in p for p in cl.ENV_PASSTHROUGH_PREFIXES)
    assert error({**env, "GEMINID_TEST_BREAK": "x"}).startswith("GEMINID_TEST_BREAK: unknown variable")


def test_no_production_module_reads_a_test_environment_variable():
    """#9.6: production code reads no environment variable whose name contains TEST."""
    import re

    root = Path(cl.__file__).resolve().parent.parent
    offenders = []
    pattern = re.compile(r"""(environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*["'][A-Z0-9_]*TEST""")
    for pkg in ("daemon", "protocol"):
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text()
            if pattern.search(text) or re.search(r"""["']GEMINID_TEST_""", text):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
