import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import Arch1Cell, Arch2Cell

CONSTANTS = {
    "kernel_initializer": keras.initializers.Constant(0.1),
    "recurrent_initializer": keras.initializers.Constant(0.2),
    "bias_initializer": keras.initializers.Constant(0.05),
}


def step(cell, x, state):
    output, new_state = cell(np.array([x], "float32"), [np.array([state], "float32")])
    return np.asarray(output)[0], np.asarray(new_state[0])[0]


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


def test_arch1_matches_numpy_with_random_weights():
    rng = np.random.default_rng(0)
    cell = Arch1Cell(3, activation="tanh")
    x, h = rng.normal(size=(4, 5)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    output, _ = cell(x, [h])
    U, W, b = (np.asarray(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
    np.testing.assert_allclose(output, np.tanh(np.concatenate([x @ U, h @ W], -1) + b), rtol=1e-5)


def test_arch2_forward_by_hand():
    cell = Arch2Cell(2, vocabulary_size=3, feedback="probs", **CONSTANTS)
    # x·U = 0.1; o·W = 0.2 * (0.2 + 0.3 + 0.5) = 0.2; h = tanh([0.15, 0.15, 0.25, 0.25]).
    logits, fed_back = step(cell, [0.0, 1.0, 0.0], [0.2, 0.3, 0.5])
    hidden = np.tanh(np.array([0.15, 0.15, 0.25, 0.25]))
    np.testing.assert_allclose(logits, np.full(3, 0.1 * hidden.sum() + 0.05), rtol=1e-6)
    np.testing.assert_allclose(fed_back, np.full(3, 1 / 3), rtol=1e-6)
    assert cell.output_kernel.shape == (4, 3) and cell.recurrent_kernel.shape == (3, 2)


def test_arch2_sampled_feedback_is_one_hot():
    cell = Arch2Cell(4, vocabulary_size=5, seed=1)
    _, fed_back = cell(np.ones((3, 5), "float32"), [np.zeros((3, 5), "float32")])
    fed_back = np.asarray(fed_back[0])
    assert set(np.unique(fed_back)) <= {0.0, 1.0}
    np.testing.assert_array_equal(fed_back.sum(-1), np.ones(3))


def test_arch2_teacher_forcing_equals_stepping_with_true_feedback():
    rng = np.random.default_rng(1)
    cell = Arch2Cell(4, vocabulary_size=5)
    inputs = rng.normal(size=(2, 6, 3)).astype("float32")
    targets = rng.integers(0, 5, size=(2, 6))
    previous = np.concatenate([np.zeros((2, 1, 5)), np.eye(5)[targets[:, :-1]]], 1).astype("float32")
    parallel = cell.teacher_forced(inputs, previous)
    for t in range(6):
        logits, _ = cell(inputs[:, t], [previous[:, t]])
        np.testing.assert_allclose(parallel[:, t], logits, rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("combine", ["concat", "add"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_arch1_bptt_gradients_match_finite_differences(combine, activation):
    inputs = np.random.default_rng(3).normal(size=(2, 5, 3))
    cell = Arch1Cell(2, activation=activation, combine=combine, dtype="float64",
                     bias_initializer="random_normal")
    keras.layers.RNN(cell, dtype="float64")(inputs)
    for variable in (cell.kernel, cell.recurrent_kernel, cell.bias):
        finite_difference_check(cell, inputs, variable)


def test_arch2_bptt_gradients_match_finite_differences():
    inputs = np.random.default_rng(4).normal(size=(2, 5, 3))
    cell = Arch2Cell(2, vocabulary_size=3, feedback="probs", dtype="float64",
                     recurrent_initializer=keras.initializers.RandomNormal(stddev=1.0))
    keras.layers.RNN(cell, dtype="float64")(inputs)
    for variable in (cell.kernel, cell.recurrent_kernel, cell.output_kernel, cell.bias):
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


@pytest.mark.parametrize("cell", [Arch1Cell(3, combine="add", activation="tanh", use_bias=False),
                                  Arch2Cell(3, vocabulary_size=4, feedback="probs", seed=7)])
def test_config_round_trip(cell):
    clone = type(cell).from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Arch1Cell(4, combine="mul"), "'concat', 'add'"),
        (lambda: Arch1Cell(0), "positive integer"),
        (lambda: Arch1Cell(-3), "positive integer"),
        (lambda: Arch1Cell(4, activation="sigmoid"), "'relu', 'tanh'"),
        (lambda: Arch2Cell(4, 27, feedback="argmax"), "'sample', 'probs'"),
    ],
)
def test_bad_arguments_name_the_valid_choices(make, message):
    with pytest.raises(ValueError, match=message):
        make()
