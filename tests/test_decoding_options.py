"""Decoding options of issue 27 (logits.py, ensemble.py, search.sample_search): property tests on tiny
random models, and through the Translator and the command line on a 2-step run."""

import threading

import pytest
import torch
from conftest import run_cli, tiny_config, tiny_model
from test_decoding_input import main_error
from test_search import peaked_model, sources

from transformer_mt import Translator, train
from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_mt.decoding.ensemble import Ensemble
from transformer_mt.decoding.logits import RepetitionControl, Sampler, block_repeated_ngrams, search_options
from transformer_mt.decoding.search import beam_search, greedy_search, length_limits, sample_search
from transformer_mt.errors import TransformerMTError

LIMITS = {"max_length_a": 1.0, "max_length_b": 5}


def sampler(seed=0, **options):
    return Sampler(generator=torch.Generator().manual_seed(seed), **options)


def as_pairs(hyps):
    return [[(h.tokens, h.score, h.log_prob) for h in sentence] for sentence in hyps]


def repeated_ngrams(tokens, n):
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_with_top_k_one_or_temperature_zero_is_greedy_search(seed):
    model, src = peaked_model(seed), sources(seed)
    greedy = greedy_search(model, src, **LIMITS)
    scored = beam_search(model, src, beam_size=1, **LIMITS)
    for options in ({"top_k": 1}, {"temperature": 0.0}, {"top_k": 1, "top_p": 0.5, "temperature": 3.0}):
        samples = sample_search(model, src, sampler(seed, **options), num_samples=2, **LIMITS)
        assert [[h.tokens for h in s] for s in samples] == [[g, g] for g in greedy], options
        for sentence, best in zip(samples, scored):
            assert sentence[0].score == pytest.approx(best[0].score, abs=1e-5)


def test_temperature_going_to_zero_approaches_greedy_search():
    model, src = peaked_model(2), sources(2, batch=8)
    greedy = greedy_search(model, src, **LIMITS)

    def agreement(temperature):
        samples = sample_search(model, src, sampler(3, temperature=temperature), num_samples=4, **LIMITS)
        return sum(h.tokens == g for s, g in zip(samples, greedy) for h in s) / (4 * len(greedy))

    assert agreement(1e-3) == 1.0
    assert agreement(2.0) < agreement(0.3) <= 1.0


def test_the_same_seed_gives_the_same_samples_and_another_seed_other_ones():
    model, src = peaked_model(0), sources(0)
    options = {"temperature": 1.5, "top_p": 0.95}
    first = sample_search(model, src, sampler(7, **options), num_samples=3, **LIMITS)
    assert as_pairs(first) == as_pairs(sample_search(model, src, sampler(7, **options), num_samples=3, **LIMITS))
    other = sample_search(model, src, sampler(8, **options), num_samples=3, **LIMITS)
    assert as_pairs(first) != as_pairs(other)
    for sentence in first:  # samples best first, each scored
        assert [h.score for h in sentence] == sorted((h.score for h in sentence), reverse=True)


def test_top_k_and_top_p_only_draw_among_the_kept_tokens():
    log_probs = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]] * 2000), dim=-1)
    assert set(sampler(0, top_k=2).choose(log_probs).tolist()) == {0, 1}
    probs = log_probs[0].exp()  # 0.64, 0.23, 0.09, ...: top_p 0.8 keeps the first two (0.64 < 0.8 <= 0.87)
    assert probs[0] < 0.8 <= probs[:2].sum()
    assert set(sampler(0, top_p=0.8).choose(log_probs).tolist()) == {0, 1}
    assert set(sampler(0, top_p=0.5).choose(log_probs).tolist()) == {0}  # the most probable always stays


def test_an_ensemble_of_one_model_is_that_model_bit_for_bit():
    model, src = peaked_model(1), sources(1)
    ensemble = Ensemble([model])
    assert greedy_search(ensemble, src, **LIMITS) == greedy_search(model, src, **LIMITS)
    for early_exit in (False, True):
        assert as_pairs(beam_search(ensemble, src, beam_size=4, nbest=4, early_exit=early_exit, **LIMITS)) == \
            as_pairs(beam_search(model, src, beam_size=4, nbest=4, early_exit=early_exit, **LIMITS))


def test_an_ensemble_of_a_model_with_itself_translates_as_the_model():
    model, src = peaked_model(0), sources(0)
    ensemble = Ensemble([model, model])
    assert greedy_search(ensemble, src, **LIMITS) == greedy_search(model, src, **LIMITS)
    alone = beam_search(model, src, beam_size=3, nbest=3, **LIMITS)
    together = beam_search(ensemble, src, beam_size=3, nbest=3, **LIMITS)
    assert [[h.tokens for h in s] for s in together] == [[h.tokens for h in s] for s in alone]
    # uncached decoding of the ensemble (no caches at all) agrees with its cached decoding
    uncached = beam_search(ensemble, src, beam_size=3, nbest=3, incremental=False, **LIMITS)
    assert [[h.tokens for h in s] for s in uncached] == [[h.tokens for h in s] for s in together]


def sequence_log_prob(model, src_row, tokens, ended):
    """Teacher-forced log-probability of ``tokens`` (and the end token when ``ended``) given one source."""
    target = tokens + [EOS_ID] if ended else tokens
    with torch.no_grad():
        logits = model(src_row[src_row != PAD_ID].unsqueeze(0), torch.tensor([[BOS_ID] + target[:-1]]))[0].float()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    return float(torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(target).unsqueeze(1)).sum())


def test_an_ensemble_scores_a_translation_with_the_mean_of_its_members_log_probabilities():
    members = [tiny_model(vocab_size=12, seed=seed, share=False) for seed in (0, 1, 2)]
    src = sources(4, batch=4)
    limits = length_limits(src, PAD_ID, 1.0, 5).tolist()
    hyps = beam_search(Ensemble(members), src, beam_size=3, nbest=3, **LIMITS)
    checked = 0
    for row, sentence in enumerate(hyps):
        for hyp in sentence:
            ended = len(hyp.tokens) < limits[row]
            mean = sum(sequence_log_prob(m, src[row], hyp.tokens, ended) for m in members) / len(members)
            assert hyp.log_prob == pytest.approx(mean, abs=1e-4)
            checked += len(hyp.tokens) > 0
    assert checked >= 6


def test_a_prefix_starts_every_hypothesis_and_an_empty_prefix_changes_nothing():
    model, src = peaked_model(0), sources(0)
    plain = beam_search(model, src, beam_size=4, nbest=4, **LIMITS)
    empty = torch.full((src.size(0), 3), PAD_ID)
    assert as_pairs(beam_search(model, src, beam_size=4, nbest=4, prefix=empty, **LIMITS)) == as_pairs(plain)
    assert as_pairs(beam_search(model, src, beam_size=4, nbest=4, prefix=empty[:, :0], **LIMITS)) == as_pairs(plain)
    # Prefixes of different lengths in one batch (and none for the first sentence).
    prefixes = [[], [5], [6, 7], [8, 8, 8], [9, 4, 5, 6, 7, 8, 9, 10, 11, 4, 5, 6], [7]]
    prefix = torch.full((len(prefixes), max(map(len, prefixes))), PAD_ID)
    for row, tokens in enumerate(prefixes):
        prefix[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    forced = beam_search(model, src, beam_size=4, nbest=4, prefix=prefix, **LIMITS)
    assert as_pairs(forced[:1]) == as_pairs(plain[:1])
    for tokens, hyps in zip(prefixes, forced):
        assert hyps and all(h.tokens[:len(tokens)] == tokens for h in hyps)
    sampled = sample_search(model, src, sampler(1, temperature=2.0), num_samples=3, prefix=prefix, **LIMITS)
    for tokens, hyps in zip(prefixes, sampled):
        assert len(hyps) == 3 and all(h.tokens[:len(tokens)] == tokens for h in hyps)
    # With a prefix the beams continue from it: the same as decoding one sentence with that prefix alone.
    for row in range(1, src.size(0)):
        alone = beam_search(model, src[row:row + 1], beam_size=4, nbest=4, prefix=prefix[row:row + 1], **LIMITS)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in forced[row]]


def test_a_prefix_that_repeats_itself_is_still_forced_under_repetition_control():
    """The user's prefix wins over n-gram blocking: "8 8" under no-repeat-1 is taken, then blocking goes on."""
    model, src = peaked_model(0), sources(0)[:2]
    prefix = torch.tensor([[8, 8], [6, PAD_ID]])
    control = RepetitionControl(no_repeat_ngram_size=1, repetition_penalty=1.5)
    for hyps in (beam_search(model, src, beam_size=2, nbest=2, prefix=prefix, repetition=control, **LIMITS),
                 sample_search(model, src, sampler(0), num_samples=2, prefix=prefix, repetition=control, **LIMITS)):
        assert [len(h) for h in hyps] == [2, 2]
        for tokens, sentence in zip(([8, 8], [6]), hyps):
            for h in sentence:
                assert h.tokens[:len(tokens)] == tokens
                assert not repeated_ngrams(h.tokens[len(tokens) - 1:], 1)  # after the prefix: no repeats


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_output_never_repeats_an_ngram(n):
    model = peaked_model(3)
    with torch.no_grad():  # a model that loves repeating: a few tokens, the end token unlikely
        model.generator.weight[3].mul_(0.1)
    src = sources(3, length=7)
    limits = {"max_length_a": 2.0, "max_length_b": 8}
    plain = beam_search(model, src, beam_size=3, nbest=3, **limits)
    assert any(repeated_ngrams(h.tokens, n) for s in plain for h in s)  # the test would catch a repeat
    control = RepetitionControl(no_repeat_ngram_size=n)
    for hyps in (beam_search(model, src, beam_size=3, nbest=3, repetition=control, **limits),
                 sample_search(model, src, sampler(0, temperature=1.5), num_samples=3, repetition=control, **limits)):
        assert all(not repeated_ngrams(h.tokens, n) for s in hyps for h in s)


def test_block_repeated_ngrams_bans_exactly_the_tokens_that_end_a_seen_ngram():
    tokens = torch.tensor([[4, 5, 6, 4, 5], [4, 5, 6, 7, 8]])
    blocked = block_repeated_ngrams(torch.zeros(2, 10), tokens, 3)
    assert torch.isinf(blocked[0]).nonzero().view(-1).tolist() == [6]  # "4 5" was followed by 6
    assert not torch.isinf(blocked[1]).any()
    assert torch.isinf(block_repeated_ngrams(torch.zeros(2, 10), tokens, 1)[1]).nonzero().view(-1).tolist() == \
        [4, 5, 6, 7, 8]


def test_a_repetition_penalty_lowers_repeated_tokens_and_one_is_off():
    log_probs = torch.log_softmax(torch.randn(2, 10, generator=torch.Generator().manual_seed(0)), dim=-1)
    tokens = torch.tensor([[4, 5], [6, 6]])
    penalised = RepetitionControl(repetition_penalty=2.0)(log_probs, tokens)
    assert torch.equal(penalised[0, [4, 5]], log_probs[0, [4, 5]] * 2) and torch.equal(penalised[1, 6], log_probs[1, 6] * 2)
    untouched = torch.ones_like(log_probs, dtype=torch.bool)
    untouched[0, [4, 5]] = untouched[1, 6] = False
    assert torch.equal(penalised[untouched], log_probs[untouched])
    assert not RepetitionControl(repetition_penalty=1.0).enabled and not RepetitionControl().enabled
    model, src = peaked_model(3), sources(3)
    repeats = [sum(len(h.tokens) - len(set(h.tokens)) for s in hyps for h in s) for hyps in (
        beam_search(model, src, beam_size=3, **LIMITS),
        beam_search(model, src, beam_size=3, repetition=RepetitionControl(repetition_penalty=3.0), **LIMITS))]
    assert repeats[1] < repeats[0]


@pytest.mark.parametrize("options, fragment", [
    ({"top_p": 0.0}, "top_p (--top-p)"), ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_k": -1}, "top_k (--top-k)"), ({"top_k": 2.5}, "top_k"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"), ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"seed": 3}, "seed (--seed) seeds sampling"),
    # Values float32 makes 0 or infinity: the sampler would divide by them and draw from NaN.
    ({"temperature": 1e-300}, "temperature"), ({"temperature": 1e300}, "temperature"),
    ({"temperature": float("inf")}, "temperature"), ({"top_p": 1e-300}, "top_p"),
    ({"repetition_penalty": 1e-300}, "repetition_penalty"), ({"repetition_penalty": 1e300}, "repetition_penalty")])
def test_bad_option_values_are_refused_naming_the_option(options, fragment):
    with pytest.raises(TransformerMTError, match=fr"^{fragment.replace('(', '[(]').replace(')', '[)]')}"):
        search_options(**options)


@pytest.mark.parametrize("options", [{"temperature": 1e-30}, {"temperature": 1e30}, {"top_p": 1e-30},
                                     {"temperature": 1e-30, "top_p": 1e-30, "repetition_penalty": 1e30},
                                     {"temperature": 1e30, "repetition_penalty": 1e-30}])
def test_sampling_at_the_bounds_of_the_options_draws_real_tokens(options):
    model, src = peaked_model(4), sources(4)
    search = search_options(**options, seed=1)
    samples = sample_search(model, src, search.sampler(torch.device("cpu")), num_samples=3,
                            repetition=search.repetition, **LIMITS)
    for sentence in samples:
        for hyp in sentence:
            assert all(0 <= token < model.generator.out_features and token not in (PAD_ID, BOS_ID) for token in hyp.tokens)
            assert hyp.score == hyp.score  # not NaN
    if options.get("temperature") == 1e-30 and "repetition_penalty" not in options:
        assert [[h.tokens for h in s] for s in samples] == [[g] * 3 for g in greedy_search(model, src, **LIMITS)]


def test_all_options_off_decode_as_before():
    options = search_options()
    assert not options.sampling and options.repetition is None
    assert search_options(no_repeat_ngram_size=0, repetition_penalty=1.0).repetition is None


# Through the Translator and the command line, on the 2-step run of conftest.small_run.

SENTENCES = ["ba de gi ko", "", "mu pa ba ke", "de de gi"]


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2])


@pytest.fixture(scope="module")
def other_vocabulary_run(small_run):
    """A 1-step run of the same data with another vocabulary size: its tokenizer differs from small_run's."""
    tmp, data, _ = small_run
    config = tiny_config(data, max_steps=1, validate_every=1)
    config.tokenizer.vocab_size = 30
    train(config, tmp / "other_vocabulary", show_progress=False)
    return tmp / "other_vocabulary"


def test_translator_with_every_new_option_off_or_empty_translates_as_today(translator):
    for beam in (1, 3):
        today = translator.translate(SENTENCES, beam_size=beam, nbest=min(beam, 2), return_scores=True)
        assert translator.translate(SENTENCES, beam_size=beam, nbest=min(beam, 2), return_scores=True,
                                    no_repeat_ngram_size=0, repetition_penalty=1.0, prefix="") == today
        assert translator.translate(SENTENCES, beam_size=beam, nbest=min(beam, 2), return_scores=True,
                                    prefix=[""] * len(SENTENCES)) == today


def test_translator_prefixes_per_sentence_and_per_text(translator):
    prefixes = ["ko ko", "ba", "", "pa mu de"]
    for beam in (1, 3):
        out = translator.translate(SENTENCES, beam_size=beam, prefix=prefixes)
        assert out[1] == ""  # an empty input stays empty
        assert out[0].startswith("ko ko") and out[3].startswith("pa mu de")
        assert out[2] == translator.translate([SENTENCES[2]], beam_size=beam)[0]
    [text] = translator.translate_text(["ba de. gi ko."], prefix="mu mu")
    assert text.startswith("mu mu")
    with pytest.raises(TransformerMTError, match="2 prefixes for 4 sentences"):
        translator.translate(SENTENCES, prefix=["a", "b"])


def test_translator_samples_reproducibly_with_a_seed(translator):
    first = translator.translate(SENTENCES, top_k=0, temperature=1.3, seed=5, nbest=3, return_scores=True)
    assert first == translator.translate(SENTENCES, top_k=0, temperature=1.3, seed=5, nbest=3, return_scores=True)
    assert all(len(samples) == 3 for i, samples in enumerate(first) if SENTENCES[i])
    assert translator.translate(SENTENCES, top_k=1) == translator.translate(SENTENCES, beam_size=1)
    with pytest.raises(TransformerMTError, match="leave out the beam size"):
        translator.translate(SENTENCES, top_p=0.9, beam_size=3)


def test_an_ensemble_of_a_run_with_itself_translates_as_the_run(translator, small_run):
    ensemble = Translator.from_runs([small_run[2], small_run[2]])
    assert isinstance(ensemble.model, Ensemble) and not ensemble.aligns
    for beam in (1, 3):
        assert ensemble.translate(SENTENCES, beam_size=beam) == translator.translate(SENTENCES, beam_size=beam)
    assert Translator.from_runs([small_run[2]]).translate(SENTENCES, return_scores=True) == \
        translator.translate(SENTENCES, return_scores=True)
    with pytest.raises(TransformerMTError, match="give one model"):
        ensemble.translate(SENTENCES, return_alignment=True)


def test_cli_refuses_bad_values_and_foreign_ensembles_with_one_error_line(small_run, other_vocabulary_run, capsys,
                                                                          tmp_path):
    run = small_run[2]
    assert "--top-p" in main_error(capsys, "translate", "--model", run, "--top-p", "1.5", "ba de")
    assert "--temperature" in main_error(capsys, "translate", "--model", run, "--temperature", "-1", "ba")
    # 0 or infinity in float32: once a traceback from the sampler, in translate and back-translate alike.
    for option, value in (("--temperature", "1e-300"), ("--temperature", "1e300"), ("--top-p", "1e-300")):
        assert option in main_error(capsys, "translate", "--model", run, option, value, "ba")
        (tmp_path / "mono.txt").write_text("ba de\n", encoding="utf-8")
        assert option in main_error(capsys, "back-translate", "--model", run, "--input", tmp_path / "mono.txt",
                                    "--output-prefix", tmp_path / "bt", option, value)
    assert "--no-repeat-ngram-size" in main_error(capsys, "translate", "--model", run, "--no-repeat-ngram-size",
                                                  "-2", "ba")
    line = main_error(capsys, "translate", "--model", run, "--engine", "ctranslate2", "--top-k", "3", "ba")
    assert "--top-k: the CTranslate2 engine" in line and "--engine torch" in line  # before any export
    line = main_error(capsys, "translate", "--model", run, "--model", other_vocabulary_run, "ba de")
    assert "target vocabulary" in line and str(other_vocabulary_run) in line
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("ba\n", encoding="utf-8")
    assert "has 1 lines but the input has 2" in main_error(capsys, "translate", "--model", run, "--prefix-file",
                                                           prefixes, "ba de", "gi")
    # Absurd sizes (a typo) are one line, not an attempt to allocate terabytes or decode for hours.
    assert "at most 256" in main_error(capsys, "translate", "--model", run, "--beam-size", "999999999", "ba")
    assert "at most 256" in main_error(capsys, "translate", "--model", run, "--top-k", "3", "--nbest", "999999999",
                                       "ba")
    assert "at most 1024 are forced" in main_error(capsys, "translate", "--model", run, "--prefix",
                                                   " ".join(["ba"] * 2000), "ba")


def test_cli_samples_from_an_ensemble_with_a_prefix(small_run):
    run = small_run[2]
    args = ["translate", "--model", run, "--model", run, "--prefix", "ko ko", "--top-k", "3", "--seed", "1",
            "--nbest", "2", "--no-repeat-ngram-size", "3", "ba de gi", "mu pa"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(sample.startswith("ko ko") for line in lines for sample in line.split("\t"))
    assert all(len(line.split("\t")) == 2 for line in lines)
    assert "Traceback" not in result.stderr


MORE_SENTENCES = ["ba de gi ko mu", "de", "mu pa ba ke gi de", "de de gi", "ko ko mu pa", "gi ba", "pa pa de ke",
                  "ke mu", "ba ba ba de", "gi ko de mu pa ba", "", "mu"]


def test_batches_decoded_side_by_side_translate_as_one_after_another(translator, monkeypatch):
    # With two threads, translate decodes two batches at once, one thread each (run_batches); the
    # translations and scores must be those of one batch after another, and seeded samples too (those
    # batches stay in order, in the calling thread).
    from transformer_mt.decoding import translator as translator_module
    threads_seen = []
    run_batches = translator_module.run_batches

    def recording_run_batches(decode_batch, *args, **kwargs):
        def recorded(rows):
            threads_seen.append(threading.current_thread().name)
            decode_batch(rows)
        run_batches(recorded, *args, **kwargs)

    monkeypatch.setattr(translator_module, "run_batches", recording_run_batches)
    calls = [dict(beam_size=1), dict(beam_size=3, nbest=2, return_scores=True), dict(beam_size=2, prefix="ko"),
             dict(top_k=3, seed=4, nbest=2, return_scores=True)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        side_by_side, workers = [], []
        for options in calls:
            threads_seen.clear()
            side_by_side.append(translator.translate(MORE_SENTENCES, batch_size=2, **options))
            workers.append({name.startswith("transformer-mt-decode") for name in threads_seen})
            assert torch.get_num_threads() == 2
        monkeypatch.setattr(translator_module, "PARALLEL_BATCHES", False)
        # One after another with the threads each batch had (side by side one each; sampled batches stay in
        # the calling thread with both): MKL may round a small product differently on another number of
        # threads, which is not what this test is about.
        one_after_another = []
        for options, used in zip(calls, workers):
            torch.set_num_threads(1 if used == {True} else 2)
            one_after_another.append(translator.translate(MORE_SENTENCES, batch_size=2, **options))
    finally:
        torch.set_num_threads(before)
    assert side_by_side == one_after_another
    assert workers == [{True}, {True}, {True}, {False}]


def test_run_batches_passes_a_batchs_error_on_and_gives_the_threads_back():
    from transformer_mt.decoding.translator import run_batches
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    done = []

    def decode(rows):
        if rows == [2]:
            raise ValueError("batch 2 failed")
        done.append(rows)

    try:
        with pytest.raises(ValueError, match="batch 2 failed"):
            run_batches(decode, [[0], [1], [2], [3]], torch.device("cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert [0] in done
