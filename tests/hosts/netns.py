"""Hosts on one machine: network namespaces on a private bridge, and processes run inside them.

```
with Network.create(["data", "web1"], root=tmp_path) as net:
    data = net.hosts["data"]
    proc = data.spawn(["redis-server", "--bind", data.address], env={...}, name="redis")
    ...
    net.hosts["web1"].kill_all()   # SIGKILL every process of that host
```

Each host is a namespace of its own (`ip netns add`), wired by a veth pair to one bridge in the
root namespace, with an address in 10.231.<n>.0/24 and no default route: what it runs reaches
the other hosts of the same run and the bridge's own address (where the test and its load
balancer run), nothing else. Each process also gets a UTS namespace with
the host's own hostname, as on a real machine. Names carry a random run id, so two runs never
collide, and `close()` removes every namespace, link and process even after a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

#: The private range the runs carve their /24 from; it exists only on the bridges made here.
PRIVATE_PREFIX = "10.231"
LOCK_PATH = Path(tempfile.gettempdir()) / "studio-netns.lock"
#: One file per run naming the process that owns it (run id -> pid).
OWNERS = Path(tempfile.gettempdir()) / "studio-netns-owners"
_RUN_NAME = re.compile(r"^fs([0-9a-f]{6})(?:-|br$|[oi]\d+$)")


def missing_requirements(tools: Sequence[str]) -> str | None:
    """Why hosts cannot be made here (not root, a tool missing), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _subnets_in_use() -> set[int]:
    shown = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    used = set()
    for word in shown.split():
        if word.startswith(f"{PRIVATE_PREFIX}."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


@contextlib.contextmanager
def run_lock() -> Iterator[None]:
    """Held while a run picks its subnet and names, or while abandoned runs are removed."""
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _owner_alive(run_id: str) -> bool:
    try:
        pid = int((OWNERS / run_id).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def remove_abandoned() -> list[str]:
    """Delete namespaces and links of runs whose process is gone (killed before cleaning up).

    Call with the lock held: a run writes its owner file under it before making anything.
    Returns the names removed.
    """
    namespaces = [w for w in _ip("netns", "list", check=False).stdout.split() if "-" in w]
    shown = _ip("-o", "link", check=False).stdout.splitlines()
    links = [line.split()[1].split("@")[0].rstrip(":") for line in shown if len(line.split()) > 1]
    removed: list[str] = []
    for name in [*namespaces, *links]:
        found = _RUN_NAME.match(name)
        if found is None or _owner_alive(found.group(1)):
            continue
        if name in namespaces:
            shown = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in (int(p) for p in shown if p.isdigit()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)
        removed.append(name)
    for run_file in OWNERS.glob("*") if OWNERS.exists() else []:
        if not _owner_alive(run_file.name):
            run_file.unlink(missing_ok=True)
    return removed


@dataclass
class HostProcess:
    """A process started inside a host; its output goes to `log_path`."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Host:
    """One namespace: its name, address, hostname and the processes started in it."""

    netns: str
    address: str
    hostname: str
    folder: Path
    processes: list[HostProcess] = field(default_factory=list)

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], name: str, cwd: Path | None = None
    ) -> HostProcess:
        """Start `argv` inside this host (its network and hostname) in a new session."""
        log_path = self.folder / f"{name}.log"
        # `hostname` inside a fresh UTS namespace: the process sees this host's name only.
        wrapped = [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.hostname,
            *argv,
        ]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                wrapped,
                env=dict(env),
                cwd=cwd or self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = HostProcess(name=name, proc=proc, log_path=log_path)
        self.processes.append(started)
        return started

    def pids(self) -> list[int]:
        """Every process running inside this host's network namespace."""
        shown = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in shown.split() if p.isdigit()]

    def kill_all(self) -> int:
        """SIGKILL every process of this host at once, as a power cut would; returns the count."""
        killed = 0
        for _ in range(5):  # a dying parent may have forked just before
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.1)
        for started in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.proc.wait(timeout=5)
        return killed

    def logs(self, tail: int = 3000) -> str:
        """The last `tail` characters of each process's output, for failure messages."""
        return "\n".join(f"--- {self.hostname}/{p.name}\n{p.log()[-tail:]}" for p in self.processes)


class Network:
    """A bridge in the root namespace and one namespace per host on it (see the module doc)."""

    def __init__(self, run_id: str, subnet: int, root: Path) -> None:
        self.run_id = run_id
        self.subnet = subnet
        self.root = root
        self.bridge = f"fs{run_id}br"
        self.gateway = f"{PRIVATE_PREFIX}.{subnet}.1"
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []

    @classmethod
    def create(cls, roles: Sequence[str], root: Path) -> Network:
        """Make the bridge and a namespace per role (host addresses .10, .11, ...)."""
        run_id = secrets.token_hex(3)
        # Runs started at the same moment must not both pick a free subnet: one at a time
        # chooses and claims it (the bridge's address), then the next one looks.
        with run_lock():
            remove_abandoned()
            OWNERS.mkdir(exist_ok=True)
            (OWNERS / run_id).write_text(str(os.getpid()))
            used = _subnets_in_use()
            free = [n for n in range(2, 255) if n not in used]
            if not free:
                raise RuntimeError(f"every {PRIVATE_PREFIX}.x.0/24 is in use on this machine")
            net = cls(run_id, secrets.choice(free), root)
            try:
                net._add_bridge()
            except BaseException:
                net.close()
                raise
        try:
            net._add_hosts(roles)
        except BaseException:
            net.close()
            raise
        return net

    def _add_bridge(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _add_hosts(self, roles: Sequence[str]) -> None:
        for index, role in enumerate(roles):
            netns = f"fs{self.run_id}-{role}"
            outer, inner = f"fs{self.run_id}o{index}", f"fs{self.run_id}i{index}"
            address = f"{PRIVATE_PREFIX}.{self.subnet}.{10 + index}"
            folder = self.root / role
            folder.mkdir(parents=True, exist_ok=True)
            _ip("netns", "add", netns)
            self.hosts[role] = Host(netns, address, f"{role}-{self.run_id}", folder)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self._links.append(outer)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", netns)
            _ip("-n", netns, "link", "set", inner, "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process of every host, delete the namespaces and links."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.kill_all()
            _ip("netns", "del", host.netns, check=False)
        for link in reversed(self._links):
            _ip("link", "del", link, check=False)
        self.hosts.clear()
        self._links.clear()
        (OWNERS / self.run_id).unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Namespaces or links of this run still present (empty after `close`)."""
        names = _ip("netns", "list", check=False).stdout + _ip("-o", "link", check=False).stdout
        return sorted({w.rstrip(":@") for w in names.split() if f"fs{self.run_id}" in w})

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
