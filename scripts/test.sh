#!/usr/bin/env bash
# Install PathSynth with its test extras, Debian's Chromium (browser test), PostgreSQL (the storage tests run
# on SQLite and on a private PostgreSQL server that tests/conftest.py starts as the postgres user) and nginx (the
# deployment stack test, tests/test_stack.py: deploy/stack.py's replicas behind it), then test.
# No test downloads anything. With PATHSYNTH_DATA naming a PathMNIST npz (CI: ../shared/data's 800-tile sample)
# the real-data tests run too; without it they are skipped and the app under test runs with no real tiles.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {
    (apt-get install -y -q "$@" || (apt-get update -q && apt-get install -y -q "$@")) >/dev/null
}
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt_install chromium chromium-driver
    else
        echo "note: /usr/bin/chromium missing; the browser test will be skipped (apt-get install chromium)" >&2
    fi
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt_install postgresql
    else
        echo "note: PostgreSQL missing: its storage tests skip (fail under CI); apt-get install postgresql" >&2
    fi
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
        apt_install nginx-light || apt_install nginx
    else
        echo "note: nginx missing: the deployment stack test skips (fails under CI); apt-get install nginx" >&2
    fi
fi
if [ -n "${PATHSYNTH_DATA:-}" ]; then echo "real-data tests on: PATHSYNTH_DATA=$PATHSYNTH_DATA"; else
    echo "real-data tests skipped: set PATHSYNTH_DATA to a PathMNIST npz to run them"; fi
python3 -m pip install -q -e ".[test]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
python3 -m pytest -q -p no:cacheprovider "$@"
