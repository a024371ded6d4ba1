"""The LSTM variants (peephole, coupled gates, layer norm) and dropout in CharLM."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.testing import TestCase  # Keras' layer-test harness (run_layer_test)

from zoo import CharLM, presets
from zoo.lstm_variants import (CoupledInputForgetGateLSTM, CoupledInputForgetGateLSTMCell,
                               LayerNormLSTM, LayerNormLSTMCell, PeepholeLSTM, PeepholeLSTMCell)
from training.export import export_model
from zoo_checks import (CONSTANTS, check_config_round_trip, check_keras_file_round_trip,
                        finite_difference_check, ids)

CELLS = {"peephole": (PeepholeLSTMCell, PeepholeLSTM),
         "cifg": (CoupledInputForgetGateLSTMCell, CoupledInputForgetGateLSTM),
         "ln": (LayerNormLSTMCell, LayerNormLSTM)}
X, H, C = np.array([1.0, -2.0]), np.array([0.5, -0.25]), np.array([0.3, -0.6])


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def layer_norm(z, gain=1.0, shift=0.0):
    return (z - z.mean()) / np.sqrt(z.var() + 1e-5) * gain + shift


def one_step(cell):
    """`(h, c)` of one step of `cell` (built on 2 inputs, constant weights) from X, H, C."""
    h, (_, c) = cell(np.array([X], "float32"), [np.array([H], "float32"), np.array([C], "float32")])
    return np.asarray(h)[0], np.asarray(c)[0]


def by_hand_preactivations(gates, unit_forget_bias=False):
    # kernel 0.1, recurrent kernel 0.2, bias 0.05: every unit of every gate gets the same z.
    z = 0.1 * X.sum() + 0.2 * H.sum() + 0.05
    return {gate: np.full(2, z) + (1.0 - 0.05 if gate == "forget" and unit_forget_bias else 0)
            for gate in gates}


def test_peephole_step_by_hand():
    cell = PeepholeLSTMCell(2, unit_forget_bias=False, **CONSTANTS)
    cell.build((None, 2))
    for gate, value in (("input", 0.5), ("forget", -1.0), ("output", 2.0)):
        getattr(cell, f"{gate}_peephole").assign(np.full(2, value, "float32"))
    z = by_hand_preactivations(cell.gates)
    i, f = sigmoid(z["input"] + 0.5 * C), sigmoid(z["forget"] - 1.0 * C)
    c = f * C + i * np.tanh(z["cell"])
    o = sigmoid(z["output"] + 2.0 * c)  # the output gate looks at the new cell state
    h_expected, c_expected = o * np.tanh(c), c
    h, c = one_step(cell)
    np.testing.assert_allclose(h, h_expected, rtol=1e-6)
    np.testing.assert_allclose(c, c_expected, rtol=1e-6)
    assert [w.name for w in cell.weights] == ["kernel", "recurrent_kernel", "bias",
                                              "input_gate_peephole_weights",
                                              "forget_gate_peephole_weights",
                                              "output_gate_peephole_weights"]


def test_coupled_gates_step_by_hand():
    cell = CoupledInputForgetGateLSTMCell(2, **CONSTANTS)  # the forget bias starts at one
    cell.build((None, 2))
    assert cell.kernel.shape == (2, 3 * 2)  # three gates: a quarter fewer weights
    z = by_hand_preactivations(cell.gates, unit_forget_bias=True)
    f = sigmoid(z["forget"])
    c = f * C + (1 - f) * np.tanh(z["cell"])
    h, c_out = one_step(cell)
    np.testing.assert_allclose(c_out, c, rtol=1e-6)
    np.testing.assert_allclose(h, sigmoid(z["output"]) * np.tanh(c), rtol=1e-6)


def test_layer_norm_step_by_hand():
    cell = LayerNormLSTMCell(2, unit_forget_bias=False, kernel_initializer="ones",
                             recurrent_initializer="identity", bias_initializer=CONSTANTS["bias_initializer"])
    cell.build((None, 2))
    cell.recurrent_kernel.assign(np.tile(np.eye(2), 4).astype("float32") * [1, 2, 3, 4, 5, 6, 7, 8])
    cell.cell_norm_gain.assign([2.0, 3.0])
    cell.cell_norm_bias.assign([0.1, -0.1])
    # x·kernel is the same in all 8 columns: normalised it is 0, so only the recurrent term counts.
    recurrent = np.tile(H, 4) * np.arange(1, 9)
    z = layer_norm(recurrent) + 0.05
    i, f, g, o = np.split(z, 4)
    c = sigmoid(f) * C + sigmoid(i) * np.tanh(g)
    h_expected = sigmoid(o) * np.tanh(layer_norm(c, [2.0, 3.0], [0.1, -0.1]))
    h, c_out = one_step(cell)
    np.testing.assert_allclose(c_out, c, rtol=1e-5)
    np.testing.assert_allclose(h, h_expected, rtol=1e-5)


@pytest.mark.parametrize("kind", CELLS)
def test_gradients_through_time_match_finite_differences(kind):
    cell_class, _ = CELLS[kind]
    keras.utils.set_random_seed(3)
    cell = cell_class(3, recurrent_initializer="glorot_uniform", dtype="float64")
    inputs = np.random.default_rng(1).normal(size=(2, 5, 2))
    keras.layers.RNN(cell, dtype="float64")(inputs)  # builds
    extra = {"peephole": "forget_peephole", "cifg": "bias", "ln": "recurrent_norm_gain"}[kind]
    for variable in (cell.recurrent_kernel, getattr(cell, extra)):
        finite_difference_check(cell, inputs, variable)


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.5], ids=["plain", "dropout"])
@pytest.mark.parametrize("kind", CELLS)
def test_the_sequence_layer_equals_keras_rnn_over_the_cell(kind, recurrent_dropout):
    cell_class, layer_class = CELLS[kind]
    keras.utils.set_random_seed(4)
    layer = layer_class(4, recurrent_dropout=recurrent_dropout, return_sequences=True,
                        return_state=True)
    inputs = tf.constant(np.random.default_rng(0).normal(size=(3, 6, 5)), tf.float32)
    layer(inputs)
    reference = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    # One mask for both, set where Keras' RNN looks for the window's mask.
    window_mask = tf.constant(np.random.default_rng(1).integers(0, 2, (3, 4)) * 2.0, tf.float32)
    results = []
    for rnn in (layer, reference):
        with tf.GradientTape() as tape:
            layer.cell._recurrent_dropout_mask = window_mask if recurrent_dropout else None
            outputs = rnn(inputs, training=True)
            loss = sum(tf.reduce_sum(o * tf.sin(tf.range(4, dtype=tf.float32))) for o in outputs)
        results.append([*outputs, *tape.gradient(loss, layer.cell.trainable_variables)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)  # float32 round-off (1.6e-6 on an AMX host)
    clone = check_config_round_trip(layer)
    assert type(clone.cell) is cell_class and clone.cell.units == 4


@pytest.mark.parametrize("kind", CELLS)
def test_keras_layer_test_harness(kind):
    """Keras' own checks: serialisation, masking, training, mixed precision."""
    _, layer_class = CELLS[kind]
    TestCase("run_layer_test").run_layer_test(
        layer_class, init_kwargs={"units": 3}, input_shape=(2, 4, 5), expected_output_shape=(2, 3),
        expected_num_trainable_weights={"peephole": 6, "cifg": 3, "ln": 7}[kind],
        expected_num_non_trainable_weights=0, expected_num_seed_generators=1, supports_masking=True)


@pytest.mark.parametrize("family", ["lstm-peephole", "lstm-cifg", "lstm-ln", "arch1"])
def test_keras_file_reloads_in_a_fresh_process(family, tmp_path):
    embedding = {"num_layers": 2} if family == "arch1" else {"embedding_size": 3}
    model = CharLM(family, 11, 6, **embedding, dropout=0.2, recurrent_dropout=0.3)
    check_keras_file_round_trip(model, [ids(2, 6, 11), model.initial_state(2)], tmp_path)


def test_dropout_masks_are_the_same_at_every_step_of_a_window():
    model = CharLM("lstm-cifg", 11, 6, embedding_size=5, dropout=0.5)
    dropped = model.get_layer("dropout_0")(tf.ones([4, 7, 5]), training=True).numpy()
    assert (dropped == dropped[:, :1]).all() and 0 < (dropped == 0).mean() < 1
    layer = model.get_layer("lstm_cifg_0")
    layer.cell.recurrent_dropout = 0.5
    h = tf.ones([4, 6])
    first = layer.cell.get_recurrent_dropout_mask(h)
    assert layer.cell.get_recurrent_dropout_mask(h) is first  # cached for the window
    layer.cell.reset_recurrent_dropout_mask()


@pytest.mark.parametrize("family", ["lstm", "lstm-ln", "arch1"])
def test_dropout_is_off_at_inference_and_in_the_export(family, tmp_path):
    keras.utils.set_random_seed(5)
    model = CharLM(family, 27, 8, dropout=0.5, recurrent_dropout=0.5)
    plain = CharLM(family, 27, 8)
    plain.set_weights(model.get_weights())
    inputs = [ids(2, 9), model.initial_state(2)]
    logits = model(inputs)[0].numpy()
    np.testing.assert_allclose(logits, plain(inputs)[0], rtol=1e-6)
    assert not np.allclose(model(inputs, training=True)[0], logits)
    path = export_model(model, " abcdefghijklmnopqrstuvwxyz", {"normalize": "text8"}, tmp_path, "m",
                        xla=False)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["step"](ids=inputs[0], state=inputs[1])["logits"]
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: CharLM("arch2", 27, 8, recurrent_dropout=0.1), "feeds back its output"),
    (lambda: CharLM("arch2", 27, 8, dropout=0.1), "no features pass between layers"),
    (lambda: CharLM("lstm-ln", 27, 8, dropout=1.0), r"\[0, 1\)"),
    (lambda: PeepholeLSTMCell(0), "positive integer"),
    (lambda: presets.build("lstm-cifg", peepholes=True), "unknown CharLM argument"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
