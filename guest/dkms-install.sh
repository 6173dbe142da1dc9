#!/bin/sh
# Installs the auto-deflate virtio_balloon in a Debian 12 guest with DKMS.
# Run as root inside the guest, from a checkout of this repository:
#   guest/dkms-install.sh          # lays out /usr/src, dkms add + build + install
# Needs: dkms, linux-headers-$(uname -r), and apt access to linux-source-X.Y (or the
# package installed). Then: modprobe -r virtio_balloon && modprobe virtio_balloon,
# or reboot; /sys/module/virtio_balloon/version then reads "0.1-autoballoon".
# Uninstall: dkms remove autoballoon-virtio-balloon/0.1 --all
#
# Any arguments are passed to every dkms call, e.g. to build for another kernel into
# private trees (what tests/guest does, on the host):
#   guest/dkms-install.sh --sourcetree S --dkmstree D --installtree I/lib/modules \
#       -k KVER --kernelsourcedir HEADERS --no-depmod
# --sourcetree (default /usr/src) is also where the package source is laid out.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=autoballoon-virtio-balloon
VERSION=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$HERE/dkms.conf")
SRCTREE=/usr/src
DKMSTREE=
prev=
for a in "$@"; do
	case $prev in --sourcetree) SRCTREE=$a ;; --dkmstree) DKMSTREE=$a ;; esac
	case $a in --sourcetree=*) SRCTREE=${a#*=} ;; --dkmstree=*) DKMSTREE=${a#*=} ;; esac
	prev=$a
done
[ -z "$DKMSTREE" ] || mkdir -p "$DKMSTREE"   # dkms wants it to exist and be writable
command -v dkms >/dev/null || { echo "dkms-install: dkms is not installed (apt-get install dkms)" >&2; exit 1; }
DEST=$SRCTREE/$NAME-$VERSION
rm -rf "$DEST"
mkdir -p "$DEST/patches"
cp "$HERE/dkms.conf" "$HERE/dkms/prepare-source.sh" "$DEST/"
cp -r "$HERE/patches/linux-6.1" "$HERE/patches/linux-6.12" "$DEST/patches/"
chmod 755 "$DEST/prepare-source.sh"
# A re-run replaces an earlier registration of this version instead of failing on it.
if dkms status "$@" "$NAME/$VERSION" 2>/dev/null | grep -q .; then
	dkms remove "$@" "$NAME/$VERSION" --all >/dev/null 2>&1 ||
		dkms remove "$@" "$NAME/$VERSION" >/dev/null
fi
dkms add "$@" "$NAME/$VERSION"
dkms build "$@" "$NAME/$VERSION"
dkms install "$@" "$NAME/$VERSION"
# dkms install exits 0 even when its version check refuses to replace a module; then
# "dkms status" says "installed (WARNING! Diff between built and installed module!)".
st=$(dkms status "$@" "$NAME/$VERSION" 2>&1)
case $st in
*installed*WARNING*|*WARNING*installed*|"")
	echo "dkms-install: dkms did not install the built module: $st" >&2; exit 1 ;;
esac
echo "dkms-install: installed $NAME/$VERSION; reload: modprobe -r virtio_balloon && modprobe virtio_balloon"
