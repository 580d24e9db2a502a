"""Two "hosts" on this machine: network namespaces joined by veth pairs on a bridge (iproute2).

Each host has its own loopback and one address on a private /24; the bridge end in the root namespace
(``.254``) is the only way out, and there the test forwards the database and broker ports to the real
Postgres and Redis on 127.0.0.1. A process in one host reaches the other only at the address that host
published, so a worker that published a wrong address (or none) cannot form a training group.

Needs root (or CAP_NET_ADMIN) and ``ip``; fails, never skips, when they are missing: this is how
multi-node training is tested here (issue 13).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    netns: str
    address: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass(frozen=True)
class Network:
    hosts: list[Host]
    gateway: str  # the root namespace's address on the bridge, where the forwarded ports listen


class _Forwarder:
    """TCP forwarding from ``gateway:port`` to ``127.0.0.1:port`` in a background event loop."""

    def __init__(self, gateway: str, ports: list[int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.base_events.Server] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="netns-forwarder")
        self.thread.start()
        for port in ports:
            fut = asyncio.run_coroutine_threadsafe(self._serve(gateway, port), self.loop)
            self.servers.append(fut.result(timeout=10))

    async def _serve(self, gateway: str, port: int) -> asyncio.base_events.Server:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        return await asyncio.start_server(handle, gateway, port)

    def close(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def two_hosts(forward_ports: list[int]) -> Iterator[Network]:
    if shutil.which("ip") is None:
        raise RuntimeError("`ip` (iproute2) is needed for the two-host test: apt-get install iproute2")
    tag = uuid.uuid4().hex[:5]
    subnet = f"10.{random.randint(100, 250)}.{random.randint(1, 250)}"
    bridge = f"bwbr{tag}"
    hosts = [Host(f"bw-{tag}-{name}", f"{subnet}.{i + 1}") for i, name in enumerate("ab")]
    made_ns: list[str] = []
    forwarder = None
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, host in enumerate(hosts):
            inside, outside = f"bw{tag}{i}i", f"bw{tag}{i}o"
            _ip("netns", "add", host.netns)
            made_ns.append(host.netns)
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", inside)
            _ip("-n", host.netns, "link", "set", inside, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        forwarder = _Forwarder(f"{subnet}.254", forward_ports)
        yield Network(hosts, f"{subnet}.254")
    finally:
        if forwarder is not None:
            forwarder.close()
        for ns in made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # its veth ends go with it
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
