/* A minimal io_uring submitter on raw syscalls (no liburing: the VM needs
 * a static binary): one request at a time. Used by vm/helper.c (the VM
 * scenarios and host tests) and bench/storm.c (the io_uring storm). */
#ifndef GUARDRAIL_URING_H
#define GUARDRAIL_URING_H
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>

#ifndef IORING_OP_FTRUNCATE
#define IORING_OP_FTRUNCATE 55
#endif

static int ring_fd;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static int ring_init(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    ring_fd = syscall(425, 4, &p);
    if (ring_fd < 0) return -errno;
    int prot = PROT_READ | PROT_WRITE, map = MAP_SHARED | MAP_POPULATE;
    char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), prot, map, ring_fd,
                    IORING_OFF_SQ_RING);
    char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), prot, map,
                    ring_fd, IORING_OFF_CQ_RING);
    sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), prot, map, ring_fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return -errno;
    sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    sq_array = (unsigned *)(sq + p.sq_off.array);
    cq_head = (unsigned *)(cq + p.cq_off.head);
    cq_tail = (unsigned *)(cq + p.cq_off.tail);
    cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Submit one request, wait for its completion, return its result. */
static int ring_run(const struct io_uring_sqe *req) {
    unsigned tail = *sq_tail, idx = tail & *sq_mask;
    sqes[idx] = *req;
    sq_array[idx] = idx;
    __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(426, ring_fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return -errno;
    unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
    while (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE))
        syscall(426, ring_fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    int res = cqes[head & *cq_mask].res;
    __atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

static struct io_uring_sqe sqe(int op, int fd, const void *addr, unsigned len, unsigned long off) {
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = op;
    s.fd = fd;
    s.addr = (unsigned long)addr;
    s.len = len;
    s.off = off;
    return s;
}

#endif
