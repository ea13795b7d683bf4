"""Glossaries on the server: kept with POST /v1/glossaries, used by /translate, /translate_file and /v1/translate
(glossary_id, or the entries themselves), listed, deleted, bounded and behind the API key."""

import io
import json
import random
import re

import pytest

pytest.importorskip("fastapi")
from conftest import WORDS, live_app  # noqa: E402

from transformer_mt import Translator  # noqa: E402
from transformer_mt.serving.glossaries import GlossaryStore  # noqa: E402
from transformer_mt.serving.server import create_app  # noqa: E402
from transformer_mt.text.glossary import Glossary, term_use  # noqa: E402


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


@pytest.fixture(scope="module")
def client(translator):
    with live_app(create_app(translator, max_wait_ms=1)) as http:
        yield http


def texts_and_entries(seed: int, count: int = 6):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))) for _ in range(count)]
    entries = [[source, rng.choice(WORDS)] for source in rng.sample(WORDS, 5)]
    return texts, entries


def keep(client, entries, name="terms", **extra):
    answer = client.post("/v1/glossaries", json={"name": name, "source": "src", "target": "tgt", "entries": entries,
                                                 **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("seed", [0, 1])
def test_every_route_keeps_the_terms(client, seed):
    texts, entries = texts_and_entries(seed)
    glossary = Glossary.from_entries(entries)
    kept = keep(client, entries)
    assert kept["entry_count"] == 5 and re.fullmatch(r"[0-9a-f]{32}", kept["glossary_id"])
    answer = client.post("/translate", json={"q": texts, "source": "src", "target": "tgt",
                                             "glossary_id": kept["glossary_id"]})
    assert answer.status_code == 200, answer.text
    assert term_use(glossary, texts, answer.json()["translatedText"])["term_use"] in (100.0, None)
    form = client.post("/translate", data={"q": texts[0], "source": "src", "target": "tgt",
                                           "glossary_id": kept["glossary_id"]})
    assert term_use(glossary, texts[:1], [form.json()["translatedText"]])["term_use"] in (100.0, None)
    for body in ({"text": texts, "glossary_id": kept["glossary_id"]}, {"text": texts, "glossary": entries}):
        native = client.post("/v1/translate", json=body)
        assert native.status_code == 200, native.text
        outputs = [t[0]["text"] for t in native.json()["translations"]]
        assert term_use(glossary, texts, outputs)["term_use"] in (100.0, None)
    upload = client.post("/translate_file", data={"source": "src", "target": "tgt", "glossary_id": kept["glossary_id"]},
                         files={"file": ("notes.txt", io.BytesIO(("\n\n".join(texts) + "\n").encode()), "text/plain")})
    assert upload.status_code == 200, upload.text
    document = client.get("/download_file/" + upload.json()["translatedFileUrl"].rsplit("/", 1)[1]).text
    outputs = [line for line in document.split("\n") if line.strip()]
    assert term_use(glossary, texts, outputs)["term_use"] in (100.0, None)


def test_a_text_without_terms_translates_as_without_a_glossary(client):
    texts, entries = texts_and_entries(2)
    kept = keep(client, [[source, target] for source, target in entries if not any(source in t for t in texts)]
                or [["zzz", "ba"]])
    plain = client.post("/translate", json={"q": texts, "source": "src", "target": "tgt"}).json()
    with_glossary = client.post("/translate", json={"q": texts, "source": "src", "target": "tgt",
                                                    "glossary_id": kept["glossary_id"]}).json()
    assert with_glossary == plain


def test_list_get_delete_and_unknown_ids(client):
    kept = keep(client, [["ba", "de"]], name="one")
    listed = client.get("/v1/glossaries").json()["glossaries"]
    assert any(g["glossary_id"] == kept["glossary_id"] and "entries" not in g for g in listed)
    one = client.get(f"/v1/glossaries/{kept['glossary_id']}").json()
    assert one["entries"] == [["ba", "de"]] and one["name"] == "one"
    assert client.delete(f"/v1/glossaries/{kept['glossary_id']}").status_code == 204
    for answer in (client.get(f"/v1/glossaries/{kept['glossary_id']}"),
                   client.delete(f"/v1/glossaries/{kept['glossary_id']}"),
                   client.post("/translate", json={"q": "ba", "source": "src", "target": "tgt",
                                                   "glossary_id": kept["glossary_id"]}),
                   client.post("/v1/translate", json={"text": "ba", "glossary_id": "../../etc/passwd"})):
        assert answer.status_code == 404 and "no glossary with this glossary_id" in answer.json()["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"name": "x", "source": "de", "target": "tgt", "entries": [["a", "b"]]}, 400, "this server translates src"),
    ({"name": "", "source": "src", "target": "tgt", "entries": [["a", "b"]]}, 400, "'name'"),
    ({"name": "x", "source": "src", "target": "tgt", "entries": [["a"]]}, 400, "entry 1 must be two texts"),
    ({"name": "x", "source": "src", "target": "tgt", "entries": [["a", "b"], ["A", "c"]]}, 400, "given twice"),
    ({"name": "x", "source": "src", "target": "tgt", "entries": "a=b"}, 400, "must be a list"),
    ([1, 2], 400, "JSON object"),
    ({"name": "\ud800", "source": "src", "target": "tgt", "entries": [["a", "b"]]}, 400, "lone surrogate"),
    ({"name": "x", "source": "src", "target": "tgt", "entries": [["\ud800", "b"]]}, 400, "lone surrogate"),
])
def test_bad_glossaries_are_refused_with_a_reason(client, body, status, message):
    # As JSON text with escapes: a lone surrogate is valid JSON ("\\ud800") though not text a client can encode.
    answer = client.post("/v1/glossaries", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert client.get("/v1/glossaries").status_code == 200  # nothing unlistable was kept


def test_bad_inline_glossaries_and_both_at_once(client):
    assert client.post("/v1/translate", json={"text": "ba", "glossary": [["ba", ""]]}).status_code == 400
    both = client.post("/v1/translate", json={"text": "ba", "glossary": [["ba", "de"]], "glossary_id": "x"})
    assert both.status_code == 400 and "not both" in both.json()["error"]
    sampled = client.post("/v1/translate", json={"text": "ba", "glossary": [["ba", "de"]], "temperature": 1.0})
    assert sampled.status_code == 400 and "beam search" in sampled.json()["error"]


def test_libretranslate_routes_refuse_entries_they_would_ignore(client):
    """/translate and /translate_file take glossary_id only: entries sent there must not be dropped silently."""
    answer = client.post("/translate", json={"q": "ba", "source": "src", "target": "tgt", "glossary": [["ba", "de"]]})
    assert answer.status_code == 400 and "glossary_id" in answer.json()["error"], answer.text
    upload = client.post("/translate_file", data={"source": "src", "target": "tgt", "glossary": "ba\tde"},
                         files={"file": ("a.txt", io.BytesIO(b"ba"), "text/plain")})
    assert upload.status_code == 400 and "/v1/translate" in upload.json()["error"], upload.text


def test_a_term_the_model_cannot_write_is_a_400_naming_it(client):
    kept = keep(client, [["ba", "ba QQ"]], name="unwritable")
    for answer in (client.post("/translate", json={"q": "ba de", "source": "src", "target": "tgt",
                                                   "glossary_id": kept["glossary_id"]}),
                   client.post("/v1/translate", json={"text": "ba de", "glossary": [["ba", "ba QQ"]]})):
        assert answer.status_code == 400 and "'ba QQ'" in answer.json()["error"], answer.text


def test_the_store_is_bounded(translator):
    store = GlossaryStore(max_glossaries=2, max_entries=3)
    store.add("a", "src", "tgt", Glossary.from_entries([["a", "b"]]))
    with pytest.raises(Exception, match="at most 3 glossary entries"):
        store.add("b", "src", "tgt", Glossary.from_entries([["c", "d"], ["e", "f"], ["g", "h"]]))
    store.add("b", "src", "tgt", Glossary.from_entries([["c", "d"]]))
    with pytest.raises(Exception, match="at most 2 glossaries"):
        store.add("c", "src", "tgt", Glossary.from_entries([["e", "f"]]))


def test_glossaries_are_behind_the_api_key(translator):
    with live_app(create_app(translator, api_keys={"k1"}, max_wait_ms=1)) as c:
        body = {"name": "x", "source": "src", "target": "tgt", "entries": [["ba", "de"]]}
        assert c.post("/v1/glossaries", json=body).status_code == 403
        kept = c.post("/v1/glossaries", json={**body, "api_key": "k1"}).json()
        assert c.get("/v1/glossaries").status_code == 403
        assert c.get(f"/v1/glossaries/{kept['glossary_id']}").status_code == 403
        assert c.delete(f"/v1/glossaries/{kept['glossary_id']}").status_code == 403
        assert c.get("/v1/glossaries", params={"api_key": "k1"}).status_code == 200
        assert c.delete(f"/v1/glossaries/{kept['glossary_id']}", params={"api_key": "k1"}).status_code == 204
