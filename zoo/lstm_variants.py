"""The LSTM variants the notes discuss: peephole connections, coupled input and
forget gates, and layer normalisation inside the recurrence.

Each cell keeps Keras' LSTM weights (`kernel`, `recurrent_kernel`, `bias`, the
gates side by side along the columns) and `[h, c]` state, so it runs inside
`keras.layers.RNN`; what a variant adds has its own clearly named weights.
Each sequence layer is `keras.layers.RNN` over its cell with the input
transform of the whole window moved out of the time loop (one matmul), as
Keras' LSTM does on cuDNN, and a loop whose backward pass computes the
recurrent kernel's gradient as one matmul (`zoo.loops.elementwise_cell_loop`).
"""

import keras
import tensorflow as tf
from keras import ops
# Private Keras: the class whose cells Keras' RNN makes a window's dropout masks for.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from zoo.arguments import check_positive, check_rate, normalize
from zoo.gated import GatedCharLMLayer, finish
from zoo.loops import elementwise_cell_loop, time_major


class LSTMVariantCell(keras.Layer, DropoutRNNCell):
    """What the variants share: Keras LSTM's weights and state, and variational
    dropout on `h` before the recurrent transform (one mask per window, as
    Keras' `recurrent_dropout`; Gal & Ghahramani 2016). Subclasses name their
    `gates` and write `combine`; `project(x)` is the input's part.

    Args:
        units: int. Width of `h` and `c`.
        recurrent_dropout: float in [0, 1). Rate of the mask on `h_{t-1}` in training.
        unit_forget_bias: bool. Start the forget gate's bias at one (Jozefowicz et al. 2015).
        kernel_initializer, recurrent_initializer, bias_initializer: Keras initializers.
        seed: int or None. Seed of the dropout masks.
    """

    gates = ()

    def __init__(self, units, recurrent_dropout=0.0, unit_forget_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", seed=None, **kwargs):
        super().__init__(**kwargs)
        check_positive("units", units)
        check_rate("recurrent_dropout", recurrent_dropout)
        self.units = units
        self.dropout = 0.0  # DropoutRNNCell's input mask: CharLM drops a layer's inputs itself
        self.recurrent_dropout = recurrent_dropout
        self.unit_forget_bias = unit_forget_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        width = len(self.gates) * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], width),
                                      initializer=self.kernel_initializer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width),
                                                initializer=self.recurrent_initializer,
                                                name="recurrent_kernel")

        def bias(shape, dtype=None):
            return ops.concatenate([
                ops.ones((self.units,), dtype) if gate == "forget" and self.unit_forget_bias
                else self.bias_initializer((self.units,), dtype) for gate in self.gates])

        self.bias = self.add_weight(shape=(width,), initializer=bias, name="bias")

    def project(self, inputs):
        """The input's part of the pre-activations, for one step or a whole window."""
        return ops.matmul(inputs, self.kernel) + self.bias

    def extras(self):
        """The variant's own weights, by name, as `combine` reads them."""
        return {}

    def combine(self, projected, recurrent, c, extras):
        """`(h_t, c_t)` from the input's part, `h_{t-1}·recurrent_kernel` and `c_{t-1}`:
        everything of a step but its two matmuls (so `zoo.loops` can run it fast)."""
        raise NotImplementedError

    def recurrent_step(self, projected, states, training=False):
        h, c = states
        if training and self.recurrent_dropout:
            h = h * self.get_recurrent_dropout_mask(h)
        h, c = self.combine(projected, ops.matmul(h, self.recurrent_kernel), c, self.extras())
        return h, [h, c]

    def call(self, inputs, states, training=False):
        return self.recurrent_step(self.project(inputs), states, training)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype) for _ in range(2)]

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "recurrent_dropout": self.recurrent_dropout,
                "unit_forget_bias": self.unit_forget_bias, "seed": self.seed,
                **{name: keras.initializers.serialize(getattr(self, name))
                   for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer")}}


@keras.saving.register_keras_serializable(package="charzoo")
class PeepholeLSTMCell(LSTMVariantCell):
    """An LSTM cell whose gates also look at the cell state (Gers & Schmidhuber 2000).

    The input and forget gates see `c_{t-1}`, the output gate the new `c_t`,
    each through a diagonal weight (a vector: one weight per unit):
    `i = σ(z_i + p_i⊙c_{t-1})`, `f = σ(z_f + p_f⊙c_{t-1})`,
    `c_t = f⊙c_{t-1} + i⊙tanh(z_c)`, `o = σ(z_o + p_o⊙c_t)`, `h_t = o⊙tanh(c_t)`,
    where `z = x·kernel + h_{t-1}·recurrent_kernel + bias`. The peepholes let
    the gates time their opening by the cell's contents, not only by `h`,
    which the output gate may have closed.

    Args: those of `LSTMVariantCell`.

    Example:
    >>> layer = keras.layers.RNN(PeepholeLSTMCell(8))
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    (2, 8)
    """

    gates = ("input", "forget", "cell", "output")

    def build(self, input_shape):
        super().build(input_shape)
        for gate in ("input", "forget", "output"):
            setattr(self, f"{gate}_peephole", self.add_weight(
                shape=(self.units,), initializer=self.kernel_initializer_for_peepholes(),
                name=f"{gate}_gate_peephole_weights"))

    def kernel_initializer_for_peepholes(self):
        # As TensorFlow's PeepholeLSTMCell: small random diagonal weights.
        return keras.initializers.RandomUniform(-0.1, 0.1, seed=self.seed)

    def extras(self):
        return {"input": self.input_peephole, "forget": self.forget_peephole,
                "output": self.output_peephole}

    def combine(self, projected, recurrent, c, peephole):
        z_i, z_f, z_c, z_o = ops.split(projected + recurrent, 4, axis=-1)
        i = ops.sigmoid(z_i + peephole["input"] * c)
        f = ops.sigmoid(z_f + peephole["forget"] * c)
        c = f * c + i * ops.tanh(z_c)
        o = ops.sigmoid(z_o + peephole["output"] * c)
        return o * ops.tanh(c), c


@keras.saving.register_keras_serializable(package="charzoo")
class CoupledInputForgetGateLSTMCell(LSTMVariantCell):
    """An LSTM cell with one gate for forgetting and writing ("CIFG", Greff et al. 2017).

    The input gate is `1 - f`: `c_t = f⊙c_{t-1} + (1 - f)⊙tanh(z_c)`, so the
    cell writes exactly as much as it forgets and `c` stays a convex mix of old
    and new. Three gates (forget, cell, output) instead of four: a quarter fewer
    weights and FLOPs at the same width, at no measured loss in the search of
    Greff et al. `h_t = σ(z_o)⊙tanh(c_t)`.

    Args: those of `LSTMVariantCell`.

    Example:
    >>> layer = keras.layers.RNN(CoupledInputForgetGateLSTMCell(8))
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    (2, 8)
    """

    gates = ("forget", "cell", "output")

    def combine(self, projected, recurrent, c, extras):
        z_f, z_c, z_o = ops.split(projected + recurrent, 3, axis=-1)
        f = ops.sigmoid(z_f)
        c = f * c + (1 - f) * ops.tanh(z_c)
        return ops.sigmoid(z_o) * ops.tanh(c), c


@keras.saving.register_keras_serializable(package="charzoo")
class LayerNormLSTMCell(LSTMVariantCell):
    """An LSTM cell with layer normalisation inside the recurrence (Ba et al. 2016).

    `z = LN(x·kernel)⊙g_x + LN(h_{t-1}·recurrent_kernel)⊙g_h + bias`, the four
    gates as in an LSTM, and `h_t = o⊙tanh(LN(c_t)⊙g_c + b_c)`; `c_t` itself
    is carried unnormalised. Each LN is over all the units (and gates) of one
    row, so the recurrent input keeps one scale whatever `h`'s scale, which
    steadies the gradient through time. The input and recurrent terms have
    gains only (`input_norm_gain`, `recurrent_norm_gain`): their shifts would
    duplicate `bias`. The cell's has both (`cell_norm_gain`, `cell_norm_bias`).

    Args: those of `LSTMVariantCell`.

    Example:
    >>> layer = keras.layers.RNN(LayerNormLSTMCell(8))
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    (2, 8)
    """

    gates = ("input", "forget", "cell", "output")

    def build(self, input_shape):
        super().build(input_shape)
        width = len(self.gates) * self.units
        self.input_norm_gain = self.add_weight(shape=(width,), initializer="ones",
                                               name="input_norm_gain")
        self.recurrent_norm_gain = self.add_weight(shape=(width,), initializer="ones",
                                                   name="recurrent_norm_gain")
        self.cell_norm_gain = self.add_weight(shape=(self.units,), initializer="ones",
                                              name="cell_norm_gain")
        self.cell_norm_bias = self.add_weight(shape=(self.units,), initializer="zeros",
                                              name="cell_norm_bias")

    def project(self, inputs):
        return normalize(ops.matmul(inputs, self.kernel), self.input_norm_gain) + self.bias

    def extras(self):
        return {"recurrent_gain": self.recurrent_norm_gain, "cell_gain": self.cell_norm_gain,
                "cell_bias": self.cell_norm_bias}

    def combine(self, projected, recurrent, c, norm):
        z = projected + normalize(recurrent, norm["recurrent_gain"])
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(z_f) * c + ops.sigmoid(z_i) * ops.tanh(z_c)
        shown = normalize(c, norm["cell_gain"], norm["cell_bias"])
        return ops.sigmoid(z_o) * ops.tanh(shown), c


class LSTMVariant(GatedCharLMLayer, keras.layers.RNN):
    """`keras.layers.RNN` over a variant cell, with the window's input transform
    before the time loop. Subclasses name their `cell_class`.

    Args:
        units: int. Width of `h` and `c` (unused when `cell` is given).
        recurrent_initializer: initializer of the recurrent kernel.
        recurrent_dropout: float in [0, 1). See `LSTMVariantCell`.
        cell: an already made cell (how `from_config` rebuilds the layer).
        **kwargs: `keras.layers.RNN`'s arguments (`return_sequences`, ...).
    """

    cell_class = None
    char_lm_arguments = ("units", "recurrent_initializer", "recurrent_dropout")

    def __init__(self, units=None, recurrent_initializer=None, recurrent_dropout=0.0, cell=None,
                 **kwargs):
        if cell is None:
            cell = self.cell_class(units, recurrent_initializer=recurrent_initializer or "orthogonal",
                                   recurrent_dropout=recurrent_dropout, dtype=kwargs.get("dtype"))
        super().__init__(cell, **kwargs)

    xla_compiles_training = True  # recurrent dropout stays inside the hand-written loop

    @property
    def gates(self):
        return self.cell.gates

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if mask is not None or self.go_backwards or self.unroll:
            return super().inner_loop(sequences, initial_state, mask, training)
        cell, (h0, c0) = self.cell, initial_state
        dropped = cell.get_recurrent_dropout_mask(h0) if training and cell.recurrent_dropout else None
        extras = cell.extras()

        def combine(projected, recurrent, carried, weights):
            h, c = cell.combine(projected, recurrent, carried[0], weights)
            return h, (c,)

        def value(weight):  # in the compute dtype, as Keras' autocast would give it
            return ops.cast(weight, self.compute_dtype)

        hs, cs = elementwise_cell_loop(combine, tuple(extras), 1)(
            time_major(cell.project(sequences)), value(cell.recurrent_kernel),
            tf.ones_like(h0) if dropped is None else dropped, h0, c0,
            *map(value, extras.values()))
        return finish(self, hs, [hs, cs])

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(config.pop("cell"))
        return cls(cell=cell, **config)


@keras.saving.register_keras_serializable(package="charzoo")
class PeepholeLSTM(LSTMVariant):
    """`keras.layers.RNN(PeepholeLSTMCell(units))` with the input transform out of the loop."""

    cell_class = PeepholeLSTMCell


@keras.saving.register_keras_serializable(package="charzoo")
class CoupledInputForgetGateLSTM(LSTMVariant):
    """`keras.layers.RNN(CoupledInputForgetGateLSTMCell(units))`, input transform out of the loop."""

    cell_class = CoupledInputForgetGateLSTMCell


@keras.saving.register_keras_serializable(package="charzoo")
class LayerNormLSTM(LSTMVariant):
    """`keras.layers.RNN(LayerNormLSTMCell(units))` with the input transform out of the loop."""

    cell_class = LayerNormLSTMCell
