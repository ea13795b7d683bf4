"""One server, many models (serving/registry.py): pairs from the runs' configs, routing, loading on first use and
unloading the least recently used, detection among the served sources, pivoting, glossaries per pair, and
``serve --models-dir`` on the command line."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
from conftest import (  # noqa: E402
    WORDS,
    assert_clean_error,
    free_port,
    live_app,
    playwright_and_chromium,
    run_cli,
    stop_server,
    train_language_pair,
)

from transformer_mt import Translator  # noqa: E402
from transformer_mt.serving.registry import ModelRegistry, describe_folder, model_folders  # noqa: E402
from transformer_mt.serving.server import create_app  # noqa: E402

PAIRS = (("de", "en"), ("en", "fr"))  # de -> fr is pivoted through en
SENTENCE = " ".join(WORDS[i] for i in (1, 5, 9, 13))
GERMAN = "Ich wohne seit vielen Jahren in dieser schönen Stadt und gehe jeden Morgen mit meinem Hund spazieren."
ENGLISH = "I have lived in this beautiful city for many years and I walk my dog every morning before work."
FRENCH = "J'habite dans cette belle ville depuis de nombreuses années et je promène mon chien chaque matin."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A folder of two tiny runs, de -> en and en -> fr; their Translators by pair."""
    root = tmp_path_factory.mktemp("many")
    runs = {pair: train_language_pair(root, *pair) for pair in PAIRS}
    return root / "models", {pair: Translator.from_run(run, device="cpu") for pair, run in runs.items()}


def registry_of(models_dir, **kwargs):
    models = [describe_folder(folder) for folder in model_folders(models_dir)]
    return ModelRegistry(models, lambda model: Translator.from_run(model.path, device="cpu"), **kwargs)


@pytest.fixture(scope="module")
def client(models):
    with live_app(create_app(registry_of(models[0]), max_wait_ms=1)) as http:
        yield http


def alone(translator, sentence):
    return translator.translate([sentence])[0]


def test_languages_list_every_pair_and_the_pivoted_ones(client):
    languages = {entry["code"]: entry for entry in client.get("/languages").json()}
    assert languages["de"]["name"] == "German" and languages["de"]["targets"] == ["en", "fr"]
    assert languages["de"]["pivoted"] == {"fr": "en"}
    assert languages["en"]["targets"] == ["fr"] and "pivoted" not in languages["en"]
    assert languages["fr"]["targets"] == []
    info = client.get("/v1/info").json()
    assert {m["name"]: m["source"] for m in info["models"]} == {"de-en": "de", "en-fr": "en"}
    assert "de -> fr (via en)" in info["pairs"]
    assert client.get("/frontend/settings").json()["languages"][0]["code"] == "de"


def test_each_pair_is_translated_by_its_own_model(client, models):
    for (source, target), translator in models[1].items():
        answer = client.post("/translate", json={"q": SENTENCE, "source": source, "target": target})
        assert answer.status_code == 200, answer.text
        assert answer.json()["translatedText"] == alone(translator, SENTENCE)
        native = client.post("/v1/translate", json={"text": SENTENCE, "source": source, "target": target})
        assert native.status_code == 200, native.text
        assert native.json()["translations"][0][0]["text"] == alone(translator, SENTENCE)
        assert (native.json()["source"], native.json()["target"]) == (source, target)


def test_a_pivoted_pair_translates_the_first_models_output_with_the_second(client, models):
    first, second = models[1][PAIRS[0]], models[1][PAIRS[1]]
    expected = alone(second, alone(first, SENTENCE))
    answer = client.post("/translate", json={"q": SENTENCE, "source": "de", "target": "fr"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["translatedText"] == expected
    native = client.post("/v1/translate", json={"text": [SENTENCE], "source": "de", "target": "fr"}).json()
    assert native["translations"][0][0]["text"] == expected and native["pivot"] == "en"
    # HTML, documents and alignments need one model's alignment to the source: refused, saying so.
    html = client.post("/translate", json={"q": f"<p>{SENTENCE}</p>", "source": "de", "target": "fr",
                                           "format": "html"})
    assert html.status_code == 400 and "through en" in html.json()["error"]
    aligned = client.post("/v1/translate", json={"text": SENTENCE, "source": "de", "target": "fr", "alignment": True})
    assert aligned.status_code == 400 and "through en" in aligned.json()["error"]
    document = client.post("/translate_file", data={"source": "de", "target": "fr"},
                           files={"file": ("a.txt", SENTENCE.encode())})
    assert document.status_code == 400 and "through en" in document.json()["error"]


def test_no_pivot_serves_the_direct_pairs_only(models):
    registry = registry_of(models[0], pivot=False)
    with live_app(create_app(registry, max_wait_ms=1)) as http:
        languages = {entry["code"]: entry for entry in http.get("/languages").json()}
        assert languages["de"]["targets"] == ["en"]
        answer = http.post("/translate", json={"q": SENTENCE, "source": "de", "target": "fr"})
        assert answer.status_code == 400 and "de -> en" in answer.json()["error"]


@pytest.mark.parametrize("body, fragment", [
    ({"q": SENTENCE, "source": "fr", "target": "de"}, "de -> en"),
    ({"q": SENTENCE, "source": "de", "target": "cs"}, "en -> fr"),
    ({"q": SENTENCE, "source": "de"}, "give 'target'"),
    ({"q": SENTENCE, "source": ["de"], "target": "en"}, "not a language"),
    ({"q": SENTENCE, "source": "de", "target": 12}, "'target' must be a language code"),
    ({"q": SENTENCE, "source": "de", "target": {"a": 1}}, "'target' must be a language code"),
])
def test_an_unknown_pair_is_a_400_naming_the_pairs(client, body, fragment):
    answer = client.post("/translate", json=body)
    assert answer.status_code == 400 and fragment in answer.json()["error"], answer.text


def test_the_native_api_needs_a_source_when_there_are_several(client):
    answer = client.post("/v1/translate", json={"text": SENTENCE, "target": "fr"})
    assert answer.status_code == 400 and "give 'source'" in answer.json()["error"]


def test_auto_detects_among_the_served_sources_only(client, models):
    german = client.post("/translate", json={"q": GERMAN, "source": "auto", "target": "en"}).json()
    assert german["detectedLanguage"]["language"] == "de"
    assert german["translatedText"] == alone(models[1][PAIRS[0]], GERMAN)
    english = client.post("/translate", json={"q": ENGLISH, "source": "auto", "target": "fr"}).json()
    assert english["detectedLanguage"]["language"] == "en"
    assert english["translatedText"] == alone(models[1][PAIRS[1]], ENGLISH)
    french = client.post("/translate", json={"q": FRENCH, "source": "auto", "target": "fr"})
    assert french.status_code == 400 and "French" in french.json()["error"], french.text
    native = client.post("/v1/translate", json={"text": GERMAN, "source": "auto", "target": "fr"}).json()
    assert native["detected_language"]["language"] == "de" and native["pivot"] == "en"


def test_glossaries_belong_to_their_pair(client):
    refused = client.post("/v1/glossaries", json={"name": "x", "source": "fr", "target": "de",
                                                  "entries": [["ba", "ka"]]})
    assert refused.status_code == 400 and "de -> en" in refused.json()["error"]
    kept = client.post("/v1/glossaries", json={"name": "g", "source": "de", "target": "en",
                                               "entries": [[WORDS[1], WORDS[2]]]})
    assert kept.status_code == 200, kept.text
    glossary_id = kept.json()["glossary_id"]
    used = client.post("/translate", json={"q": SENTENCE, "source": "de", "target": "en", "glossary_id": glossary_id})
    assert used.status_code == 200 and WORDS[2] in used.json()["translatedText"]
    other = client.post("/translate", json={"q": SENTENCE, "source": "en", "target": "fr",
                                            "glossary_id": glossary_id})
    assert other.status_code == 400 and "de -> en" in other.json()["error"]
    native = client.post("/v1/translate", json={"text": SENTENCE, "source": "de", "target": "fr",
                                                "glossary_id": glossary_id})
    assert native.status_code == 400


def test_one_loaded_model_at_most_still_answers_every_pair(models):
    registry = registry_of(models[0], max_loaded=1)
    with live_app(create_app(registry, max_wait_ms=1)) as http:
        for _ in range(2):
            for (source, target), translator in models[1].items():
                answer = http.post("/translate", json={"q": SENTENCE, "source": source, "target": target})
                assert answer.json()["translatedText"] == alone(translator, SENTENCE)
                loaded = [m["name"] for m in http.get("/v1/info").json()["models"] if m["loaded"]]
                assert loaded == [f"{source}-{target}"]
        pivoted = http.post("/translate", json={"q": SENTENCE, "source": "de", "target": "fr"})
        assert pivoted.json()["translatedText"] == alone(models[1][PAIRS[1]], alone(models[1][PAIRS[0]], SENTENCE))


def test_a_model_that_cannot_load_answers_a_clear_error_naming_its_pair(models, tmp_path):
    shutil.copytree(models[0] / "de-en", tmp_path / "de-en")
    broken = tmp_path / "de-cs"
    broken.mkdir()
    config = (models[0] / "de-en" / "config.yaml").read_text(encoding="utf-8")
    (broken / "config.yaml").write_text(config.replace("tgt_lang: en", "tgt_lang: cs"), encoding="utf-8")
    with live_app(create_app(registry_of(tmp_path), max_wait_ms=1)) as http:
        answer = http.post("/translate", json={"q": SENTENCE, "source": "de", "target": "cs"})
        assert answer.status_code == 503 and "de -> cs" in answer.json()["error"], answer.text
        assert "Traceback" not in answer.text
        assert str(tmp_path) not in answer.text and "checkpoint" not in answer.text  # the reason is in the log
        fine = http.post("/translate", json={"q": SENTENCE, "source": "de", "target": "en"})
        assert fine.status_code == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's folder needs root")
def test_a_link_to_another_users_folder_is_not_served(models, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(models[0] / "de-en", served / "de-en")
    foreign = tmp_path / "foreign"
    shutil.copytree(models[0] / "en-fr", foreign)
    for folder, _, files in os.walk(foreign):
        os.chown(folder, 65534, 65534)
        for name in files:
            os.chown(os.path.join(folder, name), 65534, 65534)
    (served / "en-fr").symlink_to(foreign)
    assert [folder.name for folder in model_folders(served)] == ["de-en"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's folder needs root")
def test_another_users_folder_or_one_anyone_may_write_is_not_served(models, tmp_path):
    """In a shared --models-dir another user's own folder (not only a link) would serve their model, and take
    over a pair when its name sorts first; a folder every user may write into is theirs as much."""
    served = tmp_path / "served"
    served.mkdir(mode=0o1777)
    served.chmod(0o1777)
    shutil.copytree(models[0] / "de-en", served / "de-en")
    shutil.copytree(models[0] / "de-en", served / "0-takeover")
    for folder, _, files in os.walk(served / "0-takeover"):
        os.chown(folder, 65534, 65534)
        for name in files:
            os.chown(os.path.join(folder, name), 65534, 65534)
    shutil.copytree(models[0] / "en-fr", served / "en-fr")
    (served / "en-fr").chmod(0o777)
    assert [folder.name for folder in model_folders(served)] == ["de-en"]


def test_serve_models_dir_refuses_a_missing_or_empty_folder_and_absurd_limits(models, tmp_path):
    port = str(free_port())
    assert_clean_error(run_cli("serve", "--models-dir", tmp_path / "missing", "--port", port), "--models-dir")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("serve", "--models-dir", tmp_path / "empty", "--port", port), "holds no run")
    for count in ("0", "100000"):
        assert_clean_error(run_cli("serve", "--models-dir", models[0], "--port", port, "--max-loaded-models", count),
                           "--max-loaded-models")


def test_serve_models_dir_on_the_command_line(models):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "transformer_mt.cli", "serve", "--models-dir", str(models[0]),
                               "--port", str(port), "--device", "cpu", "--max-loaded-models", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1]
                time.sleep(0.1)
        import httpx

        with httpx.Client(base_url=base, timeout=60) as http:
            assert len(http.get("/languages").json()) == 3
            for (source, target), translator in models[1].items():
                answer = http.post("/translate", json={"q": SENTENCE, "source": source, "target": target})
                assert answer.json()["translatedText"] == alone(translator, SENTENCE)
    finally:
        stderr = stop_server(server)
    assert "de -> en" in stderr


def test_the_page_picks_the_pair_swaps_it_and_pivots_in_a_real_browser(client, models):
    """Headless Chromium on a server of two models: the language selectors (with 'detect language'), a direct
    pair, the swap button (refused where no model goes back, else the pair and the text turned round), and a
    pivoted pair, each translation the one its model (or the two models) give."""
    sync_api, chromium = playwright_and_chromium()
    translators = models[1]
    base = str(client.base_url).rstrip("/")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_selector("#swap", timeout=20000)
            sources = page.eval_on_selector_all("#pair select:first-of-type option", "os => os.map(o => o.value)")
            page.select_option("#pair select >> nth=0", "de")
            page.select_option("#pair select >> nth=1", "en")
            page.fill("#source", SENTENCE)
            page.click("#translate")
            page.wait_for_function("document.getElementById('status').textContent.includes('characters')",
                                   timeout=30000)
            direct = page.locator("#output").text_content()
            page.click("#swap")  # en -> de: no model goes back
            refused = page.inner_text("#status")
            page.select_option("#pair select >> nth=0", "de")
            targets = page.eval_on_selector_all("#pair select >> nth=1", "s => [...s[0].options].map(o => o.value)")
            page.select_option("#pair select >> nth=1", "fr")  # pivoted through en
            page.evaluate("document.getElementById('status').textContent = ''")
            page.click("#translate")
            page.wait_for_function("document.getElementById('status').textContent.includes('characters')",
                                   timeout=30000)
            pivoted = page.locator("#output").text_content()
        finally:
            browser.close()
    assert sources[0] == "auto" and set(sources[1:]) == {"de", "en"}
    assert direct == alone(translators[("de", "en")], SENTENCE)
    assert "no model translates" in refused
    assert set(targets) == {"en", "fr"}
    assert pivoted == alone(translators[("en", "fr")], alone(translators[("de", "en")], SENTENCE))
