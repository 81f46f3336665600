"""Serving for more than one person: a login when exposed, requests batched without changing
anyone's images, and /healthz and /metrics for whoever operates the server."""

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from unclip.web.auth import ENV, LoginLimiter, check_exposure, credentials
from unclip.web.batching import ModelLine, last_batch

from . import web_pages as web

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


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _post_login(url, user, password):
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "login", data=data), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def guarded(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with web.served(tiny_model, log, args=("--auth", "ann:secret", "--dtype", "float32"),
                    env={ENV: "bob:hunter2"}) as url:
        yield url, log


def test_the_api_needs_the_login_and_metrics_do_not(guarded):
    from gradio_client import Client
    from prometheus_client.parser import text_string_to_metric_families

    url, log = guarded
    status, body = _get(url + "healthz")
    assert status == 200 and '"model_loaded":true' in body
    with pytest.raises(Exception, match="credentials were not provided"):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("ann", "wrong"), verbose=False)
    assert _get(url + "gradio_api/info")[0] == 401  # the routes behind the page refuse too
    prompt = "a secret purple hexagon"
    out = Client(url, auth=("bob", "hunter2"), verbose=False).predict(prompt, num_images=2, api_name="/generate")
    assert len(out) == 2
    status, text = _get(url + "metrics")
    assert status == 200 and prompt not in text and "hexagon" not in text  # counts only
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("unclip_requests_total", (("job", "generate"), ("outcome", "ok")))] == 1
    assert samples[("unclip_images_total", (("job", "generate"),))] == 2
    assert samples[("unclip_request_seconds_count", (("job", "generate"),))] == 1
    assert samples[("unclip_batch_images_sum", ())] == 2
    assert 0 < samples[("unclip_model_busy_seconds_total", ())] <= samples[("unclip_request_seconds_sum", (("job", "generate"),))]
    assert samples[("unclip_login_failures_total", ())] >= 1
    assert ("unclip_queue_length", ()) in samples
    assert "job generate done" in log.read_text() and "batch of 1 requests, 2 images" in log.read_text()


def _samples(url) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(_get(url + "metrics")[1]) for s in family.samples}


def _until(check, seconds=60):
    import time

    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_cancelled_request_is_withdrawn(guarded):
    from gradio_client import Client

    url, log = guarded
    drawn, cancelled = ("unclip_model_images_total", ()), ("unclip_requests_total", (("job", "generate"),
                                                                                      ("outcome", "cancelled")))
    before = _samples(url)
    slow = Client(url, auth=("ann", "secret"), verbose=False).submit(  # 16 images of 200 steps each stage
        "a red circle", 16, 0, None, None, 200, 200, 200, api_name="/generate")
    _until(lambda: any(p.index for p in slow.status().progress_data or []))  # its sampling steps show as progress
    # another client's request with other settings: let through to the model, waiting for its turn
    waiting = Client(url, auth=("bob", "hunter2"), verbose=False).submit("a blue star", 1, 0, api_name="/generate")
    _until(lambda: _samples(url)[("unclip_requests_running", ())] == 2)
    assert waiting.cancel()
    _until(lambda: _samples(url).get(cancelled, 0) == before.get(cancelled, 0) + 1)
    assert len(slow.result(timeout=300)) == 16
    _until(lambda: _samples(url)[("unclip_requests_running", ())] == 0)
    assert _samples(url)[drawn] - before.get(drawn, 0) == 16  # the slow request's images; none for the cancelled one
    assert "job generate cancelled" in log.read_text()


def test_a_request_whose_client_disconnects_is_withdrawn(guarded):
    """A closed tab: the client's stream ends without a cancel."""
    import httpx
    from gradio_client import Client

    url, log = guarded
    drawn, cancelled = ("unclip_model_images_total", ()), ("unclip_requests_total", (("job", "generate"),
                                                                                      ("outcome", "cancelled")))
    before = _samples(url)
    slow = Client(url, auth=("ann", "secret"), verbose=False).submit(
        "a red circle", 16, 0, None, None, 200, 200, 200, api_name="/generate")
    _until(lambda: _samples(url)[("unclip_requests_running", ())] == 1)
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("login", data={"username": "bob", "password": "hunter2"}).status_code == 200
        config = http.get("config").json()
        fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
        data = ["a blue star", 1, 0, None, None, None, None, None, "diffusion"]
        joined = http.post("gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": "tab1",
                                                          "trigger_id": None, "event_data": None})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": "tab1"}) as stream:
            for line in stream.iter_lines():
                if "process_starts" in line:
                    break  # let through to the model, waiting for its turn: now the tab closes
    _until(lambda: _samples(url).get(cancelled, 0) == before.get(cancelled, 0) + 1)
    assert len(slow.result(timeout=300)) == 16
    _until(lambda: _samples(url)[("unclip_requests_running", ())] == 0)
    assert _samples(url)[drawn] - before.get(drawn, 0) == 16  # nothing drawn for the closed tab


def test_progress_bars_reach_the_client_from_the_model_thread():
    """A job's tqdm bars (diffusers' sampling loops) run on the model's thread, behind the worker
    thread that a request's handler hands its job to; gradio still shows them to the client."""
    import time

    import gradio as gr
    from gradio_client import Client
    from tqdm.auto import tqdm

    from unclip.web.app import _shown
    from unclip.web.metrics import Metrics

    line = ModelLine(pipe=None)

    def count(n, progress=gr.Progress(track_tqdm=True)):
        def steps():
            for _ in tqdm(range(int(n)), desc="steps"):
                time.sleep(0.05)
            return "counted"
        return line.run(steps)

    with gr.Blocks() as blocks:
        box, out = gr.Number(), gr.Textbox()
        gr.Button().click(_shown(count, Metrics(), line), box, out, api_name="count")
    _, url, _ = blocks.queue().launch(prevent_thread_lock=True, quiet=True)
    try:
        job = Client(url, verbose=False).submit(100, api_name="/count")
        seen = []
        while not job.done():
            seen += [p for p in job.status().progress_data or [] if p.index is not None]
            time.sleep(0.1)
        assert job.result() == "counted" and seen and seen[-1].length == 100
    finally:
        blocks.close()


def test_failed_logins_are_refused_then_held_back(guarded):
    url, _ = guarded
    codes = [_post_login(url, "mallory", f"guess{i}") for i in range(7)]
    assert codes[:4] == [400] * 4 and codes[-1] == 429  # 5 failures a minute, then held back
    assert _post_login(url, "ann", "secret") == 429  # even the right password, from that client, for now


@pytest.mark.browser
@pytest.mark.skipif(web.chromium_path() is None, reason="no Chromium (apt-get install chromium; make test does)")
def test_the_page_asks_for_a_login(tiny_model, tmp_path):
    with web.served(tiny_model, tmp_path / "serve.log", args=("--auth", "ann:secret")) as url, \
            web.browser_page() as page:
        page.goto(url)
        web.login(page, "ann", "wrong")
        web.error_shown(page, "Incorrect")
        assert page.locator("#generate-button").count() == 0
        web.login(page, "ann", "secret")
        assert web.generate(page, "a red circle") == [(32, 32)]
