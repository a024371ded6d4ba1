"""Arch 2, the vanilla RNN whose previous output is fed back: its cell and its sequence layer.

`Arch2Cell` follows Keras' cell contract and free-runs inside `keras.layers.RNN`.
`Arch2` runs a whole window of characters: under teacher forcing, and when
generating with sampled feedback, the fed-back one-hot of the previous
character is the one-hot of the current input, so every step is computed at
once from two per-class logit tables; only `feedback="probs"` needs the loop.
"""

import keras
from keras import ops

from zoo import arguments
from zoo.arguments import check_choice, check_positive
from zoo.loops import scan

FEEDBACKS = ("sample", "probs")


@keras.saving.register_keras_serializable(package="charzoo")
class Arch2Cell(keras.Layer):
    """Arch 2: a vanilla RNN cell whose previous output is fed back.

    `h_t = act([x_t·U, o_{t-1}·W] + b)`, `logits_t = h_t·V + c`, where
    `o_{t-1}` is a distribution over the `vocabulary_size` classes (zeros at
    the start). The cell's output is `logits_t` and its state is `o_t`.

    Stepped inside `keras.layers.RNN` the cell is free-running: `o_t` is the
    one-hot of a class sampled from `logits_t` (`feedback="sample"`) or the
    full softmax (`feedback="probs"`). For training, `teacher_forced` runs a
    whole sequence at once with the true previous targets fed back, which
    needs no recurrence at all.

    Args:
        units: int. Width of each transform `x·U` and `o·W`; `h` has
            `2 * units` entries.
        vocabulary_size: int. Number of output classes, the size of `o`.
        activation: `"tanh"` (the reference) or `"relu"`.
        feedback: `"sample"` or `"probs"`, what is fed back when free-running.
        use_bias: bool. Whether to add the biases `b` and `c`.
        kernel_initializer: initializer of `kernel` (U) and
            `output_kernel` (V).
        recurrent_initializer: initializer of `recurrent_kernel` (W).
        bias_initializer: initializer of `bias` (b) and `output_bias` (c).
        seed: int or None. Seed of the free-running sampler.

    Example:
    >>> cell = Arch2Cell(units=4, vocabulary_size=27)
    >>> logits = keras.layers.RNN(cell, return_sequences=True)(np.zeros((2, 5, 27)))
    >>> logits.shape
    (2, 5, 27)
    """

    def __init__(
        self,
        units,
        vocabulary_size,
        activation="tanh",
        feedback="sample",
        use_bias=True,
        kernel_initializer=None,
        recurrent_initializer=None,
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("units", units)
        check_positive("vocabulary_size", vocabulary_size)
        check_choice("feedback", feedback, FEEDBACKS)
        self.units = units
        self.vocabulary_size = vocabulary_size
        self.activation = arguments.activation(activation)
        self.feedback = feedback
        self.use_bias = use_bias
        self.kernel_initializer = arguments.kernel_initializer(kernel_initializer)
        self.recurrent_initializer = arguments.kernel_initializer(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = vocabulary_size
        self.output_size = vocabulary_size

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.vocabulary_size, self.units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        self.output_kernel = self.add_weight(
            shape=(2 * self.units, self.vocabulary_size),
            initializer=self.kernel_initializer,
            name="output_kernel",
        )
        self.bias = self.output_bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(2 * self.units,), initializer=self.bias_initializer, name="bias"
            )
            self.output_bias = self.add_weight(
                shape=(self.vocabulary_size,),
                initializer=self.bias_initializer,
                name="output_bias",
            )

    def output_logits(self, projected, fed_back):
        """Logits from a projected input `x·U` and a fed-back `o`, any leading axes."""
        preactivation = ops.concatenate(
            [projected, ops.matmul(fed_back, self.recurrent_kernel)], axis=-1
        )
        if self.bias is not None:
            preactivation = preactivation + self.bias
        logits = ops.matmul(self.activation(preactivation), self.output_kernel)
        if self.output_bias is not None:
            logits = logits + self.output_bias
        return logits

    def logit_tables(self):
        """Per-class logit tables for one-hot inputs and one-hot feedback.

        With `x_t` and `o_{t-1}` one-hot, `logits_t = inputs_table[x_t] +
        feedback_table[o_{t-1}]`; row `vocabulary_size` of `feedback_table`
        stands for `o = 0`, the start of a stream. The output bias is in
        `inputs_table`.
        """
        n = self.units
        bias = self.bias if self.bias is not None else ops.zeros((2 * n,))
        fed_back = ops.concatenate(
            [self.recurrent_kernel, ops.zeros((1, n), dtype=self.recurrent_kernel.dtype)], axis=0
        )
        inputs_table = ops.matmul(self.activation(self.kernel + bias[:n]), self.output_kernel[:n])
        if self.output_bias is not None:
            inputs_table = inputs_table + self.output_bias
        feedback_table = ops.matmul(self.activation(fed_back + bias[n:]), self.output_kernel[n:])
        return inputs_table, feedback_table

    def teacher_forced(self, inputs, previous_targets):
        """Logits for a whole `[batch, time, dim]` sequence, all steps at once.

        `previous_targets[:, t]` is `o_{t-1}`: the one-hot (or distribution)
        of the true target of step `t - 1`.
        """
        if not self.built:
            self.build(inputs.shape)
        return self.output_logits(ops.matmul(inputs, self.kernel), previous_targets)

    def feed_back(self, logits):
        if self.feedback == "probs":
            return ops.softmax(logits)
        sampled = keras.random.categorical(logits, 1, seed=self.seed_generator)[:, 0]
        return ops.one_hot(sampled, self.vocabulary_size, dtype=logits.dtype)

    def call(self, inputs, states, training=False):
        state = arguments.single_state(states)
        logits = self.output_logits(ops.matmul(inputs, self.kernel), state)
        return logits, [self.feed_back(logits)]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "vocabulary_size": self.vocabulary_size,
                "activation": keras.activations.serialize(self.activation),
                "feedback": self.feedback,
                "use_bias": self.use_bias,
                **arguments.initializers_config(self),
                "seed": self.seed,
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
    the next, which needs the time loop. The cell's arguments are exposed as
    read-only properties.

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

    # For `zoo.CharLM`: every layer of a stack feeds back the input ids, and the
    # last layer's output already is the logits.
    reads_ids = True
    emits_logits = True
    char_lm_arguments = ("units", "activation", "feedback", "recurrent_initializer")

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
        self.token_inputs = token_inputs
        self.state_size = vocabulary_size

    @classmethod
    def stacked(cls, index, vocabulary_size, **arguments):
        """Layer `index` of a `CharLM` stack: the first reads ids, the others features."""
        return cls(vocabulary_size=vocabulary_size, token_inputs=index == 0, **arguments)

    units = property(lambda self: self.cell.units)
    vocabulary_size = property(lambda self: self.cell.vocabulary_size)
    activation = property(lambda self: self.cell.activation)
    feedback = property(lambda self: self.cell.feedback)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)

    def build(self, inputs_shape, initial_state_shape=None, feedback_ids_shape=None):
        input_dim = self.vocabulary_size if self.token_inputs else inputs_shape[-1]
        self.cell.build((None, input_dim))

    def run(self, inputs, state, ids):
        """`(logits, new_state)`; the `zoo.CharLM` interface of every family's layer."""
        return self(inputs, state, ids)

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
        if self.token_inputs:
            projected = ops.take(cell.kernel, inputs, axis=0)
        else:
            projected = ops.matmul(inputs, cell.kernel)
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

    # W maps the fed-back output to the hidden layer, not a state to the next state.
    recurrent_kernels_map_states = False

    def recurrent_kernels(self):
        """The matrix that carries the past into each step, for diagnostics."""
        return {"": self.cell.recurrent_kernel}

    def compute_output_spec(self, inputs, initial_state, feedback_ids, training=False):
        batch, time = inputs.shape[0], inputs.shape[1]
        return (
            keras.KerasTensor((batch, time, self.vocabulary_size), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.vocabulary_size), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        for name in ("units", "vocabulary_size", "activation", "feedback", "use_bias",
                     "kernel_initializer", "recurrent_initializer", "bias_initializer"):
            config[name] = cell_config[name]
        config["token_inputs"] = self.token_inputs
        return config
