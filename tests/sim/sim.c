/* Deterministic simulator of an overcommitted KVM host: runs the real policy_decide() and the
 * baselines (none, seed, Proxmox-like, MoM-like) against the same modelled host and guests.
 * The model and its assumptions are written down in docs/simulation.md. */
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "policy.h"
#include "sim.h"

/* ---- model constants (see docs/simulation.md, "Model") ------------------------------------ */

#define TICK_SEC 0.1                  /* integration step */
#define PSI_WINDOW_SEC 1.0            /* PSI trigger window: at most one event per window */
#define STATS_INTERVAL_SEC 2.0        /* guest-stats polling interval QEMU is asked for */
#define POLLER_INTERVAL_SEC 10.0      /* Proxmox pvestatd and MoM's default policy interval */
#define CSV_INTERVAL_SEC 1.0

/* PSI "some" thresholds of the three levels, as a share of the window stalled. */
static const double level_threshold[_PRESSURE_LEVEL_MAX] = { 0, 0.05, 0.15, 0.40 };

#define BALLOON_RATE_BYTES_PER_SEC (1.0 * GIB)   /* how fast a driver inflates or deflates */
#define SELF_DEFLATE_BYTES_PER_SEC (128.0 * MIB) /* the guest patch's rate limit */
#define GUEST_MIN_FREE_PERMILLE 10               /* min_free_kbytes and friends: ~1 % of RAM */
#define HOT_TOUCH_PER_SEC 1.0                    /* a swapped-out working-set page is wanted within 1 s */
#define WARM_TOUCH_PER_SEC 0.02                  /* a swapped-out cache page is hit within ~50 s */
#define LRU_MISPLACED 0.10                       /* share of host evictions that ignore page age */
#define RESTART_SEC 30.0                         /* an OOM-killed workload restarts after this */
#define RESTART_GROWTH_BYTES_PER_SEC (100.0 * MIB)
#define HOG_RAMP_SEC 10.0                        /* --host-hog: how fast the host workload grows */
#define HOST_OVERHEAD_PERCENT 2                  /* host kernel, QEMU processes, page tables */
#define SWAP_PERCENT 50                          /* host swap, as a share of host RAM */
/* Swap bandwidth scales with the host: 1 GiB/s for every 256 GiB of RAM (a few NVMe drives
 * on a big host, one SATA SSD on a small one). */
#define SWAP_BYTES_PER_SEC_PER_GIB (4.0 * MIB)
#define FPR_DELAY_SEC 2.0                        /* free page reporting: freed pages go back to the
                                                  * host within ~2 s (the kernel's reporting delay) */
/* The timeline scenario (--timeline): a small host with zram swap, freshly booted guests. */
#define TIMELINE_SWAP_BYTES_PER_SEC (256.0 * MIB) /* zram: compression on a busy core */
#define TIMELINE_TOUCH_BYTES_PER_SEC (200.0 * MIB) /* a guest process touching memory (TCG) */
#define TIMELINE_READ_BYTES_PER_SEC (100.0 * MIB)  /* a guest reading files into its cache */
#define TIMELINE_BASE_BYTES (48.0 * MIB)           /* a booted guest's kernel and userspace ... */
#define TIMELINE_BASE_CACHE_BYTES (16.0 * MIB)     /* ... and its page cache; the rest untouched */

/* ---- random numbers: splitmix64, so every run is reproducible from its seed --------------- */

static uint64_t rng_next(uint64_t *s) {
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s, double lo, double hi) {
        return lo + (hi - lo) * (double) (rng_next(s) >> 11) / (double) (1ULL << 53);
}

/* ---- names ---------------------------------------------------------------------------------- */

static const char *const controller_names[_CONTROLLER_MAX] = {
        [CONTROLLER_NONE] = "none",
        [CONTROLLER_SEED] = "seed",
        [CONTROLLER_PROXMOX] = "proxmox",
        [CONTROLLER_MOM] = "mom",
        [CONTROLLER_DEFAULT] = "default",
};

static const char *const workload_names[_WORKLOAD_MAX] = {
        [WORKLOAD_IDLE] = "idle",
        [WORKLOAD_STEADY] = "steady",
        [WORKLOAD_SPIKY] = "spiky",
        [WORKLOAD_GROWING] = "growing",
        [WORKLOAD_TIMELINE] = "timeline",
};

const char *controller_to_string(Controller c) {
        return c >= 0 && c < _CONTROLLER_MAX ? controller_names[c] : NULL;
}

Controller controller_from_string(const char *s) {
        for (int i = 0; i < _CONTROLLER_MAX; i++)
                if (streq(s, controller_names[i]))
                        return (Controller) i;
        return _CONTROLLER_INVALID;
}

/* ---- one guest ------------------------------------------------------------------------------ */

typedef struct SimVM {
        Workload workload;
        double ram, target, actual;          /* bytes; actual = ws + cache + stale + untouched */
        bool pursuing;                       /* the driver still moves toward target */
        /* What the guest's memory holds. "stale" is free in the guest but was touched once, so
         * the host still backs it; "untouched" is free and never touched since it came back
         * from the balloon, so it costs the host nothing. */
        double ws, cache, stale, untouched;
        double ws_sw, cache_sw, stale_sw;    /* parts of the above the host swapped out */
        /* workload trace */
        double base, peak, cache_cap, io_bytes_per_sec;
        double spike_period, spike_len, spike_phase, ramp_end;
        double restart_until, restart_cap;
        /* guest-visible counters (virtio-balloon stats) */
        uint64_t major_faults, alloc_stalls, direct_scan, oom_kills;
        /* per window */
        double swapin_window, scope_stall;  /* bytes this VM's tasks waited on in the window */
        double limit;                        /* its scope's memory.high, bytes resident; 0 = none */
        double last_recovery_sec;            /* last recovery move (default policy), -1 = none */
        PressureLevel scope_level;
        bool fpr;                            /* free page reporting: freed pages go back to the host */
        bool dead;                           /* killed by the host's OOM killer */
        double cache_touch_per_sec;          /* how fast swapped-out cache is read again (0: idle) */
        double cache_pending;                /* timeline: bytes of files still to read */
        /* controller side */
        PolicyVM pvm;
        PolicyKnobs knobs;
} SimVM;

static double vm_footprint(const SimVM *v) {
        return v->ws + v->cache + v->stale;
}

static double vm_swapped(const SimVM *v) {
        return v->ws_sw + v->cache_sw + v->stale_sw;
}

static double vm_free(const SimVM *v) {
        return v->stale + v->untouched;
}

static double vm_min_free(const SimVM *v) {
        return v->ram * GUEST_MIN_FREE_PERMILLE / 1000.0;
}

typedef struct Host {
        double ram, swap, overhead, swap_bytes_per_sec, reserve;
        double swapped;                      /* == sum of the VMs' swapped parts */
        double traffic_tick;                 /* swap-in + swap-out bytes this tick */
        double stall_window;
        PressureLevel level;
} Host;

typedef struct Sim {
        const SimConfig *cfg;
        SimVM *vms;
        size_t n;
        Host host;
        double now;
        PolicyHost phost;
        PolicyVM *pvms;                      /* contiguous copies for policy_decide() */
        usec_t next_timer_usec;
        SimResult *res;
        FILE *csv;
        size_t tracked[SIM_TRACKED_MAX];
        size_t n_tracked;
        unsigned char *tl_state;             /* per timeline event: TL_* below */
        bool budget_watch;                   /* the daemon polls stats for the budget's sake */
        bool budget_above;                   /* host use above the budget source's wake-up threshold */
} Sim;

enum { TL_PENDING, TL_ACTIVE, TL_KILLED, TL_DONE };

/* Demand of the workload at time t, bytes. */
static double workload_demand(const SimVM *v, const SimConfig *cfg, double t) {
        double d = v->base;
        bool active = t >= cfg->pressure_start_sec && t < cfg->pressure_end_sec;

        switch (v->workload) {
        case WORKLOAD_IDLE:
                break;
        case WORKLOAD_STEADY:
                d = v->base * (1 + 0.05 * sin(2 * M_PI * (t + v->spike_phase) / 300.0));
                break;
        case WORKLOAD_SPIKY:
                /* The first burst starts spike_phase into the episode, so none is caught half-way. */
                if (active && t - cfg->pressure_start_sec >= v->spike_phase) {
                        double p = fmod(t - cfg->pressure_start_sec - v->spike_phase, v->spike_period);
                        /* ramp up, plateau, ramp down */
                        if (p < v->spike_len) {
                                double r = cfg->spike_ramp_sec;
                                double f = MIN(1.0, MIN(p / r, (v->spike_len - p) / r));
                                d = v->base + (v->peak - v->base) * f;
                        }
                }
                break;
        case WORKLOAD_GROWING:
                if (active) {
                        double f = MIN(1.0, (t - cfg->pressure_start_sec) / (v->ramp_end - cfg->pressure_start_sec));
                        d = v->base + (v->peak - v->base) * f;
                }
                break;
        default:
                break;
        }
        if (t < v->restart_until)
                d = MIN(d, v->base);
        return d;
}

/* Takes `bytes` out of the guest's free pages, spread over untouched, stale and swapped stale
 * in proportion. Returns the part that was swapped out on the host (it must come back in if
 * the guest writes it, or is simply dropped if the balloon takes it). */
static double take_free(SimVM *v, double bytes) {
        double free = vm_free(v);
        if (free <= 0 || bytes <= 0)
                return 0;
        bytes = MIN(bytes, free);
        double untouched = bytes * v->untouched / free, stale = bytes - untouched;
        double stale_sw = v->stale > 0 ? stale * v->stale_sw / v->stale : 0;
        v->untouched = MAX(0, v->untouched - untouched);
        v->stale = MAX(0, v->stale - stale);
        v->stale_sw = MAX(0, v->stale_sw - stale_sw);
        return stale_sw;
}

/* Takes from the guest's cache (guest reclaim). Returns the swapped-out part. */
static double take_cache(SimVM *v, double bytes) {
        bytes = MIN(bytes, v->cache);
        if (bytes <= 0)
                return 0;
        double sw = v->cache_sw * (bytes / v->cache);
        v->cache -= bytes;
        v->cache_sw -= sw;
        if (v->cache_sw < 0) v->cache_sw = 0;
        return sw;
}

static void swap_in(Sim *s, SimVM *v, double bytes) {
        if (bytes <= 0)
                return;
        s->host.swapped -= bytes;
        s->host.traffic_tick += bytes;
        v->swapin_window += bytes;
        s->res->swap_in_bytes += bytes;
}

/* The guest's own allocation of `bytes` for its working set: free pages, then its cache, then
 * (guest patch) pages back from the balloon; what is left is an OOM kill. */
static void guest_allocate(Sim *s, SimVM *v, double bytes) {
        /* Free pages down to the watermark. */
        double from_free = MIN(bytes, MAX(0, vm_free(v) - vm_min_free(v)));
        swap_in(s, v, take_free(v, from_free));
        v->ws += from_free;
        bytes -= from_free;
        if (bytes <= 0)
                return;

        /* Below the watermark: reclaim cache, partly in direct reclaim (the 6.12 counters). */
        double from_cache = MIN(bytes, v->cache);
        if (from_cache > 0) {
                double sw = take_cache(v, from_cache);
                swap_in(s, v, sw);
                v->ws += from_cache;
                bytes -= from_cache;
                v->alloc_stalls++;
                v->direct_scan += (uint64_t) (from_cache / 4096);
        }
        if (bytes <= 0)
                return;

        /* The guest patch: its shrinker deflates under the guest's own pressure, rate limited. */
        double room = MIN(v->ram - v->actual, SELF_DEFLATE_BYTES_PER_SEC * TICK_SEC);
        if (s->cfg->guest_self_deflate && room > 0) {
                double d = MIN(room, bytes);
                v->actual += d;
                v->ws += d;                 /* deflated pages go straight to the allocation */
                bytes -= d;
                if (v->target < v->actual)
                        v->pursuing = false;    /* the driver stops inflating toward the old target */
                s->res->self_deflate_bytes += d;
        }
        if (bytes <= 0)
                return;

        /* Last resort: the last free pages below the watermark, then the OOM killer. */
        double last = MIN(bytes, vm_free(v));
        swap_in(s, v, take_free(v, last));
        v->ws += last;
        bytes -= last;
        if (bytes > 1 * MIB) {
                /* Killed: its anonymous memory becomes free (stale) pages. A timeline guest loses
                 * the allocations of its running events, which do not come back. */
                double killed = MAX(0, v->ws - v->base * 0.5);
                if (v->workload == WORKLOAD_TIMELINE) {
                        killed = MAX(0, v->ws - v->base);
                        for (size_t e = 0; e < s->cfg->timeline->n_events; e++)
                                if (s->cfg->timeline->events[e].vm == (unsigned) (v - s->vms) && s->tl_state[e] == TL_ACTIVE)
                                        s->tl_state[e] = TL_KILLED;
                }
                double sw = v->ws > 0 ? v->ws_sw * killed / v->ws : 0;
                v->ws -= killed;
                v->ws_sw -= sw;
                v->stale += killed;
                v->stale_sw += sw;
                if (getenv("SIM_DEBUG"))
                        fprintf(stderr, "  OOM t=%.1f vm=%zu %s ram=%.2f actual=%.2f target=%.2f ws=%.2f host=%d scope=%d gp=%d floor=%.2f\n",
                                s->now, (size_t) (v - s->vms), workload_names[v->workload], v->ram / GIB, v->actual / GIB,
                                v->target / GIB, v->ws / GIB, s->host.level, v->scope_level, s->pvms[v - s->vms].guest_pressure,
                                (double) s->pvms[v - s->vms].floor_bytes / GIB);
                v->oom_kills++;
                if (v->workload != WORKLOAD_TIMELINE) {
                        v->restart_until = s->now + RESTART_SEC;
                        v->restart_cap = v->ws;
                }
                s->res->guest_oom_events++;
        }
}

static void guest_release(SimVM *v, double bytes) {
        bytes = MIN(bytes, v->ws);
        double sw = v->ws > 0 ? v->ws_sw * bytes / v->ws : 0;
        v->ws -= bytes;
        v->ws_sw -= sw;
        v->stale += bytes;
        v->stale_sw += sw;
}

/* A timeline guest's demand now: its base, plus what its touch-free and hold events have
 * allocated (touched at TIMELINE_TOUCH_BYTES_PER_SEC); its cache events queue reads. */
static double timeline_demand(Sim *s, SimVM *v) {
        const SimTimeline *tl = s->cfg->timeline;
        double d = v->base;

        for (size_t e = 0; e < tl->n_events; e++) {
                const TimelineEvent *ev = tl->events + e;
                if (ev->vm != (unsigned) (v - s->vms) || s->now < ev->t_sec || s->tl_state[e] >= TL_KILLED)
                        continue;
                if (ev->kind == TIMELINE_CACHE) {
                        v->cache_pending += ev->bytes;
                        s->tl_state[e] = TL_DONE;
                        continue;
                }
                double rate = ev->ramp_sec > 0 ? MIN(ev->bytes / ev->ramp_sec, TIMELINE_TOUCH_BYTES_PER_SEC)
                                               : TIMELINE_TOUCH_BYTES_PER_SEC;
                double dt = s->now - ev->t_sec, ramp = ev->bytes / rate;
                double hold = ev->kind == TIMELINE_HOLD ? ev->hold_sec : 0;
                if (dt < ramp)
                        d += MIN(ev->bytes, (dt + TICK_SEC) * rate);
                else if (dt < ramp + hold)
                        d += ev->bytes;
                else {
                        s->tl_state[e] = TL_DONE;    /* freed */
                        continue;
                }
                s->tl_state[e] = TL_ACTIVE;
        }
        return d;
}

static void guest_tick(Sim *s, SimVM *v) {
        double demand = v->workload == WORKLOAD_TIMELINE ? timeline_demand(s, v) : workload_demand(v, s->cfg, s->now);

        /* A restarted workload grows back at a finite speed, not in one tick. */
        if (s->now >= v->restart_until && v->restart_cap > 0) {
                v->restart_cap += RESTART_GROWTH_BYTES_PER_SEC * TICK_SEC;
                if (v->restart_cap >= demand)
                        v->restart_cap = 0;
                else
                        demand = v->restart_cap;
        }

        if (demand > v->ws)
                guest_allocate(s, v, demand - v->ws);
        else if (demand < v->ws)
                guest_release(v, v->ws - demand);

        /* Page cache: reads that miss fill it (major faults), up to its cap, from free memory. */
        if (v->cache < v->cache_cap) {
                double miss = v->io_bytes_per_sec * TICK_SEC * (1 - v->cache / v->cache_cap);
                double room = MAX(0, vm_free(v) - vm_min_free(v));
                double add = MIN(miss, room);
                swap_in(s, v, take_free(v, add));
                v->cache += add;
                v->major_faults += (uint64_t) (miss / 4096);
        }

        /* Timeline reads: new cache from free memory; what finds no free memory replaces older
         * cache (the footprint stays). Read once, then idle. */
        if (v->cache_pending > 0) {
                double read = MIN(v->cache_pending, TIMELINE_READ_BYTES_PER_SEC * TICK_SEC);
                double add = MIN(read, MAX(0, vm_free(v) - vm_min_free(v)));
                swap_in(s, v, take_free(v, add));
                v->cache += add;
                v->cache_pending -= read;
                v->major_faults += (uint64_t) (read / 4096);
        }

        /* Free page reporting: what the guest freed goes back to the host within FPR_DELAY_SEC,
         * swapped-out parts are simply dropped from swap. Without it, freed pages stay held. */
        if (v->fpr && v->stale > 0) {
                double r = v->stale * MIN(1.0, TICK_SEC / FPR_DELAY_SEC);
                double sw = v->stale_sw * r / v->stale;
                v->stale -= r;
                v->stale_sw = MAX(0, v->stale_sw - sw);
                v->untouched += r;
                s->host.swapped -= sw;
        }
}

/* The balloon driver: inflates from free pages then cache, never from the working set (its
 * allocations are __GFP_NORETRY: they fail rather than swap or OOM); deflates at once. */
static void balloon_tick(Sim *s, SimVM *v) {
        if (!v->pursuing)
                return;
        double step = BALLOON_RATE_BYTES_PER_SEC * TICK_SEC;

        if (v->target > v->actual) {
                double d = MIN(step, v->target - v->actual);
                v->actual += d;
                v->untouched += d;
        } else if (v->target < v->actual) {
                double want = MIN(step, v->actual - v->target);
                double from_free = MIN(want, MAX(0, vm_free(v) - vm_min_free(v)));
                double sw = take_free(v, from_free);
                s->host.swapped -= sw;          /* freed while swapped out: no I/O */
                double from_cache = MIN(want - from_free, v->cache);
                sw = take_cache(v, from_cache);
                s->host.swapped -= sw;
                v->actual -= from_free + from_cache;
        }
        if (fabs(v->actual - v->target) < 4096)
                v->pursuing = false;
}

/* The host workload's resident memory at time t (hot: never evicted). */
static double hog_bytes(const Sim *s) {
        const SimConfig *cfg = s->cfg;
        if (cfg->hog_fraction <= 0 || s->now < cfg->hog_start_sec || s->now >= cfg->hog_end_sec)
                return 0;
        return s->host.ram * cfg->hog_fraction * MIN(1.0, (s->now - cfg->hog_start_sec) / HOG_RAMP_SEC);
}

/* The host's own use: its overhead and the host workload. */
static double host_own(const Sim *s) {
        return s->host.overhead + hog_bytes(s);
}

/* What the host holds in RAM: its own use and every guest's resident part (QEMU's RSS). */
static double host_used(const Sim *s) {
        double used = host_own(s);
        for (size_t i = 0; i < s->n; i++)
                used += vm_footprint(s->vms + i) - vm_swapped(s->vms + i);
        return used;
}

/* The host's budget and each VM's host footprint, as the daemon reads them (HostMemorySource=,
 * each QEMU's VmRSS and VmSwap) before every decision. */
static void budget_fill(Sim *s) {
        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                PolicyVM *p = s->pvms + i;
                p->host_rss_bytes = (uint64_t) (vm_footprint(v) - vm_swapped(v));
                p->host_swap_bytes = (uint64_t) vm_swapped(v);
                p->free_page_reporting = v->fpr;
                p->controllable = !v->dead;
        }
        s->phost.budget = (HostBudget) {
                .valid = true,
                .capacity_bytes = (uint64_t) s->host.ram,
                .used_bytes = (uint64_t) host_used(s),
                .swap_bytes = (uint64_t) s->host.swapped,
                .swap_capable = s->host.swap > 0,
                .reserve_bytes = (uint64_t) s->host.reserve,
                .interval_usec = (usec_t) (STATS_INTERVAL_SEC * USEC_PER_SEC),
        };
}

/* The policy's own host_budget_balance(): used + the guests' swap + reserve - capacity. */
static double budget_balance(Sim *s) {
        budget_fill(s);
        return (double) host_budget_balance(&s->phost.budget, s->pvms, s->n);
}

/* The host's OOM killer: the VM with the most memory (resident + swap, as oom_badness) dies;
 * everything it held, in RAM and in swap, is freed. */
static void host_oom_kill(Sim *s) {
        SimVM *victim = NULL;
        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                if (!v->dead && (!victim || vm_footprint(v) > vm_footprint(victim)))
                        victim = v;
        }
        if (!victim)
                return;
        if (getenv("SIM_DEBUG"))
                fprintf(stderr, "  host OOM t=%.1f kills vm=%zu (%.0f MiB resident, %.0f MiB swap)\n", s->now,
                        (size_t) (victim - s->vms), (vm_footprint(victim) - vm_swapped(victim)) / MIB,
                        vm_swapped(victim) / MIB);
        s->host.swapped -= vm_swapped(victim);
        victim->ws = victim->cache = victim->stale = 0;
        victim->ws_sw = victim->cache_sw = victim->stale_sw = 0;
        victim->untouched = victim->actual;    /* costs the host nothing any more */
        victim->cache_pending = 0;
        victim->dead = true;
        victim->pursuing = false;
        s->res->host_oom_kills++;
}

/* Host memory: touches of swapped-out pages come back in (refaults), and when resident memory
 * exceeds RAM the host evicts into swap, coldest first (free-in-guest, then cache, then working
 * set), with a share of evictions misplaced as a real LRU does. Stall is that I/O only: a host
 * that sits over its budget with cold pages in swap does not stall. No room left in swap (or no
 * swap): the host OOM killer. */
static void host_tick(Sim *s) {
        Host *h = &s->host;
        double resident = host_own(s), demand = host_own(s), stall_extra = 0;

        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                if (v->dead)
                        continue;
                double in_hot = v->ws_sw * MIN(1.0, HOT_TOUCH_PER_SEC * TICK_SEC);
                double in_warm = v->cache_sw * v->cache_touch_per_sec * TICK_SEC;
                v->ws_sw -= in_hot;
                v->cache_sw -= in_warm;
                swap_in(s, v, in_hot + in_warm);

                /* A scope with memory.high: the kernel reclaims that VM alone, coldest first,
                 * and its tasks are throttled while it does (that is its scope's pressure). */
                double over = v->limit > 0 ? vm_footprint(v) - vm_swapped(v) - v->limit : 0;
                over = MIN(over, h->swap - h->swapped);
                if (over > 0) {
                        double *part[3] = { &v->stale, &v->cache, &v->ws }, *sw[3] = { &v->stale_sw, &v->cache_sw, &v->ws_sw };
                        for (int p = 0; p < 3 && over > 0; p++) {
                                double e = MIN(over, *part[p] - *sw[p]);
                                *sw[p] += e;
                                over -= e;
                                h->swapped += e;
                                h->traffic_tick += e;
                                v->swapin_window += e;
                                s->res->swap_out_bytes += e;
                        }
                }
                resident += vm_footprint(v) - vm_swapped(v);
                demand += vm_footprint(v);
        }
        s->res->peak_over_ram_bytes = MAX(s->res->peak_over_ram_bytes, demand - h->ram);

        double excess = resident - h->ram;
        if (excess > 0) {
                double pool[3] = {}, total = 0;
                for (size_t i = 0; i < s->n; i++) {
                        SimVM *v = s->vms + i;
                        pool[0] += v->stale - v->stale_sw;
                        pool[1] += v->cache - v->cache_sw;
                        pool[2] += v->ws - v->ws_sw;
                }
                total = pool[0] + pool[1] + pool[2];
                double out = MIN(excess, MIN(total, MAX(0, h->swap - h->swapped)));
                if (out < MIN(excess, total))
                        s->res->host_swap_full_sec += TICK_SEC;   /* (or no swap at all) */
                /* Share of each pool evicted: ordered part plus misplaced part. */
                double ordered = out * (1 - LRU_MISPLACED), frac[3];
                for (int p = 0; p < 3; p++) {
                        double take = MIN(ordered, pool[p]);
                        ordered -= take;
                        frac[p] = pool[p] > 0 ? (take + out * LRU_MISPLACED * pool[p] / total) / pool[p] : 0;
                        frac[p] = MIN(frac[p], 1.0);
                }
                double evicted = 0;
                for (size_t i = 0; i < s->n; i++) {
                        SimVM *v = s->vms + i;
                        double e0 = (v->stale - v->stale_sw) * frac[0];
                        double e1 = (v->cache - v->cache_sw) * frac[1];
                        double e2 = (v->ws - v->ws_sw) * frac[2];
                        v->stale_sw += e0;
                        v->cache_sw += e1;
                        v->ws_sw += e2;
                        evicted += e0 + e1 + e2;
                }
                h->swapped += evicted;
                h->traffic_tick += evicted;
                s->res->swap_out_bytes += evicted;
                excess -= evicted;
                /* RAM exhausted and nothing left to swap to: the host reclaims in vain for a
                 * while (a full tick of stall), then its OOM killer picks a VM. */
                if (excess > 1 * MIB) {
                        host_oom_kill(s);
                        stall_extra = 1.0;
                }
        }
        s->res->peak_swapped_bytes = MAX(s->res->peak_swapped_bytes, h->swapped);

        double stall = h->swap_bytes_per_sec > 0 ? MIN(1.0, h->traffic_tick / (h->swap_bytes_per_sec * TICK_SEC)) : 0;
        stall = MAX(stall, stall_extra);
        h->stall_window += stall * TICK_SEC;
        s->res->stall_some_sec += stall * TICK_SEC;
        if (s->now > s->cfg->duration_sec - SIM_TAIL_SEC)
                s->res->tail_stall_sec += stall * TICK_SEC;
        h->traffic_tick = 0;
}

/* ---- controllers ---------------------------------------------------------------------------- */

static void set_target(Sim *s, SimVM *v, double target) {
        target = CLAMP(target, 0, v->ram);
        target = floor(target / 4096) * 4096;
        if (target == v->target && !(v->target < v->actual && !v->pursuing))
                return;
        if (target != v->target)
                s->res->balloon_moves++;
        v->target = target;
        v->pursuing = true;
}

static void policy_call(Sim *s, PressureLevel host_event, const PressureLevel *scope_events) {
        usec_t now_usec = (usec_t) llround(s->now * USEC_PER_SEC) + USEC_PER_SEC;

        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                PolicyVM *p = s->pvms + i;
                p->actual_bytes = (uint64_t) v->actual;
                p->scope_event = scope_events ? scope_events[i] : PRESSURE_NONE;
                if ((host_event != PRESSURE_NONE || p->scope_event != PRESSURE_NONE) && v->last_recovery_sec >= 0) {
                        if (s->now - v->last_recovery_sec < (double) v->knobs.recovery_delay_usec / USEC_PER_SEC)
                                s->res->recovery_returns++;
                        v->last_recovery_sec = -1;
                }
                p->scope_level = s->cfg->scope_events ? v->scope_level : PRESSURE_NONE;
        }
        budget_fill(s);
        s->phost.event = host_event;
        s->phost.level = s->host.level;
        usec_t next = policy_decide(&s->phost, s->pvms, s->n, now_usec);
        s->res->policy_calls++;
        /* As the manager: within one reserve of the budget (or over), stats and footprints are
         * kept fresh (polled every stats interval). */
        s->budget_watch = s->phost.budget.valid &&
                (double) host_budget_balance(&s->phost.budget, s->pvms, s->n) > -s->host.reserve;
        const char *trace = getenv("SIM_TRACE_VM");
        if (trace) {
                size_t t = strtoul(trace, NULL, 10);
                if (t < s->n)
                        fprintf(stderr, "  t=%.1f vm=%zu hostev=%d lvl=%d scope=%d/%d actual=%.2f target=%.2f->%.2f ws=%.2f "
                                "avail=%.2f floor=%.2f gp=%d reason=%s\n", s->now, t, host_event, s->host.level,
                                s->pvms[t].scope_event, s->pvms[t].scope_level, s->vms[t].actual / GIB,
                                (double) s->pvms[t].target_bytes / GIB, (double) s->pvms[t].new_target_bytes / GIB,
                                s->vms[t].ws / GIB, (double) s->pvms[t].stats.available_bytes / GIB,
                                (double) s->pvms[t].floor_bytes / GIB, s->pvms[t].guest_pressure,
                                policy_reason_to_string(s->pvms[t].reason));
        }
        for (size_t i = 0; i < s->n; i++) {
                PolicyVM *p = s->pvms + i;
                if (p->new_target_bytes != p->target_bytes) {
                        if (p->reason == POLICY_REASON_RECOVERY) {
                                s->res->recovery_moves++;
                                s->vms[i].last_recovery_sec = s->now;
                        }
                        p->target_bytes = p->new_target_bytes;
                        set_target(s, s->vms + i, (double) p->new_target_bytes);
                }
        }
        s->next_timer_usec = next;
}

static usec_t sim_now_usec(const Sim *s) {
        return (usec_t) llround(s->now * USEC_PER_SEC) + USEC_PER_SEC;
}

static void stats_update(Sim *s) {
        usec_t now_usec = sim_now_usec(s);
        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                GuestStats *st = &s->pvms[i].stats;
                if (v->dead) {
                        st->valid = false;
                        continue;
                }
                st->valid = true;
                st->updated_usec = now_usec;
                st->total_bytes = (uint64_t) v->ram;
                st->free_bytes = (uint64_t) vm_free(v);
                st->caches_bytes = (uint64_t) v->cache;
                st->available_bytes = (uint64_t) (vm_free(v) + v->cache);
                st->major_faults = v->major_faults;
                st->swap_in_bytes = 0;
                st->swap_out_bytes = 0;
                st->oom_kills = v->oom_kills;
                st->alloc_stalls = v->alloc_stalls;
                st->direct_scan = v->direct_scan;
                st->direct_reclaim = v->direct_scan;
        }
}

/* Proxmox VE pvestatd + PVE::AutoBalloon::compute_alg1, every 10 s: keep host memory use at
 * 80 %, moving each VM at most 100 MiB per cycle, shared out by shares between balloon_min and
 * maxmem, VMs with enough free memory squeezed first and VMs without grown first. */
static double proxmox_change(Sim *s, double *res, const size_t *ids, size_t n_ids, double bytes, double maxchange) {
        double rest = bytes;
        bool repeat = true;
        double progress = 1;
        bool *done = calloc(s->n, sizeof(bool));

        while (rest != 0 && repeat && progress > 0) {
                repeat = false;
                progress = 0;
                double shares_total = 0, alloc_old = 0, changes = 0;

                for (size_t k = 0; k < n_ids; k++) {
                        size_t i = ids[k];
                        if (done[i])
                                continue;
                        alloc_old += res[i] - s->vms[i].knobs.minimum_bytes;
                        shares_total += s->vms[i].knobs.weight * 10.0;
                }
                double alloc_new = alloc_old + rest;
                for (size_t k = 0; k < n_ids; k++) {
                        size_t i = ids[k];
                        SimVM *v = s->vms + i;
                        if (done[i])
                                continue;
                        double bmin = (double) v->knobs.minimum_bytes, balloon = v->actual;
                        double desired = bmin + floor(alloc_new / shares_total * v->knobs.weight * 10.0);
                        if (desired > v->ram) {
                                desired = v->ram;
                                repeat = true;
                        } else if (desired < bmin) {
                                desired = bmin;
                                repeat = true;
                        }
                        double nb;
                        if (bytes > 0 && desired - balloon > 0)
                                nb = MIN(balloon + maxchange, desired);
                        else if (desired - balloon < 0)
                                nb = MAX(balloon - maxchange, desired);
                        else {
                                done[i] = true;
                                continue;
                        }
                        double diff = nb - balloon;
                        if (diff != 0) {
                                double change = nb - res[i];
                                res[i] = nb;
                                if (change != 0) {
                                        changes += change;
                                        progress += fabs(diff);
                                        repeat = true;
                                }
                        }
                }
                rest -= changes;
        }
        free(done);
        return rest;
}

static void proxmox_cycle(Sim *s) {
        /* pvestatd reads /proc/meminfo: used = total - free - cache, the host workload too. */
        double used = MIN(host_used(s), s->host.ram);
        double goal = s->host.ram * 0.8 - used;
        const double maxchange = 100.0 * MIB;

        size_t *all = calloc(s->n, sizeof(size_t)), *needy = calloc(s->n, sizeof(size_t)),
               *spare = calloc(s->n, sizeof(size_t));
        size_t n_all = 0, n_needy = 0, n_spare = 0;
        double *res = calloc(s->n, sizeof(double));
        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                double freemem = vm_free(v);      /* stat-free-memory: MemFree */
                if (v->dead)
                        continue;
                all[n_all++] = i;
                res[i] = v->actual;
                if (freemem > v->knobs.minimum_bytes * 0.25 && v->actual >= v->knobs.minimum_bytes)
                        spare[n_spare++] = i;
                else
                        needy[n_needy++] = i;
        }
        if (goal > 10.0 * MIB) {
                double rest = proxmox_change(s, res, needy, n_needy, goal, maxchange);
                if (rest >= goal)
                        proxmox_change(s, res, all, n_all, rest, maxchange);
        } else if (goal < -10.0 * MIB) {
                double rest = proxmox_change(s, res, spare, n_spare, goal, maxchange);
                if (rest <= goal)
                        proxmox_change(s, res, all, n_all, rest, maxchange);
        }
        for (size_t i = 0; i < s->n; i++)
                if (!s->vms[i].dead && res[i] != s->vms[i].actual)
                        set_target(s, s->vms + i, res[i]);
        free(all);
        free(needy);
        free(spare);
        free(res);
}

/* oVirt MoM's balloon policy, every 10 s: host free below 20 % -> shrink every guest by at most
 * 5 % toward its used memory plus a free share that falls with host free memory; otherwise grow
 * every guest by 5 % (and at least to used + 20 % free). Changes under 0.25 % are skipped. */
static void mom_cycle(Sim *s) {
        /* MoM's HostMemory collector: free = MemFree + Buffers + Cached; the host workload and
         * the guests' resident memory are what is not free. */
        double resident = host_used(s);
        double host_free_percent = MAX(0, s->host.ram - resident) / s->host.ram;
        const double pressure_threshold = 0.20, pressure_critical = 0.05, min_guest_free_percent = 0.20,
                     max_change = 0.05, min_change = 0.0025;

        for (size_t i = 0; i < s->n; i++) {
                SimVM *v = s->vms + i;
                double cur = v->actual, used = cur - vm_free(v);   /* balloon_cur - mem_unused */
                double size;
                if (v->dead)
                        continue;
                if (host_free_percent < pressure_threshold) {
                        double guest_free_percent = host_free_percent <= pressure_critical
                                                            ? -0.05 + host_free_percent
                                                            : min_guest_free_percent * host_free_percent / pressure_threshold;
                        double bmin = used + guest_free_percent * cur;
                        size = MAX(cur * (1 - max_change), bmin);
                        if (size > cur)
                                continue;
                } else {
                        if (cur >= v->ram)
                                continue;
                        double bmin = used + min_guest_free_percent * v->ram;
                        size = MIN(cur * (1 + max_change), v->ram);
                        size = MAX(size, bmin);
                }
                size = MAX(size, (double) v->knobs.minimum_bytes);
                if (fabs(size - cur) > min_change * cur)
                        set_target(s, v, size);
        }
}

/* ---- scenario --------------------------------------------------------------------------------- */

static void vm_setup(SimVM *v, Workload w, double ram, uint64_t *rng, const SimConfig *cfg) {
        *v = (SimVM) { .workload = w, .ram = ram, .target = ram, .actual = ram, .last_recovery_sec = -1 };
        switch (w) {
        case WORKLOAD_IDLE:
                v->base = ram * rng_uniform(rng, 0.12, 0.20);
                v->cache_cap = ram * rng_uniform(rng, 0.40, 0.55);
                v->io_bytes_per_sec = 0.5 * MIB;
                break;
        case WORKLOAD_STEADY:
                v->base = ram * rng_uniform(rng, 0.40, 0.50);
                v->cache_cap = ram * rng_uniform(rng, 0.15, 0.25);
                v->io_bytes_per_sec = 2.0 * MIB;
                v->spike_phase = rng_uniform(rng, 0, 300);
                break;
        case WORKLOAD_SPIKY:
                v->base = ram * rng_uniform(rng, 0.20, 0.30);
                v->peak = ram * rng_uniform(rng, 0.75, 0.85);
                v->cache_cap = ram * 0.15;
                v->io_bytes_per_sec = 1.0 * MIB;
                v->spike_period = rng_uniform(rng, 90, 240);
                v->spike_len = 2 * cfg->spike_ramp_sec + rng_uniform(rng, 20, 60);
                v->spike_phase = rng_uniform(rng, 0, v->spike_period);
                break;
        case WORKLOAD_GROWING:
                v->base = ram * rng_uniform(rng, 0.15, 0.25);
                v->peak = ram * rng_uniform(rng, 0.85, 0.90);
                v->cache_cap = ram * 0.08;
                v->io_bytes_per_sec = 1.0 * MIB;
                v->ramp_end = cfg->pressure_end_sec - rng_uniform(rng, 60, 180);
                break;
        case WORKLOAD_TIMELINE:
                /* Freshly booted: its kernel, userspace and a little cache; the rest never
                 * touched, so the host does not hold it. The events do the rest. */
                v->base = TIMELINE_BASE_BYTES;
                v->ws = v->base;
                v->cache = TIMELINE_BASE_CACHE_BYTES;
                v->untouched = ram - v->ws - v->cache;
                v->fpr = cfg->free_page_reporting;
                return;
        default:
                break;
        }
        v->cache_touch_per_sec = WARM_TOUCH_PER_SEC;
        v->fpr = cfg->free_page_reporting;
        v->io_bytes_per_sec *= cfg->io_scale > 0 ? cfg->io_scale : 1;
        /* A long-running guest: its working set and a warm cache, the rest touched once and
         * freed (so the host still backs all of its RAM). */
        v->ws = v->base;
        v->cache = v->cache_cap * 0.9;
        v->stale = ram - v->ws - v->cache;
        v->untouched = 0;
}

static void sim_setup(Sim *s, const SimConfig *cfg, SimResult *res) {
        uint64_t rng = cfg->seed;
        double total_ram = 0;

        *s = (Sim) { .cfg = cfg, .n = cfg->timeline ? cfg->timeline->n_guests : cfg->n_vms, .res = res,
                     .next_timer_usec = USEC_INFINITY };
        *res = (SimResult) { .controller = cfg->controller, .n_vms = (unsigned) s->n };
        s->vms = calloc(s->n, sizeof(SimVM));
        s->pvms = calloc(s->n, sizeof(PolicyVM));

        for (size_t i = 0; i < s->n; i++) {
                /* 4 VMs: one of each. More: 40 % idle, 30 % steady, 15 % spiky, 15 % growing,
                 * sizes 2, 4 or 8 GiB. */
                Workload w;
                double ram;
                if (cfg->timeline) {
                        w = WORKLOAD_TIMELINE;
                        ram = cfg->timeline->guest_ram_bytes;
                } else if (s->n <= 4) {
                        w = (Workload) (i % WORKLOAD_TIMELINE);
                        ram = 4.0 * GIB;
                } else {
                        double r = rng_uniform(&rng, 0, 1);
                        w = r < 0.40 ? WORKLOAD_IDLE : r < 0.70 ? WORKLOAD_STEADY : r < 0.85 ? WORKLOAD_SPIKY : WORKLOAD_GROWING;
                        double z = rng_uniform(&rng, 0, 1);
                        ram = (z < 0.3 ? 2.0 : z < 0.8 ? 4.0 : 8.0) * GIB;
                }
                vm_setup(s->vms + i, w, ram, &rng, cfg);
                total_ram += ram;
                /* If asked, every tenth idle or steady VM (the idle one of four) gets a scope limit:
                 * below what its guest has touched, above its working set. */
                if (cfg->scope_limit_percent > 0 && (w == WORKLOAD_IDLE || w == WORKLOAD_STEADY) &&
                    (s->n <= 4 || i % 10 < 2))
                        s->vms[i].limit = ram * cfg->scope_limit_percent / 100;

                SimVM *v = s->vms + i;
                if (cfg->knobs)
                        v->knobs = *cfg->knobs;
                else
                        policy_knobs_init_default(&v->knobs);
                if (cfg->controller == CONTROLLER_SEED)
                        v->knobs.preset = POLICY_PRESET_SEED;
                /* The same floor for every controller: Proxmox's "balloon" minimum and MoM's
                 * balloon_min are set to what MinimumMemory resolves to. */
                v->knobs.minimum_bytes = (uint64_t) ram / 100 * v->knobs.minimum_percent;
                PolicyVM *p = s->pvms + i;
                policy_vm_init(p, &v->knobs, (uint64_t) ram);
                p->controllable = true;
                p->host_rss_bytes = p->host_swap_bytes = 0;   /* budget_fill() reads them, when on */
        }

        if (cfg->timeline) {
                s->host.ram = cfg->timeline->host_ram_bytes;
                s->host.swap = cfg->timeline->swap_bytes;
                s->host.swap_bytes_per_sec = TIMELINE_SWAP_BYTES_PER_SEC;
        } else {
                s->host.ram = total_ram / cfg->overcommit;
                s->host.swap = s->host.ram * SWAP_PERCENT / 100;
                s->host.swap_bytes_per_sec = SWAP_BYTES_PER_SEC_PER_GIB * s->host.ram / GIB;
        }
        if (cfg->no_swap)
                s->host.swap = 0;
        if (cfg->swap_bytes_per_sec > 0)
                s->host.swap_bytes_per_sec = cfg->swap_bytes_per_sec;
        s->host.overhead = s->host.ram * HOST_OVERHEAD_PERCENT / 100;
        if (cfg->host_reserve_bytes >= 0)
                s->host.reserve = cfg->host_reserve_bytes;
        else if (cfg->host_reserve_fraction >= 0)
                s->host.reserve = s->host.ram * cfg->host_reserve_fraction;
        else {
                /* HostMemoryReserve='s default, resolved against this host's RAM. */
                Config c;
                config_init(&c);
                s->host.reserve = (double) host_memory_reserve_resolve(c.host_memory_reserve_bytes,
                                                                       c.host_memory_reserve_permille,
                                                                       (uint64_t) s->host.ram);
                config_done(&c);
        }
        res->host_ram_bytes = s->host.ram;
        res->host_swap_bytes = s->host.swap;
        res->host_reserve_bytes = s->host.reserve;
        res->total_max_bytes = total_ram;
        if (cfg->timeline)
                s->tl_state = calloc(MAX(cfg->timeline->n_events, 1), 1);

        /* Start in steady state: the host has already swapped out what does not fit, coldest
         * first, and that I/O is long over (a freshly booted timeline host fits). */
        double excess = s->host.overhead - s->host.ram;
        for (size_t i = 0; i < s->n; i++)
                excess += vm_footprint(s->vms + i);
        excess = MIN(excess, s->host.swap);
        for (int pass = 0; pass < 3 && excess > 0; pass++) {
                double pool = 0;
                for (size_t i = 0; i < s->n; i++)
                        pool += pass == 0 ? s->vms[i].stale : pass == 1 ? s->vms[i].cache : s->vms[i].ws;
                if (pool <= 0)
                        continue;
                double f = MIN(1.0, excess / pool);
                for (size_t i = 0; i < s->n; i++) {
                        SimVM *v = s->vms + i;
                        if (pass == 0)
                                v->stale_sw = v->stale * f;
                        else if (pass == 1)
                                v->cache_sw = v->cache * f;
                        else
                                v->ws_sw = v->ws * f;
                }
                excess -= pool * f;
        }
        for (size_t i = 0; i < s->n; i++)
                s->host.swapped += vm_swapped(s->vms + i);
        res->initial_swapped_bytes = s->host.swapped;

        /* Plot a few VMs: the first of each workload (a timeline's: all of them, up to four). */
        for (int w = 0; w < _WORKLOAD_MAX; w++)
                for (size_t i = 0; i < s->n && s->n_tracked < SIM_TRACKED_MAX; i++)
                        if (s->vms[i].workload == (Workload) w) {
                                if (w == WORKLOAD_TIMELINE) {
                                        for (; i < s->n && s->n_tracked < SIM_TRACKED_MAX; i++)
                                                s->tracked[s->n_tracked++] = i;
                                        break;
                                }
                                s->tracked[s->n_tracked++] = i;
                                break;
                        }
}

static PressureLevel level_of(double stall) {
        PressureLevel l = PRESSURE_NONE;
        for (int i = PRESSURE_LOW; i < _PRESSURE_LEVEL_MAX; i++)
                if (stall >= level_threshold[i])
                        l = (PressureLevel) i;
        return l;
}

static void csv_header(Sim *s) {
        fprintf(s->csv, "t_sec,host_stall_pct,host_level,swapped_gib,actual_sum_pct,target_sum_pct,balloon_moves,guest_ooms");
        for (size_t k = 0; k < s->n_tracked; k++) {
                size_t i = s->tracked[k];
                fprintf(s->csv, ",vm%zu_%s_actual_gib,vm%zu_%s_ws_gib", i, workload_names[s->vms[i].workload], i,
                        workload_names[s->vms[i].workload]);
        }
        /* Appended, so that the columns above keep their numbers. */
        fprintf(s->csv, ",host_used_gib,host_ram_gib,over_budget_gib,swap_out_gib,host_ooms");
        for (size_t k = 0; k < s->n_tracked; k++)
                fprintf(s->csv, ",vm%zu_rss_gib,vm%zu_swap_gib", s->tracked[k], s->tracked[k]);
        fputc('\n', s->csv);
}

static void csv_row(Sim *s, double stall) {
        double actual = 0, target = 0;
        for (size_t i = 0; i < s->n; i++) {
                actual += s->vms[i].actual;
                target += s->vms[i].target;
        }
        fprintf(s->csv, "%.1f,%.2f,%d,%.3f,%.2f,%.2f,%" PRIu64 ",%" PRIu64, s->now, stall * 100, s->host.level,
                s->host.swapped / GIB, 100 * actual / s->res->total_max_bytes, 100 * target / s->res->total_max_bytes,
                s->res->balloon_moves, s->res->guest_oom_events);
        for (size_t k = 0; k < s->n_tracked; k++) {
                SimVM *v = s->vms + s->tracked[k];
                fprintf(s->csv, ",%.3f,%.3f", v->actual / GIB, v->ws / GIB);
        }
        fprintf(s->csv, ",%.4f,%.4f,%.4f,%.4f,%u", host_used(s) / GIB, s->host.ram / GIB, budget_balance(s) / GIB,
                s->res->swap_out_bytes / GIB, s->res->host_oom_kills);
        for (size_t k = 0; k < s->n_tracked; k++) {
                SimVM *v = s->vms + s->tracked[k];
                fprintf(s->csv, ",%.4f,%.4f", (vm_footprint(v) - vm_swapped(v)) / GIB, vm_swapped(v) / GIB);
        }
        fputc('\n', s->csv);
}

int sim_run(const SimConfig *cfg, SimResult *res) {
        Sim s;
        unsigned ticks_per_window = (unsigned) llround(PSI_WINDOW_SEC / TICK_SEC);
        unsigned ticks_per_stats = (unsigned) llround(STATS_INTERVAL_SEC / TICK_SEC);
        unsigned ticks_per_poll = (unsigned) llround(POLLER_INTERVAL_SEC / TICK_SEC);
        unsigned ticks_per_csv = (unsigned) llround(CSV_INTERVAL_SEC / TICK_SEC);
        unsigned n_ticks = (unsigned) llround(cfg->duration_sec / TICK_SEC);
        PressureLevel *scope_events;
        double last_pressure_sec = -1, recovered_at = -1;
        unsigned stats_next_tick = 0;

        sim_setup(&s, cfg, res);
        scope_events = calloc(s.n, sizeof(PressureLevel));
        if (cfg->csv_path) {
                s.csv = fopen(cfg->csv_path, "we");
                if (!s.csv)
                        return -errno;
                csv_header(&s);
        }

        for (unsigned tick = 1; tick <= n_ticks; tick++) {
                s.now = tick * TICK_SEC;

                for (size_t i = 0; i < s.n; i++) {
                        if (s.vms[i].dead)
                                continue;
                        guest_tick(&s, s.vms + i);
                        balloon_tick(&s, s.vms + i);
                }
                host_tick(&s);

                bool window_end = tick % ticks_per_window == 0;
                if (window_end) {
                        double stall = s.host.stall_window / PSI_WINDOW_SEC;
                        PressureLevel l = level_of(stall), old = s.host.level;
                        bool any_scope_event = false, any_scope_change = false;
                        s.host.stall_window = 0;
                        s.host.level = l;
                        for (int j = PRESSURE_LOW; j < _PRESSURE_LEVEL_MAX; j++)
                                if (l >= j)
                                        res->time_above_sec[j] += PSI_WINDOW_SEC;
                        if (l > PRESSURE_NONE)
                                last_pressure_sec = s.now;
                        if (l > PRESSURE_NONE && old == PRESSURE_NONE) {
                                res->pressure_episodes++;
                                if (cfg->hog_fraction > 0 && s.now >= cfg->hog_start_sec && s.now < cfg->hog_end_sec)
                                        res->hog_episodes++;
                        }
                        res->peak_stall_pct = MAX(res->peak_stall_pct, stall * 100);

                        for (size_t i = 0; i < s.n; i++) {
                                SimVM *v = s.vms + i;
                                double share = s.host.swap_bytes_per_sec * PSI_WINDOW_SEC *
                                               MAX(vm_footprint(v), 1.0) / MAX(s.host.ram, 1.0);
                                PressureLevel sl = level_of(MIN(1.0, v->swapin_window / share));
                                any_scope_change |= sl != v->scope_level;
                                v->scope_level = sl;
                                scope_events[i] = cfg->scope_events ? sl : PRESSURE_NONE;
                                any_scope_event |= scope_events[i] != PRESSURE_NONE;
                                v->swapin_window = 0;
                        }

                        if (cfg->controller == CONTROLLER_DEFAULT || cfg->controller == CONTROLLER_SEED) {
                                /* The seed listened to one (host) cgroup only. */
                                bool scope = cfg->controller == CONTROLLER_DEFAULT && any_scope_event;
                                if (l > PRESSURE_NONE || scope || l != old ||
                                    (cfg->controller == CONTROLLER_DEFAULT && cfg->scope_events && any_scope_change))
                                        policy_call(&s, l, scope ? scope_events : NULL);
                        }
                        if (s.csv && tick % ticks_per_csv == 0)
                                csv_row(&s, stall);
                }

                if (cfg->controller == CONTROLLER_DEFAULT) {
                        /* As the daemon does: guest stats are polled only while something is under
                         * pressure or some guest is below its maximum (no wake-ups when idle), and
                         * at once when that starts; also while the host is within one reserve of
                         * its budget. The budget source (a v1 memory cgroup, as in the real
                         * benchmark) wakes the daemon when the host's use crosses two reserves
                         * below capacity, either way: footprints and stats, then a decision. */
                        bool above = host_used(&s) >= s.host.ram - 2 * s.host.reserve;
                        if (above != s.budget_above) {
                                s.budget_above = above;
                                stats_update(&s);
                                policy_call(&s, PRESSURE_NONE, NULL);
                                res->budget_wakeups++;
                        }
                        bool needed = s.host.level != PRESSURE_NONE || s.budget_watch;
                        for (size_t i = 0; !needed && i < s.n; i++)
                                needed = s.vms[i].scope_level != PRESSURE_NONE || s.vms[i].target < s.vms[i].ram;
                        if (needed && (stats_next_tick == 0 || tick >= stats_next_tick)) {
                                stats_update(&s);
                                policy_call(&s, PRESSURE_NONE, NULL);
                                res->stats_calls++;
                                stats_next_tick = tick + ticks_per_stats;
                        } else if (!needed)
                                stats_next_tick = 0;
                        if (s.next_timer_usec != USEC_INFINITY && sim_now_usec(&s) >= s.next_timer_usec) {
                                policy_call(&s, PRESSURE_NONE, NULL);
                                res->timer_wakeups++;
                        }
                } else if (cfg->controller == CONTROLLER_PROXMOX && tick % ticks_per_poll == 0)
                        proxmox_cycle(&s);
                else if (cfg->controller == CONTROLLER_MOM && tick % ticks_per_poll == 0)
                        mom_cycle(&s);

                /* A host without the room to hold what the guests are owed is a host in need as
                 * much as one that stalls: the policy gives back only into room beyond half a
                 * reserve. Recovery is measured from the end of both (a workload that holds its
                 * memory ends its need only when it ends, stall or not). */
                if (window_end) {
                        double owed = 0, room = -budget_balance(&s) - s.host.reserve / 2;
                        for (size_t i = 0; i < s.n; i++)
                                owed += MAX(s.vms[i].ram - s.vms[i].actual, 0.0);
                        if (room < owed)
                                last_pressure_sec = s.now;
                }
                /* Memory returned: the last time the sum of actual sizes rose to 95 % of the sum
                 * of maxima and stayed there. */
                if (window_end) {
                        double actual = 0;
                        for (size_t i = 0; i < s.n; i++)
                                actual += s.vms[i].actual;
                        if (actual >= 0.95 * res->total_max_bytes) {
                                if (recovered_at < 0)
                                        recovered_at = s.now;
                        } else
                                recovered_at = -1;
                }
                if (window_end) {
                        double reclaimed = 0;
                        for (size_t i = 0; i < s.n; i++)
                                reclaimed += s.vms[i].ram - s.vms[i].actual;
                        res->peak_reclaimed_bytes = MAX(res->peak_reclaimed_bytes, reclaimed);
                }
        }

        double actual = 0;
        for (size_t i = 0; i < s.n; i++)
                actual += s.vms[i].actual;
        res->end_actual_pct = 100 * actual / res->total_max_bytes;
        res->end_over_budget_bytes = budget_balance(&s);
        /* Recovery is timed from the end of the last pressure (a PSI window at low or above):
         * how long after the host was relieved did the guests get their memory back. */
        res->pressure_end_sec = last_pressure_sec;
        res->recovery_sec = recovered_at < 0 ? -1 : MAX(0, recovered_at - MAX(last_pressure_sec, 0));

        if (getenv("SIM_DEBUG")) {
                uint64_t oom[_WORKLOAD_MAX] = {};
                for (size_t i = 0; i < s.n; i++)
                        oom[s.vms[i].workload] += s.vms[i].oom_kills;
                fprintf(stderr, "%s OOMs: idle %" PRIu64 " steady %" PRIu64 " spiky %" PRIu64 " growing %" PRIu64
                        "; policy calls %" PRIu64 " (stats %" PRIu64 ", timer %" PRIu64 ", budget %" PRIu64 "); self-deflated %.1f GiB; "
                        "swap full %.0f s\n",
                        controller_to_string(cfg->controller), oom[0], oom[1], oom[2], oom[3], res->policy_calls,
                        res->stats_calls, res->timer_wakeups, res->budget_wakeups, res->self_deflate_bytes / GIB, res->host_swap_full_sec);
        }

        if (s.csv)
                fclose(s.csv);
        free(scope_events);
        free(s.tl_state);
        free(s.vms);
        free(s.pvms);
        return 0;
}

void sim_config_default(SimConfig *cfg) {
        *cfg = (SimConfig) {
                .n_vms = 100,
                .overcommit = 1.3,
                .seed = 1,
                .duration_sec = 900,
                .pressure_start_sec = 60,
                .pressure_end_sec = 540,
                .controller = CONTROLLER_DEFAULT,
                .scope_events = true,
                .guest_self_deflate = true,
                .spike_ramp_sec = 15,
                .io_scale = 1,
                .host_reserve_bytes = -1,
                .host_reserve_fraction = -1,
        };
}

/* ---- the timeline file ------------------------------------------------------------------------ */

static int json_number(struct json_object *o, const char *key, double *ret) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v) ||
            !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
                return -EINVAL;
        *ret = json_object_get_double(v);
        return *ret >= 0 ? 0 : -EINVAL;
}

static const char *json_string(struct json_object *o, const char *key) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* tests/bench/overcommit-timeline.json: host_ram_mib, swap_mib, guest_ram_mib, duration_sec,
 * guests (names), events ({t, vm, kind: touch-free|cache|hold, mib, hold_sec}). Errors on
 * stderr, with the field. */
int sim_timeline_load(const char *path, SimTimeline *ret) {
        static const char *const kinds[_TIMELINE_KIND_MAX] = {
                [TIMELINE_TOUCH_FREE] = "touch-free", [TIMELINE_CACHE] = "cache", [TIMELINE_HOLD] = "hold",
        };
        struct json_object *root = json_object_from_file(path), *guests, *events;
        SimTimeline tl = {};
        double mib;
        int r = -EINVAL;

        if (!root) {
                fprintf(stderr, "%s: cannot read it as JSON: %s", path, json_util_get_last_err());
                return -EINVAL;
        }
        if (json_number(root, "host_ram_mib", &mib) < 0 || mib <= 0) {
                fprintf(stderr, "%s: host_ram_mib missing or invalid\n", path);
                goto finish;
        }
        tl.host_ram_bytes = mib * MIB;
        if (json_number(root, "swap_mib", &mib) < 0) {
                fprintf(stderr, "%s: swap_mib missing or invalid\n", path);
                goto finish;
        }
        tl.swap_bytes = mib * MIB;
        if (json_number(root, "guest_ram_mib", &mib) < 0 || mib < 128) {
                fprintf(stderr, "%s: guest_ram_mib missing or below 128\n", path);
                goto finish;
        }
        tl.guest_ram_bytes = mib * MIB;
        if (json_number(root, "duration_sec", &tl.duration_sec) < 0 || tl.duration_sec <= 0) {
                fprintf(stderr, "%s: duration_sec missing or invalid\n", path);
                goto finish;
        }
        if (!json_object_object_get_ex(root, "guests", &guests) || !json_object_is_type(guests, json_type_array) ||
            json_object_array_length(guests) < 1 || json_object_array_length(guests) > SIM_TIMELINE_GUESTS_MAX) {
                fprintf(stderr, "%s: guests must be a list of 1 to %d names\n", path, SIM_TIMELINE_GUESTS_MAX);
                goto finish;
        }
        tl.n_guests = (unsigned) json_object_array_length(guests);
        for (unsigned i = 0; i < tl.n_guests; i++) {
                const char *name = json_object_get_string(json_object_array_get_idx(guests, i));
                if (!name || strlen(name) >= sizeof tl.guests[i]) {
                        fprintf(stderr, "%s: guests[%u] invalid\n", path, i);
                        goto finish;
                }
                strcpy(tl.guests[i], name);
        }
        if (!json_object_object_get_ex(root, "events", &events) || !json_object_is_type(events, json_type_array)) {
                fprintf(stderr, "%s: events must be a list\n", path);
                goto finish;
        }
        tl.n_events = json_object_array_length(events);
        tl.events = calloc(MAX(tl.n_events, 1), sizeof(TimelineEvent));
        if (!tl.events) {
                r = -ENOMEM;
                goto finish;
        }
        for (size_t e = 0; e < tl.n_events; e++) {
                struct json_object *o = json_object_array_get_idx(events, e);
                TimelineEvent *ev = tl.events + e;
                const char *vm = json_string(o, "vm"), *kind = json_string(o, "kind");
                bool found = false;

                if (json_number(o, "t", &ev->t_sec) < 0 || ev->t_sec >= tl.duration_sec ||
                    json_number(o, "mib", &mib) < 0 || !vm || !kind) {
                        fprintf(stderr, "%s: events[%zu] needs t (within duration_sec), vm, kind and mib\n", path, e);
                        goto finish;
                }
                ev->bytes = mib * MIB;
                for (unsigned i = 0; i < tl.n_guests && !found; i++)
                        if (streq(vm, tl.guests[i])) {
                                ev->vm = i;
                                found = true;
                        }
                if (!found) {
                        fprintf(stderr, "%s: events[%zu]: no guest named %s\n", path, e, vm);
                        goto finish;
                }
                ev->kind = _TIMELINE_KIND_MAX;
                for (int k = 0; k < _TIMELINE_KIND_MAX; k++)
                        if (streq(kind, kinds[k]))
                                ev->kind = (TimelineKind) k;
                if (ev->kind == _TIMELINE_KIND_MAX) {
                        fprintf(stderr, "%s: events[%zu]: unknown kind %s\n", path, e, kind);
                        goto finish;
                }
                if (ev->kind == TIMELINE_HOLD && json_number(o, "ramp_sec", &ev->ramp_sec) < 0)
                        ev->ramp_sec = 0;   /* optional */
                if (ev->kind == TIMELINE_HOLD && json_number(o, "hold_sec", &ev->hold_sec) < 0) {
                        fprintf(stderr, "%s: events[%zu]: hold needs hold_sec\n", path, e);
                        goto finish;
                }
                if (ev->bytes >= tl.guest_ram_bytes) {
                        fprintf(stderr, "%s: events[%zu]: mib must be below guest_ram_mib\n", path, e);
                        goto finish;
                }
        }
        *ret = tl;
        tl.events = NULL;
        r = 0;
finish:
        free(tl.events);
        json_object_put(root);
        return r;
}

void sim_timeline_free(SimTimeline *tl) {
        free(tl->events);
        tl->events = NULL;
}

/* The bound the default policy promises for giving memory back: the cool-down, then
 * (100 % - minimum) / step recovery steps, plus one PSI window and one stats interval of slack. */
double sim_recovery_bound_sec(const PolicyKnobs *k) {
        double steps = ceil((100.0 - k->minimum_percent) * 10 / k->recovery_permille);
        return (double) k->recovery_delay_usec / USEC_PER_SEC + steps * (double) k->recovery_interval_usec / USEC_PER_SEC +
               PSI_WINDOW_SEC + STATS_INTERVAL_SEC;
}

/* KEY=VALUE as in a config file, parsed by the daemon's own knob_parse(). */
int sim_knob_set(PolicyKnobs *k, const char *assignment) {
        _cleanup_free_ char *error = NULL;
        char name[64];
        const char *eq = strchr(assignment, '=');
        if (!eq || (size_t) (eq - assignment) >= sizeof name)
                return -EINVAL;
        memcpy(name, assignment, eq - assignment);
        name[eq - assignment] = 0;
        const KnobInfo *ki = policy_knob_find(name);
        if (!ki)
                return -ENOENT;
        return knob_parse(ki, eq + 1, k, &error);
}
