#!/usr/bin/env python3
"""Regenerate the JWT test keys and their JWKS documents (needs the `cryptography` package).

Writes, next to this script: <name>.pem (PKCS#8 private key) for each signing key, jwks.json
(the public keys the gateway trusts), jwks-rotated.json (a different key set), and
attacker.pem (a key the gateway never trusts). Run: python3 make_keys.py
"""
import base64, json, os
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519

HERE = os.path.dirname(os.path.abspath(__file__))

def b64(n: bytes) -> str:
    return base64.urlsafe_b64encode(n).rstrip(b"=").decode()

def int_bytes(i: int) -> bytes:
    return i.to_bytes((i.bit_length() + 7) // 8, "big")

def save(name, key):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with open(os.path.join(HERE, name + ".pem"), "wb") as f:
        f.write(pem)

def jwk(kid, key):
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        n = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(int_bytes(n.n)), "e": b64(int_bytes(n.e))}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = pub.public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384"}[key.curve.key_size]
        return {"kty": "EC", "kid": kid, "use": "sig", "crv": crv,
                "x": b64(n.x.to_bytes(size, "big")), "y": b64(n.y.to_bytes(size, "big"))}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": b64(raw)}

keys = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec256": ec.generate_private_key(ec.SECP256R1()),
    "ec384": ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "rotated": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "attacker": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
for name, key in keys.items():
    save(name, key)
with open(os.path.join(HERE, "jwks.json"), "w") as f:
    json.dump({"keys": [jwk(k, keys[k]) for k in ("rsa", "ec256", "ec384", "ed25519")]}, f, indent=1)
with open(os.path.join(HERE, "jwks-rotated.json"), "w") as f:
    json.dump({"keys": [jwk("rotated", keys["rotated"])]}, f, indent=1)
with open(os.path.join(HERE, "attacker-jwks.json"), "w") as f:
    json.dump({"keys": [jwk("attacker", keys["attacker"])]}, f, indent=1)
# The RSA public key in PEM, for the HS/RS key-confusion test.
with open(os.path.join(HERE, "rsa.pub.pem"), "wb") as f:
    f.write(keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
