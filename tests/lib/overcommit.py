"""One run of the overcommit scenario with real guests (tests/bench/overcommit-timeline.json):
a fresh machined env, a host memcg of host_ram_mib (zram swap of swap_mib, or none), three
real guests registered with machined, the timeline played in the guests with one controller
driving the balloons, a sample every second, and the outcome: guest OOM kills, VMs killed by
the host's OOM killer, host swap-out, PSI stall, peak host memory. Shared by
tests/bench/bench-overcommit.py and tests/e2e/test-overcommit.py."""
import json
import os
import signal
import time

import abtest
import realguest
from abtest import Fail, log

MIB = realguest.MIB
CONTROLLERS = ("none", "seed", "default", "proxmox", "mom")
# variant -> (guest options, host swap, controllers it is run with); libvirt=True: the guests
# are libvirt domains (tests/lib/lvguest.py) that libvirt registers with machined, driven
# through the daemon's libvirt backend (no QMP socket of ours: no proxmox or mom peer)
VARIANTS = {
    "stock": (dict(balloon="stock", deflate_on_oom="off"), True, CONTROLLERS),
    "patched": (dict(balloon="patched", deflate_on_oom="on"), True, ("default",)),
    "fpr": (dict(balloon="stock", deflate_on_oom="off", free_page_reporting="on"), True, ("none", "default")),
    "noswap": (dict(balloon="stock", deflate_on_oom="off"), False, ("none", "default")),
    "libvirt": (dict(balloon="stock", deflate_on_oom="off", libvirt=True), True, ("none", "default")),
}
TIMELINE = os.path.join(abtest.SRCDIR, "tests/bench/overcommit-timeline.json")


def load_timeline(path=TIMELINE, quick=False):
    """The timeline JSON; quick: its "quick" form (shorter, holds capped, later events
    dropped), for make check."""
    tl = json.load(open(path))
    tl["events"] = sorted(tl["events"], key=lambda e: e["t"])
    if quick:
        q = tl["quick"]
        end, cap = q["duration_sec"], q["hold_sec_max"]
        events = []
        for e in tl["events"]:
            if e["t"] >= end - q.get("tail_sec", 10):
                continue
            e = dict(e)
            if e["kind"] == "hold":
                e["hold_sec"] = min(e["hold_sec"], cap)
            events.append(e)
        tl = dict(tl, duration_sec=end, events=events)
    return tl


def guest_command(e):
    """The guest shell command of a timeline event."""
    if e["kind"] == "touch-free":
        return "memhog %d 1 0" % e["mib"]
    if e["kind"] == "cache":
        # Linux drops a block device's page cache when its last opener closes it: a holder in
        # the background keeps the scratch disk open, so the cache stays as a file's would
        return "(exec 3</dev/vda; exec sleep 100000) >/dev/null 2>&1 & pagestream %d" % e["mib"]
    if e["kind"] == "hold":
        steps = int(e.get("ramp_sec", 0))
        if steps <= 1:
            return "memhog %d %d %d" % (e["mib"], e.get("passes", 1), e["hold_sec"])
        # grows by mib/ramp_sec a second, as a workload does, then holds it all until the end
        chunk = max(1, e["mib"] // steps)
        return ("p=; for i in $(seq %d); do memhog %d %d $((%d + %d - i)) & p=\"$p $!\"; sleep 1; done; "
                "rc=0; for x in $p; do wait $x || rc=$?; done; exit $rc"
                % (steps, chunk, e.get("passes", 1), e["hold_sec"], steps))
    raise ValueError("unknown event kind %r" % e["kind"])


def psi_some_us(path):
    """The "some total=" of a memory.pressure file, microseconds."""
    for line in open(path):
        if line.startswith("some"):
            return int(line.split("total=")[1])
    return 0


def vmstat(key):
    for line in open("/proc/vmstat"):
        k, v = line.split()
        if k == key:
            return int(v)
    return 0


def status_kib(pid, key):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def swap_growth_mib(samples):
    """Host swap-out as the host memcg's own count: the sum of every rise of its swap
    (memory.stat "swap") from one second's sample to the next. Swap is machine-wide: the
    memcg's pages go to whichever swap device has the highest priority, often another
    test's zram device rather than the run's own, and another test's swapoff pulls them
    back in; neither the run's zram device nor /proc/vmstat pswpout can tell ours apart.
    A page swapped out and in within one second is not counted."""
    total, last = 0, 0
    for s in samples:
        total += max(0, s["swap"] - last)
        last = s["swap"]
    return round(total / MIB, 1)


def daemon_config(env, controller, memcg):
    """autoballoond's config for the seed and default rows."""
    if controller == "seed":
        return env.write_config(extra="\n[Defaults]\nPreset=seed\n")
    # the host memory budget (HostMemorySource=, HostMemoryReserve= at its default): the
    # host memcg as the daemon inside the namespace sees it
    if not memcg.ns_dir:
        raise Fail("no AB_ENV_MEMCG_NS: the host memcg is not visible inside the namespace")
    return env.write_config(host_pressure="machine.slice", host_memory=memcg.ns_dir)


def run_one(controller, variant, timeline, outdir, env_name="overcommit", label=None,
            stop_event=None, keep_dir=None):
    """Runs the timeline once; returns a dict of results (figures and time series)."""
    guest_opts, with_swap, _ = VARIANTS[variant]
    guest_opts = dict(guest_opts)
    via_libvirt = guest_opts.pop("libvirt", False)
    label = label or "%s-%s" % (variant, controller)
    prefix = os.environ.get("AB_ENV_PREFIX", "abt-")
    ram = timeline["guest_ram_mib"] * MIB
    res = dict(controller=controller, variant=variant, label=label, started=time.time(),
               host_ram_mib=timeline["host_ram_mib"], swap_mib=timeline["swap_mib"] if with_swap else 0,
               guest_ram_mib=timeline["guest_ram_mib"], duration_sec=timeline["duration_sec"])
    with abtest.Env(prefix + env_name) as env:
        memcg = realguest.HostMemcg(env, "host", timeline["host_ram_mib"] * MIB,
                                    swap=timeline["swap_mib"] * MIB if with_swap else None,
                                    no_swap=not with_swap)
        qmps = {}
        lv = None
        try:
            guests = {}
            if via_libvirt:
                import lvguest
                lv = lvguest.Libvirt(env, outdir)
            for name in timeline["guests"]:
                if lv:
                    guests[name] = lv.start_guest(name, timeline["guest_ram_mib"], memcg, **guest_opts)
                else:
                    guests[name] = realguest.start_guest(env, name, outdir, mem="%dM" % timeline["guest_ram_mib"],
                                                         memcg=memcg, **guest_opts)
                    guests[name].machine = name
            peer = None
            if controller in ("seed", "default"):
                env.start_daemon(config=daemon_config(env, controller, memcg), args=("--log-level=debug",))
                for g in guests.values():
                    env.wait_property(env.machine_path(g.machine), "State", "managed", timeout=30)
                res["backend"] = {name: env.ab_get(env.machine_path(g.machine), "Backend")
                                  for name, g in guests.items()}
                log("backends: %s" % res["backend"])
                want = "libvirt" if via_libvirt else "qmp"
                if any(b != want for b in res["backend"].values()):
                    raise Fail("backends %s, expected %s for every guest" % (res["backend"], want))
                notes = [l for l in env.daemon_log_text().splitlines() if "HostMemory" in l]
                res["daemon_config_notes"] = notes[:3]
            elif controller == "none" and lv:
                pass   # the balloon sizes come from libvirt (below)
            elif controller in ("none", "proxmox", "mom"):
                import guestlib
                import peers
                for name, g in guests.items():
                    qmps[name] = guestlib.QMP(g.qmp_socket, timeout=20)
                if controller != "none":
                    peer = peers.PeerDriver(controller, qmps, ram, memcg, ram // 4, log=log)
            else:
                raise Fail("unknown controller %r" % controller)

            lv_actual = {}

            def actual(name):
                try:
                    if env.daemon:
                        return env.ab_get(env.machine_path(guests[name].machine), "ActualMemory")
                    if lv:
                        return lv_actual.get(guests[name].domain)
                    return qmps[name].cmd("query-balloon")["actual"]
                except Exception:  # noqa: BLE001 — a dead VM
                    return None

            psi_file = os.path.join(env.cgroup2, env.name, "memory.pressure")
            zram = memcg.zram
            z0 = zram.written_bytes() if zram else 0
            psi0, pswp0 = psi_some_us(psi_file), vmstat("pswpout")
            jobs = []          # (event, thread, result)
            events = list(timeline["events"])
            samples = []
            t0 = time.monotonic()
            log("%s: timeline of %d s starts" % (label, timeline["duration_sec"]))
            sec = 0
            last_psi = psi0
            while sec <= timeline["duration_sec"]:
                if stop_event is not None and stop_event.is_set():
                    raise Fail("interrupted")
                now = time.monotonic() - t0
                while events and events[0]["t"] <= now:
                    e = events.pop(0)
                    cmd = guest_command(e)
                    log("t=%3.0f %s: %s" % (now, e["vm"], cmd))
                    th, r = guests[e["vm"]].run_bg(cmd)
                    jobs.append((e, th, r, now))
                if peer:
                    try:
                        peer.step(now)
                    except Exception as ex:  # noqa: BLE001 — a VM died under it
                        log("%s step failed: %s" % (controller, ex))
                if env.daemon:
                    env.daemon_check()
                psi = psi_some_us(psi_file)
                s = dict(t=round(now, 2), usage=memcg.usage(), memsw=memcg.read("memory.memsw.usage_in_bytes"),
                         swap=memcg.stat("swap"), cache=memcg.stat("total_cache"),
                         psi_us=psi - psi0, psi_pct=round((psi - last_psi) / 1e4, 2),
                         zram_written=(zram.written_bytes() - z0) if zram else 0, vms={})
                last_psi = psi
                if env.daemon and controller == "default":
                    try:   # what the daemon's budget sees: > 0 the host is over it
                        s["balance"] = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER,
                                               "HostMemoryBalance")
                    except Exception:  # noqa: BLE001
                        s["balance"] = None
                if lv and not env.daemon:
                    lv_actual = lv.balloon_actual()
                for name, g in guests.items():
                    alive = g.proc.alive()
                    s["vms"][name] = dict(actual=actual(name) if alive else None,
                                          rss=status_kib(g.pid, "VmRSS") * 1024,
                                          swap=status_kib(g.pid, "VmSwap") * 1024, alive=alive)
                samples.append(s)
                sec += 1
                time.sleep(max(0.0, t0 + sec - time.monotonic()))
            # let the guest commands end (a hold may run past the timeline on a slow guest)
            end = time.monotonic() + 120
            for e, th, r, _ in jobs:
                th.join(max(0.1, end - time.monotonic()))
            res["psi_some_ms"] = (psi_some_us(psi_file) - psi0) // 1000
            res["swap_out_mib"] = swap_growth_mib(samples)
            res["zram_written_mib"] = round(((zram.written_bytes() - z0) if zram else 0) / MIB, 1)
            res["pswpout_mib_machine"] = round((vmstat("pswpout") - pswp0) * 4096 / MIB, 1)
            res["peak_mib"] = round(max(memcg.read("memory.memsw.max_usage_in_bytes"),
                                        max(x["memsw"] for x in samples)) / MIB, 1)
            res["peak_swap_mib"] = round(max(x["swap"] for x in samples) / MIB, 1)
            res["host_oom_kills"] = memcg.oom_kills()
            res["vms_dead"] = [n for n, g in guests.items() if not g.proc.alive()]
            jobres = []
            for e, th, r, tstart in jobs:
                jr = dict(t=e["t"], vm=e["vm"], kind=e["kind"], mib=e["mib"], started=round(tstart, 1),
                          rc=r.get("rc"), error=r.get("error"), finished=not th.is_alive())
                out = r.get("out") or ""
                jr["ok"] = ("MEMHOG-OK" in out or "PAGESTREAM-OK" in out) and r.get("rc") == 0
                jobres.append(jr)
            res["jobs"] = jobres
            kills = {}
            for name, g in guests.items():
                if not g.proc.alive():
                    kills[name] = None
                    continue
                try:
                    rc, out = g.run('dmesg | grep -c "Killed process" || true', timeout=30)
                    kills[name] = int(out.strip().splitlines()[-1])
                except Exception as ex:  # noqa: BLE001
                    log("dmesg of %s: %s" % (name, ex))
                    kills[name] = None
            res["guest_oom_kills_by_vm"] = kills
            res["guest_oom_kills"] = sum(k for k in kills.values() if k)
            # a hold the guest killed: its shell reports 128+9
            res["holds_killed"] = sum(1 for j in jobres if j["kind"] == "hold" and j["rc"] is not None
                                      and j["rc"] >= 128)
            res["holds_failed"] = sum(1 for j in jobres if j["kind"] == "hold" and not j["ok"])
            if peer:
                res["moves"] = peer.moves
            elif env.daemon:
                res["moves"] = [l for l in env.daemon_log_text().splitlines() if "balloon target" in l]
            res["n_moves"] = len(res.get("moves", []))
            res["samples"] = samples
            if env.daemon and keep_dir:
                os.makedirs(keep_dir, exist_ok=True)
                with open(os.path.join(keep_dir, "%s.autoballoond.log" % label), "w") as f:
                    f.write(env.daemon_log_text())
        finally:
            for q in qmps.values():
                try:
                    q.close()
                except OSError:
                    pass
            if env.daemon:
                env.stop_daemon()
            if lv:
                lv.close()
            memcg.close()
    log("%s: guest OOM kills %s, host OOM kills %d (dead %s), swap-out %.0f MiB, PSI some %.1f s, peak %.0f MiB" % (
        label, res["guest_oom_kills"], res["host_oom_kills"], res["vms_dead"], res["swap_out_mib"],
        res["psi_some_ms"] / 1000, res["peak_mib"]))
    return res


class Interrupt:
    """SIGTERM/SIGINT -> SystemExit, so every Env's with-block cleans up."""

    def __enter__(self):
        def h(signum, _frame):
            raise SystemExit(128 + signum)
        self.old = [signal.signal(s, h) for s in (signal.SIGTERM, signal.SIGINT)]
        return self

    def __exit__(self, *a):
        for s, o in zip((signal.SIGTERM, signal.SIGINT), self.old):
            signal.signal(s, o)

