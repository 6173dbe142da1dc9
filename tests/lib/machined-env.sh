#!/bin/sh
# Integration test environment: a real systemd as PID 1 of a private pid+mount+uts namespace,
# running only dbus-daemon (with the project's bus policy) and the real systemd-machined.
#
#   machined-env.sh start          start (cleaning up a crashed earlier instance), print the env
#   machined-env.sh exec CMD...    run CMD inside the namespace (leader PIDs, the daemon under test)
#   machined-env.sh nspid HOSTPID  the in-namespace PID of a host PID
#   machined-env.sh env|status     print the env (status: also the namespace's units)
#   machined-env.sh stop           kill everything it made; remove cgroups, sockets, files
#
# Environment:
#   AB_ENV_NAME     instance name: cgroup2 subtree /NAME, v1 memcg child NAME, state dir
#                   (default autoballoon-test; use one per parallel run)
#   AB_ENV_DIR      parent of the state dirs (default /tmp/autoballoon-env)
#   AB_ENV_POLICY   bus policy files loaded by the private bus
#                   (default: the repository's dbus/org.autoballoon1.conf)
#   AB_ENV_LOG_LEVEL  systemd's log level (default info); AB_ENV_KEEP=1 keeps the state dir
#
# No cgroup namespace is used, so every ControlGroup path is absolute in the host's cgroup2
# tree: <cgroup2 mount> + ControlGroup is right both inside and outside the namespace.
set -eu

NAME=${AB_ENV_NAME:-autoballoon-test}
case $NAME in *[!A-Za-z0-9_-]*|'') echo "machined-env: bad AB_ENV_NAME '$NAME'" >&2; exit 2;; esac
DIR=${AB_ENV_DIR:-/tmp/autoballoon-env}
S=$DIR/$NAME
HERE=$(cd "$(dirname "$0")" && pwd)
POLICY=${AB_ENV_POLICY:-$HERE/../../dbus/org.autoballoon1.conf}
# the cgroup2 mount (/sys/fs/cgroup/unified on a hybrid host): never hard-coded
CG2=$(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit }; break }}' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "machined-env: no cgroup2 mount" >&2; exit 1; }
CG=$CG2/$NAME
BUS=unix:path=$S/bus/system_bus_socket
# our own v1 memory cgroup: stall helpers make limited children below $S/memcg's dir, never
# touching its own limits
MEMV1=$(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup" && $NF ~ /(^|,)memory(,|$)/) { print $5; exit }; break }}' /proc/self/mountinfo)
OWNMEM=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)

# PID of the namespace's systemd (host view), only if it really is ours: its cgroup must be
# our init.scope (guards against a recycled PID after a crash).
pid1() {
        U=$(cat "$S/unshare.pid" 2>/dev/null) || return 1
        P=$(awk '{print $1}' "/proc/$U/task/$U/children" 2>/dev/null) || return 1
        [ -n "$P" ] && grep -qx "0::/$NAME/init.scope" "/proc/$P/cgroup" 2>/dev/null || return 1
        echo "$P"
}

print_env() {
        echo "DBUS_SYSTEM_BUS_ADDRESS=$BUS"
        echo "AB_ENV_NAME=$NAME"
        echo "AB_ENV_STATE=$S"
        echo "AB_ENV_PID1=$(pid1 || true)"
        echo "AB_ENV_CGROUP2=$CG2"
        echo "AB_ENV_CGROUP_ROOT=/$NAME"
        echo "AB_ENV_MEMCG=$(cat "$S/memcg.path" 2>/dev/null || true)"
        # the same memcg as the namespace sees it (its v1 hierarchy is bound at /run/ab-env-memcg)
        echo "AB_ENV_MEMCG_NS=$([ -n "$MEMV1" ] && echo "/run/ab-env-memcg$OWNMEM/$NAME")"
}

write_units() {
        mkdir -p "$S/units" "$S/system.d"
        cat > "$S/units/ab-env.target" <<EOF
[Unit]
Description=private dbus + machined only
Requires=dbus.socket dbus.service systemd-machined.service
After=dbus.socket dbus.service systemd-machined.service
EOF
        cat > "$S/units/dbus.socket" <<EOF
[Unit]
DefaultDependencies=no
[Socket]
ListenStream=/run/dbus/system_bus_socket
EOF
        cat > "$S/units/dbus.service" <<EOF
[Unit]
DefaultDependencies=no
Requires=dbus.socket
After=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --config-file=$S/system.conf --address=systemd: --nofork --nopidfile --systemd-activation
EOF
        cat > "$S/units/systemd-machined.service" <<EOF
[Unit]
DefaultDependencies=no
Requires=dbus.socket
After=dbus.socket dbus.service machine.slice
Wants=machine.slice
[Service]
Type=dbus
BusName=org.freedesktop.machine1
ExecStart=/lib/systemd/systemd-machined
EOF
        for s in machine system; do
                printf '[Unit]\nDefaultDependencies=no\n' > "$S/units/$s.slice"
        done
        # the system bus refuses to let anyone own a name no policy allows: load ours
        cat > "$S/system.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/system.conf</include>
  <includedir>$S/system.d</includedir>
</busconfig>
EOF
        for f in $POLICY; do cp "$f" "$S/system.d/"; done
}

# PID 1 of the new namespaces: private mounts (-n: libmount writes nothing to the host's
# /run), then systemd in pure unified mode, so it never touches a v1 hierarchy.
write_inner() {
        cat > "$S/inner.sh" <<EOF
#!/bin/sh
set -e
mount -n -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/dbus && mount -n --bind $S/bus /run/dbus
# the v1 memory hierarchy stays visible to the daemon under test (HostMemorySource= a v1
# memcg, as on a hybrid host) at the path AB_ENV_MEMCG_NS names, before the unified remount
if [ -n "$MEMV1" ]; then mkdir -p /run/ab-env-memcg && mount -n --bind $MEMV1 /run/ab-env-memcg; fi
umount -R /sys/fs/cgroup 2>/dev/null || true
mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
# PID 1 raises fs.nr_open and friends: let that fail instead of changing the host
mount -n --bind /proc/sys /proc/sys && mount -n -o remount,bind,ro /proc/sys
mount -n --bind "\$(tty)" /dev/console
# a caller that ran an earlier instance may still export its bus address: systemd would
# connect to that (gone) socket instead of its own /run/dbus one and never start a scope
unset DBUS_SYSTEM_BUS_ADDRESS DBUS_SESSION_BUS_ADDRESS
export container=$NAME SYSTEMD_UNIT_PATH=$S/units
exec /lib/systemd/systemd --system --unit=ab-env.target --log-target=console \\
     --log-level=${AB_ENV_LOG_LEVEL:-info} --show-status=no \\
     --default-standard-output=inherit --default-standard-error=inherit
EOF
        chmod +x "$S/inner.sh"
}

# Kill every process of a cgroup (v1 or v2 dir, recursively) by PID, then remove the dirs.
# Everything in these subtrees was started by this instance.
kill_and_rmdir() {
        [ -d "$1" ] || return 0
        for i in 1 2 3 4 5 6 7 8 9 10; do
                pids=$(find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
                [ -z "$pids" ] && break
                for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
                sleep 0.1
        done
        find "$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ ! -d "$1" ] || { echo "machined-env: could not remove $1" >&2; return 1; }
}

stop() {
        rc=0
        P=$(pid1 || true)
        # SIGKILL of the namespace's init makes the kernel kill every process of the pid
        # namespace at once (a graceful Exit() SIGSTOPs nsenter parents of exec'ed commands).
        [ -n "$P" ] && kill -KILL "$P" 2>/dev/null || true
        # what is left in our cgroup2 subtree (the unshare) and our v1 memcg children
        kill_and_rmdir "$CG" || rc=1
        M=$(cat "$S/memcg.path" 2>/dev/null || true)
        case $M in */"$NAME") kill_and_rmdir "$M" || rc=1;; esac
        # zram swap devices a stall helper of this instance made (marker files zramN)
        for z in "$S"/zram*; do
                [ -e "$z" ] || continue
                id=${z##*/zram}
                swapoff "/dev/zram$id" 2>/dev/null || true
                echo "$id" > /sys/class/zram-control/hot_remove || rc=1
                rm -f "$z"
        done
        # `script` exits when its child does; only kill it if it is still ours
        SC=$(cat "$S/script.pid" 2>/dev/null || true)
        if [ -n "$SC" ] && grep -qF "$S/console.log" "/proc/$SC/cmdline" 2>/dev/null; then
                for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$SC" 2>/dev/null || break; sleep 0.05; done
                kill -KILL "$SC" 2>/dev/null || true
        fi
        if [ "${AB_ENV_KEEP:-0}" = 1 ]; then
                rm -f "$S/bus/system_bus_socket" "$S/unshare.pid" "$S/script.pid"
        else
                rm -rf "$S"
        fi
        rmdir "$DIR" 2>/dev/null || true
        return $rc
}

case "${1:-}" in
start)
        [ "$(id -u)" = 0 ] || { echo "machined-env: needs root" >&2; exit 1; }
        T0=$(date +%s%N)
        if [ -e "$S" ] || [ -d "$CG" ]; then
                echo "machined-env: cleaning up an earlier instance of '$NAME'" >&2
                stop || { echo "machined-env: cleanup of the earlier instance failed" >&2; exit 1; }
        fi
        mkdir -p "$S/bus"
        write_units
        write_inner
        M=$MEMV1$OWNMEM/$NAME
        [ -n "$MEMV1" ] && mkdir -p "$M" && echo "$M" > "$S/memcg.path"
        # systemd takes its cgroup root from its own cgroup minus "/init.scope": /$NAME
        mkdir -p "$CG/init.scope"
        setsid script -qfe -c "sh -c 'echo \$\$ > $CG/init.scope/cgroup.procs; echo \$\$ > $S/unshare.pid; \
exec unshare --pid --fork --mount --uts --mount-proc --propagation private $S/inner.sh'" \
                "$S/console.log" </dev/null >/dev/null 2>&1 &
        echo $! > "$S/script.pid"
        up=
        for i in $(seq 200); do   # machined on the bus within 20 s
                if DBUS_SYSTEM_BUS_ADDRESS=$BUS busctl call org.freedesktop.DBus /org/freedesktop/DBus \
                        org.freedesktop.DBus NameHasOwner s org.freedesktop.machine1 2>/dev/null | grep -q true; then
                        up=1; break
                fi
                sleep 0.05
        done
        if [ -z "$up" ]; then
                echo "machined-env: machined did not come up; $S/console.log:" >&2
                tail -n 30 "$S/console.log" >&2 || true
                AB_ENV_KEEP=1 stop || true
                exit 1
        fi
        print_env | tee "$S/env"
        echo "AB_ENV_START_SECONDS=$(echo "$T0 $(date +%s%N)" | awk '{printf "%.3f", ($2 - $1) / 1e9}')"
        ;;
exec)
        shift
        P=$(pid1) || { echo "machined-env: '$NAME' is not running" >&2; exit 1; }
        exec nsenter -t "$P" -p -m -u -- "$@"
        ;;
nspid)
        awk '/^NSpid:/ { print $NF }' "/proc/$2/status"
        ;;
env)
        pid1 >/dev/null || { echo "machined-env: '$NAME' is not running" >&2; exit 1; }
        print_env
        ;;
status)
        P=$(pid1) || { echo "machined-env: '$NAME' is not running" >&2; exit 3; }
        print_env
        nsenter -t "$P" -p -m -u -- systemctl list-units --no-pager --all
        ;;
stop)
        stop
        ;;
*)
        echo "usage: $0 start|exec CMD...|nspid HOSTPID|env|status|stop" >&2
        exit 2
        ;;
esac
