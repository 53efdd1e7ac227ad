/*
 * corral-warm-init: the first process of a warm container (node/runtime/warm.py).
 *
 * crun starts it ahead of any request, from the node's copy (fd 3: crun execs
 * /proc/self/fd/3, so nothing of it is in the container's file system), with every
 * namespace, mount, cgroup, capability and seccomp filter of a real container
 * already in place. It then waits on fd 4 for the command of the container the
 * agent binds it to:
 *
 *     cwd \0 arg0 \0 arg1 \0 ... \0 \0 env0 \0 env1 \0 ... \0
 *
 * and execs it in its own place (same pid, same credentials). fd 5 tells the agent
 * how that went: it closes on exec (success), or carries the reason before exit 127.
 * EOF on fd 4 without a command (the agent discarded it, or died) exits at once:
 * nothing of a user's ever ran. Static, because the image may have no libc or another.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COMMAND (1 << 20)
#define MAX_ITEMS 16384

extern char **environ;

static char *items[MAX_ITEMS];

static int fail(const char *what, const char *arg) {
    dprintf(5, "%s %s: %s", what, arg, strerror(errno));
    return 127;
}

int main(void) {
    static char buf[MAX_COMMAND + 1];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(4, buf + got, MAX_COMMAND - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == MAX_COMMAND) {
            dprintf(5, "the command and environment exceed %d bytes", MAX_COMMAND);
            return 127;
        }
    }
    close(3);
    close(4);
    if (got == 0)
        return 111; /* discarded before any command: nothing ran */
    buf[got] = '\0';
    if (fcntl(5, F_SETFD, FD_CLOEXEC) < 0)
        return 127;
    /* Split into cwd, argv (ends at an empty item) and env (to the end). */
    size_t n_items = 0;
    for (char *p = buf; p < buf + got && n_items < MAX_ITEMS - 2; p += strlen(p) + 1)
        items[n_items++] = p;
    if (n_items < 2) {
        dprintf(5, "malformed command");
        return 127;
    }
    char *cwd = items[0];
    char **argv = &items[1];
    size_t i = 1;
    while (i < n_items && items[i][0] != '\0')
        i++;
    if (i == 1 || i >= n_items) {
        dprintf(5, "malformed command");
        return 127;
    }
    items[i] = NULL; /* argv's end; env follows */
    char **env = &items[i + 1];
    items[n_items] = NULL;
    if (chdir(cwd) < 0)
        return fail("cannot enter the working directory", cwd);
    environ = env; /* execvp searches the container's PATH, not this process's */
    execvp(argv[0], argv);
    return fail("cannot run", argv[0]);
}
