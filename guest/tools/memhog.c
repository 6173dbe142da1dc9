/* memhog: an anonymous-memory workload for the test guests.
 *
 * memhog MiB [PASSES [HOLD_SECONDS]]: maps MiB of anonymous memory, writes every page
 * PASSES times (default 1), holds it, frees it. Prints progress and, on success,
 * "MEMHOG-OK MiB seconds". Exit 1 if the mapping fails; an OOM kill shows as a signal. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096UL
#define PROGRESS_EVERY_MIB 64UL

static double now_sec(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned long mib, passes, hold_sec, len, off, pass;
	double t0;
	char *p;

	if (argc < 2) {
		fprintf(stderr, "usage: memhog MiB [PASSES [HOLD_SECONDS]]\n");
		return 2;
	}
	mib = strtoul(argv[1], NULL, 0);
	passes = argc > 2 ? strtoul(argv[2], NULL, 0) : 1;
	hold_sec = argc > 3 ? strtoul(argv[3], NULL, 0) : 0;
	len = mib << 20;
	setvbuf(stdout, NULL, _IOLBF, 0);

	t0 = now_sec();
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("memhog: mmap");
		return 1;
	}
	for (pass = 0; pass < passes; pass++)
		for (off = 0; off < len; off += PAGE_BYTES) {
			p[off] = (char)(pass + (off >> 12) + 1);
			if (pass == 0 && off && off % (PROGRESS_EVERY_MIB << 20) == 0)
				printf("memhog: %lu MiB at %.2fs\n", off >> 20, now_sec() - t0);
		}
	printf("MEMHOG-OK %lu MiB %.2f s\n", mib, now_sec() - t0);
	if (hold_sec)
		sleep(hold_sec);
	munmap(p, len);
	return 0;
}
