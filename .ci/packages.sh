# Sourced by .ci/build-deps and .ci/deps: install_missing PACKAGE... installs with apt-get
# (through sudo when not root) the Debian packages that are not installed yet, and nothing else.
install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q "${missing[@]}"
    # The nginx package may start nginx on port 80; the tests start their own.
    if printf '%s\n' "${missing[@]}" | grep -qx nginx; then
        $sudo service nginx stop >/dev/null 2>&1 || $sudo pkill -x nginx || true
    fi
}
