#!/bin/sh
# DKMS PRE_BUILD step: prepare-source.sh KERNELVER PACKAGE_VERSION (run in the dkms build
# directory). Puts a patched virtio_balloon.c and a Kbuild file here. The source is Debian's
# linux-source-X.Y of exactly the version of linux-image-KERNELVER: from /usr/src if the
# package is installed, else downloaded with apt-get download (LINUX_SOURCE_DEB= names a
# .deb to use instead). Nothing from upstream is ever stored in the package.
set -eu
KVER=${1:?usage: prepare-source.sh KERNELVER PACKAGE_VERSION}
PKGVER=${2:?usage: prepare-source.sh KERNELVER PACKAGE_VERSION}
HERE=$(pwd)
case $KVER in
6.1.*) SERIES=6.1 ;;
6.12.*) SERIES=6.12 ;;
*) echo "autoballoon: no patch series for kernel $KVER (have 6.1, 6.12)" >&2; exit 1 ;;
esac
[ -d "patches/linux-$SERIES" ] || { echo "autoballoon: patches/linux-$SERIES missing" >&2; exit 1; }
MEMBER=linux-source-$SERIES/drivers/virtio/virtio_balloon.c
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -f "/usr/src/linux-source-$SERIES.tar.xz" ]; then
	tar -xJf "/usr/src/linux-source-$SERIES.tar.xz" -C "$TMP" "$MEMBER"
else
	DEB=${LINUX_SOURCE_DEB:-}
	if [ -z "$DEB" ]; then
		VER=$(dpkg-query -W -f='${Version}' "linux-image-$KVER" 2>/dev/null ||
		      dpkg-query -W -f='${Version}' "linux-image-$KVER-unsigned")
		(cd "$TMP" && apt-get -q -o APT::Sandbox::User=root download "linux-source-$SERIES=$VER" >&2)
		DEB=$(ls "$TMP"/linux-source-*.deb)
	fi
	dpkg-deb --fsys-tarfile "$DEB" | tar -xO "./usr/src/linux-source-$SERIES.tar.xz" |
		tar -xJ -C "$TMP" "$MEMBER"
fi
mkdir -p "$TMP/tree/drivers/virtio"
cp "$TMP/$MEMBER" "$TMP/tree/drivers/virtio/"
for p in "patches/linux-$SERIES"/*.patch; do
	patch -s -p1 -d "$TMP/tree" --no-backup-if-mismatch < "$HERE/$p"
done
cp "$TMP/tree/drivers/virtio/virtio_balloon.c" "$HERE/virtio_balloon.c"
# The in-tree module has no MODULE_VERSION. Without one here too, dkms install finds the
# versions "exactly matching" and refuses to replace the in-tree module (also on every
# AUTOINSTALL for a new kernel). The stamp belongs to the package, not to the series; it
# also shows which driver is loaded: /sys/module/virtio_balloon/version.
echo "MODULE_VERSION(\"$PKGVER-autoballoon\");" >> "$HERE/virtio_balloon.c"
echo 'obj-m += virtio_balloon.o' > "$HERE/Kbuild"
echo "autoballoon: patched virtio_balloon.c for $KVER ($SERIES series)"
