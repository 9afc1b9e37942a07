"""``hashex keygen`` and ``hashex keyset``: an agency's keys and signed keysets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.commands.common import emit, json_option, reports_errors
from client.keysets import KeyChoice, make_keyset
from client.protocol.documents import sha256_hex
from client.protocol.errors import InputError
from client.protocol.keys import key_id, public_key_to_pem, read_private_key, write_private_key

P = ParamSpec("P")
R = TypeVar("R")


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (PKCS#8 PEM, mode 0600).",
)
@json_option
@reports_errors
def keygen(out: Path, as_json: bool) -> None:
    """Make a new Ed25519 key; print its key id.

    The private key goes to OUT (never overwriting a file) and its public
    half to OUT with ``.pub.pem``, ready to hand to consumers for pinning.
    """
    public_path = out.with_name(f"{out.stem}.pub.pem")
    if out.exists():
        raise InputError(f"{out}: already exists; refusing to overwrite a key")
    if public_path.exists():
        raise InputError(f"{public_path}: already exists; refusing to overwrite")
    key = Ed25519PrivateKey.generate()
    write_private_key(out, key)
    public_path.write_bytes(public_key_to_pem(key.public_key()))
    kid = key_id(key)
    emit(as_json, {"keyid": kid, "private": str(out), "public": str(public_path)}, kid)


@click.group()
def keyset() -> None:
    """Make and rotate an agency's signed keysets."""


def _key_paths(option: str, help_text: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option(
        option,
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help_text,
    )


@keyset.command("init")
@click.argument("agency")
@_key_paths("--key", "A private key holding both roles (root and publish).")
@_key_paths("--root", "A root key: private to sign, or public to list only.")
@_key_paths("--publish", "A publish key (public or private PEM).")
@click.option(
    "--root-threshold",
    type=click.IntRange(min=1),
    default=None,
    help="Root signatures a keyset needs (default 1).",
)
@click.option(
    "--publish-threshold",
    type=click.IntRange(min=1),
    default=None,
    help="Publish signatures a manifest needs (default 1).",
)
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(min=1, max=3650),
    default=365,
    show_default=True,
    help="Days until the keyset expires.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the keyset file (JSON).",
)
@json_option
@reports_errors
def keyset_init(
    agency: str,
    key: Sequence[Path],
    root: Sequence[Path],
    publish: Sequence[Path],
    root_threshold: int | None,
    publish_threshold: int | None,
    expires_days: int,
    out: Path,
    as_json: bool,
) -> None:
    """Write AGENCY's signed keyset 1 to OUT, signed by its own root keys."""
    if out.exists():
        raise InputError(f"{out}: already exists; refusing to overwrite a keyset file")
    choice = KeyChoice(
        both=[read_private_key(path) for path in key],
        roots=list(root),
        publishers=list(publish),
        root_threshold=root_threshold,
        publish_threshold=publish_threshold,
    )
    document = make_keyset(agency, 1, choice, expires_days)
    out.write_text(document.dumps(), encoding="ascii")
    emit(
        as_json,
        {"agency": agency, "version": 1, "file": str(out), "sha256": sha256_hex(document.data)},
        f"wrote keyset 1 of {agency} to {out}",
    )
