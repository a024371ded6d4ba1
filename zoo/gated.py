"""Keras' LSTM and GRU layers with a faster time loop on machines without a GPU.

The layers are `keras.layers.LSTM` / `keras.layers.GRU` (same weights,
config and checkpoints), so on a GPU Keras still picks cuDNN. Without a GPU,
Keras' generic loop multiplies each step's input by the kernel inside the
loop and lets autodiff accumulate the recurrent kernel's gradient step by
step. Here, as in cuDNN, the input transform of the whole window is one
matmul before the loop, and the loops in `zoo.loops` compute the recurrent
kernel's gradient as one large matmul after theirs. Keras' `inner_loop` is
the fast path's fallback whenever it would compute something else.
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.loops import bfloat16_gru_loop, bfloat16_lstm_loop, gru_loop, lstm_loop, time_major


def fast_path_applies(layer, mask, training):
    """Whether the CPU loop computes exactly what Keras' layer would."""
    cell = layer.cell
    return (mask is None and not (training and (cell.dropout or cell.recurrent_dropout))
            and not layer.go_backwards and layer.use_cudnn is not True
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not tf.config.list_logical_devices("GPU"))


def finish(layer, hs, states):
    """The `(last_output, outputs, states)` triple of Keras' `inner_loop`, from time-major states."""
    last = [s[-1] for s in states]
    outputs = time_major(hs) if layer.return_sequences else last[0][:, None]
    return last[0], outputs, last


class GatedCharLMLayer:
    """What `zoo.CharLM` needs of a gated layer beyond Keras' RNN: one flat state, one-hot
    inputs, per-gate kernels."""

    reads_ids = False  # Keras' layers read float features: the first layer reads one-hot ids
    emits_logits = False
    char_lm_arguments = ("units", "recurrent_initializer", "recurrent_dropout")
    gates = ()  # the gates in the order they sit along the columns of `recurrent_kernel`

    @property
    def xla_compiles_training(self):
        """Whether XLA can compile this layer's gradient inside the trainer's multi-step
        loop: it crashes (SIGSEGV, TF 2.21) on the autodiff of Keras' time loop there,
        which the fused loops avoid and recurrent dropout brings back. The bfloat16
        loops run outside XLA."""
        return not (self.cell.recurrent_dropout or getattr(self, "bfloat16_products", False))

    @staticmethod
    def logits_initializer():
        return "glorot_uniform"

    @classmethod
    def stacked(cls, index, vocabulary_size, recurrent_initializer=None, **arguments):
        # Keras' defaults (tanh, sigmoid, no recurrent dropout, bias, reset_after)
        # are what lets TensorFlow pick cuDNN on a GPU.
        extra = {"recurrent_initializer": recurrent_initializer} if recurrent_initializer else {}
        return cls(return_sequences=True, return_state=True, **arguments, **extra)

    def run(self, inputs, state, ids):
        """`(sequence, new_state)`, the states of Keras' layer (LSTM's h and c, GRU's h)
        as one flat state; `state_size` lists their sizes."""
        outputs = self(inputs, initial_state=list(ops.split(state, len(self.state_size), axis=-1)))
        return outputs[0], ops.concatenate(outputs[1:], axis=-1)

    def recurrent_kernels(self):
        """Each gate's block of the recurrent kernel, for diagnostics."""
        blocks = ops.split(self.cell.recurrent_kernel, len(self.gates), axis=1)
        return {f"/{gate}": block for gate, block in zip(self.gates, blocks)}


@keras.saving.register_keras_serializable(package="charzoo")
class LSTM(GatedCharLMLayer, keras.layers.LSTM):
    """`keras.layers.LSTM` with a fused CPU loop; see the module docstring."""

    gates = ("input", "forget", "cell", "output")
    bfloat16_products = False  # set by `training.step.Trainer`: see `zoo.loops.make_lstm_loop`

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not fast_path_applies(self, mask, training):
            return super().inner_loop(sequences, initial_state, mask, training)
        cell = self.cell
        projected = ops.matmul(time_major(sequences), cell.kernel)
        if cell.use_bias:
            projected = projected + cell.bias
        loop = bfloat16_lstm_loop if training and self.bfloat16_products else lstm_loop
        hs, cs = loop(projected, initial_state[0], initial_state[1],
                      tf.identity(cell.recurrent_kernel))
        return finish(self, hs, [hs, cs])


@keras.saving.register_keras_serializable(package="charzoo")
class GRU(GatedCharLMLayer, keras.layers.GRU):
    """`keras.layers.GRU` with a fused CPU loop (`reset_after=True`, Keras' default)."""

    gates = ("update", "reset", "candidate")
    bfloat16_products = False  # set by `training.step.Trainer`: see `zoo.loops.make_lstm_loop`

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not (self.cell.reset_after and fast_path_applies(self, mask, training)):
            return super().inner_loop(sequences, initial_state, mask, training)
        cell = self.cell
        projected = ops.matmul(time_major(sequences), cell.kernel)
        recurrent_bias = tf.zeros([3 * cell.units])
        if cell.use_bias:
            projected = projected + cell.bias[0]
            recurrent_bias = tf.identity(cell.bias[1])
        loop = bfloat16_gru_loop if training and self.bfloat16_products else gru_loop
        hs = loop(projected, initial_state[0], tf.identity(cell.recurrent_kernel), recurrent_bias)
        return finish(self, hs, [hs])
