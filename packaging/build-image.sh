#!/bin/sh
# Builds the container image cgnat:<version> (and cgnat:latest) from
# packaging/Containerfile with podman (or docker): a statically linked
# cgnat on an empty base, so that no registry is needed. `make image` runs
# this.
#
#   packaging/build-image.sh [--bin PATH] [--tag NAME]
#
# --bin   a statically linked cgnat to ship (default: build one with cargo:
#         feature `static`, crt-static, target x86_64-unknown-linux-gnu)
# --tag   the image name (default: cgnat:<version>, also tagged cgnat:latest)
#
# Prints the image name on its last line.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bin=""
tag=""
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--tag) tag=$2; shift 2 ;;
	*) echo "usage: $0 [--bin PATH] [--tag NAME]" >&2; exit 2 ;;
	esac
done
die() { echo "build-image: $*" >&2; exit 1; }

if command -v podman >/dev/null; then engine=podman
elif command -v docker >/dev/null; then engine=docker
else die "neither podman nor docker is installed (apt install podman)"; fi

version=$(sed -n '/^\[\(workspace\.\)\{0,1\}package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$top/Cargo.toml" | head -1)
[ -n "$version" ] || die "no version in $top/Cargo.toml"
[ -n "$tag" ] || tag="cgnat:$version"

if [ -z "$bin" ]; then
	arch=$(uname -m)
	target="$arch-unknown-linux-gnu"
	# libbpf-sys links libelf and zlib from here (their .a files come
	# with libelf-dev and zlib1g-dev)
	LIBBPF_SYS_LIBRARY_PATH="/usr/lib/$arch-linux-gnu" \
	RUSTFLAGS="-C target-feature=+crt-static" \
	CARGO_TARGET_DIR="$top/target/static" \
		cargo build --release --locked -p cgnat --bin cgnat --features static \
		--target "$target" --manifest-path "$top/Cargo.toml" >&2
	bin="$top/target/static/$target/release/cgnat"
fi
[ -x "$bin" ] || die "$bin: no such binary"
if command -v ldd >/dev/null && ldd "$bin" 2>&1 | grep -q '=>'; then
	die "$bin is dynamically linked; the image has no libraries (build with --features static)"
fi

ctx="$top/target/image"
rm -rf "$ctx"
mkdir -p "$ctx"
if command -v strip >/dev/null; then
	strip --strip-unneeded -o "$ctx/cgnat" "$bin"
else
	cp "$bin" "$ctx/cgnat"
fi
cp "$top/configs/cgnat.toml" "$ctx/cgnat.toml"
"$engine" build --quiet -f "$here/Containerfile" -t "$tag" -t cgnat:latest "$ctx" >&2
echo "$tag"
