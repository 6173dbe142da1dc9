/* knob-doc: copies a man page source to stdout with the policy knobs filled in from the same
 * table the daemon uses (policy_knobs[]), so the pages cannot drift from the code.
 *   @KNOBS_CONF@  each knob as a config key: syntax, default, range
 *   @KNOBS_BUS@   each knob as a D-Bus property: type and range in the bus's units */
#include <stdio.h>

#include "config.h"
#include "knob-bus.h"

/* scdoc takes * and _ as markup */
static void put_escaped(const char *s) {
        for (; *s; s++) {
                if (*s == '*' || *s == '_' || *s == '\\')
                        putchar('\\');
                putchar(*s);
        }
}

static void knobs_conf(void) {
        PolicyKnobs defaults;

        policy_knobs_init_default(&defaults);
        for (size_t i = 0; i < policy_knobs_count; i++) {
                const KnobInfo *k = &policy_knobs[i];
                _cleanup_free_ char *def = NULL, *range = NULL;

                if (knob_format(k, &defaults, &def) < 0 || knob_describe_range(k, &range) < 0)
                        exit(EXIT_FAILURE);
                printf("*%s=*\n\t", k->name);
                put_escaped(k->doc);
                printf(". Takes ");
                put_escaped(range);
                printf(". Default: *");
                put_escaped(def);
                printf("*.\n\n");
        }
}

static void knobs_bus(void) {
        for (size_t i = 0; i < policy_knobs_count; i++) {
                const KnobInfo *k = &policy_knobs[i];
                _cleanup_free_ char *range = NULL;

                if (knob_bus_describe_range(k, &range) < 0)
                        exit(EXIT_FAILURE);
                printf("*%s* %s, read/write\n\t", k->name, knob_bus_signature(k));
                put_escaped(k->doc);
                printf(". ");
                put_escaped(range);
                printf(".\n\n");
        }
}

int main(int argc, char *argv[]) {
        char line[4096];
        FILE *f;

        if (argc != 2 || !(f = fopen(argv[1], "re"))) {
                fprintf(stderr, "usage: knob-doc PAGE.scd.in\n");
                return EXIT_FAILURE;
        }
        while (fgets(line, sizeof line, f)) {
                if (streq(line, "@KNOBS_CONF@\n"))
                        knobs_conf();
                else if (streq(line, "@KNOBS_BUS@\n"))
                        knobs_bus();
                else
                        fputs(line, stdout);
        }
        fclose(f);
        return ferror(stdout) ? EXIT_FAILURE : EXIT_SUCCESS;
}
