/*
 * corral-crun-shim: the runtime conmon runs for crun (runtime/_sys.py: runtime_prefix).
 *
 *   corral-crun-shim [--create-runs] CRUN ARG...
 *
 * 1. When CORRAL_GATE names a FIFO, waits for the node agent's "go" on it (anything
 *    else, or the agent gone, cancels: exit 1, so conmon reports a failed create).
 *    The agent starts conmon first and writes the bundle meanwhile.
 * 2. Enters a mount namespace of its own, a slave of the host's, without the cgroup2
 *    mount: crun refuses hybrid cgroup hosts while cgroup2 holds a controller.
 * 3. Execs CRUN ARG..., with the first "create" turned into "run --detach" under
 *    --create-runs (conmon only knows create; one crun process then starts it too).
 *
 * The same steps as the util-linux unshare + umount + sh prefix it replaces, in one
 * exec instead of four. Built by `make venv` (corral/native.py); without a C
 * compiler that prefix is used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define GATE_ENV "CORRAL_GATE"
#define UNIFIED "/sys/fs/cgroup/unified"

/* 0: go on; -1: cancelled (or no agent to say go). */
static int wait_gate(void) {
    const char *path = getenv(GATE_ENV);
    if (path == NULL || *path == '\0')
        return 0;
    /* Non-blocking open: with the agent gone there is no writer, and read() then says EOF at once
     * instead of open() blocking for ever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "corral-crun-shim: cannot open the start gate %s: %s\n", path, strerror(errno));
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    char buf[3];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    unsetenv(GATE_ENV);
    if (got == sizeof buf && memcmp(buf, "go\n", sizeof buf) == 0)
        return 0;
    fprintf(stderr, "corral-crun-shim: the node agent cancelled this start\n");
    return -1;
}

int main(int argc, char **argv) {
    int first = 1, create_runs = 0;
    if (first < argc && strcmp(argv[first], "--create-runs") == 0) {
        create_runs = 1;
        first++;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: corral-crun-shim [--create-runs] CRUN ARG...\n");
        return 2;
    }
    if (wait_gate() < 0)
        return 1;
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
        fprintf(stderr, "corral-crun-shim: cannot make a mount namespace: %s\n", strerror(errno));
        return 1;
    }
    umount2(UNIFIED, MNT_DETACH); /* no such mount on unified or legacy hosts: nothing to hide */
    char **out = calloc((size_t)argc + 2, sizeof *out);
    if (out == NULL)
        return 1;
    int n = 0, rewritten = !create_runs;
    for (int i = first; i < argc; i++) {
        if (!rewritten && strcmp(argv[i], "create") == 0) {
            out[n++] = "run";
            out[n++] = "--detach";
            rewritten = 1;
            continue;
        }
        out[n++] = argv[i];
    }
    execvp(out[0], out);
    fprintf(stderr, "corral-crun-shim: cannot run %s: %s\n", out[0], strerror(errno));
    return 127;
}
