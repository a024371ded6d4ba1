import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import config as configuration
from training.batches import Windows
from training.step import (Trainer, average_momentum, averaged_weights, bfloat16_for, choose_shards,
                           learning_rate_schedule, make_optimizer)
from zoo import CharLM
from zoo.loops import bfloat16_gru_loop, bfloat16_lstm_loop, gru_loop, lstm_loop


def tiny_config(preset="arch1", **overrides):
    return configuration.resolve(preset, {"model": {"units": 8}, **overrides})


def sgd_trainer(model, learning_rate, clip_norm):
    return Trainer(model, keras.optimizers.SGD(learning_rate), clip_norm)


def test_clipping_bounds_the_applied_update():
    model = CharLM("arch1", 5, 8)
    trainer = sgd_trainer(model, learning_rate=1.0, clip_norm=0.01)
    inputs = tf.constant(np.random.default_rng(0).integers(0, 5, (4, 6)), tf.int32)
    before = [v.numpy().copy() for v in model.trainable_variables]
    out = trainer.train_step(inputs, tf.roll(inputs, -1, 1), model.initial_state(4))
    after = [v.numpy() for v in model.trainable_variables]
    update_norm = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(after, before)))
    assert float(out["grad_norm"]) > 0.01 and bool(out["clipped"])
    assert update_norm == pytest.approx(0.01, rel=1e-4)


def test_unclipped_step_is_plain_sgd():
    model = CharLM("gru", 5, 4)
    trainer = sgd_trainer(model, learning_rate=0.5, clip_norm=1e6)
    inputs = tf.constant(np.random.default_rng(1).integers(0, 5, (2, 3)), tf.int32)
    state = model.initial_state(2)
    _, gradients, _ = trainer.gradients(inputs, inputs, state)
    expected = [v.numpy() - 0.5 * g.numpy()
                for v, g in zip(model.trainable_variables, gradients)]
    out = trainer.train_step(inputs, inputs, state)
    assert not bool(out["clipped"])
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("staircase, step, expected", [
    (True, 0, 2.5), (True, 79_999, 2.5), (True, 80_000, 2.5 * 0.75), (True, 200_000, 2.5 * 0.75**2),
    (False, 40_000, 2.5 * 0.75**0.5),
])
def test_schedule_gives_the_documented_learning_rate(staircase, step, expected):
    config = configuration.resolve("arch1", {"staircase": staircase})
    assert float(learning_rate_schedule(config)(step)) == pytest.approx(expected, rel=1e-6)


def test_optimizer_follows_the_schedule_as_it_steps():
    config = configuration.resolve("arch2", {"model": {"units": 4}, "decay_steps": 2})
    model = CharLM(vocabulary_size=5, **config.model)
    trainer = Trainer(model, make_optimizer(config), config.clip_norm)
    inputs = tf.zeros((2, 3), tf.int32)
    rates = []
    for _ in range(5):
        rates.append(trainer.learning_rate())
        trainer.train_step(inputs, inputs, model.initial_state(2))
    np.testing.assert_allclose(rates, [2.5, 2.5, 0.25, 0.25, 0.025], rtol=1e-6)


def test_non_finite_step_changes_nothing():
    model = CharLM("arch1", 5, 4)
    trainer = sgd_trainer(model, 1.0, 1.0)
    logits_bias = model.get_layer("logits").bias
    logits_bias.assign([np.inf, 0, 0, 0, 0])
    before = [v.numpy().copy() for v in model.trainable_variables]
    state = tf.ones((2, model.state_size))
    out = trainer.train_step(tf.zeros((2, 3), tf.int32), tf.ones((2, 3), tf.int32), state)
    assert not bool(out["finite"])
    np.testing.assert_array_equal(out["state"], state)
    assert int(trainer.optimizer.iterations) == 0
    for variable, value in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_uniform_model_scores_log2_of_the_alphabet():
    model = CharLM("arch1", 27, 4)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    trainer = sgd_trainer(model, 1.0, 1.0)
    ids = np.random.default_rng(2).integers(0, 27, 1001).astype(np.uint8)
    metrics = trainer.evaluate(ids, streams=7, window=16)
    assert metrics["bpc"] == pytest.approx(math.log2(27), rel=1e-6)
    assert metrics["characters"] == 7 * (1000 // 7)


@pytest.mark.parametrize("preset", ["arch1", "arch1-add", "arch1-mul", "arch2", "irnn", "lstm", "gru"])
def test_loss_falls_on_a_learnable_corpus(preset):
    keras.utils.set_random_seed(0)
    config = tiny_config(preset, batch_size=8, unrollings=10)
    ids = np.tile(np.array([1, 2, 3, 0, 4, 4, 0], np.uint8), 200)
    model = CharLM(vocabulary_size=5, **config.model)
    trainer = Trainer(model, keras.optimizers.Adam(0.03), config.clip_norm)
    windows = Windows(ids, config.batch_size, config.unrollings)
    state, losses = model.initial_state(config.batch_size), []
    for step in range(60):
        out = trainer.train_step(*windows[step % len(windows)], state)
        state = out["state"]
        losses.append(float(out["loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# ("arch1", "mul"): autodiff through its tf.scan crashed XLA inside the multi-step call; so
# did Keras' own loop, which the LSTM variants and Arch 1 with layer norm would otherwise run.
@pytest.mark.parametrize("family, extra", [
    ("arch1", {}), ("arch1", {"combine": "mul"}), ("lstm", {}), ("lstm-peephole", {}),
    ("lstm-ln", {}), ("arch1", {"combine": "add", "layer_norm": True})])
def test_several_steps_per_call_equal_single_steps(family, extra):
    windows = np.random.default_rng(3).integers(0, 5, (4, 2, 6)).astype(np.int32)
    targets = np.roll(windows, -1, axis=2)
    runs = []
    for stacked in (True, False):
        keras.utils.set_random_seed(0)
        model = CharLM(family, 5, 4, **extra)
        trainer = Trainer(model, keras.optimizers.Adam(0.01), clip_norm=0.5)
        state = model.initial_state(2)
        if stacked:
            out = trainer.train_steps(windows, targets, state)
            losses, norms, state = out["loss"], out["grad_norm"], out["state"]
        else:
            losses, norms = [], []
            for inputs, labels in zip(windows, targets):
                out = trainer.train_step(inputs, labels, state)
                losses, norms, state = losses + [out["loss"]], norms + [out["grad_norm"]], out["state"]
        runs.append((np.array(losses), np.array(norms), state, model.get_weights()))
    (losses, norms, state, weights), (one_losses, one_norms, one_state, one_weights) = runs
    assert losses.shape == (4,) and len(set(losses)) == 4
    np.testing.assert_allclose(losses, one_losses, rtol=1e-5)
    np.testing.assert_allclose(norms, one_norms, rtol=1e-4)
    np.testing.assert_allclose(state, one_state, rtol=1e-5, atol=1e-6)
    for a, b in zip(weights, one_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_last_step_loss_trains_from_the_last_unrolling_only():
    model = CharLM("lstm-cifg", 5, 4)
    trainer = Trainer(model, keras.optimizers.SGD(0.1), 1e6, loss_steps="last")
    rng = np.random.default_rng(2)
    inputs = rng.integers(0, 4, (3, 6))
    inputs[:, 0] = 4  # id 4 is read at the first unrolling only
    inputs = tf.constant(inputs, tf.int32)
    targets = tf.constant(rng.integers(0, 5, (3, 6)), tf.int32)
    state = model.initial_state(3)
    loss, gradients, _ = trainer.gradients(inputs, targets, state)
    with tf.GradientTape() as tape:
        logits, _ = model([inputs, state], training=True)
        expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets[:, -1], logits=logits[:, -1]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    for ours, theirs in zip(gradients, tape.gradient(expected, model.trainable_variables)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    # The first unrolling's input still gets a gradient, through time.
    assert np.abs(gradients[0].numpy()[4]).sum() > 0
    with pytest.raises(ValueError, match="valid: all, last"):
        tiny_config(loss_steps="first")


@pytest.mark.parametrize("family", ["lstm", "gru", "lstm-cifg", "arch1", "arch1-mul"])
def test_dropout_trains_in_the_multi_step_call(family):
    # Keras' LSTM and GRU leave their fused loop for Keras' with recurrent dropout, whose
    # gradient XLA cannot compile there (SIGSEGV): the trainer must not ask it to.
    if family.startswith("arch1"):
        model = CharLM("arch1", 5, 16, num_layers=2, combine=family.partition("-")[2] or "concat",
                       dropout=0.3, recurrent_dropout=0.3)
    else:
        model = CharLM(family, 5, 16, embedding_size=8, dropout=0.3, recurrent_dropout=0.3)
    trainer = Trainer(model, keras.optimizers.Adam(0.01), clip_norm=0.5)
    windows = np.random.default_rng(4).integers(0, 5, (3, 2, 6)).astype(np.int32)
    out = trainer.train_steps(windows, np.roll(windows, -1, axis=2), model.initial_state(2))
    assert np.isfinite(out["loss"].numpy()).all() and out["finite"].numpy().all()


@pytest.mark.parametrize("family, extra", [("lstm", {}), ("gru", {}), ("arch1", {"combine": "mul"})])
def test_two_blocks_of_streams_train_as_the_whole_batch(family, extra):
    windows = np.random.default_rng(4).integers(0, 5, (3, 4, 6)).astype(np.int32)
    targets = np.roll(windows, -1, axis=2)
    runs = []
    for shards in (1, 2):
        keras.utils.set_random_seed(0)
        model = CharLM(family, 5, 4, **extra)
        trainer = Trainer(model, keras.optimizers.Adam(0.01), clip_norm=0.5, shards=shards)
        state = tf.random.stateless_normal((4, model.state_size), (1, 2))
        out = trainer.train_steps(windows, targets, state)
        runs.append((out, model.get_weights()))
    (whole, whole_weights), (split, split_weights) = runs
    assert trainer.shards == 2 and len(set(whole["loss"].numpy())) == 3
    for name in ("loss", "grad_norm", "state"):
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(split["clipped"], whole["clipped"])
    for a, b in zip(split_weights, whole_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_non_finite_block_leaves_the_split_step_without_effect():
    model = CharLM("lstm", 5, 4)
    trainer = Trainer(model, keras.optimizers.SGD(0.1), clip_norm=1.0, shards=2)
    before = model.get_weights()
    state = np.zeros((4, model.state_size), np.float32)
    state[3, 0] = np.nan  # only the second block of streams sees it
    out = trainer.train_steps(np.zeros((1, 4, 3), np.int32), np.ones((1, 4, 3), np.int32), state)
    assert not out["finite"][0]
    np.testing.assert_array_equal(out["state"], state)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parameters, batch_size, cores, dropout, expected", [
    (104_027, 64, 2, False, 2),  # lstm-128: measured 1.57x faster in two blocks
    (51_227, 64, 2, False, 2),  # arch1-tuned: 1.24x
    (104_027, 64, 1, False, 1),  # one core: nothing to run the second block on
    (104_027, 63, 2, False, 1),  # blocks must be equal
    (337_371, 64, 2, True, 1),  # lstm-dropout at 256 units: 0.72x, the blocks share dropout's state
    (5_527, 64, 2, False, 1),  # arch2: the executor's per-call cost outweighs the second core (0.39x)
    (1_197_275, 64, 2, False, 1),  # lstm-512: XLA already uses both cores (0.96x)
])
def test_two_blocks_where_they_were_measured_faster(parameters, batch_size, cores, dropout, expected):
    assert choose_shards(parameters, batch_size, cores, dropout) == expected


def test_batch_shards_must_divide_the_batch():
    with pytest.raises(ValueError, match="batch_shards must be a positive divisor of batch_size"):
        tiny_config(batch_size=6, batch_shards=4)
    assert tiny_config(batch_size=6, batch_shards=3).batch_shards == 3


def test_weight_average_must_be_a_momentum():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="weight_average must be between 0 and 1"):
            tiny_config(weight_average=bad)
    assert tiny_config(weight_average=0.99).weight_average == 0.99


def test_the_average_warms_up_to_its_momentum():
    momenta = [float(average_momentum(float(step), 0.99)) for step in (0, 1, 10, 990, 5000)]
    np.testing.assert_allclose(momenta, [0, 1 / 11, 0.5, 0.99, 0.99], rtol=1e-6)


def test_the_averaged_weights_are_the_moving_average_and_only_inside():
    model = CharLM("arch1", 5, 8)
    optimizer = make_optimizer(tiny_config(optimizer="sgd", learning_rate=0.5, weight_average=0.75))
    trainer = Trainer(model, optimizer, clip_norm=100.0)
    inputs = tf.constant(np.random.default_rng(0).integers(0, 5, (4, 6)), tf.int32)
    initial = [v.numpy().copy() for v in model.trainable_variables]
    with averaged_weights(model, optimizer):  # no step yet: nothing to average
        for variable, value in zip(model.trainable_variables, initial):
            np.testing.assert_array_equal(variable.numpy(), value)
    snapshots, state = [], model.initial_state(4)
    for _ in range(3):
        state = trainer.train_step(inputs, tf.roll(inputs, -1, 1), state)["state"]
        snapshots.append([v.numpy().copy() for v in model.trainable_variables])
    # The average starts from the first step's weights; step t moves it by 1 - min(0.75, t / (t + 10)).
    m1, m2 = 1 / 11, 2 / 12
    expected = [m2 * (m1 * a + (1 - m1) * b) + (1 - m2) * c for a, b, c in zip(*snapshots)]
    with averaged_weights(model, optimizer):
        inside = [v.numpy().copy() for v in model.trainable_variables]
    for value, wanted, last in zip(inside, expected, snapshots[-1]):
        np.testing.assert_allclose(value, wanted, rtol=1e-5, atol=1e-7)
        assert not np.allclose(value, last)
    for variable, last in zip(model.trainable_variables, snapshots[-1]):
        np.testing.assert_array_equal(variable.numpy(), last)


@pytest.mark.parametrize("exact_loop, narrow_loop, gates, carried", [
    (lstm_loop, bfloat16_lstm_loop, 4, 2), (gru_loop, bfloat16_gru_loop, 3, 1)])
def test_the_bfloat16_loops_follow_the_float32_ones(exact_loop, narrow_loop, gates, carried):
    rng = np.random.default_rng(5)
    projected = tf.constant(rng.normal(size=(7, 3, 4 * gates)), tf.float32)
    states = [tf.constant(rng.normal(size=(3, 4)), tf.float32) for _ in range(carried)]
    kernel = tf.constant(rng.normal(size=(4, 4 * gates)) / 2, tf.float32)
    extra = [] if carried == 2 else [tf.constant(rng.normal(size=4 * gates), tf.float32)]
    inputs = [projected, *states, kernel, *extra]
    results = []
    for loop in (exact_loop, narrow_loop):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = tf.nest.flatten(loop(*inputs))
            loss = tf.reduce_sum(tf.sin(outputs[0])) + sum(tf.reduce_sum(o * o) for o in outputs[1:])
        results.append([*outputs, *tape.gradient(loss, inputs)])
    for exact, narrow in zip(*results):
        exact, narrow = exact.numpy(), narrow.numpy()
        # bfloat16 keeps 8 bits of mantissa: the products differ, by less than 2% of the scale.
        assert 0 < np.abs(exact - narrow).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_bfloat16_products_train_outside_xla_as_float32_does(family):
    windows = np.random.default_rng(4).integers(0, 5, (3, 4, 6)).astype(np.int32)
    runs = []
    for narrow in (False, True):
        keras.utils.set_random_seed(0)
        model = CharLM(family, 5, 8)
        # SGD: Adam's normalised step would magnify a rounding in a near-zero gradient.
        trainer = Trainer(model, keras.optimizers.SGD(0.5), clip_norm=0.5, bfloat16_products=narrow)
        out = trainer.train_steps(windows, np.roll(windows, -1, axis=2), model.initial_state(4))
        runs.append((out["loss"].numpy(), model.get_weights()))
        layer = next(layer for layer in model.layers if hasattr(layer, "bfloat16_products"))
        assert layer.bfloat16_products is narrow and layer.xla_compiles_training is not narrow
    (exact_loss, exact_weights), (narrow_loss, narrow_weights) = runs
    np.testing.assert_allclose(narrow_loss, exact_loss, rtol=1e-3)
    assert not np.array_equal(narrow_loss, exact_loss)
    for a, b in zip(narrow_weights, exact_weights):
        np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("preset, model, amx, setting, expected", [
    ("lstm", {}, True, None, True),  # 512 units: measured 1.25x; 1.75x at 1024
    ("lstm", {"units": 256}, True, None, False),  # 0.87x at 256
    ("gru", {}, True, None, True),  # 1.04-1.10x at 512; 1.93x at 1024
    ("lstm", {}, False, None, False),  # no matrix units: XLA's float32 dot
    ("lstm-dropout", {}, True, None, True),  # dropout between layers leaves the loop as it is
    ("lstm", {"recurrent_dropout": 0.2}, True, None, False),  # Keras' own loop
    ("gru", {"units": 256}, True, None, False),  # not measured below 512
    ("lstm-ln", {}, True, None, False),  # its own loop: not measured
    ("lstm", {"units": 256}, False, True, True),  # the setting decides where given
    ("lstm", {}, True, False, False),
])
def test_bfloat16_products_where_they_were_measured_faster(monkeypatch, preset, model, amx,
                                                            setting, expected):
    monkeypatch.setattr("training.step.cpu_has_amx", lambda: amx)
    config = configuration.resolve(preset, {"model": model, "bfloat16_products": setting})
    assert bfloat16_for(config, CharLM(vocabulary_size=27, **config.model)) is expected


def test_bfloat16_products_are_refused_with_a_distribution_strategy():
    with pytest.raises(ValueError, match="bfloat16_products is for one process"):
        tiny_config("lstm", bfloat16_products=True, strategy="mirrored")
