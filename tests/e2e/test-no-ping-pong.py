#!/usr/bin/python3
"""With the host daemon running, the guest under pressure and the host not,
at most one re-inflate of that VM in 60 s (no ping-pong).

A real QEMU (TCG) guest with the patched virtio_balloon and deflate-on-oom=on (the patch's
gate) is registered with machined; autoballoond manages it, watching this env's
machine.slice (quiet: nothing here is limited). The operator inflates the balloon to half the
guest's RAM (ResizeMachine), then the guest runs a workload that needs more than is left
(`memhog -f /dev/vda -w 64 300 1 HOLD`: a 300 MiB heap with a 64 MiB file working set, held),
so the patched driver deflates by itself. For 60 s from the start of the workload the test
records every move of the daemon (its stderr lines `balloon target A → B (reason, level
pressure) [... before= after=]`) and every ActualMemory change (PropertiesChanged), and checks:

- the daemon moved the balloon down (re-inflated) at most once;
- the guest workload completed, with no OOM kill in the guest;
- the guest's driver did deflate by itself (its sysfs counter), and the daemon adopted that:
  a move with reason adopt-self-deflate whose new target is at least the ActualMemory the
  daemon had seen, and at the end TargetMemory >= ActualMemory (the daemon follows the guest,
  not the other way round).

Figures (moves by reason, times, actual/target) go to stdout and, as JSON, to
$AB_BUILDDIR/e2e/no-ping-pong.json."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import dbus  # noqa: E402

import abtest  # noqa: E402
import realguest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = realguest.MIB
NAME = "e2e-pingpong"
RAM_MIB = 512
INFLATED_MIB = 256       # ResizeMachine: half the guest, as in guest-oom
HOG_MIB, HOLD_S = 320, 20
WORKLOAD = os.environ.get("AB_PINGPONG_WORKLOAD", "memhog %d 1 %d" % (HOG_MIB, HOLD_S))
WINDOW_S = 60
STATS_S = int(os.environ.get("AB_PINGPONG_STATS_S", "10"))
AUTO = "/sys/bus/virtio/devices/virtio0/auto_deflate"
MOVE_RE = re.compile(r"Machine (\S+): balloon target .* \[machine=\S+ reason=(\S+) level=(\S+) "
                     r"before=(\d+) after=(\d+)\]")


def moves(env, name):
    """[(reason, level, before, after)] of the daemon's balloon moves of machine name, in order."""
    out = []
    for line in env.daemon_log_text().splitlines():
        m = MOVE_RE.search(line)
        if m and m.group(1) == name:
            out.append((m.group(2), m.group(3), int(m.group(4)), int(m.group(5))))
    return out


def guest_auto(g):
    rc, out = g.run("cd %s && for f in *; do echo $f=$(cat $f); done" % AUTO, timeout=30)
    check(rc == 0, "no auto_deflate counters in the guest (not the patched module?): " + out)
    return dict(l.split("=", 1) for l in out.split() if "=" in l)


def test(env):
    outdir = realguest.images()
    # Room for the whole guest and QEMU's own memory: the host is not under pressure here.
    memcg = realguest.HostMemcg(env, "host", 1536 * MIB)
    try:
        g = realguest.start_guest(env, NAME, outdir, mem="%dM" % RAM_MIB, memcg=memcg,
                                  deflate_on_oom="on", balloon="patched")
        auto0 = guest_auto(g)
        check(auto0.get("active") == "1", "auto-deflate not active in the guest: %s" % auto0)

        # Host pressure: this env's machine.slice. Guest stats every STATS_S s: at 2 s the
        # daemon's own relief (GuestPressureStep=) outran this guest's need on this host and
        # the driver never had to deflate by itself; 10 s is the slow end of QEMU's usual
        # stats polling, where the guest's patch is what saves it.
        env.start_daemon(config=env.write_config(extra="\n[Manager]\nStatsIntervalSec=%d\n" % STATS_S))
        path = env.machine_path(NAME)
        env.wait_property(path, "State", "managed", timeout=30)
        env.wait_property(path, "ActualMemory", RAM_MIB * MIB, timeout=30)

        # The operator inflates the guest to half (as a host-pressure episode would).
        t_resize = time.monotonic()
        env.ab_call("ResizeMachine", NAME, dbus.UInt64(INFLATED_MIB * MIB), signature="st")
        env.wait_property(path, "ActualMemory", lambda v: v <= (INFLATED_MIB + 4) * MIB, timeout=60)
        log("balloon at %d MiB after %.1f s" % (env.ab_get(path, "ActualMemory") // MIB,
                                                 time.monotonic() - t_resize))
        rc, out = g.run("grep -E 'MemTotal|MemAvailable' /proc/meminfo", timeout=30)
        log("guest: " + " ".join(out.split()))
        n_moves0 = len(moves(env, NAME))

        # The guest's own workload, more than it has left; the host stays quiet.
        t0 = time.monotonic()
        job, result = g.run_bg(WORKLOAD)
        samples = []
        while time.monotonic() - t0 < WINDOW_S:
            env.pump(1.0)
            env.daemon_check()
            a, t = env.ab_get(path, "ActualMemory"), env.ab_get(path, "TargetMemory")
            samples.append((round(time.monotonic() - t0, 1), a // MIB, t // MIB))
            if len(samples) % 5 == 1:
                log("t=%4.0f s actual %4d MiB target %4d MiB host %s" % (
                    samples[-1][0], a // MIB, t // MIB,
                    env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostPressure")))
        job.join(max(0.0, 240 - (time.monotonic() - abtest.T0)))

        window = moves(env, NAME)[n_moves0:]
        down = [m for m in window if m[3] < m[2]]
        adopt = [m for m in window if m[0] == "adopt-self-deflate"]
        actual_changes = [(t - t0, c["ActualMemory"]) for t, c in env.properties_changed(path, "ActualMemory", since=t0)
                          if "ActualMemory" in c]
        actual_drops = sum(1 for (_, a), (_, b) in zip(actual_changes, actual_changes[1:]) if b < a)
        auto1 = guest_auto(g)
        rc, dmesg = g.run("dmesg | grep -ci 'killed process' || true", timeout=30)
        oom_kills = int(dmesg.strip().splitlines()[-1]) if dmesg.strip() else -1
        target, actual = env.ab_get(path, "TargetMemory"), env.ab_get(path, "ActualMemory")

        figures = {
            "workload": {"rc": result.get("rc"), "completed": "MEMHOG-OK" in result.get("out", ""),
                         "output_tail": result.get("out", "")[-200:], "guest_oom_kills": oom_kills},
            "guest_deflated_kb": int(auto1.get("deflated_kb", 0)) - int(auto0.get("deflated_kb", 0)),
            "guest_deflate_events": int(auto1.get("events", 0)) - int(auto0.get("events", 0)),
            "guest_held": int(auto1.get("held", 0)), "guest_last_reason": auto1.get("last_reason"),
            "daemon_moves": [{"reason": r, "level": l, "before_mib": b // MIB, "after_mib": a // MIB}
                             for r, l, b, a in window],
            "daemon_down_moves": len(down),
            "actual_drops": actual_drops,
            "end": {"target_mib": target // MIB, "actual_mib": actual // MIB},
            "samples": samples,
        }
        print(json.dumps({k: v for k, v in figures.items() if k != "samples"}, indent=1))
        try:
            os.makedirs(os.path.join(abtest.BUILDDIR, "e2e"), exist_ok=True)
            with open(os.path.join(abtest.BUILDDIR, "e2e", "no-ping-pong.json"), "w") as f:
                json.dump(figures, f, indent=1)
        except OSError as e:
            log("could not write the figures: %s" % e)

        check(figures["workload"]["completed"] and result.get("rc") == 0,
              "the guest workload did not complete: %s" % figures["workload"])
        check(oom_kills == 0, "the guest OOM-killed something")
        check(figures["guest_deflated_kb"] > 0, "the guest's driver never deflated by itself")
        check(len(down) <= 1, "the daemon re-inflated the guest %d times in %d s: %s" % (
            len(down), WINDOW_S, down))
        check(adopt, "the daemon never adopted the guest's self-deflate (moves: %s)" % window)
        check(all(a >= b for _, _, b, a in adopt), "an adoption moved the target down: %s" % adopt)
        check(target >= actual - 1 * MIB, "TargetMemory %d MiB below ActualMemory %d MiB at the end" % (
            target // MIB, actual // MIB))
        check(memcg.oom_kills() == 0, "the host memcg OOM-killed something")
    finally:
        memcg.close()


abtest.main(test, "e2e-no-ping-pong")
