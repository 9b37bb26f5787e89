#!/usr/bin/env bash
# Set-up shared by scripts/test.sh and scripts/demo.sh: a virtual environment in .venv with erlmr
# installed in editable mode, and the Debian packages some datasets and checks use. Safe to re-run:
# it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
# torch is pinned to 2.13.0: its CPU wheel is what this project is tested with; an unpinned torch pulls a
# multi-GB CUDA build.
# Exported: the wheel test (tests/test_wheel.py) installs the same torch into its fresh environment.
export TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.erlmr-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
    # `pip install erlmr` alone is the slim core; the test extra adds the extras the suite and the demo use
    # (datasets, report, tensorboard), so every test runs here.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$wanted" > "$stamp"
fi

# Debian packages: espeak-ng speaks the AV-digits audio; chromium renders `erlmr report` in a browser check;
# postgresql is the database server a test of `erlmr tune` starts (scripts/test.sh asks for the last two).
install_debian_packages() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
            || echo "setup: could not install ${missing[*]}; the tests that need them will be skipped" >&2
    else
        echo "setup: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]}); tests that need them are skipped" >&2
    fi
}
install_debian_packages "${ERLMR_SYSTEM_PACKAGES[@]:-espeak-ng:espeak-ng}"
