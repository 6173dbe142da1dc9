/* Closing fds off the event loop: an armed PSI trigger's close waits for an RCU grace period in
 * the kernel. See async-close.h. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "async-close.h"
#include "util.h"

/* Closing an armed trigger waits for an RCU grace period in the kernel (~17 ms measured here;
 * psi_trigger_destroy() synchronizes). 3,000 triggers closed one after another made a daemon
 * with 1,000 VMs take 38 s to exit; on the event loop, a VM going away blocked it ~50 ms and a
 * trigger knob changed on the Manager blocked it for every VM's three triggers. So trigger fds
 * are never closed on the loop: they go to a closer thread, and many at once are closed from
 * up to 64 threads so that their grace periods overlap (320 triggers on distinct cgroups:
 * 0.18 s instead of 5.3 s). */
#define CLOSE_THREADS 64

typedef struct CloseSlice {
        int *fds;
        size_t n;
} CloseSlice;

static void *close_slice(void *p) {
        CloseSlice *s = p;
        for (size_t i = 0; i < s->n; i++)
                close(s->fds[i]);
        return NULL;
}

void close_many(int *fds, size_t n) {
        pthread_t threads[CLOSE_THREADS];
        CloseSlice slices[CLOSE_THREADS];
        size_t n_threads = MIN((size_t) CLOSE_THREADS, n), started = 0;

        if (n == 1) {
                close(fds[0]);
                return;
        }
        for (size_t t = 0; t < n_threads; t++) {
                size_t begin = n * t / n_threads, end = n * (t + 1) / n_threads;
                slices[t] = (CloseSlice) { fds + begin, end - begin };
                if (pthread_create(&threads[started], NULL, close_slice, &slices[t]) == 0)
                        started++;
                else
                        close_slice(&slices[t]);   /* no thread: close them here */
        }
        for (size_t t = 0; t < started; t++)
                pthread_join(threads[t], NULL);
}

/* The closer: one thread, started at the first fd handed to it. It takes everything queued
 * at once. Threads inherit the loop's blocked signals (main() blocks them first). */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_t thread;
        int *fds;
        size_t n, allocated;
        bool started, finished;
        uint64_t closed;
} closer = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static void *closer_main(void *arg) {
        pthread_mutex_lock(&closer.lock);
        for (;;) {
                while (closer.n == 0 && !closer.finished)
                        pthread_cond_wait(&closer.wake, &closer.lock);
                if (closer.n == 0)
                        break;                     /* finished, nothing left */
                int *batch = closer.fds;
                size_t n = closer.n;
                closer.fds = NULL;
                closer.n = closer.allocated = 0;
                pthread_mutex_unlock(&closer.lock);
                close_many(batch, n);
                free(batch);
                pthread_mutex_lock(&closer.lock);
                closer.closed += n;
        }
        pthread_mutex_unlock(&closer.lock);
        return NULL;
}

void async_close(int fd) {
        bool queued = false;

        if (fd < 0)
                return;
        pthread_mutex_lock(&closer.lock);
        if (!closer.finished) {
                if (!closer.started && pthread_create(&closer.thread, NULL, closer_main, NULL) == 0)
                        closer.started = true;
                if (closer.started && closer.n == closer.allocated) {
                        size_t a = MAX((size_t) 16, closer.allocated * 2);
                        int *p = realloc(closer.fds, a * sizeof(int));
                        if (p) {
                                closer.fds = p;
                                closer.allocated = a;
                        }
                }
                if (closer.started && closer.n < closer.allocated) {
                        closer.fds[closer.n++] = fd;
                        queued = true;
                        pthread_cond_signal(&closer.wake);
                }
        }
        pthread_mutex_unlock(&closer.lock);
        if (!queued)
                close(fd);                         /* no thread or no memory: here, slowly */
}

uint64_t async_close_finish(void) {
        int *batch;
        size_t n;
        bool started;
        uint64_t closed;

        pthread_mutex_lock(&closer.lock);
        closer.finished = true;
        batch = closer.fds;
        n = closer.n;
        closer.fds = NULL;
        closer.n = closer.allocated = 0;
        started = closer.started;
        pthread_cond_signal(&closer.wake);
        pthread_mutex_unlock(&closer.lock);

        close_many(batch, n);                  /* beside whatever batch the thread holds */
        free(batch);
        if (started)
                pthread_join(closer.thread, NULL);
        pthread_mutex_lock(&closer.lock);
        closed = closer.closed + n;
        closer.started = false;
        pthread_mutex_unlock(&closer.lock);
        return closed;
}
