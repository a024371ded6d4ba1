"""The two classic vanilla RNN cells, following the Keras cell contract.

Both cells take float feature vectors of any width, so they work inside
`keras.layers.RNN` on any sequence data. The zoo's character models use the
sequence layers in `zoo.layers`, which reuse these cells' weights and maths
but move every input-only computation out of the time loop.
"""

import keras
from keras import ops

ACTIVATIONS = ("relu", "tanh")
COMBINES = ("concat", "add")
FEEDBACKS = ("sample", "probs")


def default_kernel_initializer():
    # Truncated at two standard deviations, so every weight lies in [-0.1, 0.1].
    return keras.initializers.TruncatedNormal(mean=0.0, stddev=0.05)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}; valid choices are: {', '.join(map(repr, choices))}."
        )


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def single_state(states):
    return states[0] if isinstance(states, (list, tuple)) else states


@keras.saving.register_keras_serializable(package="charzoo")
class Arch1Cell(keras.Layer):
    """Arch 1: a vanilla RNN cell whose hidden layer is fed back.

    With `combine="concat"` (the reference design) the input and the previous
    hidden state are transformed separately and concatenated:
    `h_t = act([x_t·U, h_{t-1}·W] + b)`, so the state has `2 * units`
    entries and `W` is `[2 * units, units]`. With `combine="add"` they are
    summed: `h_t = act(x_t·U + h_{t-1}·W + b)` with a `[units, units]` `W`.
    The cell's output is `h_t`; the output projection belongs to the model.

    Args:
        units: int. Width of each transform `x·U` and `h·W`.
        activation: `"relu"` or `"tanh"`.
        combine: `"concat"` or `"add"`.
        use_bias: bool. Whether to add the bias `b`.
        kernel_initializer: initializer of `kernel` (U).
        recurrent_initializer: initializer of `recurrent_kernel` (W).
        bias_initializer: initializer of `bias` (b).

    Example:
    >>> layer = keras.layers.RNN(Arch1Cell(8), return_state=True)
    >>> output, state = layer(np.zeros((2, 5, 3), "float32"))
    >>> state.shape
    (2, 16)
    """

    def __init__(
        self,
        units,
        activation="relu",
        combine="concat",
        use_bias=True,
        kernel_initializer=None,
        recurrent_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("units", units)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("combine", combine, COMBINES)
        self.units = units
        self.activation = activation
        self.combine = combine
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_kernel_initializer()
        )
        self.recurrent_initializer = keras.initializers.get(
            recurrent_initializer or default_kernel_initializer()
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.state_size = 2 * units if combine == "concat" else units
        self.output_size = self.state_size

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.state_size, self.units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.state_size,), initializer=self.bias_initializer, name="bias"
            )

    def activate(self, x):
        return ops.relu(x) if self.activation == "relu" else ops.tanh(x)

    def recurrent_step(self, projected, previous_state):
        """One step from an already projected input `x_t·U`."""
        recurrent = ops.matmul(previous_state, self.recurrent_kernel)
        if self.combine == "concat":
            preactivation = ops.concatenate([projected, recurrent], axis=-1)
        else:
            preactivation = projected + recurrent
        if self.bias is not None:
            preactivation = preactivation + self.bias
        return self.activate(preactivation)

    def call(self, inputs, states, training=False):
        state = self.recurrent_step(ops.matmul(inputs, self.kernel), single_state(states))
        return state, [state]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": self.activation,
                "combine": self.combine,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


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
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("feedback", feedback, FEEDBACKS)
        self.units = units
        self.vocabulary_size = vocabulary_size
        self.activation = activation
        self.feedback = feedback
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_kernel_initializer()
        )
        self.recurrent_initializer = keras.initializers.get(
            recurrent_initializer or default_kernel_initializer()
        )
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
        hidden = self.activate(preactivation)
        logits = ops.matmul(hidden, self.output_kernel)
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
        inputs_table = ops.matmul(self.activate(self.kernel + bias[:n]), self.output_kernel[:n])
        if self.output_bias is not None:
            inputs_table = inputs_table + self.output_bias
        feedback_table = ops.matmul(self.activate(fed_back + bias[n:]), self.output_kernel[n:])
        return inputs_table, feedback_table

    activate = Arch1Cell.activate

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
        logits = self.output_logits(ops.matmul(inputs, self.kernel), single_state(states))
        return logits, [self.feed_back(logits)]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "vocabulary_size": self.vocabulary_size,
                "activation": self.activation,
                "feedback": self.feedback,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
