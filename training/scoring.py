"""How surprised a model is by a text, character by character, in TensorFlow.

The graph side of an export's `score` signatures (see `training.generator`).
"""

import math

import tensorflow as tf


def surprisal(model, ids, lengths, state, last):
    """Bits of surprise of each character of each row, and the state after them.

    Each row reads `last` then its own characters; character `t` is scored by
    the model's prediction after reading everything before it. Rows may have
    different lengths: all rows read their common length in one call of the
    model, only the longer rows' tails go step by step.

    Args:
        model: a `zoo.CharLM`.
        ids: int32 `[batch, time]`, padded after each row's length.
        lengths: int32 `[batch]`.
        state: float32 `[batch, state_size]`, before reading `last`.
        last: int32 `[batch]`, the character before the text.

    Returns:
        (surprisal float32 `[batch, time]` in bits, 0 past each length;
         state `[batch, state_size]` before reading each row's last character;
         last_ids int32 `[batch]`, each row's last character, or `last` if empty):
        the pair that scores a following piece exactly as if it were joined on.
    """
    inputs = tf.concat([last[:, None], ids[:, :-1]], axis=1)
    common = tf.reduce_min(lengths)
    classes = model.vocabulary_size
    logits, state = tf.cond(  # a model cannot run zero steps
        common > 0, lambda: tuple(model([inputs[:, :common], state], training=False)),
        lambda: (tf.zeros([tf.shape(ids)[0], 0, classes]), state))

    def body(t, state, pieces):
        logits, new_state = model([inputs[:, t : t + 1], state], training=False)
        return t + 1, tf.where((t < lengths)[:, None], new_state, state), pieces.write(t - common, logits[:, 0])

    tail = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None, classes])
    _, state, tail = tf.while_loop(lambda t, *_: t < tf.shape(ids)[1], body, (common, state, tail))
    logits = tf.cond(tail.size() > 0,
                     lambda: tf.concat([logits, tf.transpose(tail.stack(), [1, 0, 2])], axis=1),
                     lambda: logits)
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(ids, logits)
    inside = tf.sequence_mask(lengths, tf.shape(ids)[1])
    bits = tf.where(inside, nats / math.log(2.0), 0.0)
    read = tf.concat([last[:, None], ids], axis=1)
    return bits, state, tf.gather(read, lengths, batch_dims=1)


def first_stop(text, stop):
    """Where each row's text should end because of its stop strings.

    Args:
        text: string `[batch]`.
        stop: string `[batch, stops]`; empty strings are no stop.

    Returns:
        (start, end) int32 `[batch]`, in characters: the stop completed first
        (the earliest start if several complete together) spans
        `text[start:end]`; both -1 where no stop occurs.
    """
    stops = tf.shape(stop)[1]
    pairs = (tf.repeat(text, stops), tf.reshape(stop, [-1]))

    def find(pair):
        row, word = pair
        # tf.strings.split with an empty separator splits on whitespace: never call it so.
        parts = tf.cond(tf.strings.length(word) > 0,
                        lambda: tf.strings.split(row, sep=word, maxsplit=1), lambda: row[None])
        found = tf.size(parts) > 1
        start = tf.strings.length(parts[0], unit="UTF8_CHAR")
        return tf.where(found, start, -1)

    start = tf.reshape(tf.map_fn(find, pairs, fn_output_signature=tf.int32), [-1, stops])
    end = start + tf.strings.length(stop, unit="UTF8_CHAR")
    never = tf.int32.max
    end = tf.where(start >= 0, end, never)
    # Order by end, then start: the stop that completes first, longest on ties.
    key = tf.cast(end, tf.int64) * (1 << 31) + tf.cast(tf.maximum(start, 0), tf.int64)
    which = tf.argmin(key, axis=1, output_type=tf.int32)
    first_end = tf.gather(end, which, batch_dims=1)
    first_start = tf.gather(start, which, batch_dims=1)
    found = first_end < never
    return tf.where(found, first_start, -1), tf.where(found, first_end, -1)
