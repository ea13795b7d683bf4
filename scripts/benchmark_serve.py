#!/usr/bin/env python3
"""Throughput of ``transformer-mt serve`` under many clients, against offline batched decoding.

Starts the server in this process (uvicorn in a thread, 127.0.0.1, a free port), sends the
first ``--sentences`` test sentences from ``--clients`` concurrent clients, one sentence per
request (the hardest case for a server), and prints sentences/s and the latency percentiles;
then the same with batching off (``--max-batch-sentences 1``) and offline
``Translator.translate`` over all sentences at once (what batching should approach).

    python scripts/benchmark_serve.py --model runs/demo --clients 32 --sentences 500
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt.data import read_lines  # noqa: E402
from transformer_mt.translator import Translator  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def load(base: str, sentences: list[str], clients: int) -> dict:
    def one(sentence):
        start = time.perf_counter()
        request = urllib.request.Request(base + "/translate", data=json.dumps({"q": sentence}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            text = json.loads(response.read())["translatedText"]
        return text, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, sentences))
    seconds = time.perf_counter() - start
    latencies = sorted(r[1] for r in results)
    info = json.loads(urllib.request.urlopen(base + "/v1/info").read())["batching"]
    return {"sent_per_s": len(sentences) / seconds, "seconds": seconds,
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
            "batches": info["batches_decoded"], "translations": [r[0] for r in results]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory")
    parser.add_argument("--src", help="sentences to translate (default: the run's test split source)")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from transformer_mt.server import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    translator = Translator.from_run(args.model, device="cpu")
    data = translator.config.data
    sentences = read_lines(args.src or data.path("test", data.src_lang))[:args.sentences]
    rows = {}
    for name, batch in (("serve, batching", 64), ("serve, no batching", 1)):
        app = create_app(translator, max_batch_sentences=batch, max_wait_ms=args.max_wait_ms)
        server, thread, base = serve_in_thread(app)
        try:
            rows[name] = load(base, sentences, args.clients)
        finally:
            server.should_exit = True
            thread.join()
    start = time.perf_counter()
    offline = translator.translate(sentences)
    offline_seconds = time.perf_counter() - start
    rows["offline Translator.translate"] = {"sent_per_s": len(sentences) / offline_seconds, "seconds": offline_seconds}
    same = sum(a == b for a, b in zip(rows["serve, batching"]["translations"], offline))
    print(f"{len(sentences)} sentences, {args.clients} clients, one sentence per request, beam "
          f"{translator.config.decoding.beam_size}, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"{'':32} {'sent/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'batches':>8}")
    for name, row in rows.items():
        print(f"{name:32} {row['sent_per_s']:8.1f} {row.get('latency_p50_ms', float('nan')):8.0f} "
              f"{row.get('latency_p95_ms', float('nan')):8.0f} {row.get('batches', '-'):>8}")
    ratio = rows["serve, batching"]["sent_per_s"] / rows["offline Translator.translate"]["sent_per_s"]
    print(f"serve with batching / offline: {ratio:.2f}; identical translations: {same}/{len(sentences)}")
    if args.json:
        for row in rows.values():
            row.pop("translations", None)
        Path(args.json).write_text(json.dumps({"rows": rows, "ratio": ratio, "identical": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
