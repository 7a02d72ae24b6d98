#!/usr/bin/env bash
# Set up hyperrep on a fresh machine: system packages (Debian), a virtual environment with the
# pinned requirements, and the package itself. `--test` also installs what the tests need
# (Chromium for the browser tests). Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_packages=(dataset-fashion-mnist)
[ "$want_test" = 1 ] && apt_packages+=(chromium chromium-driver)

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: could not install ${missing[*]}; the app still runs on the shipped test split." >&2
    echo "       For training data set HYPERREP_DATA to a folder of Fashion-MNIST IDX files." >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import hyperrep, torch, streamlit, umap" >/dev/null 2>&1 \
   || ! cmp -s requirements.txt .venv/.requirements.installed; then
  echo "setup: installing requirements into .venv (a minute or two the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import hyperrep, torch, streamlit, umap"
  cp requirements.txt .venv/.requirements.installed
fi
echo "setup: ready"
