#!/bin/bash
# Builds everything a test or demo guest needs: the Debian guest kernel, the patched
# virtio_balloon.ko (out of tree, from Debian's own source and headers) and a busybox
# initramfs holding both the stock and the patched module.
#
# Usage: guest/build-all.sh [--series 6.1|6.12] OUTDIR
#   OUTDIR/vmlinuz             guest kernel (Debian's linux-image-<series>, not installed)
#   OUTDIR/initramfs.cpio.gz   busybox init, stock + patched virtio_balloon.ko, memhog,
#                              pagestream, command channel on ttyS1 (see guest/README.md)
#   OUTDIR/virtio_balloon.ko   the patched module
#   OUTDIR/kernel-release      e.g. 6.1.0-56-amd64
#   OUTDIR/debs/               cached .deb downloads (DEB_CACHE= to share one cache)
#
# Idempotent: downloads and extractions are cached in OUTDIR; a second run only rebuilds
# the module and the initramfs (a few seconds). Nothing is installed on the host.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SERIES=6.1
while [ $# -gt 0 ]; do
	case $1 in
	--series) SERIES=$2; shift 2 ;;
	--series=*) SERIES=${1#*=}; shift ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
	-*) echo "build-all: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--series 6.1|6.12] OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
DEBS=${DEB_CACHE:-$OUT/debs}
PATCHDIR=$HERE/patches/linux-$SERIES
mkdir -p "$DEBS" "$OUT/k"
# Tests and teammates may build the same OUTDIR at once: one builder at a time.
exec 9>"$OUT/.build.lock"
flock 9
T0=$(date +%s.%N)
say() { echo "build-all: $*"; }
for tool in apt-get dpkg-deb depmod cpio gzip xz make gcc patch busybox; do
	command -v $tool >/dev/null || [ -x /bin/$tool ] ||
		{ echo "build-all: missing $tool (run scripts/install-deps.sh)" >&2; exit 1; }
done

# 1. Which kernel: the one Debian 12's meta-package for the series depends on today.
case $SERIES in
6.1) META=linux-image-amd64 ;;
6.12) META=linux-image-6.12-amd64 ;;
*) echo "build-all: unsupported series $SERIES" >&2; exit 2 ;;
esac
[ -d "$PATCHDIR" ] || { echo "build-all: no patches in $PATCHDIR" >&2; exit 1; }
if [ -n "${GUEST_KPKG:-}" ]; then
	KPKG=$GUEST_KPKG
else
	KPKG=$(apt-cache depends $META 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	# apt lists may be missing on a fresh machine; fall back to the last resolved kernel
	if [ -z "$KPKG" ] && [ -f "$OUT/k/kpkg" ]; then KPKG=$(cat "$OUT/k/kpkg"); fi
fi
[ -n "$KPKG" ] || { echo "build-all: cannot resolve $META (apt-get update?)" >&2; exit 1; }
echo "$KPKG" > "$OUT/k/kpkg"
KREL=${KPKG#linux-image-}            # 6.1.0-56-amd64 / 6.12.117+deb12-amd64
ABI=${KREL%-amd64}                   # 6.1.0-56 / 6.12.117+deb12
if [ "$SERIES" = 6.1 ]; then KBUILD=linux-kbuild-6.1; else KBUILD=linux-kbuild-$ABI; fi

# 2. Downloads, each once (pinned to the image's exact version, source included).
fetch() { # fetch PKG[=VERSION] -> path of the cached .deb on stdout
	local pkg=${1%%=*} ver= f
	[[ $1 == *=* ]] && ver=${1#*=}
	f=$(ls "$DEBS/${pkg}_${ver//:/%3a}"*.deb 2>/dev/null | head -1 || true)
	if [ -z "$f" ]; then
		say "downloading $1" >&2
		(cd "$DEBS" && apt-get -q -o APT::Sandbox::User=root download "$1" >&2)
		f=$(ls "$DEBS/${pkg}_${ver//:/%3a}"*.deb | head -1)
	fi
	echo "$f"
}
IMG_DEB=$(fetch "$KPKG")
KVERSION=$(dpkg-deb -f "$IMG_DEB" Version)   # e.g. 6.1.192-2
HDR_DEB=$(fetch "linux-headers-$KREL=$KVERSION")
CMN_DEB=$(fetch "linux-headers-$ABI-common=$KVERSION")
KB_DEB=$(fetch "$KBUILD=$KVERSION")
SRC_DEB=$(fetch "linux-source-$SERIES=$KVERSION")

# 3. Extract (cached): image, headers + kbuild, and only the driver from the source.
K=$OUT/k/$KREL
if [ ! -f "$K/.image-done" ]; then
	say "extracting $(basename "$IMG_DEB")"
	rm -rf "$K/image"; mkdir -p "$K/image"
	dpkg-deb -x "$IMG_DEB" "$K/image"
	depmod -b "$K/image" "$KREL"         # the .deb ships no modules.dep
	touch "$K/.image-done"
fi
if [ ! -f "$K/.kb-done" ]; then
	say "extracting headers and kbuild"
	rm -rf "$K/kb"; mkdir -p "$K/kb"
	for d in "$HDR_DEB" "$CMN_DEB" "$KB_DEB"; do dpkg-deb -x "$d" "$K/kb"; done
	# The arch headers' Makefile includes the -common tree by absolute path.
	sed -i "s|^include /usr/src/|include $K/kb/usr/src/|" "$K/kb/usr/src/linux-headers-$KREL/Makefile"
	touch "$K/.kb-done"
fi
# The driver, and checkpatch.pl with its data files (tests/guest runs it on the series).
if [ ! -f "$K/.src-done-2" ]; then
	say "extracting drivers/virtio/virtio_balloon.c from $(basename "$SRC_DEB") (slow: one xz stream)"
	rm -rf "$K/src"; mkdir -p "$K/src"
	dpkg-deb --fsys-tarfile "$SRC_DEB" |
		tar -xO "./usr/src/linux-source-$SERIES.tar.xz" |
		tar -xJ -C "$K/src" --strip-components=1 \
			"linux-source-$SERIES/drivers/virtio/virtio_balloon.c" \
			"linux-source-$SERIES/scripts/checkpatch.pl" \
			"linux-source-$SERIES/scripts/spelling.txt" \
			"linux-source-$SERIES/scripts/const_structs.checkpatch"
	touch "$K/.src-done-2"
fi

# 4. Patched module: pristine source + the series, built against Debian's headers.
M=$OUT/mod
rm -rf "$M/tree"; mkdir -p "$M/tree/drivers/virtio" "$M/build"
cp "$K/src/drivers/virtio/virtio_balloon.c" "$M/tree/drivers/virtio/"
for p in "$PATCHDIR"/*.patch; do
	[ -e "$p" ] || continue
	patch -s -p1 -d "$M/tree" --no-backup-if-mismatch < "$p" ||
		{ echo "build-all: $(basename "$p") does not apply to $KREL" >&2; exit 1; }
	say "applied $(basename "$p")"
done
cmp -s "$M/tree/drivers/virtio/virtio_balloon.c" "$M/build/virtio_balloon.c" ||
	cp "$M/tree/drivers/virtio/virtio_balloon.c" "$M/build/virtio_balloon.c"
echo 'obj-m += virtio_balloon.o' > "$M/build/Kbuild"
rm -f "$M/build/virtio_balloon.ko"
# No BTF for the module: it needs pahole and the kernel's vmlinux, neither of which
# a module build has (6.1 skips it with a warning, 6.12 fails without pahole).
make -s -C "$K/kb/usr/src/linux-headers-$KREL" M="$M/build" CONFIG_DEBUG_INFO_BTF_MODULES= modules 2>&1 |
	grep -v 'Skipping BTF generation' || true
[ -f "$M/build/virtio_balloon.ko" ] || { echo "build-all: module build failed" >&2; exit 1; }
cp "$M/build/virtio_balloon.ko" "$OUT/virtio_balloon.ko"
say "module: $OUT/virtio_balloon.ko ($(modinfo -F vermagic "$OUT/virtio_balloon.ko"))"

# 5. Guest tools (static, so the initramfs needs no libc).
mkdir -p "$OUT/tools"
for t in memhog; do
	if [ ! -x "$OUT/tools/$t" ] || [ "$HERE/tools/$t.c" -nt "$OUT/tools/$t" ]; then
		gcc -static -O2 -Wall -o "$OUT/tools/$t" "$HERE/tools/$t.c"
	fi
done

# 6. Initramfs.
cp "$K/image/boot/vmlinuz-$KREL" "$OUT/vmlinuz"
echo "$KREL" > "$OUT/kernel-release"
KO_PATCHED=$OUT/virtio_balloon.ko "$HERE/mkinitramfs.sh" "$K/image" "$KREL" "$OUT/tools" \
	"$OUT/initramfs.cpio.gz"
say "kernel: $OUT/vmlinuz ($KREL, $KVERSION)"
say "done in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
