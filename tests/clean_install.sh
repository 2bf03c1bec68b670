#!/usr/bin/env bash
# The Debian package on a clean machine: a minimal Debian root made with debootstrap from the
# mirror this host's apt uses, the package built from this checkout installed there with
# apt-get (which brings modsecurity-crs and the sysusers tool it depends on), then, inside
# that root: `portcullis check --strict` on the installed config, and the installed binary
# run on the installed config (only its listener, metrics, log file, upstream and key set
# pointed at this test) refusing an authenticated CRS attack with nothing reaching the
# upstream, and passing an ordinary request. Needs root; takes a few minutes; changes nothing
# on this host outside a temporary folder (and installs debootstrap if missing).
#   bash tests/clean_install.sh [path/to/portcullis.deb]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
MIRROR=$(grep -h -m1 -oP '^URIs: \K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
[ -n "$MIRROR" ] || MIRROR=$(grep -h -m1 -oP '^deb \K\S+' /etc/apt/sources.list | head -1)
SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME")

DEB=${1:-}
if [ -z "$DEB" ]; then
    CARGO_DEB=target/tools/cargo-deb/bin/cargo-deb
    [ -x "$CARGO_DEB" ] || CARGO_DEB=cargo-deb
    "$CARGO_DEB" -o target/debian/portcullis-clean-install.deb
    DEB=target/debian/portcullis-clean-install.deb
fi

ROOT=$(mktemp -d /tmp/portcullis-clean.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    umount "$ROOT/proc" 2>/dev/null || true
    rm -rf "$ROOT"
}
trap cleanup EXIT
echo "debootstrap $SUITE (minbase) into $ROOT"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOT/proc"
cp "$DEB" "$ROOT/tmp/portcullis.deb"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends /tmp/portcullis.deb >/dev/null
echo "installed: $(in_root dpkg-query -W -f '${Package} ${Version}, ' portcullis modsecurity-crs)"
in_root id portcullis

echo "check --strict on the installed config:"
in_root portcullis check --strict -c /etc/portcullis/portcullis.toml

# The installed config, run: the machine-specific parts pointed at this test.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); METRICS=$(port)
python3 benches/injectable.py "$UP" &
PIDS+=($!)
cp tests/data/jwt/jwks.json "$ROOT/etc/portcullis/test-jwks.json"
mkdir -p "$ROOT/run/portcullis" "$ROOT/var/log/portcullis"
sed -e "s|127.0.0.1:8080|127.0.0.1:$GW|" -e "s|127.0.0.1:9091|127.0.0.1:$METRICS|" \
    -e "s|127.0.0.1:3000|127.0.0.1:$UP|" -e '/^health_check/d' \
    -e 's|^jwks_url = .*|jwks_file = "/etc/portcullis/test-jwks.json"|' \
    "$ROOT/etc/portcullis/portcullis.toml" >"$ROOT/etc/portcullis/test.toml"
in_root portcullis run -c /etc/portcullis/test.toml 2>"$ROOT/tmp/stderr" &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$GW/" && break
    sleep 0.1
done

TOKEN=$(python3 - "$ROOT/etc/portcullis/test.toml" <<'PY'
import base64, json, sys, time, tomllib
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
provider = tomllib.load(open(sys.argv[1], "rb"))["jwt_providers"][0]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "RS256", "kid": "rsa", "typ": "JWT"}).encode())
claims = {"sub": "alice", "iss": provider["issuer"], "aud": provider["audiences"][0], "exp": int(time.time()) + 600}
body = b64(json.dumps(claims).encode())
key = serialization.load_pem_private_key(open("tests/data/jwt/rsa.pem", "rb").read(), None)
sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
print(f"{head}.{body}.{b64(sig)}")
PY
)
get() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -A 'Mozilla/5.0' "http://127.0.0.1:$GW$1"; }
count() { curl -s "http://127.0.0.1:$UP/__count"; }
fail() { echo "FAILED: $*" >&2; cat "$ROOT/tmp/stderr" >&2; exit 1; }

ordinary=$(get "/items?id=1")
[ "$ordinary" = 200 ] || fail "an ordinary authenticated request got $ordinary"
before=$(count)
xss=$(get "/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E")
sqli=$(get "/items?id=1%27%20UNION%20SELECT%20secret%20FROM%20items--")
after=$(count)
[ "$xss" = 400 ] && [ "$sqli" = 400 ] || fail "CRS attacks got $xss and $sqli, not 400"
[ "$after" = "$before" ] || fail "an attack reached the upstream ($before -> $after requests)"
grep -q '"decision":"threat_' "$ROOT/var/log/portcullis/access.log" || fail "no threat decision logged"
echo "installed gateway: ordinary request 200; CRS attacks (XSS, SQLi) 400, none reached the upstream"
