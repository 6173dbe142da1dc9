/* memhog: an anonymous-memory workload for the test guests.
 *
 * memhog [-f FILE -w MiB] MiB [PASSES [HOLD_SECONDS]]
 *
 * Grows a heap of MiB anonymous memory 8 MiB at a time (as a program's heap grows, so
 * that the kernel's overcommit heuristic never refuses it up front), writes every page
 * PASSES times (default 1), holds it, frees it. With -f, after every 8 MiB touched it
 * also re-reads the first -w MiB of
 * FILE (buffered): a program with a hot file working set (its data, its binary) and a
 * growing heap, which is what thrashes when reclaim evicts the cache to feed the heap.
 * Prints progress and, on success, "MEMHOG-OK MiB SECONDS REREAD_MiB". Exit 1 if the
 * mapping or a read fails; a guest OOM kill shows as death by signal. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096UL
#define PROGRESS_EVERY_MIB 64UL
#define REREAD_EVERY_MIB 8UL
#define READ_CHUNK_BYTES (256UL << 10)
#define HEAP_CHUNK_BYTES (REREAD_EVERY_MIB << 20)

static double now_sec(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int reread(int fd, unsigned long bytes, char *buf)
{
	unsigned long off;
	ssize_t n;

	for (off = 0; off < bytes; off += n) {
		n = pread(fd, buf, READ_CHUNK_BYTES, off);
		if (n < 0) {
			perror("memhog: pread");
			return -1;
		}
		if (n == 0)	/* the file is smaller than the working set */
			break;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long mib, passes, hold_sec, len, off, pass, ws_bytes = 0, reread_mib = 0;
	const char *file = NULL;
	static char buf[READ_CHUNK_BYTES];
	int opt, fd = -1;
	double t0;
	char **chunks, *p;

	while ((opt = getopt(argc, argv, "f:w:")) != -1) {
		switch (opt) {
		case 'f': file = optarg; break;
		case 'w': ws_bytes = strtoul(optarg, NULL, 0) << 20; break;
		default: goto usage;
		}
	}
	if (optind >= argc || (file && !ws_bytes))
		goto usage;
	mib = strtoul(argv[optind], NULL, 0);
	passes = optind + 1 < argc ? strtoul(argv[optind + 1], NULL, 0) : 1;
	hold_sec = optind + 2 < argc ? strtoul(argv[optind + 2], NULL, 0) : 0;
	len = mib << 20;
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (file) {
		fd = open(file, O_RDONLY);
		if (fd < 0) {
			perror("memhog: open");
			return 1;
		}
	}
	t0 = now_sec();
	len = (len + HEAP_CHUNK_BYTES - 1) / HEAP_CHUNK_BYTES * HEAP_CHUNK_BYTES;
	chunks = calloc(len / HEAP_CHUNK_BYTES, sizeof(*chunks));
	if (!chunks)
		return 1;
	for (pass = 0; pass < passes; pass++)
		for (off = 0; off < len; off += PAGE_BYTES) {
			if (off % HEAP_CHUNK_BYTES == 0 && !chunks[off / HEAP_CHUNK_BYTES]) {
				p = mmap(NULL, HEAP_CHUNK_BYTES, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
				if (p == MAP_FAILED) {
					perror("memhog: mmap");
					return 1;
				}
				chunks[off / HEAP_CHUNK_BYTES] = p;
			}
			p = chunks[off / HEAP_CHUNK_BYTES];
			p[off % HEAP_CHUNK_BYTES] = (char)(pass + (off >> 12) + 1);
			if (off % HEAP_CHUNK_BYTES == 0 && fd >= 0) {
				if (reread(fd, ws_bytes, buf))
					return 1;
				reread_mib += ws_bytes >> 20;
			}
			if (pass == 0 && off && off % (PROGRESS_EVERY_MIB << 20) == 0)
				printf("memhog: %lu MiB at %.2fs\n", off >> 20, now_sec() - t0);
		}
	printf("MEMHOG-OK %lu MiB %.2f s %lu\n", mib, now_sec() - t0, reread_mib);
	if (hold_sec)
		sleep(hold_sec);
	for (off = 0; off < len; off += HEAP_CHUNK_BYTES)
		munmap(chunks[off / HEAP_CHUNK_BYTES], HEAP_CHUNK_BYTES);
	return 0;
usage:
	fprintf(stderr, "usage: memhog [-f FILE -w MiB] MiB [PASSES [HOLD_SECONDS]]\n");
	return 2;
}
