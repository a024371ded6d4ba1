"""The custom train step (global-norm clip, exponential decay), evaluation in bits per
character, and the quick samples logged while training."""

import contextlib
import functools
import math
import os
import weakref

import keras
import numpy as np
import tensorflow as tf

from training.batches import evaluation_windows
from zoo import sampling

# What `train_steps` returns per step (stacked), beside the final state.
PER_STEP = {"loss": tf.float32, "grad_norm": tf.float32, "clipped": tf.bool, "finite": tf.bool}


def learning_rate_schedule(config):
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, config.decay_steps, config.decay_rate, staircase=config.staircase
    )


def average_momentum(step, momentum):
    """The moving average's momentum at `step` (0 at the first): it spans the steps so far
    until it reaches `momentum`, at step 90 for 0.9 and 990 for 0.99."""
    return keras.ops.minimum(momentum, step / (step + 10))


class AverageWarmup:
    """Optimizer mixin: the moving average of the weights with momentum `min(m, t / (t + 10))`
    at step t (like `tf.train.ExponentialMovingAverage` with `num_updates`) instead of Keras' `m`
    from the first step on. Keras' average starts at the first step's weights and takes
    ~1 / (1 - m) steps to forget them: at 0.99 the first ~100 steps, 30-40 s of a 512-unit
    LSTM whose early validations, and any short run, then score weights from its start."""

    def _update_model_variables_moving_average(self, trainable_variables):
        # Called by Keras' `apply` after the update and before `iterations` counts it.
        momentum = average_momentum(keras.ops.cast(self.iterations, "float32"), self.ema_momentum)
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = keras.ops.cast(momentum, variable.dtype)
                average.assign(m * average + (1 - m) * variable)


# Keras' optimizers with the warm-up (which Keras calls only with `use_ema`).
OPTIMIZER_CLASSES = {
    name: type(optimizer.__name__, (AverageWarmup, optimizer), {})
    for name, optimizer in {"adadelta": keras.optimizers.Adadelta, "sgd": keras.optimizers.SGD,
                            "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}.items()
}


def make_optimizer(config):
    # No clipnorm here: Keras' clipnorm clips each tensor alone; the train step
    # clips the global norm itself, so it can also report the norm it saw.
    momentum = getattr(config, "weight_average", None)  # the names classifier has none
    average = {"use_ema": True, "ema_momentum": momentum} if momentum else {}
    return OPTIMIZER_CLASSES[config.optimizer](learning_rate=learning_rate_schedule(config),
                                               **average)


def keeps_average(optimizer):
    """Whether `optimizer` holds a moving average of the weights (it has one after a step)."""
    # convert_to_numpy: int() cannot read a MirroredVariable.
    return optimizer.use_ema and int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    """Inside, `model` holds the optimizer's moving average of its weights (when the
    optimizer keeps one and has taken a step); its own weights come back after."""
    if not keeps_average(optimizer):
        yield
        return
    variables = model.trainable_variables
    kept = [tf.identity(variable) for variable in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, kept):
            variable.assign(value)


# Where two blocks of streams trained faster than one on a 2-core CPU (BENCHMARKS.md, "Two
# blocks of streams per step"): from 1.5M to 40M multiply-adds per time step (parameters x
# streams). Below, the per-call cost of the executor outweighs the second core; above, XLA
# already spreads each product over both cores.
SHARDED_WORK = (1_500_000, 40_000_000)


def choose_shards(parameters, batch_size, cores, dropout=False):
    """Blocks of streams a train step of a model with `parameters` weights should split
    `batch_size` streams into on `cores` CPU cores: 2 where that was measured faster, else 1.
    Not with dropout: the blocks share its random state, so they run one after the other."""
    low, high = SHARDED_WORK
    fits = low <= parameters * batch_size <= high and batch_size % 2 == 0
    return 2 if fits and cores >= 2 and not dropout else 1


def shards_for(config, model):
    """`config.batch_shards`, or `choose_shards`' pick for `model` on this machine's CPUs."""
    if config.batch_shards is not None:
        return config.batch_shards
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dropout = bool(config.model.get("dropout") or config.model.get("recurrent_dropout"))
    return choose_shards(model.count_params(), config.batch_size, cores or 1, dropout)


# The narrowest LSTM or GRU whose bfloat16 loop was measured at least as fast as the float32
# XLA loop on a CPU with AMX (LSTM 1.25-1.33x at 512 units, 1.75x at 1024, 0.87x at 256;
# GRU 1.04-1.10x at 512, 1.93x at 1024: BENCHMARKS.md, #12).
BFLOAT16_UNITS = 512


def cpu_has_amx():
    """Whether this CPU's matrix units multiply bfloat16 (Linux's `amx_bf16` flag)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo)
    except OSError:
        return False


def bfloat16_for(config, model):
    """`config.bfloat16_products`, or whether its LSTM/GRU layers train faster in bfloat16
    here: wide ones, without a GPU, on a CPU with AMX."""
    if config.bfloat16_products is not None:
        return config.bfloat16_products
    wide = [layer for layer in model.layers if hasattr(layer, "bfloat16_products")
            and layer.units >= BFLOAT16_UNITS
            and getattr(layer.cell, "reset_after", True)  # else Keras' own loop, as with:
            and not (layer.cell.dropout or layer.cell.recurrent_dropout)]
    return bool(wide) and not tf.config.list_logical_devices("GPU") and cpu_has_amx()


def make_trainer(config, model, optimizer=None):
    """The `Trainer` that `config` asks for on this machine: its recipe, and the blocks of
    streams and the products' dtype chosen for `model` here."""
    optimizer = make_optimizer(config) if optimizer is None else optimizer
    return Trainer(model, optimizer, config.clip_norm,
                   loss_steps=config.loss_steps, shards=shards_for(config, model),
                   bfloat16_products=bfloat16_for(config, model))


def cross_entropy(logits, targets):
    """Mean cross-entropy in nats over every unrolling and stream."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    )


class Trainer:
    """Compiled steps for one model: train (clip, update), evaluate, gradients.

    `train_step` trains on one `[batch, time]` window; `train_steps` on a
    stack of consecutive windows `[count, batch, time]`, carrying the state,
    and returns each step's results stacked.

    Args:
        model: a `zoo.CharLM`.
        optimizer: a Keras optimizer (its learning rate a schedule or a float).
        clip_norm: float. Gradients are scaled down to this global norm.
        jit_compile: bool or None. Compile the train step with XLA; None
            compiles it when no GPU is visible and every layer allows it.
        loss_steps: `"all"` trains from the mean loss of every unrolling;
            `"last"` from the last unrolling's only (the state still runs
            through the whole window, so the gradient reaches every step
            through time alone).
        shards: int. With XLA, the train steps split the batch into this many
            equal blocks of streams whose gradients are computed side by side
            (see `choose_shards`); the update is the unsplit one's. The batch
            must be divisible by it.
        bfloat16_products: bool. The model's LSTM and GRU layers multiply in
            bfloat16 while training (see `zoo.loops.make_lstm_loop`); their loop runs
            outside XLA, so by default the train step does too.
    """

    def __init__(self, model, optimizer, clip_norm, jit_compile=None, loss_steps="all", shards=1,
                 bfloat16_products=False):
        self.model = model
        self.bfloat16_products = bfloat16_products
        for layer in model.layers:
            if hasattr(layer, "bfloat16_products"):
                layer.bfloat16_products = bfloat16_products  # which the XLA choice below reads
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        self.loss_steps = loss_steps
        optimizer.build(model.trainable_variables)
        windows = tf.TensorSpec([None, None], tf.int32)
        state = tf.TensorSpec([None, model.state_size], tf.float32)
        if jit_compile is None:
            # XLA makes the CPU train step 1.4-2.5x faster for every family (charzoo
            # bench); on a GPU, Keras' LSTM/GRU run cuDNN, which XLA cannot compile.
            jit_compile = not tf.config.list_logical_devices("GPU") and all(
                getattr(layer, "xla_compiles_training", True) for layer in model.layers)
        self.shards = shards if jit_compile else 1
        if self.shards > 1:
            self._shard_gradients = tf.function(self._gradients, jit_compile=True)
            self._apply_shards = tf.function(self._mean_and_apply, jit_compile=True)
            jit_compile = False  # the executor around the compiled blocks runs them side by side
        self.train_step = tf.function(
            self._train_step, input_signature=[windows, windows, state], jit_compile=jit_compile
        )
        stacked = tf.TensorSpec([None, None, None], tf.int32)
        self.train_steps = tf.function(
            self._train_steps, input_signature=[stacked, stacked, state], jit_compile=jit_compile
        )
        self.eval_step = tf.function(self._eval_step, input_signature=[windows, windows, state])
        self.gradients = tf.function(self._gradients, input_signature=[windows, windows, state])

    def _gradients(self, inputs, targets, state):
        with tf.GradientTape() as tape:
            logits, new_state = self.model([inputs, state], training=True)
            if self.loss_steps == "last":
                logits, targets = logits[:, -1:], targets[:, -1:]
            loss = cross_entropy(logits, targets)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        # The gather of U's rows gives IndexedSlices whose repeated rows would make
        # the global norm wrong; U is small, so densify.
        return loss, [tf.convert_to_tensor(g) for g in gradients], new_state

    def _train_step(self, inputs, targets, state):
        if self.shards > 1:
            return self._sharded_train_step(inputs, targets, state)
        loss, gradients, new_state = self._gradients(inputs, targets, state)
        norm, finite = self._apply(loss, gradients)
        return self.step_result(loss, norm, finite, new_state, state)

    def _apply(self, loss, gradients):
        """Clips the gradients to the global norm and applies them if they and the loss
        are finite; returns that norm and whether they were."""
        norm = tf.linalg.global_norm(gradients)
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
        clipped, _ = tf.clip_by_global_norm(gradients, self.clip_norm, use_norm=norm)

        def apply():
            self.optimizer.apply_gradients(zip(clipped, self.model.trainable_variables))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return norm, finite

    def _sharded_train_step(self, inputs, targets, state):
        # XLA's CPU runtime runs a small model's per-step products on one core, and one
        # computation's independent parts one after the other; TensorFlow's executor runs
        # independent compiled calls side by side, so each block of streams gets a core.
        blocks = zip(*(tf.split(tensor, self.shards) for tensor in (inputs, targets, state)))
        losses, gradients, new_states = zip(*(self._shard_gradients(*block) for block in blocks))
        loss, norm, finite = self._apply_shards(list(losses), list(gradients))
        return self.step_result(loss, norm, finite, tf.concat(new_states, 0), state)

    def _mean_and_apply(self, losses, gradients):
        # Equal blocks: the mean of their mean losses is the batch's, and so for gradients.
        loss = tf.add_n(losses) / len(losses)
        mean = [tf.add_n(list(block)) / len(losses) for block in zip(*gradients)]
        return (loss, *self._apply(loss, mean))

    def _train_steps(self, inputs, targets, state):
        # At the reference shapes a call costs about as much as a step (~0.5 ms of
        # dispatch and variable handling), so one call runs several steps.
        count = tf.shape(inputs)[0]
        arrays = {name: tf.TensorArray(dtype, size=count) for name, dtype in PER_STEP.items()}

        def body(i, state, arrays):
            out = self._train_step(inputs[i], targets[i], state)
            arrays = {name: arrays[name].write(i, out[name]) for name in PER_STEP}
            return i + 1, out["state"], arrays

        _, state, arrays = tf.while_loop(lambda i, *_: i < count, body, (0, state, arrays))
        return {"state": state, **{name: array.stack() for name, array in arrays.items()}}

    def step_result(self, loss, norm, finite, new_state, state):
        # A non-finite step changes nothing: no update, and the state it produced is dropped.
        return {
            "loss": loss,
            "grad_norm": norm,
            "clipped": finite & (norm > self.clip_norm),
            "finite": finite,
            "state": tf.where(finite, new_state, state),
        }

    def _eval_step(self, inputs, targets, state):
        logits, new_state = self.model([inputs, state], training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(tf.cast(losses, tf.float64)), new_state

    def learning_rate(self):
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def evaluate(self, ids, streams=128, window=64, max_characters=None):
        """Bits per character over `ids`, the state carried through parallel streams.

        Short windows keep the activations of a 512-unit LSTM at 128 streams small
        (a window of 256 costs ~370 MB more) at the same speed.
        """
        if max_characters is not None and len(ids) > max_characters + 1:
            ids = ids[: max_characters + 1]
        total, count = 0.0, 0
        state = None
        for inputs, targets in evaluation_windows(ids, streams, window):
            if state is None:
                state = self.model.initial_state(len(inputs))
            loss, state = self.eval_step(inputs, targets, state)
            total += float(loss)
            count += targets.size
        if count == 0:
            raise ValueError("nothing to evaluate: the split has fewer than 2 characters")
        loss = total / count
        return {"loss": loss, "bpc": loss / math.log(2), "characters": count}


# One compiled sampler per model: tracing costs about a second, a sample then ~0.1 s.
_SAMPLERS = weakref.WeakKeyDictionary()


def sample_text(model, alphabet, prime, length, seed, temperature=1.0):
    """A sample continuing `prime`, the whole loop one compiled call (for logs, not serving)."""
    index = {c: i for i, c in enumerate(alphabet)}
    ids = [index[c] for c in prime if c in index] or [0]
    sampler = _SAMPLERS.get(model)
    if sampler is None:
        sampler = _SAMPLERS[model] = tf.function(functools.partial(_sample_loop, model))
    out = sampler(tf.constant([ids], tf.int32), tf.constant(length), tf.constant(temperature),
                  tf.constant(seed, tf.int64))
    return "".join(alphabet[i] for i in out.numpy())


def _sample_loop(model, ids, length, temperature, seed):
    logits, state = model([ids, model.initial_state(1)], training=False)

    def body(t, logits, state, out):
        next_id = sampling.sample(logits[:, -1], temperature, 0, 1.0, seed, 0, t)
        logits, state = model([next_id[:, None], state], training=False)
        return t + 1, logits, state, out.write(t, next_id[0])

    out = tf.TensorArray(tf.int32, size=length)
    _, _, _, out = tf.while_loop(lambda t, *_: t < length, body, (0, logits[:, -1:], state, out))
    return out.stack()


def set_seed(seed):
    keras.utils.set_random_seed(seed)
    np.random.seed(seed)
