"""One model interface for every family: `(ids, state) -> (logits, new_state)`."""

import keras
from keras import ops

from zoo.cells import ACTIVATIONS, check_choice, check_positive, default_kernel_initializer
from zoo.gated import GRU, LSTM
from zoo.layers import Arch1, Arch2

FAMILIES = ("arch1", "arch2", "lstm", "gru")
# The CharLM arguments each family reads; any other would be ignored, so it is refused.
FAMILY_ARGUMENTS = {
    "arch1": ("units", "num_layers", "activation", "combine", "recurrent_initializer", "unroll"),
    "arch2": ("units", "num_layers", "activation", "feedback", "recurrent_initializer"),
    "lstm": ("units", "num_layers", "recurrent_initializer"),
    "gru": ("units", "num_layers", "recurrent_initializer"),
}
# What keras.Model itself takes from CharLM's keyword arguments (and its config).
MODEL_ARGUMENTS = ("name", "trainable")


def check_arguments(family, arguments):
    """Raises ValueError, listing the valid ones, if `family` does not read every
    one of `arguments` (names of CharLM arguments)."""
    check_choice("family", family, FAMILIES)
    unknown = sorted(set(arguments) - set(FAMILY_ARGUMENTS[family]) - {"family", "vocabulary_size"})
    if unknown:
        raise ValueError(f"unknown model argument{'s' * (len(unknown) > 1)} for {family}: "
                         f"{', '.join(unknown)}; valid: {', '.join(FAMILY_ARGUMENTS[family])}")


def layer_state_size(family, units, combine, vocabulary_size):
    if family == "arch1":
        return 2 * units if combine == "concat" else units
    if family == "arch2":
        return vocabulary_size
    return 2 * units if family == "lstm" else units


@keras.saving.register_keras_serializable(package="charzoo")
class CharLM(keras.Model):
    """A character language model of any family, with one flat float state.

    Called on `[ids, state]` (int32 `[batch, time]`, float32
    `[batch, state_size]`) it returns `[logits, new_state]` (float32
    `[batch, time, vocabulary_size]`, `[batch, state_size]`). The state of a
    stack is the concatenation of its layers' states (an LSTM layer's is
    `[h, c]`), so every family exports and serves with the same signatures.

    Args:
        family: `"arch1"`, `"arch2"`, `"lstm"` or `"gru"`.
        vocabulary_size: int. Size of the alphabet.
        units: int. Width of each layer (`n` of the reference design).
        num_layers: int. Number of stacked recurrent layers.
        activation: `"relu"` or `"tanh"`; Arch 1 and Arch 2 only (None picks
            the reference: ReLU for Arch 1, tanh for Arch 2).
        combine: `"concat"` or `"add"`; Arch 1 only.
        feedback: `"sample"` or `"probs"`; what Arch 2 feeds back when generating.
        recurrent_initializer: initializer name or config for the recurrent
            kernels, None for each family's default.
        unroll: bool. Unroll Arch 1's time loop when the window length is static.

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
        **kwargs,
    ):
        check_choice("family", family, FAMILIES)
        unknown = sorted(set(kwargs) - set(MODEL_ARGUMENTS))
        if unknown:
            raise ValueError(f"unknown CharLM argument{'s' * (len(unknown) > 1)}: {', '.join(unknown)}; "
                             f"valid: {', '.join(FAMILY_ARGUMENTS[family])} (for {family})")
        check_positive("vocabulary_size", vocabulary_size)
        check_positive("units", units)
        check_positive("num_layers", num_layers)
        if activation is None:
            activation = {"arch1": "relu", "arch2": "tanh"}.get(family, "tanh")
        check_choice("activation", activation, ACTIVATIONS)
        layer_size = layer_state_size(family, units, combine, vocabulary_size)
        state_size = num_layers * layer_size

        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        state = keras.Input(shape=(state_size,), dtype="float32", name="state")
        states = [state[:, i * layer_size : (i + 1) * layer_size] for i in range(num_layers)]
        new_states = []
        x = ids
        for i, layer_state in enumerate(states):
            common = {"units": units, "name": f"{family}_{i}"}
            if family == "arch1":
                x, s = Arch1(
                    vocabulary_size=vocabulary_size if i == 0 else None,
                    activation=activation,
                    combine=combine,
                    recurrent_initializer=recurrent_initializer,
                    unroll=unroll,
                    **common,
                )(x, layer_state)
            elif family == "arch2":
                x, s = Arch2(
                    vocabulary_size=vocabulary_size,
                    token_inputs=i == 0,
                    activation=activation,
                    feedback=feedback,
                    recurrent_initializer=recurrent_initializer,
                    **common,
                )(x, layer_state, ids)
            else:
                if i == 0:
                    x = ops.one_hot(ids, vocabulary_size, dtype="float32")
                # Keras' defaults (tanh, sigmoid, no recurrent dropout, bias,
                # reset_after) are what lets TensorFlow pick cuDNN on a GPU;
                # zoo's subclasses keep that and add a faster CPU loop.
                rnn = LSTM if family == "lstm" else GRU
                extra = {"recurrent_initializer": recurrent_initializer} if recurrent_initializer else {}
                outputs = rnn(return_sequences=True, return_state=True, **common, **extra)(
                    x, initial_state=list(ops.split(layer_state, 2, axis=-1))
                    if family == "lstm"
                    else [layer_state]
                )
                x, s = outputs[0], ops.concatenate(outputs[1:], axis=-1)
            new_states.append(s)
        if family == "arch2":
            logits = x  # Arch 2's output already is the logits.
        else:
            logits = keras.layers.Dense(
                vocabulary_size,
                kernel_initializer=default_kernel_initializer()
                if family == "arch1"
                else "glorot_uniform",
                name="logits",
            )(x)
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
        self.state_size = state_size

    def initial_state(self, batch_size):
        return ops.zeros((batch_size, self.state_size), dtype="float32")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "family": self.family,
            "vocabulary_size": self.vocabulary_size,
            "units": self.units,
            "num_layers": self.num_layers,
            "activation": self.activation,
            "combine": self.combine,
            "feedback": self.feedback,
            "recurrent_initializer": self.recurrent_initializer,
            "unroll": self.unroll,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
