"""One model, many people: requests take turns in arrival order, and text-to-image requests whose
settings match are drawn together in one pipeline call.

Every job of the web app runs through one `ModelLine`. A job that cannot share (vary, edit, ...)
runs alone when its turn comes. A generate request whose turn comes leads a batch: it takes every
waiting generate request with the same settings (whole requests, up to `max_images` images, more
only when the leader alone asks for more) and draws them all. While others share the server (the
last batch held more than one request), the leader first waits for its batch to fill, at most
AUTO_WAIT_SHARE of the last call's time and AUTO_WAIT_MAX seconds (`wait=None`; a number fixes
it): clients answered together come back together but a little apart, and without the wait they
split into cohorts that never merge again (measured on the CPU here, 8 clients: batches of 6.2
requests on average without it). A lone user never waits.

Each image has its own generator seeded with its own seed, so a request's images do not depend
on what it was batched with (unclip.pipelines: image i depends on its seed alone).

A request whose client leaves (gradio cancels its task: the client's cancel, or the page's) is
withdrawn: the web app sets the request's `leaving()` flag and wakes the line, which drops it
if the model has not drawn it yet: out of the line, out of a batch still gathering, or its
rows out of a batch's later calls. What the model is drawing at that moment finishes.

The model computes on one thread of its own, whoever's turn it is: the memory allocator then keeps
one pool for the model's tensors instead of one per web worker thread that ever led a batch (the
server's RSS grew from 1.5 to 2.2 GB over 5 minutes of 32 clients before). The caller's context
goes with each call, so gradio's progress bar still follows it. The server loads the model on
that thread too (`model_thread`): each thread that runs torch's parallel operations gets an
OpenMP team of its own, and with more OpenMP threads than cores libgomp's threads barely spin
before they sleep between operations (benchmarks/model_thread.py, bf16 on a 2-core AMD EPYC
with AVX-512 BF16: the same 12 images
1.96-2.03 s each with one team, 2.23-2.53 with a second, idle one on the loading thread).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_current = threading.local()  # the batch the calling thread's request was drawn in
_leaving = contextvars.ContextVar("unclip_leaving", default=None)  # set once the request's client has gone
AUTO_WAIT_SHARE, AUTO_WAIT_MAX = 0.1, 2.0  # the automatic wait: this share of the last call, at most seconds


def last_batch() -> tuple[int, int] | None:
    """(requests, images) of the batch this thread's last generate request was drawn in."""
    return getattr(_current, "batch", None)


class Withdrawn(Exception):
    """The request's client left before the model drew it."""


def leaving() -> threading.Event:
    """A flag for the request handled in this context (and the threads it hands work to): set
    it, then `ModelLine.wake()`, when its client leaves."""
    flag = threading.Event()
    _leaving.set(flag)
    return flag


@dataclass(eq=False)
class Ticket:
    """A request in the line: a job to run alone (`job`), or images to draw (`key` and rows)."""

    job: Callable | None = None
    key: frozenset | None = None  # the settings a batch must share
    settings: dict = field(default_factory=dict)  # what the pipeline is called with
    prompts: list[str] = field(default_factory=list)  # one per image
    seeds: list[int] = field(default_factory=list)
    seconds: float = float("inf")  # its time limit, from when its batch starts
    arrived: float = field(default_factory=time.monotonic)
    taken: bool = False  # drawn by another request's batch
    done: threading.Event = field(default_factory=threading.Event)
    images: list | None = None
    error: BaseException | None = None
    batch: tuple[int, int] | None = None
    gone: threading.Event | None = field(default_factory=_leaving.get)  # the request's `leaving()` flag

    @property
    def left(self) -> bool:
        return self.gone is not None and self.gone.is_set()


def model_thread() -> ThreadPoolExecutor:
    """The one thread a server's model loads and computes on."""
    return ThreadPoolExecutor(1, thread_name_prefix="unclip-model")


class ModelLine:
    def __init__(self, pipe, max_images: int = 8, wait: float | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_compute: Callable[[float], None] | None = None,
                 on_drawn: Callable[[int], None] | None = None, thread: ThreadPoolExecutor | None = None):
        """`wait`: seconds a batch's leader waits for others (None: automatic, see above);
        `on_batch(requests, images)` for each batch, `on_compute(seconds)` for each call the model
        makes, `on_drawn(images)` for each call drawing generate requests' images. `thread`: the
        model's thread (`model_thread()`; a new one by default)."""
        if max_images < 1 or (wait is not None and wait < 0):
            raise ValueError(f"batch size must be at least 1 and batch wait at least 0 (got {max_images}, {wait})")
        self.pipe, self.max_images, self.wait = pipe, max_images, wait
        self._last_call, self._last_requests = 0.0, 1  # the last pipeline call's seconds, its batch's requests
        self.on_batch = on_batch or (lambda requests, images: None)
        self.on_compute = on_compute or (lambda seconds: None)
        self.on_drawn = on_drawn or (lambda images: None)
        self._cv = threading.Condition()
        self._line: deque[Ticket] = deque()
        self._busy = False
        self._model_thread = thread or model_thread()

    def _on_model_thread(self, fn: Callable):
        """`fn()` on the model's own thread, in the caller's context; its result or its error."""
        def timed():
            start = time.monotonic()
            try:
                return fn()
            finally:
                self.on_compute(time.monotonic() - start)

        return self._model_thread.submit(contextvars.copy_context().run, timed).result()

    def waiting(self) -> int:
        """Requests waiting for the model (the one running not counted)."""
        with self._cv:
            return len(self._line)

    def wake(self) -> None:
        """Let waiting requests see that one of them has left (`leaving()`)."""
        with self._cv:
            self._cv.notify_all()

    def _turn(self, ticket: Ticket) -> bool:
        """Wait until `ticket` is first and the model free (True), or another request's batch took
        it (False); Withdrawn if its client leaves first."""
        with self._cv:
            self._line.append(ticket)
            self._cv.notify_all()  # a leader waiting for its batch to fill
            self._cv.wait_for(lambda: ticket.taken or ticket.left or (not self._busy and self._line[0] is ticket))
            if ticket.taken:
                return False
            if ticket.left:
                self._line.remove(ticket)
                self._cv.notify_all()  # the next one may now be first
                raise Withdrawn("the client left before its turn")
            self._line.popleft()
            self._busy = True
            return True

    def _release(self) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()

    def run(self, job: Callable):
        """Run `job()` alone on the model when its turn comes; its result or its error."""
        self._turn(ticket := Ticket(job=job))
        try:
            return self._on_model_thread(ticket.job)
        finally:
            self._release()

    def draw(self, prompts: list[str], seeds: list[int], settings: dict, key: frozenset,
             seconds: float = float("inf")) -> list:
        """uint8 images, one per (prompt, seed), drawn with `settings` in a batch with the other
        requests that have the same `key`. A TimeoutError when `seconds` have passed since its
        batch started, before a call that would draw this request's images."""
        ticket = Ticket(key=key, settings=settings, prompts=list(prompts), seeds=list(seeds), seconds=seconds)
        if self._turn(ticket):
            try:
                self._lead(ticket)
            finally:
                self._release()
        ticket.done.wait()
        _current.batch = ticket.batch
        if ticket.error is not None:
            raise ticket.error
        return ticket.images

    def _lead(self, leader: Ticket) -> None:
        """Gather the waiting requests that can share the leader's call, draw them, hand out the images."""
        if self.wait is not None:
            wait = self.wait
        else:
            wait = min(AUTO_WAIT_MAX, AUTO_WAIT_SHARE * self._last_call) if self._last_requests > 1 else 0.0
        until = time.monotonic() + wait
        batch, images = [leader], len(leader.prompts)
        with self._cv:
            while True:
                for t in list(self._line):
                    if t.key == leader.key and not t.left and images + len(t.prompts) <= self.max_images:
                        self._line.remove(t)
                        t.taken = True
                        batch.append(t)
                        images += len(t.prompts)
                left = until - time.monotonic()
                if images >= self.max_images or left <= 0:
                    break
                self._cv.wait(left)
            self._cv.notify_all()  # the taken ones now wait for their images, not their turn
        self._last_requests = len(batch)
        started = time.monotonic()
        for t in batch:
            t.batch, t.images = (len(batch), images), []
        self.on_batch(len(batch), images)
        rows = [(t, p, s) for t in batch for p, s in zip(t.prompts, t.seeds)]
        try:
            for start in range(0, len(rows), self.max_images):
                now = time.monotonic()
                for t in batch:
                    if t.error is None and t.left:
                        t.error = Withdrawn("the client left before its images were drawn")
                    elif t.error is None and now > started + t.seconds:
                        t.error = TimeoutError("this request ran past the server's time limit")
                chunk = [r for r in rows[start:start + self.max_images] if r[0].error is None]
                if not chunk:
                    continue
                generators = [torch.Generator().manual_seed(s) for _, _, s in chunk]
                prompts, call = [p for _, p, _ in chunk], time.monotonic()
                out = self._on_model_thread(lambda: self.pipe(prompts, generator=generators, output_type="uint8",
                                                              **leader.settings).images)
                self._last_call = time.monotonic() - call
                self.on_drawn(len(chunk))
                for (t, _, _), image in zip(chunk, out):
                    t.images.append(image)
        except BaseException as e:  # every request in the batch gets the failure, none waits for ever
            for t in batch:
                t.error = t.error or e
            raise
        finally:
            for t in batch:
                t.done.set()
