"""A real ``hashex-server serve`` as the client tests use it: agencies with key files, and the hub.

The end-to-end, CLI and crash tests run the real hub (``tests.hubserver``)
and drive it with the ``hashex`` verbs.  :func:`register` registers an
agency on its database through the services, as the operator would, and
writes what its people hold: key files and the keyset file a consumer pins.
:class:`RealHub` is the running hub, with the operator's ``hashex-server``
and a few reads and a publish straight over HTTP.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.keys import key_id, write_private_key
from server.services.callers import Role
from tests.client.simhub import COMMAND_SECONDS, SimVersion
from tests.environment import BIN, process_env
from tests.hubserver import HubServer
from tests.server.seeding import add_agency


@dataclass
class RealAgency:
    """An agency registered on a real hub: its key and keyset files, and its tokens."""

    slug: str
    private: list[Ed25519PrivateKey]
    keys: list[Path]
    keyset_file: Path
    tokens: dict[str, str]

    @property
    def key_id(self) -> str:
        """The id of its first key (a root key)."""
        return key_id(self.private[0])


def register(
    database_url: str,
    directory: Path,
    slug: str,
    *,
    keys: int = 1,
    publish_threshold: int = 1,
    roles: Sequence[str] = ("agency-admin", "publisher", "reader"),
) -> RealAgency:
    """Register ``slug`` on the hub's database through the services, as the operator would.

    Its keys (both roles) are written as PEM files and its keyset 1 as the
    keyset file a consumer pins; one token per role in ``roles``.
    """
    agency = add_agency(
        database_url,
        slug,
        keys=keys,
        publish_threshold=publish_threshold,
        roles=[Role(role) for role in roles],
    )
    paths = []
    for number, key in enumerate(agency.keys):
        path = directory / f"{slug}-{number}.pem"
        write_private_key(path, key)
        paths.append(path)
    keyset_file = directory / f"{slug}.keyset.json"
    keyset_file.write_text(agency.document.dumps(), encoding="ascii")
    tokens = {str(role): secret for role, secret in agency.secrets.items()}
    return RealAgency(slug, agency.keys, paths, keyset_file, tokens)


@dataclass(frozen=True)
class RealHub:
    """A running ``hashex-server serve`` on one database."""

    database_url: str
    server: HubServer

    @property
    def url(self) -> str:
        """The hub's base URL (plain http on 127.0.0.1)."""
        return self.server.base_url

    def admin(self, *args: str | Path) -> str:
        """Run ``hashex-server`` on this hub's database; its stdout (it must succeed)."""
        process = subprocess.run(
            [str(BIN / "hashex-server"), *map(str, args)],
            env=process_env(HASHEX_DATABASE_URL=self.database_url),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        assert process.returncode == 0, process.stderr
        return process.stdout

    def latest(self, name: str, token: str) -> int:
        """The set's latest version, as the hub says."""
        with self.server.http() as http:
            response = http.get(f"/v1/sets/{name}", headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            latest: int = response.json()["latest_version"]
            return latest

    def manifest(self, name: str, version: int, token: str) -> bytes:
        """The manifest bytes of one version, as the hub serves them."""
        with self.server.http() as http:
            response = http.get(
                f"/v1/sets/{name}/versions/{version}",
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            text: str = response.json()["manifest"]
            return text.encode("ascii")

    def publish(self, name: str, version: SimVersion, token: str) -> httpx.Response:
        """POST a version built with the protocol library (multipart, as curl -F would)."""
        signatures = json.dumps([s.to_json() for s in version.document.signatures])
        with self.server.http() as http:
            return http.post(
                f"/v1/sets/{name}/versions",
                headers={"Authorization": f"Bearer {token}"},
                files={
                    "manifest": ("manifest", version.document.data),
                    "signatures": ("signatures", signatures.encode()),
                    "delta": ("delta", version.delta),
                },
            )
