"""transformer-mt serve: LibreTranslate-compatible and native API, dynamic batching, limits, a real server."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from conftest import WORDS, live_app, playwright_and_chromium, start_server, stop_server  # noqa: E402

from transformer_mt import Translator  # noqa: E402
from transformer_mt.serving.batching import BatchingTranslator, DecodeOptions, QueueFull, ShuttingDown  # noqa: E402
from transformer_mt.serving.server import ServeLimits, create_app  # noqa: E402

SENTENCES = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 5)) for i in range(32)]


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


live = live_app  # the app on a real server in a thread (conftest)


@pytest.fixture(scope="module")
def client(translator):
    app = create_app(translator, limits=ServeLimits(max_body_bytes=4000, max_sentences_per_request=8,
                                                    max_chars_per_text=200, max_chars_per_request=1000),
                     max_wait_ms=1)
    with live(app) as http:
        yield http


def offline(translator, sentences, beam_size=None, nbest=1):
    return translator.translate(sentences, beam_size=beam_size, nbest=nbest, return_scores=True)


def test_libretranslate_string_and_list(client, translator):
    expected = [t[0].text for t in offline(translator, SENTENCES[:3], beam_size=2)]
    one = client.post("/translate", json={"q": SENTENCES[0], "source": "src", "target": "tgt"})
    assert one.status_code == 200 and one.json() == {"translatedText": expected[0]}
    many = client.post("/translate", json={"q": SENTENCES[:3], "source": "auto", "target": "auto", "format": "text"})
    assert many.json()["translatedText"] == expected
    assert many.json()["detectedLanguage"] == [{"confidence": 100.0, "language": "src"}] * 3


def test_libretranslate_alternatives_and_form_body(client, translator):
    expected = [t.text for t in offline(translator, SENTENCES[:1], beam_size=3, nbest=3)[0]]
    answer = client.post("/translate", json={"q": SENTENCES[0], "source": "src", "target": "tgt",
                                             "alternatives": 2}).json()
    assert [answer["translatedText"]] + answer["alternatives"] == expected
    form = client.post("/translate", data={"q": SENTENCES[0], "source": "src", "target": "tgt"})
    default_beam = offline(translator, SENTENCES[:1])[0][0].text  # the run's decoding.beam_size
    assert form.status_code == 200 and form.json()["translatedText"] == default_beam


def test_libretranslate_multipart_form_body(client, translator):
    """curl -F and a browser's FormData send multipart/form-data: fields, a repeated q, api_key like JSON."""
    expected = [t[0].text for t in offline(translator, SENTENCES[:2])]
    one = client.post("/translate", files={"q": (None, SENTENCES[0]), "source": (None, "src"),
                                           "target": (None, "tgt")})
    assert one.status_code == 200, one.text
    assert one.json() == {"translatedText": expected[0]}
    many = client.post("/translate", files=[("q", (None, SENTENCES[0])), ("q", (None, SENTENCES[1])),
                                            ("source", (None, "auto")), ("alternatives", (None, "1"))])
    assert many.status_code == 200 and many.json()["translatedText"] == expected
    assert len(many.json()["alternatives"]) == 2
    wrong_pair = client.post("/translate", files={"q": (None, "ba"), "target": (None, "xx")})
    assert wrong_pair.status_code == 400 and "translates src -> tgt only" in wrong_pair.json()["error"]
    upload = client.post("/translate", files={"q": ("text.txt", b"ba", "text/plain")})
    assert upload.status_code == 400 and "file uploads are not accepted here (field 'q')" in upload.json()["error"]
    boundary = "b0undary"
    latin1 = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n".encode() + b"\xe9\xe9"
              + f"\r\n--{boundary}--\r\n".encode())
    bad_text = client.post("/translate", content=latin1,
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert bad_text.status_code == 400 and "not valid UTF-8" in bad_text.json()["error"]
    truncated = client.post("/translate", content=latin1[:30],
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert truncated.status_code == 400 and "error" in truncated.json()
    no_boundary = client.post("/translate", content=b"q=ba", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "multipart" in no_boundary.json()["error"]
    nameless = (f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nba\r\n--{boundary}--\r\n").encode()
    unnamed = client.post("/translate", content=nameless,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert unnamed.status_code == 400 and "error" in unnamed.json()
    gzipped = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"q\"\r\nContent-Transfer-Encoding: gzip"
               f"\r\n\r\nba\r\n--{boundary}--\r\n").encode()
    encoded = client.post("/translate", content=gzipped,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert encoded.status_code == 400 and "malformed" in encoded.json()["error"]
    good = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n{SENTENCES[0]}"
            f"\r\n--{boundary}--\r\n").encode()
    upper = client.post("/translate", content=good,
                        headers={"content-type": f"Multipart/Form-Data; boundary={boundary}"})
    assert upper.status_code == 200 and upper.json()["translatedText"] == expected[0]


def test_languages_health_info_docs(client):
    assert client.get("/languages").json() == [{"code": "src", "name": "src", "targets": ["tgt"]},
                                               {"code": "tgt", "name": "tgt", "targets": []}]
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["source"] == "src" and info["limits"]["max_sentences_per_request"] == 8
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_native_api_returns_nbest_with_scores(client, translator):
    expected = offline(translator, SENTENCES[:2], beam_size=4, nbest=3)
    answer = client.post("/v1/translate", json={"text": SENTENCES[:2], "beam_size": 4, "nbest": 3}).json()
    assert answer["beam_size"] == 4
    for got, want in zip(answer["translations"], expected):
        assert [g["text"] for g in got] == [w.text for w in want]
        assert [g["score"] for g in got] == pytest.approx([w.score for w in want])
        assert [g["score"] for g in got] == sorted((g["score"] for g in got), reverse=True)


def test_native_api_samples_blocks_repeats_and_forces_prefixes(client, translator):
    texts = SENTENCES[:3]
    options = {"top_k": 0, "temperature": 1.5, "seed": 4, "no_repeat_ngram_size": 2}
    expected = translator.translate(texts, nbest=2, return_scores=True, **options)
    answer = client.post("/v1/translate", json={"text": texts, "nbest": 2, **options}).json()
    assert [[t["text"] for t in got] for got in answer["translations"]] == [[w.text for w in want] for want in expected]
    answer = client.post("/v1/translate", json={"text": [texts[0], texts[1] + ". " + texts[2]],
                                                "prefix": ["ko ko", "mu"], "beam_size": 2}).json()
    assert answer["translations"][0][0]["text"].startswith("ko ko")
    assert answer["translations"][1][0]["text"].startswith("mu")  # the text's first sentence starts with it
    for body, fragment in [({"top_p": 1.5}, "top_p"), ({"top_k": 3, "beam_size": 3}, "leave out beam_size"),
                           ({"temperature": 1e-300}, "temperature"), ({"temperature": 1e300}, "temperature"),
                           ({"top_p": 1e-300}, "top_p"),
                           ({"prefix": ["a", "b"]}, "2 prefixes for 3 texts"),
                           ({"prefix": "a", "format": "html"}, "format 'text'")]:
        bad = client.post("/v1/translate", json={"text": texts, **body})
        assert bad.status_code == 400 and fragment in bad.json()["error"], bad.json()


def test_native_api_returns_alignments_when_asked(client, translator):
    expected = translator.translate(SENTENCES[:2], beam_size=3, nbest=2, return_alignment=True)
    answer = client.post("/v1/translate", json={"text": SENTENCES[:2], "beam_size": 3, "nbest": 2,
                                                "alignment": True}).json()
    for got, want in zip(answer["translations"], expected):
        assert [g["text"] for g in got] == [w.text for w in want]
        assert [g["alignment"] for g in got] == [[list(pair) for pair in w.alignment] for w in want]
        assert [g["target_tokens"] for g in got] == [w.target_tokens for w in want]
        assert got[0]["source_tokens"] == want[0].source_tokens and got[0]["source_tokens"][0].startswith("\u2581")
    words = client.post("/v1/translate", json={"text": SENTENCES[0], "alignment": "words", "alignment_layer": 1})
    assert words.json()["translations"][0][0]["source_tokens"] == SENTENCES[0].split()
    plain = client.post("/v1/translate", json={"text": SENTENCES[0]}).json()["translations"][0][0]
    assert set(plain) == {"text", "score"}
    for body, fragment in (({"alignment_layer": 1}, "add \"alignment\": true"),
                           ({"alignment": True, "alignment_layer": 2}, "alignment layer 2 does not exist")):
        response = client.post("/v1/translate", json={"text": SENTENCES[0], **body})
        assert response.status_code == 400 and fragment in response.json()["error"]
    assert client.post("/v1/translate", json={"text": "ba", "alignment": "letters"}).status_code == 422


@pytest.mark.parametrize("body, status, fragment", [
    ({"source": "src", "target": "tgt"}, 400, "missing 'q'"),
    ({"q": 5, "source": "src", "target": "tgt"}, 400, "'q' must be a string or a list"),
    ({"q": ["a", 3]}, 400, "'q' must be a string or a list"),
    ({"q": "ba", "source": "de", "target": "en"}, 400, "translates src -> tgt only"),
    ({"q": "ba", "format": "xml"}, 400, "format 'xml' is not supported; use 'text' or 'html'"),
    ({"q": "ba", "alternatives": "many"}, 400, "'alternatives' must be a whole number"),
    ({"q": "ba", "alternatives": 20}, 400, "above this server's limits"),
    ({"q": ["ba"] * 9}, 413, "the limit is 8 (max_sentences_per_request)"),
    ({"q": "ba " * 100}, 413, "the limit per text is 200 (max_chars_per_text, serve --max-chars-per-text)"),
    ({"q": ["ba " * 60] * 7}, 413, "the limit is 1000 (max_chars_per_request)"),
])
def test_bad_libretranslate_requests_get_json_errors(client, body, status, fragment):
    response = client.post("/translate", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_malformed_and_oversized_bodies(client):
    bad = client.post("/translate", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    big = client.post("/translate", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "limit of 4000 bytes" in big.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b"x" * 1000

    streamed = client.post("/translate", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    typed = client.post("/v1/translate", json={"text": "ba", "beam_size": "wide"})
    assert typed.status_code == 422 and "beam_size" in typed.json()["error"]
    nan = client.post("/v1/translate", content=b'{"text": "ba", "length_penalty": NaN}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422
    # A lone surrogate escape is valid JSON but no text: every route says so in a 400 (pydantic's parser said
    # "unexpected end of hex escape" in a 422 on /v1/translate).
    for route, body in (("/v1/translate", b'{"text": "\\ud800"}'), ("/translate", b'{"q": "\\ud800"}')):
        answer = client.post(route, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (route, answer.text)
        assert "surrogate" in answer.json()["error"], (route, answer.text)


def test_api_keys(translator, tmp_path):
    app = create_app(translator, api_keys={"secret-1"}, max_wait_ms=1)
    with live(app) as c:
        assert c.post("/translate", json={"q": "ba"}).status_code == 403
        assert c.post("/translate", json={"q": "ba", "api_key": "wrong"}).status_code == 403
        assert c.post("/translate", json={"q": "ba", "api_key": "secret-1"}).status_code == 200
        assert c.post("/v1/translate", json={"text": "ba"}).status_code == 403
        assert c.post("/v1/translate", json={"text": "ba", "api_key": "secret-1"}).status_code == 200


class SlowTranslator:
    """Stands in for a Translator whose decoding takes until ``release`` is set."""

    def __init__(self, real):
        self.real, self.config = real, real.config
        self.started, self.release = threading.Event(), threading.Event()

    def translate(self, sentences, **kwargs):
        self.started.set()
        self.release.wait(30)
        return self.real.translate(sentences, **kwargs)


def test_health_answers_while_a_batch_decodes_and_a_full_queue_gets_503(translator):
    slow = SlowTranslator(translator)
    app = create_app(slow, max_wait_ms=1, max_queue_sentences=2)
    with live(app) as c, ThreadPoolExecutor(4) as pool:
        first = pool.submit(c.post, "/translate", json={"q": SENTENCES[0]})
        assert slow.started.wait(30)
        start = time.monotonic()
        assert c.get("/health").status_code == 200
        assert time.monotonic() - start < 5  # not stuck behind the decoding batch
        queued = pool.submit(c.post, "/translate", json={"q": SENTENCES[1:3]})  # fills the queue (2)
        deadline = time.monotonic() + 10
        while c.get("/v1/info").json()["batching"]["sentences_waiting"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = c.post("/translate", json={"q": SENTENCES[3]})
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        slow.release.set()
        assert first.result().status_code == 200 and queued.result().status_code == 200


def test_batcher_groups_concurrent_requests_and_keeps_each_answer_its_own(translator):
    batcher = BatchingTranslator(translator, max_batch_sentences=16, max_wait_ms=200)
    options = DecodeOptions(beam_size=2, length_penalty=1.0, nbest=1)
    futures = [batcher.submit([s], options) for s in SENTENCES[:12]]
    other = batcher.submit([SENTENCES[0]], DecodeOptions(beam_size=3, length_penalty=1.0, nbest=2))
    results = [f.result(60) for f in futures]
    batcher.close()
    assert [r[0][0].text for r in results] == [t[0].text for t in offline(translator, SENTENCES[:12], beam_size=2)]
    assert len(other.result()[0]) == 2
    assert max(batcher.batch_sizes) > 1  # requests were decoded together
    with pytest.raises(ShuttingDown):
        batcher.submit(["ba"], options)  # closed


class RecordingTranslator:
    """Answers at once and records the sentences of each batch it was given."""

    def __init__(self, real):
        self.config, self.batches = real.config, []

    def translate(self, sentences, **kwargs):
        self.batches.append(list(sentences))
        return [[f"t:{s}"] for s in sentences]


def test_a_batch_stays_open_while_requests_keep_arriving(translator):
    """Requests 40 ms apart join one batch with a 300 ms quiet window though they span more than 300 ms;
    after a 700 ms pause the next request starts a new batch; a steady stream is cut at 10 x the window."""
    recorder = RecordingTranslator(translator)
    batcher = BatchingTranslator(recorder, max_batch_sentences=64, max_wait_ms=300)
    options = DecodeOptions(1, 1.0, 1)
    futures = []
    for i in range(10):  # 360 ms from the first to the last
        futures.append(batcher.submit([f"s{i}"], options))
        time.sleep(0.04)
    time.sleep(0.7)
    late = batcher.submit(["late"], options)
    assert [f.result(30)[0] for f in futures] == [[f"t:s{i}"] for i in range(10)]
    assert late.result(30) == [["t:late"]]
    assert recorder.batches == [[f"s{i}" for i in range(10)], ["late"]]

    fast = BatchingTranslator(recorder := RecordingTranslator(translator), max_batch_sentences=1000, max_wait_ms=20)
    start, stream = time.monotonic(), []
    while time.monotonic() - start < 0.8:  # a request every 5 ms for 0.8 s: never 20 ms quiet
        stream.append(fast.submit(["x"], options))
        time.sleep(0.005)
    assert all(f.result(30) == [["t:x"]] for f in stream)
    assert len(recorder.batches) >= 3  # closed at the latest 200 ms after the decoder became free
    batcher.close()
    fast.close()


def test_seeded_sampling_requests_are_decoded_alone(translator):
    """A seed reproduces a request's samples only if no other request shares its batch (its random stream)."""
    recorder = RecordingTranslator(translator)
    batcher = BatchingTranslator(recorder, max_batch_sentences=64, max_wait_ms=200)
    seeded, unseeded = DecodeOptions(1, 1.0, 1, top_k=5, seed=3), DecodeOptions(1, 1.0, 1, top_k=5)
    futures = [batcher.submit([s], seeded) for s in ("a", "b")] + [batcher.submit([s], unseeded) for s in ("c", "d")]
    assert [f.result(30) for f in futures] == [[["t:a"]], [["t:b"]], [["t:c"]], [["t:d"]]]
    batcher.close()
    assert recorder.batches == [["a"], ["b"], ["c", "d"]]


def test_requests_with_other_options_do_not_hold_a_batch_open(translator):
    """A lone beam-2 request waits its 100 ms window, not the 1 s cap, while beam-1 requests keep arriving."""
    recorder = RecordingTranslator(translator)
    batcher = BatchingTranslator(recorder, max_batch_sentences=64, max_wait_ms=100)
    lone = batcher.submit(["lone"], DecodeOptions(2, 1.0, 1))
    start, stream = time.monotonic(), []
    while not lone.done() and time.monotonic() - start < 2:
        stream.append(batcher.submit(["x"], DecodeOptions(1, 1.0, 1)))
        time.sleep(0.02)
    answered_after = time.monotonic() - start
    assert lone.result(30) == [["t:lone"]]
    assert answered_after < 0.6, answered_after
    assert all(f.result(30) == [["t:x"]] for f in stream)
    batcher.close()


def test_a_full_batcher_refuses_at_once(translator):
    slow = SlowTranslator(translator)
    batcher = BatchingTranslator(slow, max_batch_sentences=1, max_wait_ms=0, max_queue_sentences=1)
    options = DecodeOptions(2, 1.0, 1)
    running = batcher.submit(["ba"], options)
    assert slow.started.wait(30)
    batcher.submit(["de"], options)
    with pytest.raises(QueueFull):
        batcher.submit(["gi"], options)
    slow.release.set()
    assert running.result(30)
    batcher.close()


def test_a_real_server_answers_concurrent_clients_with_their_own_results(small_run, translator):
    """32 clients at once, each gets its own translation, and requests share batches."""
    server, base = start_server(small_run[2], "--max-wait-ms", "50", "--beam-size", "2")
    try:
        def client(sentence):
            request = urllib.request.Request(base + "/translate", data=json.dumps({"q": sentence}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["translatedText"]

        with ThreadPoolExecutor(len(SENTENCES)) as pool:
            got = list(pool.map(client, SENTENCES))
        assert got == [t[0].text for t in offline(translator, SENTENCES, beam_size=2)]
        info = json.loads(urllib.request.urlopen(base + "/v1/info", timeout=10).read())
        assert info["batching"]["sentences_decoded"] == len(SENTENCES)
        assert info["batching"]["batches_decoded"] < len(SENTENCES)  # some requests shared a batch
        assert info["engine"] == "torch" and info["device"] == "cpu"
    finally:
        stop_server(server)


def test_sigterm_lets_the_request_being_decoded_finish(small_run, translator):
    server, base = start_server(small_run[2], "--max-sentences-per-request", "512", "--max-batch-sentences", "512")
    many = [SENTENCES[i % len(SENTENCES)] + " " + WORDS[i % len(WORDS)] for i in range(400)]
    with ThreadPoolExecutor(1) as pool:
        def client():
            body = json.dumps({"text": many, "beam_size": 8}).encode()
            request = urllib.request.Request(base + "/v1/translate", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())

        answer = pool.submit(client)
        deadline = time.monotonic() + 60
        while json.loads(urllib.request.urlopen(base + "/v1/info", timeout=10).read())["batching"][
                "sentences_decoding"] == 0:
            assert time.monotonic() < deadline and not answer.done()
            time.sleep(0.005)
        stderr = stop_server(server)  # SIGTERM while the batch decodes
        status, body = answer.result(60)
    assert status == 200 and len(body["translations"]) == len(many), stderr
    expected = offline(translator, many[:5], beam_size=8)
    assert [t[0]["text"] for t in body["translations"][:5]] == [e[0].text for e in expected]


def test_the_web_page_translates_in_a_real_browser(small_run, translator, tmp_path):
    """Headless Chromium pastes a paragraph (two lines, a blank line, another line) and reads the translation:
    paragraphs kept, with its alternatives; then a bit of HTML, shown as HTML; then a text over the limit."""

    from transformer_mt.text.segment import segment_text

    sync_api, chromium = playwright_and_chromium()
    paragraph = f"{SENTENCES[0]}\n{SENTENCES[1]}\n\n{SENTENCES[2]}"
    server, base = start_server(small_run[2], "--beam-size", "2")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(base + "/")
                page.wait_for_function("document.getElementById('pair').textContent.includes('tgt')", timeout=20000)
                page.fill("#source", paragraph)
                page.fill("#alternatives", "1")
                page.click("#translate")
                page.wait_for_function("document.getElementById('status').textContent.includes('characters')",
                                       timeout=30000)
                shown = page.locator("#output").text_content()
                alternatives = page.locator(".alternatives li").all_text_contents()
                page.screenshot(path=str(tmp_path / "page.png"))
                page.select_option("#format", "html")
                page.fill("#source", f'<p class="c">{SENTENCES[3]}</p>')
                page.fill("#alternatives", "0")
                page.click("#translate")
                page.wait_for_function("document.getElementById('output').textContent.includes('<p')",
                                       timeout=30000)
                shown_html = page.locator("#output").text_content()
                preview_visible = page.locator("#preview").is_visible()
                page.fill("#source", "x" * 6000)  # over the server's limit: the page shows the error
                page.click("#translate")
                page.wait_for_selector("#status.error", timeout=30000)
                error = page.inner_text("#status")
            finally:
                browser.close()
    finally:
        stop_server(server)
    segmented = segment_text(paragraph, "src")
    expected = offline(translator, segmented.sentences, beam_size=2, nbest=2)
    assert shown == segmented.join([t[0].text for t in expected], "tgt")
    assert shown.count("\n") == 3  # the line break and the blank line came back
    second = segmented.join([t[1].text for t in expected], "tgt")
    assert alternatives == ([second] if second != shown else [])
    assert shown_html.startswith('<p class="c">') and preview_visible
    assert "max_chars_per_text" in error


def test_the_web_page_translates_a_file_in_a_real_browser(small_run, translator, tmp_path):
    """The page's File tab: Chromium uploads a text document (two paragraphs), the page offers the translated
    file's download, and that file is byte for byte what the server's model makes of the document."""
    sync_api, chromium = playwright_and_chromium()
    document = f"{SENTENCES[4]}.\n{SENTENCES[5]}.\n\n{SENTENCES[6]}.\n".encode()
    upload = tmp_path / "letter.txt"
    upload.write_bytes(document)
    server, base = start_server(small_run[2], "--beam-size", "2")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(base + "/")
                page.wait_for_function("document.getElementById('formats').textContent.includes('.docx')",
                                       timeout=20000)
                text_pane_visible = page.locator("#text-pane").is_visible()
                page.click("#file-tab")
                file_pane_visible, text_pane_hidden = (page.locator("#file-pane").is_visible(),
                                                       not page.locator("#text-pane").is_visible())
                page.click("#translate-file")  # nothing chosen yet: the page says so
                page.wait_for_selector("#status.error", timeout=10000)
                nothing_chosen = page.inner_text("#status")
                page.set_input_files("#file", str(upload))
                page.click("#translate-file")
                page.wait_for_selector("#download:not([hidden])", timeout=30000)
                link_text = page.inner_text("#download")
                with page.expect_download() as download_info:
                    page.click("#download")
                download = download_info.value
                downloaded = Path(download.path()).read_bytes()
                suggested = download.suggested_filename
            finally:
                browser.close()
    finally:
        stop_server(server)
    assert text_pane_visible and file_pane_visible and text_pane_hidden
    assert "choose a file" in nothing_chosen
    assert link_text == "Download letter.txt" and suggested == "letter.txt"
    assert downloaded == translator.translate_document(document, "letter.txt", beam_size=2)


def test_serve_refuses_a_busy_port_and_a_bad_key_file_in_one_line(small_run, tmp_path):
    from conftest import assert_clean_error, run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_clean_error(run_cli("serve", "--model", small_run[2], "--port", port), f"127.0.0.1:{port}",
                           "Address already in use")
    (tmp_path / "keys").write_text("\n  \n")
    assert_clean_error(run_cli("serve", "--model", small_run[2], "--api-key-file", tmp_path / "keys"), "holds no key")


def test_hostile_bodies_get_json_errors_not_500(client):
    deep = b"[" * 1900 + b"]" * 1900  # deeper than Python's recursion limit, within the 4000-byte body limit
    for body, status in ((b'{"q": "ba", "alternatives": Infinity}', 400), (deep, 400),
                         (b'{"q": "\\ud800"}', 400)):
        response = client.post("/translate", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (body[:40], response.text)
        assert "error" in response.json()
    big = b'{"text": "ba", "pad": "' + b"x" * 5000 + b'"}'  # the native API has the body limit too
    assert client.post("/v1/translate", content=big, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/v1/translate", json={"text": "ba", "length_penalty": 1000}).status_code == 422
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_non_ascii_api_key(translator):
    with live(create_app(translator, api_keys={"clé-1"}, max_wait_ms=1)) as c:
        assert c.post("/translate", json={"q": "ba", "api_key": "clé"}).status_code == 403
        assert c.post("/translate", json={"q": "ba", "api_key": "clé-1"}).status_code == 200


class FailsOn:
    """A translator that raises for one sentence: what a bad input does inside the decoding thread."""

    def __init__(self, real, bad):
        self.real, self.bad, self.config = real, bad, real.config

    def translate(self, sentences, **kwargs):
        if self.bad in sentences:
            raise ValueError("cannot decode this")
        return self.real.translate(sentences, **kwargs)


def test_one_requests_failure_is_its_own_and_cancelled_requests_do_not_stop_the_worker(translator):
    batcher = BatchingTranslator(FailsOn(translator, "BAD"), max_batch_sentences=16, max_wait_ms=200)
    options = DecodeOptions(2, 1.0, 1)
    good, bad = batcher.submit([SENTENCES[0]], options), batcher.submit(["BAD"], options)
    assert good.result(60)[0][0].text == offline(translator, SENTENCES[:1], beam_size=2)[0][0].text
    with pytest.raises(ValueError):
        bad.result(60)

    slow = SlowTranslator(translator)
    batcher = BatchingTranslator(slow, max_batch_sentences=1, max_wait_ms=0)
    running = batcher.submit([SENTENCES[0]], options)
    assert slow.started.wait(30)
    given_up = batcher.submit([SENTENCES[1]], options)
    assert given_up.cancel()  # the client went away while its request waited
    slow.release.set()
    running.result(60)
    assert batcher.submit([SENTENCES[2]], options).result(60)  # the worker is still alive
    batcher.close()


def test_serve_and_export_refuse_bad_settings_in_one_line(small_run, tmp_path):
    from conftest import assert_clean_error, run_cli

    assert_clean_error(run_cli("serve", "--model", small_run[2], "--beam-size", "100"), "above the server's limit")
    assert_clean_error(run_cli("serve", "--model", small_run[2], "--length-penalty", "nan"), "finite")
    (tmp_path / "afile").write_text("x")
    pytest.importorskip("ctranslate2")
    assert_clean_error(run_cli("export", "--model", small_run[2], "--output", tmp_path / "afile" / "sub"))
