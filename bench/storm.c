/* Syscall storms for `cargo xtask bench`: one kind of syscall, N times.
 *   storm open  N FILE   open(O_RDONLY) + close
 *   storm write N DIR    open(O_WRONLY|O_CREAT|O_TRUNC) + write 64 B + close
 *   storm exec  N        fork + execve /bin/true + wait
 *   storm chmod N FILE   chmod alternating 0644 / 0600 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[2]);
    const char *mode = argv[1];
    char buf[64];
    memset(buf, 'x', sizeof buf);
    if (!strcmp(mode, "open")) {
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
    } else if (!strcmp(mode, "chmod")) {
        for (long i = 0; i < n; i++) if (chmod(argv[3], (i & 1) ? 0600 : 0644)) return 1;
    } else return 2;
    return 0;
}
