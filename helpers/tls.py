"""A certificate for serving HTTPS on this machine, made locally with `cryptography` (chapter 12).

    self_signed_certificate(directory)   Certificates(ca, cert, key): a CA certificate for clients to trust, and the
                                         server's certificate (signed by it) and private key, for 127.0.0.1/localhost

Why a CA and a leaf, rather than one self-signed server certificate: a client verifies a server's certificate by a
chain that ends at a certificate it trusts, and modern verifiers insist that each certificate plays one role. Python
3.13's default SSL context sets VERIFY_X509_STRICT, under which a trust anchor must be a CA (basicConstraints CA:TRUE,
critical) and a server certificate needs an Authority Key Identifier, a subjectAltName for the name the client
connects to, and an extended key usage allowing TLS servers. One self-signed certificate cannot be both a proper CA and
a proper server certificate; one marked CA:TRUE to pass would let whoever steals the server's key sign a certificate
for any site, which the client would then trust. So: a small CA that signs one server certificate (CA:FALSE,
serverAuth, SAN 127.0.0.1 and localhost), as a real deployment has (its CA being a company's or Let's Encrypt's).

The CA's private key is never written: it signs the one server certificate and is gone, so nobody, not even whoever
reads this folder, can make another certificate that clients trusting ca.pem would accept. Renewing means a new CA,
which clients must trust again: fine for a classroom, where certificates live `days` (7 by default).

A client trusts the CA, not the server certificate: `httpx.Client(verify=ssl.create_default_context(cafile=ca))`, or
`ServingClient(url, verify=...)`; `curl --cacert ca.pem`. Verification stays on: turning it off (`verify=False`) would
accept anyone's certificate, including that of a machine in the middle.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "self_signed_certificate"]


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate (PEM): what clients trust
    cert: Path  # the server's certificate (PEM): uvicorn's ssl_certfile, --tls-certfile
    key: Path  # the server's private key (PEM, unencrypted, mode 0o600): uvicorn's ssl_keyfile, --tls-keyfile


def self_signed_certificate(directory: Path, hosts=("127.0.0.1", "localhost"), days: int = 7) -> Certificates:
    """A CA and a server certificate it signed for `hosts` (IP addresses or DNS names), valid for `days`, written to
    `directory` as ca.pem, server.pem and server.key. See the module docstring for why a CA and not one certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)  # 5 min: clock skew
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploy-dl-course local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)  # it signs servers, not CAs
          .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])).issuer_name(ca_name)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.SubjectAlternativeName([alt_name(h) for h in hosts]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(key_usage(digital_signature=True), critical=True)  # ECDHE: the key signs the handshake
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # owner-only before the key is written, an existing file too
    with os.fdopen(descriptor, "wb") as out:
        out.write(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def alt_name(host: str):
    """A subjectAltName entry: an IP address for an address (clients compare IPs, never as text), else a DNS name."""
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def key_usage(**allowed):
    """x509.KeyUsage with the named usages on and every other off (its constructor takes all nine)."""
    from cryptography import x509

    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})
