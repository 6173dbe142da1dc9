/* libvirt's client library, loaded at run time (see libvirt-dl.h). */
#include <dlfcn.h>
#include <stdbool.h>

#include "libvirt-dl.h"
#include "log.h"

#define LIBVIRT_DL_DEFINE(f) typeof(f) *sym_##f = NULL;
LIBVIRT_DL_FUNCTIONS(LIBVIRT_DL_DEFINE)
#undef LIBVIRT_DL_DEFINE

/* POSIX's way to store a dlsym() result in a function pointer: through a void * lvalue. */
#define LIBVIRT_DL_ENTRY(f) { #f, (void **) &sym_##f },
static const struct {
        const char *name;
        void **ptr;
} libvirt_functions[] = {
        LIBVIRT_DL_FUNCTIONS(LIBVIRT_DL_ENTRY)
};
#undef LIBVIRT_DL_ENTRY

static void *libvirt_dl;

int dlopen_libvirt(void) {
        /* A host without libvirt and with libvirt machines would retry at every reconnect:
         * say it loudly once. */
        static bool warned;
        void *resolved[ELEMENTSOF(libvirt_functions)];
        void *dl;
        int level;

        if (libvirt_dl)
                return 0;
        level = warned ? LOG_DEBUG : LOG_ERR;

        /* RTLD_NOW: a missing symbol of libvirt's own dependencies shows here, not at the first
         * call. RTLD_NODELETE: libvirt registers atexit handlers and thread-local destructors,
         * and keeps global state from virInitialize(); it must never be unmapped. */
        dl = dlopen(LIBVIRT_SONAME, RTLD_NOW | RTLD_NODELETE);
        if (!dl) {
                warned = true;
                return log_full_errno(level, ELIBACC, "Cannot load %s (%s), needed for libvirt's machines: %s.",
                                      LIBVIRT_SONAME, dlerror(), LIBVIRT_PACKAGE_HINT);
        }
        for (size_t i = 0; i < ELEMENTSOF(libvirt_functions); i++) {
                (void) dlerror();
                resolved[i] = dlsym(dl, libvirt_functions[i].name);
                if (!resolved[i]) {
                        const char *e = dlerror();
                        warned = true;
                        log_full(level, "%s has no %s (%s): a libvirt older than the one autoballoond was "
                                 "built for.", LIBVIRT_SONAME, libvirt_functions[i].name, e ?: "NULL");
                        (void) dlclose(dl);
                        return -ELIBBAD;
                }
        }
        /* All or none: no sym_ pointer is set before every one resolved. */
        for (size_t i = 0; i < ELEMENTSOF(libvirt_functions); i++)
                *libvirt_functions[i].ptr = resolved[i];
        libvirt_dl = dl;
        log_debug("Loaded %s.", LIBVIRT_SONAME);
        return 0;
}
