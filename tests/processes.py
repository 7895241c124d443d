"""Linux /proc helpers for tests: which processes belong to a Ray instance, what they listen on."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs whose environment has `name=value` (every process a command started inherits it).
    A Python process that renames itself with setproctitle overwrites its environment as /proc
    shows it: find those as `descendants` of a marked one."""
    wanted = f"{name}={value}".encode()
    pids = []
    for proc in _other_processes():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if wanted in environ:
            pids.append(int(proc.name))
    return pids


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a driver's private Ray instance is started as its children)."""
    children: dict[int, list[int]] = {}
    for proc in _other_processes():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def running(pids: set[int] | list[int]) -> list[int]:
    """The PIDs among `pids` that still run (a zombie has ended, only its exit status is left)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def command_line(pid: int) -> str:
    """A process's command line as one string (Ray's workers rename theirs: "ray::RayTrainWorker...")."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _other_processes() -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]


def listening_addresses(pids: list[int]) -> dict[int, set[str]]:
    """{pid: {"127.0.0.1:port", ...}}: the TCP sockets each process listens on."""
    listeners = _listening_sockets()
    found: dict[int, set[str]] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # ended meanwhile
        for link in filter(None, map(_link, fds)):
            if link.startswith("socket:[") and link[8:-1] in listeners:
                found.setdefault(pid, set()).add(listeners[link[8:-1]])
    return found


def _link(fd: Path) -> str:
    """What a /proc fd entry points at; "" when it closed meanwhile (in this process: the one
    that listed the directory)."""
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _listening_sockets() -> dict[str, str]:
    """{socket inode: "address:port"} of every listening TCP socket (IPv4 and IPv6)."""
    sockets = {}
    for table, decode in (("/proc/net/tcp", _ipv4), ("/proc/net/tcp6", _ipv6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != _LISTEN:
                continue
            host, port = fields[1].split(":")
            sockets[fields[9]] = f"{decode(host)}:{int(port, 16)}"
    return sockets


def _ipv4(hex_host: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(hex_host)[::-1]))


def _ipv6(hex_host: str) -> str:
    raw = bytes.fromhex(hex_host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four little-endian 32-bit words
    return f"[{ipaddress.IPv6Address(words)}]"


class ListenerWatch:
    """Every TCP listener this process and its descendants (a private Ray instance, its workers)
    open while the block runs, sampled every `interval` seconds from a thread: the listeners a
    run's set-up opens and keeps (Ray Train's process group: the rendezvous store, gloo) are seen."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.interval = interval
        self.seen: dict[int, set[str]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="listener-watch", daemon=True)

    def _watch(self) -> None:
        while True:
            for pid, addresses in listening_addresses([os.getpid(), *descendants(os.getpid())]).items():
                self.seen.setdefault(pid, set()).update(addresses)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "ListenerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def exposed(self) -> dict[int, list[str]]:
        """{pid: addresses beyond loopback} of every process that listened on one."""
        found = {pid: sorted(a for a in addresses if not is_loopback(a)) for pid, addresses in self.seen.items()}
        return {pid: addresses for pid, addresses in found.items() if addresses}


class Watched:
    """A command's merged output, read in a thread (two runs at once must not block on their
    pipes), with waits bounded by silence: a wait fails when the command has printed nothing for
    that long, however long it runs while it prints (a busy machine is slow, not hung)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines, self._new = proc, [], threading.Condition()
        self.last_line_at = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line)
                self.last_line_at = time.monotonic()
                self._new.notify_all()

    def silent_for(self) -> float:
        """Seconds since the command last printed (or started)."""
        return time.monotonic() - self.last_line_at

    def wait_for(self, text: str, silence: float = 300) -> None:
        """Until a line holds `text`; fails if the command ends first or prints nothing for `silence` s."""
        with self._new:
            while not any(text in line for line in self.lines) and self.proc.poll() is None:
                assert self.silent_for() < silence, f"nothing printed for {silence:.0f} s:\n{self.output()[-3000:]}"
                self._new.wait(timeout=1.0)
        assert any(text in line for line in self.lines), f"no {text!r} in:\n{self.output()[-3000:]}"

    def finish(self, silence: float = 600) -> str:
        """The whole output once the command ends; fails if it prints nothing for `silence` s."""
        while True:
            try:
                self.proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                assert self.silent_for() < silence, f"nothing printed for {silence:.0f} s:\n{self.output()[-3000:]}"
        time.sleep(0.5)  # the reader drains the pipe's last lines
        return self.output()

    def output(self) -> str:
        with self._new:
            return "".join(self.lines)
