#!/bin/sh
# Builds the Debian package target/debian/cgnat_<version>_<arch>.deb from an
# already built release binary, with dpkg-deb alone (no debhelper, no tools
# from outside Debian). `make deb` builds the binary and runs this.
#
#   packaging/build-deb.sh [--bin PATH] [--out DIR]
#
# --bin   the cgnat binary to ship (default: target/release/cgnat)
# --out   where the .deb goes (default: target/debian)
#
# Environment: DEB_REVISION (default 1), DEB_MAINTAINER, NOSTRIP=1 (ship the
# binary with its debug information), SOURCE_DATE_EPOCH (default: the last
# git commit; file times and the changelog date, for reproducible packages).
# Prints the path of the package on its last line.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bin="$top/target/release/cgnat"
out="$top/target/debian"
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "usage: $0 [--bin PATH] [--out DIR]" >&2; exit 2 ;;
	esac
done
die() { echo "build-deb: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin: no such binary (run 'cargo build --release' or 'make deb')"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian package dpkg)"

pkg=cgnat
# The version of Cargo.toml ([workspace.package] or [package]); a
# pre-release "1.0.0-rc.1" sorts before "1.0.0" in Debian as "1.0.0~rc.1".
upstream=$(sed -n '/^\[\(workspace\.\)\{0,1\}package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$top/Cargo.toml" | head -1)
[ -n "$upstream" ] || die "no version in $top/Cargo.toml"
version="$(echo "$upstream" | sed 's/-/~/')-${DEB_REVISION:-1}"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"cgnat maintainers <maintainers@users.noreply.r-seed-80f68b95.example>"}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

deb="$out/${pkg}_${version}_${arch}.deb"
root="$out/${pkg}_${version}_${arch}"
rm -rf "$root"
umask 022
mkdir -p "$root/DEBIAN"

# Files.
install -D -m 0755 "$bin" "$root/usr/bin/cgnat"
if [ "${NOSTRIP:-0}" != 1 ]; then
	# As dh_strip does; the XDP object is data in .rodata and stays intact.
	strip=$(command -v strip || command -v llvm-strip || true)
	if [ -n "$strip" ]; then
		"$strip" --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/bin/cgnat"
	else
		echo "build-deb: no strip (binutils) found; shipping the binary unstripped" >&2
	fi
fi
install -D -m 0644 "$top/configs/cgnat.toml" "$root/etc/cgnat.toml"
install -D -m 0644 "$here/cgnat.service" "$root/lib/systemd/system/cgnat.service"
doc="$root/usr/share/doc/$pkg"
install -D -m 0644 "$top/README.md" "$doc/README.md"
install -D -m 0644 "$here/debian/copyright" "$doc/copyright"
# Cluster examples: the cgnat side and the BIRD 2 side (docs/cluster.md).
install -D -m 0644 "$top/docs/cluster.md" "$doc/cluster.md"
install -D -m 0644 "$top/configs/cluster.toml" "$doc/examples/cluster.toml"
for f in "$top"/configs/bird/*.conf; do
	install -D -m 0644 "$f" "$doc/examples/bird/$(basename "$f")"
done
date_r=$(date -u -d "@$SOURCE_DATE_EPOCH" -R)
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$doc/changelog.Debian" <<EOF
$pkg ($version) unstable; urgency=medium

  * Package of cgnat $upstream (git $commit), built by packaging/build-deb.sh.

 -- $maintainer  $date_r
EOF
gzip -9n "$doc/changelog.Debian"

# Control area.
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "$here/debian/$s" "$root/DEBIAN/$s"
done

# Shared-library dependencies: dpkg-shlibdeps (dpkg-dev) when it is there,
# else what it computes for this binary on Debian 12.
depends="libc6 (>= 2.34), libelf1 (>= 0.144), libgcc-s1 (>= 4.2), zlib1g (>= 1:1.2.3.3)"
if command -v dpkg-shlibdeps >/dev/null; then
	work=$(mktemp -d)
	mkdir "$work/debian"
	printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/debian/control"
	if shl=$(cd "$work" && dpkg-shlibdeps -O "$root/usr/bin/cgnat" 2>/dev/null); then
		depends=$(echo "$shl" | sed -n 's/^shlibs:Depends=//p')
	else
		echo "build-deb: dpkg-shlibdeps failed; using the built-in Depends" >&2
	fi
	rm -rf "$work"
fi
# /bin/kill (ExecReload of the unit) comes from procps.
depends="$depends, procps"

installed_size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Description: carrier-grade NAT44 (RFC 6888) with an XDP data path
 cgnat puts thousands of subscribers (usually 100.64.0.0/10) behind a few
 public IPv4 addresses. Translation, connection tracking and forwarding all
 happen in one XDP program, before the kernel's network stack; a small
 daemon loads it, configures it from /etc/cgnat.toml, expires sessions and
 reports counters and sessions (cgnat stats, cgnat sessions).
 .
 The systemd unit cgnat.service is installed but neither enabled nor
 started: edit /etc/cgnat.toml, then run "systemctl enable --now cgnat".
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
	xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"

# Reproducible: every file dated SOURCE_DATE_EPOCH.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
rm -rf "$root"
echo "$deb"
