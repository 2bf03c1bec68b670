#!/usr/bin/env bash
# The end-to-end load benchmark: installs wrk, nginx, HAProxy, h2load (nghttp2-client) and nginx's ModSecurity module when missing (Debian packages), then
# builds and runs benches/load.rs, which prints one table. Extra arguments go to the benchmark:
#   bash benches/load.sh --duration 20 --connections 128 --threads 1 --no-pin
set -euo pipefail
cd "$(dirname "$0")/.."
# The CRS part (skip it with --no-crs) runs nginx with its ModSecurity module beside portcullis.
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null \
    || ! command -v h2load >/dev/null \
    || ! ls /usr/lib/nginx/modules/ngx_http_modsecurity_module.so >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx haproxy nghttp2-client libnginx-mod-http-modsecurity >/dev/null
fi
# nginx-light starts a system nginx on port 80 when installed; the benchmark runs its own.
exec cargo bench --bench load -- "$@"
