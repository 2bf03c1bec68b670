#!/usr/bin/env bash
# sqlmap against a deliberately injectable upstream (benches/injectable.py), four ways in one
# run: directly, through portcullis with [waf] (OWASP CRS v4 at paranoia level 1), through
# portcullis with its built-in rules (no [waf]: the demo config's protection), and through
# nginx + ModSecurity 3 with CRS. sqlmap from PyPI; Debian's nginx and its
# ModSecurity module; CRS from ../shared/crs. Prints one table: per target and tamper set, the
# requests that reached the upstream and whether sqlmap confirmed the injection.
#   bash benches/sqlmap.sh [--level 3] [--risk 2]
set -euo pipefail
cd "$(dirname "$0")/.."
LEVEL=3
RISK=2
while [ $# -gt 0 ]; do
    case "$1" in
        --level) LEVEL="$2"; shift 2 ;;
        --risk) RISK="$2"; shift 2 ;;
        *) echo "unknown argument $1; use --level N, --risk N" >&2; exit 2 ;;
    esac
done
CRS="$(cd ../shared/crs && pwd)"
MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
command -v sqlmap >/dev/null || pip install -q sqlmap
if ! command -v nginx >/dev/null || [ ! -e "$MODULE" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-http-modsecurity >/dev/null
fi
cargo build --release --locked --bin portcullis
DIR="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    exit 1
}

UP=$(port)
python3 benches/injectable.py "$UP" &
PIDS+=($!)
wait_port "$UP"

GW=$(port)
cat > "$DIR/portcullis.toml" <<CONF
[server]
threads = 1
pid_file = "$DIR/portcullis.pid"
upgrade_sock = "$DIR/upgrade.sock"

[[listeners]]
address = "127.0.0.1:$GW"

[logging]
access_log = "$DIR/access.log"

[waf]
rules = ["$CRS/crs-setup.conf.example", "$CRS/rules/*.conf"]
paranoia_level = 1

[[upstreams]]
name = "app"
targets = ["127.0.0.1:$UP"]

[[routes]]
name = "items"
path_prefix = "/"
upstream = "app"
public = true
threat_protection = "block"
CONF
target/release/portcullis run -c "$DIR/portcullis.toml" 2>"$DIR/portcullis.stderr" &
PIDS+=($!)
wait_port "$GW"

# The same gateway without [waf]: the built-in rules decide.
BUILTIN=$(port)
sed -e "/^\[waf\]/,/^paranoia_level/d" -e "s|127.0.0.1:$GW|127.0.0.1:$BUILTIN|" \
    -e "s|$DIR/portcullis.pid|$DIR/builtin.pid|" -e "s|$DIR/upgrade.sock|$DIR/builtin.sock|" \
    -e "s|$DIR/access.log|$DIR/builtin-access.log|" "$DIR/portcullis.toml" >"$DIR/builtin.toml"
target/release/portcullis run -c "$DIR/builtin.toml" 2>"$DIR/builtin.stderr" &
PIDS+=($!)
wait_port "$BUILTIN"

MS=$(port)
mkdir -p "$DIR/nginx/logs"
# The one ModSecurity configuration portcullis is measured against.
sed -e "s|@TMP@|$DIR|g" -e "s|@CRS@|$CRS|g" tests/data/modsecurity.conf > "$DIR/modsec.conf"
cat > "$DIR/nginx/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 1;
user root;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$MS;
        modsecurity on;
        modsecurity_rules_file $DIR/modsec.conf;
        location / { proxy_pass http://127.0.0.1:$UP; }
    }
}
CONF
nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;" &
PIDS+=($!)
wait_port "$MS"

count() { curl -s "http://127.0.0.1:$UP/__count"; }
echo
echo "sqlmap $(sqlmap --version 2>/dev/null | tail -1): --level $LEVEL --risk $RISK --random-agent, GET parameter id"
echo
echo "| target | tampers | requests that reached the upstream | sqlmap's verdict |"
echo "|---|---|---:|---|"
for target in "upstream directly:$UP" "portcullis, CRS PL1:$GW" "portcullis, built-in rules:$BUILTIN" \
    "nginx + ModSecurity, CRS PL1:$MS"; do
    name="${target%%:*}"
    p="${target##*:}"
    for tamper in "" "space2comment,between,randomcase"; do
        before=$(count)
        args=(-u "http://127.0.0.1:$p/items?id=1" -p id --batch --level "$LEVEL" --risk "$RISK"
              --random-agent --flush-session --output-dir "$DIR/sqlmap" -v 1)
        [ -n "$tamper" ] && args+=(--tamper "$tamper")
        out=$(timeout 1800 sqlmap "${args[@]}" 2>&1 || true)
        after=$(count)
        reached=$((after - before - 1))
        if printf '%s\n' "$out" | grep -q "identified the following injection point"; then
            verdict="injection confirmed ($(printf '%s\n' "$out" | grep -oE 'Type: [a-zA-Z -]+' | sed 's/Type: //' | paste -sd, - || true))"
        else
            verdict="nothing found"
        fi
        echo "| $name | ${tamper:-none} | $reached | $verdict |"
    done
done
