#!/usr/bin/python3
"""org.autoballoon1 as documented: the running daemon's introspection equals dbus/*.xml;
busctl introspect, get-property, set-property and call work, each change is announced once
with PropertiesChanged; every invalid value is InvalidArgs naming the property and changes
nothing (a call with one bad assignment applies none); unknown machines are NoSuchMachine;
a caller that is not root reads everything and is refused every write and method (polkit is
absent here, so nobody may be granted org.autoballoon1.manage)."""
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB, AB_MACHINE, AB_MANAGER, AB_PATH, PROPS, check, log, typed  # noqa: E402

NOBODY = 65534
MIB = 1 << 20
DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INVALID = "org.freedesktop.DBus.Error.InvalidArgs"
NO_SUCH = "org.autoballoon1.Error.NoSuchMachine"
# what the VM and its guest do by themselves while the test runs
# what moves by itself: the guest's numbers, pressure, what the host holds for each VM, the budget
VOLATILE = {"ActualMemory", "GuestAvailableMemory", "ScopePressure", "HostPressure", "HostResidentMemory",
            "HostSwapMemory", "HostMemoryUsed", "HostMemorySwap", "HostMemoryBalance"}


def busctl(env, *args, uid=None):
    cmd = ["busctl", "--no-pager", *args]
    if uid is not None:
        cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", *cmd]
    r = subprocess.run(cmd, env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=env.address),
                       capture_output=True, text=True, timeout=30)
    log("$ busctl %s -> %d %s%s" % (" ".join(args), r.returncode, r.stdout.strip()[:200], r.stderr.strip()[:300]))
    return r


def busctl_ok(env, *args):
    r = busctl(env, *args)
    check(r.returncode == 0, "busctl %s failed: %s" % (" ".join(args), r.stderr))
    return r.stdout


# ---- the documented interfaces ------------------------------------------------------------

def members(xml_text, iface):
    """{(kind, name): description} of one interface, for comparing two introspections."""
    root = ET.fromstring(xml_text)
    out = {}
    for i in root.iter("interface"):
        if i.get("name") != iface:
            continue
        for el in i:
            if el.tag == "property":
                ann = {a.get("name"): a.get("value") for a in el.findall("annotation")}
                out[("property", el.get("name"))] = (el.get("type"), el.get("access"),
                    ann.get("org.freedesktop.DBus.Property.EmitsChangedSignal", "true"))
            elif el.tag in ("method", "signal"):
                out[(el.tag, el.get("name"))] = tuple(
                    (a.get("type"), a.get("name"), a.get("direction", "in" if el.tag == "method" else None))
                    for a in el.findall("arg"))
        return out
    raise abtest.Fail("no interface %s in the introspection data" % iface)


def check_introspection(env, path, iface, xml_file):
    doc = open(os.path.join(abtest.SRCDIR, "dbus", xml_file)).read()
    live = env.call(AB, path, "org.freedesktop.DBus.Introspectable", "Introspect")
    want, got = members(doc, iface), members(live, iface)
    diff = ["%s %s: documented %s, daemon %s" % (k[0], k[1], want.get(k), got.get(k))
            for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    check(not diff, "dbus/%s differs from the running daemon:\n  %s" % (xml_file, "\n  ".join(diff)))
    log("%s: %d members as documented" % (iface, len(got)))


# ---- helpers --------------------------------------------------------------------------------

def expect_error(env, name, fn, *args, contains=()):
    try:
        fn(*args)
    except dbus.DBusException as e:
        log("  -> %s: %s" % (e.get_dbus_name(), e.get_dbus_message()))
        check(e.get_dbus_name() == name, "expected %s, got %s: %s" % (name, e.get_dbus_name(), e.get_dbus_message()))
        for c in contains:
            check(c in e.get_dbus_message(), "error message %r does not mention %r" % (e.get_dbus_message(), c))
        return e
    raise abtest.Fail("call %s%s succeeded, expected %s" % (getattr(fn, "__name__", fn), args, name))


def snapshot(env, path, iface):
    return {k: v for k, v in env.get_all(AB, path, iface).items() if k not in VOLATILE}


def settled(props):
    """Properties without the kernel's running averages, which move by themselves."""
    return {k: v for k, v in props.items() if "Avg" not in k}


def changed_once(env, path, prop, value, since):
    """Exactly one PropertiesChanged carrying prop, with value."""
    env.wait_for(lambda: env.properties_changed(path, prop, since=since), 2, "PropertiesChanged(%s)" % prop)
    env.pump(0.3)
    got = env.properties_changed(path, prop, since=since)
    check(len(got) == 1, "%d PropertiesChanged for %s, expected one: %s" % (len(got), prop, got))
    if value is not None:
        check(got[0][1].get(prop) == value, "PropertiesChanged says %s=%r, expected %r" % (prop, got[0][1].get(prop), value))


def settings_changed(env, path, since):
    """PropertiesChanged on path since `since`, other than what moves by itself."""
    return [c for t, c in env.properties_changed(path, since=since) if set(c) - VOLATILE]


def balloons(vm):
    return [l for l in vm.records().splitlines() if '"balloon"' in l]


# ---- the test ---------------------------------------------------------------------------------

def mark(env):
    """Now, after the signals of earlier calls are in: they get their time when dispatched."""
    env.pump(0.2)
    return time.monotonic()


def test(env):
    config = env.write_config(extra="\n[Manager]\nRuntimeConfigDirectory=%s\n" % env.file("conf.run.d"))
    env.start_daemon(config=config)
    vm = env.start_vm("vm1", memory="512M")
    env.start_vm("vm2", memory="1G")
    p1, p2 = env.machine_path("vm1"), env.machine_path("vm2")
    env.wait_property(p1, "State", "managed", timeout=5)
    env.wait_property(p2, "State", "managed", timeout=5)

    # 1. the documented API is the API
    check_introspection(env, AB_PATH, AB_MANAGER, "org.autoballoon1.Manager.xml")
    check_introspection(env, p1, AB_MACHINE, "org.autoballoon1.Machine.xml")

    # the triggers as armed (the config's, here already multiples of 2 s)
    triggers = env.ab_get(AB_PATH, "PressureTriggers", AB_MANAGER)
    check(triggers == [("low", "some", 100000, 2000000), ("medium", "some", 200000, 2000000),
                       ("critical", "full", 200000, 2000000)], "PressureTriggers: %r" % (triggers,))

    # 2. busctl introspect / get-property / set-property / call
    out = busctl_ok(env, "introspect", AB, p1, AB_MACHINE)
    check(any(l.startswith(".Weight") and "writable" in l for l in out.splitlines()),
          "busctl introspect shows no writable Weight:\n" + out)
    check(busctl_ok(env, "get-property", AB, p1, AB_MACHINE, "Weight").strip() == "u 100", "Weight is not 100")
    check(busctl_ok(env, "get-property", AB, AB_PATH, AB_MANAGER, "Version").strip().startswith('s "'),
          "Version unreadable")

    t = mark(env)
    busctl_ok(env, "set-property", AB, p1, AB_MACHINE, "Weight", "u", "300")
    changed_once(env, p1, "Weight", 300, t)
    check(env.ab_get(p1, "Weight") == 300, "set-property Weight did not stick")
    check(not os.path.exists(env.file("machines.d/vm1.conf")), "set-property wrote a persistent drop-in")
    check("Weight=300" in open(env.file("machines.run.d/vm1.conf")).read(), "no runtime drop-in for set-property")

    t = mark(env)
    busctl_ok(env, "call", AB, AB_PATH, AB_MANAGER, "SetMachineProperties", "sba(sv)", "vm1", "false", "3",
              "Weight", "u", "400", "MaximumMemory", "t", str(384 * MIB), "Enabled", "b", "true")
    changed_once(env, p1, "Weight", 400, t)
    changed_once(env, p1, "MaximumMemory", 384 * MIB, t)
    check(not env.properties_changed(p1, "Enabled", since=t), "Enabled announced though unchanged")
    env.wait_for(lambda: any("EffectiveMaximumMemory" in args[2] for tt, p, i, m, args in env.signals
                             if p == p1 and m == "PropertiesChanged" and tt >= t), 2, "EffectiveMaximumMemory invalidated")
    check(env.ab_get(p1, "EffectiveMaximumMemory") == 384 * MIB, "EffectiveMaximumMemory not 384M")
    text = open(env.file("machines.d/vm1.conf")).read()
    check("Weight=400" in text and "MaximumMemory=%d" % (384 * MIB) in text, "persistent drop-in:\n" + text)
    check("Weight" not in open(env.file("machines.run.d/vm1.conf")).read(),
          "the persistent Weight= left the runtime one in place")
    # the policy returns vm1 to its new maximum: a bounds move
    env.wait_property(p1, "TargetMemory", 384 * MIB, timeout=3)

    # defaults: the Manager announces, and vm2 (no drop-in of its own) inherits; vm1 keeps 400
    t = mark(env)
    busctl_ok(env, "call", AB, AB_PATH, AB_MANAGER, "SetDefaultProperties", "ba(sv)", "true", "1",
              "Weight", "u", "250")
    changed_once(env, AB_PATH, "Weight", 250, t)
    changed_once(env, p2, "Weight", 250, t)
    check(env.ab_get(p1, "Weight") == 400, "vm1's own Weight was overridden by the default")
    check("Weight=250" in open(env.file("conf.run.d/50-set-property.conf")).read(), "no runtime defaults drop-in")
    busctl_ok(env, "set-property", AB, AB_PATH, AB_MANAGER, "RecoveryDelaySec", "t", "45000000")
    check(env.ab_get(p2, "RecoveryDelaySec") == 45000000, "default RecoveryDelaySec not inherited")

    # ResizeMachine: within the bounds, a balloon command, LastMove says manual
    t = mark(env)
    busctl_ok(env, "call", AB, AB_PATH, AB_MANAGER, "ResizeMachine", "st", "vm1", str(256 * MIB))
    changed_once(env, p1, "TargetMemory", 256 * MIB, t)
    env.wait_for(lambda: any(str(256 * MIB) in b for b in balloons(vm)), 2, "balloon 256M at the fake VM")
    env.wait_property(p1, "ActualMemory", 256 * MIB, timeout=3)
    last = env.ab_get(p1, "LastMove")
    check(last[1] == "manual" and last[3] == 384 * MIB and last[4] == 256 * MIB, "LastMove %r" % (last,))
    # one log entry per move, with its fields (journal fields when stderr is the journal)
    want = "[machine=vm1 reason=manual level=none before=%d after=%d]" % (384 * MIB, 256 * MIB)
    check(sum(want in l for l in env.daemon_log_text().splitlines()) == 1, "no single log entry %s" % want)
    # the policy respects it: no recovery step within RecoveryDelaySec (30 s by default)
    env.pump(2.5)
    check(env.ab_get(p1, "TargetMemory") == 256 * MIB, "the policy undid the manual resize at once")

    out = busctl_ok(env, "call", AB, AB_PATH, AB_MANAGER, "ListMachines")
    check(out.startswith("a(sso) 2 ") and '"vm1" "managed"' in out, "ListMachines: " + out)
    out = busctl_ok(env, "call", AB, AB_PATH, AB_MANAGER, "GetMachine", "s", "vm2")
    check(out.strip() == 'o "%s"' % p2, "GetMachine: " + out)

    # MachineAdded / MachineRemoved
    t = mark(env)
    env.start_vm("vm3", memory="256M")
    env.wait_signal("MachineAdded", lambda s: s[4] == ["vm3", env.machine_path("vm3")], timeout=2, since=t)
    env.terminate_machine("vm3")
    env.wait_signal("MachineRemoved", lambda s: s[4] == ["vm3", env.machine_path("vm3")], timeout=2, since=t)
    # the same, for ObjectManager clients: InterfacesAdded carries the properties
    s = env.wait_signal("InterfacesAdded", lambda s: s[1] == AB_PATH and s[4][0] == env.machine_path("vm3"),
                        timeout=2, since=t)
    props = s[4][1].get(AB_MACHINE, {})
    check(props.get("Name") == "vm3" and "State" in props and "TargetMemory" in props,
          "InterfacesAdded carries the Machine properties: %r" % sorted(props)[:8])
    env.wait_signal("InterfacesRemoved", lambda s: s[4][0] == env.machine_path("vm3") and AB_MACHINE in s[4][1],
                    timeout=2, since=t)

    # 3. invalid values: InvalidArgs naming the property (and range), nothing changed
    before1, before_m = snapshot(env, p1, AB_MACHINE), snapshot(env, AB_PATH, AB_MANAGER)
    files = {f: open(env.file(f)).read() for f in ("machines.d/vm1.conf", "machines.run.d/vm1.conf")}
    t = mark(env)
    set_props = lambda name, runtime, props: env.ab_call("SetMachineProperties", name, runtime,
                                                         dbus.Array(props, signature="(sv)"))
    cases = [
        ("wrong type", [("Weight", dbus.String("a lot", variant_level=1))], ("Weight", "1 to 10000")),
        ("unknown key", [("Wait", dbus.UInt32(5, variant_level=1))], ("Wait",)),
        ("out of range", [("Weight", dbus.UInt32(10001, variant_level=1))], ("Weight", "1 to 10000")),
        ("step above 1000 permille", [("LowStep", dbus.UInt32(1001, variant_level=1))], ("LowStep", "0 to 1000")),
        ("bad preset", [("Preset", dbus.String("fast", variant_level=1))], ("Preset", "default")),
        ("Minimum above Maximum", [("MinimumMemory", dbus.UInt64(400 * MIB, variant_level=1))],
         ("MinimumMemory", "MaximumMemory")),
        ("Maximum above RAM", [("MaximumMemory", dbus.UInt64(1 << 30, variant_level=1))],
         ("MaximumMemory", str(512 * MIB))),
        ("all or nothing", [("Weight", dbus.UInt32(999, variant_level=1)),
                            ("RecoveryIntervalSec", dbus.UInt64(0, variant_level=1))], ("RecoveryIntervalSec",)),
    ]
    for what, props, words in cases:
        log("invalid: %s" % what)
        for runtime in (False, True):
            expect_error(env, INVALID, set_props, "vm1", runtime, props, contains=words)
    log("invalid: set-property")
    expect_error(env, INVALID, env.call, AB, p1, PROPS, "Set", AB_MACHINE, "Weight", dbus.UInt32(0, variant_level=1),
                 contains=("Weight", "1 to 10000"))
    expect_error(env, INVALID, env.call, AB, p1, PROPS, "Set", AB_MACHINE, "Weight", dbus.UInt64(5, variant_level=1))
    expect_error(env, INVALID, env.call, AB, AB_PATH, PROPS, "Set", AB_MANAGER, "MinimumMemoryPercent",
                 dbus.UInt32(101, variant_level=1), contains=("MinimumMemoryPercent",))
    expect_error(env, INVALID, env.ab_call, "SetDefaultProperties", False,
                 dbus.Array([("MinimumMemory", dbus.UInt64(2 << 30, variant_level=1)),
                             ("MaximumMemory", dbus.UInt64(1 << 30, variant_level=1))], signature="(sv)"),
                 contains=("MinimumMemory",))
    log("invalid: ResizeMachine out of the bounds")
    expect_error(env, INVALID, env.ab_call, "ResizeMachine", "vm1", dbus.UInt64(400 * MIB),
                 contains=("EffectiveMaximumMemory",))
    expect_error(env, INVALID, env.ab_call, "ResizeMachine", "vm1", dbus.UInt64(MIB),
                 contains=("EffectiveMinimumMemory",))
    log("invalid: HostMemoryReserve")
    for bad in ("51%", "lots", "-1"):
        expect_error(env, INVALID, env.call, AB, AB_PATH, PROPS, "Set", AB_MANAGER, "HostMemoryReserve",
                     dbus.String(bad, variant_level=1), contains=("HostMemoryReserve", "50%"))
    log("unknown machines")
    expect_error(env, NO_SUCH, set_props, "nope", False, [("Weight", dbus.UInt32(5, variant_level=1))])
    expect_error(env, NO_SUCH, env.ab_call, "ResizeMachine", "nope", dbus.UInt64(256 * MIB))
    expect_error(env, NO_SUCH, env.ab_call, "GetMachine", "nope")
    env.pump(0.3)
    check(snapshot(env, p1, AB_MACHINE) == before1, "a refused call changed vm1")
    check(settled(snapshot(env, AB_PATH, AB_MANAGER)) == settled(before_m), "a refused call changed the defaults")
    check(not settings_changed(env, p1, t) and not settings_changed(env, AB_PATH, t),
          "a refused call emitted PropertiesChanged: %s" % (settings_changed(env, p1, t) + settings_changed(env, AB_PATH, t)))
    for f, text in files.items():
        check(open(env.file(f)).read() == text, "a refused call rewrote %s" % f)
    check(not os.path.exists(env.file("machines.d/nope.conf")), "a drop-in was written for an unknown machine")

    # 4. not root: reads open, every write and method refused, nothing changed
    reads = [(AB_PATH, PROPS, "GetAll", "s", [AB_MANAGER]),
             (p1, PROPS, "GetAll", "s", [AB_MACHINE]),
             (p1, PROPS, "Get", "ss", [AB_MACHINE, "LastMove"]),
             (AB_PATH, AB_MANAGER, "ListMachines", "", []),
             (AB_PATH, AB_MANAGER, "GetMachine", "s", ["vm1"]),
             (AB_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", []),
             (p1, "org.freedesktop.DBus.Introspectable", "Introspect", "", [])]
    for call in reads:
        r = env.call_as(NOBODY, AB, *call)
        check(r[0] == "ok", "%s as nobody: %s" % (call[2], r))
    r = busctl(env, "get-property", AB, p1, AB_MACHINE, "ActualMemory", uid=NOBODY)
    check(r.returncode == 0, "busctl get-property as nobody failed")
    t = mark(env)
    writes = [(p1, PROPS, "Set", "ssv", [AB_MACHINE, "Weight", typed("u", 7)]),
              (p1, PROPS, "Set", "ssv", [AB_MACHINE, "Enabled", typed("b", False)]),
              (AB_PATH, PROPS, "Set", "ssv", [AB_MANAGER, "Weight", typed("u", 7)]),
              (AB_PATH, AB_MANAGER, "SetMachineProperties", "sba(sv)", ["vm1", True, [["Weight", typed("u", 7)]]]),
              (AB_PATH, AB_MANAGER, "SetMachineProperties", "sba(sv)", ["vm1", False, [["Weight", typed("u", 7)]]]),
              (AB_PATH, AB_MANAGER, "SetDefaultProperties", "ba(sv)", [True, [["Weight", typed("u", 7)]]]),
              (AB_PATH, AB_MANAGER, "ResizeMachine", "st", ["vm1", 300 * MIB]),
              (AB_PATH, PROPS, "Set", "ssv", [AB_MANAGER, "HostMemoryReserve", typed("s", "50%")]),
              (AB_PATH, AB_MANAGER, "Reload", "", [])]
    for call in writes:
        r = env.call_as(NOBODY, AB, *call)
        log("%s %s as nobody: %s" % (call[2], call[4][:2], r[0]))
        check(r[0] == DENIED, "%s as nobody: %s, expected AccessDenied" % (call[2], r))
    r = busctl(env, "set-property", AB, p1, AB_MACHINE, "Weight", "u", "7", uid=NOBODY)
    check(r.returncode != 0 and "Access denied" in r.stderr, "busctl set-property as nobody: %s" % r.stderr)
    env.pump(0.3)
    check(snapshot(env, p1, AB_MACHINE) == before1, "a denied call changed vm1")
    check(not settings_changed(env, p1, t), "a denied call emitted PropertiesChanged: %s" % settings_changed(env, p1, t))
    check(not any(str(300 * MIB) in b for b in balloons(vm)), "a denied ResizeMachine reached the VM")

    # 5. HostMemoryReserve: root sets it at runtime; it reads back, is announced once, and lands
    # in the runtime drop-in of the main config
    t = mark(env)
    env.call(AB, AB_PATH, PROPS, "Set", AB_MANAGER, "HostMemoryReserve", dbus.String("2.5%", variant_level=1))
    check(env.get(AB, AB_PATH, AB_MANAGER, "HostMemoryReserve") == "2.5%", "HostMemoryReserve did not read back")
    changed_once(env, AB_PATH, "HostMemoryReserve", "2.5%", t)
    dropin = open(env.file("conf.run.d/50-set-property.conf")).read()
    check("[Manager]" in dropin and "HostMemoryReserve=2.5%" in dropin, "runtime drop-in: %r" % dropin)

    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "api")
