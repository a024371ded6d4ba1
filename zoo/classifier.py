"""Many-to-one: a whole string in, one class out, over the zoo's recurrent layers."""

import keras

from zoo.arch1 import Arch1Cell
from zoo.arguments import check_choice, check_positive, check_rate
from zoo.gated import GRU, LSTM
from zoo.lstm_variants import CoupledInputForgetGateLSTM, LayerNormLSTM, PeepholeLSTM

# The families a classifier reads with. Arch 2 is not among them: it feeds its own
# output (a prediction of the next character) back, which only a language model has.
LAYERS = {"arch1": lambda units, **kw: keras.layers.RNN(Arch1Cell(units), **kw),
          "lstm": LSTM, "gru": GRU, "lstm-peephole": PeepholeLSTM,
          "lstm-cifg": CoupledInputForgetGateLSTM, "lstm-ln": LayerNormLSTM}
POOLINGS = ("last", "mean")


@keras.saving.register_keras_serializable(package="charzoo")
class CharClassifier(keras.Model):
    """Classifies a string by its characters: embedding, a recurrent stack, a softmax.

    Called on int32 ids `[batch, time]` (0 pads a shorter string: ids of
    characters start at 1) it returns logits `[batch, num_classes]`. Padding
    is masked, so each string is read to its own end; with `pooling="last"`
    the class is read from the last layer's final output, with `"mean"` from
    the mean of its outputs over the string. A bidirectional stack also reads
    each string backwards (legitimate here: the whole string is known, unlike
    a language model's future).

    Args:
        family: a key of `LAYERS`: `"arch1"`, `"lstm"`, `"gru"`,
            `"lstm-peephole"`, `"lstm-cifg"` or `"lstm-ln"`.
        vocabulary_size: int. Ids in use, the padding id 0 included.
        num_classes: int. Number of classes.
        units: int. Width of each recurrent layer (each direction).
        num_layers: int. Stacked recurrent layers.
        embedding_size: int. Width of the learned character embedding.
        bidirectional: bool. Read each string both ways and join the two.
        pooling: `"last"` or `"mean"`.
        dropout: float in [0, 1). Dropout on the embedding and on the
            features the classes are read from, in training only.

    Example:
    >>> model = CharClassifier("gru", vocabulary_size=30, num_classes=18, units=64)
    >>> model(np.array([[3, 4, 5, 0], [6, 7, 0, 0]], "int32")).shape
    (2, 18)
    """

    def __init__(self, family, vocabulary_size, num_classes, units, num_layers=1,
                 embedding_size=32, bidirectional=False, pooling="last", dropout=0.0, **kwargs):
        check_choice("family", family, tuple(LAYERS))
        check_choice("pooling", pooling, POOLINGS)
        for name, value in (("vocabulary_size", vocabulary_size), ("num_classes", num_classes),
                            ("units", units), ("num_layers", num_layers),
                            ("embedding_size", embedding_size)):
            check_positive(name, value)
        if not isinstance(bidirectional, bool):
            raise ValueError(f"`bidirectional` must be true or false, got {bidirectional!r}.")
        check_rate("dropout", dropout)
        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        x = keras.layers.Embedding(vocabulary_size, embedding_size, mask_zero=True,
                                   name="embedding")(ids)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout_in")(x)
        for i in range(num_layers):
            sequences = i < num_layers - 1 or pooling == "mean"
            layer = LAYERS[family](units, return_sequences=sequences,
                                   name=f"{family.replace('-', '_')}_{i}")
            x = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")(x) if bidirectional else layer(x)
        if pooling == "mean":
            x = keras.layers.GlobalAveragePooling1D(name="mean")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout_out")(x)
        logits = keras.layers.Dense(num_classes, name="logits")(x)
        super().__init__(inputs=ids, outputs=logits, **kwargs)
        self.family = family
        self.vocabulary_size = vocabulary_size
        self.num_classes = num_classes
        self.units = units
        self.num_layers = num_layers
        self.embedding_size = embedding_size
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.dropout = dropout

    def get_config(self):
        return {**super().get_config(), "family": self.family,
                "vocabulary_size": self.vocabulary_size, "num_classes": self.num_classes,
                "units": self.units, "num_layers": self.num_layers,
                "embedding_size": self.embedding_size, "bidirectional": self.bidirectional,
                "pooling": self.pooling, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
