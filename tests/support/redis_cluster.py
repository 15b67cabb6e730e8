"""A real three-primary Redis Cluster on loopback ports, for the tests that must hold on one.

:func:`redis_cluster` starts three ``redis-server --cluster-enabled yes`` processes (no
persistence, in a directory of their own, on free ports), joins them with
``redis-cli --cluster create … --cluster-replicas 0``, waits until every node reports
``cluster_state:ok``, and stops them afterwards. ``redis-server`` and ``redis-cli`` are installed
wherever the suite's single Redis is (``scripts/test``); when they are missing this fails loudly
with a message saying so — it never skips, so CI cannot silently stop testing the cluster.

:data:`CLUSTER_PORTS` holds the ports of a running cluster, so that the unit-test guard in
tests/conftest.py refuses them as it refuses PostgreSQL's and Redis's own.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import stop_process
from tests.support.waiting import STARTUP_TIMEOUT_S, wait_until

NODES = 3

#: Ports of the cluster nodes started by this process (empty when none runs).
CLUSTER_PORTS: set[int] = set()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: the Redis Cluster tests start a real 3-node cluster "
            "with redis-server and redis-cli (Debian: apt-get install redis-server)")
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_node_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (+10000) is free too: a node needs both, so the
    port must be at most 55535 (the OS's ephemeral ports are often above it)."""
    for _ in range(1000):
        port = random.randint(20000, 45000)
        if taken.isdisjoint({port, port + 10000}) and _bindable(port) \
                and _bindable(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cli(cli: str, port: int, *args: str) -> str:
    done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


class RedisClusterNodes:
    """The node processes of one cluster: their ports, and a way to restart one (a fault)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server, self.cli = _tool("redis-server"), _tool("redis-cli")
        taken: set[int] = set()
        self.ports = [_free_node_port(taken) for _ in range(NODES)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.announce: dict[int, int] = {}
        """Port a node tells clients to use instead of its own (a proxy in front of it)."""

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port``; its nodes.conf keeps its identity and slots
        across a restart, its data is gone (no persistence)."""
        node = self.directory / str(port)
        node.mkdir(parents=True, exist_ok=True)
        with (node / "redis.log").open("ab") as log:
            self.processes[port] = subprocess.Popen(
                [self.server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf"),
                 "--cluster-node-timeout", "2000", "--dir", str(node), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                 *(["--cluster-announce-port", str(self.announce[port])]
                   if port in self.announce else [])],
                stdout=log, stderr=subprocess.STDOUT)
        CLUSTER_PORTS.add(port)

    def stop_node(self, port: int, *, kill: bool = False) -> None:
        process = self.processes.pop(port)
        if kill:
            process.kill()
        stop_process(process)

    def answering(self) -> bool:
        for port, process in self.processes.items():
            if process.poll() is not None:
                log = (self.directory / str(port) / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on port {port} exited:\n{log}")
        return all("PONG" in _cli(self.cli, port, "ping") for port in self.ports)

    def healthy(self) -> bool:
        """Every node answers and says ``cluster_state:ok``."""
        return self.answering() and all(
            "cluster_state:ok" in _cli(self.cli, port, "cluster", "info") for port in self.ports)

    def create(self) -> None:
        created = subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                               f"{created.stderr}")

    def wait_healthy(self) -> None:
        wait_until(self.healthy, timeout=STARTUP_TIMEOUT_S, interval=0.2,
                   what=f"cluster_state:ok on the {NODES} nodes {self.ports}")


@contextmanager
def redis_cluster(directory: Path) -> Iterator[RedisClusterNodes]:
    """A running 3-primary cluster with its data under ``directory``."""
    nodes = RedisClusterNodes(directory)
    try:
        for port in nodes.ports:
            nodes.start_node(port)
        wait_until(nodes.answering, timeout=STARTUP_TIMEOUT_S,
                   what=f"{NODES} cluster nodes answering PING")
        nodes.create()
        nodes.wait_healthy()
        yield nodes
    finally:
        for port in list(nodes.processes):
            nodes.stop_node(port)
        CLUSTER_PORTS.difference_update(nodes.ports)
