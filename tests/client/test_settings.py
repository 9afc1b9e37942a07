"""Client settings: flags over HASHEX_* variables over defaults, and every refusal named."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.protocol.errors import InputError
from client.settings import ClientSettings, is_loopback, parse_server

TOKEN = "hxt_" + "A" * 43


def resolve(environ: dict[str, str], **flags: str) -> ClientSettings:
    """Settings from ``flags`` over ``environ``, with a HOME so defaults resolve."""
    return ClientSettings.resolve(environ={"HOME": "/home/analyst"} | environ, **flags)


def test_flags_win_over_variables(tmp_path: Path) -> None:
    environ = {
        "HASHEX_SERVER": "https://env.example.org",
        "HASHEX_TOKEN": "hxt_from-env",
        "HASHEX_HOME": str(tmp_path / "env-home"),
    }
    settings = resolve(
        environ, server="https://flag.example.org", token=TOKEN, home=str(tmp_path / "flag")
    )
    assert settings.server == "https://flag.example.org"
    assert settings.token == TOKEN
    assert settings.home == tmp_path / "flag"


def test_variables_win_over_defaults(tmp_path: Path) -> None:
    environ = {
        "HASHEX_SERVER": "https://env.example.org:8443/hub/",
        "HASHEX_TOKEN": TOKEN,
        "HASHEX_HOME": str(tmp_path / "env-home"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
    }
    settings = resolve(environ)
    assert settings.server == "https://env.example.org:8443/hub"
    assert settings.token == TOKEN
    assert settings.home == tmp_path / "env-home"


def test_defaults_follow_xdg_then_home(tmp_path: Path) -> None:
    bare = resolve({})
    assert bare.server is None
    assert bare.token is None
    assert bare.home == Path("/home/analyst/.local/share/hashex")
    assert bare.ca_bundle is None
    assert bare.client_cert is None
    assert bare.client_key is None
    assert resolve({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "hashex"
    # The XDG spec: a relative XDG_DATA_HOME is invalid and ignored.
    assert resolve({"XDG_DATA_HOME": "relative"}).home == Path("/home/analyst/.local/share/hashex")


def test_empty_variables_count_as_unset() -> None:
    settings = resolve({"HASHEX_SERVER": "", "HASHEX_TOKEN": "", "HASHEX_CA_BUNDLE": ""})
    assert settings.server is None
    assert settings.token is None
    assert settings.ca_bundle is None


def test_empty_flag_is_refused() -> None:
    with pytest.raises(InputError, match="--server is empty"):
        resolve({}, server="")


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve({"HASHEX_HOME": "store"}).home == tmp_path / "store"


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"HASHEX_HOME: .* is not a directory"):
        resolve({"HASHEX_HOME": str(tmp_path / "file")})


def test_no_home_at_all_is_refused() -> None:
    with pytest.raises(InputError, match="set HASHEX_HOME or HOME"):
        ClientSettings.resolve(environ={})


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("https://hub.example.org", "https://hub.example.org"),
        ("HTTPS://Hub.Example.ORG/", "https://hub.example.org"),
        ("https://hub.example.org:8443/hashex/", "https://hub.example.org:8443/hashex"),
        ("https://10.1.2.3", "https://10.1.2.3"),
        ("https://[2001:db8::1]:443", "https://[2001:db8::1]:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.8.9.10", "http://127.8.9.10"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://LOCALHOST", "http://localhost"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0::1]", "http://[::1]"),
    ],
)
def test_hub_urls_accepted(given: str, normalised: str) -> None:
    assert parse_server(given) == normalised
    assert resolve({"HASHEX_SERVER": given}).server == normalised


@pytest.mark.parametrize(
    "url",
    [
        "http://hub.example.org",
        "http://10.1.2.3:8080",
        "http://192.168.0.1",
        "http://[2001:db8::1]",
        "http://localhost.example.org",
        "http://127.0.0.1.nip.io",
        "http://0.0.0.0:8080",
    ],
)
def test_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve({}, server=url)
    message = str(caught.value)
    assert message.startswith("--server: ")
    assert "token would travel in clear" in message
    assert "https://" in message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("hub.example.org", "not an http:// or https:// URL"),
        ("ftp://hub.example.org", "not an http:// or https:// URL"),
        ("https:/hub.example.org", "not an http:// or https:// URL"),
        ("https://hub.example.org/?token=x", "query or fragment"),
        ("https://hub.example.org/#top", "query or fragment"),
        ("https://user:pass@hub.example.org", "carries credentials"),
        ("https://token@hub.example.org", "carries credentials"),
        ("https://", "names no host"),
        ("https://hub.example.org:0", "port"),
        ("https://hub.example.org:70000", "port"),
        ("https://hub.example.org:https", "port"),
        ("https://hub.example.org:", "port"),
        ("https://hub_example.org", "not a DNS name"),
        ("https://-hub.example.org", "not a DNS name"),
        ("https://[::1", "cannot be parsed"),
        ("https://hub.example.org/a b", "spaces"),
        ("https://hub.example.org/\n", "control"),
        ("https://hüb.example.org", "non-ASCII"),
        ("https://hub.example.org/a\\b", "not a plain URL path"),
    ],
)
def test_bad_hub_urls_are_refused_with_the_expected_form(url: str, why: str) -> None:
    for environ, flags, source in (
        ({}, {"server": url}, "--server"),
        ({"HASHEX_SERVER": url}, {}, "HASHEX_SERVER"),
    ):
        with pytest.raises(InputError) as caught:
            resolve(environ, **flags)
        message = str(caught.value)
        assert message.startswith(f"{source}: ")
        assert why in message
        assert "expected http(s)://host[:port][/prefix]" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://analyst:hunter2@hub.example.org",
        "https://hub.example.org/?hunter2",
        "https://hub.example.org/#hunter2",
        "http://hunter2@hub.example.org",
    ],
)
def test_refusals_do_not_repeat_what_may_be_a_secret(url: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve({}, server=url)
    assert "hunter2" not in str(caught.value)
    assert "hub.example.org" in str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("128.0.0.1", False),
        ("::2", False),
        ("localhost6", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("token", ["has space", "line\nbreak", 'quo"te', "tab\t", "é"])
def test_bad_token_is_refused_without_repeating_it(token: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve({"HASHEX_TOKEN": token})
    assert "HASHEX_TOKEN" in str(caught.value)
    assert token not in str(caught.value)


def test_token_stays_out_of_repr() -> None:
    settings = resolve({}, token=TOKEN)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)


def test_require_server_and_token_say_how_to_give_them() -> None:
    bare = resolve({})
    with pytest.raises(InputError, match=r"no hub configured: give --server or set HASHEX_SERVER"):
        bare.require_server()
    with pytest.raises(InputError, match=r"no token configured: give --token or set HASHEX_TOKEN"):
        bare.require_token()
    full = resolve({}, server="https://hub.example.org", token=TOKEN)
    assert full.require_server() == "https://hub.example.org"
    assert full.require_token() == TOKEN


def test_tls_files_are_resolved(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    settings = resolve(
        {
            "HASHEX_CA_BUNDLE": str(tmp_path / "ca.pem"),
            "HASHEX_CLIENT_CERT": str(tmp_path / "cert.pem"),
            "HASHEX_CLIENT_KEY": str(tmp_path / "key.pem"),
        }
    )
    assert settings.ca_bundle == tmp_path / "ca.pem"
    assert settings.client_cert == tmp_path / "cert.pem"
    assert settings.client_key == tmp_path / "key.pem"


@pytest.mark.parametrize(
    "variable", ["HASHEX_CA_BUNDLE", "HASHEX_CLIENT_CERT", "HASHEX_CLIENT_KEY"]
)
def test_missing_tls_file_is_refused(variable: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{variable}: .*missing.pem is not an existing file"):
        resolve({variable: str(tmp_path / "missing.pem")})


def test_a_directory_is_not_a_ca_bundle(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"HASHEX_CA_BUNDLE: .* not an existing file"):
        resolve({"HASHEX_CA_BUNDLE": str(tmp_path)})


@pytest.mark.parametrize("given", ["HASHEX_CLIENT_CERT", "HASHEX_CLIENT_KEY"])
def test_client_certificate_and_key_go_together(given: str, tmp_path: Path) -> None:
    (tmp_path / "one.pem").write_text("")
    with pytest.raises(InputError, match="HASHEX_CLIENT_CERT and HASHEX_CLIENT_KEY go together"):
        resolve({given: str(tmp_path / "one.pem")})
