/* What the policy's random tests share: a seeded generator, so that a failure replays. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state;

static inline uint64_t rnd(void) {
        /* xorshift64*: deterministic, so a failure replays with the same POLICY_TEST_SEED. */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 2685821657736338717ULL;
}

static inline uint64_t rnd_range(uint64_t lo, uint64_t hi) {  /* inclusive */
        return hi <= lo ? lo : lo + rnd() % (hi - lo + 1);
}

static inline bool rnd_chance(unsigned percent) {
        return rnd() % 100 < percent;
}

/* POLICY_TEST_SEED= from the environment replays a run; each test has a default of its own. */
static inline void seed_rng(uint64_t default_seed) {
        const char *e = getenv("POLICY_TEST_SEED");

        rng_state = e ? strtoull(e, NULL, 0) : default_seed;
        if (rng_state == 0)
                rng_state = 1;
}
