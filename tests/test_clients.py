"""The LibreTranslate clients people run, replayed against a live server on 127.0.0.1.

Each test sends what the client's code sends (endpoints, body type, fields, headers) and reads back only
what that code reads, so a change that would break the client breaks the test:

- Mastodon, app/lib/translation_service/libre_translate.rb: GET /languages (with a JSON content type), then
  POST /translate as JSON with ``q`` a list of toots (HTML), ``source`` the toot's language or ``auto``,
  ``format: "html"`` and ``api_key: null``; reads ``translatedText[i]`` and ``detectedLanguage[i].language``.
- Discourse's translator plugin, provider/libre_translate.rb: POST /detect as a urlencoded form (``q`` the
  post's raw text, ``api_key`` with no value), reads ``[0]["language"]``; GET /languages and looks both the
  detected source and the target up among the codes; POST /translate as a form with the cooked HTML,
  ``format=html``; reads ``translatedText``.
- Nextcloud's LibreTranslate integration (integration_libretranslate, through the jefs42/libretranslate PHP
  library and curl): POST / (a connection check), GET /frontend/settings and /languages (the configured source
  and target must be codes), POST /detect with ``q`` in the query string and an empty body, POST /translate
  as multipart with ``format=html``, POST /translate_file then a GET of ``translatedFileUrl``.
- Misskey's forks (Sharkey's notes/translate.ts): POST to the configured URL as JSON with ``q`` a string,
  ``source: "auto"``, ``format: "text"``, ``api_key: ""``; reads ``translatedText`` and
  ``detectedLanguage.language``.
- The ``libretranslatepy`` package itself: translate, detect, languages.
"""

import copy
import json
import urllib.parse

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from conftest import WORDS, live_app  # noqa: E402

from transformer_mt import Translator  # noqa: E402
from transformer_mt.serving.server import create_app  # noqa: E402
from transformer_mt.text.segment import segment_text  # noqa: E402

GERMAN = "Der Hund läuft über die Wiese. Ein Mann liest eine Zeitung im Park."
TOOT = ('<p>Hallo <span class="h-card"><a href="https://example.social/@anna" class="u-url mention">@<span>anna'
        '</span></a></span>, wie geht es dir heute? Das Wetter ist schön.</p><p>Zweiter Absatz mit einem '
        '<a href="https://example.org/x" rel="nofollow noopener" target="_blank">Link</a>.</p>')


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


@pytest.fixture(scope="module")
def german(translator):
    """The tiny model served as de -> en: the clients send real language codes."""
    served = copy.copy(translator)
    served.config = copy.deepcopy(translator.config)
    served.config.data.src_lang, served.config.data.tgt_lang = "de", "en"
    with live_app(create_app(served, max_wait_ms=1)) as http:
        yield http


def no_server_error(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    return response


def test_mastodon(german):
    languages = no_server_error(german.get("/languages", headers={"Content-Type": "application/json"})).json()
    targets = {language["code"]: [t for t in language["targets"] if t != language["code"]] for language in languages}
    assert "en" in targets["de"]
    for source in ("de", "auto"):
        body = json.dumps({"q": [TOOT, "Kurzer Text."], "source": source, "target": "en", "format": "html",
                           "api_key": None})
        response = no_server_error(german.post("/translate", content=body,
                                               headers={"Content-Type": "application/json"}))
        assert response.status_code == 200, response.text
        data = response.json()
        assert isinstance(data, dict) and len(data["translatedText"]) == 2
        assert all(isinstance(text, str) for text in data["translatedText"])
        # Mastodon keeps the toot's markup: the mention's link and the second paragraph come back.
        assert 'href="https://example.social/@anna"' in data["translatedText"][0]
        assert data["translatedText"][0].count("<p>") == 2
        detected = [(data.get("detectedLanguage") or [None] * 2)[i] for i in range(2)]
        if source == "auto":
            assert [d["language"] for d in detected] == ["de", "de"]
        else:
            assert detected == [None, None]  # Mastodon then keeps the toot's own language


def test_discourse(german):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # URI.encode_www_form(q: text, api_key: nil) writes the key with no '='.
    detect = no_server_error(german.post("/detect", content=urllib.parse.urlencode({"q": GERMAN}) + "&api_key",
                                         headers=form))
    assert detect.status_code == 200 and detect.json()[0]["language"] == "de"
    codes = [language["code"] for language in no_server_error(german.get("/languages")).json()]
    assert "de" in codes and "en" in codes  # translate_supported?(source, target)
    cooked = "<p>Der Hund läuft über die <strong>grüne</strong> Wiese.</p>\n<p>Ein Mann liest.</p>"
    body = urllib.parse.urlencode({"q": cooked, "source": "de", "target": "en", "format": "html", "api_key": ""})
    translated = no_server_error(german.post("/translate", content=body, headers=form))
    assert translated.status_code == 200, translated.text
    assert "<strong>" in translated.json()["translatedText"]


def test_nextcloud(german, tmp_path):
    # new LibreTranslate($host, $port, $src, $tgt): POST / to test the connection (its answer is ignored) ...
    no_server_error(german.post("/", content=b""))
    # ... then GET /frontend/settings and /languages, both sent by curl with an empty POST-fields array.
    settings = no_server_error(german.request("GET", "/frontend/settings", content=b"")).json()
    assert settings["language"]["source"]["code"] == "de" and ".docx" in settings["supportedFilesFormat"]
    assert isinstance(settings["charLimit"], int) and settings["suggestions"] is False
    names = {language["code"]: language["name"] for language in german.request("GET", "/languages").json()}
    assert {"de", "en"} <= set(names)  # setSource('de') and setTarget('en') throw otherwise
    # Detect(): q and api_key in the query string of a POST with an empty body.
    detect = no_server_error(german.post("/detect?" + urllib.parse.urlencode({"q": GERMAN, "api_key": ""})))
    assert detect.status_code == 200 and detect.json()[0]["language"] == "de"
    # Translate(): multipart/form-data (PHP hands curl an array), format html even for plain text.
    text = "Der Hund läuft.\nEin Mann liest."
    translated = no_server_error(german.post("/translate", files={
        "q": (None, text), "format": (None, "html"), "source": (None, "de"), "target": (None, "en"),
        "api_key": (None, "")}))
    assert translated.status_code == 200 and isinstance(translated.json()["translatedText"], str)
    # translateFiles(): the file as the multipart field 'file', then a GET of translatedFileUrl.
    upload = no_server_error(german.post("/translate_file", files={
        "file": ("notes.txt", "Der Hund läuft.\n\nEin Mann liest.\n".encode(), "text/plain"),
        "format": (None, "html"), "source": (None, "de"), "target": (None, "en"), "api_key": (None, "")}))
    assert upload.status_code == 200, upload.text
    url = upload.json()["translatedFileUrl"]
    assert url.startswith(str(german.base_url).rstrip("/") + "/download_file/")
    downloaded = no_server_error(httpx.get(url, timeout=30))
    assert downloaded.status_code == 200 and downloaded.text.count("\n\n") == 1  # the two paragraphs


def test_misskey_forks(german):
    body = {"q": GERMAN, "source": "auto", "target": "en", "format": "text", "api_key": ""}
    response = no_server_error(german.post("/translate", json=body,
                                           headers={"Accept": "application/json, */*"}))
    assert response.status_code == 200
    json_ = response.json()
    assert json_["detectedLanguage"]["language"] == "de" and isinstance(json_["translatedText"], str)


def test_libretranslatepy(german):
    libretranslatepy = pytest.importorskip("libretranslatepy")
    api = libretranslatepy.LibreTranslateAPI(str(german.base_url))
    assert isinstance(api.translate(GERMAN, "de", "en"), str)
    assert api.detect(GERMAN)[0]["language"] == "de"
    assert [language["code"] for language in api.languages()] == ["de", "en"]
    with pytest.raises(Exception) as refused:  # a pair this server does not have: LibreTranslate's 400
        api.translate(GERMAN, "fr", "en")
    assert "400" in str(refused.value)


def test_the_text_of_each_request_is_split_batched_and_joined(translator, small_run):
    """Paragraphs of several sentences: each sentence decoded on its own (one batcher request for all of
    them), the text's line breaks, blank lines and outer white space given back exactly."""
    sentence = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i % 3)) for i in range(6)]
    text = f"  {sentence[0]}. {sentence[1]}.\n{sentence[2]}.\n\n{sentence[3]}. {sentence[4]}.  \n"
    segmented = segment_text(text, "src")
    offline = [t[0].text for t in translator.translate(segmented.sentences, return_scores=True)]
    with live_app(create_app(translator, max_wait_ms=1)) as http:
        answer = http.post("/translate", json={"q": [text, sentence[5]], "source": "src", "target": "tgt"})
        info = http.get("/v1/info").json()["batching"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["translatedText"] == [segmented.join(offline, "tgt"),
                                               translator.translate([sentence[5]])[0]]
    assert info["batches_decoded"] == 1 and info["sentences_decoded"] == len(segmented.sentences) + 1


def test_source_auto_refuses_text_in_another_language(german):
    french = "Le chien court dans le parc. Une femme lit un livre au soleil."
    refused = german.post("/translate", json={"q": french, "source": "auto", "target": "en"})
    assert refused.status_code == 400
    message = refused.json()["error"]
    assert "French (fr" in message and "de" in message and "en" in message
    forced = german.post("/translate", json={"q": french, "source": "de", "target": "en"})
    assert forced.status_code == 200  # the client said it is German: translated as asked
    accepted = german.post("/translate", json={"q": GERMAN, "source": "auto", "target": "en"}).json()
    assert accepted["detectedLanguage"]["language"] == "de" and accepted["detectedLanguage"]["confidence"] > 90
    unsure = german.post("/translate", json={"q": "ok", "source": "auto", "target": "en"})
    assert unsure.status_code == 200  # too short to be sure of anything: translated as the served source


def test_the_demo_pair_is_translated_without_detection(small_run, translator):
    with live_app(create_app(translator, max_wait_ms=1)) as http:
        french = http.post("/translate", json={"q": "Le chien court dans le parc.", "source": "auto"})
    assert french.status_code == 200  # "src" is no language the identifier knows
    assert french.json()["detectedLanguage"] == {"confidence": 100.0, "language": "src"}


def test_no_split_sentences_sends_each_text_whole(translator):
    text = f"{WORDS[0]} {WORDS[1]}. {WORDS[2]} {WORDS[3]}.\n{WORDS[4]}"
    with live_app(create_app(translator, max_wait_ms=1, split_sentences=False)) as http:
        whole = http.post("/translate", json={"q": text}).json()["translatedText"]
    lines = text.split("\n")
    assert whole == "\n".join(translator.translate(lines))  # each line one sentence, not three


def test_a_french_file_to_a_german_server_with_source_auto(german):
    french = b"Le chien court dans le parc.\n\nUne femme lit un livre au soleil.\n"
    refused = german.post("/translate_file", files={"file": ("lettre.txt", french, "text/plain")},
                          data={"source": "auto", "target": "en"})
    assert refused.status_code == 400 and "French (fr" in refused.json()["error"]
    german_text = f"{GERMAN}\n\nDie Kinder spielen im Garten.\n".encode()
    accepted = german.post("/translate_file", files={"file": ("brief.txt", german_text, "text/plain")},
                           data={"source": "auto", "target": "en"})
    assert accepted.status_code == 200, accepted.text
    got = httpx.get(accepted.json()["translatedFileUrl"], timeout=30)
    assert got.headers["content-disposition"].startswith('attachment; filename="brief.txt"')
    assert got.headers["content-type"].startswith("text/plain")


def test_api_keys_guard_every_libretranslate_endpoint(translator):
    with live_app(create_app(translator, max_wait_ms=1, api_keys={"k1"})) as http:
        for path, kwargs in (("/translate", {"json": {"q": "ba"}}), ("/detect", {"json": {"q": "ba"}}),
                             ("/translate_file", {"files": {"file": ("a.txt", b"ba", "text/plain")}})):
            assert http.post(path, **kwargs).status_code == 403, path
            keyed = dict(kwargs)
            if "json" in keyed:
                keyed["json"] = {**keyed["json"], "api_key": "k1"}
            else:
                keyed["data"] = {"api_key": "k1"}
            assert http.post(path, **keyed).status_code == 200, path
        settings = http.get("/frontend/settings").json()
        assert settings["apiKeys"] is True and settings["keyRequired"] is True


def test_a_ctranslate2_server_places_tags_without_alignments(small_run, tmp_path):
    """CTranslate2 gives no alignments: HTML with inline tags and a Word file with a bold word still come back
    whole (tags by relative position), never a 500."""
    pytest.importorskip("ctranslate2")
    docx = pytest.importorskip("docx")
    import io

    from transformer_mt.interop.ct2_translator import CTranslate2Translator
    from transformer_mt.interop.ctranslate2_export import export_ctranslate2

    export_ctranslate2(small_run[2], tmp_path / "ct2")
    ct2 = CTranslate2Translator(tmp_path / "ct2", intra_threads=1)
    html = f"<p>{WORDS[0]} <b>{WORDS[1]} {WORDS[2]}</b> {WORDS[3]}.</p>"
    document = docx.Document()
    paragraph = document.add_paragraph(f"{WORDS[4]} ")
    paragraph.add_run(WORDS[5]).bold = True
    paragraph.add_run(f" {WORDS[6]}.")
    data = io.BytesIO()
    document.save(data)
    with live_app(create_app(ct2, max_wait_ms=1)) as http:
        answer = http.post("/translate", json={"q": html, "format": "html", "alternatives": 1})
        native = http.post("/v1/translate", json={"text": html, "format": "html"})
        upload = http.post("/translate_file", files={"file": ("a.docx", data.getvalue(), "application/octet-stream")})
        assert upload.status_code == 200, upload.text
        got = docx.Document(io.BytesIO(http.get(upload.json()["translatedFileUrl"]).content))
    assert answer.status_code == 200 and native.status_code == 200, (answer.text, native.text)
    assert answer.json()["translatedText"].startswith("<p>") and "<b>" in answer.json()["translatedText"]
    assert any(run.bold for run in got.paragraphs[0].runs)
