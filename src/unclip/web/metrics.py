"""What an operator watches: Prometheus counters of the server's requests, and its health.

Counts and times only, never a prompt or an image. Each server has its own registry, so that
several apps in one process (the tests) keep their own counts.
"""

from __future__ import annotations

from collections.abc import Callable

LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("unclip_requests", "Requests finished, by job and outcome "
                                "(ok, refused: bad input, timeout, cancelled: the client left, error)", ["job", "outcome"], registry=r)
        self.latency = Histogram("unclip_request_seconds", "Seconds from a job's start to its answer",
                                 ["job"], buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("unclip_images", "Images drawn and returned, by job", ["job"], registry=r)
        self.batch_requests = Histogram("unclip_batch_requests", "Requests drawn in one pipeline batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_images = Histogram("unclip_batch_images", "Images drawn in one pipeline batch",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.drawn = Counter("unclip_model_images", "Images the model drew for generate requests (a request "
                             "withdrawn before the model reached it draws none)", registry=r)
        self.model_seconds = Counter("unclip_model_busy_seconds", "Seconds the model has spent computing (its "
                                     "share of the wall clock: how busy the device is)", registry=r)
        self.queue = Gauge("unclip_queue_length", "Requests waiting: in the web queue and for the model", registry=r)
        self.running = Gauge("unclip_requests_running", "Requests being worked on now", registry=r)
        self.login_failures = Counter("unclip_login_failures", "Failed logins, refused ones included", registry=r)
        self.info = Gauge("unclip_model_info", "The loaded model (always 1)", ["model", "device", "dtype"],
                          registry=r)

    def watch_queue(self, length: Callable[[], int]) -> None:
        """`length()` gives the queue length whenever /metrics is read."""
        self.queue.set_function(length)

    def describe(self, model: str, device: str, dtype: str) -> None:
        self.info.labels(model=model, device=device, dtype=dtype).set(1)

    def batch(self, requests: int, images: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_images.observe(images)

    def finished(self, job: str, outcome: str, seconds: float, images: int = 0) -> None:
        self.requests.labels(job=job, outcome=outcome).inc()
        self.latency.labels(job=job).observe(seconds)
        if images:
            self.images.labels(job=job).inc(images)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def images_in(result) -> int:
    """How many images a job's answer holds: its gallery entries ((path, caption) pairs)."""
    if isinstance(result, list):
        return sum(isinstance(x, tuple) for x in result)
    if isinstance(result, tuple):
        return sum(images_in(x) for x in result if isinstance(x, list))
    return 0
