"""The soak row of `charzoo bench`: minutes of mixed, partly hostile load on a real server.

Clients on 127.0.0.1 send valid requests (checked against the answers of the
export loaded here), hostile ones (NaN, values past int32 and float32, a
body over the limit, broken JSON, unknown models), streams (whose chunks
must join to the right answer) and requests whose client walks away; a
third of the way in a corrupt version appears, two thirds in a new good one
is put in place. The server must give no wrong answer and no 5xx, and its
memory must stay flat.
"""

import asyncio
import json
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.loadgen import free_port, wait_for_server

SPECS = [{"prime": prime, "length": 40, "temperature": t, "top_k": k, "seed": seed}
         for seed, (prime, t, k) in enumerate([("the ", 1.0, 0), ("a", 0.7, 5), ("", 0.0, 0),
                                                 ("Once, 2 cats", 1.2, 0)] * 4)]
HOSTILE = [b'{"temperature": NaN}', b'{"top_p": -Infinity}', b'{"top_k": 2147483648}',
           b'{"top_p": 1e-46}', b'{"temperature": 1e39}', b'{"prime": 5}', b'{not json',
           b'{"prime": "' + b"a" * 70_000 + b'"}', b'{"length": 99999999999}']


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def expected_answers(version_dir):
    from serving.model import ExportedModel

    model = ExportedModel(version_dir)
    return [model.sample(s["prime"], s["length"], s["temperature"], s["top_k"], seed=s["seed"])[0]
            for s in SPECS]


def put_in_place(source, model_dir, version, damage=None):
    """Copies an export in as `version`, the way an exporter does: hidden, then renamed."""
    staging = model_dir / f".incoming-{version}"
    shutil.copytree(source, staging)
    if damage:
        damage(staging)
    staging.rename(model_dir / str(version))


def corrupt(version_dir):
    data = next((version_dir / "variables").glob("variables.data-*"))
    raw = bytearray(data.read_bytes())
    raw[::97] = bytes(b ^ 0x55 for b in raw[::97])
    data.write_bytes(bytes(raw))


async def soak(port, seconds, expected, clients=12, seed=0):
    """Runs the mixed load; returns counts and the latencies of valid plain requests."""
    import httpx

    tally = {"valid": 0, "streams": 0, "hostile": 0, "walked_away": 0, "wrong": 0, "5xx": 0,
             "versions_seen": set()}
    latencies, deadline = [], time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}/v1/models/lstm:sample"

    def check(status, version, samples, spec_index):
        """Counts a 5xx, or an answer that is not the right version's answer."""
        if status >= 500:
            tally["5xx"] += 1
            return
        tally["versions_seen"].add(version)
        answer = expected.get(version)
        if status != 200 or answer is None or samples != [answer[spec_index]]:
            tally["wrong"] += 1

    async def client(number):
        rng = random.Random(seed * 1000 + number)
        async with httpx.AsyncClient(timeout=60) as session:
            while time.monotonic() < deadline:
                kind, index = rng.random(), rng.randrange(len(SPECS))
                if kind < 0.55:
                    started = time.perf_counter()
                    response = await session.post(url, json=SPECS[index])
                    latencies.append(time.perf_counter() - started)
                    tally["valid"] += 1
                    body = response.json()
                    check(response.status_code, body.get("version"), body.get("samples"), index)
                elif kind < 0.75:
                    tally["streams"] += 1
                    await stream(session, url, index, check)
                elif kind < 0.92:
                    tally["hostile"] += 1
                    body = rng.choice(HOSTILE)
                    target = url if rng.random() < 0.8 else url.replace("lstm", "no-such-model")
                    response = await session.post(target, content=body,
                                                  headers={"Content-Type": "application/json"})
                    tally["5xx"] += response.status_code >= 500
                    tally["wrong"] += response.status_code not in (404, 413, 422)
                else:
                    tally["walked_away"] += 1
                    try:  # a long request, given up on after 50 ms
                        await asyncio.wait_for(session.post(url, json={"length": 2000}), 0.05)
                    except asyncio.TimeoutError:
                        pass

    await asyncio.gather(*(client(n) for n in range(clients)))
    return tally, latencies


async def stream(session, url, index, check):
    """One streamed request; its chunks must join to the right answer."""
    async with session.stream("POST", url, json={**SPECS[index], "stream": True}) as response:
        text = (await response.aread()).decode()
    if response.status_code != 200:
        return check(response.status_code, None, None, index)
    events = [block.split("\n", 1) for block in text.strip().split("\n\n")]
    chunks = [json.loads(data[6:])["samples"][0] for event, data in events if event == "event: chunk"]
    done = json.loads(events[-1][1][6:]) if events[-1][0] == "event: done" else {}
    check(200, done.get("version"), ["".join(chunks)] if done else None, index)


def soak_rows(models_dir, next_export, seconds, row):
    """Rows of a soak of `seconds` on the `lstm` model in `models_dir`.

    Args:
        models_dir: Path holding `lstm/1`.
        next_export: Path of another export of the same shape, put in as
            version 3 two thirds of the way in (version 2 is a corrupt copy).
        row: `benchmarks.bench.row`.
    """
    model_dir = models_dir / "lstm"
    expected = {1: expected_answers(model_dir / "1"), 3: expected_answers(next_export)}
    port = free_port()
    code = f"from serving.app import serve; serve({str(models_dir)!r}, port={port}, rescan_interval=1.0)"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    peaks = [0, 0]  # before the new version is put in place, and over the whole run
    try:
        wait_for_server(port, server)
        asyncio.run(soak(port, min(seconds, 5), expected))  # warm-up: compile every batch shape
        baseline = rss_kb(server.pid)

        async def run():
            load = asyncio.ensure_future(soak(port, seconds, expected, seed=1))
            started = time.monotonic()
            events = [(seconds / 3, lambda: put_in_place(model_dir / "1", model_dir, 2, corrupt)),
                      (2 * seconds / 3, lambda: put_in_place(next_export, model_dir, 3))]
            while not load.done():
                rss = rss_kb(server.pid)
                peaks[1] = max(peaks[1], rss)
                if events:  # the new version is not in place yet
                    peaks[0] = max(peaks[0], rss)
                if events and time.monotonic() - started >= events[0][0]:
                    await asyncio.to_thread(events.pop(0)[1])
                await asyncio.sleep(0.25)
            return load.result()

        tally, latencies = asyncio.run(run())
        # The new version is compiled before it is swapped in, which under load can outlast
        # the soak: the peak must include the swap, so watch until it has happened.
        swap_deadline = time.monotonic() + 120
        while True:
            peaks[1] = max(peaks[1], rss_kb(server.pid))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                health = json.loads(response.read())
            if health["states"]["lstm"]["version"] == 3 or time.monotonic() > swap_deadline:
                break
            time.sleep(0.25)
        swapped_after = time.monotonic() - swap_deadline + 120
    finally:
        server.terminate()
        server.wait(30)
    latencies.sort()
    def percentile(q):
        return 1000 * latencies[int(q * (len(latencies) - 1))] if latencies else float("nan")

    state = health["states"]["lstm"]
    total = tally["valid"] + tally["streams"] + tally["hostile"] + tally["walked_away"]
    label = f"soak, {seconds:.0f} s of mixed load"
    note = (f"{total} requests: {tally['valid']} valid, {tally['streams']} streams, "
            f"{tally['hostile']} hostile, {tally['walked_away']} abandoned; versions answered "
            f"{sorted(v for v in tally['versions_seen'] if v)}" + ("; corrupt v2 reported failed"
                                                                  if "2" in state["failed"] else ""))
    return [row(f"{label}: wrong answers", float(tally["wrong"]), "requests", target=0.0,
                lower_is_better=True, note=note),
            row(f"{label}: 5xx answers", float(tally["5xx"]), "requests", target=0.0,
                lower_is_better=True),
            row(f"{label}: peak server RSS growth, before the new version", 100 * (peaks[0] - baseline)
                / baseline, "%", target=10.0, lower_is_better=True,
                note=f"{baseline / 1024:.0f} MB after warm-up; a corrupt version appeared meanwhile"),
            row(f"{label}: peak server RSS growth, whole run", 100 * (peaks[1] - baseline) / baseline, "%",
                target=10.0, lower_is_better=True,
                note=(f"v3 served {swapped_after:.0f} s after the load ended" if state["version"] == 3
                      else "v3 NOT served within 120 s of the load's end")
                + ("; its weights run in v1's graph" if state.get("graph_of") == 1 else "; loaded as a graph of its own")),
            row(f"{label}: p99 latency of valid requests", percentile(0.99), "ms", "p50",
                percentile(0.5))]
