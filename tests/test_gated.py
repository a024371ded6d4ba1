"""zoo's LSTM and GRU: their fused loops (hand-written gradients) compute what Keras' layers compute."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import gated


def twin_models(kind, units=6, vocabulary=5, layers=2):
    """The same stack twice, Keras' layers and zoo's, sharing initial weights."""
    built = []
    for module in (keras.layers, gated):
        layer_class = getattr(module, kind)
        ids = keras.Input((None,), dtype="int32")
        states = [keras.Input((units,)) for _ in range(2 if kind == "LSTM" else 1)]
        x, outputs = keras.ops.one_hot(ids, vocabulary), []
        for _ in range(layers):
            x, *new = layer_class(units, return_sequences=True, return_state=True)(x, initial_state=states)
            outputs += new
        built.append(keras.Model([ids, *states], [keras.layers.Dense(vocabulary)(x), *outputs]))
    reference, fast = built
    fast.set_weights(reference.get_weights())
    return reference, fast


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_outputs_and_gradients_match_keras(kind, compiled):
    keras.utils.set_random_seed(1)
    reference, fast = twin_models(kind)
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(0, 5, (3, 7)), tf.int32)
    states = [tf.constant(rng.normal(size=(3, 6)), tf.float32) for _ in reference.inputs[1:]]
    results = []
    for model in (reference, fast):

        def run(ids, states, model=model):
            with tf.GradientTape() as tape:
                tape.watch(states)
                outputs = model([ids, *states], training=True)
                # Weighs every output (logits and final states) so each one's gradient path counts.
                loss = sum(tf.reduce_sum(o * tf.sin(tf.cast(tf.range(tf.shape(o)[-1]), tf.float32)))
                           for o in outputs)
            return outputs, tape.gradient(loss, model.trainable_variables + states)

        outputs, gradients = (tf.function(run) if compiled else run)(ids, states)
        results.append(([o.numpy() for o in outputs], [tf.convert_to_tensor(g).numpy() for g in gradients]))
    for expected, actual in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_same_weights_and_config_as_keras():
    layer = gated.LSTM(4)
    assert isinstance(layer, keras.layers.LSTM)
    layer.build((None, None, 3))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"]
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is gated.LSTM
