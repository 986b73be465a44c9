#!/usr/bin/env bash
# Build (or reuse) the etcd + kube-apiserver test harness binary.
#
# Output: the absolute path of the binary, as the last line on stdout.
# The binary lives in <repo>/.cache/apiserver/<hash>/harness where <hash>
# covers go.mod, go.sum, *.go and the Go version; an existing binary is
# reused. <repo>/.cache ignores itself (it holds its own .gitignore).
#
# Env: HARNESS_CACHE_DIR overrides <repo>/.cache/apiserver.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$src/../.." && pwd)"
cache="${HARNESS_CACHE_DIR:-$repo/.cache/apiserver}"

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH" >&2; exit 127; }

hash="$( { cd "$src" && cat build.sh go.mod go.sum $(ls *.go | LC_ALL=C sort); go env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
out="$cache/$hash/harness"
if [[ -x "$out" ]]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache/$hash"
if [[ -z "${HARNESS_CACHE_DIR:-}" && ! -e "$repo/.cache/.gitignore" ]]; then
    echo '*' > "$repo/.cache/.gitignore"  # the cache folder ignores itself
fi

echo "build.sh: building harness ($hash), a cold build takes several minutes..." >&2
start=$SECONDS
tmp="$(mktemp "$cache/$hash/harness.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(
    cd "$src"
    # Stamp the version as kube-apiserver's own build does (else v0.0.0-master).
    kv="$(go list -m -mod=readonly -f '{{.Version}}' k8s.io/kubernetes)"  # e.g. v1.37.2
    minor="${kv#v1.}"; minor="${minor%%.*}"
    pkg=k8s.io/component-base/version
    CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath \
        -ldflags="-s -w -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
        -o "$tmp" .
)
mv -f "$tmp" "$out"
trap - EXIT
# Drop binaries of older source versions.
for d in "$cache"/*/; do
    [[ "$(basename "$d")" == "$hash" ]] || rm -rf "$d"
done
echo "build.sh: built in $((SECONDS - start))s: $out" >&2
echo "$out"
