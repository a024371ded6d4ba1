"""The graph side of an export: reading primes and sampling, all in TensorFlow.

A `Generator` wraps a model and its alphabet in the signatures a SavedModel
carries, so that loading it needs neither `zoo` nor `training`:

- `serving_default(prime, length, temperature, top_k, top_p, seed)` ->
  `{"text"}`: `length` characters after each prime; row `b` is sample
  number `b` of `seed`, so repeating a prime gives different samples.
- `generate(prime, length, temperature, top_k, top_p, seed, index)` ->
  `{"text"}`: the same with per-row settings and sample numbers, so a server
  can merge requests into one batch and each row draws what it would alone.
- `start(prime)` -> `{"state", "last_ids"}`: reads the primes.
- `resume(state, last_ids, length, temperature, top_k, top_p, seed, index,
  offset)` -> `{"text", "state", "last_ids"}`: `length` more characters; a
  stream calls it chunk by chunk, passing the characters already generated
  as `offset`, and gets exactly the characters of one long call.
- `step(ids, state)` -> `{"logits", "state"}`: the model itself.
- `initial_state(batch_size)` -> `{"state"}`: zeros.

Primes of a model trained on text8-normalised text are normalised the same way in
the graph (`training.data.normalize_text8_tensor`), so every client of the
export gets the same mapping; other models' primes must use the alphabet.
An empty prime starts from the initial state with a space as the first input
(id 0 if the alphabet has no space). A prime with characters outside the
alphabet fails with an InvalidArgument error naming them.
"""

import tensorflow as tf

from training.data import normalize_text8_tensor
from zoo import sampling

# Most characters generated per call of the compiled inner loop; each call
# costs about as much as a character of an LSTM-512, so calls are long.
# (Streams ask `resume` for short chunks; a call never runs past `length`.)
CHUNK = 256


class Generator(tf.Module):
    """The graph side of an export: reads primes and samples, all in TensorFlow.

    Args:
        model: a `zoo.CharLM`.
        alphabet: str, character `i` is id `i`.
        normalize: `"text8"` to normalise primes as text8 was made, or None.
        xla: bool or None. False runs the sampling loop as a plain graph;
            otherwise it is compiled with XLA if the model compiles.
    """

    def __init__(self, model, alphabet, normalize=None, xla=None):
        super().__init__(name="generator")
        if normalize not in (None, "text8"):
            raise ValueError(f"unknown normalization {normalize!r}; valid: 'text8' or None")
        self.model = model
        self.normalize = normalize
        self.state_size = int(model.state_size)
        self.chars = tf.constant(list(alphabet))
        self.start_id = alphabet.index(" ") if " " in alphabet else 0
        self.uses_xla = xla is not False and self._xla_compiles()
        self._chunk = tf.function(self._chunk_impl, jit_compile=self.uses_xla)

    def _xla_compiles(self):
        try:
            tf.function(self._chunk_impl, jit_compile=True)(
                *self._chunk_example(), tf.constant(0), tf.constant(CHUNK)
            )
            return True
        except (tf.errors.OpError, ValueError, TypeError, NotImplementedError):
            return False

    def _chunk_example(self):
        ones = tf.ones([1])
        return (tf.zeros([1, self.state_size]), tf.zeros([1], tf.int32), ones,
                tf.zeros([1], tf.int32), ones, tf.zeros([1], tf.int64), tf.zeros([1], tf.int32))

    def _chunk_impl(self, state, last, temperature, top_k, top_p, seed, index, offset, remaining):
        """`min(CHUNK, remaining)` steps of sampling; ids `[batch, CHUNK]`, zeros after those."""
        ids = tf.TensorArray(tf.int32, size=CHUNK)

        def body(t, state, last, ids):
            logits, state = self.model([last[:, None], state], training=False)
            last = sampling.sample(logits[:, -1], temperature, top_k, top_p, seed, index, offset + t)
            return t + 1, state, last, ids.write(t, last)

        steps = tf.minimum(CHUNK, remaining)
        _, state, last, ids = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), state, last, ids)
        )
        return tf.transpose(ids.stack()), state, last

    def _to_ids(self, prime):
        """Strings `[batch]` -> ids `[batch, time]` padded, lengths `[batch]` (>= 1)."""
        if self.normalize == "text8":
            prime = normalize_text8_tensor(prime)
        chars = tf.strings.unicode_split(prime, "UTF-8")
        matches = tf.equal(chars.flat_values[:, None], self.chars[None, :])
        known = tf.reduce_any(matches, axis=-1)
        unknown = tf.unique(tf.boolean_mask(chars.flat_values, tf.logical_not(known)))[0]
        tf.debugging.Assert(
            tf.reduce_all(known),
            ["prime has characters outside the alphabet:", tf.strings.reduce_join(unknown, separator=" ")],
        )
        ids = chars.with_flat_values(tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int32))
        # An empty prime reads one start character instead.
        empty = ids.row_lengths() == 0
        start = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], self.start_id),
            tf.cast(empty, tf.int64),
        )
        ids = tf.concat([start, ids], axis=1)
        return ids.to_tensor(), tf.cast(ids.row_lengths(), tf.int32)

    def _read(self, prime):
        ids, lengths = self._to_ids(prime)
        state = tf.zeros([tf.shape(ids)[0], self.state_size])
        # All rows read their first `common` characters in one call of the
        # model; only the rows with longer primes need a step-by-step loop.
        common = tf.reduce_min(lengths) - 1
        state = tf.cond(
            common > 0,
            lambda: self.model([ids[:, :common], state], training=False)[1],
            lambda: state,
        )

        def body(t, state):
            new_state = self.model([ids[:, t : t + 1], state], training=False)[1]
            return t + 1, tf.where((t < lengths - 1)[:, None], new_state, state)

        _, state = tf.while_loop(
            lambda t, _: t < tf.reduce_max(lengths) - 1, body, (tf.maximum(common, 0), state)
        )
        return state, tf.gather(ids, lengths - 1, axis=1, batch_dims=1)

    def _resume(self, state, last, length, temperature, top_k, top_p, seed, index, offset):
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0")
        tf.debugging.assert_positive(top_p, message="top_p must be in (0, 1]")
        tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]")
        # At least one chunk (all of it inactive if length is 0) so the stack has a shape.
        chunks = tf.maximum((length + CHUNK - 1) // CHUNK, 1)
        pieces = tf.TensorArray(tf.int32, size=chunks, element_shape=[None, CHUNK])

        def body(c, state, last, pieces):
            ids, state, last = self._chunk(state, last, temperature, top_k, top_p, seed, index,
                                           offset + c * CHUNK, length - c * CHUNK)
            return c + 1, state, last, pieces.write(c, ids)

        _, state, last, pieces = tf.while_loop(
            lambda c, *_: c < chunks, body, (tf.constant(0), state, last, pieces)
        )
        ids = tf.reshape(tf.transpose(pieces.stack(), [1, 0, 2]), [tf.shape(last)[0], -1])
        text = tf.strings.reduce_join(tf.gather(self.chars, ids[:, :length]), axis=-1)
        return text, state, last

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, "prime"), tf.TensorSpec([], tf.int32, "length"),
        tf.TensorSpec([], tf.float32, "temperature"), tf.TensorSpec([], tf.int32, "top_k"),
        tf.TensorSpec([], tf.float32, "top_p"), tf.TensorSpec([], tf.int64, "seed"),
    ])
    def serving_default(self, prime, length, temperature, top_k, top_p, seed):
        batch = tf.shape(prime)[:1]
        return self.generate(prime, length, tf.fill(batch, temperature), tf.fill(batch, top_k),
                             tf.fill(batch, top_p), tf.fill(batch, seed), tf.range(batch[0]))

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, "prime"), tf.TensorSpec([], tf.int32, "length"),
        tf.TensorSpec([None], tf.float32, "temperature"), tf.TensorSpec([None], tf.int32, "top_k"),
        tf.TensorSpec([None], tf.float32, "top_p"), tf.TensorSpec([None], tf.int64, "seed"),
        tf.TensorSpec([None], tf.int32, "index"),
    ])
    def generate(self, prime, length, temperature, top_k, top_p, seed, index):
        state, last = self._read(prime)
        text, _, _ = self._resume(state, last, length, temperature, top_k, top_p, seed, index, 0)
        return {"text": text}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "prime")])
    def start(self, prime):
        state, last = self._read(prime)
        return {"state": state, "last_ids": last}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, "state"), tf.TensorSpec([None], tf.int32, "last_ids"),
        tf.TensorSpec([], tf.int32, "length"),
        tf.TensorSpec([None], tf.float32, "temperature"), tf.TensorSpec([None], tf.int32, "top_k"),
        tf.TensorSpec([None], tf.float32, "top_p"), tf.TensorSpec([None], tf.int64, "seed"),
        tf.TensorSpec([None], tf.int32, "index"), tf.TensorSpec([], tf.int32, "offset"),
    ])
    def resume(self, state, last_ids, length, temperature, top_k, top_p, seed, index, offset):
        text, state, last = self._resume(state, last_ids, length, temperature, top_k, top_p,
                                         seed, index, offset)
        return {"text": text, "state": state, "last_ids": last}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int32, "ids"), tf.TensorSpec([None, None], tf.float32, "state"),
    ])
    def step(self, ids, state):
        logits, state = self.model([ids, state], training=False)
        return {"logits": logits, "state": state}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, "batch_size")])
    def initial_state(self, batch_size):
        return {"state": tf.zeros([batch_size, self.state_size])}


SIGNATURES = ["serving_default", "generate", "start", "resume", "step", "initial_state"]
