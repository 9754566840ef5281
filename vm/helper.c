/* Test helper for the VM scenarios: operations busybox cannot do.
 * Built statically by `cargo xtask vm-test`; runs inside the VM only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

static char path[64];
static volatile int stop;

static void *flip(void *arg) {
    const char **names = arg;
    int i = 0;
    while (!stop) {
        strcpy(path, names[i++ & 1]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: vmhelper setuid-regain | race SAFE PROTECTED N | write-then FILE MARKER | ptrace PID | write FILE\n");
        return 2;
    }
    if (!strcmp(argv[1], "setuid-regain")) {
        /* Drop to 1000 keeping saved uid 0, then try to become root again. */
        if (setresuid(1000, 1000, 0) != 0) { perror("drop"); return 3; }
        int rc = setresuid(-1, 0, -1);
        printf("regain=%d errno=%d euid=%d\n", rc, rc ? errno : 0, (int)geteuid());
        return rc == 0 ? 0 : 1;
    }
    if (!strcmp(argv[1], "race") && argc == 5) {
        /* A thread swaps the path buffer while this one opens it for
         * writing: a check on the user-memory path could be fooled. */
        const char *names[2] = { argv[2], argv[3] };
        strcpy(path, argv[2]);
        pthread_t t;
        pthread_create(&t, NULL, flip, names);
        int n = atoi(argv[4]), protected_opens = 0;
        for (int i = 0; i < n; i++) {
            int fd = open(path, O_WRONLY | O_APPEND);
            if (fd >= 0) {
                char real[128] = {0}, link[64];
                snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
                if (readlink(link, real, sizeof real - 1) > 0 && !strcmp(real, argv[3])) {
                    protected_opens++;
                    (void)!write(fd, "raced\n", 6);
                }
                close(fd);
            }
        }
        stop = 1;
        pthread_join(t, NULL);
        printf("protected_opens=%d\n", protected_opens);
        return protected_opens == 0 ? 0 : 1;
    }
    if (!strcmp(argv[1], "write-then") && argc == 4) {
        /* Open FILE for writing, then (if still alive) create MARKER. */
        int fd = open(argv[2], O_WRONLY | O_APPEND);
        if (fd >= 0) (void)!write(fd, "x\n", 2);
        int m = open(argv[3], O_WRONLY | O_CREAT, 0644);
        if (m >= 0) close(m);
        return 0;
    }
    if (!strcmp(argv[1], "ptrace") && argc == 3) {
        long rc = ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0);
        printf("attach=%ld errno=%d\n", rc, rc ? errno : 0);
        return rc == 0 ? 1 : 0;
    }
    if (!strcmp(argv[1], "write-at") && argc == 4) {
        /* openat() relative to a directory fd. */
        int dfd = open(argv[2], O_RDONLY | O_DIRECTORY);
        int fd = openat(dfd, argv[3], O_WRONLY | O_APPEND);
        if (fd < 0) { printf("errno=%d\n", errno); return 1; }
        (void)!write(fd, "dirfd\n", 6);
        return 0;
    }
    if (!strcmp(argv[1], "write") && argc == 3) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) { printf("errno=%d\n", errno); return 1; }
        (void)!write(fd, "helper\n", 7);
        close(fd);
        return 0;
    }
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
