#!/usr/bin/python3
"""Authorization through a real polkitd on the private bus: a user a polkit rule grants
org.autoballoon1.manage may write (methods and set-property, both asked asynchronously);
a user a rule refuses gets AccessDenied; a user who would have to authenticate
gets InteractiveAuthorizationRequired (there is no agent); nothing changes for either;
autoballoonctl at a terminal starts a polkit agent and does not hang when it cannot register.
polkitd runs in the namespace with our action and a test rule bind-mounted over its
directories (the host's are not touched); the callers run in the namespace too, so that
polkit can see their processes."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB, AB_MACHINE, AB_MANAGER, AB_PATH, check, log  # noqa: E402

NOBODY, DAEMON, BIN = 65534, 1, 2   # granted, refused, would need to authenticate
RULES = """polkit.addRule(function(action, subject) {
        if (action.id != "org.autoballoon1.manage")
                return polkit.Result.NOT_HANDLED;
        if (subject.user == "nobody")
                return polkit.Result.YES;
        if (subject.user == "daemon")
                return polkit.Result.NO;
        return polkit.Result.NOT_HANDLED;
});
"""


def busctl_as(env, uid, *args):
    return env.busctl_as(uid, *args)


def test(env):
    env.start_polkitd(RULES)
    env.start_vm("vm1", memory="512M")
    env.start_daemon()
    path = env.machine_path("vm1")
    env.wait_property(path, "State", "managed", timeout=5)

    set_weight = lambda uid, w, runtime="true": busctl_as(
        env, uid, "call", AB, AB_PATH, AB_MANAGER, "SetMachineProperties", "sba(sv)", "vm1", runtime, "1",
        "Weight", "u", str(w))
    set_prop = lambda uid, w: busctl_as(env, uid, "set-property", AB, path, AB_MACHINE, "Weight", "u", str(w))

    # granted by the rule: methods and property writes
    check(set_weight(NOBODY, 321).returncode == 0, "SetMachineProperties as a granted user failed")
    check(env.ab_get(path, "Weight") == 321, "Weight not set by a granted user")
    check(set_prop(NOBODY, 322).returncode == 0, "set-property as a granted user failed")
    check(env.ab_get(path, "Weight") == 322, "set-property by a granted user did not stick")
    r = busctl_as(env, NOBODY, "call", AB, AB_PATH, AB_MANAGER, "ResizeMachine", "st", "vm1", str(300 << 20))
    check(r.returncode == 0, "ResizeMachine as a granted user failed")
    env.wait_property(path, "TargetMemory", 300 << 20, timeout=2)
    check(busctl_as(env, NOBODY, "call", AB, AB_PATH, AB_MANAGER, "Reload").returncode == 0, "Reload as granted")

    # refused by the rule: AccessDenied; not handled (auth_admin, no agent): interaction needed
    since = time.monotonic()
    # (busctl shows AccessDenied as "Access denied" only; InteractiveAuthorizationRequired with
    # the daemon's message, which names the action)
    for uid, want in ((DAEMON, "Access denied"), (BIN, "org.autoballoon1.manage")):
        for r in (set_weight(uid, 7), set_weight(uid, 7, "false"), set_prop(uid, 7),
                  busctl_as(env, uid, "--allow-interactive-authorization=no", "call", AB, AB_PATH, AB_MANAGER, "Reload")):
            check(r.returncode != 0 and want in r.stderr, "uid %d: expected '%s', got: %s" % (uid, want, r.stderr))
    check(env.ab_get(path, "Weight") == 322, "a refused caller changed Weight")
    check(not os.path.exists(env.file("machines.d/vm1.conf")), "a refused caller wrote a drop-in")
    env.pump(0.2)
    check(not env.properties_changed(path, "Weight", since=since), "a refused call was announced")

    # autoballoonctl at a terminal, not root: pkttyagent is started (it cannot register here,
    # without logind), the call is refused, and nothing hangs
    ctl = os.path.join(abtest.BUILDDIR, "controller/autoballoonctl")
    r = subprocess.run(["nsenter", "-t", str(env.pid1), "-p", "-m", "-u", "--", "script", "-qec",
                        "setpriv --reuid=%d --regid=%d --clear-groups %s set-property vm1 Weight=5" % (BIN, BIN, ctl),
                        "/dev/null"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    log("autoballoonctl on a tty as uid %d: %d %s" % (BIN, r.returncode, r.stdout.strip()))
    check(r.returncode == 1 and "org.autoballoon1.manage" in r.stdout, "autoballoonctl on a tty: %r" % r.stdout)
    r = subprocess.run(["nsenter", "-t", str(env.pid1), "-p", "-m", "-u", "--", "script", "-qec",
                        "setpriv --reuid=%d --regid=%d --clear-groups %s set-property vm1 Weight=6" % (NOBODY, NOBODY, ctl),
                        "/dev/null"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    check(r.returncode == 0 and env.ab_get(path, "Weight") == 6, "autoballoonctl as a granted user: %r" % r.stdout)
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "api-polkit")
