"""Diagnostics of how gradients travel back through time.

Pure functions of a model (and a window): they neither train nor log, so
the trainer decides when to pay for them and the callbacks how to show them.
"""

import functools
import weakref

import numpy as np
import tensorflow as tf


def gradient_flow(model, ids, targets, state, training=False):
    """How much of the last step's loss reaches the state at each earlier step.

    Runs the model one step at a time through its public interface, so it
    works for every family, and differentiates the cross-entropy of the
    last step only, `L_T`, with respect to the state each step reads:
    `norms[t] = ||dL_T / ds_t||` where `s_0` is the carried-in `state` and
    `s_t` (t > 0) is the state after step `t - 1`. The state the last step
    writes is not included because the logits are not computed from it
    (they come from the layer's sequence output), so the nearest point the
    interface exposes is the state that step reads. The norm is taken over
    the whole `[batch, state_size]` gradient of the batch-mean loss, as the
    optimizer would see it.

    `norms[0] / norms[-1]` is the fraction of the gradient that survives
    `T - 1` steps back: tiny for a vanishing RNN, huge for an exploding one.
    A state the loss does not depend on (Arch 2 under teacher forcing, whose
    state only marks the start of a stream) gets 0.

    Args:
        model: a `zoo.CharLM`.
        ids: int `[batch, T]` input ids of one window.
        targets: int `[batch, T]` next-character ids; only the last column is used.
        state: float32 `[batch, model.state_size]`, the state carried into the window.
        training: bool. Passed to the model (dropout etc.).

    Returns:
        float64 numpy array `[T]`, `norms[t]` as above.
    """
    flow = _FLOWS.get(model)
    if flow is None:
        flow = _FLOWS[model] = tf.function(functools.partial(_flow, model))
    return flow(tf.convert_to_tensor(ids, tf.int32), tf.convert_to_tensor(targets, tf.int32),
                tf.convert_to_tensor(state, tf.float32), training).numpy().astype(np.float64)


# One compiled flow per model. The loop over steps is a tf.scan, traced once: a
# Python loop over T model calls takes 10-20 s to trace and ~3 s to run eagerly
# (LSTM-256, T=64, batch 64); the scan runs in a fraction of a second.
_FLOWS = weakref.WeakKeyDictionary()


def _flow(model, ids, targets, state, training):
    # dL/ds_t is the gradient with respect to a zero nudge added to the state step t reads.
    nudges = tf.zeros(tf.concat([tf.shape(ids)[1:2], tf.shape(state)], 0))
    with tf.GradientTape() as tape:
        tape.watch(nudges)

        def step(carry, inputs):
            ids_t, nudge = inputs
            return tuple(model([ids_t[:, None], carry[1] + nudge], training=training))

        no_logits = tf.zeros([tf.shape(ids)[0], 1, model.vocabulary_size])
        logits, _ = tf.scan(step, (tf.transpose(ids), nudges), initializer=(no_logits, state))
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(targets[:, -1], logits[-1][:, -1]))
    gradients = tape.gradient(loss, nudges, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.norm(gradients, axis=[1, 2])


def spectral_radius(matrix):
    """The largest |eigenvalue| of a square matrix, in float64."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(matrix, dtype=np.float64)))))


def largest_singular_value(matrix):
    """The largest singular value (spectral norm) of any matrix, in float64."""
    return float(np.linalg.norm(np.asarray(matrix, dtype=np.float64), ord=2))


def spectral_radii(model):
    """The spectral radius of every recurrent kernel of a model.

    The radius of the matrix that maps a state to the next one bounds how a
    small perturbation grows or shrinks per step (before the activation's
    slope), so above 1 gradients can explode and well below 1 they vanish.
    Each zoo layer names its matrices in `recurrent_kernels()`: Arch 1 the
    square part of W that loops through time, LSTM and GRU one block per gate.
    Arch 2's W maps the fed-back output to the hidden layer (`[vocabulary,
    units]`), not a state to the next: it has no eigenvalues, but its largest
    singular value bounds the gain of that path the same way.

    Args:
        model: a `zoo.CharLM` (or any model built from the zoo's layers).

    Returns:
        dict from name to float, in layer order, named so TensorBoard groups them:
        `spectral_radius/<layer>` (Arch 1), `spectral_radius/<layer>/<gate>`
        (LSTM, GRU) and `largest_singular_value/<layer>` (Arch 2).
    """
    radii = {}
    for layer in model.layers:
        maps_states = getattr(layer, "recurrent_kernels_map_states", True)
        for suffix, kernel in getattr(layer, "recurrent_kernels", dict)().items():
            kernel = np.asarray(kernel)
            if maps_states:
                radii[f"spectral_radius/{layer.name}{suffix}"] = spectral_radius(kernel)
            else:
                radii[f"largest_singular_value/{layer.name}{suffix}"] = largest_singular_value(kernel)
    return radii
