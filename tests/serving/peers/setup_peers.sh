#!/usr/bin/env bash
# The third-party model servers the peer tests talk to, each in its own venv at
# the repo root (their dependencies conflict with each other and with the app's):
#   .venv-kserve    KServe's ModelServer  (requirements-kserve.txt)
#   .venv-mlserver  MLServer              (requirements-mlserver.txt)
# Each gets exactly the versions of its requirements file plus streamapp itself
# (editable, no dependencies), so the peer runtimes can import streamapp.serving.model.
#
# Idempotent: a venv is rebuilt only when its requirements file, the Python or
# the checkout's path changed (a stamp inside the venv records all three).
# Set PYTHON to choose the interpreter (3.10-3.12: MLServer 1.7 does not
# support 3.13). A cold build of both takes 1-2.5 minutes and about 1.1 GB.
set -euo pipefail

root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/tests/serving/peers"
python="${PYTHON:-python3}"
PIP_VERSION=26.3  # newer than the one venv ships; the one the requirements were resolved with

pip_install() {
    local venv="$1"
    shift
    # quiet when it works (setuptools and this machine's pip.conf warn a lot);
    # everything pip said when it does not
    local log="$venv/.pip-install.log"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" > "$log" 2>&1; then
        cat "$log" >&2
        echo "setup_peers: pip install $* failed in ${venv#"$root"/}" >&2
        return 1
    fi
}

setup() {
    local venv="$root/$1" requirements="$here/$2"
    local want
    # the editable install points at this checkout, so its path is part of the stamp
    want="$("$python" -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$requirements" | cut -d' ' -f1) $root"
    if [[ -f "$venv/.peer-stamp" && "$(cat "$venv/.peer-stamp")" == "$want" ]]; then
        echo "setup_peers: $1 is up to date"
        return
    fi
    echo "setup_peers: building $1 from ${requirements#"$root"/}"
    local started=$SECONDS
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip_install "$venv" "pip==$PIP_VERSION"
    pip_install "$venv" -r "$requirements"
    pip_install "$venv" --no-deps -e "$root"
    echo "$want" > "$venv/.peer-stamp"
    echo "setup_peers: $1 ready in $((SECONDS - started))s ($(du -sh "$venv" | cut -f1))"
}

# side by side: the installs mostly wait on downloads
setup .venv-kserve requirements-kserve.txt &
kserve=$!
setup .venv-mlserver requirements-mlserver.txt &
mlserver=$!
status=0
wait "$kserve" || status=$?
wait "$mlserver" || status=$?
exit "$status"
