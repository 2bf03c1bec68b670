#!/usr/bin/env bash
# The end-to-end load benchmark: installs wrk and nginx when missing (Debian packages), then
# builds and runs benches/load.rs, which prints one table. Extra arguments go to the benchmark:
#   bash benches/load.sh --duration 20 --connections 128 --threads 1 --no-pin
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
# nginx-light starts a system nginx on port 80 when installed; the benchmark runs its own.
exec cargo bench --bench load -- "$@"
