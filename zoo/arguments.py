"""Checks, defaults and small maths shared by the zoo's layers."""

import keras
import tensorflow as tf

ACTIVATIONS = ("relu", "tanh")
EPSILON = 1e-5  # of the layer normalisation's variance


def default_kernel_initializer():
    # Truncated at two standard deviations, so every weight lies in [-0.1, 0.1].
    return keras.initializers.TruncatedNormal(mean=0.0, stddev=0.05)


def kernel_initializer(value):
    """The Keras initializer `value` names; None is the zoo's default for kernels."""
    return keras.initializers.get(value or default_kernel_initializer())


INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer")


def initializers_config(cell):
    """A cell's three initializers, serialised for `get_config`."""
    return {name: keras.initializers.serialize(getattr(cell, name)) for name in INITIALIZERS}


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}; valid choices are: {', '.join(map(repr, choices))}."
        )


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def activation(name):
    """The Keras activation called `name`, one of `ACTIVATIONS`."""
    check_choice("activation", name, ACTIVATIONS)
    return keras.activations.get(name)


def single_state(states):
    return states[0] if isinstance(states, (list, tuple)) else states


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")


def normalize(x, gain, shift=None):
    """Layer normalisation over the last axis (Ba et al. 2016): zero mean, unit variance, then
    `* gain + shift`."""
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    x = (x - mean) * tf.math.rsqrt(variance + EPSILON) * gain
    return x if shift is None else x + shift
