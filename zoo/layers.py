"""Sequence layers that run Arch 1 and Arch 2 over whole windows.

They hold an `Arch1Cell` / `Arch2Cell` (so the weights and maths are the
cells') and do everything that does not depend on the previous step outside
the time loop. With character ids as inputs, anything computed from one
character alone takes one of `vocabulary_size` values, so it is computed once
per class as a small table and gathered: U's rows, Arch 1's input half and
its contribution to the next step, and all of Arch 2's teacher-forced logits.
What is left inside Arch 1's loop is one `[batch, n] x [n, n]` matmul per step.
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.cells import Arch1Cell, Arch2Cell, check_choice, check_positive, FEEDBACKS


def scan(step, sequence, initial, unroll=False):
    """Runs `state = step(state, sequence[:, t])` over time; returns all states."""
    if unroll and sequence.shape[1] is not None:
        states, state = [], initial
        for t in range(sequence.shape[1]):
            state = step(state, sequence[:, t])
            states.append(state)
        return tf.stack(states, axis=1)
    time_major = tf.transpose(sequence, [1, 0, 2])
    return tf.transpose(tf.scan(step, time_major, initializer=initial), [1, 0, 2])


def recurrence(activation):
    """`h_t = act(driven_t + h_{t-1}·W)` over time-major `driven`, with a hand-written gradient.

    Autodiff through `tf.scan` accumulates W's gradient with one small matmul
    per step; here the backward loop only carries `dh`, and W's gradient is a
    single matmul over all steps after it.
    """

    @tf.custom_gradient
    def loop(driven, initial, kernel):
        def step(state, driven_t):
            preactivation = driven_t + tf.matmul(state, kernel)
            return tf.nn.relu(preactivation) if activation == "relu" else tf.tanh(preactivation)

        states = tf.scan(step, driven, initializer=initial)

        def grad(d_states):
            slope = tf.cast(states > 0, states.dtype) if activation == "relu" else 1 - states * states

            def back(carry, inputs):
                d_state, slope_t = inputs
                d_preactivation = (d_state + carry[0]) * slope_t
                return tf.matmul(d_preactivation, kernel, transpose_b=True), d_preactivation

            zeros = tf.zeros_like(initial)
            d_initial, d_driven = tf.scan(back, (d_states, slope), initializer=(zeros, zeros),
                                          reverse=True)
            previous = tf.concat([initial[None], states[:-1]], 0)
            d_kernel = tf.matmul(tf.reshape(previous, [-1, previous.shape[-1]]),
                                 tf.reshape(d_driven, [-1, d_driven.shape[-1]]), transpose_a=True)
            return d_driven, d_initial[0], d_kernel

        return states, grad

    return loop


def project(cell, inputs, token_inputs):
    if token_inputs:
        return ops.take(cell.kernel, inputs, axis=0)
    return ops.matmul(inputs, cell.kernel)


@keras.saving.register_keras_serializable(package="charzoo")
class Arch1(keras.Layer):
    """Arch 1 over a whole sequence, carrying the state in and out.

    Computes exactly what `keras.layers.RNN(Arch1Cell(...))` computes, with
    the work that does not depend on the previous step done once per window.

    Args:
        units: int. See `Arch1Cell`.
        vocabulary_size: int or None. If set, the inputs are integer ids in
            `[0, vocabulary_size)` (a one-hot input, done as a row gather of
            U); otherwise they are float features `[batch, time, dim]`.
        activation: `"relu"` or `"tanh"`.
        combine: `"concat"` or `"add"`.
        use_bias: bool.
        kernel_initializer: initializer of U.
        recurrent_initializer: initializer of W.
        bias_initializer: initializer of b.
        unroll: bool. Unroll the time loop when the window length is static.

    Example:
    >>> layer = Arch1(units=8, vocabulary_size=27)
    >>> sequence, state = layer(np.zeros((2, 5), "int32"), np.zeros((2, 16), "float32"))
    >>> sequence.shape, state.shape
    ((2, 5, 16), (2, 16))
    """

    def __init__(
        self,
        units,
        vocabulary_size=None,
        activation="relu",
        combine="concat",
        use_bias=True,
        kernel_initializer=None,
        recurrent_initializer=None,
        bias_initializer="zeros",
        unroll=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if vocabulary_size is not None:
            check_positive("vocabulary_size", vocabulary_size)
        self.cell = Arch1Cell(
            units,
            activation=activation,
            combine=combine,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            name="cell",
        )
        self.units = units
        self.vocabulary_size = vocabulary_size
        self.activation = activation
        self.combine = combine
        self.use_bias = use_bias
        self.unroll = unroll
        self.state_size = self.cell.state_size

    def build(self, inputs_shape, initial_state_shape=None):
        input_dim = self.vocabulary_size or inputs_shape[-1]
        self.cell.build((None, input_dim))

    def call(self, inputs, initial_state):
        cell, n = self.cell, self.units
        token_inputs = self.vocabulary_size is not None
        bias = cell.bias if cell.bias is not None else ops.zeros((cell.state_size,))
        if self.combine == "add":
            driven = project(cell, inputs, token_inputs) + bias
            recurrent_kernel = cell.recurrent_kernel
            previous = initial_state
        else:
            # h_t = [act(x_t·U + b_in), act(h_{t-1}·W + b_rec)]: the first half never
            # sees the past, so it and its contribution to the next step's second
            # half are computed for the whole window at once.
            carried_kernel = cell.recurrent_kernel[:n]
            from_start = ops.matmul(initial_state[:, None, :n], carried_kernel)
            if token_inputs:
                first_table = cell.activate(cell.kernel + bias[:n])
                first = ops.take(first_table, inputs, axis=0)
                carried = ops.take(ops.matmul(first_table, carried_kernel), inputs[:, :-1], axis=0)
            else:
                first = cell.activate(ops.matmul(inputs, cell.kernel) + bias[:n])
                carried = ops.matmul(first[:, :-1], carried_kernel)
            driven = ops.concatenate([from_start, carried], axis=1) + bias[n:]
            recurrent_kernel = cell.recurrent_kernel[n:]
            previous = initial_state[:, n:]

        if self.unroll and driven.shape[1] is not None:
            def step(state, driven_t):
                return cell.activate(driven_t + ops.matmul(state, recurrent_kernel))

            recurrent = scan(step, driven, previous, unroll=True)
        else:
            recurrent = tf.transpose(recurrence(self.activation)(
                tf.transpose(driven, [1, 0, 2]), previous, tf.identity(recurrent_kernel)), [1, 0, 2])
        sequence = recurrent if self.combine == "add" else ops.concatenate([first, recurrent], -1)
        return sequence, sequence[:, -1]

    def compute_output_spec(self, inputs, initial_state):
        batch, time = inputs.shape[0], inputs.shape[1]
        return (
            keras.KerasTensor((batch, time, self.state_size), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.state_size), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        config.update(
            {
                "units": self.units,
                "vocabulary_size": self.vocabulary_size,
                "activation": self.activation,
                "combine": self.combine,
                "use_bias": self.use_bias,
                "kernel_initializer": cell_config["kernel_initializer"],
                "recurrent_initializer": cell_config["recurrent_initializer"],
                "bias_initializer": cell_config["bias_initializer"],
                "unroll": self.unroll,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="charzoo")
class Arch2(keras.Layer):
    """Arch 2 over a whole sequence of characters, carrying the state in and out.

    The state is the fed-back `o`. In training (teacher forcing) and when
    free-running with sampled feedback, the fed-back one-hot of the previous
    character is the one-hot of the current input id (`feedback_ids`), so all
    steps are computed at once; the state then only records whether a
    previous character exists (zeros at the start of a stream). With
    `feedback="probs"` outside training, the softmax of each step is fed to
    the next, which needs the time loop.

    Args:
        units: int. See `Arch2Cell`.
        vocabulary_size: int. Size of the alphabet, and of `o`.
        token_inputs: bool. Whether the inputs are ids (else float features,
            as in the upper layers of a stack).
        activation: `"tanh"` or `"relu"`.
        feedback: `"sample"` or `"probs"`, what is fed back when generating.
        use_bias: bool.
        kernel_initializer: initializer of U and V.
        recurrent_initializer: initializer of W.
        bias_initializer: initializer of b and c.

    Example:
    >>> layer = Arch2(units=4, vocabulary_size=27)
    >>> ids = np.zeros((2, 5), "int32")
    >>> logits, state = layer(ids, np.zeros((2, 27), "float32"), ids)
    >>> logits.shape
    (2, 5, 27)
    """

    def __init__(
        self,
        units,
        vocabulary_size,
        token_inputs=True,
        activation="tanh",
        feedback="sample",
        use_bias=True,
        kernel_initializer=None,
        recurrent_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("feedback", feedback, FEEDBACKS)
        self.cell = Arch2Cell(
            units,
            vocabulary_size,
            activation=activation,
            feedback=feedback,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            name="cell",
        )
        self.units = units
        self.vocabulary_size = vocabulary_size
        self.token_inputs = token_inputs
        self.activation = activation
        self.feedback = feedback
        self.use_bias = use_bias
        self.state_size = vocabulary_size

    def build(self, inputs_shape, initial_state_shape=None, feedback_ids_shape=None):
        input_dim = self.vocabulary_size if self.token_inputs else inputs_shape[-1]
        self.cell.build((None, input_dim))

    def call(self, inputs, initial_state, feedback_ids, training=False):
        cell, size = self.cell, self.vocabulary_size
        started = ops.max(initial_state, axis=-1, keepdims=True) > 0
        if (training or self.feedback == "sample") and self.token_inputs:
            # Each half of h depends on one class (x_t, or the fed-back o_{t-1}),
            # so the logits are a sum of two rows of per-class tables.
            input_table, feedback_table = cell.logit_tables()
            # Row `size` of the feedback table is the start of a stream, o = 0.
            first_feedback = ops.where(started[:, 0], feedback_ids[:, 0], size)
            feedback_rows = ops.concatenate([first_feedback[:, None], feedback_ids[:, 1:]], axis=1)
            logits = ops.take(input_table, inputs, axis=0) + ops.take(
                feedback_table, feedback_rows, axis=0
            )
            return logits, ops.one_hot(feedback_ids[:, -1], size, dtype="float32")
        projected = project(cell, inputs, self.token_inputs)
        if training or self.feedback == "sample":
            started = ops.cast(started, "float32")
            fed_back = ops.one_hot(feedback_ids, size, dtype="float32")
            fed_back = ops.concatenate(
                [fed_back[:, :1] * started[:, None], fed_back[:, 1:]], axis=1
            )
            last = ops.one_hot(feedback_ids[:, -1], size, dtype="float32")
            return cell.output_logits(projected, fed_back), last

        def step(fed, projected_t):
            return ops.softmax(cell.output_logits(projected_t, fed))

        # The loop carries softmax(logits); logits are recomputed from it once, in parallel.
        probabilities = scan(step, projected, initial_state)
        previous = ops.concatenate([initial_state[:, None], probabilities[:, :-1]], axis=1)
        return cell.output_logits(projected, previous), probabilities[:, -1]

    def compute_output_spec(self, inputs, initial_state, feedback_ids, training=False):
        batch, time = inputs.shape[0], inputs.shape[1]
        return (
            keras.KerasTensor((batch, time, self.vocabulary_size), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.vocabulary_size), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        config.update(
            {
                "units": self.units,
                "vocabulary_size": self.vocabulary_size,
                "token_inputs": self.token_inputs,
                "activation": self.activation,
                "feedback": self.feedback,
                "use_bias": self.use_bias,
                "kernel_initializer": cell_config["kernel_initializer"],
                "recurrent_initializer": cell_config["recurrent_initializer"],
                "bias_initializer": cell_config["bias_initializer"],
            }
        )
        return config
