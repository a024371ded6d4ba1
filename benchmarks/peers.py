"""The implementations `benchmarks.bench` measures charzoo against.

Every factory returns a zero-argument callable that does one complete unit of
work (a train step with its data, or one sampled character) and blocks until
it is done, so the benchmark can time it like charzoo's own steps:

- Keras' built-in layers (SimpleRNN / LSTM / GRU fed one-hot ids, or a learned
  embedding where charzoo's model has one) in a plain `tf.function` train step;
- the reference design's style for Arch 1 / Arch 2: a TF1 graph with one
  placeholder per unrolling, fed per step from Python-built one-hot batches;
- PyTorch's fused `nn.RNN` / `nn.LSTM` / `nn.GRU` on the CPU, if importable,
  with the same inputs as the Keras peer.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def rate(fn, work, repeats, seconds):
    """`work` per second of `fn()`: median over `repeats` timed batches of calls, after warm-up.

    The warm-up runs for `seconds` after the first call (which compiles): a
    large model's first seconds of steps ran up to 15% slower here.
    """
    fn()
    started, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - started < seconds:
        fn()
        calls += 1
    calls = max(1, int(calls * seconds / (time.perf_counter() - started)))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return work / statistics.median(times)


def torch_version():
    """PyTorch's version, or None when it cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def keras_language_model(kind, units, vocabulary, activation="tanh", embedding=None):
    """`[ids, *states] -> [logits, *states]` with a Keras built-in recurrent layer
    on one-hot ids (or an `embedding`-wide learned embedding) and a Dense head;
    returns the model and its number of states."""
    layer_class = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
                   "gru": keras.layers.GRU}[kind]
    extra = {"activation": activation} if kind == "simple" else {}
    count = 2 if kind == "lstm" else 1
    ids = keras.Input((None,), dtype="int32")
    states = [keras.Input((units,)) for _ in range(count)]
    inputs = keras.layers.Embedding(vocabulary, embedding)(ids) if embedding else ops.one_hot(
        ids, vocabulary)
    outputs = layer_class(units, return_sequences=True, return_state=True, **extra)(
        inputs, initial_state=states)
    logits = keras.layers.Dense(vocabulary)(outputs[0])
    return keras.Model([ids, *states], [logits, *outputs[1:]]), count


def keras_train_step(kind, batch, unrollings, units, vocabulary, optimizer, clip_norm,
                     activation="tanh", embedding=None):
    """A Keras built-in recurrent layer trained by a plain `tf.function` step.

    Args:
        kind: `"simple"`, `"lstm"` or `"gru"`.
        batch, unrollings: the window shape.
        units: the layer's width (its state size; an LSTM carries two).
        vocabulary: alphabet size; inputs are one-hot ids.
        optimizer: a fresh Keras optimizer.
        clip_norm: global-norm clip.
        activation: SimpleRNN's activation.
        embedding: the width of a learned input embedding; None reads one-hot ids.
    """
    model, count = keras_language_model(kind, units, vocabulary, activation, embedding)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(inputs, targets, states):
        with tf.GradientTape() as tape:
            logits, *new_states = model([inputs, *states], training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        clipped, _ = tf.clip_by_global_norm(gradients, clip_norm)
        optimizer.apply_gradients(zip(clipped, model.trainable_variables))
        return loss, new_states

    inputs, targets = random_window(batch, unrollings, vocabulary)
    inputs, targets = tf.constant(inputs), tf.constant(targets)
    carry = [[tf.zeros((batch, units)) for _ in range(count)]]

    def run():
        loss, carry[0] = step(inputs, targets, carry[0])
        loss.numpy()

    return run


def random_window(batch, unrollings, vocabulary, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocabulary, (batch, unrollings + 1), dtype=np.int32)
    return ids[:, :-1], ids[:, 1:]


class OneHotBatches:
    """The reference's batch generator: `unrollings + 1` one-hot `[batch, vocab]`
    arrays per call, built row by row in Python, the last reused as the next first."""

    def __init__(self, ids, batch, unrollings, vocabulary):
        self.ids, self.batch, self.unrollings, self.vocabulary = ids, batch, unrollings, vocabulary
        segment = len(ids) // batch
        self.cursor = [offset * segment for offset in range(batch)]
        self.last = self._next()

    def _next(self):
        one_hot = np.zeros((self.batch, self.vocabulary), dtype=np.float32)
        for b in range(self.batch):
            one_hot[b, self.ids[self.cursor[b]]] = 1.0
            self.cursor[b] = (self.cursor[b] + 1) % len(self.ids)
        return one_hot

    def next(self):
        batches = [self.last] + [self._next() for _ in range(self.unrollings)]
        self.last = batches[-1]
        return batches


def tf1_graph_step(family, batch, unrollings, units, vocabulary, learning_rate, clip_norm):
    """Arch 1 or Arch 2 as the reference wrote it: a TF1 graph, one placeholder per step.

    Arch 1 (concat, ReLU) carries its `[batch, 2n]` state in a non-trainable
    variable; Arch 2 (tanh) is teacher-forced, the previous true character fed
    back. Each call builds the one-hot batches in Python and runs one update.
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        init = v1.truncated_normal_initializer(stddev=0.05)
        data = [v1.placeholder(tf.float32, [batch, vocabulary]) for _ in range(unrollings + 1)]
        inputs, labels = data[:-1], data[1:]
        U = v1.get_variable("U", [vocabulary, units], initializer=init)
        if family == "arch1":
            W = v1.get_variable("W", [2 * units, units], initializer=init)
            b = v1.get_variable("b", [2 * units], initializer=v1.zeros_initializer())
            saved = v1.get_variable("saved", [batch, 2 * units], trainable=False,
                                    initializer=v1.zeros_initializer())
            hidden, outputs = saved, []
            for x in inputs:
                hidden = tf.nn.relu(tf.concat([tf.matmul(x, U), tf.matmul(hidden, W)], 1) + b)
                outputs.append(hidden)
            carry = [saved.assign(hidden)]
            optimizer = v1.train.AdadeltaOptimizer(learning_rate)
        else:
            W = v1.get_variable("W", [vocabulary, units], initializer=init)
            b = v1.get_variable("b", [2 * units], initializer=v1.zeros_initializer())
            # Teacher forcing: the fed-back output o_{t-1} is the true previous character, x_t.
            outputs = [tf.tanh(tf.concat([tf.matmul(x, U), tf.matmul(x, W)], 1) + b)
                       for x in inputs]
            carry = []
            optimizer = v1.train.GradientDescentOptimizer(learning_rate)
        V = v1.get_variable("V", [2 * units, vocabulary], initializer=init)
        c = v1.get_variable("c", [vocabulary], initializer=v1.zeros_initializer())
        with tf.control_dependencies(carry):
            logits = tf.matmul(tf.concat(outputs, 0), V) + c
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
                labels=tf.concat(labels, 0), logits=logits))
        gradients, variables = zip(*optimizer.compute_gradients(loss))
        clipped, _ = tf.clip_by_global_norm(gradients, clip_norm)
        update = optimizer.apply_gradients(zip(clipped, variables))
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
    text = np.random.default_rng(0).integers(0, vocabulary, 1_000_000, dtype=np.uint8)
    batches = OneHotBatches(text, batch, unrollings, vocabulary)

    def run():
        feed = dict(zip(data, batches.next()))
        session.run([update, loss], feed_dict=feed)

    return run


def tutorial_sampler(units, alphabet, temperature=1.0):
    """The TensorFlow text-generation tutorial's sampler, one character per call.

    Its model (a Keras built-in LSTM here, on one-hot ids, with a Dense head)
    and its `OneStep.generate_one_step`: a `tf.function` that maps the last
    character to an id with `StringLookup`, runs the model one step, scales
    by the temperature, adds the `[UNK]` mask (nothing to mask in this
    alphabet, which has no `[UNK]`: kept for its cost), draws with
    `tf.random.categorical` and maps the id back to a character; a Python loop
    calls it per character and keeps the characters.
    """
    model, _ = keras_language_model("lstm", units, len(alphabet))
    ids_from_chars = keras.layers.StringLookup(vocabulary=list(alphabet), num_oov_indices=0)
    chars_from_ids = keras.layers.StringLookup(vocabulary=list(alphabet), num_oov_indices=0,
                                               invert=True)
    mask = tf.zeros([len(alphabet)])

    @tf.function
    def generate_one_step(inputs, states):
        input_ids = ids_from_chars(tf.strings.unicode_split(inputs, "UTF-8")).to_tensor()
        logits, *states = model([tf.cast(input_ids, tf.int32), *states], training=False)
        logits = logits[:, -1, :] / temperature + mask
        predicted_ids = tf.squeeze(tf.random.categorical(logits, num_samples=1), axis=-1)
        return chars_from_ids(predicted_ids), states

    carry = [tf.constant([alphabet[0]]), [tf.zeros((1, units)), tf.zeros((1, units))]]
    result = []

    def run():
        carry[0], carry[1] = generate_one_step(carry[0], carry[1])
        result.append(carry[0])
        if len(result) > 1000:
            result.clear()

    return run


def torch_train_step(kind, batch, unrollings, units, vocabulary, optimizer, learning_rate,
                     clip_norm, activation="tanh", embedding=None):
    """PyTorch's fused `nn.RNN` / `nn.LSTM` / `nn.GRU` on one-hot inputs (or a learned
    `embedding`, as `keras_train_step`), with clip and update."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    width = embedding or vocabulary
    if kind == "simple":
        rnn = nn.RNN(width, units, nonlinearity=activation, batch_first=True)
    else:
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](width, units, batch_first=True)
    head = nn.Linear(units, vocabulary)
    embed = nn.Embedding(vocabulary, embedding) if embedding else None
    parameters = [p for part in (rnn, head, embed) if part is not None for p in part.parameters()]
    optimizer = {"adadelta": torch.optim.Adadelta, "sgd": torch.optim.SGD,
                 "adam": torch.optim.Adam}[optimizer](parameters, lr=learning_rate)
    inputs, targets = random_window(batch, unrollings, vocabulary)
    ids = torch.from_numpy(inputs).long()
    one_hot = None if embed else nn.functional.one_hot(ids, vocabulary).float()
    y = torch.from_numpy(targets).long().reshape(-1)
    zeros = torch.zeros(1, batch, units)
    carry = [(zeros, zeros.clone()) if kind == "lstm" else zeros]

    def run():
        optimizer.zero_grad()
        outputs, state = rnn(embed(ids) if embed else one_hot, carry[0])
        loss = nn.functional.cross_entropy(head(outputs).reshape(-1, vocabulary), y)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        carry[0] = tuple(s.detach() for s in state) if kind == "lstm" else state.detach()
        loss.item()

    return run


def torch_lstm_sampler(streams, units, vocabulary):
    """One character for each of `streams` streams per call: nn.LSTM, softmax, multinomial."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    lstm, head = nn.LSTM(vocabulary, units, batch_first=True), nn.Linear(units, vocabulary)
    zeros = torch.zeros(1, streams, units)
    carry = [torch.zeros(streams, 1, dtype=torch.long), (zeros, zeros.clone())]

    def run():
        with torch.inference_mode():
            x = nn.functional.one_hot(carry[0], vocabulary).float()
            outputs, carry[1] = lstm(x, carry[1])
            probabilities = torch.softmax(head(outputs[:, -1]), -1)
            carry[0] = torch.multinomial(probabilities, 1)

    return run


def torch_rates(specs, repeats, seconds):
    """Rates of PyTorch peers, measured in a fresh process.

    TensorFlow's and PyTorch's thread pools both spin-wait for work, so on a
    small machine whichever runs second in one process is starved; a
    subprocess measures PyTorch alone. Each peer is timed with oneDNN on and
    off and keeps the faster, since PyTorch's LSTM picks oneDNN on the CPU and
    that is much slower for small batches on some machines.

    Args:
        specs: dict name -> `["train", kind, batch, unrollings, units, vocabulary,
            optimizer, learning_rate, clip_norm, activation, embedding]` or
            `["sample", streams, units, vocabulary]`.

    Returns:
        dict name -> work per second (characters).
    """
    code = ("import json, sys; from benchmarks import peers; "
            "print(json.dumps(peers.torch_probe(json.loads(sys.stdin.read()))))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([specs, repeats, seconds]),
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_probe(arguments):
    import torch

    specs, repeats, seconds = arguments
    rates = {}
    for name, (job, *args) in specs.items():
        best = 0.0
        for onednn in (True, False):
            with torch.backends.mkldnn.flags(enabled=onednn):
                if job == "train":
                    kind, batch, unrollings, *rest = args
                    fn, work = torch_train_step(kind, batch, unrollings, *rest), batch * unrollings
                else:
                    fn, work = torch_lstm_sampler(*args), args[0]
                best = max(best, rate(fn, work, repeats, seconds))
        rates[name] = best
    return rates
