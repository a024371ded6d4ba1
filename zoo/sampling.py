"""The maths of drawing the next character from logits, as pure TensorFlow.

Every function takes per-row settings (`[batch]` tensors; scalars broadcast)
and works inside `tf.function`, `tf.while_loop` and XLA.

Randomness is counter-based: the noise for row `b`, step `t` and class `j` is
a hash of `(seed[b], index[b], t, j)`. A row's draw therefore depends only on
its own seed, its sample index and the step, never on the batch around it, so
a server may merge requests into one batch without changing any result, and
streaming in chunks draws exactly what one long call would.
"""

import tensorflow as tf

# splitmix64's constants: a cheap integer hash whose output bits are close
# to independent, which is all the Gumbel noise needs.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _mix(x):
    """splitmix64's finaliser on uint64 tensors."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, tf.uint64)))
    x = x * tf.constant(_MIX1, tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(27, tf.uint64)))
    x = x * tf.constant(_MIX2, tf.uint64)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(31, tf.uint64)))


def _as_uint64(x):
    return tf.bitcast(tf.cast(x, tf.int64), tf.uint64)


def uniform_noise(seed, index, step, num_classes):
    """Uniform floats in (0, 1) of shape `[batch, num_classes]`.

    Args:
        seed: int64 `[batch]`, the request's seed.
        index: int32 `[batch]`, the row's sample number within its request.
        step: int32 scalar or `[batch]`, the position of the drawn character.
        num_classes: int, the alphabet size.
    """
    golden = tf.constant(_GOLDEN, tf.uint64)
    key = _mix(_as_uint64(seed) + golden)
    key = _mix(tf.bitwise.bitwise_xor(key, _as_uint64(index)) + golden)
    key = _mix(tf.bitwise.bitwise_xor(key, _as_uint64(step)) + golden)
    classes = tf.range(1, tf.cast(num_classes, tf.int64) + 1, dtype=tf.int64)
    bits = _mix(key[:, None] + _as_uint64(classes)[None, :] * golden)
    # The top 24 bits fill a float32 mantissa exactly; +0.5 keeps 0 and 1 out.
    top = tf.cast(tf.bitwise.right_shift(bits, tf.constant(40, tf.uint64)), tf.float32)
    return (top + 0.5) / float(1 << 24)


def filter_logits(logits, top_k, top_p):
    """Sets logits outside each row's top-k and nucleus to -inf.

    Args:
        logits: float32 `[batch, classes]` (already divided by the temperature).
        top_k: int32 `[batch]`; 0 keeps every class.
        top_p: float32 `[batch]`; keeps the fewest most likely classes whose
            probabilities sum to at least `top_p` (1.0 keeps every class).
            The most likely class is always kept.

    Returns:
        float32 `[batch, classes]`.
    """
    num_classes = tf.shape(logits)[-1]
    ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
    k = tf.where(top_k > 0, tf.minimum(top_k, num_classes), num_classes)
    kth = tf.gather(ordered, k - 1, axis=1, batch_dims=1)
    probabilities = tf.nn.softmax(ordered, axis=-1)
    before = tf.cumsum(probabilities, axis=-1, exclusive=True)
    # A class is in the nucleus if the classes above it do not reach top_p yet.
    in_nucleus = before < top_p[:, None]
    in_nucleus = tf.concat([tf.ones_like(in_nucleus[:, :1]), in_nucleus[:, 1:]], axis=-1)
    smallest_kept = tf.reduce_min(tf.where(in_nucleus, ordered, ordered[:, :1]), axis=-1)
    threshold = tf.maximum(kth, smallest_kept)
    return tf.where(logits >= threshold[:, None], logits, tf.fill(tf.shape(logits), -float("inf")))


def sample(logits, temperature, top_k, top_p, seed, index, step):
    """Draws one id per row: greedy where `temperature == 0`, else Gumbel-max.

    Args:
        logits: float32 `[batch, classes]`.
        temperature: float32 scalar or `[batch]`, >= 0.
        top_k: int32 scalar or `[batch]`, 0 = off.
        top_p: float32 scalar or `[batch]` in (0, 1], 1 = off.
        seed: int64 scalar or `[batch]`.
        index: int32 scalar or `[batch]`, the row's sample number in its request.
        step: int32 scalar or `[batch]`, the position of the character drawn.

    Returns:
        int32 `[batch]`.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    batch = tf.shape(logits)[:1]

    def rows(x, dtype):
        return tf.broadcast_to(tf.cast(x, dtype), batch)

    temperature = rows(temperature, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    # Greedy rows divide by 1 so they cannot produce inf/nan on the way.
    safe = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    scaled, top_k, top_p = logits / safe[:, None], rows(top_k, tf.int32), rows(top_p, tf.float32)
    # Filtering sorts every row; skip it when no row asks for it (the common case).
    kept = tf.cond(tf.reduce_all(top_k == 0) & tf.reduce_all(top_p >= 1.0), lambda: scaled,
                   lambda: filter_logits(scaled, top_k, top_p))
    noise = uniform_noise(rows(seed, tf.int64), rows(index, tf.int32), step, tf.shape(logits)[-1])
    gumbel = -tf.math.log(-tf.math.log(noise))
    drawn = tf.argmax(kept + gumbel, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, drawn, greedy)


def beam_search(step, state, last, length, width):
    """The `width` most likely continuations of `length` characters, best first.

    Exact for `width` >= the number of continuations; otherwise the usual
    approximation: after each character only the `width` most likely prefixes
    are kept. Width 1 is greedy decoding.

    Args:
        step: `step(ids, state) -> (log_probabilities, state)`, ids int32 `[n]`,
            state float32 `[n, state_size]`, log-probabilities `[n, classes]`.
        state: float32 `[batch, state_size]`, before reading `last`.
        last: int32 `[batch]`, the character read next.
        length: int32 scalar, characters to generate.
        width: int32 scalar >= 1, prefixes kept.

    Returns:
        (ids int32 `[batch, width, length]`, log_probability float32 `[batch, width]`).
    """
    batch, state_size = tf.shape(last)[0], state.shape[-1]
    state = tf.repeat(state, width, axis=0)
    last = tf.repeat(last, width)
    # Only the first copy of each row is live at the start, or every beam would be the same.
    scores = tf.tile(tf.concat([[0.0], tf.fill([width - 1], -float("inf"))], 0)[None], [batch, 1])
    chosen = tf.TensorArray(tf.int32, size=length, element_shape=[None, None])
    parents = tf.TensorArray(tf.int32, size=length, element_shape=[None, None])

    def body(t, state, last, scores, chosen, parents):
        log_probabilities, state = step(last, state)
        classes = tf.shape(log_probabilities)[-1]
        total = scores[:, :, None] + tf.reshape(log_probabilities, [batch, width, classes])
        scores, flat = tf.math.top_k(tf.reshape(total, [batch, -1]), k=width)
        parent, last = flat // classes, flat % classes
        state = tf.gather(tf.reshape(state, [batch, width, -1]), parent, batch_dims=1)
        return (t + 1, tf.reshape(state, [batch * width, state_size]), tf.reshape(last, [-1]), scores,
                chosen.write(t, last), parents.write(t, parent))

    _, _, _, scores, chosen, parents = tf.while_loop(
        lambda t, *_: t < length, body, (tf.constant(0), state, last, scores, chosen, parents))

    # Walk back from the last character, following each beam's parents.
    def back(t, beam, ids):
        return (t - 1, tf.gather(parents.read(t), beam, batch_dims=1),
                ids.write(t, tf.gather(chosen.read(t), beam, batch_dims=1)))

    beams = tf.tile(tf.range(width)[None], [batch, 1])
    ids = tf.TensorArray(tf.int32, size=length, element_shape=[None, None])
    _, _, ids = tf.while_loop(lambda t, *_: t >= 0, back, (length - 1, beams, ids))
    ids = tf.reshape(tf.transpose(ids.stack(), [1, 2, 0]), [batch, width, length])
    return ids, scores
