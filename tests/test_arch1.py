"""Arch 1: the cell by hand and by finite differences, the sequence layer against the cell."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import Arch1, Arch1Cell, CharLM
from zoo_checks import CONSTANTS, check_config_round_trip, finite_difference_check, ids, step

COMBINES = ["concat", "add", "mul", "add-ln"]


def combining(name):
    """Arch 1's arguments for a name of COMBINES ("add-ln": add with layer_norm)."""
    return {"combine": name.removesuffix("-ln"), "layer_norm": name.endswith("-ln")}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_concat_forward_by_hand(activation):
    cell = Arch1Cell(2, activation=activation, combine="concat", **CONSTANTS)
    # x·U = 0.1 * (1 + 2) = 0.3 per unit; h·W = 0.2 * (-1 - 1 - 1 - 2) = -1.0 per unit.
    output, state = step(cell, [1.0, 2.0], [-1.0, -1.0, -1.0, -2.0])
    preactivation = np.array([0.3, 0.3, -1.0, -1.0]) + 0.05
    expected = np.maximum(preactivation, 0) if activation == "relu" else np.tanh(preactivation)
    np.testing.assert_allclose(output, expected, rtol=1e-6)
    np.testing.assert_allclose(state, output)
    assert cell.state_size == 4 and cell.output_size == 4
    assert cell.kernel.shape == (2, 2) and cell.recurrent_kernel.shape == (4, 2)
    assert cell.bias.shape == (4,)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_add_forward_by_hand(activation):
    cell = Arch1Cell(2, activation=activation, combine="add", **CONSTANTS)
    # 0.3 + 0.2 * (0.5 - 2.0) + 0.05 = 0.05; 0.3 + 0.2 * (-1 - 2) + 0.05 = -0.25.
    out_a, _ = step(cell, [1.0, 2.0], [0.5, -2.0])
    out_b, _ = step(cell, [1.0, 2.0], [-1.0, -2.0])
    act = (lambda a: np.maximum(a, 0)) if activation == "relu" else np.tanh
    np.testing.assert_allclose(out_a, act(np.array([0.05, 0.05])), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out_b, act(np.array([-0.25, -0.25])), rtol=1e-6)
    assert cell.recurrent_kernel.shape == (2, 2) and cell.state_size == 2


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_mul_forward_by_hand(activation):
    cell = Arch1Cell(2, activation=activation, combine="mul", **CONSTANTS)
    # (x·U + b) * (h·W + r) = (0.3 + 0.05) * (0.2 * (0.5 - 2.0) + 1) = 0.35 * 0.7 = 0.245;
    # with h = (-4, -2): 0.35 * (0.2 * -6 + 1) = -0.07.
    out_a, _ = step(cell, [1.0, 2.0], [0.5, -2.0])
    out_b, _ = step(cell, [1.0, 2.0], [-4.0, -2.0])
    act = (lambda a: np.maximum(a, 0)) if activation == "relu" else np.tanh
    np.testing.assert_allclose(out_a, act(np.array([0.245, 0.245])), rtol=1e-5)
    np.testing.assert_allclose(out_b, act(np.array([-0.07, -0.07])), rtol=1e-5, atol=1e-7)
    assert cell.state_size == 2 and cell.recurrent_kernel.shape == (2, 2)
    assert [w.name for w in cell.weights] == ["kernel", "recurrent_kernel", "bias", "recurrent_bias"]
    # A zero state does not stay zero: the recurrent bias lets the input through.
    out_zero, _ = step(cell, [1.0, 2.0], [0.0, 0.0])
    np.testing.assert_allclose(out_zero, act(np.array([0.35, 0.35])), rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_layer_norm_forward_by_hand(activation):
    cell = Arch1Cell(2, activation=activation, combine="add", layer_norm=True, **CONSTANTS)
    cell.build((None, 2))
    cell.recurrent_kernel.assign([[1.0, 0.0], [0.0, 3.0]])
    cell.norm_gain.assign([2.0, 0.5])
    # x·U + h·W = 0.3 + (0.5, -6.0) = (0.8, -5.7): mean -2.45, deviation 3.25, so LN = (1, -1).
    output, _ = step(cell, [1.0, 2.0], [0.5, -2.0])
    preactivation = np.array([1.0, -1.0]) * np.sqrt(3.25**2 / (3.25**2 + 1e-5)) * [2.0, 0.5] + 0.05
    act = (lambda a: np.maximum(a, 0)) if activation == "relu" else np.tanh
    np.testing.assert_allclose(output, act(preactivation), rtol=1e-5)
    assert [w.name for w in cell.weights] == ["kernel", "recurrent_kernel", "bias", "norm_gain"]
    with pytest.raises(ValueError, match="layer_norm=True needs combine='add'"):
        Arch1Cell(2, combine="concat", layer_norm=True)


def test_arch1_matches_numpy_with_random_weights():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)  # the weights too: a flaky tolerance is no test
    cell = Arch1Cell(3, activation="tanh")
    x, h = rng.normal(size=(4, 5)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    output, _ = cell(x, [h])
    U, W, b = (np.asarray(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
    np.testing.assert_allclose(output, np.tanh(np.concatenate([x @ U, h @ W], -1) + b), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_bptt_gradients_match_finite_differences(combine, activation):
    inputs = np.random.default_rng(3).normal(size=(2, 5, 3))
    cell = Arch1Cell(3 if combine == "add-ln" else 2, activation=activation, **combining(combine),
                     dtype="float64", bias_initializer="random_normal")
    keras.layers.RNN(cell, dtype="float64")(inputs)
    for variable in cell.trainable_variables:  # with "mul", recurrent_bias too
        finite_difference_check(cell, inputs, variable)


def test_cells_stack_mask_and_return_state_inside_keras_rnn():
    inputs = np.random.default_rng(5).normal(size=(2, 4, 3)).astype("float32")
    stacked = keras.layers.RNN([Arch1Cell(2), Arch1Cell(3, combine="add")], return_state=True)
    output, first_state, second_state = stacked(inputs)
    assert output.shape == (2, 3)
    assert first_state[0].shape == (2, 4) and second_state[0].shape == (2, 3)
    masked = keras.layers.RNN(Arch1Cell(2), return_sequences=True)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    out = np.asarray(masked(inputs, mask=mask))
    np.testing.assert_allclose(out[0, 2], out[0, 1])  # a masked step keeps the last output


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("combine", COMBINES)
def test_arch1_layer_equals_the_cell_in_keras_rnn(combine, activation):
    """The sequence layer's reordered maths is the cell's, values and gradients."""
    layer = Arch1(4, vocabulary_size=7, **combining(combine), activation=activation,
                  bias_initializer="random_normal")
    tokens = ids(3, 6, 7)
    state = tf.random.normal((3, layer.state_size))
    reference = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    with tf.GradientTape(persistent=True) as tape:
        sequence, final = layer(tokens, state)
        expected, expected_final = reference(tf.one_hot(tokens, 7), initial_state=[state])
        loss, expected_loss = tf.reduce_sum(sequence**2), tf.reduce_sum(expected**2)
    np.testing.assert_allclose(sequence, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, expected_final, rtol=1e-5, atol=1e-6)
    for variable in layer.cell.trainable_variables:
        np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(loss, variable)),
                                   tape.gradient(expected_loss, variable),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("combine", COMBINES)
def test_arch1_recurrent_dropout_equals_the_cell_in_keras_rnn(combine):
    """Training with recurrent dropout: the layer's loop (values and gradients) is the cell's
    under Keras' RNN with the same window mask, and the mask really drops units."""
    keras.utils.set_random_seed(6)
    layer = Arch1(4, vocabulary_size=7, **combining(combine), recurrent_dropout=0.5,
                  bias_initializer="random_normal")
    tokens = ids(3, 6, 7)
    state = tf.random.normal((3, layer.state_size))
    layer(tokens, state)
    reference = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    window_mask = tf.constant(np.random.default_rng(1).integers(0, 2, (3, layer.state_size)) * 2.0,
                              tf.float32)
    results = []
    for run in (lambda: layer(tokens, state, training=True),
                lambda: reference(tf.one_hot(tokens, 7), initial_state=[state], training=True),
                lambda: layer(tokens, state * window_mask)):  # the mask by hand, dropout off
        with tf.GradientTape() as tape:
            layer.cell._recurrent_dropout_mask = window_mask  # where both look for the window's
            sequence, final = run()
            loss = tf.reduce_sum(sequence * tf.sin(tf.range(sequence.shape[-1], dtype=tf.float32)))
        results.append([sequence, final, *map(tf.convert_to_tensor,
                                              tape.gradient(loss, layer.cell.trainable_variables))])
    for ours, theirs in zip(*results[:2]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # The mask reaches the first step; later steps see it through the recurrent kernel only.
    np.testing.assert_allclose(results[0][0][:, 0], results[2][0][:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0][0], layer(tokens, state)[0])
    assert layer.cell._recurrent_dropout_mask is None  # reset after the window
    clone = check_config_round_trip(layer)
    assert clone.recurrent_dropout == 0.5


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_recurrence_gradient_matches_autodiff(activation, combine):
    keras.utils.set_random_seed(2)
    fused = Arch1(6, vocabulary_size=5, activation=activation, **combining(combine))
    # unroll=True with a static length runs the plain Python loop, differentiated by autodiff.
    plain = Arch1(6, vocabulary_size=5, activation=activation, **combining(combine), unroll=True)
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(0, 5, (3, 7)), tf.int32)
    state = tf.constant(rng.normal(size=(3, fused.cell.state_size)), tf.float32)
    fused(ids, state)
    plain(ids, state)
    plain.set_weights(fused.get_weights())
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(state)
            sequence, last = layer(ids, state)
            loss = tf.reduce_sum(sequence * tf.sin(tf.cast(tf.range(sequence.shape[-1]), tf.float32)))
            loss += tf.reduce_sum(last * last)
        gradients = tape.gradient(loss, layer.trainable_variables + [state])
        results.append([sequence.numpy()] + [tf.convert_to_tensor(g).numpy() for g in gradients])
    for actual, expected in zip(*results):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_arch1_unrolled_equals_looped():
    looped = CharLM("arch1", 27, 5)
    unrolled = CharLM("arch1", 27, 5, unroll=True)
    unrolled.set_weights(looped.get_weights())
    run = tf.function(lambda m, x, s: m([x, s]))
    tokens = tf.ensure_shape(ids(2, 8), (2, 8))
    np.testing.assert_allclose(run(looped, tokens, looped.initial_state(2))[0],
                               run(unrolled, tokens, unrolled.initial_state(2))[0], rtol=1e-5, atol=1e-6)


def test_config_round_trips_and_the_layer_shows_its_cells_arguments():
    check_config_round_trip(Arch1Cell(3, combine="add", activation="tanh", use_bias=False))
    layer = Arch1(5, vocabulary_size=7, combine="add", activation="tanh", unroll=True)
    clone = check_config_round_trip(layer)
    assert (clone.units, clone.combine, clone.unroll, clone.vocabulary_size) == (5, "add", True, 7)
    assert clone.activation is keras.activations.tanh and clone.state_size == 5
    assert layer.get_config()["activation"] == "tanh"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Arch1Cell(4, combine="max"), "'concat', 'add', 'mul'"),
        (lambda: Arch1Cell(4, combine="mul", use_bias=False), "needs its biases"),
        (lambda: Arch1Cell(0), "positive integer"),
        (lambda: Arch1Cell(-3), "positive integer"),
        (lambda: Arch1Cell(4, activation="sigmoid"), "'relu', 'tanh'"),
    ],
)
def test_bad_arguments_name_the_valid_choices(make, message):
    with pytest.raises(ValueError, match=message):
        make()
