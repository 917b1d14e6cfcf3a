"""wss://: Daphne serves TLS with its endpoint syntax (README "Serving wss://"); a whole session runs over it,
and a client that does not trust the certificate cannot even connect."""
import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.client import NetworkClient
from tests.e2e.servers import daphne

pytestmark = pytest.mark.e2e


def self_signed(directory):
    """A certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_a_whole_session_over_wss_with_a_self_signed_certificate(daphne_env, tmp_path):
    cert, key = self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))
    with daphne(daphne_env, tls=(cert, key)) as (host, port):
        url = f"wss://{host}:{port}/"
        alice = await (await NetworkClient(url, ssl=trusting).connect()).login()
        bob = await (await NetworkClient(url, ssl=trusting).connect()).login()
        try:
            await bob.subscribe()
            channel_id = await alice.open_channel(bob, deposit="1000")
            await alice.record(channel_id, external_id="tls-1", amount="2", price="100")
            assert (await bob.positions(channel_id))["ETH/USD"]["direction"] == "sell"
            note = await bob.notification("position_notification")
            assert note["data"]["amount"] == "2"
            await alice.record(channel_id, external_id="tls-2", direction="sell", amount="2", price="100")
            closed = await alice.ok("close_channel", {"channel_id": channel_id})
            assert closed["data"] == {"channel_id": channel_id}
        finally:
            await alice.close()
            await bob.close()

        with pytest.raises(ssl.SSLCertVerificationError):  # the system trust store does not know this certificate
            await NetworkClient(url, ssl=ssl.create_default_context()).connect()
