#!/bin/sh
# Installs, with apt-get, every Debian 12 package that building, testing and the demo need.
# Idempotent: asks apt only for what is missing. Nothing else is ever installed by hand.
set -eu

BUILD="meson ninja-build pkg-config gcc clang make libsystemd-dev libjson-c-dev libinih-dev
       libcmocka-dev libsmartcols-dev scdoc libvirt-dev"
RUNTIME="dbus systemd systemd-container polkitd util-linux"
TEST="qemu-system-x86 busybox-static cpio kmod xz-utils zstd socat bc gnuplot-nox
      libclang-rt-14-dev python3 python3-dbus python3-gi bsdutils patch libc6-dev dkms
      libvirt-daemon-system libvirt-clients"

missing=""
for p in $BUILD $RUNTIME $TEST; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
                missing="$missing $p"
done
if [ -n "$missing" ]; then
        echo "install-deps: installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing
fi
