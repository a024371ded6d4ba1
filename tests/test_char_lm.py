"""CharLM: one interface for every family, its carried state, its config and its .keras file."""

import numpy as np
import pytest
import tensorflow as tf

from zoo import CharLM, presets
from zoo_checks import check_config_round_trip, check_keras_file_round_trip, ids


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


def test_reference_shapes_and_parameter_counts():
    arch1 = presets.build("arch1")
    assert arch1.state_size == 200 and arch1.count_params() == 27 * 100 + 200 * 100 + 200 + 200 * 27 + 27
    arch2 = presets.build("arch2")
    assert arch2.state_size == 27 and arch2.count_params() == 27 * 50 * 2 + 100 + 100 * 27 + 27
    assert presets.build("lstm").state_size == 1024
    irnn = presets.build("irnn")
    np.testing.assert_array_equal(irnn.get_layer("arch1_0").cell.recurrent_kernel, np.eye(100))
    kernel = np.asarray(presets.build("arch1-orth").get_layer("arch1_0").cell.recurrent_kernel)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(100), atol=1e-4)  # orthogonal, not identity
    assert not np.allclose(kernel, np.eye(100))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: presets.get("transformer"), "'arch1', 'arch1-add'"),
        (lambda: CharLM("arch1", 27, 8, combine="max"), "'concat', 'add', 'mul'"),
        (lambda: CharLM("arch1", 27, 0), "positive integer"),
        (lambda: CharLM("arch1", 27, 8, activation="gelu"), "'relu', 'tanh'"),
        (lambda: CharLM("rnn", 27, 8), "'arch1', 'arch2', 'lstm', 'gru'"),
        (lambda: CharLM("gru", 27, 8, num_layers=0), "positive integer"),
        (lambda: CharLM("arch1", 27, 8, embedding_size=4), "only lstm and gru take an embedding"),
        (lambda: CharLM("lstm", 27, 8, embedding_size=0), "positive integer"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_runs_and_round_trips(name):
    model = presets.build(name)
    logits, state = model([ids(2, 5), model.initial_state(2)])
    assert logits.shape == (2, 5, 27) and state.shape == (2, model.state_size)
    assert model.count_params() > 0
    clone = check_config_round_trip(model)
    assert clone.count_params() == model.count_params()
    assert {"name", "trainable", "dtype"} <= set(model.get_config())  # chained to keras.Model's


def test_an_embedding_replaces_the_one_hot_input_and_round_trips(tmp_path):
    model = CharLM("lstm", 11, 6, embedding_size=5)
    table = model.get_layer("embedding").embeddings
    assert table.shape == (11, 5)
    assert model.get_layer("lstm_0").cell.kernel.shape == (5, 4 * 6)  # it reads 5 features, not 11
    assert model.count_params() == 11 * 5 + (5 + 6 + 1) * 4 * 6 + 6 * 11 + 11
    # Rows of the table are what the LSTM reads: two ids with equal rows give equal outputs.
    table.assign(tf.concat([table[:1], table[:1], table[2:]], 0))
    first, _ = model([tf.constant([[0, 3]]), model.initial_state(1)])
    second, _ = model([tf.constant([[1, 3]]), model.initial_state(1)])
    np.testing.assert_allclose(first, second, rtol=1e-6)
    check_keras_file_round_trip(model, [ids(2, 6, 11), model.initial_state(2)], tmp_path)


def test_the_embedding_initializer_draws_the_table_and_round_trips(tmp_path):
    normal = {"class_name": "RandomNormal", "config": {"stddev": 1.0, "seed": 3}}
    table = CharLM("gru", 11, 6, embedding_size=64, embedding_initializer=normal
                   ).get_layer("embedding").embeddings.numpy()
    assert 0.9 < table.std() < 1.1  # N(0, 1), PyTorch's nn.Embedding
    default = CharLM("gru", 11, 6, embedding_size=64).get_layer("embedding").embeddings.numpy()
    assert np.abs(default).max() <= 0.05  # Keras' uniform in ±0.05
    model = CharLM("gru", 11, 6, embedding_size=5, embedding_initializer="ones")
    np.testing.assert_array_equal(model.get_layer("embedding").embeddings, np.ones((11, 5)))
    assert check_config_round_trip(model).embedding_initializer == "ones"
    one_hot = presets.build("gru", units=6, embedding_size=None)  # the preset's draw, no table
    assert one_hot.get_layer("gru_0").cell.kernel.shape == (27, 3 * 6)
    check_keras_file_round_trip(model, [ids(2, 6, 11), model.initial_state(2)], tmp_path)


@pytest.mark.parametrize("name", ["arch1", "arch2"])
def test_keras_file_reloads_in_a_fresh_process_with_identical_logits(name, tmp_path):
    model = presets.build(name, units=8, num_layers=2)
    check_keras_file_round_trip(model, [ids(2, 6), model.initial_state(2)], tmp_path)
