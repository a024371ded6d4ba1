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

from benchmarks import peers
from benchmarks.loadgen import cpu_seconds, free_port, requests, wait_for_server
from benchmarks.peers import rate
from benchmarks.soak import soak_rows
from training import config
from training.batches import Windows
from training.run_dir import build_model
from training.step import Trainer, make_optimizer
from zoo import FAMILIES

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
TINY = {"batch_size": 4, "unrollings": 5, "model": {"units": 8}}
# Work per mode: (repeats, seconds per repeat, sampled characters, service requests per client,
# seconds of soak).
EFFORT = {"tiny": (2, 0.01, 4, 1, 3), "quick": (3, 0.3, 64, 2, 30), "full": (7, 1.5, 512, 8, 180)}
SECTIONS = ("train", "pipeline", "sampling", "service", "soak", "memory")


def row(name, value, unit, peer=None, peer_value=None, target=None, note=None, lower_is_better=False):
    """A result row; `target` bounds the ratio (or the value itself when `lower_is_better`)."""
    ratio = value / peer_value if peer_value else None
    if target is None:
        met = None
    elif lower_is_better:
        met = value <= target
    else:
        met = None if ratio is None else ratio >= target
    out = {"name": name, "value": value, "unit": unit, "peer": peer, "peer_value": peer_value,
           "ratio": ratio, "target": target, "met": met}
    if note:
        out["note"] = note
    return out


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


def recipe(family, tiny):
    """The family's preset as a Config (its model and training recipe), shrunk when tiny."""
    return config.resolve(family, TINY if tiny else None)


def flops_per_char(model):
    """The model's FLOPs per training character: dense multiply-adds x2 of the
    forward pass, x3 for forward and backward. The multiply-adds per step are
    the sizes of the matrices a step multiplies by: each recurrent kernel and
    the output projection (an input transform of ids is a gather: it counts 0).

    Like MFU, this counts the model's work, not the work executed: Arch 1's
    and Arch 2's per-class tables skip part of it, so their rate can read
    higher than the arithmetic actually done."""
    multiplied = ("recurrent_kernel", "output_kernel", "logits/kernel")
    return 3 * 2 * sum(int(np.prod(v.shape)) for v in model.trainable_variables
                       if v.path.endswith(multiplied))


def matmul_peak(repeats, seconds, size=2048):
    a = tf.random.normal((size, size))
    return rate(lambda: tf.linalg.matmul(a, a).numpy(), 2 * size**3, repeats, seconds)


def our_train_step(recipe, steps_per_execution):
    """charzoo's training end to end: the next windows from `Windows`, then one
    compiled call of `steps_per_execution` train steps, the state carried."""
    model = build_model(recipe, len(ALPHABET))
    trainer = Trainer(model, make_optimizer(recipe), recipe.clip_norm)
    ids = np.random.default_rng(0).integers(0, len(ALPHABET), 2_000_000, dtype=np.uint8)
    windows = Windows(ids, recipe.batch_size, recipe.unrollings)
    carry = [model.initial_state(recipe.batch_size), 0]

    def run():
        index = carry[1] if carry[1] + steps_per_execution <= len(windows) else 0
        out = trainer.train_steps(*windows.span(index, steps_per_execution), carry[0])
        carry[0], carry[1] = out["state"], index + steps_per_execution
        out["loss"].numpy()

    return run, model


def peer_setup(family, tiny):
    """(label, recipe, peer kind, width, activation) of one family's training rows."""
    shapes = recipe(family, tiny)
    label = f"train {family} (b{shapes.batch_size} u{shapes.unrollings} n{shapes.model['units']})"
    if family in ("arch1", "arch2"):
        # Arch 1's state and Arch 2's hidden layer are both 2n wide.
        return label, shapes, "simple", 2 * shapes.model["units"], shapes.model["activation"]
    return label, shapes, family, shapes.model["units"], "tanh"


def torch_train_specs(tiny):
    specs = {}
    for family in FAMILIES:
        _, shapes, kind, width, activation = peer_setup(family, tiny)
        specs[family] = ["train", kind, shapes.batch_size, shapes.unrollings, width,
                         len(ALPHABET), shapes.optimizer, shapes.learning_rate,
                         shapes.clip_norm, activation]
    return specs


def train_rows(tiny, effort):
    repeats, seconds = effort[:2]
    vocabulary, rows, speeds = len(ALPHABET), [], {}
    has_torch = peers.torch_version() is not None
    torch_speeds = peers.torch_rates(torch_train_specs(tiny), repeats, seconds) if has_torch else {}
    peak = matmul_peak(repeats, seconds, 256 if tiny else 2048)
    rows.append(row("matmul 2048x2048 float32 (TF)", peak / 1e9, "GFLOP/s"))
    for family in FAMILIES:
        label, shapes, kind, width, activation = peer_setup(family, tiny)
        batch, unrollings, clip = shapes.batch_size, shapes.unrollings, shapes.clip_norm
        units, chars, per_call = shapes.model["units"], batch * unrollings, shapes.steps_per_execution
        step, model = our_train_step(shapes, per_call)
        ours = rate(step, per_call * chars, repeats, seconds)
        single = rate(our_train_step(shapes, 1)[0], chars, repeats, seconds)
        speeds[family] = ours / chars
        rows.append(row(f"{label}, steps_per_execution={per_call}", ours, "chars/s",
                        "steps_per_execution=1", single))
        gated = family in ("lstm", "gru")
        if not gated:
            tf1 = rate(peers.tf1_graph_step(family, batch, unrollings, units, vocabulary,
                                            shapes.learning_rate, clip), chars, repeats, seconds)
            rows.append(row(label, ours, "chars/s", "TF1-style graph, per-step placeholders",
                            tf1, target=3.0))
        name = "SimpleRNN" if kind == "simple" else kind.upper()
        keras_speed = rate(peers.keras_train_step(
            kind, batch, unrollings, width, vocabulary, make_optimizer(shapes), clip,
            activation), chars, repeats, seconds)
        rows.append(row(label, ours, "chars/s", f"Keras {name}({width})", keras_speed, target=1.0))
        torch_name = f"torch nn.{'RNN' if kind == 'simple' else name}({width})"
        rows.append(row(label, ours, "chars/s", torch_name, torch_speeds.get(family),
                        target=1.0 if gated else None,
                        note=None if has_torch else "torch not importable: skipped"))
        achieved = ours * flops_per_char(model)
        rows.append(row(f"train {family} model FLOP/s", achieved / 1e9, "GFLOP/s",
                        "matmul peak", peak / 1e9))
    return rows, speeds


def pipeline_rows(tiny, effort, speeds):
    """Windows' batches/s at the shapes of the fastest train step, against its steps/s."""
    family = max(speeds, key=speeds.get)
    shapes = recipe(family, tiny)
    ids = np.random.default_rng(0).integers(0, len(ALPHABET), 2_000_000, dtype=np.uint8)
    windows = Windows(ids, shapes.batch_size, shapes.unrollings)
    cursor = [0]

    def run():
        windows[cursor[0] % len(windows)]
        cursor[0] += 1

    batches = rate(run, 1, *effort[:2])
    return [row(f"Windows batches/s ({family} shapes)", batches, "batches/s",
                f"train {family} steps/s", speeds[family], target=20.0)]


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


def run(quick: bool, tiny: bool = False, sections=SECTIONS):
    """Runs the benchmark.

    Args:
        quick: fewer and shorter repeats, and no 100M-character memory run (about a minute).
        tiny: tiny shapes and almost no repeats: exercises the machinery only.
        sections: which of `SECTIONS` to run (pipeline needs train).

    Returns:
        dict with `machine` (CPU, cores, versions) and `rows`.
    """
    effort = EFFORT["tiny" if tiny else "quick" if quick else "full"]
    rows, speeds = [], {}
    started = time.monotonic()
    if "train" in sections:
        train, speeds = train_rows(tiny, effort)
        rows += train
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
    return {"machine": machine(), "mode": mode, "seconds": time.monotonic() - started, "rows": rows}


def format_table(result) -> str:
    """The rows as an aligned plain-text table, the machine above it."""
    m = result["machine"]
    lines = [f"{m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
             f"PyTorch {m['torch'] or 'not installed'}; {result['mode']} run, {result['seconds']:.0f} s"]

    def number(value, digits=3):
        if value is None:
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"

    header = ("benchmark", "value", "unit", "peer", "peer value", "ratio", "target", "met")
    table = [header] + [
        (r["name"], number(r["value"]), r["unit"], r["peer"] or "-", number(r["peer_value"]),
         "-" if r["ratio"] is None else f"{r['ratio']:.2f}", number(r["target"]),
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
