#!/usr/bin/env bash
# Installs the Celery peer into bench/.peers/celery-venv (git-ignored), pinned by
# requirements.txt next to this script. Idempotent: a no-op when the venv already holds
# exactly these pins. On success prints one summary line to stderr and nothing else.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/bench/.peers/celery-venv"
req="$here/requirements.txt"
stamp="$venv/.rota-requirements.sha256"
want="$( (cat "$req"; echo "setup-v1") | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "celery peer: up to date in bench/.peers/celery-venv ($(grep -m1 '^celery' "$req"))" >&2
    exit 0
fi

py="${PYTHON:-}"
if [ -z "$py" ]; then
    for cand in python3.11 python3.12 python3.13 python3; do
        if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
    done
fi
[ -n "$py" ] || { echo "celery peer: no python3 found (set PYTHON=...)" >&2; exit 1; }
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || { echo "celery peer: $py is older than 3.9" >&2; exit 1; }

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
mkdir -p "$root/bench/.peers"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" >"$log" 2>&1 || { cat "$log" >&2; echo "celery peer: venv creation failed" >&2; exit 1; }
fi
rm -f "$stamp"
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --no-input -q -r "$req" >"$log" 2>&1 \
    || { cat "$log" >&2; echo "celery peer: pip install failed" >&2; exit 1; }
"$venv/bin/python" -c 'import celery, kombu, redis' >"$log" 2>&1 \
    || { cat "$log" >&2; echo "celery peer: import check failed" >&2; exit 1; }
echo "$want" >"$stamp"
echo "celery peer: installed $("$venv/bin/python" -c 'import celery, kombu, redis, platform; print(f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, python {platform.python_version()}")') in bench/.peers/celery-venv" >&2
