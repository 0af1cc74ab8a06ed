/* busy SECONDS [NAME [DEPTH]]: main -> outer_loop -> hot_leaf, pure CPU,
 * for SECONDS of wall time; NAME (if given) becomes the thread name (comm);
 * DEPTH (if given) puts DEPTH recursive frames (deep) between main and
 * outer_loop. Built by the recorder tests with frame pointers. */
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#define FORCE_FRAME() __asm__ volatile("" : : "r"(__builtin_frame_address(0)))

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long hot_leaf(unsigned long n)
{
	unsigned long x = 0;
	FORCE_FRAME();
	for (unsigned long i = 0; i < n; i++) {
		x += i * i;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

__attribute__((noinline)) void outer_loop(double seconds)
{
	struct timespec start, now;
	FORCE_FRAME();
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		sink += hot_leaf(1000000);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
}

__attribute__((noinline)) void deep(int depth, double seconds)
{
	FORCE_FRAME();
	if (depth > 0)
		deep(depth - 1, seconds);
	else
		outer_loop(seconds);
	sink++;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.0;
	if (argc > 2)
		prctl(PR_SET_NAME, argv[2], 0, 0, 0);
	deep(argc > 3 ? atoi(argv[3]) : 0, seconds);
	return 0;
}
