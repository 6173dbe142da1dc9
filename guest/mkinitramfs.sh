#!/bin/bash
# Packs the guest initramfs: busybox-static, guest/initramfs/init, the guest tools, and the
# virtio modules of an extracted Debian kernel image (stock virtio_balloon.ko plus, if
# KO_PATCHED= names one, the patched module as virtio_balloon_patched.ko).
# Usage: mkinitramfs.sh IMAGE_ROOT KREL TOOLS_DIR OUT.cpio.gz
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 4 ] || { echo "usage: $0 IMAGE_ROOT KREL TOOLS_DIR OUT.cpio.gz" >&2; exit 2; }
IMG=$1 KREL=$2 TOOLS=$3 OUT=$4
MODDIR=$IMG/lib/modules/$KREL
BUSYBOX=$(command -v busybox || echo /bin/busybox)
file -L "$BUSYBOX" 2>/dev/null | grep -q 'dynamically' &&
	{ echo "mkinitramfs: $BUSYBOX is dynamic; install busybox-static" >&2; exit 1; }

R=$(mktemp -d "${TMPDIR:-/tmp}/initramfs.XXXXXX")
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,mods,etc,run}
cp "$BUSYBOX" "$R/bin/busybox"
# "busybox --list" names busybox itself: a symlink to itself would be an ELOOP init.
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
cp "$HERE/initramfs/init" "$R/init"
cp "$HERE/initramfs/pagestream" "$HERE/initramfs/swap-on" "$R/bin/"
cp "$TOOLS"/* "$R/bin/"
chmod 755 "$R/init" "$R/bin/pagestream" "$R/bin/swap-on"

# Modules in load order, dependencies first (resolved from modules.dep).
WANT="drivers/virtio/virtio_pci drivers/block/virtio_blk drivers/virtio/virtio_balloon"
order=()
add() {
	local m=$1 d
	for d in $(grep "^$m:" "$MODDIR/modules.dep" | cut -d: -f2); do add "$d"; done
	[[ " ${order[*]:-} " == *" $m "* ]] || order+=("$m")
}
for w in $WANT; do
	if m=$(grep -oE "^kernel/$w\.ko(\.xz|\.zst)?:" "$MODDIR/modules.dep" | tr -d :); then
		add "$m"
	elif grep -q "^kernel/$w\.ko" "$MODDIR/modules.builtin"; then
		: # built in (6.12 builds virtio_pci in)
	else
		echo "mkinitramfs: $w not in $KREL" >&2; exit 1
	fi
done
: > "$R/mods/order"
for m in "${order[@]}"; do
	b=$(basename "$m"); b=${b%.xz}; b=${b%.zst}
	case $m in            # busybox insmod reads plain ELF only
	*.xz) xz -dc "$MODDIR/$m" > "$R/mods/$b" ;;
	*.zst) zstd -qdc "$MODDIR/$m" > "$R/mods/$b" ;;
	*) cp "$MODDIR/$m" "$R/mods/$b" ;;
	esac
	echo "$b" >> "$R/mods/order"
done
# zram for guest swap (initramfs/swap-on), loaded only on demand.
mkdir -p "$R/mods/extra"
for m in kernel/mm/zsmalloc kernel/drivers/block/zram/zram; do
	f=$(grep -oE "^$m\.ko(\.xz|\.zst)?:" "$MODDIR/modules.dep" | tr -d :) || continue
	case $f in
	*.xz) xz -dc "$MODDIR/$f" > "$R/mods/extra/$(basename "$m").ko" ;;
	*.zst) zstd -qdc "$MODDIR/$f" > "$R/mods/extra/$(basename "$m").ko" ;;
	*) cp "$MODDIR/$f" "$R/mods/extra/" ;;
	esac
done
[ -n "${KO_PATCHED:-}" ] && cp "$KO_PATCHED" "$R/mods/virtio_balloon_patched.ko"
echo "$KREL" > "$R/etc/kernel-release"
(cd "$R" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "mkinitramfs: $OUT ($(du -h "$OUT" | cut -f1)); modules: $(tr '\n' ' ' < "$R/mods/order")"
