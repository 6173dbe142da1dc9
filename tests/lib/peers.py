"""The peer controllers the overcommit benchmark compares autoballoond with, as pure
functions of one snapshot (the same ports as tests/sim/sim.c's, in Python), and a driver that
runs one of them over QMP against real guests.

- Proxmox VE: pvestatd's auto-ballooning (PVE::AutoBalloon::compute_alg1), every 10 s: keep
  host memory use at 80 % of RAM, moving each VM at most 100 MiB per cycle; the memory to
  give or take is shared out by shares (default 1000) between each VM's balloon minimum and
  its maximum; shrinking asks the VMs with more free memory than a quarter of their minimum
  first, growing the others first; a goal within +-10 MiB does nothing.
- oVirt MoM's balloon.rules, every 10 s: host free memory (MemFree + Buffers + Cached over
  MemTotal) below 20 % -> shrink every guest by at most 5 % of its size, never below its used
  memory (balloon size - MemFree) plus a free share that falls with the host's free memory
  (20 % of the guest at the threshold, negative below 5 % host free); otherwise grow every
  ballooned guest by 5 % (at least to used + 20 % free). Changes under 0.25 % are skipped.

Both written from their published algorithms (pve-manager PVE/AutoBalloon.pm and
PVE/Service/pvestatd.pm; mom doc/balloon.rules and mom/Collectors/HostMemory.py), not copied.
Differences on purpose, the same as the simulator's: the host is the benchmark's host memcg
(its limit is MemTotal, its usage minus its page cache is "used"), and MoM's floor is
max(MinimumMemory, used + free share); the published rule takes min(balloon_min, ...) with
vdsm's guaranteed memory as balloon_min, which is not known here.
"""
import math
import time

MIB = 1 << 20
INTERVAL_SEC = 10.0   # pvestatd's update loop, MoM's default policy interval


class VMState:
    """What a peer knows of one VM at a cycle: bytes."""

    def __init__(self, name, ram, actual, free, minimum):
        self.name, self.ram, self.actual, self.free, self.minimum = name, ram, actual, free, minimum

    def __repr__(self):
        return "VMState(%s, ram=%d, actual=%d, free=%s, min=%d MiB)" % (
            self.name, self.ram // MIB, self.actual // MIB,
            None if self.free is None else self.free // MIB, self.minimum // MIB)


# ---- Proxmox ---------------------------------------------------------------------------------

def _proxmox_change(vms, res, ids, nbytes, maxchange, shares=1000):
    """Shares nbytes (positive: give, negative: take) out over the VMs in ids; updates res
    {name: new balloon}; returns what could not be placed."""
    rest = nbytes
    repeat, progress = True, 1
    done = set()
    while rest and repeat and progress:
        repeat, progress = False, 0
        shares_total = alloc_old = 0
        for n in ids:
            if n in done:
                continue
            alloc_old += res.get(n, vms[n].actual) - vms[n].minimum
            shares_total += shares
        if not shares_total:
            break
        alloc_new = alloc_old + rest
        changes = 0
        for n in ids:
            if n in done:
                continue
            v = vms[n]
            desired = v.minimum + math.floor(alloc_new / shares_total * shares)
            if desired > v.ram:
                desired, repeat = v.ram, True
            elif desired < v.minimum:
                desired, repeat = v.minimum, True
            if nbytes > 0 and desired > v.actual:
                new = min(v.actual + maxchange, desired)
            elif desired < v.actual:
                new = max(v.actual - maxchange, desired)
            else:
                done.add(n)
                continue
            if new != v.actual:
                change = new - res.get(n, v.actual)
                res[n] = new
                if change:
                    changes += change
                    progress += abs(new - v.actual)
                    repeat = True
        rest -= changes
    return rest


def proxmox_targets(vms, host_total, host_used, target_percent=80, maxchange=100 * MIB):
    """One pvestatd cycle: {name: new balloon size} for the VMs whose size changes."""
    vms = {v.name: v for v in vms}
    goal = int(host_total * target_percent / 100 - host_used)
    allv = sorted(vms)
    spare = [n for n in allv if vms[n].free and vms[n].free > vms[n].minimum * 0.25
             and vms[n].actual >= vms[n].minimum]
    needy = [n for n in allv if n not in spare]
    res = {}
    if goal > 10 * MIB:
        rest = _proxmox_change(vms, res, needy, goal, maxchange)
        if rest >= goal:
            _proxmox_change(vms, res, allv, rest, maxchange)
    elif goal < -10 * MIB:
        rest = _proxmox_change(vms, res, spare, goal, maxchange)
        if rest <= goal:
            _proxmox_change(vms, res, allv, rest, maxchange)
    return {n: int(b) for n, b in res.items() if int(b) != vms[n].actual}, goal


# ---- MoM -------------------------------------------------------------------------------------

def mom_targets(vms, host_free_fraction, pressure_threshold=0.20, pressure_critical=0.05,
                min_guest_free=0.20, max_change=0.05, min_change=0.0025):
    """One MoM policy cycle: {name: new balloon size} for the VMs whose size changes."""
    out = {}
    for v in vms:
        if v.free is None:          # no guest statistics yet: MoM skips the guest
            continue
        cur, used = v.actual, v.actual - v.free
        if host_free_fraction < pressure_threshold:
            gfp = (-0.05 + host_free_fraction if host_free_fraction <= pressure_critical
                   else min_guest_free * host_free_fraction / pressure_threshold)
            size = max(cur * (1 - max_change), used + gfp * cur)
            if size > cur:
                continue
        else:
            if cur >= v.ram:
                continue
            size = max(min(cur * (1 + max_change), v.ram), used + min_guest_free * v.ram)
        size = min(max(size, v.minimum), v.ram)
        if abs(size - cur) > min_change * cur:
            out[v.name] = int(size)
    return out


# ---- the driver ------------------------------------------------------------------------------

class PeerDriver:
    """Runs a peer over QMP: one connection per guest, held for the whole run (QEMU serves
    one client per -qmp socket at a time), guest statistics every 2 s as pvestatd and MoM
    ask for them. step() is called every second; it acts every INTERVAL_SEC."""

    def __init__(self, kind, qmps, ram, memcg, minimum, log=print):
        self.kind, self.qmps, self.ram, self.memcg, self.minimum = kind, qmps, ram, memcg, minimum
        self.log = log
        self.next = 0.0
        self.moves = []
        for q in qmps.values():
            q.stats_polling(2)

    def snapshot(self):
        vms = []
        for name, q in self.qmps.items():
            actual = q.cmd('query-balloon')['actual']
            st = q.guest_stats()
            free = st.get('stat-free-memory', -1)
            vms.append(VMState(name, self.ram, actual, free if free is not None and free >= 0 else None,
                               self.minimum))
        return vms

    def host(self):
        """(total, used, free incl. page cache) of the host memcg, bytes."""
        total = self.memcg.read("memory.limit_in_bytes")
        usage = self.memcg.usage()
        cache = self.memcg.stat("total_cache")
        return total, max(0, usage - cache), max(0, total - usage + cache)

    def step(self, t):
        if t < self.next:
            return
        self.next = t + INTERVAL_SEC
        vms = self.snapshot()
        total, used, free = self.host()
        if self.kind == "proxmox":
            targets, goal = proxmox_targets(vms, total, used)
            why = "goal %+d MiB" % (goal // MIB)
        elif self.kind == "mom":
            targets = mom_targets(vms, free / total)
            why = "host free %.0f %%" % (100.0 * free / total)
        else:
            raise ValueError(self.kind)
        for name, b in sorted(targets.items()):
            self.qmps[name].cmd('balloon', value=int(b))
            before = next(v.actual for v in vms if v.name == name)
            self.moves.append((round(t, 1), name, before // MIB, b // MIB, why))
            self.log("%s: %s balloon %d -> %d MiB (%s)" % (self.kind, name, before // MIB, b // MIB, why))

    def actual(self, name):
        return self.qmps[name].cmd('query-balloon')['actual']


def self_test():
    """Small checks of the ports against hand-worked cases."""
    g = 512 * MIB
    vms = [VMState("a", g, g, 300 * MIB, 128 * MIB), VMState("b", g, g, 20 * MIB, 128 * MIB)]
    t, goal = proxmox_targets(vms, 1024 * MIB, 1000 * MIB)
    assert goal < 0 and t == {"a": g - 100 * MIB}, (t, goal)   # only the VM with free memory, capped
    t, goal = proxmox_targets(vms, 1024 * MIB, 815 * MIB)      # within the 10 MiB dead band
    assert t == {}, t
    vms = [VMState("a", g, 300 * MIB, 200 * MIB, 128 * MIB)]
    t, _ = proxmox_targets(vms, 1024 * MIB, 200 * MIB)
    assert t == {"a": 400 * MIB}, t
    m = mom_targets([VMState("a", g, g, 300 * MIB, 128 * MIB)], 0.10)
    assert m == {"a": int(g * 0.95)}, m
    m = mom_targets([VMState("a", g, 300 * MIB, 10 * MIB, 128 * MIB)], 0.10)   # at its floor
    assert m == {}, m
    m = mom_targets([VMState("a", g, 400 * MIB, 300 * MIB, 128 * MIB)], 0.5)
    assert m == {"a": int(400 * MIB * 1.05)}, m
    return True


if __name__ == "__main__":
    print("ok" if self_test() else "fail")
