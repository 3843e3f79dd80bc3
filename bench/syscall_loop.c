/* The cost of one traced operation, in a loop: what bench/kernel_cost.py times with the daemon
 * detached and attached. Usage: syscall_loop MODE N [PATH]; prints ns per operation (wall,
 * CLOCK_MONOTONIC over the whole loop).
 *   getppid  one untraced system call: the syscall slow path every task takes while any
 *            syscall tracepoint is enabled;
 *   open     openat(PATH) + close: the open tracepoints (enter, exit) of a process that is
 *            not Python;
 *   mmap     mmap(PATH's descriptor, one page, PROT_READ|PROT_EXEC) + munmap: the mmap
 *            tracepoint, which looks at executable mappings. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s getppid|open|mmap N [PATH]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    const char *path = argc > 3 ? argv[3] : "/etc/hostname";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    long long t = now_ns();
    if (!strcmp(mode, "getppid")) {
        for (long i = 0; i < n; i++)
            syscall(SYS_getppid);
    } else if (!strcmp(mode, "open")) {
        for (long i = 0; i < n; i++) {
            int f = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
            if (f < 0) {
                perror("openat");
                return 1;
            }
            close(f);
        }
    } else if (!strcmp(mode, "mmap")) {
        for (long i = 0; i < n; i++) {
            void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) {
                perror("mmap");
                return 1;
            }
            munmap(m, 4096);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%.1f\n", (double)(now_ns() - t) / n);
    return 0;
}
