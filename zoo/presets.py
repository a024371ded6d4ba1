"""Named presets: a model and the recipe that trains it, as data."""

import copy

from zoo.cells import check_choice

# The reference design's vanilla RNN recipes: adaptive or plain gradient
# descent with a large learning rate, a staircase decay and a global-norm clip.
ARCH1_TRAINING = {
    "batch_size": 32,
    "unrollings": 40,
    "optimizer": "adadelta",
    "learning_rate": 2.5,
    "decay_rate": 0.75,
    "decay_steps": 80_000,
    "staircase": True,
    "clip_norm": 1.25,
}
GATED_TRAINING = {
    "batch_size": 64,
    "unrollings": 64,
    "optimizer": "adam",
    "learning_rate": 2e-3,
    "decay_rate": 0.5,
    "decay_steps": 50_000,
    "staircase": False,
    "clip_norm": 5.0,
}

PRESETS = {
    "arch1": {
        "description": "Arch 1 reference: hidden state fed back, concat, ReLU, n=100",
        "model": {"family": "arch1", "units": 100, "combine": "concat", "activation": "relu"},
        "training": ARCH1_TRAINING,
    },
    "arch1-add": {
        "description": "Arch 1 with input and state transforms summed, ReLU, n=100",
        "model": {"family": "arch1", "units": 100, "combine": "add", "activation": "relu"},
        "training": ARCH1_TRAINING,
    },
    "arch1-tanh": {
        "description": "Arch 1 reference with tanh: watch the gradient vanish",
        "model": {"family": "arch1", "units": 100, "combine": "concat", "activation": "tanh"},
        "training": ARCH1_TRAINING,
    },
    "arch2": {
        "description": "Arch 2 reference: previous output fed back, tanh, n=50, teacher forcing",
        "model": {"family": "arch2", "units": 50, "activation": "tanh", "feedback": "sample"},
        "training": {
            "batch_size": 64,
            "unrollings": 20,
            "optimizer": "sgd",
            "learning_rate": 2.5,
            "decay_rate": 0.1,
            "decay_steps": 5_000,
            "staircase": True,
            "clip_norm": 1.25,
        },
    },
    "irnn": {
        "description": "IRNN (Le et al. 2015): Arch 1 add, ReLU, identity recurrent kernel",
        "model": {
            "family": "arch1",
            "units": 100,
            "combine": "add",
            "activation": "relu",
            "recurrent_initializer": "identity",
        },
        "training": ARCH1_TRAINING,
    },
    "lstm": {
        "description": "LSTM-512 with Adam 2e-3, smooth decay x0.5 per 50k steps, clip 5",
        "model": {"family": "lstm", "units": 512},
        "training": GATED_TRAINING,
    },
    "gru": {
        "description": "GRU-512 with Adam 2e-3, smooth decay x0.5 per 50k steps, clip 5",
        "model": {"family": "gru", "units": 512},
        "training": GATED_TRAINING,
    },
}


def names():
    return list(PRESETS)


def get(name):
    """The preset called `name` (any case), as a fresh copy."""
    key = str(name).lower()
    check_choice("preset", key, names())
    return copy.deepcopy(PRESETS[key])


def build(name, vocabulary_size=27, **overrides):
    """Builds the preset's `CharLM`; keyword arguments override its model config."""
    from zoo.models import CharLM

    model_config = {**get(name)["model"], **overrides}
    return CharLM(vocabulary_size=vocabulary_size, name=str(name).lower().replace("-", "_"), **model_config)
