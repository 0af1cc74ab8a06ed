/*
 * Benchmark workload for bench/run.sh: a multi-process mix of deep,
 * varied frame-pointer call stacks (many distinct stacks) and kernel-heavy
 * system calls, running for a fixed time.
 *
 *   workload SECONDS [PROCESSES]
 *
 * Built with -O1 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer so
 * perf's frame-pointer unwinding sees every user frame.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
/* Keeps a frame in functions GCC would otherwise leave frameless. */
#define FORCE_FRAME() __asm__ volatile("" : : "r"(__builtin_frame_address(0)) : "memory")

static volatile int stop;
static volatile uint64_t sink;

typedef uint64_t (*step_fn)(uint64_t, int);
static step_fn steps[16];

NOINLINE static uint64_t leaf_work(uint64_t x) {
    FORCE_FRAME();
    for (int i = 0; i < 64; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

NOINLINE static uint64_t dispatch(uint64_t x, int depth) {
    FORCE_FRAME();
    if (depth <= 0) return leaf_work(x);
    x = x * 2862933555777941757ULL + 3037000493ULL;
    return steps[(x >> 60) & 15](x, depth - 1) + 1;
}

#define STEP(n) \
    NOINLINE static uint64_t step_##n(uint64_t x, int depth) { \
        FORCE_FRAME(); \
        return dispatch(x ^ (n * 0x9e3779b97f4a7c15ULL), depth) + n; \
    }
STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)

NOINLINE static void compute_loop(uint64_t seed) {
    while (!stop) {
        /* Depth 8..28: up to 16^depth distinct stacks, ~30 frames deep. */
        int depth = 8 + (int)(seed % 21);
        sink += dispatch(seed, depth);
        seed = seed * 6364136223846793005ULL + 1;
    }
}

NOINLINE static void read_random(int fd, char *buf) {
    if (read(fd, buf, 65536) < 0) perror("read");
}

NOINLINE static void send_file(int in, int out) {
    off_t offset = 0;
    if (sendfile(out, in, &offset, 1 << 20) < 0) perror("sendfile");
}

NOINLINE static void stat_files(void) {
    static const char *paths[] = {"/usr/bin", "/usr/lib", "/etc/passwd", "/proc/self/status"};
    struct stat st;
    for (int i = 0; i < 4; i++) stat(paths[i], &st);
}

NOINLINE static void syscall_loop(int kind) {
    char *buf = malloc(65536);
    int urandom = open("/dev/urandom", O_RDONLY);
    int null = open("/dev/null", O_WRONLY);
    char path[] = "/tmp/fgp-bench-XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    memset(buf, 'x', 65536);
    for (int i = 0; i < 16; i++) if (write(file, buf, 65536) < 0) perror("write");
    while (!stop) {
        switch (kind % 3) {
        case 0: read_random(urandom, buf); break;
        case 1: send_file(file, null); break;
        default: stat_files(); break;
        }
    }
}

static void on_alarm(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    int processes = argc > 2 ? atoi(argv[2]) : 6;
    step_fn table[16] = {step_0, step_1, step_2, step_3, step_4, step_5, step_6, step_7,
                         step_8, step_9, step_10, step_11, step_12, step_13, step_14, step_15};
    memcpy(steps, table, sizeof table);
    for (int p = 0; p < processes; p++) {
        if (fork() == 0) {
            signal(SIGALRM, on_alarm);
            alarm(seconds);
            /* Two of three processes compute, one makes system calls. */
            if (p % 3 == 2) syscall_loop(p / 3);
            else compute_loop(0x1234567 + p);
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {}
    return 0;
}
