"""The ``transformer-mt`` command: a thin layer over the Python API.

    transformer-mt train --config configs/demo.yaml --output-dir runs/demo
    transformer-mt translate --model runs/demo "a sentence" "another one"
    transformer-mt evaluate --model runs/demo --split test
    transformer-mt evaluate --hyp hyp.txt --ref ref.txt --json
    transformer-mt average --model runs/demo --last 5
    transformer-mt serve --model runs/demo --port 5000
    transformer-mt export --model runs/demo --output runs/demo-ct2
    transformer-mt plot --model runs/demo --attention "A dog sees the cat."
    transformer-mt upgrade-checkpoint --trust runs/old_run
    transformer-mt back-translate --model runs/en_de --input mono.en --output-prefix data/news.bt
    transformer-mt distill --teacher runs/demo --config student.yaml --output-dir runs/student
    transformer-mt shortlist --model runs/student

Errors caused by input (config, files, checkpoints) print one line starting
with "error:" and exit with status 2; Ctrl-C during training saves a
checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from .config import parse_number, parse_whole_number
from .errors import TransformerMTError


def _add_decoding_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam-size", type=_whole_number, default=None, metavar="N",
                        help="beam size; 1 = greedy search (default: decoding.beam_size of the run's config)")
    parser.add_argument("--length-penalty", type=_number, default=None, metavar="A",
                        help="length penalty alpha (default: decoding.length_penalty of the run's config)")
    parser.add_argument("--batch-size", type=_whole_number, default=None, metavar="N",
                        help="sentences decoded together (default: decoding.batch_size)")
    parser.add_argument("--early-exit", action=argparse.BooleanOptionalAction, default=None,
                        help="end a sentence's beam search when its best candidate ends (faster, may cost "
                             "BLEU; default: decoding.early_exit of the run's config)")
    parser.add_argument("--checkpoint", default="best",
                        help="best, last, average, or a checkpoint file path (default: best)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="numeric precision for decoding (default: fp32)")
    parser.add_argument("--quantize", action="store_true",
                        help="dynamic int8 quantization of linear layers (CPU only; faster, may cost a little BLEU)")
    parser.add_argument("--engine", default="torch", choices=("torch", "ctranslate2"),
                        help="torch (default), or ctranslate2: decode with CTranslate2 (the [export] extra); --model "
                             "is then a directory written by 'transformer-mt export', or a run directory, exported "
                             "on the fly to a temporary directory")
    parser.add_argument("--shortlist", action="store_true",
                        help="compute only a lexical shortlist's rows of the output layer (faster, most of all for "
                             "models with few decoder layers): each batch's output vocabulary is the union of the "
                             "run's shortlist.npz entries for its source pieces, the most frequent target pieces "
                             "and the special tokens; build the file first with: transformer-mt shortlist --model DIR")
    parser.add_argument("--shortlist-top-k", type=_whole_number, default=None, metavar="K",
                        help="with --shortlist: target pieces per source piece (default: the value the shortlist was "
                             "built with)")
    parser.add_argument("--shortlist-frequent", type=_whole_number, default=None, metavar="N",
                        help="with --shortlist: the N most frequent target pieces always in it (default: the value "
                             "the shortlist was built with)")


def _add_search_options(parser: argparse.ArgumentParser, prefixes: bool = True, glossary: bool = True) -> None:
    """Sampling, repetition control, (translate, translate-file, evaluate) a glossary and (translate, evaluate)
    target prefixes."""
    group = parser.add_argument_group(
        "decoding options", "Sampling is on when --top-k, --top-p or --temperature is given: each token is drawn "
                            "from the model's distribution instead of searched with a beam (back-translation, "
                            "diverse n-best)" + ("; translate --nbest K then gives K samples per sentence." if prefixes
                                                  else "."))
    group.add_argument("--top-k", type=_whole_number, default=None, metavar="K",
                       help="sample among the K most probable tokens (0 = all, 1 = greedy)")
    group.add_argument("--top-p", type=_number, default=None, metavar="P",
                       help="sample among the fewest most probable tokens whose probability adds up to P, from 1e-30 to 1 "
                            "(nucleus sampling; 1 = all)")
    group.add_argument("--temperature", type=_number, default=None, metavar="T",
                       help="sample from the distribution at temperature T: 0 (greedy) or 1e-30 to 1e30 (1 = the model's, "
                            "lower = closer to greedy)")
    group.add_argument("--seed", type=_whole_number, default=None, metavar="N",
                       help="seed of the sampling: the same seed, input and --batch-size give the same samples "
                            "(default: a random seed)")
    group.add_argument("--no-repeat-ngram-size", type=_whole_number, default=None, metavar="N",
                       help="no n-gram of N tokens appears twice in a translation (0 = off; default: "
                            "decoding.no_repeat_ngram_size of the run's config, 0)")
    group.add_argument("--repetition-penalty", type=_number, default=None, metavar="P",
                       help="a token already in the translation has its log-probability multiplied by P, 1e-30 to 1e30 (1 = off, "
                            "above 1 discourages repeats; default: decoding.repetition_penalty of the run's config, 1)")
    if glossary:
        group.add_argument("--glossary", metavar="FILE",
                           help="your terms: a TSV (or CSV) file of 'source term<TAB>target term' lines; in each "
                                "sentence that holds a source term (whole words, any case), beam search keeps the "
                                "target term in the translation")
    if not prefixes:
        return
    prefix = group.add_mutually_exclusive_group()
    prefix.add_argument("--prefix", metavar="TEXT",
                        help="a target prefix: every translation (of each line) starts with TEXT, and beam search "
                             "continues from it")
    prefix.add_argument("--prefix-file", metavar="FILE",
                        help="one target prefix per input line (an empty line for none); as many lines as the input")


def _add_split_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split-sentences", action=argparse.BooleanOptionalAction, default=None,
                        help="cut each line into sentences of the model's source language, translate them in one "
                             "batch and join them again; --no-split-sentences translates each line as one sentence "
                             "(default: decoding.split_sentences of the run's config, true unless set)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that make a run directory from a config (train, prepare)."""
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="run directory for checkpoints, tokenizer and logs (default: runs/<config name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run in the output directory and start again")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set training.max_steps=100 (repeatable)")


def _whole_number(text: str) -> int:
    """argparse's type for counts: the digits 0-9 (config.parse_whole_number), as --set and config files."""
    number = parse_whole_number(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (write it with the digits 0-9)")
    return number


def _number(text: str) -> float:
    """argparse's type for numbers: the digits 0-9 (config.parse_number); ranges are checked where used."""
    number = parse_number(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (write it with the digits 0-9, e.g. 0.5)")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that a help text that cannot be written (standard output on a full device)
    is an error: argparse itself ignores the failed write and exits 0; and that any number written with a
    minus is a value (argparse reads only "-1" and "-.5" so, and takes "-1e-1", "-1e308" or "-inf" for an
    unknown option: "expected one argument" instead of the option's own range)."""

    NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER  # argparse's own attribute (3.10 to 3.13)

    def _print_message(self, message, file=None):
        if message:
            file = file or sys.stderr
            file.write(message)
            file.flush()


def build_parser() -> argparse.ArgumentParser:
    """The transformer-mt command line: one add_*_command function per command, in --help order."""
    parser = _Parser(
        prog="transformer-mt",
        description="Train, run and score encoder-decoder Transformer translation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    add_train_command(sub)
    add_prepare_command(sub)
    add_translate_command(sub)
    add_translate_file_command(sub)
    add_evaluate_command(sub)
    add_average_command(sub)
    add_serve_command(sub)
    add_export_command(sub)
    add_import_command(sub)
    add_plot_command(sub)
    add_upgrade_checkpoint_command(sub)
    add_back_translate_command(sub)
    add_shortlist_command(sub)
    add_distill_command(sub)
    return parser


def add_train_command(sub) -> None:
    train = sub.add_parser(
        "train", help="train a model from a YAML config",
        description="Train a model as described by a YAML config (see configs/reference.yaml for every key). "
                    "If the output directory already holds a checkpoint of the same config, training resumes "
                    "from it.")
    add_run_arguments(train)
    train.add_argument("--device", default=None,
                       help="auto, cpu, cuda or cuda:N (default: training.device of the config)")
    train.add_argument("--resume", action="store_true",
                       help="require resuming from the output directory's last checkpoint")
    train.add_argument("--shortlist", action="store_true",
                       help="when training ends, also build the run's lexical shortlist (as 'transformer-mt "
                            "shortlist' does, with its defaults)")
    train.add_argument("--nproc-per-node", type=_whole_number, default=None, metavar="N",
                       help="data-parallel training in N processes on this machine (one GPU each, or CPU "
                            "processes): torchrun --standalone started for you, after the config was checked once")
    train.epilog = ("Data-parallel on several machines: torchrun --nnodes M --nproc_per_node N -m transformer_mt "
                    "train --config FILE ... (see the manual: docs/guides/distributed.md).")


def add_prepare_command(sub) -> None:
    prepare = sub.add_parser(
        "prepare", help="train the tokenizer and encode the corpora, without training",
        description="Do what 'train' does before its first update: claim the output directory, train the "
                    "SentencePiece model(s) and encode the training and validation corpora into memory-mapped "
                    "arrays. 'train' with the same config and output directory reuses them; run this once "
                    "before a multi-GPU job so that the GPUs do not wait for the encoding.")
    add_run_arguments(prepare)


TARGET_LANGUAGE_HELP = ("for a multilingual model (a run trained on several directions, or OPUS-MT's >>xx<< tokens, "
                        "e.g. fra): the language to translate into; required where the model has several")


def add_translate_command(sub) -> None:
    translate = sub.add_parser(
        "translate", help="translate sentences with a trained model",
        description="Translate text given as arguments, read from --input, or from standard input. Each line "
                    "is cut into sentences (in the model's source language), the sentences are translated in one "
                    "batch and each line is put back together: N lines in give N lines out, an empty input line "
                    "an empty output line (--no-split-sentences: each line is one sentence). With --format html "
                    "the input (the --input file, standard input, or each argument) is one HTML document or "
                    "fragment, translated block by block with its tags, attributes and protected elements "
                    "(script, style, code, pre, translate=\"no\", class=\"notranslate\") kept.")
    translate.add_argument("sentences", nargs="*", metavar="TEXT", help="texts to translate (each one line of output)")
    translate.add_argument("--model", required=True, action="append", metavar="DIR",
                           help="run directory of a trained model; give --model several times to translate with the "
                                "ensemble of the runs (the mean of their log-probabilities at each step; they must "
                                "share their tokenizers)")
    translate.add_argument("--input", metavar="FILE", help="file to translate (text: one line of output per line)")
    translate.add_argument("--format", default="text", choices=("text", "html"),
                           help="text (default): lines of text; html: an HTML document or fragment, written back "
                                "with the same structure, inline tags (b, i, a, em, span...) around the words "
                                "aligned to the words they wrapped")
    _add_split_argument(translate)
    translate.add_argument("--paragraphs", action="store_true",
                           help="read the input (--input, standard input) as one text of hard-wrapped paragraphs, "
                                "as e-mails and plain-text books are written: a paragraph's lines are translated "
                                "as one text and its translation wrapped at the width of its longest line (the rule "
                                "is in the manual: docs/guides/documents.md); default: a corpus, one segment per line")
    translate.add_argument("--output", metavar="FILE", help="write translations here (default: standard output)")
    translate.add_argument("--target-language", metavar="LANG", help=TARGET_LANGUAGE_HELP)
    translate.add_argument("--nbest", type=_whole_number, default=1, metavar="K",
                           help="print the K best translations of each sentence (with sampling: K samples, best "
                                "first), tab-separated (default: 1)")
    translate.add_argument("--alignment", nargs="?", const="pieces", choices=("pieces", "words"), default=None,
                           help="after each translation print a tab and its hard alignment to the source: "
                                "space-separated pairs i-j, source token i aligned to target token j, counted from "
                                "0 (e.g. 'ein rotes Auto' -> 'a red car<TAB>0-0 2-1 1-2'). Each target piece is "
                                "aligned to the source piece that the cross-attention of a decoder layer, averaged "
                                "over its heads, weighs most. pieces (the default): SentencePiece pieces, one pair "
                                "per target piece; words: pieces joined into words at their ▁ marks, each word pair "
                                "once. With --nbest each translation is followed by its own alignment. Put the "
                                "option after the sentences, or name the unit: --alignment pieces \"a sentence\"")
    translate.add_argument("--alignment-layer", type=_whole_number, default=None, metavar="L",
                           help="decoder layer whose cross-attention gives --alignment (and places inline tags with "
                                "--format html), numbered from 1 (default: the penultimate layer, as fairseq's "
                                "alignment_layer)")
    _add_decoding_args(translate)
    _add_search_options(translate)


def add_translate_file_command(sub) -> None:
    document = sub.add_parser(
        "translate-file", help="translate a document (.txt, .html, .srt, .docx, .pptx, .odt, .odp, .epub) keeping its structure",
        description="Translate a document file and write the translated file, as the server's /translate_file "
                    "does: a text file's lines and paragraphs (a hard-wrapped paragraph is translated whole and "
                    "wrapped again at its width), an HTML page's markup, a subtitle file's numbers and timings "
                    "(a cue's lines are translated as one text and broken into as many lines again), a Word "
                    "document's paragraphs, tables, headers and footers, with bold, italics and links on the "
                    "words aligned to the words they had. The type comes from the file's extension.")
    document.add_argument("input", metavar="FILE", help="the document to translate")
    document.add_argument("--model", required=True, action="append", metavar="DIR",
                          help="run directory of a trained model (several: an ensemble, as for translate)")
    document.add_argument("--output", required=True, metavar="FILE",
                          help="where the translated document goes (same type as the input; replaced atomically)")
    document.add_argument("--target-language", metavar="LANG", help=TARGET_LANGUAGE_HELP)
    _add_split_argument(document)
    _add_decoding_args(document)
    _add_search_options(document, prefixes=False)


def add_evaluate_command(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="translate a test set and score it with sacreBLEU (BLEU and chrF)",
        description="Score translations with sacreBLEU BLEU and chrF and print the signatures. Either translate "
                    "with a model (--model DIR with --split test or --src FILE --ref FILE) or score existing "
                    "translations (--hyp FILE --ref FILE, no model needed).")
    evaluate.add_argument("--model", action="append", metavar="DIR",
                          help="run directory of a trained model (several times: their ensemble)")
    evaluate.add_argument("--split", choices=("test", "valid"),
                          help="use the split's files named in the run's config")
    evaluate.add_argument("--src", metavar="FILE", help="source sentences to translate")
    evaluate.add_argument("--ref", metavar="FILE", help="reference translations")
    evaluate.add_argument("--hyp", metavar="FILE", help="existing translations to score (no model needed)")
    evaluate.add_argument("--output", metavar="FILE", help="also write the model's translations to this file")
    evaluate.add_argument("--tokenize", default=None,
                          help="sacreBLEU tokenizer (default: zh for a Chinese target, ja-mecab for Japanese, else 13a)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (bleu, chrf, signature, ...)")
    _add_split_argument(evaluate)
    evaluate.add_argument("--target-language", metavar="LANG", help=TARGET_LANGUAGE_HELP)
    evaluate.add_argument("--source-language", metavar="LANG",
                          help="with --split, for a run trained on several directions into the --target-language "
                               "(de -> en and fr -> en): the source language of the direction whose files to read")
    _add_decoding_args(evaluate)
    _add_search_options(evaluate)


def add_average_command(sub) -> None:
    average = sub.add_parser(
        "average", help="average the last N step checkpoints of a run",
        description="Average the weights of the last N checkpoint_step*.pt files of a run into "
                    "checkpoint_average.pt (use it with --checkpoint average).")
    average.add_argument("--model", required=True, metavar="DIR", help="run directory")
    average.add_argument("--last", type=_whole_number, default=5, metavar="N", help="number of checkpoints (default: 5)")
    average.add_argument("--output", metavar="FILE", help="output file (default: DIR/checkpoint_average.pt)")


def add_serve_command(sub) -> None:
    serve = sub.add_parser(
        "serve", help="serve a trained model over HTTP (LibreTranslate-compatible REST API)",
        description="Serve a trained model over HTTP: LibreTranslate's API (POST /translate with format text or "
                    "html, /detect, /translate_file for .txt/.html/.srt/.docx/.pptx/.odt/.odp/.epub, GET /languages, "
                    "/frontend/settings), POST /v1/translate (beam size, n-best, scores), GET /health, "
                    "GET /v1/info, docs at /docs, a web page at /. Each text is split into sentences and joined "
                    "back. Concurrent requests are decoded together in batches. Needs the [serve] extra "
                    "(pip install 'transformer-mt[serve]'). Listens on 127.0.0.1 unless --host says otherwise.")
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="DIR", help="run directory of a trained model")
    which.add_argument("--models-dir", metavar="DIR",
                       help="serve every run directory (and CTranslate2 export) directly under DIR, each for the "
                            "language pair of its config; requests pick the pair with 'source' and 'target' (see "
                            "docs/guides/serving.md, Many models)")
    serve.add_argument("--max-loaded-models", type=_whole_number, default=4, metavar="N",
                       help="with --models-dir: models kept loaded at most; the least recently used is unloaded "
                            "(default: 4)")
    serve.add_argument("--no-pivot", dest="pivot", action="store_false",
                       help="with --models-dir: translate only the pairs a model translates directly (by default "
                            "source -> target is also translated through a language X when models for source -> X "
                            "and X -> target are there)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                           "only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=_whole_number, default=5000, help="port (default: 5000, LibreTranslate's)")
    serve.add_argument("--max-batch-sentences", type=_whole_number, default=64, metavar="N",
                       help="a batch is decoded once it holds N sentences (default: 64)")
    serve.add_argument("--max-wait-ms", type=_number, default=2.0, metavar="MS",
                       help="... or once MS milliseconds pass without a new request (at most 10 x MS; default: 2; "
                            "longer waits batch more under moderate load and delay a lone request)")
    serve.add_argument("--max-queue-sentences", type=_whole_number, default=2048, metavar="N",
                       help="sentences waiting at most; more gets 503 with Retry-After (default: 2048)")
    serve.add_argument("--max-sentences-per-request", type=_whole_number, default=256, metavar="N",
                       help="sentences in one request at most; more gets 413 (default: 256)")
    serve.add_argument("--max-chars-per-text", "--max-chars-per-sentence", type=_whole_number, default=5000,
                       metavar="N", help="characters in one text of a request at most (a text may hold many "
                                         "sentences; --max-chars-per-sentence is its old name); more gets 413 "
                                         "(default: 5000)")
    serve.add_argument("--max-chars-per-request", type=_whole_number, default=20000, metavar="N",
                       help="characters in one request at most (bounds how long it holds the decoder); more gets "
                            "413 (default: 20000)")
    serve.add_argument("--max-body-bytes", type=_whole_number, default=1_000_000, metavar="N",
                       help="request body size at most; more gets 413 (default: 1000000)")
    serve.add_argument("--max-file-bytes", type=_whole_number, default=2_000_000, metavar="N",
                       help="size of a file sent to /translate_file at most; more gets 413 (default: 2000000)")
    serve.add_argument("--max-file-chars", type=_whole_number, default=50_000, metavar="N",
                       help="characters of text in such a file at most (decoding time); more gets 413 "
                            "(default: 50000)")
    serve.add_argument("--threads", type=_whole_number, default=None, metavar="N",
                       help="CPU threads that decode a batch (default: half the cores, at least 1: the other half "
                            "serves HTTP; on 2 cores one decoding thread gave both lower latency and more "
                            "sentences/s than two, see scripts/benchmark_server.py)")
    serve.add_argument("--api-key-file", metavar="FILE",
                       help="file with one API key per line; requests (and GET /v1/info?api_key=...) must then "
                            "send one as 'api_key'")
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                       help="let web pages of ORIGIN (e.g. https://example.org, or * for any) call the API from a "
                            "browser (CORS headers, OPTIONS preflight); repeat for several; default: none")
    _add_decoding_args(serve)
    _add_split_argument(serve)


def add_export_command(sub) -> None:
    export = sub.add_parser(
        "export", help="export a trained model to CTranslate2 (a fast C++ inference engine)",
        description="Write a directory that ctranslate2.Translator loads: the model's weights in CTranslate2's "
                    "format, its SentencePiece model(s) and config. Decode with it through transformer-mt "
                    "(translate/evaluate/serve --engine ctranslate2 --model OUT) or CTranslate2's own API. Needs "
                    "the [export] extra (pip install 'transformer-mt[export]').")
    export.add_argument("--model", required=True, metavar="DIR", help="run directory of a trained model")
    export.add_argument("--output", required=True, metavar="OUT", help="new (or empty) directory to write")
    export.add_argument("--format", default="ctranslate2", choices=("ctranslate2",), help="(default: ctranslate2)")
    export.add_argument("--checkpoint", default="best", help="best, last, average or a checkpoint file (default: best)")
    export.add_argument("--quantization", default=None,
                        choices=("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                                 "bfloat16", "float32"),
                        help="weight type in the export (default: float32, as trained)")



def add_import_command(sub) -> None:
    imp = sub.add_parser(
        "import", help="import a Hugging Face MarianMT (OPUS-MT) model directory as a run directory",
        description="Read a Hugging Face model directory (config.json; model.safetensors or pytorch_model.bin; "
                    "source.spm/target.spm; vocab.json or separate vocabularies) and write a run directory that "
                    "translates, evaluates, serves, exports and fine-tunes (training.init_from) like a trained "
                    "one. The format comes from config.json's model_type: marian (OPUS-MT). Needs the [import] "
                    "extra for model.safetensors (pip install 'transformer-mt[import]').")
    imp.add_argument("hf_dir", metavar="HF_DIR", help="the model directory (e.g. a clone of Helsinki-NLP/opus-mt-de-en)")
    imp.add_argument("--output-dir", required=True, metavar="RUN_DIR", help="new (or empty) run directory to write")


def add_plot_command(sub) -> None:
    plot = sub.add_parser(
        "plot", help="draw learning curves of runs, or a model's attention (matplotlib, the [plots] extra)",
        description="Learning curves from the runs' metrics.jsonl (learning_curves.png): training and validation "
                    "loss, validation BLEU and chrF, learning rate and training speed, steps on x; several --model "
                    "overlaid. With --attention SENTENCE: translate the sentence with the run's model (greedy "
                    "search when its decoding.beam_size or --beam-size is 1, else beam search; the command says "
                    "which) and draw the encoder-decoder (cross-)attention as heatmaps, target pieces as rows and "
                    "source pieces as columns (SentencePiece pieces, ▁ marks a space before a piece; a last "
                    "row </s> is the step that ended the translation), one figure per decoder layer: "
                    "attention_layerL.png (heads averaged), attention_layerL_headH.png (--head), "
                    "self_attention_layerL*.png (--self-attention).")
    plot.add_argument("--model", required=True, action="append", metavar="DIR",
                      help="run directory (repeat to compare runs; one with --attention)")
    plot.add_argument("--output", metavar="DIR", help="folder for the pictures (default: the first run directory)")
    plot.add_argument("--format", action="append", choices=("png", "svg", "pdf"),
                      help="picture format (repeatable; default: png)")
    plot.add_argument("--attention", metavar="SENTENCE",
                      help="draw the attention of the model translating this source sentence instead of learning "
                           "curves")
    plot.add_argument("--layer", type=_whole_number, metavar="L",
                      help="with --attention: only decoder layer L, numbered from 1 (default: every layer)")
    plot.add_argument("--head", metavar="H",
                      help="with --attention: one figure for head H, numbered from 1, or 'all': one figure per "
                           "head (default: one figure of the heads' average)")
    plot.add_argument("--self-attention", action="store_true",
                      help="with --attention: also draw the decoder self-attention (rows: target pieces, columns: "
                           "the decoder's inputs, <s> and the pieces before)")
    plot.add_argument("--beam-size", type=_whole_number, metavar="N",
                      help="with --attention: beam size; 1 = greedy search (default: decoding.beam_size of the run)")
    plot.add_argument("--target-language", metavar="LANG", help="with --attention: " + TARGET_LANGUAGE_HELP)
    plot.add_argument("--checkpoint", default="best",
                      help="with --attention: best, last, average or a checkpoint file (default: best)")


def add_upgrade_checkpoint_command(sub) -> None:
    upgrade = sub.add_parser(
        "upgrade-checkpoint", help="convert checkpoints of an earlier transformer-mt to the safe format",
        description="Checkpoints are loaded without running code in them (torch.load with weights_only=True). "
                    "Those written by transformer-mt before checkpoint format 2 hold a pickled numpy object and "
                    "are refused. This command converts a run directory (all its checkpoint_*.pt files, and "
                    "marks it as a run) or a single checkpoint file once. It reads the old files with the same "
                    "weights-only loader, allowing only the numpy types of the old RNG state, so a file holding "
                    "anything else is still refused. Each original is kept as <name>.format1.")
    upgrade.add_argument("path", metavar="PATH", help="run directory or checkpoint file")
    upgrade.add_argument("--trust", action="store_true",
                         help="required to convert: you made the file(s) or trust their source")


def add_back_translate_command(sub) -> None:
    bt = sub.add_parser(
        "back-translate", help="make a synthetic parallel corpus from monolingual target-language text",
        description="Translate a monolingual file of the target language with a reverse model (trained from "
                    "the target language to the source language) and write a parallel corpus of two files: "
                    "PREFIX.<source language> holds the reverse model's translations (the synthetic sources), "
                    "PREFIX.<target language> the input lines as they were; blank lines are left out of both. Mix "
                    "it into training with data.train_corpora, e.g. {prefix: news.bt, tag: <BT>} (tagged "
                    "back-translation; see configs/reference.yaml). One sentence per line: lines are not cut "
                    "into sentences.",
        epilog="Beam search by default (the reverse model's decoding.beam_size): for small corpora such as "
               "Multi30k or the 16.5k-pair news corpus, beam or greedy back-translation trains better models than "
               "sampled back-translation (Edunov et al. 2018, 'Understanding Back-Translation at Scale'; sampling "
               "wins at millions of pairs).")
    bt.add_argument("--model", required=True, metavar="DIR", help="run directory of the reverse model")
    bt.add_argument("--input", required=True, metavar="FILE",
                    help="monolingual text in the reverse model's source language (your target language), one "
                         "sentence per line")
    bt.add_argument("--output-prefix", required=True, metavar="PREFIX",
                    help="writes PREFIX.<lang> for both languages of the reverse model (e.g. data/news.bt gives "
                         "data/news.bt.de and data/news.bt.en for an en->de reverse model)")
    bt.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    bt.add_argument("--beam-size", type=_whole_number, default=None, metavar="N",
                    help="beam size; 1 = greedy search (default: decoding.beam_size of the reverse model's config)")
    bt.add_argument("--length-penalty", type=_number, default=None, metavar="A",
                    help="length penalty alpha (default: decoding.length_penalty of the reverse model's config)")
    bt.add_argument("--batch-size", type=_whole_number, default=None, metavar="N",
                    help="sentences decoded together (default: decoding.batch_size)")
    bt.add_argument("--checkpoint", default="best",
                    help="best, last, average, or a checkpoint file path (default: best)")
    bt.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    _add_search_options(bt, prefixes=False, glossary=False)
    bt.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                    help="numeric precision for decoding (default: fp32)")


def _add_shortlist_build_args(parser: argparse.ArgumentParser) -> None:
    """The options that shape a shortlist file (left out: decoding/shortlist.py's defaults, said in the help; the
    module is not imported here, since it imports torch and the command line starts without it)."""
    parser.add_argument("--top-k", type=_whole_number, default=None, metavar="K",
                        help="target pieces per source piece that decoding takes by default, the best by Dice "
                             "co-occurrence (default: 30; the file keeps at least 100, for --shortlist-top-k)")
    parser.add_argument("--frequent", type=_whole_number, default=None, metavar="N",
                        help="the N most frequent target pieces, always in a batch's shortlist (default: 100)")
    parser.add_argument("--max-pairs", type=_whole_number, default=None, metavar="N",
                        help="count at most N sentence pairs of the training corpora, taken evenly (0: all; "
                             "default: 2,000,000)")


def add_shortlist_command(sub) -> None:
    shortlist = sub.add_parser(
        "shortlist", help="build a run's lexical shortlist (decode with --shortlist: a faster output layer)",
        description="Count which target pieces occur with which source pieces in the run's training corpora "
                    "(the Dice coefficient of their sentence co-occurrence) and write RUN/shortlist.npz: for each "
                    "source piece its best target pieces, and the target pieces by frequency. translate, "
                    "translate-file, evaluate and serve --shortlist then compute only the rows of the output "
                    "layer that a batch's source pieces call for. Reads the training files named in the run's "
                    "config from the working directory (run it where training ran), encoded with the run's "
                    "tokenizer (its cached ids when there).")
    shortlist.add_argument("--model", required=True, metavar="DIR", help="run directory of a trained model")
    _add_shortlist_build_args(shortlist)


def add_distill_command(sub) -> None:
    distill = sub.add_parser(
        "distill", help="train a small, fast student on a teacher model's translations (knowledge distillation)",
        description="Sequence-level knowledge distillation: the teacher (a trained run) translates the sources of "
                    "the student config's training corpora (beam search), the translations are kept in "
                    "OUTPUT_DIR/distill, and the student described by --config is trained on them with the "
                    "teacher's tokenizer, as 'train' would train it. Running the same command again continues an "
                    "interrupted distill: the translation at the first chunk not yet written, the training from "
                    "its last checkpoint.")
    distill.add_argument("--teacher", required=True, metavar="DIR", help="run directory of the teacher model")
    add_run_arguments(distill)
    distill.add_argument("--resume", action="store_true",
                         help="require continuing the distill in the output directory")
    distill.add_argument("--beam-size", type=_whole_number, default=5, metavar="N",
                         help="the teacher's beam (default: 5; 1 = greedy search, faster, weaker students)")
    distill.add_argument("--batch-size", type=_whole_number, default=None, metavar="N",
                         help="sentences the teacher decodes together (default: its decoding.batch_size)")
    distill.add_argument("--checkpoint", default="best",
                         help="the teacher's checkpoint: best, last, average, or a file (default: best)")
    distill.add_argument("--mix-original", action="store_true",
                         help="train on the original targets too: each training corpus twice, with the teacher's "
                              "translations and with its own, each with the corpus's weight")
    distill.add_argument("--device", default=None,
                         help="auto, cpu, cuda or cuda:N, for the teacher and the student (default: training.device "
                              "of the config)")
    distill.add_argument("--shortlist", action="store_true",
                         help="when training ends, also build the student's lexical shortlist (as 'transformer-mt "
                              "shortlist' does, with its defaults)")


def cmd_distill(args) -> int:
    from .config import load_config, parse_overrides
    from .device import configure_process
    from .training.distill import distill

    config = load_config(args.config, parse_overrides(args.set))
    output_dir = args.output_dir or str(Path("runs") / Path(args.config).stem)
    configure_process(config.training.num_threads)

    def progress(corpus: int, done: int, chunks: int, lines: int) -> None:
        print(f"  teacher translations of training corpus {corpus + 1}: chunk {done} of {chunks} ({lines:,} lines)",
              file=sys.stderr)

    print(f"distilling {args.teacher} into a student ({args.config}) in {output_dir}", file=sys.stderr)
    summary = distill(args.teacher, config, output_dir, beam_size=args.beam_size, mix_original=args.mix_original,
                      checkpoint=args.checkpoint, device=args.device, batch_size=args.batch_size, resume=args.resume,
                      overwrite=args.overwrite, progress=progress)
    if args.shortlist:
        cmd_shortlist(argparse.Namespace(model=output_dir))
    print(f"distillation finished ({summary['stop_reason']}): the student trained {summary['step']} steps on "
          f"{', '.join(summary['distilled'])}, best validation BLEU {summary['best_bleu']:.2f}. Translate with: "
          f"transformer-mt translate --model {output_dir} \"...\"", file=sys.stderr)
    return 0


def cmd_shortlist(args) -> int:
    from .decoding.shortlist import build_shortlist

    given = {option: getattr(args, option) for option in ("top_k", "frequent", "max_pairs")
             if getattr(args, option, None) is not None}
    summary = build_shortlist(args.model, **given)
    print(f"wrote {summary['path']}: {summary['stored_top_k']} target pieces per source piece from "
          f"{summary['pairs']:,} sentence pairs (decoding takes the best {summary['top_k']} and the "
          f"{summary['frequent']} most frequent). Translate with: transformer-mt translate --model {args.model} "
          f"--shortlist \"...\"", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from .config import load_config, parse_overrides
    from .device import configure_process
    from .training import distributed
    from .training.trainer import train

    try:
        config = load_config(args.config, parse_overrides(args.set))
    except TransformerMTError as exc:
        if distributed.is_worker_rank():  # every rank reads the same file: rank 0 says it once
            raise distributed.ReportedByRankZero(str(exc)) from None
        raise
    output_dir = args.output_dir or str(Path("runs") / Path(args.config).stem)
    if args.nproc_per_node is not None and not distributed.launched_by_torchrun():
        if args.nproc_per_node < 1:
            raise TransformerMTError(f"--nproc-per-node must be at least 1, not {args.nproc_per_node}")
        most = max(os.cpu_count() or 1, torch_device_count(), 2)  # 2 processes run anywhere (tests, trials)
        if args.nproc_per_node > most:
            raise TransformerMTError(f"--nproc-per-node {args.nproc_per_node} is more processes than this machine has "
                                     f"CPU cores or GPUs ({most}); give at most {most} (one per GPU, or per core)")
        if args.nproc_per_node > 1:  # the config was checked above: a mistake is one line, before any process starts
            command = ["train", "--config", args.config, "--output-dir", output_dir,
                       *(f"--set={item}" for item in args.set or ()), *(["--device", args.device] if args.device else []),
                       *(["--overwrite"] if args.overwrite else []), *(["--resume"] if args.resume else []),
                       *(["--shortlist"] if args.shortlist else [])]
            return distributed.launch_local_processes(args.nproc_per_node, command)
    configure_process(config.training.num_threads)
    # Under torchrun, join the process group (process-wide, so here at the entry point); else one process.
    context, device = distributed.setup(args.device or config.training.device)
    finished = False
    try:
        summary = train(config, output_dir, device=device, resume=args.resume, overwrite=args.overwrite,
                        distributed=context)
        finished = True
    finally:
        distributed.teardown(finished)
    if not context.is_main:
        return 0
    if args.shortlist:
        cmd_shortlist(argparse.Namespace(model=output_dir))
    print(f"training finished ({summary['stop_reason']}): {summary['step']} steps, best validation BLEU "
          f"{summary['best_bleu']:.2f}, {summary['train_seconds'] / 60:.1f} min. "
          f"Translate with: transformer-mt translate --model {output_dir}"
          f"{_target_language_hint(config)} \"...\"", file=sys.stderr)
    return 0


def _target_language_hint(config) -> str:
    """The " --target-language LANG" of the line that says how to translate a multilingual run (its choices)."""
    targets = config.data.target_languages()
    return f" --target-language {'|'.join(targets)}" if len(targets) > 1 else ""


def cmd_prepare(args) -> int:
    from .config import load_config, parse_overrides
    from .training.trainer import prepare

    config = load_config(args.config, parse_overrides(args.set))
    output_dir = args.output_dir or str(Path("runs") / Path(args.config).stem)
    summary = prepare(config, output_dir, overwrite=args.overwrite)
    print(f"prepared {output_dir}: {summary['train_pairs']} training pairs, {summary['valid_pairs']} validation "
          f"pairs, vocabulary {summary['vocab_sizes'][0]}/{summary['vocab_sizes'][1]}. Train with: transformer-mt "
          f"train --config {args.config} --output-dir {output_dir}", file=sys.stderr)
    return 0


def _load_translator(args):
    """The Translator of --model; translate and evaluate take --model several times: an ensemble."""
    from .decoding.translator import Translator

    models = args.model if isinstance(args.model, list) else [args.model]
    if hasattr(args, "top_k"):  # bad values are refused before minutes of loading
        from .decoding.logits import search_options

        search_options(**{option: getattr(args, option) for option in SEARCH_OPTIONS})
    if args.engine == "ctranslate2":
        _refuse_ctranslate2_shortlist(args)
        refused = [f"--{option.replace('_', '-')}" for option in (*SEARCH_OPTIONS, "prefix", "prefix_file")
                   if option != "no_repeat_ngram_size" and getattr(args, option, None) is not None]
        if refused:
            raise TransformerMTError(f"{', '.join(refused)}: the CTranslate2 engine decodes without "
                                     f"{'this option' if len(refused) == 1 else 'these options'} (see "
                                     f"interop/ct2_translator.py); use --engine torch")
        if len(models) > 1:
            raise TransformerMTError("an ensemble (--model given more than once) decodes with --engine torch; "
                                     "leave out --engine ctranslate2 or give one --model")
        return _load_ctranslate2(args, models[0])
    return Translator.from_runs(models, checkpoint=args.checkpoint, device=args.device,
                                precision=args.precision, quantize=args.quantize, **_shortlist_kwargs(args))


def _shortlist_kwargs(args) -> dict:
    """Translator.from_run's shortlist arguments from --shortlist, --shortlist-top-k, --shortlist-frequent."""
    if not args.shortlist:
        for option in ("shortlist_top_k", "shortlist_frequent"):
            if getattr(args, option) is not None:
                raise TransformerMTError(f"--{option.replace('_', '-')} goes with --shortlist")
        return {}
    return {"shortlist": True, "shortlist_top_k": args.shortlist_top_k,
            "shortlist_frequent": args.shortlist_frequent}


def _refuse_ctranslate2_shortlist(args) -> None:
    if getattr(args, "shortlist", False):
        raise TransformerMTError("--shortlist restricts transformer-mt's own output layer; the CTranslate2 engine "
                                 "decodes without it (its vocabulary maps are another format): leave out --shortlist "
                                 "or --engine ctranslate2")


def _remove_when_the_process_ends(path) -> None:
    """Delete ``path`` when this command ends: at exit (Ctrl-C included: KeyboardInterrupt ends in an exit), and on
    SIGTERM, which would otherwise end the process without any clean-up. The process then still ends by SIGTERM
    (after uvicorn's graceful stop, which hands the signal on to this handler), as a service manager expects."""
    import atexit
    import signal
    import threading

    from .safe_files import remove

    atexit.register(remove, path, ignore_errors=True)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous not in (signal.SIG_DFL, None):
        return  # a handler of someone else's (or no way to set one): it decides how the process ends

    def end_by_sigterm(signum, frame):
        remove(path, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, end_by_sigterm)


def _load_ctranslate2(args, model):
    """A CTranslate2Translator for --model: an export directory, or a run directory exported now."""
    import tempfile

    from .interop.ct2_translator import CTranslate2Translator
    from .interop.ctranslate2_export import EXPORT_INFO, export_ctranslate2

    model = Path(model)
    if not (model / EXPORT_INFO).is_file():
        if not model.is_dir():
            raise TransformerMTError(f"--model {model} does not exist; give an export directory or a run directory")
        # A folder of the caller's own (mode 700) in the caller's temporary folder ($TMPDIR, else /tmp), gone when
        # the command ends, however it ends.
        temporary = tempfile.mkdtemp(prefix="transformer-mt-ct2-")
        _remove_when_the_process_ends(temporary)
        export_dir = Path(temporary) / "model"
        print(f"exporting {model} (checkpoint {args.checkpoint}) to CTranslate2 in {export_dir} (removed when the "
              f"command ends; $TMPDIR chooses the folder); export once with 'transformer-mt export' to skip this",
              file=sys.stderr)
        export_ctranslate2(model, export_dir, checkpoint=args.checkpoint)
        model = export_dir
    compute_type = "int8" if args.quantize else {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.precision]
    from .device import resolve_device

    device = resolve_device(args.device).type  # checks the name (and that CUDA is there) as the torch engine does
    threads = getattr(args, "threads", None) or 0  # serve sets it; 0 is CTranslate2's default
    return CTranslate2Translator(model, device=device, compute_type=compute_type, intra_threads=threads)


def _decode_kwargs(args) -> dict:
    """translate()'s options from translate's and evaluate's command line; sampling, repetition control and
    prefixes only when given, so that an engine without them is not handed them."""
    kwargs = {"beam_size": args.beam_size, "length_penalty": args.length_penalty, "batch_size": args.batch_size,
              "early_exit": args.early_exit, "target_language": args.target_language}
    for option in SEARCH_OPTIONS:
        if getattr(args, option) is not None:
            kwargs[option] = getattr(args, option)
    if getattr(args, "glossary", None) is not None:
        if isinstance(args.glossary, str):  # read once: the file's name becomes its entries
            args.glossary = _read_glossary(args.glossary)
        kwargs["glossary"] = args.glossary
    return kwargs


def _read_glossary(path):
    from .safe_files import read_user_file
    from .text.glossary import MAX_ENTRIES, MAX_TERM_CHARS, read_glossary

    limit = MAX_ENTRIES * (2 * MAX_TERM_CHARS + 2) * 4  # the largest glossary there is, in UTF-8 (4 bytes a char)
    data = read_user_file(path, "--glossary", limit=limit,
                          fix=f"no glossary of {MAX_ENTRIES:,} entries (the most there may be) is larger: is it the right file?")
    return read_glossary(data, str(path))


SEARCH_OPTIONS = ("temperature", "top_k", "top_p", "seed", "no_repeat_ngram_size", "repetition_penalty")


def _prefixes(args, count: int, what: str) -> dict:
    """``prefix=`` for translate()/translate_text(): --prefix (one text for all) or --prefix-file (one per line,
    ``count`` of them), or nothing."""
    from .data.batches import read_lines

    if args.prefix is not None:
        return {"prefix": args.prefix}
    if args.prefix_file is None:
        return {}
    prefixes = read_lines(args.prefix_file, "--prefix-file")
    if len(prefixes) != count:
        raise TransformerMTError(f"--prefix-file {args.prefix_file} has {len(prefixes)} lines but {what} has {count}; "
                                 f"give one prefix per input line (an empty line for none)")
    return {"prefix": prefixes}


def _one_line(text: str) -> str:
    """A translated input line as one output line: translate_text keeps the line breaks of a text, and a
    line read at "\n" may still hold "\r", "\u2028" or other characters that str.splitlines breaks at."""
    parts = text.splitlines()
    return text if "".join(parts) == text else " ".join(parts)


def _read_stdin() -> list[str]:
    from .data.batches import split_lines

    # split_lines drops the BOM, as it does for --input: dropped here too, a second one ("\ufeff\ufeff") would go.
    return split_lines(_read_stdin_text("reading text from standard input (Ctrl-D to end)", keep_bom=True))


def _read_stdin_text(prompt: str = "reading an HTML document from standard input (Ctrl-D to end)",
                     keep_bom: bool = False) -> str:
    if sys.stdin is None:  # file descriptor 0 closed (<&-): Python has no standard input at all
        raise TransformerMTError("standard input is closed; give the text as arguments, or --input FILE, or "
                                 "redirect a file into the command (< file)")
    from .data.corpus import MAX_TEXT_BYTES, SPLIT_IT
    from .safe_files import read_within

    if sys.stdin.isatty():
        print(prompt, file=sys.stderr)
    return _decode_utf8(read_within(sys.stdin.buffer, MAX_TEXT_BYTES, "standard input", SPLIT_IT), "standard input",
                        keep_bom)


def _read_document(path) -> str:
    """A whole --input file as text (an HTML document, wrapped paragraphs), with clear errors."""
    from .data.batches import read_bytes

    return _decode_utf8(read_bytes(path, "--input"), f"--input {path}")


def _decode_utf8(raw: bytes, name: str, keep_bom: bool = False) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TransformerMTError(f"{name} is not valid UTF-8 at line {line}") from None
    return text if keep_bom else text.removeprefix("\ufeff")


def _check_output(path) -> None:
    """Refuse an --output that cannot be written now, not after minutes of decoding (safe_files.check_output:
    a foreign link or FIFO, a link loop, a directory, a missing or unwritable folder, a read-only file)."""
    from .safe_files import check_output

    if path is None:
        return
    check_output(path, "--output")


def _check_output_is_not_input(path, inputs: dict) -> None:
    """The whole input is read before the output is written, so this would silently replace it."""
    for option, input_path in inputs.items():
        if path and input_path and Path(input_path).exists() and Path(path).exists() \
                and Path(path).samefile(input_path):
            raise TransformerMTError(f"--output {path} is the {option} file; writing it would replace the "
                                     f"input; choose another --output")


def _write_output(path, text: str) -> None:
    """Write --output the safe way (safe_files.write_output): a regular file is replaced atomically,
    so a failure or Ctrl-C midway leaves it as it was; a device, FIFO or /dev/stdout is written to."""
    from .safe_files import write_output

    write_output(path, text)


def _check_not_empty(lines: list[str], first, second) -> None:
    if not lines:
        raise TransformerMTError(f"nothing to score: {first} and {second} are empty")


def _read_hyp_ref(args) -> tuple[list[str], list[str]]:
    from .data.batches import read_lines

    if args.model or args.src or args.split:
        raise TransformerMTError("--hyp scores existing translations; do not combine it with --model/--src/--split")
    if not args.ref:
        raise TransformerMTError("--hyp needs --ref FILE")
    if args.output:
        raise TransformerMTError("--output writes the model's translations, and --hyp translates nothing; "
                                 "leave --output out")
    hyps, refs = read_lines(args.hyp, "--hyp"), read_lines(args.ref, "--ref")
    if len(hyps) != len(refs):
        raise TransformerMTError(f"--hyp {args.hyp} has {len(hyps)} lines but --ref {args.ref} has {len(refs)}; "
                                 f"line i of the translations must go with line i of the references")
    _check_not_empty(hyps, args.hyp, args.ref)
    return hyps, refs


def _split_files(args, data) -> tuple[Path, Path]:
    """The source and reference files of --split: the run's, or for a multilingual run those of the direction
    --target-language (and --source-language) pick."""
    directions = data.directions()
    if len(directions) == 1:
        if args.source_language is not None and args.source_language.lower() != str(data.src_lang).lower():
            raise TransformerMTError(f"--source-language {args.source_language}: this model translates "
                                     f"{data.src_lang} -> {data.tgt_lang}; leave it out")
        return data.path(args.split, data.src_lang), data.path(args.split, data.tgt_lang)
    chosen = [(s, t) for s, t in directions if (args.target_language is None or t == args.target_language)
              and (args.source_language is None or s == args.source_language)]
    shown = ", ".join(f"{s} -> {t}" for s, t in directions)
    if len(chosen) != 1:
        if not chosen:  # name what matches nothing: the source, the target, or the two together
            given = [f"--{side}-language {value[:40]!r}" for side, value, known in (
                ("source", args.source_language, {s for s, _ in directions}),
                ("target", args.target_language, {t for _, t in directions})) if value is not None and value not in known]
            wrong = " and ".join(given) or (f"--source-language {args.source_language} with --target-language "
                                           f"{args.target_language}")
            raise TransformerMTError(f"--split {args.split}: this run was trained for {shown}; {wrong} matches none "
                                     f"of them")
        fix = ("pick one with --target-language LANG" + (" and --source-language LANG" if args.target_language
                                                         is not None else ""))
        raise TransformerMTError(f"--split {args.split}: this run was trained for {shown}; {fix}")
    args.target_language = chosen[0][1]  # the files' direction is the one translated (read by _decode_kwargs)
    return data.split_files(args.split, chosen[0])


def _translate_for_evaluation(args):
    """Translate the --src or --split sources; return (hypotheses, references, translator, sources)."""
    from .data.batches import read_parallel

    if not args.model:
        raise TransformerMTError("give --model DIR to translate, or --hyp FILE to score existing translations")
    if args.split and (args.src or args.ref):
        raise TransformerMTError("use either --split or --src/--ref, not both")
    if not args.split and not (args.src and args.ref):
        raise TransformerMTError("translating needs both --src FILE and --ref FILE (or --split test)")
    _check_output(args.output)
    translator = _load_translator(args)
    data = translator.config.data
    if args.source_language is not None and not args.split:
        raise TransformerMTError("--source-language picks the direction whose --split files are read; with --src "
                                 "FILE leave it out")
    if args.split:
        src_path, ref_path = _split_files(args, data)
        for path in (src_path, ref_path):
            if not Path(path).is_absolute() and not Path(path).exists():
                raise TransformerMTError(
                    f"--split {args.split}: {path} does not exist; the run's config gives data.root "
                    f"{str(data.root)!r}, a relative path, read from the working directory ({os.getcwd()}): run "
                    f"from the directory training ran in, or give --src FILE --ref FILE")
    else:
        src_path, ref_path = args.src, args.ref
    names = (f"{args.split} source", f"{args.split} reference") if args.split else ("--src", "--ref")
    _check_output_is_not_input(args.output, {**dict(zip(names, (src_path, ref_path))),
                                             "--prefix-file": args.prefix_file})
    sources, refs = read_parallel(src_path, ref_path)
    _check_not_empty(sources, src_path, ref_path)
    prefix = _prefixes(args, len(sources), f"{src_path}")
    # The same composition as translate's, so that a line gets the same translation from both.
    hyps = [_one_line(hyp) for hyp in
            translator.translate_text(sources, split_sentences=args.split_sentences, **prefix, **_decode_kwargs(args))]
    if args.output:
        _write_output(args.output, "".join(h + "\n" for h in hyps))
    return hyps, refs, translator, sources


def cmd_translate(args) -> int:
    from .data.batches import read_lines

    if args.sentences and args.input:
        raise TransformerMTError("give texts as arguments or --input FILE, not both")
    _check_output(args.output)
    _check_output_is_not_input(args.output, {"--input": args.input, "--prefix-file": args.prefix_file})
    if args.alignment_layer is not None and not args.alignment and args.format != "html":
        raise TransformerMTError("--alignment-layer chooses the layer of --alignment (or of the alignments that "
                                 "place inline tags with --format html); add --alignment")
    if (args.alignment or args.alignment_layer is not None) and args.engine != "torch":
        raise TransformerMTError("--alignment needs --engine torch: the CTranslate2 engine returns the attention of "
                                 "one layer and head fixed at export, not the layer asked for")
    sentence_level = args.alignment or args.nbest != 1  # one result per sentence: the line is not cut
    if sentence_level and (args.format == "html" or args.split_sentences):
        option = "--alignment" if args.alignment else "--nbest"
        raise TransformerMTError(f"{option} gives one result per sentence, so each line is translated as one "
                                 f"sentence: leave out {'--format html' if args.format == 'html' else '--split-sentences'}")
    if args.format == "html":
        if args.sentences:
            texts = list(args.sentences)
        elif args.input:
            texts = [_read_document(args.input)]
        else:
            texts = [_read_stdin_text()]
    elif args.sentences:
        # One argument is one line of output: a line break inside it must not add a line to the output.
        texts = [" ".join(sentence.splitlines()) for sentence in args.sentences]
    elif args.paragraphs:
        texts = [_read_document(args.input) if args.input else _read_stdin_text("reading text from standard input "
                                                                                 "(Ctrl-D to end)")]
    elif args.input:
        texts = read_lines(args.input, "--input")
    else:
        texts = _read_stdin()
    if args.paragraphs and (args.format == "html" or args.sentences or sentence_level):
        raise TransformerMTError("--paragraphs reads --input (or standard input) as text of wrapped paragraphs; leave "
                                 "out " + ("--format html" if args.format == "html" else "the texts given as arguments"
                                           if args.sentences else "--alignment and --nbest"))
    if args.format == "html" and (args.prefix is not None or args.prefix_file is not None):
        raise TransformerMTError("--prefix and --prefix-file are for text; an HTML translation starts with its markup")
    prefix = _prefixes(args, len(texts), "the input")
    translator = _load_translator(args)
    if args.alignment:
        from .decoding.alignment import format_alignment

        results = translator.translate(texts, nbest=args.nbest, return_alignment=True,
                                       alignment_unit=args.alignment, alignment_layer=args.alignment_layer,
                                       **prefix, **_decode_kwargs(args))
        fields = [[field for t in r for field in (t.text, format_alignment(t.alignment))] for r in results]
        lines = ["\t".join(f + ["", ""] * (args.nbest - len(f) // 2)) for f in fields]
    elif sentence_level:
        results = translator.translate(texts, nbest=args.nbest, **prefix, **_decode_kwargs(args))
        lines = ["\t".join(r) for r in results]
    else:
        layer = {"alignment_layer": args.alignment_layer} if args.alignment_layer is not None else {}
        lines = translator.translate_text(texts, format=args.format, split_sentences=args.split_sentences,
                                          paragraphs=args.paragraphs, **layer, **prefix, **_decode_kwargs(args))
        if args.format == "text" and not args.paragraphs:
            lines = [_one_line(line) for line in lines]
    if (args.format == "html" or args.paragraphs) and not args.sentences:
        text = lines[0]  # the document as it was read, its final line break (or none) included
    else:
        text = "".join(line + "\n" for line in lines)
    if args.output:
        _write_output(args.output, text)
    else:
        write_stdout(text, "the translation", "--output FILE or > FILE")
    return 0


def cmd_translate_file(args) -> int:
    from .data.corpus import read_bytes
    from .safe_files import write_output
    from .text.documents import MAX_DOCUMENT_BYTES, document_extension

    extension = document_extension(str(args.input))
    if document_extension(str(args.output)) != extension:
        raise TransformerMTError(f"--output {args.output}: the translation of a {extension} file is a {extension} file; "
                                 f"give --output a name ending in {extension}")
    _check_output(args.output)
    _check_output_is_not_input(args.output, {"input": args.input})
    data = read_bytes(args.input, "document", MAX_DOCUMENT_BYTES, "a document is translated at once: split it into "
                                                                 "smaller files")
    translator = _load_translator(args)
    translated = translator.translate_document(data, str(args.input), split_sentences=args.split_sentences,
                                               **_decode_kwargs(args))
    write_output(args.output, translated)
    return 0


def cmd_evaluate(args) -> int:
    from .scoring import check_tokenize, resolve_tokenize, score

    if args.ref is None and args.split is None:
        raise TransformerMTError("evaluate needs --ref FILE (with --hyp or --src) or --model DIR --split test")
    if args.tokenize:
        check_tokenize(args.tokenize)
    if args.hyp:
        if args.glossary:
            raise TransformerMTError("--glossary counts the terms of the sources, which --hyp does not give; "
                                     "translate and score with --model DIR --src FILE --ref FILE --glossary FILE")
        hyps, refs = _read_hyp_ref(args)
        tokenize = args.tokenize or "13a"
    else:
        hyps, refs, translator, sources = _translate_for_evaluation(args)
        config = translator.config
        tokenize = args.tokenize or resolve_tokenize(config.decoding.sacrebleu_tokenize,
                                                     args.target_language or config.data.tgt_lang)
    result = score(hyps, refs, tokenize)
    if args.glossary:
        from .text.glossary import term_use

        result.update(term_use(args.glossary, sources, hyps))  # read by _decode_kwargs when translating
    if args.json:
        write_stdout(json.dumps(result, ensure_ascii=False) + "\n", "the score")
    else:
        terms = ""
        if args.glossary:
            share = "-" if result["term_use"] is None else f"{result['term_use']:.1f}%"
            terms = (f"glossary term use = {share}  ({result['used']} of the {result['applicable']} glossary terms "
                     f"found in the sources are in the translations)\n")
        write_stdout(f"BLEU = {result['bleu']:.2f}  ({result['bleu_details']})\n"
                     f"chrF2 = {result['chrf']:.2f}\n{terms}"
                     f"BLEU signature: {result['bleu_signature']}\n"
                     f"chrF signature: {result['chrf_signature']}\n", "the score")
    return 0


def cmd_average(args) -> int:
    from .checkpoint import average_checkpoints
    from .decoding.translator import CHECKPOINT_NAMES
    from .training.rundir import RunLock

    run_dir = Path(args.model)
    if not run_dir.is_dir():
        raise TransformerMTError(f"run directory {run_dir} does not exist")
    if args.last < 1:
        raise TransformerMTError("--last must be at least 1")
    paths = sorted(run_dir.glob("checkpoint_step*.pt"))[-args.last:]
    if not paths:
        raise TransformerMTError(f"{run_dir} has no checkpoint_step*.pt files to average")
    output = Path(args.output) if args.output else run_dir / CHECKPOINT_NAMES["average"]
    with RunLock(run_dir, "averaging checkpoints"):
        average_checkpoints(paths, output, user_output=bool(args.output))
    print(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name}) into {output}")
    return 0


def _check_can_listen(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransformerMTError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise TransformerMTError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port "
                                     f"(or stop the server using it)") from None


MAX_KEY_FILE_BYTES = 1 << 20  # 10,000 keys of 100 characters: no key file is larger


def cmd_serve(args) -> int:
    from .data.batches import read_lines

    try:
        import docx  # noqa: F401 -- /translate_file reads .docx and .srt, /detect needs py3langid: fail here, not later
        import pptx  # noqa: F401 -- and .pptx
        import py3langid  # noqa: F401
        import srt  # noqa: F401
        import uvicorn

        from .serving.server import ServeLimits, create_app
    except ImportError as exc:
        raise TransformerMTError(f"serving needs the [serve] extra ({exc.name} is not installed): "
                                 f"pip install 'transformer-mt[serve]'") from None
    for option in ("max_batch_sentences", "max_queue_sentences", "max_sentences_per_request",
                   "max_chars_per_text", "max_chars_per_request", "max_body_bytes", "max_file_bytes",
                   "max_file_chars"):
        if getattr(args, option) < 1:
            raise TransformerMTError(f"--{option.replace('_', '-')} must be at least 1")
    if not 0 <= args.max_wait_ms <= 10_000:
        raise TransformerMTError("--max-wait-ms must be between 0 and 10000")
    if not 0 <= args.port <= 65535:
        raise TransformerMTError(f"--port {args.port} is not a port number (0-65535)")
    _check_can_listen(args.host, args.port)  # before minutes of model loading, not after
    most = max(64, 4 * (os.cpu_count() or 1))  # more decoding threads than cores only wait; 10^5 crashed OpenMP
    if args.threads is not None and not 1 <= args.threads <= most:
        raise TransformerMTError(f"--threads {args.threads}: give 1 to {most} (this machine has {os.cpu_count()} "
                                 f"cores; the default is half of them)")
    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 2) // 2)
    if threads < 1:
        raise TransformerMTError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)  # process-wide, so here at the entry point
    api_keys = None
    if args.api_key_file:
        api_keys = {line.strip() for line in read_lines(args.api_key_file, "--api-key-file", limit=MAX_KEY_FILE_BYTES,
                                                          fix="give a file of API keys, one a line")
                    if line.strip()}
        if not api_keys:
            raise TransformerMTError(f"--api-key-file {args.api_key_file} holds no key (one per line)")
    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_sentences_per_request=args.max_sentences_per_request,
                         max_chars_per_text=args.max_chars_per_text,
                         max_chars_per_request=args.max_chars_per_request, max_file_bytes=args.max_file_bytes,
                         max_file_chars=args.max_file_chars)
    if args.models_dir is not None:
        registry = _models_registry(args, limits)
        info = {"models_dir": Path(args.models_dir).resolve().name, "checkpoint": Path(args.checkpoint).name,
                "engine": args.engine, "threads": threads, "precision": args.precision, "quantized": args.quantize}
        served, pairs = registry, ", ".join(registry.pairs())
        shown = f"{len(registry.models)} models of {Path(args.models_dir).resolve()} ({pairs})"
    else:
        if args.max_loaded_models != 4 or not args.pivot:
            raise TransformerMTError("--max-loaded-models and --no-pivot go with --models-dir (many models); "
                                     "--model serves one")
        translator = _load_translator(args)
        _configure_served(args, translator.config, limits)
        info = _model_info(args, translator, threads)
        served = translator
        shown = (f"{Path(args.model).resolve()} ({translator.config.data.src_lang} -> "
                 f"{translator.config.data.tgt_lang})")
    app = create_app(served, limits=limits, max_batch_sentences=args.max_batch_sentences,
                     max_wait_ms=args.max_wait_ms, max_queue_sentences=args.max_queue_sentences,
                     api_keys=api_keys, info=info, split_sentences=args.split_sentences,
                     cors_origins=args.cors_origin)
    print(f"serving {shown} on http://{args.host}:{args.port} (API docs: /docs); Ctrl-C stops", file=sys.stderr)
    try:
        # SIGINT/SIGTERM: uvicorn stops accepting, lets open requests finish, then the app drains its queue.
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    except OSError as exc:
        raise TransformerMTError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def _configure_served(args, config, limits) -> None:
    """The command line's decoding settings over a served model's config, checked (a setting that would fail
    every request fails here instead)."""
    from .decoding.translator import resolve_decoding

    for option in ("beam_size", "length_penalty", "batch_size", "early_exit"):
        if getattr(args, option) is not None:
            setattr(config.decoding, option, getattr(args, option))
    decoding = resolve_decoding(config)
    if decoding.beam_size > limits.max_beam_size:
        raise TransformerMTError(f"--beam-size {decoding.beam_size} is above the server's limit of "
                                 f"{limits.max_beam_size}")


def _models_registry(args, limits):
    """The ModelRegistry of --models-dir: every run directory and export under it, described from its config
    (the models are loaded on their first request)."""
    from .serving.registry import MAX_LOADED_MODELS, ModelRegistry, describe_folder, model_folders

    if not 1 <= args.max_loaded_models <= MAX_LOADED_MODELS:
        raise TransformerMTError(f"--max-loaded-models {args.max_loaded_models}: give 1 to {MAX_LOADED_MODELS}")
    from .device import resolve_device

    resolve_device(args.device)  # a bad --device fails here, not in every model's first request
    folders = model_folders(args.models_dir)
    if not folders:
        raise TransformerMTError(f"--models-dir {args.models_dir} holds no run directory (a folder with config.yaml) "
                                 f"and no CTranslate2 export; train or import models into it")
    decoding = {"beam_size": args.beam_size, "length_penalty": args.length_penalty}
    models = []
    for folder in folders:
        model = describe_folder(folder, args.split_sentences, decoding)
        if model.engine == "ctranslate2" or args.engine == "ctranslate2":
            _refuse_ctranslate2_shortlist(args)
            _check_ctranslate2_options(args)
        models.append(model)
    shortlist = _shortlist_kwargs(args)
    if shortlist:  # every model's file is checked now, not at its first request
        from .decoding.shortlist import shortlist_path

        missing = [m.path for m in models if m.engine == "torch" and not shortlist_path(m.path).is_file()]
        if missing:
            raise TransformerMTError(f"--shortlist: {missing[0]} has no {shortlist_path(missing[0]).name}; build it "
                                     f"with: transformer-mt shortlist --model {missing[0]}")

    def load(model):
        from .decoding.translator import Translator

        if model.engine == "ctranslate2" or args.engine == "ctranslate2":
            translator = _load_ctranslate2(args, model.path)
        else:
            translator = Translator.from_run(model.path, checkpoint=args.checkpoint, device=args.device,
                                             precision=args.precision, quantize=args.quantize, **shortlist)
        _configure_served(args, translator.config, limits)
        return translator

    return ModelRegistry(models, load, max_loaded=args.max_loaded_models, pivot=args.pivot)


def _check_ctranslate2_options(args) -> None:
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:
        raise TransformerMTError("a CTranslate2 export under --models-dir needs the ctranslate2 package: "
                                 "pip install 'transformer-mt[ctranslate2]'")


def _model_info(args, translator, threads: int) -> dict:
    # Names, not absolute paths: clients learn nothing about the server's file system.
    info = {"model": Path(args.model).resolve().name, "checkpoint": Path(args.checkpoint).name, "engine": args.engine,
            "threads": threads,
            "device": str(translator.device), "precision": args.precision, "quantized": args.quantize,
            "shortlist": args.shortlist}
    if args.engine == "torch":
        info["parameters"] = sum(p.numel() for p in translator.model.parameters())
    else:
        info["compute_type"] = translator.compute_type
    return info


def cmd_export(args) -> int:
    from .interop.ctranslate2_export import export_ctranslate2

    output = export_ctranslate2(args.model, args.output, checkpoint=args.checkpoint, quantization=args.quantization)
    print(f"exported {args.model} to {output}; translate with: transformer-mt translate --engine ctranslate2 "
          f"--model {output} \"...\"")
    return 0


def cmd_import(args) -> int:
    from .interop.hf_import import import_model

    summary = import_model(args.hf_dir, args.output_dir)
    languages = summary["target_languages"]
    print(f"imported {args.hf_dir} into {summary['run_dir']}: {summary['parameters'] / 1e6:.1f}M parameters, "
          f"vocabulary {summary['vocab_sizes'][0]}/{summary['vocab_sizes'][1]}"
          + (f", {len(languages)} target languages (--target-language {languages[0]}, ...)" if languages else "")
          + f". Translate with: transformer-mt translate --model {summary['run_dir']} \"...\"")
    return 0


def cmd_plot(args) -> int:
    from .training.plotting import plot_attention, plot_learning_curves

    formats = tuple(args.format or ["png"])
    if args.attention is None:
        for option in ("layer", "head", "beam_size"):
            if getattr(args, option) is not None:
                raise TransformerMTError(f"--{option.replace('_', '-')} goes with --attention SENTENCE")
        if args.self_attention:
            raise TransformerMTError("--self-attention goes with --attention SENTENCE")
        written = plot_learning_curves(args.model, args.output or args.model[0], formats)
        print("wrote " + ", ".join(str(path) for path in written))
        return 0
    if len(args.model) > 1:
        raise TransformerMTError("--attention draws one model's attention; give one --model")
    head = args.head
    if head is not None and head != "all":
        try:
            head = int(head)
        except ValueError:
            raise TransformerMTError(f"--head {args.head!r} is not a head number or 'all'") from None
    written, attention = plot_attention(args.model[0], args.attention, args.output or args.model[0],
                                        layer=args.layer, head=head, self_attention=args.self_attention,
                                        formats=formats, beam_size=args.beam_size, checkpoint=args.checkpoint,
                                        target_language=args.target_language)
    print(f"translated with {attention.search}: {attention.text}")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_upgrade_checkpoint(args) -> int:
    from .checkpoint import upgrade_checkpoint
    from .training.rundir import upgrade_run_dir

    path = Path(args.path)
    if path.is_dir():
        converted = upgrade_run_dir(path, args.trust)
        print(f"{path}: converted {len(converted)} checkpoint(s) to the safe format"
              + (f" ({', '.join(p.name for p in converted)}); the originals are kept as *.pt.format1" if converted
                 else "; all were already in it"))
    elif path.is_file():
        if upgrade_checkpoint(path, args.trust):
            print(f"{path}: converted to the safe format; the original is kept as {path.name}.format1")
        else:
            print(f"{path}: already in the safe format; nothing to do")
    else:  # missing, or a FIFO, device or socket: said as what it is
        from .safe_files import regular_file_problem

        raise TransformerMTError(f"{path} {regular_file_problem(path)}; give a run directory or a checkpoint file")
    return 0


def torch_device_count() -> int:
    """The CUDA devices here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cmd_back_translate(args) -> int:
    from .data.back_translation import back_translate, check_output_prefix, output_paths
    from .decoding.logits import search_options
    from .decoding.translator import Translator

    sampling = {option: getattr(args, option) for option in SEARCH_OPTIONS if getattr(args, option) is not None}
    search_options(**sampling)  # bad values are refused before the model loads
    check_output_prefix(args.output_prefix)
    translator = Translator.from_run(args.model, checkpoint=args.checkpoint, device=args.device,
                                     precision=args.precision)
    data = translator.config.data
    print(f"back-translating {args.input} ({data.src_lang}) with {args.model} ({data.src_lang}->{data.tgt_lang}) "
          f"into {', '.join(map(str, output_paths(args.output_prefix, data.tgt_lang, data.src_lang)))}",
          file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"  {done:,} of {total:,} lines", file=sys.stderr)

    summary = back_translate(translator, args.input, args.output_prefix, overwrite=args.overwrite, progress=progress,
                             beam_size=args.beam_size, length_penalty=args.length_penalty, batch_size=args.batch_size,
                             **sampling)
    blank = summary["blank_lines"]
    print(f"wrote {summary['pairs']:,} synthetic pairs to {summary['source']} and {summary['target']}"
          + (f" ({blank:,} blank lines left out)" if blank else ""), file=sys.stderr)
    return 0


def stdout_closed_problem(args) -> str | None:
    """Why the result of this command has nowhere to go, before any work: with file descriptor 1 closed, Python
    sets sys.stdout to None and print() writes nothing, silently."""
    if sys.stdout is not None:
        return None
    if args.command == "evaluate":
        return "standard output is closed, so the score would be printed nowhere; run evaluate with its output " \
               "open or redirected (e.g. > score.txt)"
    if args.command == "translate" and not args.output:
        return "standard output is closed, so the translation would be written nowhere; give --output FILE or " \
               "redirect the output (e.g. > out.txt)"
    return None


def write_stdout(text: str, what: str, elsewhere: str = "> FILE") -> None:
    """Write ``text`` (``what`` it is, for the message) to standard output, flushed: a full device or a closed
    descriptor is one error, not a traceback (or an exception Python reports while exiting). ``elsewhere``: how
    this command's output goes to a file instead (the fix the message offers)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader went away (| head): main ends quietly
    except (OSError, ValueError) as exc:  # ValueError: the stream was closed from within Python
        from .safe_files import discard_stdout

        discard_stdout()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TransformerMTError(f"{what} could not be written to standard output ({reason}); free space on that "
                                 f"device or send the output elsewhere (e.g. {elsewhere})") from None


COMMANDS = {"train": cmd_train, "prepare": cmd_prepare, "translate": cmd_translate,
            "translate-file": cmd_translate_file, "evaluate": cmd_evaluate,
            "average": cmd_average,
            "serve": cmd_serve, "export": cmd_export, "import": cmd_import, "plot": cmd_plot,
            "upgrade-checkpoint": cmd_upgrade_checkpoint, "back-translate": cmd_back_translate,
            "shortlist": cmd_shortlist, "distill": cmd_distill}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # --help | head: the reader had what it wanted
        from .safe_files import discard_stdout

        discard_stdout()
        return 0
    except OSError as error:  # --help to a full device: _Parser lets the failed write through
        print(f"error: the help could not be written to standard output ({error.strerror or error})", file=sys.stderr)
        from .safe_files import discard_stdout

        discard_stdout()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from .device import configure_process
    from .training.distributed import ReportedByRankZero, is_worker_rank
    from .training.trainer import TrainingInterrupted

    # Process-wide: reuse freed CPU memory (decoding and training allocate large temporaries each step);
    # train also sets training.num_threads.
    configure_process()

    try:
        closed = stdout_closed_problem(args)
        if closed:
            raise TransformerMTError(closed)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as exc:
        if not is_worker_rank():  # under torchrun, rank 0 speaks for all
            print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except TransformerMTError as exc:
        if not isinstance(exc, ReportedByRankZero):
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:  # a file or setting far larger than this machine holds: one line, not a traceback
        print(f"error: {args.command} ran out of memory; the input (a file, --input, --config) or a setting "
              f"(batch sizes, model size) is larger than this machine's memory: give it less", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
