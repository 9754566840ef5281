/* Test helper for the VM scenarios: operations busybox cannot do.
 * Built statically by `cargo xtask vm-test`; the host tests build it too
 * (tests/tests/uring.rs). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>
#include "uring.h"

/* An xattr value from the command line: "caps:net_raw" is file
 * capabilities (vfs_cap_data revision 2, cap_net_raw permitted and
 * effective), anything else its own bytes. */
static const void *xattr_value(const char *spec, unsigned *len) {
    static unsigned caps[5];
    if (!strcmp(spec, "caps:net_raw")) {
        caps[0] = 0x02000000 | 1; /* VFS_CAP_REVISION_2 | EFFECTIVE */
        caps[1] = 1u << 13;       /* CAP_NET_RAW permitted */
        *len = sizeof caps;
        return caps;
    }
    *len = strlen(spec);
    return spec;
}

/* setxattr PATH NAME VALUE | fsetxattr PATH NAME VALUE: the syscalls;
 * prints res=N (-errno on failure). */
static int xattr_main(int argc, char **argv) {
    unsigned len;
    const void *value = xattr_value(argv[4], &len);
    int res;
    if (!strcmp(argv[1], "setxattr")) {
        res = syscall(SYS_setxattr, argv[2], argv[3], value, len, 0);
    } else {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { printf("open=%d\n", -errno); return 1; }
        res = syscall(SYS_fsetxattr, fd, argv[3], value, len, 0);
    }
    if (res < 0) res = -errno;
    printf("res=%d\n", res);
    return res >= 0 ? 0 : 1;
}

/* uring OP ARGS: the file operation through io_uring; prints res=N. */
static int uring_main(int argc, char **argv) {
    int rc = ring_init();
    if (rc < 0) { printf("setup=%d\n", rc); return 3; }
    const char *op = argv[2];
    struct io_uring_sqe s;
    int res = 0;
    if ((!strcmp(op, "open") || !strcmp(op, "open2")) && argc == 4) {
        int flags = O_WRONLY | O_CREAT | O_TRUNC;
        struct open_how how = {.flags = flags, .mode = 0644};
        if (!strcmp(op, "open")) {
            s = sqe(IORING_OP_OPENAT, AT_FDCWD, argv[3], 0644, 0);
            s.open_flags = flags;
        } else {
            s = sqe(IORING_OP_OPENAT2, AT_FDCWD, argv[3], sizeof how, (unsigned long)&how);
        }
        res = ring_run(&s);
        if (res >= 0) {
            s = sqe(IORING_OP_WRITE, res, "uring\n", 6, 0);
            printf("write=%d ", ring_run(&s));
            close(res);
        }
    } else if (!strcmp(op, "read") && argc == 4) {
        /* A read-only open, then a read of what it opened; prints the
         * bytes read (bytes=N) before the open's result. */
        static char buf[4096];
        s = sqe(IORING_OP_OPENAT, AT_FDCWD, argv[3], 0, 0);
        s.open_flags = O_RDONLY;
        res = ring_run(&s);
        if (res >= 0) {
            s = sqe(IORING_OP_READ, res, buf, sizeof buf, 0);
            printf("bytes=%d ", ring_run(&s));
            close(res);
        }
    } else if (!strcmp(op, "rename") && argc == 5) {
        s = sqe(IORING_OP_RENAMEAT, AT_FDCWD, argv[3], AT_FDCWD, (unsigned long)argv[4]);
        res = ring_run(&s);
    } else if (!strcmp(op, "unlink") && argc == 4) {
        s = sqe(IORING_OP_UNLINKAT, AT_FDCWD, argv[3], 0, 0);
        res = ring_run(&s);
    } else if (!strcmp(op, "mkdir") && argc == 4) {
        /* 0777, as mkdir(1) asks: the umask narrows it. */
        s = sqe(IORING_OP_MKDIRAT, AT_FDCWD, argv[3], 0777, 0);
        res = ring_run(&s);
    } else if ((!strcmp(op, "setxattr") || !strcmp(op, "fsetxattr")) && argc == 6) {
        unsigned len;
        const void *value = xattr_value(argv[5], &len);
        int fd = -1;
        if (!strcmp(op, "setxattr")) {
            s = sqe(IORING_OP_SETXATTR, 0, argv[4], len, (unsigned long)value);
            s.addr3 = (unsigned long)argv[3];
        } else {
            fd = open(argv[3], O_RDONLY);
            if (fd < 0) { printf("open=%d\n", -errno); return 1; }
            s = sqe(IORING_OP_FSETXATTR, fd, argv[4], len, (unsigned long)value);
        }
        res = ring_run(&s);
        if (fd >= 0) close(fd);
    } else if (!strcmp(op, "symlink") && argc == 5) {
        s = sqe(IORING_OP_SYMLINKAT, AT_FDCWD, argv[3], 0, (unsigned long)argv[4]);
        res = ring_run(&s);
    } else if (!strcmp(op, "link") && argc == 5) {
        s = sqe(IORING_OP_LINKAT, AT_FDCWD, argv[3], AT_FDCWD, (unsigned long)argv[4]);
        res = ring_run(&s);
    } else if (!strcmp(op, "truncate") && argc == 5) {
        int fd = open(argv[3], O_WRONLY);
        if (fd < 0) { printf("open=%d\n", -errno); return 1; }
        s = sqe(IORING_OP_FTRUNCATE, fd, NULL, 0, strtoul(argv[4], NULL, 10));
        res = ring_run(&s);
    } else if (!strcmp(op, "create-storm") && argc == 5) {
        /* N file creations in DIR, each a separate io_uring open. */
        long n = strtol(argv[4], NULL, 10);
        char name[4096];
        for (long i = 0; i < n; i++) {
            snprintf(name, sizeof name, "%s/u%ld", argv[3], i);
            s = sqe(IORING_OP_OPENAT, AT_FDCWD, name, 0644, 0);
            s.open_flags = O_WRONLY | O_CREAT | O_TRUNC;
            res = ring_run(&s);
            if (res < 0) break;
            close(res);
        }
    } else {
        fprintf(stderr, "usage: uring open|open2|read PATH | rename OLD NEW | unlink PATH | mkdir PATH | "
                        "setxattr|fsetxattr PATH NAME VALUE | "
                        "symlink TARGET LINK | link OLD NEW | truncate PATH LEN | "
                        "create-storm DIR N\n");
        return 2;
    }
    printf("res=%d\n", res);
    return res >= 0 ? 0 : 1;
}

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

static long bpf_call(int cmd, union bpf_attr *attr) {
    return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* Ask for a pinned map for writing, then read-only; then for every map
 * on the system by id, for writing, counting the refusals. */
static int bpf_access(const char *pin) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.pathname = (unsigned long)pin;
    long rw = bpf_call(BPF_OBJ_GET, &a);
    int rw_errno = rw < 0 ? errno : 0;
    a.file_flags = BPF_F_RDONLY;
    long ro = bpf_call(BPF_OBJ_GET, &a);
    int refused = 0, opened = 0;
    __u32 id = 0;
    for (;;) {
        union bpf_attr n;
        memset(&n, 0, sizeof(n));
        n.start_id = id;
        if (bpf_call(BPF_MAP_GET_NEXT_ID, &n)) break;
        id = n.next_id;
        union bpf_attr g;
        memset(&g, 0, sizeof(g));
        g.map_id = id;
        long fd = bpf_call(BPF_MAP_GET_FD_BY_ID, &g);
        if (fd >= 0) { opened++; close(fd); }
        else if (errno == EPERM) refused++;
    }
    printf("rw=%s errno=%d ro=%s refused_by_id=%d opened_by_id=%d\n",
           rw >= 0 ? "ok" : "refused", rw_errno, ro >= 0 ? "ok" : "refused", refused, opened);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: vmhelper setuid-regain | race SAFE PROTECTED N | write-then FILE MARKER | create-then-noatime WATCHED OTHER MARKER | ptrace PID | write FILE | write-at DIR NAME | reopen FILE | by-handle FILE | execveat PROG ARGV... | memfd-exec PROG ARGV... | setxattr|fsetxattr PATH NAME VALUE | uring OP ARGS... | bpf-access PIN\n");
        return 2;
    }
    if (!strcmp(argv[1], "uring") && argc >= 3) return uring_main(argc, argv);
    if (!strcmp(argv[1], "bpf-access") && argc == 3) return bpf_access(argv[2]);
    if ((!strcmp(argv[1], "setxattr") || !strcmp(argv[1], "fsetxattr")) && argc == 5)
        return xattr_main(argc, argv);
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
    if (!strcmp(argv[1], "create-then-noatime") && argc == 5) {
        /* Open WATCHED read-only with O_CREAT (recorded from its own
         * arguments, refused by a read rule), then, as nobody, OTHER
         * with O_NOATIME (refused before any LSM hook: nothing to
         * report), then create MARKER: the event after both. */
        int c = open(argv[2], O_RDONLY | O_CREAT, 0644);
        int c_errno = c < 0 ? errno : 0;
        if (setresuid(65534, 65534, 65534) != 0) { perror("setresuid"); return 3; }
        int n = open(argv[3], O_RDONLY | O_NOATIME);
        int n_errno = n < 0 ? errno : 0;
        int m = open(argv[4], O_WRONLY | O_CREAT, 0644);
        printf("create=%d noatime=%d marker=%d\n", c_errno, n_errno, m >= 0);
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
    if (!strcmp(argv[1], "reopen") && argc == 3) {
        /* O_PATH needs no permission to open; re-opening it for writing
         * through /proc/self/fd must still be refused. */
        int p = open(argv[2], O_PATH);
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", p);
        int fd = open(proc, O_WRONLY | O_TRUNC);
        printf("opath=%d reopen=%d errno=%d\n", p >= 0, fd, fd < 0 ? errno : 0);
        if (fd >= 0) (void)!write(fd, "evil\n", 5);
        return fd < 0 ? 0 : 1;
    }
    if (!strcmp(argv[1], "by-handle") && argc == 3) {
        /* open_by_handle_at names no path at all. */
        struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
        h->handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, argv[2], h, &mount_id, 0) != 0) {
            printf("handle=-1 errno=%d\n", errno);
            return 1;
        }
        int mfd = open("/", O_RDONLY | O_DIRECTORY);
        int fd = open_by_handle_at(mfd, h, O_WRONLY | O_TRUNC);
        printf("handle=0 open=%d errno=%d\n", fd, fd < 0 ? errno : 0);
        if (fd >= 0) (void)!write(fd, "evil\n", 5);
        return fd < 0 ? 0 : 1;
    }
    if (!strcmp(argv[1], "execveat") && argc >= 4) {
        /* execveat(fd, "", AT_EMPTY_PATH): the program named by an fd. */
        int fd = open(argv[2], O_PATH | O_CLOEXEC);
        syscall(SYS_execveat, fd, "", &argv[3], (char *[]){NULL}, AT_EMPTY_PATH);
        printf("execveat=-1 errno=%d\n", errno);
        return 1;
    }
    if (!strcmp(argv[1], "memfd-exec") && argc >= 4) {
        /* Copy a program into an anonymous memory file and run that. */
        int src = open(argv[2], O_RDONLY);
        int mfd = memfd_create("payload", MFD_CLOEXEC);
        char buf[65536];
        ssize_t n;
        while ((n = read(src, buf, sizeof buf)) > 0) (void)!write(mfd, buf, n);
        /* Run it read-only: kernels before 6.11 refuse to run a file that
         * is open for writing (ETXTBSY). */
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", mfd);
        int ro = open(proc, O_RDONLY | O_CLOEXEC);
        close(mfd);
        fexecve(ro, &argv[3], (char *[]){NULL});
        printf("fexecve=-1 errno=%d\n", errno);
        return 1;
    }
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
