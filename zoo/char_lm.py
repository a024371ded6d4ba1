"""One model interface for every family: `(ids, state) -> (logits, new_state)`."""

import keras
from keras import ops

from zoo.arch1 import Arch1
from zoo.arch2 import Arch2
from zoo.arguments import ACTIVATIONS, check_choice, check_positive, check_rate
from zoo.gated import GRU, LSTM
from zoo.lstm_variants import CoupledInputForgetGateLSTM, LayerNormLSTM, PeepholeLSTM

# Each family's sequence layer. A layer tells CharLM all it needs: `stacked()` makes
# layer i of a stack; `state_size` (an int, or a list for Keras' RNNs) and
# `run(x, state, ids)` carry one flat state; `reads_ids` / `emits_logits` say what it
# reads and writes; `char_lm_arguments` which of CharLM's arguments it takes.
FAMILIES = {"arch1": Arch1, "arch2": Arch2, "lstm": LSTM, "gru": GRU,
            "lstm-peephole": PeepholeLSTM, "lstm-cifg": CoupledInputForgetGateLSTM,
            "lstm-ln": LayerNormLSTM}
# Each family's activation when CharLM is given none: the reference design's.
DEFAULT_ACTIVATIONS = {"arch1": "relu", "arch2": "tanh"}
# What keras.Model itself takes from CharLM's keyword arguments (and its config).
MODEL_ARGUMENTS = ("name", "trainable", "dtype")


def family_arguments(family):
    """The CharLM arguments `family` reads."""
    layer_class = FAMILIES[family]
    read = [name for name in layer_class.char_lm_arguments if name != "units"]
    # A family whose layers read ids themselves has its own input transform.
    embedding = () if layer_class.reads_ids else ("embedding_size", "embedding_initializer")
    return ("units", "num_layers", *embedding, "dropout", *read)


def check_arguments(family, arguments):
    """Raises ValueError, listing the valid ones, if `family` does not read every
    one of `arguments` (names of CharLM arguments)."""
    check_choice("family", family, tuple(FAMILIES))
    valid = family_arguments(family)
    unknown = sorted(set(arguments) - set(valid) - {"family", "vocabulary_size"})
    if unknown:
        raise ValueError(f"unknown model argument{'s' * (len(unknown) > 1)} for {family}: "
                         f"{', '.join(unknown)}; valid: {', '.join(valid)}")


def window_dropout(rate, name):
    """Dropout of `[batch, time, features]` with one mask per window: the same
    features dropped at every step (Gal & Ghahramani 2016)."""
    return keras.layers.Dropout(rate, noise_shape=(None, 1, None), name=name)


@keras.saving.register_keras_serializable(package="charzoo")
class CharLM(keras.Model):
    """A character language model of any family, with one flat float state.

    Called on `[ids, state]` (int32 `[batch, time]`, float32
    `[batch, state_size]`) it returns `[logits, new_state]` (float32
    `[batch, time, vocabulary_size]`, `[batch, state_size]`). The state of a
    stack is the concatenation of its layers' states (an LSTM layer's is
    `[h, c]`), so every family exports and serves with the same signatures.

    Args:
        family: a key of `FAMILIES`: `"arch1"`, `"arch2"`, `"lstm"`, `"gru"`,
            `"lstm-peephole"`, `"lstm-cifg"` or `"lstm-ln"` (see `zoo.lstm_variants`).
        vocabulary_size: int. Size of the alphabet.
        units: int. Width of each layer (`n` of the reference design).
        num_layers: int. Number of stacked recurrent layers.
        activation: `"relu"` or `"tanh"`; Arch 1 and Arch 2 only (None picks
            the reference: ReLU for Arch 1, tanh for Arch 2).
        combine: `"concat"`, `"add"` or `"mul"`; Arch 1 only (see `Arch1Cell`).
        feedback: `"sample"` or `"probs"`; what Arch 2 feeds back when generating.
        recurrent_initializer: initializer name or config for the recurrent
            kernels, None for each family's default.
        unroll: bool. Unroll Arch 1's time loop when the window length is static.
        embedding_size: int or None. LSTM and GRU only: the first layer reads a
            learned embedding of this width instead of one-hot vectors. (It
            computes nothing a one-hot input could not, but it trains faster
            from the start: see BENCHMARKS.md, "recipes".)
        embedding_initializer: initializer name or config for that embedding,
            None for Keras' (uniform in ±0.05); unused without an embedding,
            so a preset's is harmless under `embedding_size=None`. PyTorch's
            `nn.Embedding` draws N(0, 1), which at Adam 2e-3 made a GRU-512
            learn as fast per step as PyTorch's (BENCHMARKS.md, "The GRU's gap").
        dropout: float in [0, 1). Dropout on the features each recurrent layer
            reads and on those the last one writes, in training only, with one
            mask per window (variational: the same units dropped at every step).
        recurrent_dropout: float in [0, 1). Every family but Arch 2 (which
            feeds back its output, not a hidden state): the same on `h_{t-1}`
            before the recurrent transform (Keras' own for LSTM and GRU, which
            leaves the fused CPU loop for Keras' while it is on).
        layer_norm: bool. Arch 1 with `combine="add"` only: layer normalisation
            of the pre-activation inside the recurrence (see `Arch1Cell`).

    Example:
    >>> model = CharLM("arch1", vocabulary_size=27, units=100)
    >>> logits, state = model([np.zeros((2, 40), "int32"), model.initial_state(2)])
    >>> logits.shape, state.shape
    ((2, 40, 27), (2, 200))
    """

    def __init__(
        self,
        family,
        vocabulary_size,
        units,
        num_layers=1,
        activation=None,
        combine="concat",
        feedback="sample",
        recurrent_initializer=None,
        unroll=False,
        embedding_size=None,
        embedding_initializer=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        layer_norm=False,
        **kwargs,
    ):
        check_choice("family", family, tuple(FAMILIES))
        unknown = sorted(set(kwargs) - set(MODEL_ARGUMENTS))
        if unknown:
            raise ValueError(f"unknown CharLM argument{'s' * (len(unknown) > 1)}: {', '.join(unknown)}; "
                             f"valid: {', '.join(family_arguments(family))} (for {family})")
        check_positive("vocabulary_size", vocabulary_size)
        check_positive("units", units)
        check_positive("num_layers", num_layers)
        activation = activation or DEFAULT_ACTIVATIONS.get(family, "tanh")
        check_choice("activation", activation, ACTIVATIONS)
        check_rate("dropout", dropout)
        check_rate("recurrent_dropout", recurrent_dropout)
        given = {"units": units, "activation": activation, "combine": combine,
                 "feedback": feedback, "recurrent_initializer": recurrent_initializer,
                 "unroll": unroll, "recurrent_dropout": recurrent_dropout, "layer_norm": layer_norm}
        layer_class = FAMILIES[family]
        if recurrent_dropout and "recurrent_dropout" not in layer_class.char_lm_arguments:
            raise ValueError(f"recurrent_dropout: {family} feeds back its output, not a hidden "
                             "state, so there is no state to drop; use dropout")
        if dropout and num_layers == 1 and layer_class.reads_ids and layer_class.emits_logits:
            raise ValueError(f"dropout: one {family} layer reads ids and writes logits, "
                             "so no features pass between layers to drop")
        if embedding_size is not None:
            check_positive("embedding_size", embedding_size)
            if layer_class.reads_ids:
                raise ValueError(f"embedding_size: {family} reads ids itself (its input transform "
                                 "is a table of rows); only lstm and gru take an embedding")
        arguments = {name: given[name] for name in layer_class.char_lm_arguments}
        layers = [layer_class.stacked(i, vocabulary_size, name=f"{family.replace('-', '_')}_{i}", **arguments)
                  for i in range(num_layers)]
        sizes = [sum(keras.tree.flatten(layer.state_size)) for layer in layers]

        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        state = keras.Input(shape=(sum(sizes),), dtype="float32", name="state")
        if layer_class.reads_ids:
            x = ids
        elif embedding_size:
            x = keras.layers.Embedding(
                vocabulary_size, embedding_size, name="embedding",
                embeddings_initializer=keras.initializers.get(embedding_initializer or "uniform"))(ids)
        else:
            x = ops.one_hot(ids, vocabulary_size, dtype="float32")
        new_states, start = [], 0
        for i, (layer, size) in enumerate(zip(layers, sizes)):
            if dropout and not (i == 0 and layer_class.reads_ids):
                x = window_dropout(dropout, f"dropout_{i}")(x)
            x, layer_state = layer.run(x, state[:, start:start + size], ids)
            new_states.append(layer_state)
            start += size
        if dropout and not layer_class.emits_logits:
            x = window_dropout(dropout, "dropout_out")(x)
        logits = x if layer_class.emits_logits else keras.layers.Dense(
            vocabulary_size, kernel_initializer=layer_class.logits_initializer(), name="logits")(x)
        new_state = new_states[0] if num_layers == 1 else ops.concatenate(new_states, axis=-1)
        super().__init__(inputs=[ids, state], outputs=[logits, new_state], **kwargs)

        self.family = family
        self.vocabulary_size = vocabulary_size
        self.units = units
        self.num_layers = num_layers
        self.activation = activation
        self.combine = combine
        self.feedback = feedback
        self.recurrent_initializer = recurrent_initializer
        self.unroll = unroll
        self.embedding_size = embedding_size
        self.embedding_initializer = embedding_initializer
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.layer_norm = layer_norm
        self.state_size = sum(sizes)

    def initial_state(self, batch_size):
        return ops.zeros((batch_size, self.state_size), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "family": self.family,
            "vocabulary_size": self.vocabulary_size,
            "units": self.units,
            "num_layers": self.num_layers,
            "activation": self.activation,
            "combine": self.combine,
            "feedback": self.feedback,
            "recurrent_initializer": self.recurrent_initializer,
            "unroll": self.unroll,
            "embedding_size": self.embedding_size,
            "embedding_initializer": self.embedding_initializer,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "layer_norm": self.layer_norm,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
