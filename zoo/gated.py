"""Keras' LSTM and GRU layers with a faster time loop on machines without a GPU.

The layers are `keras.layers.LSTM` / `keras.layers.GRU` (same weights,
config and checkpoints), so on a GPU Keras still picks cuDNN. Without a GPU,
Keras' generic loop multiplies each step's input by the kernel inside the
loop and lets autodiff accumulate the recurrent kernel's gradient step by
step. Here, as in cuDNN, the input transform of the whole window is one
matmul before the loop, the loop keeps only `h·recurrent_kernel` and the
gates, and the backward pass computes the recurrent kernel's gradient as one
large matmul over all steps after its loop, which a CPU runs several times
faster than many small ones.
"""

import keras
import tensorflow as tf
from keras import ops


def fast_path_applies(layer, mask, training):
    """Whether the CPU loop computes exactly what Keras' layer would."""
    cell = layer.cell
    return (mask is None and not (training and (cell.dropout or cell.recurrent_dropout))
            and not layer.go_backwards and layer.use_cudnn is not True
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not tf.config.list_logical_devices("GPU"))


def time_major(x):
    return tf.transpose(x, [1, 0, 2])


def weight_gradient(previous, d_preactivation):
    """`sum_t previous_t^T · d_t` as one matmul over all time steps."""
    width = previous.shape[-1]
    return tf.matmul(tf.reshape(previous, [-1, width]),
                     tf.reshape(d_preactivation, [-1, d_preactivation.shape[-1]]), transpose_a=True)


@tf.custom_gradient
def lstm_loop(projected, h0, c0, kernel):
    """LSTM over time-major `projected = x·W + b` `[time, batch, 4n]`; returns all h, all c."""

    def step(carry, z_x):
        h, c, _ = carry
        i, f, g, o = tf.split(z_x + tf.matmul(h, kernel), 4, axis=-1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c = f * c + i * g
        return o * tf.tanh(c), c, tf.concat([i, f, g, o], -1)

    gates0 = tf.zeros_like(projected[0])
    hs, cs, gates = tf.scan(step, projected, initializer=(h0, c0, gates0))

    def grad(d_hs, d_cs):
        # An output nothing depends on may come back as None.
        d_hs = tf.zeros_like(hs) if d_hs is None else d_hs
        d_cs = tf.zeros_like(cs) if d_cs is None else d_cs
        previous_h = tf.concat([h0[None], hs[:-1]], 0)
        previous_c = tf.concat([c0[None], cs[:-1]], 0)

        def back(carry, inputs):
            dh_next, dc_next = carry[0], carry[1]
            d_h, d_c, c, c_prev, gate = inputs
            i, f, g, o = tf.split(gate, 4, axis=-1)
            dh = d_h + dh_next
            tanh_c = tf.tanh(c)
            dc = d_c + dc_next + dh * o * (1 - tanh_c * tanh_c)
            dz = tf.concat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                            dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], -1)
            return tf.matmul(dz, kernel, transpose_b=True), dc * f, dz

        dh0, dc0, dz = tf.scan(back, (d_hs, d_cs, cs, previous_c, gates), reverse=True,
                               initializer=(tf.zeros_like(h0), tf.zeros_like(c0), gates0))
        return dz, dh0[0], dc0[0], weight_gradient(previous_h, dz)

    return (hs, cs), grad


@tf.custom_gradient
def gru_loop(projected, h0, kernel, bias):
    """GRU (reset after) over time-major `projected = x·W + b_in`; returns all h."""

    def step(carry, x):
        h = carry[0]
        x_z, x_r, x_h = tf.split(x, 3, axis=-1)
        r_z, r_r, r_h = tf.split(tf.matmul(h, kernel) + bias, 3, axis=-1)
        z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        return z * h + (1 - z) * candidate, tf.concat([z, r, candidate, r_h], -1)

    saved0 = tf.zeros_like(tf.concat([projected[0], h0], -1))
    hs, saved = tf.scan(step, projected, initializer=(h0, saved0))

    def grad(d_hs):
        previous = tf.concat([h0[None], hs[:-1]], 0)

        def back(carry, inputs):
            d_h, h_prev, kept = inputs
            z, r, candidate, r_h = tf.split(kept, 4, axis=-1)
            dh = d_h + carry[0]
            d_candidate = dh * (1 - z) * (1 - candidate * candidate)
            d_z = dh * (h_prev - candidate) * z * (1 - z)
            d_r = d_candidate * r_h * r * (1 - r)
            d_inner = tf.concat([d_z, d_r, d_candidate * r], -1)
            d_x = tf.concat([d_z, d_r, d_candidate], -1)
            return dh * z + tf.matmul(d_inner, kernel, transpose_b=True), d_x, d_inner

        dh0, d_x, d_inner = tf.scan(
            back, (d_hs, previous, saved), reverse=True,
            initializer=(tf.zeros_like(h0), tf.zeros_like(projected[0]), tf.zeros_like(projected[0])))
        return (d_x, dh0[0], weight_gradient(previous, d_inner),
                tf.reduce_sum(d_inner, axis=[0, 1]))

    return hs, grad


def finish(layer, hs, states):
    """The `(last_output, outputs, states)` triple of Keras' `inner_loop`, from time-major states."""
    last = [s[-1] for s in states]
    outputs = time_major(hs) if layer.return_sequences else last[0][:, None]
    return last[0], outputs, last


@keras.saving.register_keras_serializable(package="charzoo")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with a fused CPU loop; see the module docstring."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not fast_path_applies(self, mask, training):
            return super().inner_loop(sequences, initial_state, mask, training)
        cell = self.cell
        projected = ops.matmul(time_major(sequences), cell.kernel)
        if cell.use_bias:
            projected = projected + cell.bias
        hs, cs = lstm_loop(projected, initial_state[0], initial_state[1],
                           tf.identity(cell.recurrent_kernel))
        return finish(self, hs, [hs, cs])


@keras.saving.register_keras_serializable(package="charzoo")
class GRU(keras.layers.GRU):
    """`keras.layers.GRU` with a fused CPU loop (`reset_after=True`, Keras' default)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not (self.cell.reset_after and fast_path_applies(self, mask, training)):
            return super().inner_loop(sequences, initial_state, mask, training)
        cell = self.cell
        projected = ops.matmul(time_major(sequences), cell.kernel)
        recurrent_bias = tf.zeros([3 * cell.units])
        if cell.use_bias:
            projected = projected + cell.bias[0]
            recurrent_bias = tf.identity(cell.bias[1])
        hs = gru_loop(projected, initial_state[0], tf.identity(cell.recurrent_kernel),
                      recurrent_bias)
        return finish(self, hs, [hs])
