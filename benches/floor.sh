#!/usr/bin/env bash
# What one proxied request costs, counted rather than timed: user-space instructions per
# keep-alive GET (valgrind's callgrind, the same count whatever else the machine does) and
# syscalls per GET and per 1 KiB POST (strace -c -f), for nginx, HAProxy, a bare Pingora proxy
# and portcullis on a pass-through route. One worker/thread each, an nginx upstream answering
# `200 ok`. Prints two tables (BENCHMARKS.md, "Issue 16"). Also portcullis on a route with
# threat protection on (the default; without [waf], the built-in rules): a browser-like GET
# and a 1 KiB JSON POST; and the load benchmark's full chain (JWT, ACL, limit, schema, rules)
# on its own 1 KiB order (BENCHMARKS.md, "Issue 34").
#   bash benches/floor.sh [seconds per measurement, default 5]
#   FLOOR_PROXIES="portcullis" PORTCULLIS=path/to/binary bash benches/floor.sh   (a subset; another build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${1:-5}
need=()
for tool in valgrind strace wrk nginx haproxy curl; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
read -r -a PROXIES <<< "${FLOOR_PROXIES:-nginx haproxy bare portcullis}"
cargo build --release --quiet
PORTCULLIS=${PORTCULLIS:-target/release/portcullis}
if [[ " ${PROXIES[*]} " == *" bare "* ]]; then
    cargo bench --bench load --no-run --quiet 2>/dev/null
    # The load benchmark's binary serves as the bare Pingora proxy (--serve-bare-pingora).
    BARE=$(ls -t target/release/deps/load-* | grep -v '\.d$' | head -1)
fi

D=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$D/up/nginx.pid" ] && kill "$(cat "$D/up/nginx.pid")" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

# Stop a process we started and wait for it, bounded: SIGINT (valgrind writes its last dump,
# strace its summary, Pingora stops at once), 2 s later SIGTERM (a background job of this
# script starts with SIGINT ignored, and HAProxy keeps that), 10 s later KILL.
stop() {
    local pid=$1 sig tries i
    for sig in INT:10 TERM:50 KILL:50; do
        kill -"${sig%%:*}" "$pid" 2>/dev/null || return 0
        tries=${sig##*:}
        for i in $(seq "$tries"); do
            kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
            sleep 0.2
        done
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
mkdir -p "$D/up" "$D/ngx"
cat > "$D/up/nginx.conf" <<EOF
worker_processes 1; user root; error_log $D/up/error.log warn; pid $D/up/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } } }
EOF
nginx -p "$D/up" -c "$D/up/nginx.conf"

# Each proxy as a command line on port $1 (it stays in the foreground).
proxy_cmd() {
    local name=$1 port=$2
    case $name in
    nginx)
        cat > "$D/ngx/nginx.conf" <<EOF
worker_processes 1; user root; error_log $D/ngx/error.log warn; pid $D/ngx/nginx.pid;
events { worker_connections 4096; }
http { access_log $D/ngx/access.log; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream app { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 10000000; }
  server { listen 127.0.0.1:$port;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
        echo "nginx -p $D/ngx -c $D/ngx/nginx.conf -g 'daemon off; master_process off;'" ;;
    haproxy)
        printf 'global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\nfrontend proxy\n  bind 127.0.0.1:%s\n  default_backend app\nbackend app\n  server up 127.0.0.1:%s\n' \
            "$port" "$UP" > "$D/haproxy.cfg"
        echo "haproxy -db -f $D/haproxy.cfg" ;;
    bare)
        echo "$BARE --serve-bare-pingora $port $UP 1" ;;
    portcullis)
        cat > "$D/portcullis.toml" <<EOF
[server]
threads = 1
pid_file = "$D/portcullis.pid"
upgrade_sock = "$D/upgrade.sock"
[[listeners]]
address = "127.0.0.1:$port"
[metrics]
address = "127.0.0.1:$(free_port)"
[logging]
access_log = "$D/access.log"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:$UP"]
[[routes]]
name = "pass"
path_prefix = "/pass"
upstream = "app"
public = true
threat_protection = "off"
[[routes]]
name = "guarded"
path_prefix = "/guarded"
upstream = "app"
public = true
# The load benchmark's route (c): JWT, ACL, rate limit, JSON Schema, threat protection.
[[jwt_providers]]
name = "bench"
issuer = "https://id.bench.invalid"
audiences = ["bench-api"]
algorithms = ["ES256"]
jwks_file = "$ROOT/tests/data/jwt/jwks.json"
[[consumers]]
id = "bench-user"
groups = ["bench"]
[[routes]]
name = "full"
path_prefix = "/full"
methods = ["POST"]
upstream = "app"
auth = ["jwt:bench"]
allow = { groups = ["bench"] }
rate_limit = { requests = 1000000000, per = "1s", key = "consumer" }
validate = { content_types = ["application/json"], json_schema = "$ROOT/tests/data/schemas/order.json", max_body_bytes = "16KiB" }
EOF
        echo "$PORTCULLIS run -c $D/portcullis.toml" ;;
    esac
}

wait_up() {
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/pass/x" && return 0
        sleep 0.2
    done
    echo "the proxy on port $1 did not start" >&2
    return 1
}

requests() { grep -o '[0-9]* requests in' "$1" | cut -d' ' -f1; }

# Start proxy $1 on port $2, its output to $3, under the command prefix $4 (e.g. valgrind) if
# given; waits until it answers. Its pid is left in $started.
start_proxy() {
    local cmd
    cmd=$(proxy_cmd "$1" "$2")
    eval "exec ${4:-} $cmd" > "$3" 2>&1 &
    started=$!
    pids+=("$started")
    wait_up "$2"
}

printf 'wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\nwrk.headers["Content-Type"] = "application/json"\n' > "$D/post.lua"
# Instructions per request of proxy $1 under wrk arguments $2.. (PORT stands for its port),
# after a 3 s warm-up.
count_instructions() {
    local name=$1 port vg total f
    shift
    port=$(free_port)
    start_proxy "$name" "$port" "$D/$name.cg.log" "valgrind --tool=callgrind --callgrind-out-file=$D/cg.$name.%p"
    vg=$started
    wrk -t1 -c8 -d3s "${@/PORT/$port}" > /dev/null
    callgrind_control -z "$vg" > /dev/null 2>&1
    wrk -t1 -c8 -d"${SECS}s" "${@/PORT/$port}" > "$D/$name.cg.wrk"
    callgrind_control -d "$vg" > /dev/null 2>&1
    stop "$vg"
    total=0
    for f in "$D"/cg."$name".*.1; do
        total=$((total + $(grep '^summary' "$f" | cut -d' ' -f2)))
    done
    rm -f "$D"/cg."$name".*
    echo $((total / $(requests "$D/$name.cg.wrk")))
}

echo "| proxy | instructions per GET |"
echo "|---|---:|"
for name in "${PROXIES[@]}"; do
    echo "| $name | $(count_instructions "$name" "http://127.0.0.1:PORT/pass/x") |"
done

if [[ " ${PROXIES[*]} " == *" portcullis "* ]]; then
    cat > "$D/order.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local items = {}
for i = 1, 12 do
  items[#items + 1] = string.format('{"sku":"SKU-%05d","qty":%d,"price":19.99,"note":"gift wrap, please"}', 42 + i, i % 3 + 1)
end
wrk.body = '{"customer":{"name":"Fatima Angelo","email":"fatima@example.com"},"items":[' .. table.concat(items, ",") .. '],"currency":"GBP","comment":"Please deliver after 5pm; ring twice."}'
EOF
    browser=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
        -H "Accept: application/json" -H "Accept-Language: en-GB,en;q=0.8"
        -H "Cookie: session=8b2f0c7e4a; theme=dark; lang=en-GB" -H "Referer: https://app.example.com/orders")
    echo
    echo "| portcullis, route with threat protection on | instructions per request |"
    echo "|---|---:|"
    echo "| browser-like GET with a query | $(count_instructions portcullis "${browser[@]}" "http://127.0.0.1:PORT/guarded/v1/orders?status=shipped&page=2") |"
    echo "| 1 KiB JSON POST | $(count_instructions portcullis -s "$D/order.lua" "http://127.0.0.1:PORT/guarded/v1/orders") |"
    # The full chain on the load benchmark's request: its ES256 token and 1 KiB order.
    python3 - "$ROOT/tests/data/jwt/ec256.pem" > "$D/full.lua" <<'PY'
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "ec256"}).encode())
claims = b64(json.dumps({"iss": "https://id.bench.invalid", "aud": "bench-api", "sub": "bench-user",
                         "iat": now, "exp": now + 36000}).encode())
r, s = utils.decode_dss_signature(key.sign(f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
token = f"{head}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
items, i = "", 0
while True:
    item = '{"sku":"SKU-%05d-BLUE-M","qty":%d}' % (i, i % 7 + 1)
    if len(items) + len(item) + 1 > 900:
        break
    items += ("," if items else "") + item
    i += 1
body = '{"id":4711,"email":"buyer@example.com","items":[%s],"note":"' % items
body += "x" * (1022 - len(body)) + '"}'
print(f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"')
print(f'wrk.headers["Authorization"] = "Bearer {token}"')
PY
    echo "| full chain (JWT, ACL, limit, schema, built-in rules), the load benchmark's 1 KiB JSON POST | $(count_instructions portcullis -s "$D/full.lua" "http://127.0.0.1:PORT/full/orders") |"
fi

echo
echo "| proxy | request | writes (sockets and logs) | reads | all syscalls | the most frequent, per request |"
echo "|---|---|---:|---:|---:|---|"
for name in "${PROXIES[@]}"; do
    port=$(free_port)
    start_proxy "$name" "$port" "$D/$name.log"
    p=$started
    for method in GET POST; do
        script=()
        [ "$method" = POST ] && script=(-s "$D/post.lua")
        wrk -t1 -c8 -d2s "${script[@]}" "http://127.0.0.1:$port/pass/x" > /dev/null
        strace -f -c -o "$D/$name.$method.strace" -p "$p" 2>/dev/null &
        st=$!
        sleep 1
        wrk -t1 -c8 -d3s "${script[@]}" "http://127.0.0.1:$port/pass/x" > "$D/$name.$method.wrk"
        sleep 0.5
        stop "$st"
        n=$(requests "$D/$name.$method.wrk")
        python3 - "$D/$name.$method.strace" "$n" "$name" "$method" <<'EOF'
import sys
path, n, name, method = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[3].isdigit():
        calls[f[-1]] = int(f[3])
total = calls.pop("total", sum(calls.values()))
sends = sum(v for k, v in calls.items() if k in ("sendto", "sendmsg", "writev", "write"))
recvs = sum(v for k, v in calls.items() if k in ("recvfrom", "recvmsg", "read", "readv"))
top = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:4])
print(f"| {name} | {method} | {sends / n:.2f} | {recvs / n:.2f} | {total / n:.2f} | {top} |")
EOF
    done
    stop "$p"
done
