"""The zoo's time loops: each a `tf.scan` forward pass with a hand-written backward pass.

Autodiff through `tf.scan` accumulates a recurrent kernel's gradient with one
small matmul per step. These loops instead carry only the state's gradient
back through time, keep what each step needs for it, and compute the kernel's
gradient after the loop as one large matmul over all steps (`weight_gradient`),
which a CPU runs several times faster than many small ones. Every loop works
on time-major tensors `[time, batch, ...]`.
"""

import keras
import tensorflow as tf


def time_major(x):
    """`[batch, time, ...]` <-> `[time, batch, ...]`."""
    return tf.transpose(x, [1, 0, 2])


def scan(step, sequence, initial, unroll=False):
    """Runs `state = step(state, sequence[:, t])` over batch-major time; returns all states.

    Plain autodiff: for loops whose gradient nobody needs fast (Arch 2 free-running),
    or `unroll=True` over a static window length.
    """
    if unroll and sequence.shape[1] is not None:
        states, state = [], initial
        for t in range(sequence.shape[1]):
            state = step(state, sequence[:, t])
            states.append(state)
        return tf.stack(states, axis=1)
    return time_major(tf.scan(step, time_major(sequence), initializer=initial))


def weight_gradient(previous, d_preactivation):
    """`sum_t previous_t^T · d_t`, a recurrent kernel's gradient, as one matmul over all steps."""
    return tf.matmul(tf.reshape(previous, [-1, previous.shape[-1]]),
                     tf.reshape(d_preactivation, [-1, d_preactivation.shape[-1]]), transpose_a=True)


def vanilla_loop(activation):
    """`h_t = act(driven_t + h_{t-1}·W)` as `loop(driven, h0, W) -> all h`, for act relu or tanh."""
    relu = activation is keras.activations.relu

    @tf.custom_gradient
    def loop(driven, initial, kernel):
        def step(state, driven_t):
            return activation(driven_t + tf.matmul(state, kernel))

        states = tf.scan(step, driven, initializer=initial)

        def grad(d_states):
            slope = tf.cast(states > 0, states.dtype) if relu else 1 - states * states

            def back(carry, inputs):
                d_state, slope_t = inputs
                d_preactivation = (d_state + carry[0]) * slope_t
                return tf.matmul(d_preactivation, kernel, transpose_b=True), d_preactivation

            zeros = tf.zeros_like(initial)
            d_initial, d_driven = tf.scan(back, (d_states, slope), initializer=(zeros, zeros),
                                          reverse=True)
            previous = tf.concat([initial[None], states[:-1]], 0)
            return d_driven, d_initial[0], weight_gradient(previous, d_driven)

        return states, grad

    return loop


def multiplicative_loop(activation):
    """`h_t = act(driven_t * (h_{t-1}·W + r))` as `loop(driven, h0, W, r) -> all h`
    (Arch 1 with `combine="mul"`), for act relu or tanh."""
    relu = activation is keras.activations.relu

    @tf.custom_gradient
    def loop(driven, initial, kernel, recurrent_bias):
        def step(state, driven_t):
            return activation(driven_t * (tf.matmul(state, kernel) + recurrent_bias))

        states = tf.scan(step, driven, initializer=initial)

        def grad(d_states):
            slope = tf.cast(states > 0, states.dtype) if relu else 1 - states * states
            previous = tf.concat([initial[None], states[:-1]], 0)
            gates = tf.einsum("tbi,ij->tbj", previous, kernel) + recurrent_bias  # h_{t-1}·W + r

            def back(carry, inputs):
                d_state, slope_t, driven_t = inputs
                d_gate = (d_state + carry[0]) * slope_t * driven_t
                return tf.matmul(d_gate, kernel, transpose_b=True), d_gate

            zeros = tf.zeros_like(initial)
            d_initial, d_gates = tf.scan(back, (d_states, slope, driven), initializer=(zeros, zeros),
                                         reverse=True)
            d_next = tf.concat([d_initial[1:], tf.zeros_like(initial)[None]], 0)  # from step t+1
            d_driven = (d_states + d_next) * slope * gates
            return (d_driven, d_initial[0], weight_gradient(previous, d_gates),
                    tf.reduce_sum(d_gates, axis=[0, 1]))

        return states, grad

    return loop


def product_in(dtype):
    """`product(a, b, **matmul_kwargs)`: `a·b` with `a` cast to `dtype` (`b` must already be),
    accumulated in float32 and rounded to `dtype` by the MatMul, returned as float32."""

    def product(a, b, **kwargs):
        return tf.cast(tf.matmul(tf.cast(a, dtype), b, **kwargs), tf.float32)

    return product


def lstm_step(z, c):
    """One LSTM step from its preactivations `z = x·W + b + h·U`: `(h, c, gates)`."""
    i, f, g, o = tf.split(z, 4, axis=-1)
    i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
    c = f * c + i * g
    return o * tf.tanh(c), c, tf.concat([i, f, g, o], -1)


def lstm_step_gradient(d_h, d_c, c, c_prev, gate):
    """`(dz, dc_prev)` of one step, from the gradients reaching its h and c."""
    i, f, g, o = tf.split(gate, 4, axis=-1)
    tanh_c = tf.tanh(c)
    dc = d_c + d_h * o * (1 - tanh_c * tanh_c)
    dz = tf.concat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                    dc * i * (1 - g * g), d_h * tanh_c * o * (1 - o)], -1)
    return dz, dc * f


def make_lstm_loop(product_dtype=tf.float32, step=lstm_step, step_gradient=lstm_step_gradient):
    """An LSTM loop over `projected = x·W + b` `[time, batch, 4n]`: `loop(projected, h0,
    c0, U) -> (all h, all c)`, its products in `product_dtype` (accumulated in float32,
    rounded to it; state, gates and gradients stay float32)."""

    product = product_in(product_dtype)

    @tf.custom_gradient
    def loop(projected, h0, c0, kernel):
        narrow_kernel = tf.cast(kernel, product_dtype)

        def forward(carry, z_x):
            h, c, _ = carry
            return step(z_x + product(h, narrow_kernel), c)

        gates0 = tf.zeros_like(projected[0])
        hs, cs, gates = tf.scan(forward, projected, initializer=(h0, c0, gates0))

        def grad(d_hs, d_cs):
            # An output nothing depends on may come back as None.
            d_hs = tf.zeros_like(hs) if d_hs is None else d_hs
            d_cs = tf.zeros_like(cs) if d_cs is None else d_cs
            previous_h = tf.concat([h0[None], hs[:-1]], 0)
            previous_c = tf.concat([c0[None], cs[:-1]], 0)

            def back(carry, inputs):
                d_h, d_c, c, c_prev, gate = inputs
                dz, dc = step_gradient(d_h + carry[0], d_c + carry[1], c, c_prev, gate)
                return product(dz, narrow_kernel, transpose_b=True), dc, dz

            dh0, dc0, dz = tf.scan(back, (d_hs, d_cs, cs, previous_c, gates), reverse=True,
                                   initializer=(tf.zeros_like(h0), tf.zeros_like(c0), gates0))
            narrow = [tf.cast(t, product_dtype) for t in (previous_h, dz)]
            return dz, dh0[0], dc0[0], tf.cast(weight_gradient(*narrow), tf.float32)

        return (hs, cs), grad

    return loop


# For XLA: the whole loop, forward and backward, compiles into the train step.
lstm_loop = make_lstm_loop()

# For a CPU whose matrix units multiply bfloat16 (AMX): XLA's dot does not use them, and
# TensorFlow's own MatMul (oneDNN) does, so this loop runs outside XLA, each step's
# element-wise work one small compiled call (without XLA it would be ~15 ops a step).
# See `training.step.bfloat16_for` for where it was measured faster.
bfloat16_lstm_loop = make_lstm_loop(
    tf.bfloat16, tf.function(lstm_step, jit_compile=True, autograph=False),
    tf.function(lstm_step_gradient, jit_compile=True, autograph=False))


def gru_step(x, hidden_product, recurrent_bias, h):
    """One GRU step (reset after) from `x·W + b_in` and `h·U`: `(h, kept for the gradient)`."""
    x_z, x_r, x_h = tf.split(x, 3, axis=-1)
    r_z, r_r, r_h = tf.split(hidden_product + recurrent_bias, 3, axis=-1)
    z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
    candidate = tf.tanh(x_h + r * r_h)
    return z * h + (1 - z) * candidate, tf.concat([z, r, candidate, r_h], -1)


def gru_step_gradient(dh, h_prev, kept):
    """From the gradient reaching a step's h: `(its part that reaches h_prev directly,
    d(x·W + b_in), d(h_prev·U + b_rec))`."""
    z, r, candidate, r_h = tf.split(kept, 4, axis=-1)
    d_candidate = dh * (1 - z) * (1 - candidate * candidate)
    d_z = dh * (h_prev - candidate) * z * (1 - z)
    d_r = d_candidate * r_h * r * (1 - r)
    return (dh * z, tf.concat([d_z, d_r, d_candidate], -1),
            tf.concat([d_z, d_r, d_candidate * r], -1))


def make_gru_loop(product_dtype=tf.float32, step=gru_step, step_gradient=gru_step_gradient):
    """A GRU loop (reset after) over `projected = x·W + b_in` `[time, batch, 3n]`:
    `loop(projected, h0, U, b_rec) -> all h`, its products in `product_dtype` as in
    `make_lstm_loop`."""

    product = product_in(product_dtype)

    @tf.custom_gradient
    def loop(projected, h0, kernel, bias):
        narrow_kernel = tf.cast(kernel, product_dtype)

        def forward(carry, x):
            return step(x, product(carry[0], narrow_kernel), bias, carry[0])

        saved0 = tf.zeros_like(tf.concat([projected[0], h0], -1))
        hs, saved = tf.scan(forward, projected, initializer=(h0, saved0))

        def grad(d_hs):
            previous = tf.concat([h0[None], hs[:-1]], 0)

            def back(carry, inputs):
                d_h, h_prev, kept = inputs
                d_through, d_x, d_inner = step_gradient(d_h + carry[0], h_prev, kept)
                return d_through + product(d_inner, narrow_kernel, transpose_b=True), d_x, d_inner

            zeros = tf.zeros_like(projected[0])
            dh0, d_x, d_inner = tf.scan(back, (d_hs, previous, saved), reverse=True,
                                        initializer=(tf.zeros_like(h0), zeros, zeros))
            narrow = [tf.cast(t, product_dtype) for t in (previous, d_inner)]
            return (d_x, dh0[0], tf.cast(weight_gradient(*narrow), tf.float32),
                    tf.reduce_sum(d_inner, axis=[0, 1]))

        return hs, grad

    return loop


gru_loop = make_gru_loop()  # as lstm_loop and bfloat16_lstm_loop
bfloat16_gru_loop = make_gru_loop(
    tf.bfloat16, tf.function(gru_step, jit_compile=True, autograph=False),
    tf.function(gru_step_gradient, jit_compile=True, autograph=False))


def elementwise_cell_loop(combine, names, carried_count):
    """A cell whose only matmul is the recurrent one, as `loop(projected, W, mask, h0,
    *carried0, *extras) -> (all h, *all carried)`: `combine(p_t, r_t, carried, extras)`
    gives `(h_t, carried_t)` from `r_t = (mask⊙h_{t-1})·W`, where `carried` is a tuple
    of `carried_count` further states (an LSTM's c; none for Arch 1) and `extras` a
    dict of `names` to the cell's other weights. The backward pass differentiates
    `combine` one step at a time (autodiff of a small, matmul-free function) and
    computes W's gradient after the loop, as the hand-written loops above do."""

    @tf.custom_gradient
    def loop(projected, kernel, mask, h0, *rest):
        carried0, extras = rest[:carried_count], rest[carried_count:]

        def step(state, p_t):
            h, carried = state[0], state[1:-1]
            r = tf.matmul(h * mask, kernel)
            h, carried = combine(p_t, r, carried, dict(zip(names, extras)))
            return (h, *carried, r)

        r0 = tf.zeros_like(projected[0])
        hs, *carried_all, rs = tf.scan(step, projected, initializer=(h0, *carried0, r0))

        def grad(d_hs, *d_carried):
            d_hs = tf.zeros_like(hs) if d_hs is None else d_hs
            d_carried = [tf.zeros_like(c) if d is None else d for c, d in zip(carried_all, d_carried)]
            previous = [tf.concat([c0[None], c[:-1]], 0) for c0, c in zip(carried0, carried_all)]

            def back(state, inputs):
                dh_next, d_next = state[0], state[1:1 + carried_count]
                p_t, r_t, d_h, *rest_t = inputs
                carried_prev, d_carried_t = rest_t[:carried_count], rest_t[carried_count:]
                with tf.GradientTape() as tape:
                    tape.watch([p_t, r_t, *carried_prev, *extras])
                    h_t, carried_t = combine(p_t, r_t, tuple(carried_prev), dict(zip(names, extras)))
                dp, dr, *d_rest = tape.gradient(
                    [h_t, *carried_t], [p_t, r_t, *carried_prev, *extras],
                    output_gradients=[d_h + dh_next, *[d + n for d, n in zip(d_carried_t, d_next)]],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return (tf.matmul(dr, kernel, transpose_b=True) * mask, *d_rest[:carried_count], dp, dr,
                        *d_rest[carried_count:])

            zeros = (tf.zeros_like(h0), *map(tf.zeros_like, carried0), r0, r0, *map(tf.zeros_like, extras))
            out = tf.scan(back, (projected, rs, d_hs, *previous, *d_carried), initializer=zeros,
                          reverse=True)
            dh0, d_carried0 = out[0], out[1:1 + carried_count]
            dp, dr, d_extras = out[1 + carried_count], out[2 + carried_count], out[3 + carried_count:]
            previous_h = tf.concat([h0[None], hs[:-1]], 0) * mask
            return (dp, weight_gradient(previous_h, dr), None, dh0[0], *[d[0] for d in d_carried0],
                    *[tf.reduce_sum(d, 0) for d in d_extras])

        return (hs, *carried_all), grad

    return loop
