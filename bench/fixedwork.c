/*
 * Overhead benchmark workload for bench/overhead.sh: a fixed amount of
 * CPU work with deep frame-pointer stacks, in PROCESSES processes.
 *
 *   fixedwork ITERATIONS [PROCESSES]
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define FORCE_FRAME() __asm__ volatile("" : : "r"(__builtin_frame_address(0)) : "memory")

static volatile uint64_t sink;

NOINLINE static uint64_t leaf(uint64_t x) {
    FORCE_FRAME();
    for (int i = 0; i < 256; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

NOINLINE static uint64_t descend(uint64_t x, int depth) {
    FORCE_FRAME();
    if (depth == 0) return leaf(x);
    return descend(x + 1, depth - 1) + 1;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 1000000;
    int processes = argc > 2 ? atoi(argv[2]) : 2;
    for (int p = 0; p < processes; p++) {
        if (fork() == 0) {
            for (long i = 0; i < iterations; i++) sink += descend((uint64_t)i, 24);
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {}
    return 0;
}
