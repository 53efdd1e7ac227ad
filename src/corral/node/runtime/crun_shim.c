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
 *    When CORRAL_WARM_INIT names the warm init (node/runtime/warm.py), it is opened as
 *    fd 3, the FIFOs CORRAL_WARM_COMMAND and CORRAL_WARM_STATUS as fds 4 and 5, and
 *    crun is told to pass all three to the container (--preserve-fds 3).
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
#define WARM_FDS 3

/* The warm init's three fds (see the top); 1: set up, 0: not a warm container, -1: failed. */
static int warm_fds(void) {
    const char *init = getenv("CORRAL_WARM_INIT");
    if (init == NULL || *init == '\0')
        return 0;
    const char *command = getenv("CORRAL_WARM_COMMAND"), *status = getenv("CORRAL_WARM_STATUS");
    if (command == NULL || status == NULL)
        return -1;
    /* The agent holds the command FIFO's writer and the status FIFO's reader, so neither open blocks;
     * opened in turn and moved high first, so no open lands on a target fd already placed. */
    int fds[WARM_FDS];
    const char *paths[WARM_FDS] = {init, command, status};
    int modes[WARM_FDS] = {O_RDONLY, O_RDONLY, O_WRONLY};
    for (int i = 0; i < WARM_FDS; i++) {
        fds[i] = open(paths[i], modes[i] | O_NONBLOCK);
        int high = fds[i] < 0 ? -1 : fcntl(fds[i], F_DUPFD, 10);
        if (fds[i] >= 0)
            close(fds[i]);
        int flags = high < 0 ? -1 : fcntl(high, F_GETFL);
        if (flags < 0 || fcntl(high, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            fprintf(stderr, "corral-crun-shim: cannot open %s for the warm container: %s\n", paths[i],
                    strerror(errno));
            return -1;
        }
        fds[i] = high;
    }
    for (int i = 0; i < WARM_FDS; i++) {
        if (dup2(fds[i], 3 + i) < 0)
            return -1;
        close(fds[i]);
    }
    unsetenv("CORRAL_WARM_INIT");
    unsetenv("CORRAL_WARM_COMMAND");
    unsetenv("CORRAL_WARM_STATUS");
    return 1;
}

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
    int warm = warm_fds();
    if (warm < 0)
        return 1;
    char **out = calloc((size_t)argc + 4, sizeof *out);
    if (out == NULL)
        return 1;
    int n = 0, rewritten = !create_runs;
    for (int i = first; i < argc; i++) {
        if (!rewritten && strcmp(argv[i], "create") == 0) {
            out[n++] = "run";
            out[n++] = "--detach";
            if (warm) {
                out[n++] = "--preserve-fds";
                out[n++] = "3";
            }
            rewritten = 1;
            continue;
        }
        out[n++] = argv[i];
    }
    execvp(out[0], out);
    fprintf(stderr, "corral-crun-shim: cannot run %s: %s\n", out[0], strerror(errno));
    return 127;
}
