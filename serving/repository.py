"""A directory of exports served live, each model behind a micro-batcher.

`models_dir/<name>/<version>/` is TF Serving's layout. For every name the
newest version that loads is served; the name is the directory's. A rescan
in the background follows what people do to the directory by hand:

- a new version is loaded and swapped in without a restart (exports are
  renamed into place, so a version with `saved_model.pb` is complete); the
  same graph with new weights runs in the graph already loaded (`load_version`);
- a version that fails to load is recorded with its error, the next older
  one is served instead, and the broken one is not tried again until its
  files change (retrying a corrupt export every few seconds cost ~1 GB of
  memory a minute);
- a version re-exported under the same number (its files changed) is reloaded;
  a served version whose files break on disk goes on being served from memory;
- a deleted model is unloaded, a deleted version falls back to the one before;
- a directory whose name is not a number is skipped, with one warning.
"""

import ctypes
import dataclasses
import gc
import logging
import threading
from pathlib import Path

from serving.batching import Closed, MicroBatcher
from serving.graph_identity import graph_digest
from serving.export_dir import version_of
from serving.model import load_export

log = logging.getLogger(__name__)


def release_memory():
    """Hands the memory of an unloaded model back to the system.

    glibc keeps freed memory in its heap for reuse: after a swap, the old
    version's graphs, which only another load would reuse. (Executables that
    XLA compiled for the old version stay: TensorFlow's compilation cache
    never evicts, tensorflow/tensorflow#64170.)
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass


def fingerprint(version_dir):
    """What identifies one set of files: names, sizes, times and inodes of all of them."""
    entries = []
    for path in sorted(version_dir.rglob("*")):
        stat = path.stat()
        entries.append((str(path.relative_to(version_dir)), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    stat = version_dir.stat()
    return (stat.st_ino, stat.st_mtime_ns, tuple(entries))


def load_version(path, name, current=None):
    """The export at `path`, to replace the `current` model (or None).

    The same graph with new weights (see `serving.graph_identity`) is served
    through the served version's graph and executables: nothing to compile,
    and nothing that TensorFlow would keep after the swap. Any other export is
    loaded, and runs the batch sizes the served version met before it takes
    requests (no compiling under a deadline, no more compiled than the traffic needs).
    """
    digest = getattr(current, "graph_digest", None)
    if digest is not None and graph_digest(path) == digest:
        try:
            return current.reweighted(path)
        except ValueError:
            raise  # its files cannot be read
        except Exception as error:  # noqa: BLE001  (e.g. a TensorFlow whose calls differ: load it whole)
            log.warning("cannot run %s in the graph already loaded (%s); loading it", path, error)
    model = load_export(path, name=name)
    model.warm_up(frozenset(current.batch_sizes) if current else (1,))
    return model


@dataclasses.dataclass
class Served:
    model: object  # a serving.model.ExportedModel, or a serving.classifier.ExportedClassifier
    batcher: MicroBatcher | None  # None for a classifier
    fingerprint: tuple

    def close(self):
        if self.batcher:
            self.batcher.close()


@dataclasses.dataclass
class Failure:
    version: int
    error: str
    fingerprint: tuple


class ModelRepository:
    """The newest loadable version of every model in `models_dir`, rescanned in the background.

    Lookups never wait for a model to load: a daemon thread rescans the
    directory and swaps a new version in once it is loaded.

    Args:
        models_dir: str or Path.
        rescan_interval: float, seconds between rescans.
        max_rows: int, the most rows the batcher merges into one call.
        metrics: a `serving.metrics.Metrics`, or None.
    """

    def __init__(self, models_dir, rescan_interval=2.0, max_rows=64, metrics=None):
        self.models_dir = Path(models_dir)
        if not self.models_dir.is_dir():
            raise ValueError(f"models directory {self.models_dir} does not exist")
        if not rescan_interval > 0:
            raise ValueError(f"rescan_interval must be positive, got {rescan_interval}")
        self.rescan_interval = rescan_interval
        self.max_rows = max_rows
        self.metrics = metrics
        self._served = {}  # name -> Served
        self._failed = {}  # version directory -> Failure
        self._warned = set()  # directories already warned about
        self._lock = threading.Lock()  # guards _served and _failed; held only for lookups and swaps
        self._scan_lock = threading.Lock()
        self.rescan()
        self._closed = threading.Event()
        threading.Thread(target=self._rescan_forever, name="rescan", daemon=True).start()

    def _rescan_forever(self):
        while not self._closed.wait(self.rescan_interval):
            try:
                self.rescan()
            except Exception:  # noqa: BLE001  (the loop must outlive anything a directory does)
                log.exception("rescan of %s failed; trying again in %s s", self.models_dir,
                              self.rescan_interval)

    def close(self):
        """Stops rescanning and the batchers."""
        self._closed.set()
        with self._lock:
            for served in self._served.values():
                served.close()

    def rescan(self):
        """Brings the served models in line with the directory.

        If another thread is rescanning already, returns at once.
        """
        if not self._scan_lock.acquire(blocking=False):
            return
        try:
            self._scan()
        finally:
            self._scan_lock.release()

    def _scan(self):
        names = {d.name: d for d in self.models_dir.iterdir() if d.is_dir() and not d.name.startswith(".")}
        for name in set(self._served) - set(names):
            self._unload(name, "its directory is gone")
        for name, directory in sorted(names.items()):
            try:
                self._scan_model(name, directory)
            except OSError as error:  # changed under our feet: look again next time
                log.warning("cannot read %s (%s); trying again at the next rescan", directory, error)
        with self._lock:
            self._failed = {path: f for path, f in self._failed.items() if path.exists()}
        if self.metrics:
            self.metrics.models_served.set(len(self._served))

    def _versions(self, directory):
        """(version, path) of the complete versions in `directory`, newest first."""
        found = []
        for path in directory.iterdir():
            if path.name.startswith("."):
                continue  # an export being written
            version = version_of(path)
            if version is None:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("skipping %s: a version directory's name must be a number", path)
            elif (path / "saved_model.pb").is_file():
                found.append((version, path))
        return sorted(found, reverse=True)

    def _scan_model(self, name, directory):
        served = self._served.get(name)
        for version, path in self._versions(directory):
            files = fingerprint(path)
            if served and served.model.path == path and served.fingerprint == files:
                return  # the newest loadable version is served already
            failure = self._failed.get(path)
            if failure and failure.fingerprint == files:
                continue  # failed with these very files; wait until they change
            try:
                model = load_version(path, name, served.model if served else None)
            except Exception as error:  # noqa: BLE001  (one broken export must not stop the others)
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                message = message.removeprefix(f"cannot load {path}: ")
                log.warning("cannot load %s: %s; trying an older version", path, message)
                with self._lock:
                    self._failed[path] = Failure(version, message, files)
                if self.metrics:
                    self.metrics.load_failures.labels(name).inc()
                if served and served.model.path == path:
                    return  # the served version's files broke on disk: keep what was loaded from them
                continue
            with self._lock:
                self._failed.pop(path, None)
            # A classifier's requests are whole already: only generation merges rows.
            batcher = (MicroBatcher(model, self.max_rows, metrics=self.metrics)
                       if model.task == "generate" else None)
            self._swap(name, Served(model, batcher, files))
            return
        if served:
            self._unload(name, "its served version is gone and no other loads")

    def _swap(self, name, served):
        with self._lock:
            old = self._served.get(name)
            self._served[name] = served
        graph_of = getattr(served.model, "graph_of", served.model.version)
        log.info("serving %s version %s%s", name, served.model.version,
                 f" (new weights in the graph of version {graph_of})" if graph_of != served.model.version else "")
        if old:
            old.close()
            release_memory()

    def _unload(self, name, why):
        with self._lock:
            old = self._served.pop(name, None)
        if old:
            log.warning("unloaded %s: %s", name, why)
            old.close()
            release_memory()

    def models(self):
        """The served models, by name."""
        with self._lock:
            return {name: served.model for name, served in sorted(self._served.items())}

    def get(self, name):
        """The served model called `name`, or None."""
        with self._lock:
            served = self._served.get(name)
        return served.model if served else None

    def health(self):
        """Every model directory's state: the version served, the version whose graph
        runs it (itself, unless it is new weights for the same graph) and the versions
        that failed."""
        with self._lock:
            report = {name: {"state": "serving", "version": s.model.version,
                             "graph_of": getattr(s.model, "graph_of", s.model.version), "failed": {}}
                      for name, s in self._served.items()}
            for path, failure in self._failed.items():
                entry = report.setdefault(path.parent.name, {"state": "failed", "version": None,
                                                             "failed": {}})
                entry["failed"][str(failure.version)] = failure.error
        return dict(sorted(report.items()))

    def submit(self, name, prepare):
        """Queues a request on the model's batcher.

        Args:
            name: str, the model.
            prepare: a function of the `ExportedModel` returning a checked
                `serving.batching.Request` (it may raise to refuse it).

        Returns:
            (model, future): the model that serves it, and a Future of its samples.

        Raises:
            KeyError: no model called `name`.
            TypeError: the model does not generate (a classifier).
        """
        while True:
            with self._lock:
                served = self._served[name]
            if served.batcher is None:
                raise TypeError(f"{name} is a classifier: it does not generate")
            try:
                return served.model, served.batcher.submit(prepare(served.model))
            except Closed:
                continue  # swapped for another version meanwhile: ask the new one
