"""Users, tokens, rights, TLS, mutual TLS and protected mode, through pyarrow.flight's documented
API alone: `authenticate_basic_token`, `FlightCallOptions(headers=...)`, and `flight.connect`
with `tls_root_certs`, `cert_chain` and `private_key`. Certificates are made here with the
`cryptography` package; the users file with `flightcache hash-password` and `new-token`."""

import datetime
import ipaddress
import json
import os
import subprocess

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import _binary
from flight_helpers import action, advance_clock, get, put

TABLE = pa.table({"x": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", None]})


# --- users file -------------------------------------------------------------------------------


def hash_password(password):
    """The `password = "..."` line `flightcache hash-password` prints for `password`."""
    env = dict(os.environ, FLIGHTCACHE_PASSWORD=password)
    out = subprocess.run(
        [_binary(), "hash-password"], env=env, capture_output=True, text=True, check=True
    ).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("password = ")]
    return line


def new_token():
    """A fresh API token and its `tokens = [...]` line, from `flightcache new-token`."""
    out = subprocess.run(
        [_binary(), "new-token"], capture_output=True, text=True, check=True
    ).stdout
    token = next(l for l in out.splitlines() if l.startswith("token: ")).removeprefix("token: ")
    line = next(l for l in out.splitlines() if l.startswith("users file: "))
    return token, line.removeprefix("users file: ")


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    """A users file with an admin, a prefix-limited alice, a read-only reader and a token-only
    ci; returns (path, ci's token)."""
    token, token_line = new_token()
    text = f"""
[users.admin]
{hash_password("admin-pw")}
read = ["*"]
write = ["*"]
admin = true

[users.alice]
{hash_password("alice-pw")}
read = ["team-a/*", "shared/*"]
write = ["team-a/*"]

[users.reader]
{hash_password("reader-pw")}
read = ["*"]

[users.ci]
{token_line}
read = ["shared/*"]
"""
    path = tmp_path_factory.mktemp("users") / "users.toml"
    path.write_text(text)
    return str(path), token


# --- certificates -----------------------------------------------------------------------------


def _pem(cert, key):
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class Authority:
    """A throwaway certificate authority that issues server and client certificates."""

    def __init__(self, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name, server):
        """(certificate PEM, private key PEM) for `common_name`: a server certificate for
        localhost and 127.0.0.1, or a client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return _pem(builder.sign(self.key, hashes.SHA256()), key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate it signed, and their files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority("flightcache test CA")
    cert, key = ca.issue("localhost", server=True)
    files = {"ca": ca.pem, "cert": cert, "key": key}
    for name, pem in files.items():
        (folder / f"{name}.pem").write_bytes(pem)
    paths = {name: str(folder / f"{name}.pem") for name in files}
    return ca, paths


# --- helpers ----------------------------------------------------------------------------------


def log_in(client, user, password):
    """pyarrow's documented login: Handshake with basic credentials, then the bearer header."""
    header = client.authenticate_basic_token(user, password)
    return flight.FlightCallOptions(headers=[header])


def bearer(token):
    return flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + token.encode())])


# --- authentication ---------------------------------------------------------------------------


def test_basic_login_then_put_and_get_with_the_returned_header(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    key, value = client.authenticate_basic_token("alice", "alice-pw")
    assert key == b"authorization" and value.startswith(b"Bearer fct_")
    options = flight.FlightCallOptions(headers=[(key, value)])
    put(client, "team-a/t", TABLE, options=options)
    assert get(client, "team-a/t", options).equals(TABLE)
    me = json.loads(action(client, "whoami", options=options))
    assert me["user"] == "alice" and me["proof"] == "password"
    assert me["read"] == ["team-a/*", "shared/*"] and me["write"] == ["team-a/*"]
    assert me["admin"] is False


def test_without_credentials_every_rpc_is_unauthenticated(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    calls = [
        lambda: get(client, "k"),
        lambda: put(client, "k", TABLE),
        lambda: list(client.list_flights()),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_command("k")),
        lambda: client.get_schema(flight.FlightDescriptor.for_command("k")),
        lambda: list(client.list_actions()),
        lambda: action(client, "clear"),
    ]
    for call in calls:
        # pyarrow raises get_schema's Flight errors as a plain OSError naming the code.
        with pytest.raises(
            (flight.FlightUnauthenticatedError, OSError), match="(?s)unauthenticated.*authenticate_basic_token"
        ):
            call()


def test_a_wrong_password_and_an_unknown_user_are_refused_alike(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    for user, password in [("alice", "wrong"), ("mallory", "alice-pw")]:
        with pytest.raises(flight.FlightUnauthenticatedError, match="user name or password"):
            client.authenticate_basic_token(user, password)


def test_forged_and_expired_tokens_are_unauthenticated(start_server, users):
    server = start_server("--users", users[0], "--token-ttl", "10m", "--test-clock")
    client = flight.connect(server.url)
    with pytest.raises(flight.FlightUnauthenticatedError, match="bearer token is unknown"):
        list(client.list_flights(options=bearer("fct_forged-by-a-stranger")))
    options = log_in(client, "reader", "reader-pw")
    admin = log_in(client, "admin", "admin-pw")
    advance_clock(client, 599, admin)
    list(client.list_flights(options=options))
    advance_clock(client, 1, admin)
    with pytest.raises(flight.FlightUnauthenticatedError, match="session token has expired"):
        list(client.list_flights(options=options))
    # Logging in again gives a new session.
    list(client.list_flights(options=log_in(client, "reader", "reader-pw")))
    # Only an admin moves the clock.
    with pytest.raises(flight.FlightUnauthorizedError):
        advance_clock(client, 1, log_in(client, "reader", "reader-pw"))


def test_static_tokens_are_bearer_tokens(start_server, users):
    path, token = users
    server = start_server("--users", path)
    client = flight.connect(server.url)
    admin = log_in(client, "admin", "admin-pw")
    put(client, "shared/s", TABLE, options=admin)
    assert get(client, "shared/s", bearer(token)).equals(TABLE)
    me = json.loads(action(client, "whoami", options=bearer(token)))
    assert me["user"] == "ci" and me["proof"] == "token"
    with pytest.raises(flight.FlightUnauthorizedError):
        put(client, "shared/s", TABLE, options=bearer(token))


# --- rights -----------------------------------------------------------------------------------


def test_a_read_only_user_may_not_put_drop_or_clear(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    put(client, "k", TABLE, options=log_in(client, "admin", "admin-pw"))
    reader = log_in(client, "reader", "reader-pw")
    assert get(client, "k", reader).equals(TABLE)
    with pytest.raises(flight.FlightUnauthorizedError, match="may not write any key"):
        put(client, "k", TABLE, options=reader)
    with pytest.raises(flight.FlightUnauthorizedError, match="may not write `k`"):
        action(client, "drop", b"k", options=reader)
    with pytest.raises(flight.FlightUnauthorizedError, match="admin"):
        action(client, "clear", options=reader)
    assert get(client, "k", reader).equals(TABLE), "nothing was changed"


def test_a_prefix_user_cannot_see_read_or_drop_outside_it(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    admin = log_in(client, "admin", "admin-pw")
    for key in ["team-a/1", "team-b/secret", "shared/s"]:
        put(client, key, TABLE, options=admin)
    alice = log_in(client, "alice", "alice-pw")
    listed = sorted(info.descriptor.command.decode() for info in client.list_flights(options=alice))
    assert listed == ["shared/s", "team-a/1"]
    # A key that exists and one that does not are refused alike: no existence is revealed.
    for key in ["team-b/secret", "team-b/never-stored"]:
        with pytest.raises(flight.FlightUnauthorizedError, match=f"may not read `{key}`"):
            get(client, key, alice)  # a handcrafted ticket
        with pytest.raises(flight.FlightUnauthorizedError, match=f"may not read `{key}`"):
            client.get_flight_info(flight.FlightDescriptor.for_command(key), options=alice)
        with pytest.raises(flight.FlightUnauthorizedError, match=f"may not write `{key}`"):
            action(client, "drop", key.encode(), options=alice)
    assert get(client, "team-b/secret", admin).equals(TABLE), "the other team's table is intact"


# --- TLS --------------------------------------------------------------------------------------


def test_tls_with_the_servers_ca_and_refused_without_it(start_server, pki):
    ca, files = pki
    server = start_server("--tls-cert", files["cert"], "--tls-key", files["key"])
    assert server.url.startswith("grpc+tls://127.0.0.1:")
    client = flight.connect(server.url, tls_root_certs=ca.pem)
    put(client, "k", TABLE)
    assert get(client, "k").equals(TABLE)
    # Its endpoints name it as a TLS location, which pyarrow connects to with the same CA.
    info = client.get_flight_info(flight.FlightDescriptor.for_command("k"))
    [location] = info.endpoints[0].locations
    assert location.uri.decode() == server.url
    assert get(flight.connect(location, tls_root_certs=ca.pem), "k").equals(TABLE)
    stranger = Authority("not the server's CA")
    with pytest.raises(flight.FlightUnavailableError):
        list(flight.connect(server.url, tls_root_certs=stranger.pem).list_flights())


def test_mutual_tls_needs_a_certificate_from_the_client_ca_and_it_names_the_user(
    start_server, pki, users
):
    ca, files = pki
    server = start_server(
        "--users", users[0],
        "--tls-cert", files["cert"], "--tls-key", files["key"], "--tls-client-ca", files["ca"],
    )
    cert, key = ca.issue("alice", server=False)
    client = flight.connect(server.url, tls_root_certs=ca.pem, cert_chain=cert, private_key=key)
    me = json.loads(action(client, "whoami"))
    assert me["user"] == "alice" and me["proof"] == "certificate"
    put(client, "team-a/t", TABLE)
    assert get(client, "team-a/t").equals(TABLE)
    with pytest.raises(flight.FlightUnauthorizedError):
        put(client, "team-b/t", TABLE)

    # No client certificate, or one from another CA: the TLS handshake itself fails.
    bare = flight.connect(server.url, tls_root_certs=ca.pem)
    with pytest.raises(flight.FlightUnavailableError):
        list(bare.list_flights())
    cert, key = Authority("a stranger's CA").issue("admin", server=False)
    forged = flight.connect(server.url, tls_root_certs=ca.pem, cert_chain=cert, private_key=key)
    with pytest.raises(flight.FlightUnavailableError):
        list(forged.list_flights())


# --- protected mode ---------------------------------------------------------------------------


def test_protected_mode_refuses_a_wildcard_bind_without_users(start_server):
    refused = subprocess.run(
        [_binary(), "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0
    assert "--users" in refused.stderr and "--no-auth" in refused.stderr, refused.stderr
    # Saying so explicitly serves everyone; only loopback traffic is sent here.
    server = start_server("--host", "0.0.0.0", "--no-auth")
    port = server.url.rsplit(":", 1)[1]
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    put(client, "k", TABLE)
    assert get(client, "k").equals(TABLE)
    # A wildcard bind without --advertise names Flight's "this same connection" location.
    info = client.get_flight_info(flight.FlightDescriptor.for_command("k"))
    assert [loc.uri for loc in info.endpoints[0].locations] == [b"arrow-flight-reuse-connection://?"]
