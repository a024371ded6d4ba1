"""The service's Prometheus metrics, in a registry of its own per app.

Labels take only bounded values (served model names, fixed endpoint names,
status codes), so a client sending made-up model names cannot grow them.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Counters, gauges and histograms of one app."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("charzoo_requests", "HTTP requests answered, by status",
                                ["model", "endpoint", "status"], registry=r)
        self.latency = Histogram("charzoo_request_seconds", "Time to answer a request (whole stream)",
                                 ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("charzoo_batch_rows", "Rows per merged call of a model",
                                    ["model"], buckets=ROW_BUCKETS, registry=r)
        self.queued_rows = Gauge("charzoo_queued_rows", "Rows waiting for a model's batcher",
                                 ["model"], registry=r)
        self.characters = Counter("charzoo_characters_generated", "Characters generated",
                                  ["model"], registry=r)
        self.load_failures = Counter("charzoo_model_load_failures",
                                     "Versions that failed to load (each set of files once)",
                                     ["model"], registry=r)
        self.models_served = Gauge("charzoo_models_served", "Models with a loaded version",
                                   registry=r)

    content_type = CONTENT_TYPE_LATEST

    def text(self):
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
