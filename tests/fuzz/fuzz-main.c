/* Standalone driver for the fuzz targets when not built with libFuzzer (gcc, ASan): runs
 * the seed corpus, then deterministic random mutations of it. A short smoke run for CI,
 * not a fuzzer: the real fuzzing is the -Dfuzz=true clang build.
 *   fuzz-X-smoke CORPUS-DIR... [-n ITERATIONS] [-s SEED]   (FUZZ_ITERATIONS env too) */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>

#include "fuzz.h"
#include "util.h"

typedef struct Input {
        uint8_t *data;
        size_t size;
} Input;

static uint64_t rng_state;

static uint64_t rng(void) {
        /* xorshift64*: reproducible across runs and machines for a given seed. */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 2685821657736338717ULL;
}

static size_t rnd(size_t n) {
        return n ? (size_t) (rng() % n) : 0;
}

/* Tokens that matter to a JSON/QMP parser, spliced in whole. */
static const char *const tokens[] = {
        "{", "}", "[", "]", "\"", ",", ":", "\\", "\\u0000", "\\ud800", "\r\n", " ",
        "18446744073709551615", "18446744073709551616", "-1", "-9223372036854775809", "1e999",
        "null", "true", "\"QMP\"", "\"return\"", "\"error\"", "\"event\"", "\"id\"", "\"stats\"",
        "\"last-update\"", "\"stat-free-memory\"", "\xff", "\xc3\xa9", "\0",
};

static size_t mutate(uint8_t *buf, size_t size, size_t max) {
        unsigned n = 1 + (unsigned) rnd(4);

        for (unsigned k = 0; k < n; k++) {
                switch (rnd(6)) {
                case 0: /* flip a bit */
                        if (size)
                                buf[rnd(size)] ^= (uint8_t) (1u << rnd(8));
                        break;
                case 1: /* random byte */
                        if (size)
                                buf[rnd(size)] = (uint8_t) rng();
                        break;
                case 2: { /* delete a range */
                        if (!size)
                                break;
                        size_t at = rnd(size), len = 1 + rnd(MIN(size - at, (size_t) 16));
                        memmove(buf + at, buf + at + len, size - at - len);
                        size -= len;
                        break;
                }
                case 3: { /* duplicate a range */
                        if (!size)
                                break;
                        size_t at = rnd(size), len = 1 + rnd(MIN(size - at, (size_t) 64));
                        if (size + len > max)
                                break;
                        size_t to = rnd(size + 1);
                        uint8_t tmp[64];
                        memcpy(tmp, buf + at, len);
                        memmove(buf + to + len, buf + to, size - to);
                        memcpy(buf + to, tmp, len);
                        size += len;
                        break;
                }
                case 4: { /* splice a token */
                        const char *t = tokens[rnd(ELEMENTSOF(tokens))];
                        size_t len = *t ? strlen(t) : 1;
                        if (size + len > max)
                                break;
                        size_t to = rnd(size + 1);
                        memmove(buf + to + len, buf + to, size - to);
                        memcpy(buf + to, t, len);
                        size += len;
                        break;
                }
                case 5: /* change the driver byte (chunking, limit) */
                        if (size)
                                buf[0] = (uint8_t) rng();
                        break;
                }
        }
        return size;
}

static int load(const char *path, Input **inputs, size_t *n) {
        char *text = NULL;
        size_t size;
        int r = read_full_file(path, &text, &size);

        if (r < 0)
                return r;
        Input *a = realloc(*inputs, (*n + 1) * sizeof(Input));
        if (!a) {
                free(text);
                return -ENOMEM;
        }
        *inputs = a;
        /* Corpus files are raw streams; prepend a driver byte: whole-stream feed. */
        uint8_t *d = malloc(size + 1);
        if (!d) {
                free(text);
                return -ENOMEM;
        }
        d[0] = 0x80;
        memcpy(d + 1, text, size);
        free(text);
        a[(*n)++] = (Input) { d, size + 1 };
        return 0;
}

int main(int argc, char *argv[]) {
        Input *inputs = NULL;
        size_t n_inputs = 0;
        unsigned long iterations = 10000;
        uint64_t seed = 0x5eed;
        const char *e = getenv("FUZZ_ITERATIONS");

        if (e)
                iterations = strtoul(e, NULL, 10);
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "-n") && i + 1 < argc) {
                        iterations = strtoul(argv[++i], NULL, 10);
                        continue;
                }
                if (streq(argv[i], "-s") && i + 1 < argc) {
                        seed = strtoull(argv[++i], NULL, 0);
                        continue;
                }
                DIR *d = opendir(argv[i]);
                if (!d) {
                        if (load(argv[i], &inputs, &n_inputs) < 0) {
                                fprintf(stderr, "cannot read %s: %m\n", argv[i]);
                                return EXIT_FAILURE;
                        }
                        continue;
                }
                for (struct dirent *de; (de = readdir(d));) {
                        char p[4096];
                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(p, sizeof p, "%s/%s", argv[i], de->d_name);
                        if (load(p, &inputs, &n_inputs) < 0) {
                                fprintf(stderr, "cannot read %s: %m\n", p);
                                return EXIT_FAILURE;
                        }
                }
                closedir(d);
        }
        if (n_inputs == 0) {
                fprintf(stderr, "usage: %s CORPUS-DIR|FILE... [-n ITERATIONS] [-s SEED]\n", argv[0]);
                return 2;
        }

        for (size_t i = 0; i < n_inputs; i++) {
                /* Each seed whole, and cut at every read size the target knows. */
                LLVMFuzzerTestOneInput(inputs[i].data, inputs[i].size);
                for (unsigned cut = 0; cut < 64; cut += 7) {
                        inputs[i].data[0] = (uint8_t) cut;
                        LLVMFuzzerTestOneInput(inputs[i].data, inputs[i].size);
                }
                inputs[i].data[0] = 0x80;
        }

        rng_state = seed;
        size_t max = 0;
        for (size_t i = 0; i < n_inputs; i++)
                max = MAX(max, inputs[i].size);
        max *= 2;
        uint8_t *buf = malloc(max);
        if (!buf)
                return EXIT_FAILURE;
        for (unsigned long it = 0; it < iterations; it++) {
                const Input *in = &inputs[rnd(n_inputs)];
                memcpy(buf, in->data, in->size);
                size_t size = mutate(buf, in->size, max);
                LLVMFuzzerTestOneInput(buf, size);
        }
        printf("%zu seeds, %lu mutations (seed 0x%" PRIx64 "): no crash\n", n_inputs, iterations, seed);

        free(buf);
        for (size_t i = 0; i < n_inputs; i++)
                free(inputs[i].data);
        free(inputs);
        return 0;
}
