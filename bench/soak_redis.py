"""The soak's Redis: one server, or a three-primary Redis Cluster, each behind cuttable proxies.

Both give the soak the same handles: the URL the gateways use, ``cut()``/``restore()`` (every
connection refused, then accepted again), ``kill()``/``start_again()`` (a server killed with its
data and started empty: on a cluster, one node in turn, which keeps its slots through
``nodes.conf``) and ``live_slots()`` (concurrency slots still alive, read past the proxies).

A cluster client follows ``CLUSTER SLOTS`` and ``MOVED`` to the addresses the nodes announce,
so each node announces its proxy's port (``--cluster-announce-port``): every byte between a
gateway and any node goes through a proxy the soak can cut. The cluster bus stays direct.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

import redis
from redis.cluster import RedisCluster

from tests.support.redis_cluster import RedisClusterNodes
from tests.support.servers import free_port, stop_process
from tests.support.tcp_proxy import ThreadedTcpProxy
from tests.support.waiting import wait_until


class SoakRedis(Protocol):
    url: str

    def cut(self) -> None: ...
    def restore(self) -> None: ...
    def kill(self) -> str: ...
    def start_again(self) -> None: ...
    def live_slots(self, account_ids: list[str]) -> dict[str, int]: ...
    def close(self) -> None: ...


def _slots_alive(client: redis.Redis | RedisCluster, account_ids: list[str]) -> dict[str, int]:
    seconds, micros = client.time()  # a cluster client asks one node
    now_us = int(seconds) * 1_000_000 + int(micros)
    return {a: int(client.zcount(f"gw:rl:{{{a}}}:conc", f"({now_us}", "+inf"))
            for a in account_ids}


class RedisServer:
    """A private ``redis-server`` (no persistence) on a free port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on the PATH (apt-get install redis-server)")
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)

        def answering() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answering, timeout=30, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def kill(self) -> None:
        """SIGKILL: its state is gone (it keeps none on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class SingleRedis:
    """One ``redis-server`` behind one proxy."""

    def __init__(self, directory: Path) -> None:
        self.server = RedisServer(directory)
        self.server.start()
        self.proxy = ThreadedTcpProxy("127.0.0.1", self.server.port).__enter__()
        self.url = f"redis://127.0.0.1:{self.proxy.port}/0"

    def cut(self) -> None:
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()

    def kill(self) -> str:
        self.server.kill()
        return "redis-server killed"

    def start_again(self) -> None:
        self.server.start()

    def live_slots(self, account_ids: list[str]) -> dict[str, int]:
        return _slots_alive(redis.Redis(port=self.server.port), account_ids)

    def close(self) -> None:
        self.proxy.__exit__(None, None, None)
        self.server.stop()


class ClusterRedis:
    """A three-primary Redis Cluster, each node behind its own proxy (see the module doc)."""

    def __init__(self, directory: Path) -> None:
        self.nodes = RedisClusterNodes(directory)
        self.proxies = [ThreadedTcpProxy("127.0.0.1", port).__enter__()
                        for port in self.nodes.ports]
        self.nodes.announce = {port: proxy.port
                               for port, proxy in zip(self.nodes.ports, self.proxies, strict=True)}
        self._next = itertools.cycle(self.nodes.ports)
        self._down: int | None = None
        try:
            for port in self.nodes.ports:
                self.nodes.start_node(port)
            wait_until(self.nodes.answering, timeout=60, what="cluster nodes answering PING")
            self.nodes.create()
            self.nodes.wait_healthy()
        except BaseException:
            self.close()
            raise
        self.url = f"redis+cluster://127.0.0.1:{self.proxies[0].port}"

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()

    def kill(self) -> str:
        self._down = next(self._next)
        self.nodes.stop_node(self._down, kill=True)
        return f"cluster node :{self._down} killed (a third of the slots, its data gone)"

    def start_again(self) -> None:
        if self._down is not None:
            self.nodes.start_node(self._down)
            self._down = None
            self.nodes.wait_healthy()

    def live_slots(self, account_ids: list[str]) -> dict[str, int]:
        client = RedisCluster(host="127.0.0.1", port=self.nodes.ports[0])
        try:
            return _slots_alive(client, account_ids)
        finally:
            client.close()

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.__exit__(None, None, None)
        for port in list(self.nodes.processes):
            self.nodes.stop_node(port)


def soak_redis(directory: Path, *, cluster: bool) -> SoakRedis:
    return ClusterRedis(directory) if cluster else SingleRedis(directory)

