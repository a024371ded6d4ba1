"""Training throughput rows: each family's train step against Keras, PyTorch and a TF1-style
graph at the preset's shapes, LSTM / GRU at every width, and the LSTM variants against
Keras' LSTM."""

import numpy as np
import tensorflow as tf

from benchmarks import peers
from benchmarks.peers import rate
from benchmarks.rows import row
from training import config
from training.batches import Windows
from training.run_dir import build_model
from training.step import make_optimizer, make_trainer

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
TINY = {"batch_size": 4, "unrollings": 5, "model": {"units": 8}}
WIDTHS = (128, 256, 512, 1024)  # the width sweep's units; tiny runs use 8 and 16
FAMILIES = ("arch1", "arch2", "lstm", "gru")  # the train section's; each its preset
# The variants section's presets, each against the closest Keras layer: LSTM, or SimpleRNN
# of the same state size.
VARIANTS = ("lstm-peephole", "lstm-cifg", "lstm-ln", "arch1-mul", "arch1-orth", "arch1-ln")


def recipe(family, tiny):
    """The family's preset as a Config (its model and training recipe), shrunk when tiny."""
    return config.resolve(family, TINY if tiny else None)


def flops_per_char(model):
    """The model's FLOPs per training character: dense multiply-adds x2 of the
    forward pass, x3 for forward and backward. The multiply-adds per step are
    the sizes of the matrices a step multiplies by: each recurrent kernel and
    the output projection (an input transform of ids is a gather: it counts 0; so does the
    LSTM's and GRU's `[64, 4n]` input kernel behind their embedding, a few percent).

    Like MFU, this counts the model's work, not the work executed: Arch 1's
    and Arch 2's per-class tables skip part of it, so their rate can read
    higher than the arithmetic actually done."""
    multiplied = ("recurrent_kernel", "output_kernel", "logits/kernel")
    return 3 * 2 * sum(int(np.prod(v.shape)) for v in model.trainable_variables
                       if v.path.endswith(multiplied))


def matmul_peak(repeats, seconds, size=2048):
    a = tf.random.normal((size, size))
    return rate(lambda: tf.linalg.matmul(a, a).numpy(), 2 * size**3, repeats, seconds)


def call_rate(repeats, seconds):
    """Calls a second of a compiled scalar add. The matmul row gauges the machine at large
    products; this one at the small, dispatch-bound work that Arch 1 and 2, sampling and the
    service are made of. A VM can slow one kind and not the other, so reading both tells a
    slow spell from a slower tree."""
    add, one = tf.function(lambda x: x + 1.0), tf.constant(1.0)
    return rate(lambda: add(one).numpy(), 1, repeats, seconds)


def our_train_step(recipe, steps_per_execution):
    """charzoo's training end to end: the next windows from `Windows`, then one
    compiled call of `steps_per_execution` train steps, the state carried."""
    model = build_model(recipe, len(ALPHABET))
    trainer = make_trainer(recipe, model)
    ids = np.random.default_rng(0).integers(0, len(ALPHABET), 2_000_000, dtype=np.uint8)
    windows = Windows(ids, recipe.batch_size, recipe.unrollings)
    carry = [model.initial_state(recipe.batch_size), 0]

    def run():
        index = carry[1] if carry[1] + steps_per_execution <= len(windows) else 0
        out = trainer.train_steps(*windows.span(index, steps_per_execution), carry[0])
        carry[0], carry[1] = out["state"], index + steps_per_execution
        out["loss"].numpy()

    return run, model


def peer_embedding(recipe):
    """The width of the learned embedding the peers read where charzoo's model reads one
    (the gated presets, as the PyTorch reference script); None (one-hot ids) otherwise."""
    return recipe.model.get("embedding_size")


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
                         shapes.clip_norm, activation, peer_embedding(shapes)]
    return specs


def train_rows(tiny, effort):
    repeats, seconds = effort[:2]
    vocabulary, rows, speeds = len(ALPHABET), [], {}
    has_torch = peers.torch_version() is not None
    torch_specs = torch_train_specs(tiny)
    peak = matmul_peak(repeats, seconds, 256 if tiny else 2048)
    rows.append(row("matmul 2048x2048 float32 (TF)", peak / 1e9, "GFLOP/s"))
    rows.append(row("tf.function call, a scalar add (TF)", call_rate(repeats, seconds), "calls/s"))
    for family in FAMILIES:
        label, shapes, kind, width, activation = peer_setup(family, tiny)
        # Each PyTorch peer right before ours, as in `width_rows`: the VM drifts over minutes.
        torch_speed = (peers.torch_rates({family: torch_specs[family]}, repeats, seconds)[family]
                       if has_torch else None)
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
            activation, peer_embedding(shapes)), chars, repeats, seconds)
        rows.append(row(label, ours, "chars/s", f"Keras {name}({width})", keras_speed, target=1.0))
        torch_name = f"torch nn.{'RNN' if kind == 'simple' else name}({width})"
        rows.append(row(label, ours, "chars/s", torch_name, torch_speed,
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


def width_rows(tiny, effort):
    """LSTM and GRU train steps at every width of `WIDTHS`, at the preset's batch and
    unrollings, against Keras' layer and PyTorch's at the same width."""
    repeats, seconds = effort[:2]
    widths = (8, 16) if tiny else WIDTHS
    specs, shapes = {}, {}
    for family in ("lstm", "gru"):
        for units in widths:
            shapes[family, units] = config.resolve(family, {**(TINY if tiny else {}),
                                                            "model": {"units": units}})
            s = shapes[family, units]
            specs[f"{family}-{units}"] = ["train", family, s.batch_size, s.unrollings, units,
                                          len(ALPHABET), s.optimizer, s.learning_rate,
                                          s.clip_norm, "tanh", peer_embedding(s)]
    has_torch = peers.torch_version() is not None
    rows = []
    for (family, units), s in shapes.items():
        # Each peer right before ours: this VM's speed drifts by 20-50% over minutes, and
        # a sweep measuring all of PyTorch first had rows change sides from run to run.
        name = f"{family}-{units}"
        torch_speed = peers.torch_rates({name: specs[name]}, repeats, seconds)[name] if has_torch else None
        chars, per_call = s.batch_size * s.unrollings, s.steps_per_execution
        ours = rate(our_train_step(s, per_call)[0], per_call * chars, repeats, seconds)
        label = f"train {family} width {units} (b{s.batch_size} u{s.unrollings})"
        keras_speed = rate(peers.keras_train_step(
            family, s.batch_size, s.unrollings, units, len(ALPHABET), make_optimizer(s),
            s.clip_norm, embedding=peer_embedding(s)), chars, repeats, seconds)
        rows.append(row(label, ours, "chars/s", f"Keras {family.upper()}({units})", keras_speed,
                        target=1.0))
        rows.append(row(label, ours, "chars/s", f"torch nn.{family.upper()}({units})",
                        torch_speed, target=1.0,
                        note=None if has_torch else "torch not importable: skipped"))
    return rows


def variant_rows(tiny, effort):
    """The variants' presets against the closest Keras layer at the same shapes and state
    size (Keras has none of the variants): LSTM for the LSTM variants, SimpleRNN (ReLU) for
    Arch 1's."""
    repeats, seconds = effort[:2]
    rows, peer_speeds = [], {}
    for family in VARIANTS:
        s = recipe(family, tiny)
        units, chars, per_call = s.model["units"], s.batch_size * s.unrollings, s.steps_per_execution
        kind = "lstm" if family.startswith("lstm") else "simple"
        activation = s.model.get("activation", "tanh")
        key = (kind, s.batch_size, s.unrollings, units, activation, peer_embedding(s))
        if key not in peer_speeds:
            peer_speeds[key] = rate(peers.keras_train_step(
                kind, s.batch_size, s.unrollings, units, len(ALPHABET), make_optimizer(s),
                s.clip_norm, activation, peer_embedding(s)), chars, repeats, seconds)
        ours = rate(our_train_step(s, per_call)[0], per_call * chars, repeats, seconds)
        peer = f"Keras {'LSTM' if kind == 'lstm' else 'SimpleRNN'}({units})"
        rows.append(row(f"train {family} (b{s.batch_size} u{s.unrollings} n{units})", ours,
                        "chars/s", peer, peer_speeds[key], target=1.0))
    return rows
