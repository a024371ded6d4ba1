"""Presets: metadata that builds a model; their recipes live in `training.config`."""

from zoo import presets


def test_presets_are_case_insensitive_and_copies():
    assert presets.get("ARCH1")["model"]["units"] == 100
    presets.get("arch1")["model"]["units"] = 1
    assert presets.get("arch1")["model"]["units"] == 100


def test_presets_hold_only_what_builds_a_model_and_every_preset_has_a_recipe():
    from training import config as configuration

    for name in presets.names():
        assert set(presets.get(name)) == {"description", "model"}
        assert configuration.resolve(name).batch_size > 0


def embedding_std(name):
    return presets.build(name, units=8).get_layer("embedding").embeddings.numpy().std()


def test_lstm_and_gru_read_an_embedding_drawn_like_pytorchs():
    for name in ("lstm", "gru"):
        assert 0.9 < embedding_std(name) < 1.1, name  # N(0, 1), not Keras' uniform in ±0.05
    for name in ("lstm-dropout", "lstm-peephole"):  # N(0, 1) tied for lstm-dropout; variants unmeasured
        assert embedding_std(name) < 0.05, name  # Keras' draw
