"""`charzoo bench`: charzoo's speed and memory against peers, on this machine.

Every row compares a measured `value` with a `peer_value` measured in the
same run on the same shapes; `ratio = value / peer_value` and `met` says
whether the ratio reaches `target` (for memory rows, whether the value stays
under it). See `benchmarks.peers` for what the peers are.
"""

import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks import names as names_bench, peers, quality
from benchmarks.loadgen import cpu_seconds, free_port, requests, wait_for_server
from benchmarks.peers import rate
from benchmarks.rows import row
from benchmarks.soak import soak_rows
from benchmarks.train_speed import (ALPHABET, pipeline_rows, recipe, train_rows, variant_rows,
                                    width_rows)
from training.batches import Windows
from training.run_dir import build_model
from training.step import Trainer, make_optimizer

# Work per mode: (repeats, seconds per repeat, sampled characters, service requests per client,
# seconds of soak).
EFFORT = {"tiny": (2, 0.01, 4, 1, 3), "quick": (3, 0.3, 64, 2, 30), "full": (7, 1.5, 512, 8, 180)}
SECTIONS = ("train", "widths", "variants", "pipeline", "sampling", "service", "soak", "memory", "quality",
            "names")
QUICK_SECTIONS = ("train", "pipeline", "sampling", "service", "soak")  # about a minute
# The quality section's rows and seconds per side, full and quick (asked for with --only).
QUALITY = {"quick": (("lstm-256", "arch1"), 60.0), "full": (tuple(quality.ROWS), 300.0)}


def machine():
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "torch": peers.torch_version(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "load_average_1min_at_start": os.getloadavg()[0],
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "TF_"))}}


def memory_probe(characters, steps):
    """Peak RSS (MB) of Windows over a fake text8 of `characters` ids plus arch1 train steps."""
    shapes = recipe("arch1", False)
    ids = np.random.default_rng(0).integers(0, len(ALPHABET), characters, dtype=np.uint8)
    windows = Windows(ids, shapes.batch_size, shapes.unrollings)
    model = build_model(shapes, len(ALPHABET))
    trainer = Trainer(model, make_optimizer(shapes), shapes.clip_norm)
    state = tf.Variable(model.initial_state(shapes.batch_size))
    for index in range(steps):
        inputs, targets = windows[index * (len(windows) // steps)]
        state.assign(trainer.train_step(inputs, targets, state)["state"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_rows(tiny):
    characters = 1_000_000 if tiny else 100_000_000
    code = f"import json, benchmarks.bench as b; print(json.dumps(b.memory_probe({characters}, 20)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    return [row(f"peak RSS: arch1 training, {characters / 1e6:g}M-char corpus", peak, "MB",
                target=1536.0, lower_is_better=True)]


def export_lstm(models_dir, tiny, name="lstm"):
    from training.export import export_model

    shapes = recipe("lstm", tiny)
    model, units = build_model(shapes, len(ALPHABET)), shapes.model["units"]
    path = export_model(model, ALPHABET, {"preset": "lstm", "normalize": "text8"}, models_dir, name)
    return model, units, path


def sampling_rows(model, units, models_dir, effort):
    repeats, seconds, length = effort[0], effort[1], effort[2]
    loaded = tf.saved_model.load(str(next((Path(models_dir) / "lstm").iterdir())))
    signature, score = loaded.signatures["serving_default"], loaded.signatures["score"]

    def export_call(streams):
        primes = tf.constant(["the "] * streams)
        return lambda: signature(prime=primes, length=tf.constant(length), temperature=tf.constant(1.0),
                                 top_k=tf.constant(0), top_p=tf.constant(1.0),
                                 seed=tf.constant(0, tf.int64))["text"].numpy()

    def keras_loop(step):
        carry = [tf.zeros((1, 1), tf.int32), model.initial_state(1)]

        def run():
            carry[0], carry[1] = step(carry[0], carry[1])
            carry[0].numpy()

        return run

    def eager_step(ids, state):
        logits, state = model([ids, state], training=False)
        return tf.random.categorical(logits[:, -1], 1, dtype=tf.int32), state

    one = rate(export_call(1), length, repeats, seconds)
    many = rate(export_call(64), 64 * length, repeats, seconds)
    eager = rate(keras_loop(eager_step), 1, repeats, seconds)
    graph = rate(keras_loop(tf.function(eager_step)), 1, repeats, seconds)
    tutorial = rate(peers.tutorial_sampler(units, ALPHABET), 1, repeats, seconds)
    name = f"sample lstm export, 1 stream ({length} chars/call)"
    rows = [row(name, one, "chars/s", "Python loop: Keras model per char", eager),
            row(name, one, "chars/s", "Python loop: TF tutorial's OneStep, Keras LSTM",
                tutorial, target=10.0),
            row(name, one, "chars/s", "Python loop: bare tf.function step per char", graph)]
    many_name = f"sample lstm export, 64 streams ({length} chars/call)"
    note = None if peers.torch_version() else "torch not importable: skipped"
    torch_speeds = {} if note else peers.torch_rates(
        {"one": ["sample", 1, units, len(ALPHABET)], "many": ["sample", 64, units, len(ALPHABET)]},
        repeats, seconds)
    # Scoring reads a known text: one call of the model over the whole text, no loop per character.
    text = ("the quick brown fox jumps over the lazy dog " * 200)[: 8 * length]

    def score_call(texts):
        return lambda: score(text=tf.constant([text] * texts))["bits"].numpy()

    scored_one = rate(score_call(1), len(text), repeats, seconds)
    scored_many = rate(score_call(64), 64 * len(text), repeats, seconds)
    return rows + [row(name, one, "chars/s", "torch nn.LSTM per-char loop, 1 stream",
                       torch_speeds.get("one"), target=2.0, note=note),
                   row(many_name, many, "chars/s", "torch nn.LSTM per-char loop, 64 streams",
                       torch_speeds.get("many"), target=1.0, note=note),
                   row(f"score lstm export, 1 text of {len(text)} chars", scored_one, "chars/s",
                       "sampling, 1 stream", one),
                   row(f"score lstm export, 64 texts of {len(text)} chars", scored_many, "chars/s",
                       "sampling, 64 streams", many)]


def service_rows(models_dir, effort, length=100):
    port = free_port()
    code = f"from serving.app import serve; serve({str(models_dir)!r}, port={port})"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    path, per_client, cpu = "/v1/models/lstm:sample", effort[3], {}
    try:
        wait_for_server(port, server)
        # Warm-up: the export compiles once per batch bucket (powers of two up to 64 rows);
        # requests of n samples, then bursts of 16-sample requests, reach every bucket.
        for rows in (1, 2, 4, 8, 16):
            asyncio.run(requests(port, path, 1, 1, length, rows))
        for clients in (2, 4):
            asyncio.run(requests(port, path, clients, 2, length, 16))
        asyncio.run(requests(port, path, 32, 2, length))
        results = {}
        for name, clients, each in (("serial", 1, 4 * per_client), ("crowd", 32, per_client)):
            before = cpu_seconds(server.pid), time.process_time()
            results[name] = asyncio.run(requests(port, path, clients, each, length))
            if before[0] is not None:
                done = len(results[name][0]) or 1
                cpu[name] = ((cpu_seconds(server.pid) - before[0]) / done,
                             (time.process_time() - before[1]) / done)
    finally:
        server.terminate()
        server.wait(30)
    (serial, serial_errors, serial_wall), (crowd, crowd_errors, crowd_wall) = results.values()
    serial_rate, crowd_rate = len(serial) / serial_wall, len(crowd) / crowd_wall

    def percentile(values, q):
        return 1000 * float(np.percentile(values, q)) if values else float("nan")

    label = f"service, {length} chars/request"
    rows = [row(f"{label}: 32 concurrent clients", crowd_rate, "req/s", "serial requests",
                serial_rate, target=8.0),
            row(f"{label}: p50 latency, 32 concurrent", percentile(crowd, 50), "ms",
                "serial p50", percentile(serial, 50)),
            row(f"{label}: p99 latency, 32 concurrent", percentile(crowd, 99), "ms",
                "serial p99", percentile(serial, 99)),
            row(f"{label}: errors", float(serial_errors + crowd_errors), "requests", target=0.0,
                lower_is_better=True)]
    if cpu:
        for i, side in enumerate(("server", "load generator")):
            rows.append(row(f"{label}: {side} CPU per request, 32 concurrent",
                            1000 * cpu["crowd"][i], "ms", "serial", 1000 * cpu["serial"][i]))
    return rows


def run(quick: bool, tiny: bool = False, sections=SECTIONS, quality_options=None, names_options=None):
    """Runs the benchmark.

    Args:
        quick: fewer and shorter repeats, no 100M-character memory run, and two
            one-minute quality rows (a few minutes in all).
        tiny: tiny shapes and almost no repeats: exercises the machinery only.
        sections: which of `SECTIONS` to run (pipeline needs train).
        quality_options: dict of `quality.quality_rows` arguments (`names`,
            `corpus_spec`, `normalize`, `seconds`, `seed`) over the mode's defaults;
            `plot`: a PNG path for the curves.
        names_options: dict with `directory` (a class directory; without it the
            names section is skipped), and optionally `seconds` and `rows` (of
            `benchmarks.names.ROWS`).

    Returns:
        dict with `machine` (CPU, cores, versions), `rows` and (quality) `curves`.
    """
    effort = EFFORT["tiny" if tiny else "quick" if quick else "full"]
    rows, speeds = [], {}
    started = time.monotonic()
    if "train" in sections:
        train, speeds = train_rows(tiny, effort)
        rows += train
    if "widths" in sections:
        rows += width_rows(tiny, effort)
    if "variants" in sections:
        rows += variant_rows(tiny, effort)
    if "pipeline" in sections and speeds:
        rows += pipeline_rows(tiny, effort, speeds)
    if {"sampling", "service", "soak"} & set(sections):
        with tempfile.TemporaryDirectory() as models_dir:
            model, units, _ = export_lstm(models_dir, tiny)
            if "sampling" in sections:
                rows += sampling_rows(model, units, models_dir, effort)
            if "service" in sections:
                rows += service_rows(models_dir, effort)
            if "soak" in sections:  # last: it adds versions to models_dir
                *_, next_export = export_lstm(Path(models_dir) / ".next", tiny, "next")
                rows += soak_rows(Path(models_dir), next_export, effort[4], row)
    if "memory" in sections and (tiny or not quick):
        rows += memory_rows(tiny)
    mode = "tiny" if tiny else "quick" if quick else "full"
    result = {"machine": machine(), "mode": mode, "rows": rows}
    if "quality" in sections:
        options = dict(quality_options or {})
        plot_path = options.pop("plot", None)
        names, seconds = QUALITY["full" if mode == "full" else "quick"]
        options = {"names": names, "seconds": seconds, **options}
        quality_rows, result["curves"] = quality.quality_rows(
            row, has_torch=peers.torch_version() is not None, **options)
        rows += quality_rows
        if plot_path:
            m, seed = result["machine"], options.get("seed")
            quality.plot(result["curves"], plot_path,
                         f"{options.get('corpus_spec', 'tinyshakespeare')}, {options['seconds']:g} s "
                         f"per model{f', seed {seed}' if seed else ''}; {m['cpu']}, {m['cores']} cores")
    options = {"seconds": 120.0, "rows": tuple(names_bench.ROWS), **(names_options or {})}
    if "names" in sections and options.get("directory"):  # the CLI says when it is skipped
        rows += names_bench.names_rows(options["directory"], options["seconds"], options["rows"], row,
                                       has_torch=peers.torch_version() is not None)
    result["seconds"] = time.monotonic() - started
    return result


def format_table(result) -> str:
    """The rows as an aligned plain-text table, the machine above it."""
    m = result["machine"]
    lines = [f"{m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
             f"PyTorch {m['torch'] or 'not installed'}; {result['mode']} run, {result['seconds']:.0f} s"]

    def number(value, unit=None):
        if value is None:
            return "-"
        if unit == "bpc":  # rows a few thousandths apart decide a verdict
            return f"{value:.3f}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    header = ("benchmark", "value", "unit", "peer", "peer value", "ratio", "target", "met")
    table = [header] + [
        (r["name"], number(r["value"], r["unit"]), r["unit"], r["peer"] or "-",
         number(r["peer_value"], r["unit"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
         number(r["target"], r["unit"]),
         {True: "yes", False: "NO", None: "-"}[r["met"]]) + ((f"({r['note']})",) if "note" in r else ())
        for r in result["rows"]]
    widths = [max(len(line[i]) for line in table if len(line) > i) for i in range(len(header))]
    for line in table:
        lines.append("  ".join(cell.ljust(widths[i]) if i < len(widths) else cell
                               for i, cell in enumerate(line)).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv, tiny="--tiny" in sys.argv)
    print(json.dumps(result, indent=2) if "--json" in sys.argv else format_table(result))
