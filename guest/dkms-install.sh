#!/bin/sh
# Installs the auto-deflate virtio_balloon in a Debian 12 guest with DKMS.
# Run as root inside the guest, from a checkout of this repository:
#   guest/dkms-install.sh          # lays out /usr/src, dkms add + build + install
# Needs: dkms, linux-headers-$(uname -r), and apt access to linux-source-X.Y (or the
# package installed). Then: modprobe -r virtio_balloon && modprobe virtio_balloon,
# or reboot. Uninstall: dkms remove autoballoon-virtio-balloon/0.1 --all
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=autoballoon-virtio-balloon
VERSION=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$HERE/dkms.conf")
DEST=/usr/src/$NAME-$VERSION
rm -rf "$DEST"
mkdir -p "$DEST/patches"
cp "$HERE/dkms.conf" "$HERE/dkms/prepare-source.sh" "$DEST/"
cp -r "$HERE/patches/linux-6.1" "$HERE/patches/linux-6.12" "$DEST/patches/"
chmod 755 "$DEST/prepare-source.sh"
dkms add "$NAME/$VERSION" 2>/dev/null || true
dkms build "$NAME/$VERSION"
dkms install "$NAME/$VERSION"
echo "installed; reload with: modprobe -r virtio_balloon && modprobe virtio_balloon"
