"""The results-row writer used by scripts/reproduce.py."""

import json

from transformer_mt.results import append_results_row, make_results_row, markdown_row


def test_rows_are_appended_as_json_lines_with_every_field(tmp_path):
    scores = {"bleu": 40.1234, "chrf": 61.987, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2"}
    path = tmp_path / "results" / "results.jsonl"
    for bleu in (40.1234, 12.0):
        row = make_results_row(name="multi30k_de_en", command="python scripts/reproduce.py c.yaml",
                               config_path="c.yaml", scores={**scores, "bleu": bleu}, checkpoint="average",
                               beam_size=5, length_penalty=1.0, num_parameters=7_580_000, train_seconds=3599.0,
                               steps=2000, machine="test machine")
        append_results_row(path, row)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["bleu"] for r in rows] == [40.12, 12.0]
    first = rows[0]
    assert first["chrf"] == 61.99 and first["signature"] == scores["signature"]
    assert first["train_minutes"] == 60.0 and first["parameters"] == 7_580_000 and first["machine"] == "test machine"
    assert markdown_row(first).startswith("| multi30k_de_en | 40.12 | 61.99 | 60.0 min, 2000 updates |")
