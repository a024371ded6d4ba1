"""Arch 1, the vanilla RNN whose hidden layer is fed back: its cell and its sequence layer.

`Arch1Cell` follows Keras' cell contract, so it runs inside `keras.layers.RNN`
on any float sequences. `Arch1` computes exactly what `keras.layers.RNN(Arch1Cell)`
computes over a whole window, with every input-only computation moved out of
the time loop: with character ids as inputs anything computed from one
character alone takes one of `vocabulary_size` values, so it is computed once
per class as a small table and gathered. What is left inside the loop is one
`[batch, n] x [n, n]` matmul per step.
"""

import keras
import tensorflow as tf
from keras import ops
# Private Keras: the class whose cells Keras' RNN makes a window's dropout masks for.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from zoo import arguments
from zoo.arguments import check_choice, check_positive, check_rate, default_kernel_initializer
from zoo.loops import elementwise_cell_loop, multiplicative_loop, scan, time_major, vanilla_loop

COMBINES = ("concat", "add", "mul")


@keras.saving.register_keras_serializable(package="charzoo")
class Arch1Cell(keras.Layer, DropoutRNNCell):
    """Arch 1: a vanilla RNN cell whose hidden layer is fed back.

    With `combine="concat"` (the reference design) the input and the previous
    hidden state are transformed separately and concatenated:
    `h_t = act([x_t·U, h_{t-1}·W] + b)`, so the state has `2 * units`
    entries and `W` is `[2 * units, units]`. With `combine="add"` they are
    summed: `h_t = act(x_t·U + h_{t-1}·W + b)` with a `[units, units]` `W`.
    With `combine="mul"` they are multiplied element-wise:
    `h_t = act((x_t·U + b) * (h_{t-1}·W + r))`, state `units` wide. The
    product makes the input choose, per unit, how much of the recurrent signal
    passes: `dh_t/dh_{t-1} = diag(act' * (x_t·U + b)) W^T`, so the gradient
    through time is scaled by the inputs and vanishes or grows with them rather
    than with `W` alone. `r` (`recurrent_bias`, initialised to ones) lets a
    zero state start: without it `0·W` would multiply every input to zero and
    the state would stay zero (so `use_bias=False` is refused with `"mul"`).
    The cell's output is `h_t`; the output projection belongs to the model.

    With `layer_norm=True` (`combine="add"` only) the summed pre-activation is
    normalised inside the recurrence (Ba et al. 2016):
    `h_t = act(LN(x_t·U + h_{t-1}·W)⊙g + b)`, with the gain `g` (`norm_gain`)
    and `b` as the shift. Whatever the scale of `h`, the next step's input has
    one scale, so the gradient through time neither explodes with a large `W`
    nor dies with a small one as fast.

    With `recurrent_dropout` the previous state is multiplied by a dropout
    mask before `·W` in training, one mask for every step of a window
    (variational dropout, Gal & Ghahramani 2016): a unit dropped at one step
    is dropped at all, so the noise does not compound through time.

    Args:
        units: int. Width of each transform `x·U` and `h·W`.
        activation: `"relu"` or `"tanh"`.
        combine: `"concat"`, `"add"` or `"mul"`.
        use_bias: bool. Whether to add the bias `b` (and `r` with `"mul"`).
        kernel_initializer: initializer of `kernel` (U).
        recurrent_initializer: initializer of `recurrent_kernel` (W).
        bias_initializer: initializer of `bias` (b).
        layer_norm: bool. Normalise the pre-activation (`combine="add"` only).
        recurrent_dropout: float in [0, 1). Rate of the mask on `h_{t-1}` in training.
        seed: int or None. Seed of the dropout masks.

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
        layer_norm=False,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("units", units)
        check_choice("combine", combine, COMBINES)
        check_rate("recurrent_dropout", recurrent_dropout)
        if layer_norm and combine != "add":
            raise ValueError("layer_norm=True needs combine='add': it normalises the summed "
                             "pre-activation (Ba et al. 2016)")
        if combine == "mul" and not use_bias:
            raise ValueError("combine='mul' needs its biases: with a zero state and no recurrent "
                             "bias the product is zero at every step")
        self.units = units
        self.activation = arguments.activation(activation)
        self.combine = combine
        self.use_bias = use_bias
        self.kernel_initializer = arguments.kernel_initializer(kernel_initializer)
        self.recurrent_initializer = arguments.kernel_initializer(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.layer_norm = layer_norm
        self.dropout = 0.0  # DropoutRNNCell's input mask: CharLM drops a layer's inputs itself
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        if recurrent_dropout:  # only then: a generator draws its seed from the global one,
            # which would change every later initialisation of a model without dropout
            self.seed_generator = keras.random.SeedGenerator(seed)
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
        if self.combine == "mul":
            self.recurrent_bias = self.add_weight(shape=(self.units,), initializer="ones",
                                                  name="recurrent_bias")
        if self.layer_norm:
            self.norm_gain = self.add_weight(shape=(self.units,), initializer="ones", name="norm_gain")

    def recurrent_step(self, projected, previous_state):
        """One step from an already projected input `x_t·U`."""
        recurrent = ops.matmul(previous_state, self.recurrent_kernel)
        if self.combine == "mul":
            return self.activation((projected + self.bias) * (recurrent + self.recurrent_bias))
        if self.combine == "concat":
            preactivation = ops.concatenate([projected, recurrent], axis=-1)
        else:
            preactivation = projected + recurrent
        if self.layer_norm:
            preactivation = arguments.normalize(preactivation, self.norm_gain)
        if self.bias is not None:
            preactivation = preactivation + self.bias
        return self.activation(preactivation)

    def call(self, inputs, states, training=False):
        previous = arguments.single_state(states)
        if training and self.recurrent_dropout:
            previous = previous * self.get_recurrent_dropout_mask(previous)
        state = self.recurrent_step(ops.matmul(inputs, self.kernel), previous)
        return state, [state]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "combine": self.combine,
                "use_bias": self.use_bias,
                "layer_norm": self.layer_norm,
                "recurrent_dropout": self.recurrent_dropout,
                "seed": self.seed,
                **arguments.initializers_config(self),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="charzoo")
class Arch1(keras.Layer):
    """Arch 1 over a whole sequence, carrying the state in and out.

    Computes exactly what `keras.layers.RNN(Arch1Cell(...))` computes, with
    the work that does not depend on the previous step done once per window.
    The cell's arguments are exposed as read-only properties.

    Args:
        units: int. See `Arch1Cell`.
        vocabulary_size: int or None. If set, the inputs are integer ids in
            `[0, vocabulary_size)` (a one-hot input, done as a row gather of
            U); otherwise they are float features `[batch, time, dim]`.
        activation: `"relu"` or `"tanh"`.
        combine: `"concat"`, `"add"` or `"mul"`.
        use_bias: bool.
        kernel_initializer: initializer of U.
        recurrent_initializer: initializer of W.
        bias_initializer: initializer of b.
        unroll: bool. Unroll the time loop when the window length is static.
        layer_norm: bool. See `Arch1Cell`.
        recurrent_dropout: float in [0, 1). See `Arch1Cell`.
        seed: int or None. Seed of the dropout masks.

    Example:
    >>> layer = Arch1(units=8, vocabulary_size=27)
    >>> sequence, state = layer(np.zeros((2, 5), "int32"), np.zeros((2, 16), "float32"))
    >>> sequence.shape, state.shape
    ((2, 5, 16), (2, 16))
    """

    # For `zoo.CharLM`: the first layer of a stack reads ids, and a Dense layer makes the logits.
    reads_ids = True
    emits_logits = False
    logits_initializer = staticmethod(default_kernel_initializer)
    char_lm_arguments = ("units", "activation", "combine", "recurrent_initializer", "unroll",
                         "layer_norm", "recurrent_dropout")

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
        layer_norm=False,
        recurrent_dropout=0.0,
        seed=None,
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
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            name="cell",
        )
        self.vocabulary_size = vocabulary_size
        self.unroll = unroll
        self.state_size = self.cell.state_size

    @classmethod
    def stacked(cls, index, vocabulary_size, **arguments):
        """Layer `index` of a `CharLM` stack: the first reads ids, the others features."""
        return cls(vocabulary_size=vocabulary_size if index == 0 else None, **arguments)

    units = property(lambda self: self.cell.units)
    activation = property(lambda self: self.cell.activation)
    combine = property(lambda self: self.cell.combine)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    layer_norm = property(lambda self: self.cell.layer_norm)
    recurrent_dropout = property(lambda self: self.cell.recurrent_dropout)
    seed = property(lambda self: self.cell.seed)

    def build(self, inputs_shape, initial_state_shape=None):
        self.cell.build((None, self.vocabulary_size or inputs_shape[-1]))

    def run(self, inputs, state, ids):
        """`(sequence, new_state)`; the `zoo.CharLM` interface of every family's layer."""
        return self(inputs, state)

    def call(self, inputs, initial_state, training=False):
        cell = self.cell
        dropped = training and cell.recurrent_dropout > 0
        # The window's mask, cached in the cell where Keras' RNN would make it.
        mask = cell.get_recurrent_dropout_mask(initial_state) if dropped else None
        try:
            if self.unroll and inputs.shape[1] is not None:
                kept = (lambda state: state) if mask is None else (lambda state: state * mask)
                sequence = scan(lambda state, projected_t: cell.recurrent_step(projected_t, kept(state)),
                                self.project(inputs), initial_state, unroll=True)
            elif dropped or self.layer_norm:
                sequence = self.elementwise(inputs, initial_state, mask)
            else:
                sequence = self.fused(inputs, initial_state)
        finally:
            cell.reset_recurrent_dropout_mask()
        return sequence, sequence[:, -1]

    def project(self, inputs):
        """`x·U` for a window: a row gather of U when the inputs are ids."""
        kernel = self.cell.kernel
        if self.vocabulary_size is not None:
            return ops.take(kernel, inputs, axis=0)
        return ops.matmul(inputs, kernel)

    def bias(self):
        cell = self.cell
        return cell.bias if cell.bias is not None else ops.zeros((cell.state_size,))

    def fused(self, inputs, initial_state):
        """The loops with hand-written gradients for the matmul after the state: the
        fastest path, for every combine without layer norm or recurrent dropout."""
        cell, n, bias = self.cell, self.units, self.bias()
        if self.combine == "mul":
            loop = multiplicative_loop(self.activation)
            return time_major(loop(time_major(self.project(inputs) + bias), initial_state,
                                   tf.identity(cell.recurrent_kernel), tf.identity(cell.recurrent_bias)))
        if self.combine == "add":
            loop = vanilla_loop(self.activation)
            return time_major(loop(time_major(self.project(inputs) + bias), initial_state,
                                   tf.identity(cell.recurrent_kernel)))
        # concat: h_t = [act(x_t·U + b_in), act(h_{t-1}·W + b_rec)]: the first half never
        # sees the past, so it and its contribution to the next step's second half are
        # computed for the whole window at once.
        carried_kernel = cell.recurrent_kernel[:n]
        from_start = ops.matmul(initial_state[:, None, :n], carried_kernel)
        if self.vocabulary_size is not None:
            first_table = self.activation(cell.kernel + bias[:n])
            first = ops.take(first_table, inputs, axis=0)
            carried = ops.take(ops.matmul(first_table, carried_kernel), inputs[:, :-1], axis=0)
        else:
            first = self.activation(self.project(inputs) + bias[:n])
            carried = ops.matmul(first[:, :-1], carried_kernel)
        driven = ops.concatenate([from_start, carried], axis=1) + bias[n:]
        loop = vanilla_loop(self.activation)
        recurrent = time_major(loop(time_major(driven), initial_state[:, n:],
                                    tf.identity(cell.recurrent_kernel[n:])))
        return ops.concatenate([first, recurrent], -1)

    def elementwise(self, inputs, initial_state, mask):
        """Layer norm or recurrent dropout: something sits between the state and its matmul,
        or between the sum and the activation, so the loop is `zoo.loops`' generic one,
        which differentiates a step by autodiff (and compiles with XLA)."""
        cell, n, act = self.cell, self.units, self.activation
        if self.combine == "mul":
            def combine(projected_t, recurrent, carried, weights):
                gate = recurrent + weights["recurrent_bias"]
                return act((projected_t + weights["bias"]) * gate), ()
            extras = {"bias": self.bias(), "recurrent_bias": cell.recurrent_bias}
        elif self.combine == "concat":  # the input half is the loop's too: it is elementwise
            def combine(projected_t, recurrent, carried, weights):
                bias = weights["bias"]
                return ops.concatenate([act(projected_t + bias[:n]), act(recurrent + bias[n:])], -1), ()
            extras = {"bias": self.bias()}
        elif self.layer_norm:
            def combine(projected_t, recurrent, carried, weights):
                preactivation = arguments.normalize(projected_t + recurrent, weights["gain"])
                return act(preactivation + weights["bias"]), ()
            extras = {"gain": cell.norm_gain, "bias": self.bias()}
        else:
            def combine(projected_t, recurrent, carried, weights):
                return act(projected_t + recurrent + weights["bias"]), ()
            extras = {"bias": self.bias()}
        (states,) = elementwise_cell_loop(combine, tuple(extras), 0)(
            time_major(self.project(inputs)), tf.identity(cell.recurrent_kernel),
            tf.ones_like(initial_state) if mask is None else mask, initial_state,
            *map(tf.identity, extras.values()))
        return time_major(states)

    def recurrent_kernels(self):
        """The matrices that carry the state from step to step, for diagnostics."""
        # With concat, the rows of W that read the input half only pass the previous
        # input on once; the only loop through time is the recurrent half's square W[n:].
        kernel = self.cell.recurrent_kernel
        return {"": kernel[self.units:] if self.combine == "concat" else kernel}

    def compute_output_spec(self, inputs, initial_state, training=False):
        batch, time = inputs.shape[0], inputs.shape[1]
        return (
            keras.KerasTensor((batch, time, self.state_size), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.state_size), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        for name in ("units", "activation", "combine", "use_bias", "kernel_initializer",
                     "recurrent_initializer", "bias_initializer", "layer_norm",
                     "recurrent_dropout", "seed"):
            config[name] = cell_config[name]
        config.update({"vocabulary_size": self.vocabulary_size, "unroll": self.unroll})
        return config
