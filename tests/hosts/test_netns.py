"""The namespaces the multi-host test runs on: private, reachable from each other, cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hosts.netns import (
    OWNERS,
    PRIVATE_PREFIX,
    Network,
    missing_requirements,
    run_lock,
)
from tests.hosts.netns import remove_abandoned as remove_abandoned_runs

pytestmark = pytest.mark.skipif(
    missing_requirements([]) is not None, reason=f"{missing_requirements([])}"
)

ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
PROBE = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).close()"


def _in(net: Network, role: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", net.hosts[role].netns, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_hosts_reach_each_other_and_nothing_else(tmp_path: Path) -> None:
    with Network.create(["a", "b"], tmp_path) as net:
        a, b = net.hosts["a"], net.hosts["b"]
        assert a.address.startswith(f"{PRIVATE_PREFIX}.{net.subnet}.")
        routes = _in(net, "a", "ip", "-4", "route").stdout.strip().splitlines()
        # One route, to the run's own /24: no default route, nowhere else to go.
        assert len(routes) == 1, routes
        assert routes[0].startswith(f"{PRIVATE_PREFIX}.{net.subnet}.0/24 dev eth0"), routes
        listener = b.spawn(
            [sys.executable, "-m", "http.server", "--bind", b.address, "8000"], env=ENV, name="http"
        )
        reached = False
        for _ in range(50):
            if _in(net, "a", sys.executable, "-c", PROBE, b.address, "8000").returncode == 0:
                reached = True
                break
            subprocess.run(["sleep", "0.1"], check=False)
        assert reached, listener.log()
        # No route out: the shared services on the machine's loopback are out of reach.
        assert _in(net, "a", sys.executable, "-c", PROBE, "127.0.0.1", "5432").returncode != 0
        named = a.spawn(["hostname"], env=ENV, name="hostname")
        named.proc.wait(timeout=10)
        assert named.log().strip() == a.hostname
        assert b.kill_all() >= 1
        assert b.pids() == []
    assert net.leftovers() == []
    assert not (OWNERS / net.run_id).exists()


def test_runs_whose_process_died_are_removed() -> None:
    abandoned = "fs0dead0"
    subprocess.run(["ip", "netns", "add", f"{abandoned}-data"], check=True)
    subprocess.run(["ip", "link", "add", f"{abandoned}br", "type", "bridge"], check=True)
    with run_lock():
        removed = remove_abandoned_runs()
    assert {f"{abandoned}-data", f"{abandoned}br"} <= set(removed)
    names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names += subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert abandoned not in names
