"""Serving for more than one person: a login when exposed, requests batched without changing
anyone's images, the model on one thread of its own, compiled before the first request.
(tests/test_serve_running.py: a running server as its clients meet it.)"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from unclip.web.auth import ENV, LoginLimiter, check_exposure, credentials
from unclip.web.batching import ModelLine, last_batch

PROMPTS = ["a red circle", "a blue square above a green star", "a yellow triangle on a black background"]


def test_credentials_from_flags_file_and_environment(tmp_path):
    file = tmp_path / "logins"
    file.write_text("# who may log in\nbob:pa:ss\n\ncarol:x\n")
    got = credentials(["ann:secret"], file, environ={ENV: "dan:1, eve:2"})
    assert got == [("ann", "secret"), ("bob", "pa:ss"), ("carol", "x"), ("dan", "1"), ("eve", "2")]
    for bad, word in ((["ann"], "no colon"), (["ann:"], "no password"), ([":pw"], "expected USER:PASSWORD"),
                      (["ann:a", "ann:b"], "given twice")):
        with pytest.raises(ValueError, match=word):
            credentials(bad, environ={})
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(ValueError, match="no USER:PASSWORD"):
        credentials(auth_file=tmp_path / "empty", environ={})
    with pytest.raises(FileNotFoundError):
        credentials(auth_file=tmp_path / "missing", environ={})


def test_exposed_without_a_login_is_refused_before_loading():
    with pytest.raises(ValueError, match="needs a login.*--auth USER:PASSWORD.*--no-auth"):
        check_exposure("0.0.0.0", [], no_auth=False)
    assert "WITHOUT a login" in check_exposure("0.0.0.0", [], no_auth=True)
    assert "login required (1 user)" in check_exposure("0.0.0.0", [("a", "b")], no_auth=False)
    assert check_exposure("127.0.0.1", [], no_auth=False) == "this machine only"
    with pytest.raises(ValueError, match="contradict"):
        check_exposure("127.0.0.1", [("a", "b")], no_auth=True)
    # the command: exit 2 with the message, no traceback, long before a model could load
    r = subprocess.run([sys.executable, "-m", "unclip", "serve", "--host", "0.0.0.0", "--model", "/nonexistent"],
                       capture_output=True, text=True, timeout=120, check=False,
                       env={k: v for k, v in os.environ.items() if k != ENV})
    assert r.returncode == 2 and "needs a login" in r.stderr and "Traceback" not in r.stderr


def test_failed_logins_are_limited_per_client():
    now = [0.0]
    limiter = LoginLimiter(attempts=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.wait_for("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.wait_for("10.0.0.1") == pytest.approx(60)
    assert limiter.wait_for("10.0.0.2") == 0  # another client is not held back
    now[0] = 61
    assert limiter.wait_for("10.0.0.1") == 0


@pytest.fixture(scope="module")
def pipe(tiny_model):
    from unclip import load_pipeline

    return load_pipeline(tiny_model, torch_dtype="float32")


def _concurrently(calls, failing: bool = False):
    """Each call in its own thread at once: [(result, its batch)], or with `failing` the errors."""
    out, errors = [None] * len(calls), []

    def run(i):
        try:
            out[i] = (calls[i](), last_batch())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    if failing:
        return errors
    assert not errors, errors
    return out


def test_batched_requests_get_the_images_they_get_alone(pipe):
    settings = {"decoder_num_inference_steps": 3}
    key = frozenset(settings.items())
    alone = ModelLine(pipe, max_images=1)
    requests = [([p] * 2, [10 * i, 10 * i + 1]) for i, p in enumerate(PROMPTS)]
    singles = [alone.draw(prompts, seeds, settings, key) for prompts, seeds in requests]
    batches = []
    line = ModelLine(pipe, max_images=8, wait=1.0, on_batch=lambda r, n: batches.append((r, n)))
    together = _concurrently([lambda p=p, s=s: line.draw(p, s, settings, key) for p, s in requests])
    assert batches == [(3, 6)]  # one call for the three requests
    for (images, batch), single in zip(together, singles):
        assert batch == (3, 6) and len(images) == 2
        diff = np.abs(np.stack(images).astype(int) - np.stack(single).astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 2  # float32; batch size changes only rounding


def test_requests_that_cannot_share_a_call_still_run_in_turn(pipe):
    batches, order = [], []
    line = ModelLine(pipe, max_images=2, wait=0.5, on_batch=lambda r, n: batches.append((r, n)))
    three, four = ({"decoder_num_inference_steps": s} for s in (3, 4))
    calls = [lambda: line.draw(["a red circle"], [1], three, frozenset(three.items())),
             lambda: line.draw(["a red circle"], [1], four, frozenset(four.items())),
             lambda: line.run(lambda: order.append("alone") or "ran"),
             lambda: line.draw(["a blue star"] * 3, [5, 6, 7], three, frozenset(three.items()))]
    results = _concurrently(calls)
    assert [len(r[0]) for r in (results[0], results[1], results[3])] == [1, 1, 3]
    assert results[2][0] == "ran" and order == ["alone"]
    assert sorted(batches) == [(1, 1), (1, 1), (1, 3)]  # other settings, or past the batch size: apart
    assert not np.array_equal(results[0][0][0], results[1][0][0])  # 3 and 4 steps really differ


def test_a_batch_waits_for_others_only_while_the_server_is_shared(pipe):
    import time

    settings = {"decoder_num_inference_steps": 2}
    key = frozenset(settings.items())

    def two_requests(line):
        def late():
            time.sleep(0.3)  # a client answered in the last batch, coming back a little later
            return line.draw(["a blue star"], [2], settings, key)

        return [b for _, b in _concurrently([lambda: line.draw(["a red circle"], [1], settings, key), late])]

    shared = ModelLine(pipe)
    shared._last_call, shared._last_requests = 10.0, 2  # the last call: 10 s, two requests
    assert two_requests(shared) == [(2, 2), (2, 2)]  # waited up to 1 s (10%) and drew both at once
    alone = ModelLine(pipe)  # a lone user's last batch: no wait
    assert two_requests(alone) == [(1, 1), (1, 1)]


def test_a_failure_reaches_every_request_of_its_batch(pipe):
    line = ModelLine(pipe, max_images=8, wait=0.5)
    bad = {"decoder_num_inference_steps": 0}
    calls = [lambda i=i: line.draw(["a red circle"], [i], bad, frozenset(bad.items())) for i in range(3)]
    errors = _concurrently(calls, failing=True)
    assert len(errors) == 3 and all(isinstance(e, ValueError) for e in errors)
    assert line.run(lambda: "free") == "free"  # the model is free again


class _GatedPipe:
    """Stands in for a pipeline: each call records its prompts, and the first waits for `gate`."""

    def __init__(self):
        self.calls, self.gate, self.entered = [], threading.Event(), threading.Event()

    def __call__(self, prompts, generator=None, output_type=None, **settings):
        self.calls.append(list(prompts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(60)
        return type("Out", (), {"images": list(prompts)})()


def _leaving_call(fn):
    """(thread running `fn()` as a request whose client may leave, its leaving flag, its outcome)."""
    from unclip.web.batching import leaving

    flag, outcome, ready = [], [], threading.Event()

    def run():
        flag.append(leaving())
        ready.set()
        try:
            outcome.append(fn())
        except Exception as e:  # noqa: BLE001
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    ready.wait(10)
    return thread, flag[0], outcome


def test_the_model_computes_on_the_thread_it_was_loaded_on():
    from unclip.web.batching import model_thread

    thread = model_thread()
    loaded_on = thread.submit(threading.current_thread).result()
    line = ModelLine(pipe=None, thread=thread)
    assert line.run(threading.current_thread) is loaded_on
    assert ModelLine(pipe=None).run(threading.current_thread) is not loaded_on  # a line of its own otherwise


def test_a_request_whose_client_left_is_not_drawn():
    from unclip.web.batching import Withdrawn

    pipe, drawn = _GatedPipe(), []
    line = ModelLine(pipe, max_images=8, wait=0, on_drawn=drawn.append)
    key = frozenset()
    busy = threading.Thread(target=lambda: line.draw(["first"], [0], {}, key))
    busy.start()
    assert pipe.entered.wait(10)  # the model is drawing "first"
    other = frozenset({("steps", 2)})  # other settings: they cannot join a batch, so they wait in line
    gone, gone_flag, gone_out = _leaving_call(lambda: line.draw(["gone"], [1], {}, other))
    stays, _, stays_out = _leaving_call(lambda: line.draw(["stays"], [2], {}, other))
    while line.waiting() < 2:
        threading.Event().wait(0.01)
    gone_flag.set()
    line.wake()
    gone.join(10)
    assert isinstance(gone_out[0], Withdrawn)  # out of the line at once, while the model is still busy
    assert line.waiting() == 1
    pipe.gate.set()
    for t in (busy, stays):
        t.join(10)
    assert stays_out == [["stays"]] and pipe.calls == [["first"], ["stays"]] and drawn == [1, 1]


def test_a_request_left_partway_draws_no_more_of_its_images():
    from unclip.web.batching import Withdrawn

    pipe = _GatedPipe()
    line = ModelLine(pipe, max_images=2, wait=0)  # three images: a call of two, then one
    thread, flag, out = _leaving_call(lambda: line.draw(["a", "b", "c"], [1, 2, 3], {}, frozenset()))
    assert pipe.entered.wait(10)
    flag.set()
    line.wake()
    pipe.gate.set()
    thread.join(10)
    assert isinstance(out[0], Withdrawn) and pipe.calls == [["a", "b"]]
    assert line.run(lambda: "free") == "free"


def test_a_compiled_model_compiles_before_the_server_opens(capsys):
    from unclip.web.batching import model_thread
    from unclip.web.server import warm_up

    class Stand:
        compiled_with, calls = None, []

        def __call__(self, prompts, generator=None, output_type=None):
            self.calls.append((list(prompts), threading.current_thread()))

    thread, pipe = model_thread(), Stand()
    on_thread = thread.submit(threading.current_thread).result()
    assert warm_up(pipe, thread) is None and pipe.calls == []  # eager: nothing to compile
    pipe.compiled_with = "inductor"
    assert warm_up(pipe, thread) >= 0
    assert pipe.calls == [(["warm-up"], on_thread)]  # one image, on the model's own thread
    out = capsys.readouterr().out
    assert "compiling the model's networks (inductor)" in out and "compiled in" in out
