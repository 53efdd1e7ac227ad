"""`corral container exec|attach|logs --follow|restart --container|watch` against a real server.

The interactive exec runs the CLI on a pty of its own (its controlling terminal), as a user's shell would.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest
from corral_server import CORRAL, CorralServer
from groups import container, delete, get, group, put, state, view, wait_for

RG = "it-cli-access"


@pytest.fixture
def shell_group(corral: CorralServer) -> Iterator[str]:
    client = corral.client()
    name = f"cli-{time.monotonic_ns() % 10**8}"
    put(client, RG, name, group(container("main", ["sleep", "3600"]), container("side", ["sleep", "3600"])))
    try:
        yield name
    finally:
        delete(client, RG, name)


class PtyProcess:
    """A command whose stdin/stdout/stderr and controlling terminal is a pty we hold the master of."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)

        def become_terminal_owner() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=become_terminal_owner)
        os.close(slave)
        self.seen = ""

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to the terminal's foreground process group: the CLI.
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {needle!r}; output so far: {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                assert data, f"the process ended before printing {needle!r}; output: {self.seen!r}"
                self.seen += data.decode(errors="replace")
        return self.seen

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the process did not end"
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_exec_on_a_tty_is_an_interactive_terminal(corral: CorralServer, shell_group: str) -> None:
    term = PtyProcess([CORRAL, "container", "exec", "-g", RG, "-n", shell_group, "--exec-command", "sh"],
                      corral.env, rows=30, cols=90)
    try:
        term.expect("# ")  # the remote shell's prompt
        term.send("stty size; echo marker-$((6*7))\r")
        term.expect("marker-42")
        assert "30 90" in term.seen  # the remote pty got the local terminal's size
        term.resize(50, 132)
        time.sleep(0.5)  # SIGWINCH reaches the CLI asynchronously
        term.send("stty size\r")
        term.expect("50 132")
        # Raw mode: Ctrl-C travels to the remote shell instead of killing the local CLI.
        term.send("sleep 300\r")
        time.sleep(0.5)
        term.send("\x03")
        term.send("echo still-here\r")
        term.expect("still-here")
        assert term.proc.poll() is None
        term.send("exit 5\r")
        assert term.wait() == 5
    finally:
        term.close()


def test_exec_without_a_tty_or_with_arguments_runs_to_completion(corral: CorralServer, shell_group: str) -> None:
    res = corral.cli("container", "exec", "-g", RG, "-n", shell_group, "--", "ls", "-l", "/", check=False)
    assert res.returncode == 0 and "bin" in res.stdout
    res = corral.cli("container", "exec", "-g", RG, "-n", shell_group, "--container-name", "side",
                     "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "out\n", "err")
    # --exec-command without a terminal (stdin is not a tty here): same, non-interactive.
    res = corral.cli("container", "exec", "-g", RG, "-n", shell_group, "--exec-command", "sh -c 'exit 4'",
                     check=False)
    assert res.returncode == 4


def test_attach_prints_output_as_it_comes(corral: CorralServer) -> None:
    client = corral.client()
    name = "cli-attach"
    put(client, RG, name, group(container("ticker", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])))
    proc = subprocess.Popen([CORRAL, "container", "attach", "-g", RG, "-n", name], env=corral.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert all(line.strip() == b"tick" for line in lines), lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        delete(client, RG, name)


def test_logs_follow_prints_lines_while_the_container_runs(corral: CorralServer) -> None:
    client = corral.client()
    name = "cli-follow"
    script = "for i in $(seq 1 20); do echo line-$i; sleep 0.2; done"
    put(client, RG, name, group(container("job", ["sh", "-c", script]), restartPolicy="Never"))
    proc = subprocess.Popen([CORRAL, "container", "logs", "-g", RG, "-n", name, "--follow"], env=corral.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("line-")
        # This line arrived through the one streaming request while the container still runs.
        assert state(get(client, RG, name), "job") == "Running"
        rest = proc.stdout.read()  # ends when the group has finished
        assert proc.wait(30) == 0
        n = int(first.strip().split("-")[1])
        assert (first + rest).split() == [f"line-{i}" for i in range(n, 21)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        delete(client, RG, name)


def test_logs_tail_and_timestamps(corral: CorralServer) -> None:
    client = corral.client()
    name = "cli-tail"
    put(client, RG, name, group(container("job", ["sh", "-c", "for i in 1 2 3 4 5; do echo n$i; done"]),
                                restartPolicy="Never"))
    try:
        wait_for(client, RG, name, lambda g: g["properties"]["instanceView"]["state"] == "Succeeded")
        assert corral.cli("container", "logs", "-g", RG, "-n", name, "--tail", "2").stdout == "n4\nn5\n"
        out = corral.cli("container", "logs", "-g", RG, "-n", name, "--tail", "1", "--timestamps").stdout
        stamp, text = out.strip().split(" ")
        assert text == "n5" and stamp.startswith("20") and "T" in stamp
    finally:
        delete(client, RG, name)


def test_restart_one_container_from_the_cli(corral: CorralServer, shell_group: str) -> None:
    client = corral.client()
    before = get(client, RG, shell_group)
    corral.cli("container", "restart", "-g", RG, "-n", shell_group, "--container", "side")
    g = wait_for(client, RG, shell_group, lambda g: view(g, "side")["restartCount"] == 1 and state(g, "side") ==
                 "Running")
    assert view(g, "main")["restartCount"] == 0
    assert view(g, "main")["currentState"]["startTime"] == view(before, "main")["currentState"]["startTime"]
    res = corral.cli("container", "restart", "-g", RG, "-n", shell_group, "--container", "nope", check=False)
    assert res.returncode != 0 and "nope" in res.stderr


def test_watch_prints_changes_until_interrupted(corral: CorralServer) -> None:
    client = corral.client()
    rg = "it-cli-watch"
    human = subprocess.Popen([CORRAL, "container", "watch", "-g", rg], env=corral.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    machine = subprocess.Popen([CORRAL, "container", "watch", "-g", rg, "-n", "watched", "-o", "json"],
                               env=corral.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # both have connected (CLI start-up) before the group exists
        put(client, rg, "watched", group(container("w", ["sh", "-c", "sleep 0.5; exit 2"]), restartPolicy="Never"))
        wait_for(client, rg, "watched", lambda g: g["properties"]["instanceView"]["state"] == "Failed")
        delete(client, rg, "watched")
        time.sleep(1)
        for p in (human, machine):
            p.send_signal(signal.SIGINT)
        out_h, _ = human.communicate(timeout=10)
        out_m, _ = machine.communicate(timeout=10)
        assert human.returncode == 0 and machine.returncode == 0
        assert f"{rg}/watched: container w Running" in out_h
        assert f"{rg}/watched: group Failed" in out_h
        assert f"{rg}/watched: deleted" in out_h
        msgs = [json.loads(line) for line in out_m.splitlines()]
        ends = [m for m in msgs if m["event"] == "container" and m["state"] == "Terminated"]
        assert ends and ends[-1]["exitCode"] == 2
        assert msgs[-1]["event"] == "deleted"
    finally:
        for p in (human, machine):
            if p.poll() is None:
                p.kill()
                p.wait()
        delete(client, rg, "watched")
