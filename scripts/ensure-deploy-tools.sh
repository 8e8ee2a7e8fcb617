#!/usr/bin/env bash
# Installs pinned Python tools into a virtualenv in the cache, once per
# version of their requirements, and prints the virtualenv's python.
#
#   scripts/ensure-deploy-tools.sh          the tools that check the Helm chart
#                                           and the compose file (helm-python-sdk,
#                                           kubernetes-validate, checkov:
#                                           deploy-requirements.txt)
#   scripts/ensure-deploy-tools.sh fuzz     schemathesis, the API fuzzer of
#                                           scripts/fuzz-api.sh (fuzz-requirements.txt)
#
# WAYBILL_CACHE (default ~/.cache/waybill) chooses the cache directory.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
set_name="${1:-deploy}"
requirements="$here/$set_name-requirements.txt"
[ -f "$requirements" ] || { echo "no $requirements" >&2; exit 2; }
stamp="$(sha256sum "$requirements" | cut -c1-12)"
cache="${WAYBILL_CACHE:-$HOME/.cache/waybill}"
venv="$cache/$set_name-tools-$stamp"
python="$venv/bin/python"

if [ -x "$python" ] && [ -f "$venv/.complete" ]; then
  echo "$python"
  exit 0
fi

echo "installing the $set_name tools into $venv (first time only, ~1 min)..." >&2
rm -rf "$venv"
mkdir -p "$cache"
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
touch "$venv/.complete"
echo "$python"
