"""Where the client finds its hub, its token, its home and its TLS material.

Every setting comes from a flag when one is given, else from its ``HASHEX_*``
environment variable, else from a default::

    --server  HASHEX_SERVER       the hub: https://host[:port][/prefix]
    --token   HASHEX_TOKEN        a bearer token, as ``hashex-server token create`` prints it
    --home    HASHEX_HOME         the local store and trust ($XDG_DATA_HOME/hashex,
                                  else ~/.local/share/hashex)
              HASHEX_CA_BUNDLE    a PEM file of the CA(s) that sign the hub's certificate
              HASHEX_CLIENT_CERT  a client certificate (PEM) for a hub that requires
              HASHEX_CLIENT_KEY   mutual TLS, and its unencrypted key: both or neither

An empty variable counts as unset, as shells make it easy to leave one empty;
an empty flag is a mistake and refused.  Every refusal is an ``InputError``
(exit 2) naming the flag or variable and the form expected; none repeats a
token, since messages end up in logs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from client.protocol.errors import InputError

SERVER_VAR = "HASHEX_SERVER"
TOKEN_VAR = "HASHEX_TOKEN"  # noqa: S105 - the variable's name, not a secret
HOME_VAR = "HASHEX_HOME"
CA_BUNDLE_VAR = "HASHEX_CA_BUNDLE"
CLIENT_CERT_VAR = "HASHEX_CLIENT_CERT"
CLIENT_KEY_VAR = "HASHEX_CLIENT_KEY"

SERVER_FORM = "http(s)://host[:port][/prefix], e.g. https://hub.example.org"

# RFC 6750 b64token: what a bearer token may hold; anything else would break
# the Authorization header or smuggle a second header into it.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# A DNS name of letters, digits and hyphens; IP literals are checked apart.
_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")
# A path prefix of plain URL characters: no spaces, controls or escapes to misread.
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")

# Credentials in a URL, to mask before showing it.
_USERINFO_RE = re.compile(r"(?<=://)[^/?#]*@")
# Builds the InputError of one refused hub URL from the reason.
_Refuse = Callable[[str], InputError]


@dataclass(frozen=True)
class ClientSettings:
    """The resolved, checked settings of one ``hashex`` run.

    ``server`` is normalised (lowercase scheme and host, no trailing slash);
    ``token`` is kept out of ``repr`` so no log or traceback shows it.
    """

    server: str | None
    token: str | None = field(repr=False)
    home: Path
    ca_bundle: Path | None
    client_cert: Path | None
    client_key: Path | None

    @classmethod
    def resolve(
        cls,
        *,
        server: str | None = None,
        token: str | None = None,
        home: str | Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> ClientSettings:
        """Settings from flags (the keyword arguments), then ``environ``, then defaults.

        Raises ``InputError`` naming the flag or variable of the first bad setting.
        """
        server_value = _pick("--server", server, SERVER_VAR, environ)
        token_value = _pick("--token", token, TOKEN_VAR, environ)
        home_value = _pick("--home", None if home is None else str(home), HOME_VAR, environ)
        cert = _existing_file(CLIENT_CERT_VAR, environ)
        key = _existing_file(CLIENT_KEY_VAR, environ)
        if (cert is None) != (key is None):
            raise InputError(
                f"{CLIENT_CERT_VAR} and {CLIENT_KEY_VAR} go together: set both "
                "(a PEM certificate and its unencrypted key) or neither"
            )
        return cls(
            server=None if server_value is None else parse_server(*server_value),
            token=None if token_value is None else _check_token(token_value[0]),
            home=_home(home_value, environ),
            ca_bundle=_existing_file(CA_BUNDLE_VAR, environ),
            client_cert=cert,
            client_key=key,
        )

    def require_server(self) -> str:
        """The hub URL, or an ``InputError`` saying how to give one."""
        if self.server is None:
            raise InputError(f"no hub configured: give --server or set {SERVER_VAR}")
        return self.server

    def require_token(self) -> str:
        """The bearer token, or an ``InputError`` saying how to give one."""
        if self.token is None:
            raise InputError(f"no token configured: give --token or set {TOKEN_VAR}")
        return self.token


def parse_server(value: str, source: str = "--server") -> str:
    """Check a hub URL and return it normalised; ``source`` names it in errors.

    Plain ``http://`` is accepted only for loopback hosts: anywhere else the
    bearer token would cross the network in clear.
    """

    shown = _masked(value)

    def refuse(why: str) -> InputError:
        return InputError(f"{source}: {shown!r} {why}; expected {SERVER_FORM}")

    if not value.isascii() or not value.isprintable() or " " in value:
        raise refuse("holds spaces, control or non-ASCII characters")
    if "?" in value or "#" in value:
        raise refuse("has a query or fragment, which a hub URL cannot carry")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise refuse("cannot be parsed as a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not value[len(scheme) :].startswith("://"):
        raise refuse("is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise refuse("carries credentials; give the token with --token or HASHEX_TOKEN")
    host = _host(parts, refuse)
    port = _port(parts, refuse)
    if not _PREFIX_RE.fullmatch(parts.path):
        raise refuse("has a path that is not a plain URL path")
    if scheme == "http" and not is_loopback(host):
        raise InputError(
            f"{source}: {shown!r} is plain http:// to a host other than this machine, so the "
            "token would travel in clear; use https:// (plain http:// is only for "
            "127.0.0.1, [::1] or localhost)"
        )
    shown_host = f"[{host}]" if ":" in host else host
    shown_port = "" if port is None else f":{port}"
    return f"{scheme}://{shown_host}{shown_port}{parts.path.rstrip('/')}"


def _masked(url: str) -> str:
    """``url`` without what may be a secret: credentials, query and fragment."""
    url = _USERINFO_RE.sub("***@", url)
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut] + ("..." if cut < len(url) else "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (no brackets) names this machine: localhost, 127.0.0.0/8, ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(parts: SplitResult, refuse: _Refuse) -> str:
    host = parts.hostname
    if not host:
        raise refuse("names no host")
    # Newer urlsplit refuses brackets around anything but IPv6 itself; earlier
    # 3.11 releases do not, so check here.
    if parts.netloc.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise refuse("has brackets around something that is not an IPv6 address") from None
    if not _HOSTNAME_RE.fullmatch(host):
        raise refuse("has a host that is not a DNS name or IPv4 address")
    return host.lower()


def _port(parts: SplitResult, refuse: _Refuse) -> int | None:
    try:
        port = parts.port
    except ValueError:
        raise refuse("has a port that is not a number from 1 to 65535") from None
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise refuse("has a port that is not a number from 1 to 65535")
    return port


def _pick(
    flag: str, given: str | None, variable: str, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """The value and where it came from: the flag, else a non-empty variable, else None."""
    if given is not None:
        if not given:
            raise InputError(f"{flag} is empty; give a value or leave the flag out")
        return given, flag
    from_env = environ.get(variable)
    if from_env:
        return from_env, variable
    return None


def _check_token(value: str) -> str:
    # Never echo the value: it is a secret, and errors end up in logs.
    if not _TOKEN_RE.fullmatch(value):
        raise InputError(
            f"--token / {TOKEN_VAR}: the token holds characters a bearer token cannot "
            "(spaces, quotes, line breaks...); give it exactly as "
            "`hashex-server token create` printed it"
        )
    return value


def _home(picked: tuple[str, str] | None, environ: Mapping[str, str]) -> Path:
    if picked is not None:
        value, source = picked
        path = Path(value).expanduser()
    else:
        source = HOME_VAR
        path = _default_home(environ)
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"{source}: {path} exists and is not a directory")
    return path


def _default_home(environ: Mapping[str, str]) -> Path:
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    xdg = environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "hashex"
    user_home = environ.get("HOME")
    if not user_home:
        raise InputError(f"no home directory to keep the store in: set {HOME_VAR} or HOME")
    return Path(user_home) / ".local" / "share" / "hashex"


def _existing_file(variable: str, environ: Mapping[str, str]) -> Path | None:
    value = environ.get(variable)
    if not value:
        return None
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise InputError(f"{variable}: {path} is not an existing file; expected a PEM file")
    return path
