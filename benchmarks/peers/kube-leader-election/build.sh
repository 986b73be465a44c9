#!/usr/bin/env bash
# Build (or reuse) the kube-leader-election benchmark peer.
#
# Output: the absolute path of the binary, as the last line on stdout:
# <repo>/.cache/peers/kube-leader-election/<hash>/peer, where <hash> covers
# build.sh, Cargo.toml, Cargo.lock, src/*.rs and the rustc version. An existing
# binary is reused. Cargo's target dir is <repo>/.cache/peers/kube-leader-election/target
# (so nothing is written into the source tree). <repo>/.cache is git-ignored.
#
# Env: PEER_CACHE_DIR overrides <repo>/.cache/peers.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$src/../../.." && pwd)"
cache="${PEER_CACHE_DIR:-$repo/.cache/peers}/kube-leader-election"

command -v cargo >/dev/null || { echo "build.sh: 'cargo' not found on PATH" >&2; exit 127; }

hash="$( { cd "$src" && cat build.sh Cargo.toml Cargo.lock $(ls src/*.rs | LC_ALL=C sort); rustc -vV; } | sha256sum | cut -c1-16)"
out="$cache/$hash/peer"
if [[ -x "$out" ]]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache/$hash"
if [[ -z "${PEER_CACHE_DIR:-}" && ! -e "$repo/.cache/.gitignore" ]]; then
    echo '*' > "$repo/.cache/.gitignore"  # the cache folder ignores itself
fi

echo "build.sh: building kube-leader-election peer ($hash); a cold build takes a few minutes..." >&2
start=$SECONDS
target="$cache/target"
# Cargo.lock is generated here, not kept in git. kube-leader-election asks for
# k8s-openapi >=0.27, which alone resolves to 0.29 while kube 4.2 uses 0.28: unify them.
(
  cd "$src"
  cargo generate-lockfile >&2
  if cargo tree -i k8s-openapi@0.29.0 >/dev/null 2>&1; then
    cargo update -p k8s-openapi@0.29.0 --precise 0.28.0 >&2
  fi
  CARGO_TARGET_DIR="$target" cargo build --release --bin peer >&2
)
tmp="$(mktemp "$cache/$hash/peer.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cp "$target/release/peer" "$tmp"
chmod +x "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
for d in "$cache"/*/; do  # drop binaries of older source versions (keep target/)
    b="$(basename "$d")"
    [[ "$b" == "$hash" || "$b" == target ]] || rm -rf "$d"
done
echo "build.sh: built in $((SECONDS - start))s: $out" >&2
echo "$out"
