#!/usr/bin/env bash
# Runs the BPF_PROG_TEST_RUN packet tables (kit/tests/prog_run.rs and
# kit/tests/prog_run/) on the oldest kernel Debian packages (6.1), booted
# under qemu with TCG (no KVM needed).
#
#   kit/tests/oldkernel/run.sh [PROG_RUN_TEST_EXECUTABLE]
#
# Needs root (apt-get, mknod). Installs what is missing (qemu-system-x86,
# busybox-static, cpio, iproute2, bpftool), downloads (does not install)
# Debian's newest linux-image-6.1.0-*-amd64-unsigned and keeps vmlinuz and
# the modules the tests need in target/oldkernel/<package>/. Without an
# argument it builds the test executable with cargo (release profile).
# The VM runs the executable with --test-threads=1 and CI=true from an
# initramfs holding busybox, the executable, `ip`, `bpftool` and their
# shared libraries, then powers off.
#
# Environment:
#   OLDKERNEL_FILTER   test-name filter passed to the harness (default: none,
#                      the whole suite)
#   OLDKERNEL_TIMEOUT  hard limit for the VM in seconds (default 900)
#   OLDKERNEL_SERIES   kernel series to boot (default 6.1)
#
# Prints the tail of the serial console and exits 0 only if every word of
# OLDKERNEL_FILTER names at least one test (checked before the boot, and
# again on the tests that passed in the VM), the harness closed with
# "test result: ok. N passed; 0 failed" and the VM reported
# OLDKERNEL-RESULT rc=0. The whole console is kept in
# target/oldkernel/serial.log. docs/kernels.md says why 6.1 is enough.
set -euo pipefail

cd "$(dirname "$0")/../../.."
ROOT=$PWD
OUT=$ROOT/target/oldkernel
SERIES=${OLDKERNEL_SERIES:-6.1}
TIMEOUT=${OLDKERNEL_TIMEOUT:-900}
FILTER=${OLDKERNEL_FILTER:-}
# Kernel options the tests need that Debian builds as modules.
MODULE_CONFIGS=(CONFIG_VETH)
# Kernel options that must be built in.
BUILTIN_CONFIGS=(CONFIG_BPF_SYSCALL CONFIG_BPF_JIT CONFIG_DEBUG_INFO_BTF CONFIG_NET_NS
	CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP CONFIG_DEVTMPFS CONFIG_SERIAL_8250_CONSOLE)

# Progress on stderr; the verdict lines on stdout.
log() { printf '[oldkernel] %s\n' "$*" >&2; }
say() { printf '[oldkernel] %s\n' "$*"; }
die() {
	say "FAIL: $*"
	exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (apt-get, mknod, and the tests themselves)"
[ "$(uname -m)" = x86_64 ] || die "x86_64 only (boots Debian's amd64 kernel)"
mkdir -p "$OUT"

# --- tools ----------------------------------------------------------------
apt_updated=0
apt_update() {
	if [ $apt_updated = 0 ]; then
		log "apt-get update"
		apt-get update -qq
		apt_updated=1
	fi
}
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v ip >/dev/null || need+=(iproute2)
command -v bpftool >/dev/null || need+=(bpftool)
command -v timeout >/dev/null || need+=(coreutils)
command -v gzip >/dev/null || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
	apt_update
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -1)
[ -x "$BUSYBOX" ] || die "busybox-static installed no /bin/busybox"

# --- kernel ---------------------------------------------------------------
# The newest linux-image-<series>.0-N-amd64-unsigned apt knows of.
newest_pkg() {
	apt-cache search --names-only "^linux-image-${SERIES//./\\.}\\.0-[0-9]+-amd64-unsigned\$" 2>/dev/null |
		awk '{print $1}' | sort -V | tail -1
}
pkg=$(newest_pkg)
if [ -z "$pkg" ]; then
	cached=$(find "$OUT" -maxdepth 2 -path "*/linux-image-${SERIES}.0-*-amd64-unsigned/vmlinuz" 2>/dev/null | sort -V | tail -1)
	if [ -n "$cached" ]; then
		pkg=$(basename "$(dirname "$cached")")
	else
		apt_update
		pkg=$(newest_pkg)
	fi
fi
[ -n "$pkg" ] || die "apt knows no linux-image-${SERIES}.0-*-amd64-unsigned package"
KDIR=$OUT/$pkg
if [ ! -f "$KDIR/vmlinuz" ]; then
	log "downloading $pkg"
	tmp=$OUT/download
	rm -rf "$tmp" "$KDIR.part"
	mkdir -p "$tmp/x" "$KDIR.part/modules"
	# apt's sandbox user must be able to write there
	chmod 777 "$tmp"
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
		apt_update
		(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
	}
	dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
	cp "$tmp"/x/boot/vmlinuz-* "$KDIR.part/vmlinuz"
	cp "$tmp"/x/boot/config-* "$KDIR.part/config"
	kver=$(basename "$(ls -d "$tmp"/x/lib/modules/*)")
	echo "$kver" >"$KDIR.part/release"
	moddir=$tmp/x/lib/modules/$kver
	# Modules for MODULE_CONFIGS, with what they depend on (the package
	# has no modules.dep: depmod makes it on install), in load order.
	declare -A seen=()
	order=()
	ko_path() {
		local f
		f=$(find "$moddir/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \
			-o -name "${1//_/-}.ko" -o -name "${1//_/-}.ko.xz" -o -name "${1//_/-}.ko.zst" \) | head -1)
		[ -n "$f" ] || die "module $1 not in $pkg"
		echo "$f"
	}
	add_module() {
		local name=$1 f deps d
		[ -z "${seen[$name]:-}" ] || return 0
		seen[$name]=1
		f=$(ko_path "$name")
		case "$f" in
		*.xz) xz -dc "$f" >"$KDIR.part/modules/$name.ko" ;;
		*.zst) zstd -qdc "$f" >"$KDIR.part/modules/$name.ko" ;;
		*) cp "$f" "$KDIR.part/modules/$name.ko" ;;
		esac
		deps=$(tr '\0' '\n' <"$KDIR.part/modules/$name.ko" | sed -n 's/^depends=//p' | head -1)
		for d in ${deps//,/ }; do
			add_module "$d"
		done
		order+=("$name")
	}
	for c in "${MODULE_CONFIGS[@]}"; do
		case "$(grep -E "^$c=" "$KDIR.part/config" || true)" in
		"$c=y") ;;
		"$c=m")
			# the module is named after its object in the Makefile; for
			# the options here it is the lower-case name without CONFIG_
			m=${c#CONFIG_}
			add_module "${m,,}"
			;;
		*) die "$pkg: $c is not set" ;;
		esac
	done
	printf '%s\n' "${order[@]}" >"$KDIR.part/modules/order"
	rm -rf "$tmp"
	mv "$KDIR.part" "$KDIR"
fi
KVER=$(cat "$KDIR/release")
for c in "${BUILTIN_CONFIGS[@]}"; do
	grep -qE "^$c=y" "$KDIR/config" || die "$pkg: $c is not built in"
done
log "kernel: $pkg ($KVER), modules: $(tr '\n' ' ' <"$KDIR/modules/order")"

# --- test executable ------------------------------------------------------
if [ $# -ge 1 ]; then
	EXE=$(readlink -f "$1")
else
	log "building the prog_run test executable (cargo test --release --no-run)"
	EXE=$(cargo test --release -p cgnat-kit --test prog_run --no-run --message-format=json |
		grep '"executable":"[^"]' | grep '"name":"prog_run"' |
		sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1) ||
		die "cargo did not build the prog_run test executable"
fi
if [ -z "$EXE" ] || [ ! -x "$EXE" ]; then
	die "no prog_run test executable (${EXE:-cargo printed none})"
fi
log "test executable: $EXE"
# Every filter must select at least one test: a filter that matches nothing
# (a test renamed) would silently drop a table from the run.
if [ -n "$FILTER" ]; then
	listed=$("$EXE" --list --format terse 2>/dev/null | sed -n 's/: test$//p')
	for f in $FILTER; do
		echo "$listed" | grep -qF -- "$f" || die "filter '$f' matches no test of $EXE"
	done
fi

# --- initramfs ------------------------------------------------------------
STAGE=$OUT/initramfs
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,etc,test}
cp "$BUSYBOX" "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
mknod -m 600 "$STAGE/dev/console" c 5 1
mknod -m 666 "$STAGE/dev/null" c 1 3
# A binary and every shared library it needs, the dynamic loader included,
# at the paths ldd resolved them to.
copy_with_libs() {
	local bin=$1 dest=$2 lib
	cp "$bin" "$STAGE$dest"
	for lib in $(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*'); do
		[ -e "$STAGE$lib" ] && continue
		mkdir -p "$STAGE$(dirname "$lib")"
		cp -L "$lib" "$STAGE$lib"
	done
}
copy_with_libs "$EXE" /test/prog_run
copy_with_libs "$(command -v ip)" /usr/sbin/ip
copy_with_libs "$(command -v bpftool)" /usr/sbin/bpftool
while read -r m; do
	[ -n "$m" ] && cp "$KDIR/modules/$m.ko" "$STAGE/lib/modules/"
done <"$KDIR/modules/order"
cp "$KDIR/modules/order" "$STAGE/lib/modules/order"
echo "root:x:0:0:root:/root:/bin/sh" >"$STAGE/etc/passwd"

# What the program calls and creates, from its source: the VM checks each
# against the booted kernel with bpftool's probes.
helpers=$(grep -rhoE '\bbpf_[a-z0-9_]+\(' bpf/ | tr -d '(' | sort -u |
	grep -vE '^bpf_(htons|ntohs|htonl|ntohl)$' | tr '\n' ' ')
maps=$(grep -rhoE 'BPF_MAP_TYPE_[A-Z_]+' bpf/ | sort -u | tr '\n' ' ')

cat >"$STAGE/init" <<EOF
#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /root
echo "OLDKERNEL-KERNEL \$(cat /proc/version)"
while read -r m; do
	[ -n "\$m" ] && insmod /lib/modules/\$m.ko
done </lib/modules/order
ip link set lo up
[ -e /sys/kernel/btf/vmlinux ] && echo "OLDKERNEL-FEATURE btf /sys/kernel/btf/vmlinux present" \
	|| echo "OLDKERNEL-FEATURE btf MISSING"
bpftool feature probe kernel >/tmp/probe 2>/dev/null
sed -n '/eBPF helpers supported for program type xdp:/,/^eBPF helpers supported/p' /tmp/probe >/tmp/xdp_helpers
for h in $helpers; do
	grep -qw "\$h" /tmp/xdp_helpers && echo "OLDKERNEL-FEATURE helper \$h ok" \
		|| echo "OLDKERNEL-FEATURE helper \$h MISSING"
done
for m in $maps; do
	t=\$(echo "\${m#BPF_MAP_TYPE_}" | tr 'A-Z' 'a-z')
	grep -q "eBPF map_type \$t is available" /tmp/probe && echo "OLDKERNEL-FEATURE map \$t ok" \
		|| echo "OLDKERNEL-FEATURE map \$t MISSING"
done
grep -E "^eBPF program_type xdp|^Large program|^Bounded loop|^ISA extension v3" /tmp/probe | sed 's/^/OLDKERNEL-FEATURE probe: /'
cd /tmp
start=\$(cut -d. -f1 /proc/uptime)
CI=true RUST_BACKTRACE=1 /test/prog_run --test-threads=1 $FILTER
rc=\$?
echo "OLDKERNEL-TIME \$(( \$(cut -d. -f1 /proc/uptime) - start )) s"
echo "OLDKERNEL-RESULT rc=\$rc"
sync
poweroff -f
EOF
chmod +x "$STAGE/init"
INITRD=$OUT/initramfs.cpio.gz
(cd "$STAGE" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$INITRD"
log "initramfs: $(du -h "$INITRD" | cut -f1)"

# --- boot -----------------------------------------------------------------
SERIAL=$OUT/serial.log
log "booting $KVER under qemu (TCG, limit ${TIMEOUT}s)${FILTER:+, filter: $FILTER}"
t0=$(date +%s)
set +e
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 \
	-nographic -no-reboot -nic none -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
	-append "console=ttyS0 panic=-1 quiet" </dev/null >"$SERIAL" 2>&1
qrc=$?
set -e
elapsed=$(($(date +%s) - t0))
# without carriage returns and the terminal control sequences of the firmware
sed -E 's/\r//g; s/\x1b(\[[0-9;?]*[A-Za-z]|c)//g' "$SERIAL" >"$SERIAL.txt" && mv "$SERIAL.txt" "$SERIAL"

# Indented: the harness's closing line must not pass for this run's own.
echo "----- serial console (tail; whole: $SERIAL) -----"
tail -n 80 "$SERIAL" | sed 's/^/  | /'
echo "-----"
if grep -q 'BEGIN PROG LOAD LOG' "$SERIAL"; then
	echo "----- the kernel refused the program $(grep -c 'BEGIN PROG LOAD LOG' "$SERIAL") time(s), first:"
	grep -m1 'BPF program load failed' "$SERIAL" | sed 's/^/  | /'
	echo "----- its verifier log's last 60 lines -----"
	awk '/BEGIN PROG LOAD LOG/{on=1; n=0} on{buf[n++]=$0} /END PROG LOAD LOG/{s=(n>60?n-60:0); for(i=s;i<n;i++) print buf[i]; exit}' "$SERIAL" | sed 's/^/  | /'
	echo "-----"
fi
grep '^OLDKERNEL-FEATURE' "$SERIAL" | sed 's/^OLDKERNEL-FEATURE /feature: /' || true
kernel=$(sed -n 's/^OLDKERNEL-KERNEL //p' "$SERIAL" | head -1)
result=$(grep -E '^test result: ' "$SERIAL" | tail -1 || true)
say "kernel: ${kernel:-did not boot}"
say "qemu exit $qrc after ${elapsed}s (limit ${TIMEOUT}s); in-VM test time: $(sed -n 's/^OLDKERNEL-TIME //p' "$SERIAL" | head -1)"
say "harness: ${result:-no closing line}"
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
	die "the VM hit the ${TIMEOUT}s limit"
fi
grep -q '^OLDKERNEL-RESULT rc=0$' "$SERIAL" || die "the test executable failed in the VM ($(grep -o 'OLDKERNEL-RESULT rc=[0-9]*' "$SERIAL" || echo 'no result marker'))"
echo "$result" | grep -qE '^test result: ok\. [0-9]+ passed; 0 failed' || die "the harness did not report 0 failed"
echo "$result" | grep -qE '^test result: ok\. 0 passed' && die "no test ran (filter: ${FILTER:-none})"
# ... and each filter selected a test that passed in the VM
for f in $FILTER; do
	grep -E '^test [^ ]+ \.\.\. ok$' "$SERIAL" | grep -qF -- "$f" ||
		die "no test matching '$f' passed in the VM"
done
say "PASS on $KVER"
