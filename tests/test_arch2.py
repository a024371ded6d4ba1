"""Arch 2: the cell by hand and by finite differences, the sequence layer's tables and feedback."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import Arch2, Arch2Cell, CharLM
from zoo_checks import CONSTANTS, check_config_round_trip, finite_difference_check, ids, step


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


def test_arch2_bptt_gradients_match_finite_differences():
    inputs = np.random.default_rng(4).normal(size=(2, 5, 3))
    cell = Arch2Cell(2, vocabulary_size=3, feedback="probs", dtype="float64",
                     recurrent_initializer=keras.initializers.RandomNormal(stddev=1.0))
    keras.layers.RNN(cell, dtype="float64")(inputs)
    for variable in (cell.kernel, cell.recurrent_kernel, cell.output_kernel, cell.bias):
        finite_difference_check(cell, inputs, variable)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_arch2_layer_tables_equal_the_cells_teacher_forcing(activation):
    """Per-class logit tables give the cell's teacher-forced logits and gradients,
    for streams that start (o = 0) and streams carried on."""
    layer = Arch2(4, 7, activation=activation, bias_initializer="random_normal")
    tokens = ids(3, 6, 7)
    state = tf.constant(np.eye(7, dtype="float32")[[0, 3, 5]] * np.float32([[0], [1], [1]]))
    with tf.GradientTape(persistent=True) as tape:
        logits, final = layer(tokens, state, tokens, training=True)
        started = tf.reduce_max(state, -1)[:, None]
        fed_back = tf.one_hot(tokens, 7) * tf.concat([started, tf.ones((3, 5))], 1)[..., None]
        expected = layer.cell.teacher_forced(tf.one_hot(tokens, 7), fed_back)
        loss, expected_loss = tf.reduce_sum(logits**2), tf.reduce_sum(expected**2)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, tf.one_hot(tokens[:, -1], 7))
    for variable in layer.cell.trainable_variables:
        np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(loss, variable)),
                                   tape.gradient(expected_loss, variable), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feedback", ["sample", "probs"])
def test_arch2_window_equals_free_running_steps_with_true_characters(feedback):
    """Teacher forcing over a window = stepping one character at a time, fed the true ones."""
    model = CharLM("arch2", 9, 5, num_layers=2, feedback=feedback)
    tokens = ids(2, 7, 9)
    window, _ = model([tokens, model.initial_state(2)], training=feedback == "sample")
    state, steps = model.initial_state(2), []
    for t in range(7):
        step_logits, state = model([tokens[:, t:t + 1], state])
        steps.append(step_logits)
    np.testing.assert_allclose(window, tf.concat(steps, 1), rtol=1e-5, atol=1e-6)


def test_arch2_probs_feedback_differs_from_teacher_forcing():
    model = CharLM("arch2", 9, 5, feedback="probs")
    tokens, state = ids(2, 7, 9), model.initial_state(2)
    free, probabilities = model([tokens, state], training=False)
    forced, _ = model([tokens, state], training=True)
    np.testing.assert_allclose(free[:, 0], forced[:, 0], rtol=1e-6)  # same zero start
    assert not np.allclose(free[:, 1:], forced[:, 1:])
    np.testing.assert_allclose(tf.reduce_sum(probabilities, -1), np.ones(2), rtol=1e-5)


def test_config_round_trips_and_the_layer_shows_its_cells_arguments():
    check_config_round_trip(Arch2Cell(3, vocabulary_size=4, feedback="probs", seed=7))
    clone = check_config_round_trip(Arch2(3, 4, token_inputs=False, feedback="probs", activation="relu"))
    assert (clone.units, clone.vocabulary_size, clone.feedback, clone.token_inputs) == (3, 4, "probs", False)
    assert clone.activation is keras.activations.relu and clone.state_size == 4


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="'sample', 'probs'"):
        Arch2Cell(4, 27, feedback="argmax")
