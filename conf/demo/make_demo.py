#!/usr/bin/env python3
"""Regenerate the DEMO credentials of conf/portcullis.toml (needs the `cryptography` package).

DEMO ONLY: these keys are public, in the repository. Never use them for anything real.
Writes: jwks.json (public key of the demo issuer), issuer.key (its private key, to mint more
demo tokens), demo-token.jwt (an RS256 token for the consumer "demo-user", valid until 2036),
ca.pem / ca.key (demo client CA), server.pem / server.key (TLS certificate for localhost),
client.pem / client.key (client certificate CN=demo-client).
"""
import base64, datetime, json, os
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec, padding

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
UNTIL = datetime.datetime(2036, 11, 1, tzinfo=datetime.timezone.utc)

def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def write(name, data, private=False):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)

def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

# JWT issuer.
issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
n = issuer.public_key().public_numbers()
jwk = {"kty": "RSA", "kid": "demo-2026", "use": "sig", "alg": "RS256",
       "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64(n.e.to_bytes(3, "big"))}
write("jwks.json", json.dumps({"keys": [jwk]}, indent=1).encode() + b"\n")
write("issuer.key", key_pem(issuer), private=True)
header = {"alg": "RS256", "typ": "JWT", "kid": "demo-2026"}
claims = {"iss": "https://demo-issuer.portcullis.invalid", "aud": "demo-api", "sub": "demo-user",
          "scope": "orders:read", "iat": int(NOW.timestamp()), "exp": int(UNTIL.timestamp())}
signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
    b64(json.dumps(claims, separators=(",", ":")).encode())
signature = issuer.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
write("demo-token.jwt", (signing_input + "." + b64(signature) + "\n").encode())

# A small PKI for the TLS / mTLS listener.
def cert(subject_cn, key, issuer_name, issuer_key, ca=False, sans=None):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(issuer_name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW).not_valid_after(UNTIL)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())

ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis DEMO client CA")])
ca = cert("portcullis DEMO client CA", ca_key, ca_name, ca_key, ca=True)
write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
write("ca.key", key_pem(ca_key), private=True)
import ipaddress
server_key = ec.generate_private_key(ec.SECP256R1())
server = cert("localhost", server_key, ca_name, ca_key,
              sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
write("server.pem", server.public_bytes(serialization.Encoding.PEM))
write("server.key", key_pem(server_key), private=True)
client_key = ec.generate_private_key(ec.SECP256R1())
client = cert("demo-client", client_key, ca_name, ca_key)
write("client.pem", client.public_bytes(serialization.Encoding.PEM))
write("client.key", key_pem(client_key), private=True)
