"""Contexts (`aether_node.contexts`, shared by the CLI and the MCP service): the config file's format both
ways, its errors (file and line named, nothing half-read), where it lives, that it is written 0600, and
the `dev` context that `dev up` records. Plus which cluster and key a command uses (`_common.target`):
flags and environment variables win."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether_cli._common import Common, plural, target
from aether_node import contexts as _contexts
from aether_node.contexts import Config, ConfigError, Context

PROD = Context(name="prod", cluster=("https://a.example:9090", "https://b.example:9090"), api_key="k" * 20)
DEV = Context(name="dev", cluster=("http://127.0.0.1:9090",))


def test_render_then_parse_gives_the_same_config() -> None:
    config = Config(contexts=(DEV, PROD), current="prod")
    assert _contexts.parse(_contexts.render(config), "config.toml") == config
    assert _contexts.parse(_contexts.render(Config()), "config.toml") == Config()


@given(
    name=st.from_regex(_contexts.NAME, fullmatch=True),
    url=st.text(min_size=1, max_size=40),
    key=st.none() | st.text(max_size=40),
)
def test_any_name_url_and_key_survive_the_round_trip(name: str, url: str, key: str | None) -> None:
    config = Config(contexts=(Context(name=name, cluster=(url,), api_key=key),), current=name)
    assert _contexts.parse(_contexts.render(config), "config.toml") == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("current-context = \n", "config.toml: Invalid value (at line 1, column 19)"),
        ("colour = 1\n", "config.toml: unknown key colour (known: contexts, current-context)"),
        ("[contexts.a]\ncluster = []\n", "[contexts.a]: cluster must be a non-empty list of management URLs"),
        ('[contexts.a]\ncluster = ["u"]\napi_key = "x"\n', "[contexts.a]: unknown key api_key (known"),
        ('[contexts.a]\ncluster = ["u"]\napi-key = 3\n', "[contexts.a]: api-key must be a string"),
        ('current-context = "b"\n[contexts.a]\ncluster = "u"\n', "current-context 'b' names no [contexts.b]"),
        ("contexts = 3\n", "contexts must be a table of [contexts.NAME] tables"),
    ],
)
def test_a_malformed_file_is_refused_naming_where(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _contexts.parse(text, "config.toml")
    assert message in str(raised.value)
    assert str(raised.value).startswith("config.toml: ")


def test_one_url_may_be_a_string() -> None:
    config = _contexts.parse('[contexts.a]\ncluster = "http://h:1"\n', "c")
    assert config.get("a") == Context(name="a", cluster=("http://h:1",))


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 65, "é"])
def test_bad_context_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="context name"):
        _contexts.check_name(name)


def test_the_file_follows_xdg() -> None:
    assert _contexts.config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/aether/config.toml")
    assert _contexts.config_path({"HOME": "/h"}) == Path("/h/.config/aether/config.toml")
    # the spec: a relative XDG_CONFIG_HOME is ignored
    assert _contexts.config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.config/aether/config.toml"
    )


def test_save_writes_owner_only_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "aether" / "config.toml"
    _contexts.save(path, Config(contexts=(PROD,), current="prod"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _contexts.load(path).get("prod") == PROD
    assert _contexts.loose_mode(path) is None
    path.chmod(0o644)
    assert _contexts.loose_mode(path) == 0o644
    _contexts.save(path, Config())
    assert _contexts.load(path) == Config()
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary left


def test_a_missing_file_is_an_empty_config_and_an_unreadable_one_an_error(tmp_path: Path) -> None:
    assert _contexts.load(tmp_path / "none.toml") == Config()
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"bin.toml: not UTF-8 text \(byte 0\)"):
        _contexts.load(tmp_path / "bin.toml")
    if os.geteuid() != 0:  # root reads whatever the mode says
        (tmp_path / "locked.toml").write_text("")
        (tmp_path / "locked.toml").chmod(0)
        with pytest.raises(ConfigError, match="cannot read it"):
            _contexts.load(tmp_path / "locked.toml")


def test_save_into_an_unwritable_place_says_where(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write it"):
        _contexts.save(tmp_path / "file" / "aether" / "config.toml", Config())


def test_config_edits() -> None:
    config = Config(contexts=(DEV,)).with_context(PROD)
    assert [c.name for c in config.contexts] == ["dev", "prod"]
    moved = Context(name="dev", cluster=("http://other:1",))
    assert config.with_context(moved).contexts == (moved, PROD)  # replaced in place
    current = Config(contexts=(DEV, PROD), current="prod")
    assert current.without("prod") == Config(contexts=(DEV,), current=None)
    assert current.without("dev") == Config(contexts=(PROD,), current="prod")


def test_dev_up_records_the_dev_context_current_only_if_none_is(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = tmp_path / "aether" / "config.toml"
    said = _contexts.register_dev(["http://127.0.0.1:1"], environ)
    assert said == f"context 'dev' recorded in {path} (now current)"
    assert _contexts.load(path) == Config(
        contexts=(Context(name="dev", cluster=("http://127.0.0.1:1",)),), current="dev"
    )
    _contexts.save(path, Config(contexts=(PROD, *_contexts.load(path).contexts), current="prod"))
    said = _contexts.register_dev(["http://127.0.0.1:2"], environ)
    assert said.endswith("(current: 'prod')")
    config = _contexts.load(path)
    assert config.current == "prod" and config.get("dev") == Context(
        name="dev", cluster=("http://127.0.0.1:2",)
    )
    path.write_text("not toml [")
    assert _contexts.register_dev(["http://127.0.0.1:3"], environ).startswith("context 'dev' not recorded: ")
    assert path.read_text() == "not toml ["  # a broken file is left for its owner to fix


# ---------------------------------------------------------------- which cluster a command uses


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no ./.aether-dev/ here
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    _contexts.save(_contexts.config_path(environ), Config(contexts=(DEV, PROD), current="prod"))
    return environ


def test_the_current_context_gives_cluster_and_key(environ: dict[str, str]) -> None:
    chosen = target(Common(), environ)
    assert (chosen.urls, chosen.api_key, chosen.source) == (
        list(PROD.cluster),
        PROD.api_key,
        "context 'prod'",
    )


def test_the_api_key_flag_wins_over_the_contexts_key(environ: dict[str, str]) -> None:
    chosen = target(Common(api_key="flag-key"), environ)
    assert (chosen.urls, chosen.api_key) == (list(PROD.cluster), "flag-key")


def test_cluster_flag_wins_and_the_contexts_key_is_not_sent_elsewhere(environ: dict[str, str]) -> None:
    chosen = target(Common(cluster="http://elsewhere:1"), environ)
    assert (chosen.urls, chosen.api_key, chosen.source) == (["http://elsewhere:1"], None, "--cluster")


def test_context_flag_picks_another_context(environ: dict[str, str]) -> None:
    chosen = target(Common(context="dev"), environ)
    assert (chosen.urls, chosen.api_key) == (list(DEV.cluster), None)


def test_an_unknown_context_is_bad_input(environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        target(Common(context="staging"), environ)
    assert exited.value.code == 2
    path = _contexts.config_path(environ)
    assert capsys.readouterr().err == (
        f"aether: error: no context 'staging' in {path} (known: dev, prod; see `aether context list`)\n"
    )


def test_a_key_file_readable_by_others_is_warned_about(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _contexts.config_path(environ)
    path.chmod(0o644)
    target(Common(), environ)
    assert (
        f"aether: warning: {path} holds API keys and is readable by others (mode 644)"
        in capsys.readouterr().err
    )


def test_output_options() -> None:
    assert (Common().output, Common().json, Common().wide) == ("table", False, False)
    assert (Common(json=True).output, Common(json=True).json) == ("json", True)
    assert (Common(output="json").json, Common(output="wide").wide) == (True, True)


@pytest.mark.parametrize(
    ("count", "word", "many", "text"),
    [(0, "node", None, "0 nodes"), (1, "node", None, "1 node"), (2, "node", None, "2 nodes"),
     (1, "replica", None, "1 replica"), (3, "entry", "entries", "3 entries")],
)  # fmt: skip
def test_plural(count: int, word: str, many: str | None, text: str) -> None:
    assert plural(count, word, many) == text


def test_the_default_target_is_the_named_or_current_context_else_the_dev_cluster(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    here = tmp_path / "work"
    here.mkdir()
    assert _contexts.default_target(environ, cwd=here) is None
    (here / ".aether-dev").mkdir()
    (here / ".aether-dev" / "cluster.json").write_text(json.dumps({"management": ["http://127.0.0.1:9"]}))
    dev = _contexts.default_target(environ, cwd=here)
    assert dev is not None and dev.urls == ("http://127.0.0.1:9",) and dev.api_key is None
    path = _contexts.config_path(environ)
    prod = Context(name="prod", cluster=("https://a.example:9090",), api_key="k-prod")
    _contexts.save(path, Config(contexts=(prod,), current="prod"))
    found = _contexts.default_target(environ, cwd=here)
    assert found is not None and found.urls == prod.cluster and found.api_key == "k-prod"
    assert found.source == "context 'prod'" and found.config_path == path
    with pytest.raises(_contexts.ConfigError, match="no context 'staging'"):
        _contexts.default_target({**environ, "AETHER_CONTEXT": "staging"}, cwd=here)
    (here / ".aether-dev" / "cluster.json").write_text("{not json")
    _contexts.save(path, Config(contexts=(prod,)))
    with pytest.raises(_contexts.ConfigError, match="not a dev cluster record"):
        _contexts.default_target(environ, cwd=here)


PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAWWgAwIBAgIUQ\n-----END CERTIFICATE-----\n"


def test_the_cluster_ca_survives_the_round_trip_and_a_bad_one_is_refused() -> None:
    config = Config(contexts=(Context(name="prod", cluster=("https://a:1",), ca_cert=PEM),), current="prod")
    assert _contexts.parse(_contexts.render(config), "config.toml") == config
    with pytest.raises(ConfigError, match=r"\[contexts.prod\]: ca-cert must be a PEM certificate"):
        _contexts.parse('[contexts.prod]\ncluster = "https://a:1"\nca-cert = "nope"\n', "config.toml")


def test_the_ca_file_flag_wins_over_the_context_and_a_bad_file_stops(tmp_path: Path) -> None:
    path = _contexts.config_path({"XDG_CONFIG_HOME": str(tmp_path)})
    from aether_kv import cluster_ca

    other = cluster_ca("s" * 32).pem.decode()  # a file given must parse: a real certificate
    _contexts.save(
        path, Config(contexts=(Context(name="p", cluster=("https://a:1",), ca_cert=PEM),), current="p")
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert target(Common(), environ).ca_cert == PEM
    (tmp_path / "ca.pem").write_text(other)
    assert target(Common(ca_file=tmp_path / "ca.pem"), environ).ca_cert == other
    (tmp_path / "bad.pem").write_text("not a certificate")
    (tmp_path / "cut.pem").write_text(other[:100])  # the marker, then a certificate cut short
    for bad in ("bad.pem", "cut.pem"):
        with pytest.raises(SystemExit) as stopped:
            target(Common(ca_file=tmp_path / bad), environ)
        assert stopped.value.code == 2


def test_an_api_client_refuses_a_ca_that_is_not_a_certificate() -> None:
    from aether_kv import cluster_ca
    from aether_node.client import ApiClient, ClusterUnreachableError

    with pytest.raises(ValueError, match="the cluster CA certificate is not a PEM certificate"):
        ApiClient(["https://127.0.0.1:1"], ca_cert=PEM).list_blueprints()
    with pytest.raises(ClusterUnreachableError):  # a usable CA: the request goes out (nothing listens)
        ApiClient(["https://127.0.0.1:1"], ca_cert=cluster_ca("s" * 32).pem.decode()).list_blueprints()
