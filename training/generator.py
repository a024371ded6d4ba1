"""The graph side of an export: reading primes and sampling, all in TensorFlow.

A `Generator` wraps a model and its alphabet in the signatures a SavedModel
carries, so that loading it needs neither `zoo` nor `training`:

- `serving_default(prime, length, temperature, top_k, top_p, seed)` ->
  `{"text"}`: `length` characters after each prime; row `b` is sample
  number `b` of `seed`, so repeating a prime gives different samples.
- `generate(prime, length, temperature, top_k, top_p, seed, index, stop,
  include_stop)` -> `{"text"}`: the same with per-row settings and sample
  numbers, so a server can merge requests into one batch and each row draws
  what it would alone; a row ends at the first of its `stop` strings to be
  generated (`""` is none), cut before it or, with `include_stop`, after it.
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
from training.scoring import first_stop, surprisal
from zoo import sampling

# Most characters generated per call of the compiled inner loop; each call
# costs about as much as a character of an LSTM-512, so calls are long.
# (Streams ask `resume` for short chunks; a call never runs past `length`.)
CHUNK = 256


class Generator:
    """The graph side of an export: reads primes and samples, all in TensorFlow.

    Args:
        model: a `zoo.CharLM`.
        alphabet: str, character `i` is id `i`.
        normalize: `"text8"` to normalise primes as text8 was made, or None.
        xla: bool or None. False runs the sampling loop as a plain graph;
            otherwise it is compiled with XLA if the model compiles.
    """

    def __init__(self, model, alphabet, normalize=None, xla=None):
        if normalize not in (None, "text8"):
            raise ValueError(f"unknown normalization {normalize!r}; valid: 'text8' or None")
        self.model = model
        self.normalize = normalize
        self.state_size = int(model.state_size)
        self.chars = tf.constant(list(alphabet))
        self.start_id = alphabet.index(" ") if " " in alphabet else 0
        self.uses_xla = xla is not False and self._xla_compiles()
        self._chunk = tf.function(self._chunk_impl, jit_compile=self.uses_xla, autograph=False)
        # Parts of several signatures, as functions of their own: traced once, not once per signature.
        self._read = tf.function(self._read, autograph=False)
        self._score = tf.function(self._score, autograph=False)
        self._generate = tf.function(self.generate, input_signature=SPECS["generate"], autograph=False)

    def _xla_compiles(self):
        try:
            tf.function(self._chunk_impl, jit_compile=True, autograph=False)(
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

    def _normalized(self, text):
        return normalize_text8_tensor(text) if self.normalize == "text8" else text

    def _ids(self, text):
        """Normalised strings `[batch]` -> ragged ids `[batch, (time)]`."""
        chars = tf.strings.unicode_split(text, "UTF-8")
        matches = tf.equal(chars.flat_values[:, None], self.chars[None, :])
        known = tf.reduce_any(matches, axis=-1)
        unknown = tf.unique(tf.boolean_mask(chars.flat_values, tf.logical_not(known)))[0]
        tf.debugging.Assert(
            tf.reduce_all(known),
            ["text has characters outside the alphabet:", tf.strings.reduce_join(unknown, separator=" ")],
        )
        return chars.with_flat_values(tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int32))

    def _to_ids(self, prime):
        """Strings `[batch]` -> ids `[batch, time]` padded, lengths `[batch]` (>= 1)."""
        ids = self._ids(self._normalized(prime))
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

    def _resume(self, state, last, length, temperature, top_k, top_p, seed, index, offset,
                stop=None, include_stop=None):
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0")
        tf.debugging.assert_positive(top_p, message="top_p must be in (0, 1]")
        tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]")
        # At least one chunk (all of it inactive if length is 0).
        chunks = tf.maximum((length + CHUNK - 1) // CHUNK, 1)
        batch = tf.shape(last)[0]

        def body(c, state, last, text, stopped):
            ids, state, last = self._chunk(state, last, temperature, top_k, top_p, seed, index,
                                           offset + c * CHUNK, length - c * CHUNK)
            text += tf.strings.reduce_join(tf.gather(self.chars, ids[:, :length - c * CHUNK]), axis=-1)
            if stop is not None:  # a batch ends early once every row has met a stop
                stopped = self._first_stop(text, stop)[0] >= 0
            return c + 1, state, last, text, stopped

        _, state, last, text, _ = tf.while_loop(
            lambda c, *rest: (c < chunks) & ~tf.reduce_all(rest[-1]),
            body, (tf.constant(0), state, last, tf.fill([batch], ""), tf.zeros([batch], tf.bool)))
        if stop is not None:
            start, end = self._first_stop(text, stop)
            cut = tf.where(start < 0, length, tf.where(include_stop, end, start))
            text = tf.strings.substr(text, tf.zeros_like(cut), cut, unit="UTF8_CHAR")
        return text, state, last

    @staticmethod
    def _first_stop(text, stop):
        """`scoring.first_stop`, skipped (no row stops) when no row has a stop string."""
        none = tf.fill(tf.shape(text), -1)
        return tf.cond(tf.reduce_any(tf.strings.length(stop) > 0), lambda: first_stop(text, stop),
                       lambda: (none, none))

    def _score(self, text, state, last):
        text = self._normalized(text)
        ids = self._ids(text)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        bits, state, last = surprisal(self.model, ids.to_tensor(), lengths, state, last)
        total = tf.reduce_sum(bits, axis=1)
        return {"text": text, "surprisal": bits, "length": lengths, "bits": total,
                "bpc": tf.math.divide_no_nan(total, tf.cast(lengths, tf.float32)),
                "state": state, "last_ids": last}

    def _checked(self, state, ids, batch):
        """`(state, ids)` once `state` is `[batch, state_size]`, `ids` of `batch` rows and
        all in the alphabet. The signatures that take a state from the caller check it: a
        wrong one failed deep in the model, or broadcast silently against a batch of 1."""
        size = self.state_size
        checks = [
            tf.debugging.assert_equal(tf.shape(state), tf.stack([batch, size]), message=(
                f"state must be [batch, {size}] (initial_state's, start's or an earlier call's), "
                "with as many rows as the ids or texts")),
            tf.debugging.assert_equal(tf.shape(ids)[0], batch, message="one row of ids per row of state"),
            tf.debugging.assert_non_negative(ids, message="ids must be >= 0"),
            tf.debugging.assert_less(ids, tf.size(self.chars),
                                     message="ids must be less than the size of the alphabet"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(state), tf.identity(ids)

    def serving_default(self, prime, length, temperature, top_k, top_p, seed):
        batch = tf.shape(prime)[:1]
        return self._generate(prime, length, tf.fill(batch, temperature), tf.fill(batch, top_k),
                             tf.fill(batch, top_p), tf.fill(batch, seed), tf.range(batch[0]),
                             tf.fill([batch[0], 1], ""), tf.zeros(batch, tf.bool))

    def generate(self, prime, length, temperature, top_k, top_p, seed, index, stop, include_stop):
        state, last = self._read(prime)
        text, _, _ = self._resume(state, last, length, temperature, top_k, top_p, seed, index, 0,
                                  stop, include_stop)
        return {"text": text}

    def start(self, prime):
        state, last = self._read(prime)
        return {"state": state, "last_ids": last}

    def resume(self, state, last_ids, length, temperature, top_k, top_p, seed, index, offset):
        state, last_ids = self._checked(state, last_ids, tf.shape(last_ids)[0])
        text, state, last = self._resume(state, last_ids, length, temperature, top_k, top_p,
                                         seed, index, offset)
        return {"text": text, "state": state, "last_ids": last}

    def score(self, text):
        batch = tf.shape(text)[0]
        return self._score(text, tf.zeros([batch, self.state_size]), tf.fill([batch], self.start_id))

    def score_from(self, text, state, last_ids):
        return self._score(text, *self._checked(state, last_ids, tf.shape(text)[0]))

    def beam_search(self, prime, length, beam_width):
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        tf.debugging.assert_positive(beam_width, message="beam_width must be >= 1")
        state, last = self._read(prime)

        def step(ids, state):
            logits, state = self.model([ids[:, None], state], training=False)
            return tf.nn.log_softmax(logits[:, -1]), state

        ids, log_probability = sampling.beam_search(step, state, last, length, beam_width)
        text = tf.strings.reduce_join(tf.gather(self.chars, ids), axis=-1)
        return {"text": text, "bits": -log_probability / tf.math.log(2.0)}

    def step(self, ids, state):
        state, ids = self._checked(state, ids, tf.shape(ids)[0])
        logits, state = self.model([ids, state], training=False)
        return {"logits": logits, "state": state}

    def initial_state(self, batch_size):
        return {"state": tf.zeros([batch_size, self.state_size])}


    def signatures(self):
        """Every signature, as `{name: tf.function}` for `tf.saved_model.save`.

        Made here, not as decorated methods, so that saving traces each one once (a
        tf.function attribute of a saved object is traced again for the object graph).
        Traced without AutoGraph: the code writes its loops and conditions as ops."""
        return {name: self._generate if name == "generate" else
                tf.function(getattr(self, name), input_signature=specs, autograph=False)
                for name, specs in SPECS.items()}


S = tf.TensorSpec
ROW_SETTINGS = [S([None], tf.float32, "temperature"), S([None], tf.int32, "top_k"),
                S([None], tf.float32, "top_p"), S([None], tf.int64, "seed"), S([None], tf.int32, "index")]
STATE = [S([None, None], tf.float32, "state"), S([None], tf.int32, "last_ids")]
# Each signature's inputs, in the order of its method's arguments.
SPECS = {
    "serving_default": [S([None], tf.string, "prime"), S([], tf.int32, "length"),
                        S([], tf.float32, "temperature"), S([], tf.int32, "top_k"),
                        S([], tf.float32, "top_p"), S([], tf.int64, "seed")],
    "generate": [S([None], tf.string, "prime"), S([], tf.int32, "length"), *ROW_SETTINGS,
                 S([None, None], tf.string, "stop"), S([None], tf.bool, "include_stop")],
    "start": [S([None], tf.string, "prime")],
    "resume": [*STATE, S([], tf.int32, "length"), *ROW_SETTINGS, S([], tf.int32, "offset")],
    "score": [S([None], tf.string, "text")],
    "score_from": [S([None], tf.string, "text"), *STATE],
    "beam_search": [S([None], tf.string, "prime"), S([], tf.int32, "length"), S([], tf.int32, "beam_width")],
    "step": [S([None, None], tf.int32, "ids"), S([None, None], tf.float32, "state")],
    "initial_state": [S([], tf.int32, "batch_size")],
}
SIGNATURES = list(SPECS)
