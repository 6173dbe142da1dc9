/* Fuzz target: one policy knob value as set-property, drop-ins and autoballoonctl write it
 * ("512M", "2min", "12.5%", "some 100ms 1s"): knob_parse() and knob_format().
 *
 * Input: one driver byte (the shared drivers' one; not used here), then NAME=VALUE as
 * autoballoonctl set-property takes it. Checks what
 * the callers rely on: a refused value changes nothing and says why; an accepted one changes
 * only its knob, lies within the knob's range, and reads back the same from what
 * knob_format() writes into a drop-in. */
#include <stdio.h>

#include "config.h"
#include "fuzz.h"

static bool in_range(const KnobInfo *k, const PolicyKnobs *knobs) {
        const void *p = knob_cptr(k, knobs);

        switch (k->type) {
        case KNOB_SIZE:
        case KNOB_USEC:
                return *(const uint64_t *) p >= k->min && *(const uint64_t *) p <= k->max;
        case KNOB_PERMILLE:
        case KNOB_PERCENT:
        case KNOB_UINT32:
                return *(const uint32_t *) p >= k->min && *(const uint32_t *) p <= k->max;
        default:
                return true;   /* booleans, presets and triggers have their own parsers */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        PolicyKnobs before, after, again;
        char *error = NULL, *text = NULL;

        if (size < 1)
                return 0;
        char *assignment = strndup((const char *) data + 1, size - 1);
        if (!assignment)
                return 0;
        char *value = strchr(assignment, '=');
        const KnobInfo *k = NULL;
        if (value) {
                *value++ = 0;
                k = policy_knob_find(assignment);
        }
        if (!k) {
                free(assignment);
                return 0;
        }

        policy_knobs_init_default(&before);
        after = before;
        int r = knob_parse(k, value, &after, &error);
        for (size_t i = 0; i < policy_knobs_count; i++)
                if (&policy_knobs[i] != k && !knob_equal(&policy_knobs[i], &before, &after))
                        abort();   /* another knob changed */
        if (r < 0) {
                if (!knob_equal(k, &before, &after) || !error || !strstr(error, k->name))
                        abort();   /* a refusal changed the knob, or does not name it */
                goto out;
        }
        if (error || !in_range(k, &after))
                abort();

        if (knob_format(k, &after, &text) < 0)
                goto out;
        again = before;
        if (knob_parse(k, text, &again, &error) < 0 || !knob_equal(k, &after, &again)) {
                fprintf(stderr, "%s=%s read back from \"%s\" differently\n", k->name, value, text);
                abort();
        }
out:
        free(text);
        free(error);
        free(assignment);
        return 0;
}
