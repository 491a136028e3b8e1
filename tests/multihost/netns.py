"""Hosts as Linux network namespaces on one bridge: what crosses a network, on one machine.

Each host is a namespace with one veth (`eth0`) plugged into a bridge in the root namespace;
the root namespace has an address on the bridge too, so the test itself talks to the hosts
the way an outside client would. Every name carries the pid of the run that made it, so a
run never collides with another one in progress, and leftovers of a run that died (its pid
gone) are removed by the next.

Faults, with nothing but iproute2 (this kernel has no netfilter and no tc classifiers):
- `cut(host)`: the host's link goes down (its carrier too, on the bridge side).
- `partition(a, b)`: each side's neighbour entry for the other points at a MAC address no
  host has, so their frames are dropped by the network, silently, in both directions, on
  connections already open and on new ones alike; `heal` lets ARP find the real MACs again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

PREFIX = "prmh"  # namespaces: prmh-<pid>-<tag>-<role>; the bridge: prmhb<pid hex>x<tag>
CLONE_NEWNET = 0x40000000
# A locally administered MAC address that no interface here has: frames sent to it go nowhere.
NOWHERE_MAC = "02:00:5e:00:de:ad"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why hosts cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, a bridge and veth pairs"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_processes(ns: str) -> list[int]:
    """SIGKILL every process inside a namespace (all of them are ours: we started them there)."""
    pids = [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def sweep_leftovers() -> None:
    """Remove namespaces and bridges of earlier runs whose process is gone (a crashed run)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}-(\d+)-\w+-\w+", name)
        if m and not _alive(int(m.group(1))):
            kill_namespace_processes(name)
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.search(rf"\d+: ({PREFIX}b([0-9a-f]+)x\w+)[:@]", line)
        if m and not _alive(int(m.group(2), 16)):
            ip("link", "del", m.group(1), check=False)


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no route of the machine already covers: the first three octets."""
    taken = ip("-4", "route", "show", "table", "all", check=False).stdout
    rng = random.Random()
    for _ in range(200):
        prefix = f"10.{rng.randrange(160, 250)}.{rng.randrange(0, 256)}"
        if f"{prefix}." not in taken:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace `ns`; sockets made here stay in it."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")


@dataclass
class Host:
    role: str
    ns: str
    addr: str

    def wrap(self, argv: list[str]) -> list[str]:
        """A command line that runs inside this host."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def mac(self) -> str:
        out = ip("-n", self.ns, "-o", "link", "show", "eth0").stdout
        m = re.search(r"link/ether ([0-9a-f:]{17})", out)
        assert m, out
        return m.group(1)


class Network:
    def __init__(self) -> None:
        sweep_leftovers()
        self.pid = os.getpid()
        self.tag = secrets.token_hex(1)  # interface names: 15 characters at most
        self.bridge = f"{PREFIX}b{self.pid:x}x{self.tag}"
        self.subnet = _free_subnet()
        self.gateway = f"{self.subnet}.1"  # the root namespace: where the test runs
        self.hosts: dict[str, Host] = {}
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, role: str) -> Host:
        index = len(self.hosts)
        host = Host(role, f"{PREFIX}-{self.pid}-{self.tag}-{role}", f"{self.subnet}.{10 + index}")
        outer, inner = f"pv{self.pid:x}{self.tag}{index}", f"pi{self.pid:x}{self.tag}{index}"
        ip("netns", "add", host.ns)
        self.hosts[role] = host  # from here on close() removes it, whatever fails next
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", host.ns)
        ip("-n", host.ns, "link", "set", inner, "name", "eth0")
        ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        ip("-n", host.ns, "link", "set", "lo", "up")
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        return host

    def cut(self, host: Host) -> list[int]:
        """The host vanishes: link down, then every process on it killed. The pids killed."""
        ip("-n", host.ns, "link", "set", "eth0", "down")
        return kill_namespace_processes(host.ns)

    def partition(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            ip("-n", src.ns, "neigh", "replace", dst.addr, "lladdr", NOWHERE_MAC,
               "nud", "permanent", "dev", "eth0")  # fmt: skip

    def heal(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            ip("-n", src.ns, "neigh", "del", dst.addr, "dev", "eth0", check=False)

    def close(self) -> None:
        for host in self.hosts.values():
            kill_namespace_processes(host.ns)
            ip("netns", "del", host.ns, check=False)  # takes its veth pair with it
        ip("link", "del", self.bridge, check=False)
