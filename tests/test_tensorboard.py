import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from training.tensorboard import BAD, BAR, TensorBoardLogger, gradient_flow_image
from training.diagnostics import gradient_flow, spectral_radii
from zoo import presets

TRAIN_SCALARS = {
    "loss": 2.5,
    "bpc": 3.6,
    "learning_rate": 0.01,
    "grad_norm": 1.5,
    "clipped_fraction": 0.25,
    "chars_per_second": 12345.0,
}


def load(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def values(accumulator, tag):
    return [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]


def plugin(accumulator, tag):
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def tiny_model_and_gradients():
    model = presets.build("irnn", units=4)
    ids = tf.constant([[1, 2, 3], [4, 5, 6]], tf.int32)
    with tf.GradientTape() as tape:
        logits, _ = model([ids, model.initial_state(2)], training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(ids, logits)
        )
    gradients = tape.gradient(loss, model.trainable_variables)
    return model, ids, gradients


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Writes every kind of summary once, then loads the three runs."""
    log_dir = tmp_path_factory.mktemp("run")
    model, ids, gradients = tiny_model_and_gradients()
    # The input kernel's gradient is sparse (a row gather); drop the output
    # bias's to check that a missing gradient is skipped.
    assert isinstance(gradients[0], tf.IndexedSlices)
    gradients[-1] = None
    norms = gradient_flow(model, ids, ids, model.initial_state(2))
    logger = TensorBoardLogger(str(log_dir), histogram_every=4)
    logger.log_train(4, **TRAIN_SCALARS)
    wrote = [logger.log_histograms(step, model, gradients) for step in (3, 4)]
    logger.log_validation(4, loss=2.0, bpc=2.9)
    logger.log_sample(4, "the ", "the cat\n  sat")
    logger.log_gradient_flow(4, norms, spectral_radii(model))
    logger.log_hparams(
        {"preset": "irnn", "units": 4, "learning_rate": np.float32(0.01), "clip": None},
        {"final_bpc": 2.9},
        step=4,
    )
    logger.flush()
    logger.close()
    return {
        "model": model,
        "norms": norms,
        "wrote": wrote,
        "train": load(log_dir / "train"),
        "validation": load(log_dir / "validation"),
        "session": load(log_dir),
    }


def test_train_scalars(runs):
    for tag, value in TRAIN_SCALARS.items():
        ((step, logged),) = values(runs["train"], tag)
        assert step == 4 and logged == pytest.approx(value)
        assert plugin(runs["train"], tag) == "scalars"


def test_validation_scalars_share_the_train_tags_in_their_own_run(runs):
    assert values(runs["validation"], "loss") == [(4, pytest.approx(2.0))]
    assert values(runs["validation"], "bpc") == [(4, pytest.approx(2.9))]
    assert sorted(runs["validation"].Tags()["tensors"]) == ["bpc", "loss"]


def test_histograms_of_weights_and_gradients_only_on_their_steps(runs):
    assert runs["wrote"] == [False, True]
    tags = runs["train"].Tags()["tensors"]
    paths = [v.path for v in runs["model"].trainable_variables]
    assert {f"weights/{p}" for p in paths} <= set(tags)
    assert {f"gradients/{p}" for p in paths[:-1]} <= set(tags)
    assert f"gradients/{paths[-1]}" not in tags
    ((step, buckets),) = values(runs["train"], "weights/arch1_0/cell/recurrent_kernel")
    assert step == 4 and plugin(runs["train"], "weights/arch1_0/cell/recurrent_kernel") == "histograms"
    # Buckets are [left, right, count]: the 4x4 identity has 16 entries.
    assert buckets[:, 2].sum() == 16


def test_sample_text(runs):
    ((step, text),) = values(runs["train"], "sample")
    assert step == 4 and plugin(runs["train"], "sample") == "text"
    assert "the cat\n  sat" in text.item().decode()


def test_gradient_flow_image_and_scalars(runs):
    ((step, image),) = values(runs["train"], "gradient_flow")
    assert step == 4 and plugin(runs["train"], "gradient_flow") == "images"
    width, height, png = image
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape == (int(height), int(width), 3)
    np.testing.assert_array_equal(decoded, gradient_flow_image(runs["norms"]))
    norms = runs["norms"]
    expected = {
        "gradient_flow/first": norms[0],
        "gradient_flow/last": norms[-1],
        "gradient_flow/first_over_last": norms[0] / norms[-1],
        "gradient_flow/per_step_gain": (norms[0] / norms[-1]) ** 0.5,
        "spectral_radius/arch1_0": 1.0,
    }
    for tag, value in expected.items():
        assert values(runs["train"], tag) == [(4, pytest.approx(value, rel=1e-5))]


def test_hparams_session_with_metric(runs):
    content = runs["session"].PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["preset"].string_value == "irnn"
    assert hparams["units"].number_value == 4
    assert hparams["learning_rate"].number_value == pytest.approx(0.01)
    assert hparams["clip"].string_value == "None"
    assert values(runs["session"], "final_bpc") == [(4, pytest.approx(2.9))]


def test_gradient_flow_image_draws_bars_by_value():
    norms = np.array([1e-6, 0.0, np.inf, 1e-2])
    image = gradient_flow_image(norms, bar_width=8)
    assert image.dtype == np.uint8 and image.ndim == 3
    # The bars are the last 4 * 8 columns before a right margin of 4 pixels.
    bars = np.split(image[:, -36:-4], 4, axis=1)
    bar_pixels = [(bar == BAR).all(axis=-1).sum() for bar in bars]
    bad_pixels = [(bar == BAD).all(axis=-1).sum() for bar in bars]
    # A larger norm is a taller bar; an exact zero has none; inf is red.
    assert bar_pixels[3] > bar_pixels[0] > 0
    assert bar_pixels[1] == 0 and bad_pixels[1] == 0
    assert bad_pixels[2] > 0 and bar_pixels[2] == 0
