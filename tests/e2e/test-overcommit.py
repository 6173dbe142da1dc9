#!/usr/bin/python3
"""The overcommit benchmark's short form (the "quick" part of
tests/bench/overcommit-timeline.json): three real stock guests in a host memcg of two thirds
of their RAM with zram swap, run once with nothing driving the balloons and once with
autoballoond at its defaults plus the host memory budget (HostMemorySource= the host memcg).
Asserts that the daemon's run has no guest OOM kill, no VM killed, and clearly less host
swap-out than the run without a controller (at most SWAP_RATIO of it).

Needs the daemon's host memory budget (HostMemorySource=): without it the daemon only reacts
to PSI, after the host has already swapped, and this test fails on the swap ratio."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import overcommit  # noqa: E402
import realguest  # noqa: E402
from abtest import check, log  # noqa: E402

SWAP_RATIO = 0.5


def test():
    outdir = realguest.images()
    timeline = overcommit.load_timeline(quick=True)
    res = {}
    for c in ("none", "default"):
        res[c] = overcommit.run_one(c, "stock", timeline, outdir, env_name="overcommit-" + c)
    none, dflt = res["none"], res["default"]
    ratio = dflt["swap_out_mib"] / none["swap_out_mib"] if none["swap_out_mib"] else float("inf")
    print("swap-out: none %.0f MiB, default %.0f MiB, default/none %.2f; guest OOM kills: none %d, "
          "default %d; PSI some: none %.1f s, default %.1f s" % (
              none["swap_out_mib"], dflt["swap_out_mib"], ratio, none["guest_oom_kills"],
              dflt["guest_oom_kills"], none["psi_some_ms"] / 1000, dflt["psi_some_ms"] / 1000))
    for note in dflt.get("daemon_config_notes", []):
        log("daemon: %s" % note)
    check(none["swap_out_mib"] >= 32, "the scenario did not make the host swap without a controller "
          "(%.0f MiB): it tests nothing" % none["swap_out_mib"])
    check(not dflt["vms_dead"], "VMs died in the default run: %s" % dflt["vms_dead"])
    check(dflt["guest_oom_kills"] == 0, "the default run had %d guest OOM kills" % dflt["guest_oom_kills"])
    check(ratio <= SWAP_RATIO, "default swapped %.0f MiB, %.2f of none's %.0f MiB (want <= %.2f)" % (
        dflt["swap_out_mib"], ratio, none["swap_out_mib"], SWAP_RATIO))


def main():
    """abtest.main's exit codes, without its Env: each run makes its own (run_one)."""
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return abtest.SKIP
    try:
        with overcommit.Interrupt():
            test()
    except abtest.Fail as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS: overcommit")
    return 0


sys.exit(main())
