"""Named presets: a description and the arguments that build a `CharLM`, nothing else.

How each preset is trained (optimizer, schedule, clip, window) is a recipe in
`training.config`.
"""

import copy

from zoo.arguments import check_choice

# PyTorch's nn.Embedding draw, N(0, 1). Keras' default (uniform in ±0.05) starts the inputs ~35x
# weaker: on the same batches a GRU-512 with it learnt less per step than PyTorch's, and given
# PyTorch's initial weights, as much (BENCHMARKS.md, "The GRU's gap"). The LSTM-512 too: at 300 s
# its test BPC went from 2.158 / 2.171 to 2.143 / 2.136 at two seeds ("The LSTM over N(0, 1)").
# The dropout LSTM keeps Keras' draw: with N(0, 1) it tied (LSTM-512 at 300 s: test 2.129 against
# 2.136 on the last weights, 2.145 against 2.136 on the exported ones). The variants: not measured.
NORMAL_EMBEDDING = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 1.0}}

PRESETS = {
    "arch1": {
        "description": "Arch 1 reference: hidden state fed back, concat, ReLU, n=100",
        "model": {"family": "arch1", "units": 100, "combine": "concat", "activation": "relu"},
    },
    "arch1-add": {
        "description": "Arch 1 with input and state transforms summed, ReLU, n=100",
        "model": {"family": "arch1", "units": 100, "combine": "add", "activation": "relu"},
    },
    "arch1-tanh": {
        "description": "Arch 1 reference with tanh: watch the gradient vanish",
        "model": {"family": "arch1", "units": 100, "combine": "concat", "activation": "tanh"},
    },
    "arch1-mul": {
        "description": "Arch 1 with input and state transforms multiplied, ReLU, n=100",
        "model": {"family": "arch1", "units": 100, "combine": "mul", "activation": "relu"},
    },
    "arch1-tuned": {
        "description": "Arch 1 mul, ReLU, n=200, trained with Adam: a tuned variant, not the reference",
        "model": {"family": "arch1", "units": 200, "combine": "mul", "activation": "relu"},
    },
    # Recurrent dropout 0.2 for small corpora and long runs: on Tiny Shakespeare at 300 s
    # arch1-tuned reads the corpus ~100 times and overfits after its first 30 s.
    "arch1-tuned-dropout": {
        "description": "arch1-tuned with recurrent dropout 0.2, for small corpora and long runs",
        "model": {"family": "arch1", "units": 200, "combine": "mul", "activation": "relu",
                  "recurrent_dropout": 0.2},
    },
    "arch1-orth": {
        "description": "Arch 1 add, ReLU, orthogonal recurrent kernel (Saxe et al. 2014), n=100",
        "model": {"family": "arch1", "units": 100, "combine": "add", "activation": "relu",
                  "recurrent_initializer": "orthogonal"},
    },
    "arch1-ln": {
        "description": "Arch 1 add, ReLU, layer-normalised pre-activation (Ba et al. 2016), n=100",
        "model": {"family": "arch1", "units": 100, "combine": "add", "activation": "relu",
                  "layer_norm": True},
    },
    "arch2": {
        "description": "Arch 2 reference: previous output fed back, tanh, n=50, teacher forcing",
        "model": {"family": "arch2", "units": 50, "activation": "tanh", "feedback": "sample"},
    },
    "irnn": {
        "description": "IRNN (Le et al. 2015): Arch 1 add, ReLU, identity recurrent kernel",
        "model": {"family": "arch1", "units": 100, "combine": "add", "activation": "relu",
                  "recurrent_initializer": "identity"},
    },
    "lstm": {
        "description": "LSTM-512 over a learned 64-wide N(0, 1) embedding, fused CPU loop",
        "model": {"family": "lstm", "units": 512, "embedding_size": 64,
                  "embedding_initializer": NORMAL_EMBEDDING},
    },
    "gru": {
        "description": "GRU-512 (reset after) over a learned 64-wide N(0, 1) embedding, fused CPU loop",
        "model": {"family": "gru", "units": 512, "embedding_size": 64,
                  "embedding_initializer": NORMAL_EMBEDDING},
    },
    # Dropout 0.2 for small corpora and long runs: on Tiny Shakespeare at 300 s it took test BPC
    # from 2.198 to 2.074 (LSTM; 0.4: 2.091) and from 2.224 to 2.191 (GRU), but at 120 s it costs
    # more than it cures, and text8's 90M training characters leave little to cure (README).
    "lstm-dropout": {
        "description": "LSTM-512, dropout 0.2 on its inputs and outputs, Keras' embedding draw; small corpora",
        "model": {"family": "lstm", "units": 512, "embedding_size": 64, "dropout": 0.2},
    },
    "gru-dropout": {
        "description": "gru with dropout 0.2 on its inputs and outputs, for small corpora and long runs",
        "model": {"family": "gru", "units": 512, "embedding_size": 64,
                  "embedding_initializer": NORMAL_EMBEDDING, "dropout": 0.2},
    },
    "lstm-peephole": {
        "description": "LSTM-512 with peepholes (Gers & Schmidhuber 2000) over a 64-wide embedding",
        "model": {"family": "lstm-peephole", "units": 512, "embedding_size": 64},
    },
    "lstm-cifg": {
        "description": "LSTM-512 with coupled input and forget gates (CIFG), 64-wide embedding",
        "model": {"family": "lstm-cifg", "units": 512, "embedding_size": 64},
    },
    "lstm-ln": {
        "description": "LSTM-512 with layer normalisation in the recurrence (Ba et al. 2016)",
        "model": {"family": "lstm-ln", "units": 512, "embedding_size": 64},
    },
}


# Many-to-one presets for `zoo.CharClassifier` (PyTorch's names tutorial: a 32-wide
# embedding and 128 units); `bidirectional`, `pooling` and `dropout` are arguments.
CLASSIFIERS = {
    family: {"description": f"{family} classifier: 32-wide embedding, {family} of 128 units, last state",
             "model": {"family": family, "units": 128, "embedding_size": 32}}
    for family in ("gru", "lstm", "arch1", "lstm-peephole", "lstm-cifg", "lstm-ln")
}
CLASSIFIER_ARGUMENTS = ("family", "units", "num_layers", "embedding_size", "bidirectional",
                        "pooling", "dropout")


def names():
    return list(PRESETS)


def get(name):
    """The preset called `name` (any case), as a fresh copy."""
    key = str(name).lower()
    check_choice("preset", key, names())
    return copy.deepcopy(PRESETS[key])


def build(name, vocabulary_size=27, **overrides):
    """Builds the preset's `CharLM`; keyword arguments override its model arguments."""
    from zoo.char_lm import CharLM

    model_arguments = {**get(name)["model"], **overrides}
    return CharLM(vocabulary_size=vocabulary_size, name=str(name).lower().replace("-", "_"),
                  **model_arguments)


def get_classifier(name):
    """The classifier preset called `name` (any case), as a fresh copy."""
    key = str(name).lower()
    check_choice("classifier preset", key, list(CLASSIFIERS))
    return copy.deepcopy(CLASSIFIERS[key])


def build_classifier(name, vocabulary_size, num_classes, **overrides):
    """Builds the classifier preset's `CharClassifier`; keyword arguments override its own."""
    from zoo.classifier import CharClassifier

    return CharClassifier(vocabulary_size=vocabulary_size, num_classes=num_classes,
                          name=f"{str(name).lower().replace('-', '_')}_classifier",
                          **{**get_classifier(name)["model"], **overrides})
