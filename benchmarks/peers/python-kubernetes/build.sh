#!/usr/bin/env bash
# Create (or reuse) the virtualenv for the python-kubernetes benchmark peers.
#
# Output: the absolute path of the venv's python, as the last line on stdout:
# <repo>/.cache/peers/python-kubernetes/<hash>/venv/bin/python, where <hash>
# covers build.sh, requirements.txt and the Python version. Run the peers as
#   "$py" threaded.py ...    and    "$py" aio.py ...
# <repo>/.cache is git-ignored (it holds its own .gitignore).
#
# Env: PEER_CACHE_DIR overrides <repo>/.cache/peers; PYTHON picks the interpreter (python3).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$src/../../.." && pwd)"
cache="${PEER_CACHE_DIR:-$repo/.cache/peers}/python-kubernetes"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "build.sh: '$python' not found on PATH" >&2; exit 127; }

hash="$( { cd "$src" && cat build.sh requirements.txt; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
venv="$cache/$hash/venv"
if [[ -x "$venv/bin/python" && -e "$cache/$hash/ok" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

rm -rf "$cache/$hash"
mkdir -p "$cache/$hash"
if [[ -z "${PEER_CACHE_DIR:-}" && ! -e "$repo/.cache/.gitignore" ]]; then
    echo '*' > "$repo/.cache/.gitignore"  # the cache folder ignores itself
fi

echo "build.sh: creating python-kubernetes peer venv ($hash)..." >&2
start=$SECONDS
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$src/requirements.txt" >&2
touch "$cache/$hash/ok"
for d in "$cache"/*/; do  # drop venvs of older versions
    [[ "$(basename "$d")" == "$hash" ]] || rm -rf "$d"
done
echo "build.sh: venv ready in $((SECONDS - start))s: $venv" >&2
echo "$venv/bin/python"
