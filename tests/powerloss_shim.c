/*
 * An interposed file layer for the power-loss test (tests/test_powerloss.py), loaded with
 * LD_PRELOAD into a process that writes a durable warm store.
 *
 * Every write to a file named data.mdb (pwrite, write, writev) is appended to a journal
 * (TC_JOURNAL) after it completed, with its offset and bytes, and so is every fsync /
 * fdatasync of such a file; a write through a descriptor opened with O_DSYNC or O_SYNC is
 * journaled as synced. Writes to a file named ack.marker are journaled as
 * acknowledgements, in the same order. The test rebuilds data.mdb as of any point of the
 * journal: synced writes kept, later unsynced ones kept, dropped or torn.
 *
 * Record: 1 byte type ('W' write, 'D' synced write, 'S' sync, 'A' ack), 8 bytes offset,
 * 4 bytes length (little endian), then the bytes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 4096
static unsigned char kind[MAXFD]; /* 0 untracked, 1 data, 2 data O_DSYNC, 3 ack */
static int jfd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static off_t (*real_lseek)(int, off_t, int);

static void init(void) {
    if (real_pwrite) return;
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_lseek = dlsym(RTLD_NEXT, "lseek");
}

static void jwrite(const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t r = real_write(jfd, c, n);
        if (r <= 0) abort();
        c += r;
        n -= (size_t)r;
    }
}

static void record(char type, uint64_t off, const void *buf, uint32_t len) {
    if (jfd < 0) {
        const char *path = getenv("TC_JOURNAL");
        if (!path) return;
        jfd = real_open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (jfd < 0) abort();
    }
    unsigned char head[13];
    head[0] = (unsigned char)type;
    for (int i = 0; i < 8; i++) head[1 + i] = (unsigned char)(off >> (8 * i));
    for (int i = 0; i < 4; i++) head[9 + i] = (unsigned char)(len >> (8 * i));
    jwrite(head, sizeof head);
    if (len) jwrite(buf, len);
}

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static int track(int fd, const char *path, int flags) {
    if (fd >= 0 && fd < MAXFD) {
        if (ends_with(path, "/data.mdb"))
            kind[fd] = (flags & (O_DSYNC | O_SYNC)) ? 2 : 1;
        else if (ends_with(path, "/ack.marker"))
            kind[fd] = 3;
        else
            kind[fd] = 0;
    }
    return fd;
}

#define OPEN_MODE(flags, mode)                          \
    mode_t mode = 0;                                    \
    if (flags & (O_CREAT | O_TMPFILE)) {                \
        va_list ap;                                     \
        va_start(ap, flags);                            \
        mode = va_arg(ap, mode_t);                      \
        va_end(ap);                                     \
    }

int open(const char *path, int flags, ...) {
    init();
    OPEN_MODE(flags, mode)
    return track(real_open(path, flags, mode), path, flags);
}

int open64(const char *path, int flags, ...) {
    init();
    OPEN_MODE(flags, mode)
    return track(real_open64(path, flags, mode), path, flags);
}

int openat(int dirfd, const char *path, int flags, ...) {
    init();
    OPEN_MODE(flags, mode)
    return track(real_openat(dirfd, path, flags, mode), path, flags);
}

static int tracked(int fd) { return fd >= 0 && fd < MAXFD ? kind[fd] : 0; }

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    init();
    int k = tracked(fd);
    if (!k) return real_pwrite(fd, buf, n, off);
    pthread_mutex_lock(&mu);
    ssize_t r = real_pwrite(fd, buf, n, off);
    if (r > 0) record(k == 2 ? 'D' : k == 3 ? 'A' : 'W', (uint64_t)off, buf, (uint32_t)r);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    int k = tracked(fd);
    if (!k || fd == jfd) return real_write(fd, buf, n);
    pthread_mutex_lock(&mu);
    off_t off = real_lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, buf, n);
    if (r > 0) record(k == 2 ? 'D' : k == 3 ? 'A' : 'W', (uint64_t)off, buf, (uint32_t)r);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    init();
    int k = tracked(fd);
    if (!k) return real_writev(fd, iov, cnt);
    pthread_mutex_lock(&mu);
    off_t off = real_lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_writev(fd, iov, cnt);
    ssize_t left = r;
    for (int i = 0; i < cnt && left > 0; i++) {
        size_t n = iov[i].iov_len < (size_t)left ? iov[i].iov_len : (size_t)left;
        record(k == 2 ? 'D' : 'W', (uint64_t)off, iov[i].iov_base, (uint32_t)n);
        off += (off_t)n;
        left -= (ssize_t)n;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

/* a sync makes durable what was written before it began: it holds the lock, so no
 * write completes while it runs */
static int synced(int fd, int (*real)(int)) {
    int k = tracked(fd);
    if (k != 1 && k != 2) return real(fd);
    pthread_mutex_lock(&mu);
    int r = real(fd);
    if (r == 0) record('S', 0, NULL, 0);
    pthread_mutex_unlock(&mu);
    return r;
}

int fsync(int fd) {
    init();
    return synced(fd, real_fsync);
}

int fdatasync(int fd) {
    init();
    return synced(fd, real_fdatasync);
}

int close(int fd) {
    static int (*real_close)(int);
    if (!real_close) real_close = dlsym(RTLD_NEXT, "close");
    if (fd >= 0 && fd < MAXFD) kind[fd] = 0;
    return real_close(fd);
}
