"""A small HTTP load generator, for the service rows of `charzoo bench`.

On a 2-core machine the load generator shares the cores with the server, so
it must cost little: one kept-alive HTTP/1.1 connection per client, written
with bare asyncio streams (0.06 ms of CPU per request here; httpx took ~1.4
ms, a third of what the server spent).
"""

import asyncio
import json
import os
import socket
import time
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def post_json(connection, path, payload):
    """One HTTP/1.1 POST on a kept-alive connection; returns (status, body bytes)."""
    reader, writer = connection
    body = json.dumps(payload).encode()
    writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in head[1:]
                  if line.lower().startswith("content-length:"))
    return int(head[0].split()[1]), await reader.readexactly(length)


async def requests(port, path, clients, per_client, length, num_samples=1):
    """Latencies (s), errors and wall time of `clients` clients sending `per_client`
    sample requests each to `path` on 127.0.0.1:`port` (a non-200 answer is an error)."""
    latencies, errors = [], 0

    async def client(number):
        nonlocal errors
        connection = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(per_client):
                payload = {"prime": "the ", "length": length, "num_samples": num_samples,
                           "seed": number * per_client + i}
                started = time.perf_counter()
                try:
                    status, _ = await post_json(connection, path, payload)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    connection[1].close()
                    connection = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            connection[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors, time.perf_counter() - started


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_server(port, server, seconds=180):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if json.loads(response.read())["models"] >= 1:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("the server did not come up")
        time.sleep(0.2)
