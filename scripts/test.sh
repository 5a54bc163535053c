#!/usr/bin/env bash
# Install PathSynth with its test extras (and Debian's Chromium for the browser test), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get install -y -q chromium chromium-driver || (apt-get update -q && apt-get install -y -q chromium chromium-driver)) >/dev/null
    else
        echo "note: /usr/bin/chromium missing; the browser test will be skipped (apt-get install chromium)" >&2
    fi
fi
python3 -m pip install -q -e ".[test]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
python3 -m pytest -q -p no:cacheprovider "$@"
