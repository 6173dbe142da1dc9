/* A closer thread for fds whose close() blocks: psi.c's triggers (an RCU grace period each),
 * handed over from the event loop and closed elsewhere, many at once. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Closing an armed trigger waits for an RCU grace period in the kernel (~17 ms measured), so
 * psi_watch_free() never closes on the caller's thread: it hands its fds to async_close(),
 * whose thread closes them, many at once in parallel. async_close_finish() closes what is still
 * queued (in parallel, on the caller's thread) and waits for the closer; fds handed over after
 * it are closed at once. Returns how many fds the closer closed in all. */
void async_close(int fd);
uint64_t async_close_finish(void);
/* Closes n fds from several threads, so their grace periods overlap. */
void close_many(int *fds, size_t n);
