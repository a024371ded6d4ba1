"""Checks shared by the zoo's tests, in the spirit of keras-hub's `run_layer_test`."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

CONSTANTS = {
    "kernel_initializer": keras.initializers.Constant(0.1),
    "recurrent_initializer": keras.initializers.Constant(0.2),
    "bias_initializer": keras.initializers.Constant(0.05),
}


def ids(batch, time, vocabulary_size=27, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, vocabulary_size, (batch, time)), tf.int32)


def step(cell, x, state):
    output, new_state = cell(np.array([x], "float32"), [np.array([state], "float32")])
    return np.asarray(output)[0], np.asarray(new_state[0])[0]


def finite_difference_check(cell, inputs, variable, epsilon=1e-6):
    layer = keras.layers.RNN(cell, return_sequences=True, dtype="float64")
    weights = np.random.default_rng(2).normal(size=layer(inputs).shape)

    def loss():
        return tf.reduce_sum(layer(inputs) * weights)

    with tf.GradientTape() as tape:
        value = loss()
    analytic = tape.gradient(value, variable).numpy()
    numeric = np.zeros_like(analytic)
    original = variable.numpy()
    for index in np.ndindex(*original.shape):
        for sign in (1, -1):
            shifted = original.copy()
            shifted[index] += sign * epsilon
            variable.assign(shifted)
            numeric[index] += sign * float(loss()) / (2 * epsilon)
    variable.assign(original)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def check_config_round_trip(layer):
    """`from_config(get_config())` gives an object of the same config; returns it."""
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def check_keras_file_round_trip(model, inputs, tmp_path):
    """A `.keras` file of `model` reloads in a fresh process (only `zoo` imported)
    and gives exactly `model`'s logits for `inputs` (`[ids, state]`)."""
    logits = model(inputs)[0]
    model.save(tmp_path / "model.keras")
    for i, value in enumerate(inputs):
        np.save(tmp_path / f"input{i}.npy", np.asarray(value))
    script = textwrap.dedent(f"""
        import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np, tensorflow as tf, zoo
        model = keras.models.load_model({str(tmp_path / "model.keras")!r})
        inputs = [tf.constant(np.load({str(tmp_path)!r} + f"/input{{i}}.npy")) for i in range({len(inputs)})]
        np.save({str(tmp_path / "out.npy")!r}, model(inputs)[0].numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.asarray(logits))
