/* Syscall storms for `cargo xtask bench`: one kind of syscall, N times.
 *   storm open  N FILE   open(O_RDONLY) + close
 *   storm write N DIR    open(O_WRONLY|O_CREAT|O_TRUNC) + write 64 B + close
 *   storm exec  N        fork + execve /bin/true + wait
 *   storm chmod N FILE   chmod alternating 0644 / 0600
 *   storm unwatched N    getppid: a syscall no rule watches, the fixed
 *                        cost every syscall pays while probes are attached
 *   storm uring-create N DIR   N file creations through io_uring
 *                              (IORING_OP_OPENAT O_CREAT|O_TRUNC) + close
 *   storm rate R SECONDS FILE   chmod at R per second for SECONDS, paced in
 *                               1 ms slices; prints the rate achieved */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../vm/uring.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[2]);
    const char *mode = argv[1];
    char buf[64];
    memset(buf, 'x', sizeof buf);
    if (!strcmp(mode, "uring-create")) {
        if (ring_init() < 0) return 1;
        char path[4096];
        for (long i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/u%ld", argv[3], i & 1023);
            struct io_uring_sqe s = sqe(IORING_OP_OPENAT, AT_FDCWD, path, 0644, 0);
            s.open_flags = O_WRONLY | O_CREAT | O_TRUNC;
            int fd = ring_run(&s);
            if (fd < 0) return 1;
            close(fd);
        }
    } else if (!strcmp(mode, "open")) {
        for (long i = 0; i < n; i++) { int fd = open(argv[3], O_RDONLY); if (fd < 0) return 1; close(fd); }
    } else if (!strcmp(mode, "write")) {
        char path[4096];
        snprintf(path, sizeof path, "%s/w", argv[3]);
        for (long i = 0; i < n; i++) {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) return 1;
            if (write(fd, buf, sizeof buf) != sizeof buf) return 1;
            close(fd);
        }
    } else if (!strcmp(mode, "exec")) {
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { execl("/bin/true", "true", (char *)0); _exit(127); }
            int st; waitpid(p, &st, 0);
        }
    } else if (!strcmp(mode, "unwatched")) {
        for (long i = 0; i < n; i++) if (syscall(SYS_getppid) < 0) return 1;
    } else if (!strcmp(mode, "chmod")) {
        for (long i = 0; i < n; i++) if (chmod(argv[3], (i & 1) ? 0600 : 0644)) return 1;
    } else if (!strcmp(mode, "rate") && argc == 5) {
        /* argv: rate R SECONDS FILE; n is R. */
        double seconds = atof(argv[3]);
        double start = now(), slice = 0.001;
        long done = 0, per_slice = n / 1000 > 0 ? n / 1000 : 1;
        for (long k = 0;; k++) {
            double due = start + k * slice;
            if (due - start >= seconds) break;
            for (long i = 0; i < per_slice; i++, done++)
                if (chmod(argv[4], (done & 1) ? 0600 : 0644)) return 1;
            double wait = due + slice - now();
            if (wait > 0) {
                struct timespec ts = {0, (long)(wait * 1e9)};
                nanosleep(&ts, 0);
            }
        }
        printf("%.0f\n", done / (now() - start));
    } else return 2;
    return 0;
}
