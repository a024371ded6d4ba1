"""One exported model: load it, check requests against it, sample from it.

Needs only TensorFlow and the SavedModel written by `training.export`: the
model card (`assets/model.json`) gives the alphabet and whether the graph
normalises primes itself, the signatures do the rest.
"""

import copy
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.export_dir import cannot_load, digest_or_none, find_version_dir, read_card, read_export, version_of
from serving.graph_identity import variables_from
from serving.settings import Limits, SettingError, Settings, check_seed, check_settings, new_seed
from serving.stops import StopStream, cut

# Characters per call of the export's `resume` signature when generating: between
# calls a request whose client has gone, or whose deadline passed, is dropped.
CHUNK = 256


# The card's fields that say where a model came from (see `training.export`).
LINEAGE = ("config", "parameters", "training_corpus", "steps", "checkpoint", "fine_tuned_from",
           "versions")


def bucket(rows):
    """The batch size to run `rows` rows at: the next power of two, so an XLA
    compiled export compiles for a few shapes only."""
    return 1 << max(rows - 1, 0).bit_length()


def load_export(path, name=None):
    """An `ExportedModel`, or an `ExportedClassifier` if the model card says it classifies."""
    from serving.classifier import ExportedClassifier

    try:
        task = read_card(find_version_dir(path)).get("task")
    except (OSError, ValueError):
        task = None  # read_export says what is wrong
    return (ExportedClassifier if task == "classify" else ExportedModel)(path, name)


class ExportedModel:
    """A loaded export and its model card.

    Args:
        path: a version directory (with `saved_model.pb`), or a model
            directory whose newest version is loaded.
        name: str, the model's name; default its directory's name.

    Raises:
        ValueError: `path` holds no export, or its files cannot be read.
    """

    task = "generate"

    def __init__(self, path, name=None):
        self.path, self.card, self._saved = read_export(path)
        self.name = name or self.path.parent.name
        self.version = version_of(self.path) or 0
        self._adopt(self.card)
        self._signatures = {key: function for key, function in self._saved.signatures.items()
                            if key in ("generate", "start", "resume", "score", "beam_search")}
        self._captures = {}  # by signature: another version's variables in place of the graph's own
        self._variables = []  # those variables, kept alive
        # Exports older than stop strings have a `generate` without them.
        self._takes_stops = "stop" in self._signatures["generate"].structured_input_signature[1]
        self.graph_digest = digest_or_none(self.path)
        self.graph_of = self.version  # the version whose graph runs this one (see `reweighted`)
        self.batch_sizes = set()  # the batch sizes `generate` has run at, for the next version's warm-up
        self.warm_up()

    def _adopt(self, card):
        self.card, self.alphabet, self.normalize = card, card["alphabet"], card.get("normalize")
        # Exports made before the graph normalised primes itself take only the alphabet.
        self.takes_any_prime = bool(card.get("normalizes_primes"))

    def reweighted(self, path):
        """Version `path` served through this version's graph and compiled
        executables: `path` must be the same graph with other weights (see
        `serving.graph_identity`). Costs the new weights' memory only.

        Raises:
            ValueError: the weights of `path` cannot be read, or do not fit.
        """
        path = Path(path)
        try:
            card, replaced = read_card(path), variables_from(path, self._saved)
        except (tf.errors.OpError, OSError, ValueError) as error:  # a bad copy, a checksum error
            raise cannot_load(path, error) from None
        own = {id(v.handle) for v in tf.train.TrackableView(self._saved).descendants()
               if isinstance(v, tf.Variable)}
        model = copy.copy(self)
        model.path, model.version = path, version_of(path) or 0
        model._adopt(card)
        model._variables = list(replaced.values())
        model._captures = {}
        for key, function in self._signatures.items():
            captures = list(function.captured_inputs)
            if any(id(c) in own and id(c) not in replaced for c in captures):
                raise ValueError(f"cannot load {path}: a variable of {key} has no new value")
            model._captures[key] = [replaced[id(c)].handle if id(c) in own else c for c in captures]
        model.batch_sizes = set(self.batch_sizes)
        model.warm_up()  # one call: the executables are this version's, nothing compiles
        return model

    def _call(self, signature, **inputs):
        """Calls a signature, with another version's variables if this is a `reweighted` version."""
        function = self._signatures[signature]
        if signature not in self._captures:
            return function(**inputs)
        flat = [inputs[key] for key in sorted(function.structured_input_signature[1])]
        return function._call_flat(flat, captured_inputs=self._captures[signature])  # noqa: SLF001

    def warm_up(self, batch_sizes=(1,)):
        """Calls `generate` at each of `batch_sizes` (`bucket`s). TensorFlow prepares a
        loaded function's graph on its first call (~1 s), and an XLA-compiled export
        compiles each batch size on its first call (~1.5 s each, on 2 cores): a merged
        batch under a deadline should wait for neither. Exports without XLA need the
        first call only. (A first stream or score waits for its own function once.)"""
        for rows in sorted(batch_sizes) if self.card.get("xla") else [1]:
            list(self.chunks([self.alphabet[0]] * rows, 1, [0.0] * rows, [0] * rows, [1.0] * rows,
                             [0] * rows, [0] * rows))

    def describe(self):
        """The public facts about the model, for listings."""
        card = self.card
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "family": card.get("family"),
            "preset": card.get("preset"),
            "alphabet": self.alphabet,
            "normalize": self.normalize,
            "state_size": card.get("state_size"),
            "created": card.get("created"),
            "metrics": {k: card.get(k) for k in ("valid_bpc", "test_bpc", "characters_seen")},
            "can_score": "score" in self._signatures,
            "lineage": {k: card[k] for k in LINEAGE if k in card},
        }

    def prepare(self, prime, max_prime=None, field="prime"):
        """The prime, once it is known that the model can read it.

        A model that normalises primes in its graph (like text8, if it was
        trained so) reads any text; for the others any character outside the
        alphabet is an error.

        Raises:
            SettingError: the prime is too long, is not valid Unicode, or has characters
                outside the alphabet.
        """
        if max_prime is not None and len(prime) > max_prime:
            raise SettingError(field, f"must be at most {max_prime} characters, got {len(prime)}")
        try:  # JSON may carry a lone surrogate such as \ud800; the graph takes UTF-8 only
            prime.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SettingError(field, f"is not valid Unicode text ({error.reason} at "
                                        f"character {error.start})") from None
        unknown = [] if self.takes_any_prime else sorted(set(prime) - set(self.alphabet))
        if unknown:
            raise SettingError(
                field, f"has characters outside the model's alphabet: {''.join(unknown)!r} "
                f"(alphabet: {self.alphabet!r})"
            )
        return prime

    def chunks(self, primes, length, temperatures, top_ks, top_ps, seeds, indices, chunk=CHUNK):
        """Generates for rows with their own settings (primes prepared, settings
        checked), yielding each row's next `chunk` characters as a list of str.

        The chunks join to the same text whatever `chunk` is, so a caller may
        stop between chunks at no cost to the rows that go on elsewhere.
        """
        rows = len(primes)
        pad = bucket(rows) - rows
        self.batch_sizes.add(rows + pad)

        def column(values, dtype, filler):
            return tf.constant(np.asarray(list(values) + [filler] * pad, dtype=dtype))

        settings = {"temperature": column(temperatures, np.float32, 0.0),
                    "top_k": column(top_ks, np.int32, 0), "top_p": column(top_ps, np.float32, 1.0),
                    "seed": column(seeds, np.int64, 0), "index": column(indices, np.int32, 0)}
        primes = column(primes, object, " ")
        if length <= chunk:  # one call of `generate` costs ~1.5 ms less than `start` + `resume`
            if length > 0:
                if self._takes_stops:  # none: the server cuts at stops itself (`serving.stops`)
                    settings.update(stop=tf.fill([rows + pad, 1], ""),
                                    include_stop=tf.zeros([rows + pad], tf.bool))
                out = self._call("generate", prime=primes, length=tf.constant(length), **settings)
                yield [t.decode("utf-8") for t in out["text"].numpy()[:rows]]
            return
        started = self._call("start", prime=primes)
        state, last = started["state"], started["last_ids"]
        for offset in range(0, length, chunk):
            out = self._call("resume", state=state, last_ids=last, length=tf.constant(min(chunk, length - offset)),
                               offset=tf.constant(offset), **settings)
            state, last = out["state"], out["last_ids"]
            yield [t.decode("utf-8") for t in out["text"].numpy()[:rows]]

    def check(self, prime, settings, seed, limits=Limits()):
        """The prime prepared, once every setting is known to be in range.

        Raises:
            SettingError: naming the first field out of range.
        """
        check_seed(seed)
        check_settings(settings, len(self.alphabet), limits)
        if settings.beam_width > 1 and "beam_search" not in self._signatures:
            raise SettingError("beam_width", "needs an export with beam search; re-export the model")
        return self.prepare(prime, limits.max_prime)

    def beam_search(self, prime, settings):
        """The `settings.num_samples` most likely continuations of a checked prime by
        beam search of `settings.beam_width` (each cut at its first stop string), and
        the surprisal in bits of each whole continuation found."""
        out = self._call("beam_search", prime=tf.constant([prime]), length=tf.constant(settings.length),
                         beam_width=tf.constant(settings.beam_width))
        texts = [cut(t.decode("utf-8"), settings.stop, settings.include_stop)[0]
                 for t in out["text"].numpy()[0, : settings.num_samples]]
        return texts, [float(b) for b in out["bits"].numpy()[0, : settings.num_samples]]

    def score(self, text, limits=Limits()):
        """How surprised the model is by each character of `text`.

        Returns:
            dict: `text` (as the model read it, normalised if it normalises),
            `surprisal` (bits, one per character), `bits`, `bpc`, `characters`.

        Raises:
            SettingError: the export cannot score, or the text is empty, too long
                or has characters outside the alphabet.
        """
        if "score" not in self._signatures:
            raise SettingError("text", "cannot be scored: this export has no `score` signature; "
                                       "re-export the model")
        if limits.max_text is not None and len(text) > limits.max_text:
            raise SettingError("text", f"must be at most {limits.max_text} characters, got {len(text)}")
        out = self._call("score", text=tf.constant([self.prepare(text, None, "text")]))
        length = int(out["length"][0])
        if length == 0:
            raise SettingError("text", "has no characters the model reads (after normalisation)")
        return {"text": out["text"][0].numpy().decode("utf-8"),
                "surprisal": [round(float(b), 4) for b in out["surprisal"][0, :length]],
                "bits": float(out["bits"][0]), "bpc": float(out["bpc"][0]), "characters": length}

    def chunks_of(self, prime, settings, seed, chunk=CHUNK):
        """`chunks` for `settings.num_samples` samples of one checked prime."""
        n = settings.num_samples
        return self.chunks([prime] * n, settings.length, [settings.temperature] * n,
                           [settings.top_k] * n, [settings.top_p] * n, [seed] * n, range(n), chunk)

    def sample(self, prime="", length=Settings.length, temperature=Settings.temperature,
               top_k=Settings.top_k, top_p=Settings.top_p, seed=0, num_samples=Settings.num_samples,
               stop=Settings.stop, include_stop=Settings.include_stop, beam_width=Settings.beam_width):
        """`num_samples` continuations of `prime` (sample `i` of `seed` each, or the
        most likely ones by beam search), each ending at its first stop string.

        Raises:
            SettingError: a setting is out of range or the prime cannot be read.
        """
        settings = Settings(length, temperature, top_k, top_p, num_samples, tuple(stop), include_stop,
                            beam_width)
        prime = self.check(prime, settings, seed)
        if settings.beam_width > 1:
            return self.beam_search(prime, settings)[0]
        stops = StopStream(settings.num_samples, settings.stop, settings.include_stop)
        for piece in self.chunks_of(prime, settings, seed):
            stops.feed(piece)
            if stops.all_stopped:
                break
        return stops.texts


def sample(model_dir, prime="", length=Settings.length, temperature=Settings.temperature,
           top_k=Settings.top_k, top_p=Settings.top_p, seed=None, num_samples=Settings.num_samples,
           **settings):
    """Samples from an export; what `charzoo sample` runs.

    Args:
        model_dir: a version directory or a `<name>/` directory (newest version).
        seed: int, or None for a random one.
        settings: `stop`, `include_stop`, `beam_width` (see `serving.settings.Settings`).

    Returns:
        (samples, seed): list of str, and the seed used.

    Raises:
        ValueError: no export at `model_dir`, a bad setting, or a prime that
            cannot be read.
    """
    seed = new_seed() if seed is None else int(seed)
    model = ExportedModel(model_dir)
    return model.sample(prime, length, temperature, top_k, top_p, seed, num_samples, **settings), seed
