"""A directory of exports served live, each model behind a micro-batcher.

`models_dir/<name>/<version>/` is TF Serving's layout; the newest complete
version of each name is served, and a version that appears later replaces
it without a restart (exports are renamed into place, so a version directory
with `saved_model.pb` is complete).
"""

import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from serving.sampler import ExportedModel, check_settings

log = logging.getLogger(__name__)


class MicroBatcher:
    """Runs concurrent requests to one model as merged calls of its graph.

    A background thread takes every request waiting (up to `max_rows` rows,
    waiting at most `window` seconds for more after the first), runs them as
    one batch at the longest requested length, and cuts each row back to its
    own length. Rows keep their own settings, seed and sample number, so a
    merged request returns exactly what it would alone.

    Under load, requests queue up while a call runs and form the next batch,
    so by default nothing waits: with an LSTM-512 export on 2 cores, a 5 ms
    window left the throughput of 32 concurrent clients unchanged (~600 req/s)
    and doubled the latency of a lone request (14 ms instead of 6.5 ms).

    Args:
        model: an `ExportedModel`.
        max_rows: int, the most rows per call.
        window: float, seconds to wait for more requests after the first.
    """

    def __init__(self, model, max_rows=64, window=0.0):
        self.model = model
        self.max_rows = max_rows
        self.window = window
        self._queue = queue.Queue()
        self._carry = None
        self._thread = threading.Thread(target=self._run, name=f"batcher-{model.name}", daemon=True)
        self._thread.start()

    def submit(self, prime, length, temperature, top_k, top_p, seed, num_samples):
        """Queues a request of prepared prime; returns a Future of its list of samples."""
        future = Future()
        self._queue.put((prime, length, temperature, top_k, top_p, seed, num_samples, future))
        return future

    def close(self):
        """Stops the thread once the requests already queued are done."""
        self._queue.put(None)

    def _take(self):
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows = [first], first[6]
        deadline = time.monotonic() + self.window
        while True:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return batch
            if item is None:
                self._queue.put(None)  # Stop after this batch.
                return batch
            if rows + item[6] > self.max_rows:
                self._carry = item
                return batch
            batch.append(item)
            rows += item[6]

    def _run(self):
        while (batch := self._take()) is not None:
            columns = [[] for _ in range(6)]
            for prime, _, temperature, top_k, top_p, seed, n, _ in batch:
                for i, value in enumerate((prime, temperature, top_k, top_p, seed)):
                    columns[i].extend([value] * n)
                columns[5].extend(range(n))
            try:
                texts = self.model.generate_rows(
                    columns[0], max(item[1] for item in batch), *columns[1:]
                )
            except Exception as error:  # noqa: BLE001  (handed to every waiting caller)
                for item in batch:
                    item[7].set_exception(error)
                continue
            start = 0
            for _, length, *_, n, future in batch:
                future.set_result([t[:length] for t in texts[start : start + n]])
                start += n


class ModelRepository:
    """The newest version of every model in `models_dir`, rescanned in the background.

    Lookups never wait for a model to load: a daemon thread rescans the
    directory and swaps a new version in once it is loaded.

    Args:
        models_dir: str or Path.
        rescan_interval: float, seconds between rescans.
        max_rows: int, the most rows the batcher merges into one call.
    """

    def __init__(self, models_dir, rescan_interval=2.0, max_rows=64):
        self.models_dir = Path(models_dir)
        if not self.models_dir.is_dir():
            raise ValueError(f"models directory {self.models_dir} does not exist")
        if not rescan_interval > 0:
            raise ValueError(f"rescan_interval must be positive, got {rescan_interval}")
        self.rescan_interval = rescan_interval
        self.max_rows = max_rows
        self._served = {}  # name -> (ExportedModel, MicroBatcher)
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self.rescan()
        self._closed = threading.Event()
        threading.Thread(target=self._rescan_forever, name="rescan", daemon=True).start()

    def _rescan_forever(self):
        while not self._closed.wait(self.rescan_interval):
            try:
                self.rescan()
            except OSError:  # the directory went away for a moment; try again later
                log.exception("cannot rescan %s", self.models_dir)

    def close(self):
        """Stops rescanning."""
        self._closed.set()

    def rescan(self):
        """Loads every model whose newest version is not the one served.

        If another thread is rescanning already, returns at once.
        """
        if not self._scan_lock.acquire(blocking=False):
            return
        try:
            self._scan()
        finally:
            self._scan_lock.release()

    def _scan(self):
        for name_dir in sorted(self.models_dir.iterdir()):
            versions = [int(p.name) for p in name_dir.glob("*")
                        if p.name.isdigit() and (p / "saved_model.pb").is_file()] if name_dir.is_dir() else []
            if not versions or name_dir.name.startswith("."):
                continue
            newest = max(versions)
            served = self._served.get(name_dir.name)
            if served and served[0].version >= newest:
                continue
            try:
                model = ExportedModel(name_dir / str(newest))
            except Exception:  # noqa: BLE001  (one broken export must not stop the others)
                log.exception("cannot load %s/%s; keeping what is served", name_dir, newest)
                continue
            with self._lock:
                old = self._served.get(name_dir.name)
                self._served[name_dir.name] = (model, MicroBatcher(model, self.max_rows))
            if old:
                old[1].close()

    def models(self):
        """The served models, by name."""
        with self._lock:
            return {name: model for name, (model, _) in sorted(self._served.items())}

    def get(self, name):
        """The served model called `name`, or None."""
        with self._lock:
            served = self._served.get(name)
        return served[0] if served else None

    def submit(self, name, prime, length, temperature, top_k, top_p, seed, num_samples):
        """Checks a request and queues it on the model's batcher.

        Returns:
            (model, future): the `ExportedModel` that serves it, and a Future
            of its list of samples.

        Raises:
            KeyError: no model called `name`.
            ValueError: a bad setting or prime.
        """
        with self._lock:
            if name not in self._served:
                raise KeyError(name)
            model, batcher = self._served[name]
        check_settings(length, temperature, top_k, top_p, num_samples)
        prime = model.prepare(prime)
        return model, batcher.submit(prime, length, temperature, top_k, top_p, seed, num_samples)
