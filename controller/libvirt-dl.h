/* libvirt's client library, loaded at run time by the first libvirt machine (dlopen), so that a
 * daemon without libvirt machines never maps it and the ~60 libraries it pulls in. */
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* The soname autoballoond was built against, and where to get it when it is missing. */
#define LIBVIRT_SONAME "libvirt.so.0"
#define LIBVIRT_PACKAGE_HINT "install libvirt0 (Debian, Ubuntu) or libvirt-libs (Fedora)"

/* Every libvirt function autoballoond calls, in one list: a pointer sym_NAME of NAME's own type
 * each, resolved by dlopen_libvirt(). Call them as sym_NAME(...): only the headers are used at
 * build time, so a call to a function not listed here is a link error, not a silent new
 * dependency. */
#define LIBVIRT_DL_FUNCTIONS(X)                         \
        X(virConnectClose)                              \
        X(virConnectDomainEventDeregisterAny)           \
        X(virConnectDomainEventRegisterAny)             \
        X(virConnectIsAlive)                            \
        X(virConnectOpen)                               \
        X(virConnectRegisterCloseCallback)              \
        X(virConnectSetKeepAlive)                       \
        X(virConnectUnregisterCloseCallback)            \
        X(virDomainFree)                                \
        X(virDomainGetMaxMemory)                        \
        X(virDomainGetName)                             \
        X(virDomainGetState)                            \
        X(virDomainGetUUID)                             \
        X(virDomainGetXMLDesc)                          \
        X(virDomainLookupByUUID)                        \
        X(virDomainMemoryStats)                         \
        X(virDomainSetMemoryFlags)                      \
        X(virDomainSetMemoryStatsPeriod)                \
        X(virEventRegisterImpl)                         \
        X(virGetLastErrorCode)                          \
        X(virGetLastErrorMessage)                       \
        X(virInitialize)                                \
        X(virSetErrorFunc)

#define LIBVIRT_DL_DECLARE(f) extern typeof(f) *sym_##f;
LIBVIRT_DL_FUNCTIONS(LIBVIRT_DL_DECLARE)
#undef LIBVIRT_DL_DECLARE

/* Loads LIBVIRT_SONAME and resolves every sym_ pointer, all or none; once that succeeded, returns
 * 0 at once (the library stays mapped for good: RTLD_NODELETE). On failure the pointers stay NULL
 * and the reason is logged (at error level the first time, at debug level on later tries):
 * -ELIBACC when the library cannot be loaded (not installed), -ELIBBAD when it lacks a function
 * (older than the libvirt this was built for). A failure is not remembered, so a later call finds
 * a library installed in the meantime. */
int dlopen_libvirt(void);
