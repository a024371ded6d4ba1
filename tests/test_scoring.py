import math
import random

import numpy as np
import pytest
import tensorflow as tf

from serving.stops import StopStream, cut, find_stop
from training.scoring import first_stop, surprisal

CLASSES = 5
TABLE = np.random.RandomState(0).normal(0, 2, (CLASSES, CLASSES)).astype("float32")


class Bigram:
    """A fake model: logits from the previous character alone; the state counts characters read."""

    vocabulary_size = CLASSES

    def __call__(self, inputs, training=False):
        ids, state = inputs
        return tf.gather(TABLE, ids), state + tf.cast(tf.shape(ids)[1], tf.float32)


def expected_bits(previous, row):
    bits = []
    for char in row:
        logits = TABLE[previous]
        log_probabilities = logits - np.log(np.exp(logits).sum())
        bits.append(-log_probabilities[char] / math.log(2))
        previous = char
    return bits


def test_surprisal_is_minus_log2_of_each_prediction_for_rows_of_any_length():
    rows = [[1, 2, 3, 4], [4], [], [0, 0, 1]]
    ids = tf.ragged.constant(rows, tf.int32).to_tensor()
    lengths = tf.constant([len(r) for r in rows])
    bits, state, last = surprisal(Bigram(), ids, lengths, tf.zeros([4, 1]), tf.constant([0, 1, 2, 3]))
    for b, row in enumerate(rows):
        np.testing.assert_allclose(bits[b, : len(row)], expected_bits([0, 1, 2, 3][b], row), rtol=1e-5)
        assert not np.any(bits[b, len(row):])
    # Each row read its `last` and all but its final character: the state a next piece starts from.
    np.testing.assert_array_equal(state[:, 0], [4, 1, 0, 3])
    np.testing.assert_array_equal(last, [4, 4, 2, 1])


STOP_CASES = [
    ("hello world", ["o"], (4, 5)),
    ("hello world", ["world", "lo w"], (3, 7)),  # completes first
    ("xabcd", ["abcd", "bc"], (2, 4)),
    ("xab", ["ab", "b"], (1, 3)),  # both complete together: the longer
    ("hello", ["z", ""], None),
    ("héllo wörld", ["ö"], (7, 8)),  # characters, not bytes
    ("", ["a"], None),
]


@pytest.mark.parametrize("text, stops, expected", STOP_CASES)
def test_the_graph_and_the_server_end_samples_at_the_same_stop(text, stops, expected):
    assert find_stop(text, stops) == expected
    start, end = first_stop(tf.constant([text]), tf.constant([stops]))
    assert (int(start[0]), int(end[0])) == (expected or (-1, -1))


def test_first_stop_agrees_with_find_stop_on_random_rows():
    rng = random.Random(0)
    texts = ["".join(rng.choice("ab c") for _ in range(rng.randrange(0, 30))) for _ in range(40)]
    stops = [["".join(rng.choice("ab c") for _ in range(rng.randrange(0, 4))) for _ in range(3)]
             for _ in range(40)]
    start, end = first_stop(tf.constant(texts), tf.constant(stops))
    for i, (text, row) in enumerate(zip(texts, stops)):
        assert (int(start[i]), int(end[i])) == (find_stop(text, row) or (-1, -1)), (text, row)


def test_a_stream_never_sends_what_the_sample_will_not_hold():
    text = "the cat sat on the mat"
    for include in (False, True):
        expected, found = cut(text, ["on t", "mat"], include)
        assert found
        for size in (1, 2, 3, 5, 50):
            stream = StopStream(1, ["on t", "mat"], include)
            sent = ""
            for i in range(0, len(text), size):
                sent += stream.feed([text[i : i + size]])[0]
                assert expected.startswith(sent)
            sent += stream.finish()[0]
            assert sent == expected == stream.texts[0] and stream.all_stopped


def test_a_stream_without_stops_passes_everything_at_once():
    stream = StopStream(2)
    assert stream.feed(["ab", "cd"]) == ["ab", "cd"] and stream.finish() == ["", ""]
    assert not stream.all_stopped
