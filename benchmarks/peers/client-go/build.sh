#!/usr/bin/env bash
# Build (or reuse) the client-go leader-election benchmark peer.
#
# Output: the absolute path of the binary, as the last line on stdout:
# <repo>/.cache/peers/client-go/<hash>/peer, where <hash> covers build.sh,
# go.mod, go.sum, *.go and the Go version. An existing binary is reused.
# <repo>/.cache is git-ignored (it holds its own .gitignore).
#
# Env: PEER_CACHE_DIR overrides <repo>/.cache/peers.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$src/../../.." && pwd)"
cache="${PEER_CACHE_DIR:-$repo/.cache/peers}/client-go"

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH" >&2; exit 127; }

hash="$( { cd "$src" && cat build.sh go.mod go.sum $(ls *.go | LC_ALL=C sort); go env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
out="$cache/$hash/peer"
if [[ -x "$out" ]]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache/$hash"
if [[ -z "${PEER_CACHE_DIR:-}" && ! -e "$repo/.cache/.gitignore" ]]; then
    echo '*' > "$repo/.cache/.gitignore"  # the cache folder ignores itself
fi

echo "build.sh: building client-go peer ($hash)..." >&2
start=$SECONDS
tmp="$(mktemp "$cache/$hash/peer.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
( cd "$src" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -o "$tmp" . )
mv -f "$tmp" "$out"
trap - EXIT
for d in "$cache"/*/; do  # drop binaries of older source versions
    [[ "$(basename "$d")" == "$hash" ]] || rm -rf "$d"
done
echo "build.sh: built in $((SECONDS - start))s: $out" >&2
echo "$out"
