"""TLS as the client speaks it: a private CA, hostname checks, mutual TLS.

A CA made in the test signs the certificates.  The hub is the real
``hashex-server serve`` with ``--certfile``/``--keyfile`` on 127.0.0.1.  serve
has no option to require client certificates, so mutual TLS is tested against
a small Python TLS server that requires one.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client.errors import HubUnreachableError
from client.limits import Limits
from client.protocol.errors import InputError
from client.settings import ClientSettings
from client.transport import HubClient, tls_context
from tests.certificates import LOCALHOST, Authority, Issued, make_authority
from tests.environment import BIN, process_env
from tests.hubserver import StartHub

LIMITS = Limits(connect_timeout=2.0, read_timeout=2.0)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    """The private CA of this test."""
    return make_authority(tmp_path, "hashex-test-ca")


# -- the real hub over TLS ---------------------------------------------------------------


def tls_hub(start_hub: StartHub, database_url: str, served: Issued, trust: Path) -> str:
    """``hashex-server serve`` with ``served`` as its certificate; its https URL.

    Started once it answers over TLS verified with ``trust``; stopped at the test's end.
    """
    env = process_env(HASHEX_DATABASE_URL=database_url)
    subprocess.run([str(BIN / "hashex-server"), "init"], env=env, check=True, capture_output=True)
    # Any TLS answer will do: the name on the certificate may be wrong on purpose.
    context = ssl.create_default_context(cafile=str(trust))
    context.check_hostname = False
    hub = start_hub(
        database_url, workers=1, certfile=served.cert, keyfile=served.key, verify=context
    )
    return hub.base_url


def client_for(server: str, **environ: Path) -> HubClient:
    """A HubClient of ``server`` with HASHEX_* TLS variables from ``environ``."""
    settings = ClientSettings.resolve(
        server=server,
        environ={"HOME": "/nonexistent"} | {name: str(path) for name, path in environ.items()},
    )
    return HubClient(settings, LIMITS)


def test_the_hub_is_verified_against_the_private_ca(
    sqlite_database_url: str, authority: Authority, tmp_path: Path, start_hub: StartHub
) -> None:
    served = authority.issue(tmp_path, "hub", [x509.IPAddress(LOCALHOST)])
    other = make_authority(tmp_path, "another-ca")
    url = tls_hub(start_hub, sqlite_database_url, served, authority.cert)
    with client_for(url, HASHEX_CA_BUNDLE=authority.cert) as hub:
        value, headers = hub.get_json("/v1/health")
    assert value == {"status": "ok"}
    assert headers["content-type"] == "application/json"
    # Without the private CA, the system's store knows nothing of it.
    with (
        client_for(url) as hub,
        pytest.raises(
            HubUnreachableError,
            match=f"cannot reach the hub at {url}/v1/health: .*certificate verify failed",
        ),
    ):
        hub.get_json("/v1/health")
    # HASHEX_CA_BUNDLE replaces the trust anchors: another CA proves nothing.
    with (
        client_for(url, HASHEX_CA_BUNDLE=other.cert) as hub,
        pytest.raises(HubUnreachableError, match="certificate verify failed"),
    ):
        hub.get_json("/v1/health")


def test_a_certificate_for_another_name_is_refused(
    sqlite_database_url: str, authority: Authority, tmp_path: Path, start_hub: StartHub
) -> None:
    served = authority.issue(tmp_path, "elsewhere", [x509.DNSName("hub.example.org")])
    url = tls_hub(start_hub, sqlite_database_url, served, authority.cert)
    with (
        client_for(url, HASHEX_CA_BUNDLE=authority.cert) as hub,
        pytest.raises(HubUnreachableError, match="certificate verify failed: IP address mismatch"),
    ):
        hub.get_json("/v1/health")


# -- mutual TLS ------------------------------------------------------------------------


def _common_names(certificate: x509.Certificate) -> list[str]:
    attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [str(attribute.value) for attribute in attributes]


class _WhoAmI(BaseHTTPRequestHandler):
    """Answers every GET with the common name of the client's certificate."""

    def do_GET(self) -> None:
        assert isinstance(self.connection, ssl.SSLSocket)
        peer = self.connection.getpeercert(binary_form=True)
        names = [] if peer is None else _common_names(x509.load_der_x509_certificate(peer))
        body = json.dumps({"client": names}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the answers, not a log."""


@contextmanager
def mutual_tls_server(served: Issued, client_ca: Path) -> Iterator[str]:
    """An https server on 127.0.0.1 that requires a client certificate from ``client_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(served.cert, served.key)
    server = HTTPServer(("127.0.0.1", 0), _WhoAmI)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_mutual_tls_presents_the_client_certificate(authority: Authority, tmp_path: Path) -> None:
    served = authority.issue(tmp_path, "hub", [x509.IPAddress(LOCALHOST)])
    analyst = authority.issue(
        tmp_path, "analyst", [x509.DNSName("analyst.example.org")], ExtendedKeyUsageOID.CLIENT_AUTH
    )
    with mutual_tls_server(served, authority.cert) as url:
        with client_for(
            url,
            HASHEX_CA_BUNDLE=authority.cert,
            HASHEX_CLIENT_CERT=analyst.cert,
            HASHEX_CLIENT_KEY=analyst.key,
        ) as hub:
            assert hub.get_json("/whoami")[0] == {"client": ["analyst"]}
        with (
            client_for(url, HASHEX_CA_BUNDLE=authority.cert) as hub,
            pytest.raises(HubUnreachableError, match=f"cannot reach the hub at {url}/whoami"),
        ):
            hub.get_json("/whoami")


def test_an_encrypted_client_key_is_refused_without_a_prompt(
    authority: Authority, tmp_path: Path
) -> None:
    analyst = authority.issue(
        tmp_path, "analyst", [x509.DNSName("analyst.example.org")], password=b"passphrase"
    )
    settings = ClientSettings.resolve(
        environ={
            "HOME": "/nonexistent",
            "HASHEX_CLIENT_CERT": str(analyst.cert),
            "HASHEX_CLIENT_KEY": str(analyst.key),
        }
    )
    with pytest.raises(InputError, match="HASHEX_CLIENT_KEY: the key is encrypted; hashex never"):
        tls_context(settings)


def test_a_key_of_another_certificate_is_refused(authority: Authority, tmp_path: Path) -> None:
    one = authority.issue(tmp_path, "one", [x509.DNSName("one.example.org")])
    two = authority.issue(tmp_path, "two", [x509.DNSName("two.example.org")])
    settings = ClientSettings.resolve(
        environ={
            "HOME": "/nonexistent",
            "HASHEX_CLIENT_CERT": str(one.cert),
            "HASHEX_CLIENT_KEY": str(two.key),
        }
    )
    with pytest.raises(InputError, match="HASHEX_CLIENT_CERT / HASHEX_CLIENT_KEY: cannot load"):
        tls_context(settings)


def test_a_ca_bundle_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    settings = ClientSettings.resolve(
        server="https://hub.example.org",
        environ={"HOME": "/nonexistent", "HASHEX_CA_BUNDLE": str(bundle)},
    )
    with pytest.raises(InputError, match=r"HASHEX_CA_BUNDLE: cannot load .*bundle.pem"):
        HubClient(settings)


def test_verification_is_on_with_the_ca_bundle_as_the_only_anchor(
    authority: Authority,
) -> None:
    settings = ClientSettings.resolve(
        environ={"HOME": "/nonexistent", "HASHEX_CA_BUNDLE": str(authority.cert)}
    )
    context = tls_context(settings)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    anchors = [x509.load_der_x509_certificate(der) for der in context.get_ca_certs(True)]
    assert [_common_names(anchor) for anchor in anchors] == [["hashex-test-ca"]]
