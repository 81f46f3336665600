"""A running `unclip serve` with logins, as clients meet it: the API behind the login and the
metrics beside it, requests withdrawn when their client leaves, progress, the page's login."""

import urllib.error
import urllib.parse
import urllib.request

import pytest

from unclip.web.auth import ENV
from unclip.web.batching import ModelLine

from . import web_pages as web


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
