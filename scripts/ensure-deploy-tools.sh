#!/usr/bin/env bash
# Installs the Python tools that check the Helm chart and the compose file
# (helm-python-sdk, kubernetes-validate, checkov; pinned in
# deploy-requirements.txt) into a virtualenv in the cache, once per version
# of the requirements. Prints the virtualenv's python.
#
# WAYBILL_CACHE (default ~/.cache/waybill) chooses the cache directory.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/deploy-requirements.txt"
stamp="$(sha256sum "$requirements" | cut -c1-12)"
cache="${WAYBILL_CACHE:-$HOME/.cache/waybill}"
venv="$cache/deploy-tools-$stamp"
python="$venv/bin/python"

if [ -x "$python" ] && [ -f "$venv/.complete" ]; then
  echo "$python"
  exit 0
fi

echo "installing the deploy check tools into $venv (first time only, ~1 min)..." >&2
rm -rf "$venv"
mkdir -p "$cache"
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
touch "$venv/.complete"
echo "$python"
