#!/bin/bash
# Starts one test guest (QEMU, TCG, 1 vCPU, virtio-balloon-pci) built by guest/build-all.sh.
#
# Usage: guest/run-guest.sh [options] [-- extra qemu args]
#        guest/run-guest.sh --stop RUNDIR
# Options (each also settable by the environment variable in brackets):
#   -o, --outdir DIR        images from build-all.sh [OUTDIR]
#   -m, --mem SIZE          guest RAM, QEMU syntax (512M) [MEM=512M]
#   -r, --rundir DIR        sockets, console.log, qemu.pid [RUNDIR=$OUTDIR/run]
#   --qmp PATH              QMP socket [QMP_SOCKET=$RUNDIR/qmp.sock]
#   --deflate-on-oom on|off the balloon's deflate-on-oom property [DEFLATE_ON_OOM=on]
#   --free-page-reporting on|off  the balloon's free-page-reporting property: memory the
#                           guest frees goes back to the host by itself [FREE_PAGE_REPORTING=off]
#   --balloon patched|stock|none  which virtio_balloon.ko the guest loads [BALLOON=patched]
#   --param KEY=VAL         balloon module parameter; repeatable [BALLOON_PARAMS="k=v,k=v"]
#   --append WORDS          extra kernel command line [APPEND]
#   --prefix CMD            command prefix for QEMU, e.g. a cgroup-entering wrapper [QEMU_PREFIX]
#   --name NAME             QEMU -name [NAME=autoballoon-guest]
#   --disk-size SIZE        scratch disk (null-co, reads zeroes) for pagestream [DISK_SIZE=2G]
#   --no-wait               do not wait for AUTOBALLOON-READY [WAIT_READY=0]
#   --timeout SEC           boot timeout [BOOT_TIMEOUT=120]
#   --foreground            exec QEMU without -daemonize: run "run-guest.sh --foreground &"
#                           and $! is QEMU's own PID, a direct child of the caller (then
#                           wait with "guest-cmd --wait-ready RUNDIR")
# Default mode: QEMU daemonizes, its PID goes to RUNDIR/qemu.pid, the script waits until
# the guest prints AUTOBALLOON-READY and prints "qemu-pid PID".
# The QMP socket appears on QEMU's command line as "-qmp unix:PATH,server=on,wait=off", so
# autoballoond can discover it from /proc/PID/cmdline.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUTDIR=${OUTDIR:-}
MEM=${MEM:-512M}
RUNDIR=${RUNDIR:-}
QMP_SOCKET=${QMP_SOCKET:-}
DEFLATE_ON_OOM=${DEFLATE_ON_OOM:-on}
FREE_PAGE_REPORTING=${FREE_PAGE_REPORTING:-off}
BALLOON=${BALLOON:-patched}
BALLOON_PARAMS=${BALLOON_PARAMS:-}
APPEND=${APPEND:-}
QEMU_PREFIX=${QEMU_PREFIX:-}
NAME=${NAME:-autoballoon-guest}
DISK_SIZE=${DISK_SIZE:-2G}
WAIT_READY=${WAIT_READY:-1}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
FOREGROUND=0

stop_guest() { # stop_guest RUNDIR: QMP quit, then SIGTERM/SIGKILL the PID in qemu.pid
	local rd=$1 pid i
	[ -f "$rd/qemu.pid" ] || return 0
	pid=$(cat "$rd/qemu.pid")
	# Only signal it if it still is the QEMU we started (PIDs get reused).
	if [ -n "$pid" ] && grep -q qemu "/proc/$pid/comm" 2>/dev/null; then
		/usr/bin/python3 "$HERE/qmp-cmd" "$rd/qmp.sock" quit >/dev/null 2>&1 || true
		for i in $(seq 30); do grep -q qemu "/proc/$pid/comm" 2>/dev/null || break; sleep 0.1; done
		grep -q qemu "/proc/$pid/comm" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
		for i in $(seq 30); do grep -q qemu "/proc/$pid/comm" 2>/dev/null || break; sleep 0.1; done
		grep -q qemu "/proc/$pid/comm" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$rd/qemu.pid" "$rd/qmp.sock" "$rd/cmd.sock"
}

while [ $# -gt 0 ]; do
	case $1 in
	-o|--outdir) OUTDIR=$2; shift 2 ;;
	-m|--mem) MEM=$2; shift 2 ;;
	-r|--rundir) RUNDIR=$2; shift 2 ;;
	--qmp) QMP_SOCKET=$2; shift 2 ;;
	--deflate-on-oom) DEFLATE_ON_OOM=$2; shift 2 ;;
	--free-page-reporting) FREE_PAGE_REPORTING=$2; shift 2 ;;
	--balloon) BALLOON=$2; shift 2 ;;
	--param) BALLOON_PARAMS=${BALLOON_PARAMS:+$BALLOON_PARAMS,}$2; shift 2 ;;
	--append) APPEND="$APPEND $2"; shift 2 ;;
	--prefix) QEMU_PREFIX=$2; shift 2 ;;
	--name) NAME=$2; shift 2 ;;
	--disk-size) DISK_SIZE=$2; shift 2 ;;
	--no-wait) WAIT_READY=0; shift ;;
	--timeout) BOOT_TIMEOUT=$2; shift 2 ;;
	--foreground) FOREGROUND=1; WAIT_READY=0; shift ;;
	--stop) stop_guest "$2"; exit 0 ;;
	-h|--help) sed -n '2,28p' "$0"; exit 0 ;;
	--) shift; break ;;
	*) echo "run-guest: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -n "$OUTDIR" ] || { echo "run-guest: --outdir (or OUTDIR=) is required" >&2; exit 2; }
OUTDIR=$(cd "$OUTDIR" && pwd)
for f in vmlinuz initramfs.cpio.gz; do
	[ -f "$OUTDIR/$f" ] || { echo "run-guest: $OUTDIR/$f missing (run guest/build-all.sh)" >&2; exit 1; }
done
case $DEFLATE_ON_OOM in on|off) ;; *) echo "run-guest: --deflate-on-oom on|off" >&2; exit 2 ;; esac
case $FREE_PAGE_REPORTING in on|off) ;; *) echo "run-guest: --free-page-reporting on|off" >&2; exit 2 ;; esac
case $BALLOON in patched|stock|none) ;; *) echo "run-guest: --balloon patched|stock|none" >&2; exit 2 ;; esac
RUNDIR=${RUNDIR:-$OUTDIR/run}
mkdir -p "$RUNDIR"
RUNDIR=$(cd "$RUNDIR" && pwd)
QMP_SOCKET=${QMP_SOCKET:-$RUNDIR/qmp.sock}
for s in "$QMP_SOCKET" "$RUNDIR/cmd.sock"; do
	# sun_path holds 107 bytes; a longer path fails inside QEMU with an obscure error
	[ ${#s} -le 107 ] || { echo "run-guest: socket path too long (${#s} > 107): $s" >&2; exit 2; }
done
if [ -f "$RUNDIR/qemu.pid" ] && grep -q qemu "/proc/$(cat "$RUNDIR/qemu.pid")/comm" 2>/dev/null; then
	echo "run-guest: a guest is already running from $RUNDIR (pid $(cat "$RUNDIR/qemu.pid"))" >&2
	exit 1
fi
rm -f "$QMP_SOCKET" "$RUNDIR/cmd.sock" "$RUNDIR/console.log" "$RUNDIR/qemu.pid"

CMDLINE="console=ttyS0 panic=-1 quiet loglevel=4 autoballoon.balloon=$BALLOON"
[ -z "$BALLOON_PARAMS" ] || CMDLINE="$CMDLINE autoballoon.parm=$BALLOON_PARAMS"
CMDLINE="$CMDLINE $APPEND"
# shellcheck disable=SC2206
PREFIX=($QEMU_PREFIX)
QEMU=(qemu-system-x86_64 -name "$NAME" -accel tcg,tb-size=64 -machine pc -smp 1 -m "$MEM"
	-kernel "$OUTDIR/vmlinuz" -initrd "$OUTDIR/initramfs.cpio.gz" -append "$CMDLINE"
	-display none -vga none -nodefaults -no-reboot
	-device virtio-balloon-pci,id=balloon0,deflate-on-oom=$DEFLATE_ON_OOM,free-page-reporting=$FREE_PAGE_REPORTING
	-blockdev "driver=null-co,node-name=scratch0,size=$(numfmt --from=iec "$DISK_SIZE"),read-zeroes=on"
	-device virtio-blk-pci,drive=scratch0,id=scratch0
	-serial "file:$RUNDIR/console.log"
	-chardev "socket,id=cmd,path=$RUNDIR/cmd.sock,server=on,wait=off" -serial chardev:cmd
	-qmp "unix:$QMP_SOCKET,server=on,wait=off"
	-pidfile "$RUNDIR/qemu.pid" "$@")

if [ $FOREGROUND = 1 ]; then
	exec "${PREFIX[@]}" "${QEMU[@]}"
fi

T0=$(date +%s.%N)
"${PREFIX[@]}" "${QEMU[@]}" -daemonize
PID=$(cat "$RUNDIR/qemu.pid")
echo "qemu-pid $PID"
[ "$WAIT_READY" = 1 ] || exit 0
if ! /usr/bin/python3 "$HERE/guest-cmd" --wait-ready "$RUNDIR" --timeout "$BOOT_TIMEOUT"; then
	echo "run-guest: guest did not become ready; console:" >&2
	tail -20 "$RUNDIR/console.log" >&2 || true
	stop_guest "$RUNDIR"
	exit 1
fi
echo "ready in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
