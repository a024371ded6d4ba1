import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import Arch1, Arch2, CharLM, presets


def ids(batch, time, vocabulary_size=27, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, vocabulary_size, (batch, time)), tf.int32)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("combine", ["concat", "add"])
def test_arch1_layer_equals_the_cell_in_keras_rnn(combine, activation):
    """The sequence layer's reordered maths is the cell's, values and gradients."""
    layer = Arch1(4, vocabulary_size=7, combine=combine, activation=activation,
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


def test_arch1_unrolled_equals_looped():
    looped = CharLM("arch1", 27, 5)
    unrolled = CharLM("arch1", 27, 5, unroll=True)
    unrolled.set_weights(looped.get_weights())
    run = tf.function(lambda m, x, s: m([x, s]))
    tokens = tf.ensure_shape(ids(2, 8), (2, 8))
    np.testing.assert_allclose(run(looped, tokens, looped.initial_state(2))[0],
                               run(unrolled, tokens, unrolled.initial_state(2))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["arch1", "arch2", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_carried_state_splits_a_window_exactly(family, num_layers):
    model = CharLM(family, 11, 6, num_layers=num_layers)
    tokens = ids(2, 10, 11)
    logits, state = model([tokens, model.initial_state(2)])
    first, middle = model([tokens[:, :4], model.initial_state(2)])
    second, end = model([tokens[:, 4:], middle])
    np.testing.assert_allclose(logits, tf.concat([first, second], 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, end, rtol=1e-5, atol=1e-5)
    assert logits.shape == (2, 10, 11) and state.shape == (2, model.state_size)


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


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_runs_and_round_trips(name):
    model = presets.build(name)
    logits, state = model([ids(2, 5), model.initial_state(2)])
    assert logits.shape == (2, 5, 27) and state.shape == (2, model.state_size)
    assert model.count_params() > 0
    clone = CharLM.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_reference_shapes_and_parameter_counts():
    arch1 = presets.build("arch1")
    assert arch1.state_size == 200 and arch1.count_params() == 27 * 100 + 200 * 100 + 200 + 200 * 27 + 27
    arch2 = presets.build("arch2")
    assert arch2.state_size == 27 and arch2.count_params() == 27 * 50 * 2 + 100 + 100 * 27 + 27
    assert presets.build("lstm").state_size == 1024
    irnn = presets.build("irnn")
    np.testing.assert_array_equal(irnn.get_layer("arch1_0").cell.recurrent_kernel, np.eye(100))


def test_presets_are_case_insensitive_and_copies():
    assert presets.get("ARCH1")["model"]["units"] == 100
    presets.get("arch1")["training"]["batch_size"] = 1
    assert presets.get("arch1")["training"]["batch_size"] == 32


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: presets.get("transformer"), "'arch1', 'arch1-add'"),
        (lambda: CharLM("arch1", 27, 8, combine="mul"), "'concat', 'add'"),
        (lambda: CharLM("arch1", 27, 0), "positive integer"),
        (lambda: CharLM("arch1", 27, 8, activation="gelu"), "'relu', 'tanh'"),
        (lambda: CharLM("rnn", 27, 8), "'arch1', 'arch2', 'lstm', 'gru'"),
        (lambda: CharLM("gru", 27, 8, num_layers=0), "positive integer"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["arch1", "arch2"])
def test_keras_file_reloads_in_a_fresh_process_with_identical_logits(name, tmp_path):
    model = presets.build(name, units=8, num_layers=2)
    tokens = ids(2, 6)
    logits, _ = model([tokens, model.initial_state(2)])
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "ids.npy", tokens.numpy())
    script = textwrap.dedent(f"""
        import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np, tensorflow as tf, zoo
        model = keras.models.load_model({str(tmp_path / "model.keras")!r})
        tokens = tf.constant(np.load({str(tmp_path / "ids.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, model([tokens, model.initial_state(2)])[0].numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), logits.numpy())
