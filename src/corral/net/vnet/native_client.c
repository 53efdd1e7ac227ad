/*
 * corral-vnet, native fast path: hand a CNI call to the node's network service.
 *
 * The same client as client.py (read it for the wire format), for runtimes that
 * start the plugin once per call: Python's own start-up (~8 ms) is most of what
 * the Python launcher costs. Anything short of a whole answer from the service
 * (no service, a service in other namespaces, a service that died mid-call)
 * execs the Python launcher installed beside this binary (FALLBACK_NAME), with
 * the same stdin, which does the work itself. Built by `make venv`
 * (corral/native.py); without a C compiler the Python launcher is
 * installed in its place.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/corral/vnet.sock"
#define SOCKET_ENV "CORRAL_VNET_SOCKET"
#define CONF_KEY "\"serviceSocket\""
#define FALLBACK_NAME ".corral-vnet-python"

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

static void put(struct buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) exit(70);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void read_all(int fd, struct buf *b) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n > 0) put(b, chunk, (size_t)n);
        else if (n == 0 || errno != EINTR) return;
    }
}

static int write_all(int fd, const char *p, size_t n, int sock) {
    while (n > 0) {
        /* A service that declines answers before reading: EPIPE then, not a SIGPIPE that kills us. */
        ssize_t w = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The config's top-level "serviceSocket" string; 1 found, 0 absent, -1 unusual (let Python read it). */
static int conf_socket(const struct buf *in, char *out, size_t size) {
    const char *at = memmem(in->data, in->len, CONF_KEY, strlen(CONF_KEY));
    if (!at) return 0;
    const char *end = in->data + in->len, *p = at + strlen(CONF_KEY);
    if (memmem(p, (size_t)(end - p), CONF_KEY, strlen(CONF_KEY))) return -1;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= end || *p++ != ':') return -1;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= end || *p++ != '"') return -1;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (!q || memchr(p, '\\', (size_t)(q - p)) || (size_t)(q - p) >= size || q == p) return -1;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = 0;
    return 1;
}

/* Ask the service; 0 with *rc and the answer's body in `ans` when it did the work. */
static int forward(const char *path, const struct buf *in, struct buf *ans, int *rc) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(s);
        return -1;
    }
    struct buf req = {0};
    put(&req, "CNI1\n", 5);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CNI_", 4) == 0) put(&req, *e, strlen(*e) + 1);
    put(&req, "", 1);
    put(&req, in->data ? in->data : "", in->len);
    int bad = write_all(s, req.data, req.len, 1) != 0 || shutdown(s, SHUT_WR) != 0;
    free(req.data);
    if (bad) {
        close(s);
        return -1;
    }
    read_all(s, ans);
    close(s);
    char *nl = ans->data ? memchr(ans->data, '\n', ans->len) : NULL;
    if (!nl || nl == ans->data || ans->data[0] == '-') return -1;
    char *stop;
    long code = strtol(ans->data, &stop, 10);
    if (stop != nl) return -1;
    *rc = (int)code;
    return (int)(nl - ans->data) + 1;
}

/* Exec the Python launcher beside this binary, its stdin the bytes already read. */
static void fall_back(const struct buf *in, char **argv) {
    char self[PATH_MAX], launcher[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) _exit(70);
    self[n] = 0;
    if (snprintf(launcher, sizeof launcher, "%s/%s", dirname(self), FALLBACK_NAME) >= (int)sizeof launcher)
        _exit(70);
    int fd = memfd_create("corral-vnet-stdin", MFD_CLOEXEC);
    if (fd < 0 || write_all(fd, in->data ? in->data : "", in->len, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 ||
        dup2(fd, 0) != 0)
        _exit(70);
    argv[0] = launcher;
    setenv("CORRAL_VNET_NO_SERVICE", "1", 1); /* the service said no (or is not there): don't ask again */
    execv(launcher, argv);
    fprintf(stderr, "corral-vnet: cannot run %s: %s\n", launcher, strerror(errno));
    _exit(70);
}

int main(int argc, char **argv) {
    (void)argc;
    struct buf in = {0}, ans = {0};
    read_all(0, &in);
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
    int found = conf_socket(&in, path, sizeof path);
    if (found < 0) fall_back(&in, argv);
    if (found == 0) {
        const char *env = getenv(SOCKET_ENV);
        snprintf(path, sizeof path, "%s", env && *env ? env : DEFAULT_SOCKET);
    }
    int rc, body = forward(path, &in, &ans, &rc);
    if (body < 0) fall_back(&in, argv);
    if (write_all(1, ans.data + body, ans.len - (size_t)body, 0) != 0) return 70;
    return rc;
}
