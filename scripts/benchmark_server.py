#!/usr/bin/env python3
"""Throughput of ``transformer-mt serve`` under many clients, against offline batched decoding.

Starts ``transformer-mt serve`` in its own process (127.0.0.1, a free port), sends the first
``--sentences`` test sentences from N concurrent clients for each N of ``--clients`` (asyncio
tasks of this process, each with one keep-alive HTTP/1.1 connection, sending one sentence per
request and waiting for its answer before the next: the hardest case for a server; one event
loop keeps the load generator's own CPU use small, since it shares the machine), and prints
sentences/s and p50/p95/p99 latency per level; then the same with batching off
(``--max-batch-sentences 1``), and offline ``Translator.translate`` over all sentences at once
(what batching should approach) and over one sentence at a time (what a single client's latency
should approach).

    python scripts/benchmark_server.py --model runs/demo --clients 1 4 16 64 --sentences 500

With ``--models-dir DIR`` it measures a server of many models (``serve --models-dir``) instead: the time of
a first request to each model that is not loaded yet (its loading included) against a second one, then
the throughput of N clients whose requests go round-robin over every pair the models translate (each
model's own test sentences), against one of those models served alone (``serve --model``) under the same
load of its own sentences.

    python scripts/benchmark_server.py --models-dir runs/served --clients 16 --sentences 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt.config import load_config  # noqa: E402
from transformer_mt.data.batches import read_lines  # noqa: E402
from transformer_mt.decoding.translator import Translator  # noqa: E402
from transformer_mt.results import cpu_model  # noqa: E402
from transformer_mt.serving.registry import describe_folder, model_folders  # noqa: E402

REQUEST_TIMEOUT_S = 300  # a server that stalls without closing the connection fails the run, not hangs it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, *extra: str, option: str = "--model"):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "transformer_mt.cli", "serve", option, model, "--port",
                               str(port), "--device", "cpu", *extra], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return server, base
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read()}") from None
            time.sleep(0.1)


async def post_json(reader, writer, host: str, path: str, payload: dict) -> dict:
    """One HTTP/1.1 request on a kept-alive connection; uvicorn answers with a Content-Length."""
    body = json.dumps(payload).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
    status = head.split(b" ", 2)[1]
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    if length is None:
        raise SystemExit(f"the server answered without a Content-Length: {head.decode('latin-1')!r}")
    answer = json.loads(await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_S))
    if status != b"200":
        raise SystemExit(f"the server answered {status.decode()}: {answer}")
    return answer


async def run_clients(host: str, port: int, requests: list[dict], clients: int) -> list:
    """Send each /translate request (``{"q": ...}``, with ``source``/``target`` for many models) from
    ``clients`` connections; (translation, seconds) per request."""
    results: list = [None] * len(requests)

    async def client(first: int) -> None:  # requests first, first + clients, ... over one connection
        reader, writer = await asyncio.open_connection(host, port)
        for i in range(first, len(requests), clients):
            start = time.perf_counter()
            answer = await post_json(reader, writer, host, "/translate", requests[i])
            results[i] = (answer["translatedText"], time.perf_counter() - start)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client(first) for first in range(clients)))
    return results


def latency_stats(seconds: list[float]) -> dict:
    """p50/p95/p99 in milliseconds of per-request (or per-call) times."""
    ordered = sorted(seconds)
    return {"latency_p50_ms": 1000 * statistics.median(ordered),
            "latency_p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
            "latency_p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def load(base: str, sentences: list[str] | list[dict], clients: int) -> dict:
    host, port = base.removeprefix("http://").split(":")
    requests = [item if isinstance(item, dict) else {"q": item} for item in sentences]
    start = time.perf_counter()
    results = asyncio.run(run_clients(host, int(port), requests, clients))
    seconds = time.perf_counter() - start
    info = json.loads(urllib.request.urlopen(base + "/v1/info").read())
    batching = info["batching"]
    return {"sent_per_s": len(requests) / seconds, "seconds": seconds, **latency_stats([r[1] for r in results]),
            "batches": batching["batches_decoded"] if isinstance(batching, dict) else "-",
            "server_threads": info["threads"], "translations": [r[0] for r in results]}


def test_requests(folder: Path, count: int) -> list[dict]:
    """The first ``count`` sentences of each direction's test split (a multilingual run has several), as
    /translate requests of the pairs the run serves."""
    data = load_config(folder / "config.yaml", environment=False).data
    return [{"q": sentence, "source": source, "target": target}
            for source, target in describe_folder(folder).served_pairs()
            for sentence in read_lines(data.split_files("test", (source, target))[0])[:count]]


def benchmark_many(args) -> int:
    """Cold first requests, then a mixed load over every pair, against the first model served alone."""
    folders = [folder for folder in model_folders(args.models_dir) if (folder / "config.yaml").is_file()]
    if len(folders) < 2:
        raise SystemExit(f"--models-dir {args.models_dir}: give a folder of at least 2 run directories")
    per_pair = {folder.name: test_requests(folder, args.sentences) for folder in folders}
    mixed = [request for group in zip(*per_pair.values()) for request in group][:args.sentences]  # round-robin
    alone = per_pair[folders[0].name][:args.sentences]
    clients = args.clients[-1]
    extra = ["--max-batch-sentences", str(args.max_batch_sentences), "--max-wait-ms", str(args.max_wait_ms),
             *(["--threads", str(args.server_threads)] if args.server_threads else [])]
    rows, first_requests = {}, {}
    server, base = start_server(args.models_dir, "--max-loaded-models", str(args.max_loaded_models), *extra,
                                option="--models-dir")
    try:
        for name, requests in per_pair.items():  # a model's first request loads it; its second does not
            times = [load(base, requests[:1], 1)["seconds"] for _ in range(2)]
            first_requests[name] = {"first_ms": 1000 * times[0], "second_ms": 1000 * times[1]}
        rows[f"serve --models-dir, {len(folders)} models, {clients} clients"] = load(base, mixed, clients)
    finally:
        server.terminate()
        server.wait()
    server, base = start_server(str(folders[0]), *extra)
    try:
        load(base, alone[:8], 1)  # warm-up, as the other server's first requests were
        rows[f"serve --model {folders[0].name}, {clients} clients"] = load(base, alone, clients)
    finally:
        server.terminate()
        server.wait()
    print(f"{len(folders)} models, --max-loaded-models {args.max_loaded_models}, one sentence per request, "
          f"{cpu_model()}")
    print(f"{'first request to a model':36} {'first ms':>9} {'second ms':>9}")
    for name, row in first_requests.items():
        print(f"{name:36} {row['first_ms']:9.1f} {row['second_ms']:9.1f}")
    print(f"{'':48} {'sent/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for name, row in rows.items():
        print(f"{name:48} {row['sent_per_s']:8.1f} {row['latency_p50_ms']:8.1f} {row['latency_p95_ms']:8.1f}")
    many, one = rows.values()
    print(f"throughput many models / one model: {many['sent_per_s'] / one['sent_per_s']:.2f}")
    if args.json:
        for row in rows.values():
            row.pop("translations", None)
        Path(args.json).write_text(json.dumps({"rows": rows, "first_requests": first_requests}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="run directory")
    where.add_argument("--models-dir", help="a folder of run directories: measure a server of many models")
    parser.add_argument("--max-loaded-models", type=int, default=4, help="serve's, with --models-dir")
    parser.add_argument("--src", help="sentences to translate (default: the run's test split source)")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--max-batch-sentences", type=int, default=64)
    parser.add_argument("--server-threads", type=int, default=None, help="serve --threads (default: serve's)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--skip-no-batching", action="store_true", help="leave out the run without batching")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.models_dir:
        return benchmark_many(args)
    translator = Translator.from_run(args.model, device="cpu")
    data = translator.config.data
    sentences = read_lines(args.src or data.path("test", data.src_lang))[:args.sentences]
    rows = {}
    settings = [("serve, batching", args.max_batch_sentences)]
    if not args.skip_no_batching:
        settings.append(("serve, no batching", 1))
    for name, batch in settings:
        for clients in args.clients if batch > 1 else args.clients[-1:]:
            threads = ["--threads", str(args.server_threads)] if args.server_threads else []
            server, base = start_server(args.model, "--max-batch-sentences", str(batch), "--max-wait-ms",
                                        str(args.max_wait_ms), *threads)
            try:
                rows[f"{name}, {clients} clients"] = load(base, sentences, clients)
            finally:
                server.terminate()
                server.wait()
    # Offline with every core (what the machine can do) and with the server's decoding threads (what the
    # serving itself costs: the server keeps the other cores for HTTP).
    server_threads = rows[f"serve, batching, {args.clients[-1]} clients"]["server_threads"]
    offline_threads = sorted({os.cpu_count() or 1, server_threads}, reverse=True)
    offline = None
    for threads in offline_threads:
        torch.set_num_threads(threads)
        translator.translate(sentences[:64])  # warm-up: the servers' first calls are spread over their load
        start = time.perf_counter()
        offline = translator.translate(sentences)
        seconds = time.perf_counter() - start
        rows[f"offline, all at once, {threads} threads"] = {"sent_per_s": len(sentences) / seconds, "seconds": seconds}
        singles = []
        for sentence in sentences[:100]:
            start = time.perf_counter()
            translator.translate([sentence])
            singles.append(time.perf_counter() - start)
        rows[f"offline, one per call, {threads} threads"] = {"sent_per_s": len(singles) / sum(singles),
                                                             **latency_stats(singles)}
    batched = rows[f"serve, batching, {args.clients[-1]} clients"]
    same = sum(a == b for a, b in zip(batched["translations"], offline))
    print(f"{len(sentences)} sentences, one sentence per request, beam {translator.config.decoding.beam_size}, "
          f"server decoding threads {server_threads}, {cpu_model()}")
    print(f"{'':36} {'sent/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batches':>8}")
    for name, row in rows.items():
        print(f"{name:36} {row['sent_per_s']:8.1f} {row.get('latency_p50_ms', float('nan')):8.1f} "
              f"{row.get('latency_p95_ms', float('nan')):8.1f} {row.get('latency_p99_ms', float('nan')):8.1f} "
              f"{row.get('batches', '-'):>8}")
    ratios = {}
    single = rows[f"serve, batching, {args.clients[0]} clients"]["latency_p50_ms"]
    for threads in offline_threads:
        ratios[f"latency_{args.clients[0]}_client_vs_offline_{threads}_threads"] = \
            single / rows[f"offline, one per call, {threads} threads"]["latency_p50_ms"]
        for clients in args.clients:
            ratios[f"throughput_{clients}_clients_vs_offline_{threads}_threads"] = \
                rows[f"serve, batching, {clients} clients"]["sent_per_s"] / \
                rows[f"offline, all at once, {threads} threads"]["sent_per_s"]
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(f"identical translations ({args.clients[-1]} clients vs offline): {same}/{len(sentences)}")
    if args.json:
        for row in rows.values():
            row.pop("translations", None)
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios": ratios, "identical": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
