/* libvirt's client library, loaded at run time (see libvirt-dl.h). */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>

#include "libvirt-dl.h"
#include "log.h"

/* ldd no longer shows libvirt, so say it where packaging tools look: an ELF note of the "dlopen()
 * metadata for ELF files" convention (owner "FDO", type 0x407c0c0a, a JSON array in a 4-byte
 * aligned .note.dlopen section), read by package-notes' dlopen-notes and systemd-analyze
 * dlopen-metadata to add the package as a recommended dependency. */
#define LIBVIRT_DL_NOTE_JSON                                                                    \
        "[{\"feature\":\"libvirt\",\"description\":\"the balloon of the VMs libvirt runs\","  \
        "\"priority\":\"recommended\",\"soname\":[\"" LIBVIRT_SONAME "\"]}]"
__attribute__((used, section(".note.dlopen"), aligned(4)))
static const struct {
        uint32_t n_namesz, n_descsz, n_type;
        char name[4];
        char desc[sizeof(LIBVIRT_DL_NOTE_JSON)];   /* padded to 4 bytes by the struct's alignment */
} libvirt_dl_note = {
        .n_namesz = sizeof("FDO"),
        .n_descsz = sizeof(LIBVIRT_DL_NOTE_JSON),
        .n_type = UINT32_C(0x407c0c0a),
        .name = "FDO",
        .desc = LIBVIRT_DL_NOTE_JSON,
};

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
