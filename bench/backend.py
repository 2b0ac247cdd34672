"""Streaming speed: koalabot's backend against the stock `text_generation.AsyncClient`, or
(``--api openai``) its OpenAI-compatible path against the official `openai` package's
``AsyncOpenAI.completions.create(stream=True)``.

    python -m bench.backend [--api tgi|openai] [--llama] [--quick] [--token-delay S] [--check]

With ``--api openai`` the server is tests/fakes/openai.py (vLLM's stream shapes) and the
target is to be not slower than AsyncOpenAI in streams/s and median time to first token at any
concurrency; ``--llama`` adds rows against a real llama.cpp engine (llama-cpp-python's server on
the tests' tiny random GGUF, one stream at a time): time to first token and tokens/s, ours vs
AsyncOpenAI, so the client's overhead over a real engine is visible.

The fake TGI (tests/fakes/tgi.py) runs in its own process on 127.0.0.1, once over plain HTTP and
once over HTTPS with a certificate this bench makes with trustme. Each measurement runs in a
fresh client process (which trusts that certificate through SSL_CERT_FILE, for both clients
alike): a number of 200-token streams at a concurrency of 1, 16 and 64, for our backend and the
stock client, each twice, alternating. Tokens are sent with no delay by default (`--token-delay
0`: the fake writes the first token as soon as it is ready and the others in one write), so the
figures show what a client costs per stream rather than what a GPU would; a real model's delay
between tokens makes every client look alike. Other work on the machine skews the figures (the
load average is printed): on 2 cores, run it alone.

Reported: streams/s, median time to first token (from starting a stream to its first token), and
TCP connections opened per stream, counted by the server (the fake's `/_fake/stats`). Targets:
over HTTPS at concurrency 1, ≥ 1.8x the stock client's streams/s and ≤ 1/3 of its median time to
first token; never more connections than concurrent streams; at 16 and 64 not slower than stock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/backend.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "BEGINNING OF CONVERSATION: USER: Tell me a long story about koalas. GPT:"
STOP = ("</s>", "USER:")
TOKENS = 200
#: A reply of TOKENS - 1 word tokens: with the EOS, TOKENS tokens per stream.
WORDS = ("koala", "eucalyptus", "tree", "sleeps", "leaf", "marsupial", "forest", "gum")
REPLY = "".join(f" {WORDS[i % len(WORDS)]}" for i in range(TOKENS - 1))
CONCURRENCY = (1, 16, 64)
#: Streams per measurement at each concurrency (a full run stays under about 3 minutes).
STREAMS = {1: 150, 16: 240, 64: 384}
IMPLS = ("ours", "stock")
#: The two clients compared for each server kind: ours first, the baseline second.
CLIENTS = {"tgi": ("ours", "stock"), "openai": ("ours", "openai")}
#: Streams per client against the real llama.cpp server, and their length in tokens.
LLAMA_STREAMS, LLAMA_TOKENS = 20, 64


# --- the client side (a subprocess per measurement) ---------------------------------------------


@dataclass
class Measurement:
    """One run of `streams` streams at one concurrency by one client."""

    streams: int
    seconds: float
    ttfts: list[float]
    tokens: int


async def _ours(
    url: str, streams: int, concurrency: int, api: str = "tgi", max_tokens: int = TOKENS + 50
) -> Measurement:
    from koalabot.backend import Backend, GenerationParams

    params = GenerationParams(max_new_tokens=max_tokens, stop=STOP)
    async with Backend([url], api="openai" if api == "openai" else "tgi") as backend:

        async def one() -> tuple[float, int]:
            started = time.perf_counter()
            ttft = 0.0
            count = 0
            async for _ in backend.stream(PROMPT, params):
                if not count:
                    ttft = time.perf_counter() - started
                count += 1
            return ttft, count

        return await _drive(one, streams, concurrency)


async def _stock(url: str, streams: int, concurrency: int) -> Measurement:
    from text_generation import AsyncClient

    client = AsyncClient(url, timeout=60)

    async def one() -> tuple[float, int]:
        started = time.perf_counter()
        ttft = 0.0
        count = 0
        stream = client.generate_stream(
            PROMPT, max_new_tokens=TOKENS + 50, stop_sequences=list(STOP), temperature=0.7
        )
        async for response in stream:
            if not count:
                ttft = time.perf_counter() - started
            count += 1 if not response.token.special else 0
        return ttft, count

    return await _drive(one, streams, concurrency)


async def _openai(url: str, streams: int, concurrency: int, max_tokens: int) -> Measurement:
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    # Its own default http client (openai's pool limits), trusting the bench's CA as ours does.
    verify = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
    http = DefaultAsyncHttpxClient(verify=verify)
    client = AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, http_client=http)
    model = (await client.models.list()).data[0].id

    async def one() -> tuple[float, int]:
        started = time.perf_counter()
        ttft = 0.0
        count = 0
        stream = await client.completions.create(
            model=model,
            prompt=PROMPT,
            max_tokens=max_tokens,
            stop=list(STOP),
            temperature=0.7,
            top_p=0.95,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                if not count:
                    ttft = time.perf_counter() - started
                count += 1
        return ttft, count

    try:
        return await _drive(one, streams, concurrency)
    finally:
        await client.close()


async def _drive(one: Any, streams: int, concurrency: int) -> Measurement:
    remaining = streams
    ttfts: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal remaining, tokens
        while remaining > 0:
            remaining -= 1
            ttft, count = await one()
            ttfts.append(ttft)
            tokens += count

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Measurement(streams, seconds, ttfts, tokens)


def _client(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # text-generation's .dict()
    tokens = args.max_tokens or TOKENS + 50
    if args.client == "ours":
        run = _ours(args.url, args.streams, args.concurrency, args.api, tokens)
    elif args.client == "openai":
        run = _openai(args.url, args.streams, args.concurrency, tokens)
    else:
        run = _stock(args.url, args.streams, args.concurrency)
    result = asyncio.run(run)
    print(json.dumps(result.__dict__))
    return 0


# --- the orchestrator --------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def _make_tls(directory: Path) -> TLSFiles:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.key))
    with files.cert.open("wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    return files


class FakeServer:
    """`python -m tests.fakes.tgi` (or `.openai`) in a subprocess; its URL and connections."""

    def __init__(self, token_delay: float, tls: TLSFiles | None, api: str = "tgi") -> None:
        limit = "--max-total-tokens" if api == "tgi" else "--context"
        command = [
            sys.executable, "-m", f"tests.fakes.{api}", "--port", "0",
            "--token-delay", str(token_delay), "--reply", REPLY, limit, "4096",
        ]  # fmt: skip
        if tls is not None:
            command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"https?://\S+", line)
        if match is None:
            self.process.kill()
            raise RuntimeError(f"the fake TGI did not start: {line!r}")
        self.url = match.group()
        self._context = ssl.create_default_context(cafile=str(tls.ca)) if tls else None

    def connections(self) -> int:
        """Connections the server has accepted for TGI requests so far."""
        with urllib.request.urlopen(self.url + "/_fake/stats", context=self._context) as answer:
            return int(json.load(answer)["connections"])

    def stop(self) -> None:
        """Stop the server process."""
        self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def _servers(
    token_delay: float, api: str
) -> Iterator[dict[str, tuple[FakeServer, TLSFiles | None]]]:
    with tempfile.TemporaryDirectory(prefix="koalabot-bench-") as directory:
        tls = _make_tls(Path(directory))
        started: dict[str, tuple[FakeServer, TLSFiles | None]] = {}
        try:
            started["http"] = (FakeServer(token_delay, None, api), None)
            started["https"] = (FakeServer(token_delay, tls, api), tls)
            yield started
        finally:
            for server, _ in started.values():
                server.stop()


def _measure(
    server: Any,
    tls: TLSFiles | None,
    impl: str,
    streams: int,
    concurrency: int,
    api: str = "tgi",
    max_tokens: int = 0,
) -> dict[str, Any]:
    env = dict(os.environ)
    if tls is not None:
        env["SSL_CERT_FILE"] = str(tls.ca)
    before = server.connections()
    command = [
        sys.executable, "-m", "bench.backend", "--client", impl, "--url", server.url,
        "--streams", str(streams), "--concurrency", str(concurrency), "--api", api,
        "--max-tokens", str(max_tokens),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} client failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["connections"] = server.connections() - before
    return result


@dataclass
class Row:
    """The two runs of one client at one protocol and concurrency, summarised."""

    protocol: str
    concurrency: int
    impl: str
    streams_per_s: float
    ttft_ms: float
    connections_per_stream: float
    max_connections: int


def _summarise(protocol: str, concurrency: int, impl: str, runs: list[dict[str, Any]]) -> Row:
    return Row(
        protocol,
        concurrency,
        impl,
        statistics.mean(r["streams"] / r["seconds"] for r in runs),
        statistics.median(t for r in runs for t in r["ttfts"]) * 1000,
        sum(r["connections"] for r in runs) / sum(r["streams"] for r in runs),
        max(r["connections"] for r in runs),
    )


def _table(rows: list[Row]) -> str:
    header = (
        f"{'proto':<6}{'conc':>5}  {'client':<6}{'streams/s':>11}{'ratio':>8}"
        f"{'TTFT ms':>10}{'ratio':>8}{'conn/stream':>13}"
    )
    lines = [header, "-" * len(header)]
    stock = {(r.protocol, r.concurrency): r for r in rows if r.impl != "ours"}
    for row in rows:
        base = stock[(row.protocol, row.concurrency)]
        speed = row.streams_per_s / base.streams_per_s
        ttft = row.ttft_ms / base.ttft_ms
        lines.append(
            f"{row.protocol:<6}{row.concurrency:>5}  {row.impl:<6}{row.streams_per_s:>11.1f}"
            f"{speed:>7.2f}x{row.ttft_ms:>10.2f}{ttft:>7.2f}x{row.connections_per_stream:>13.3f}"
        )
    return "\n".join(lines)


def _verdicts_openai(rows: list[Row]) -> list[tuple[bool, str]]:
    """Not slower than AsyncOpenAI in streams/s nor in median TTFT, at any concurrency."""
    by = {(r.protocol, r.concurrency, r.impl): r for r in rows}
    verdicts = []
    for protocol in ("http", "https"):
        for concurrency in CONCURRENCY:
            ours, theirs = (
                by[(protocol, concurrency, "ours")],
                by[(protocol, concurrency, "openai")],
            )
            speed = ours.streams_per_s / theirs.streams_per_s
            ttft = ours.ttft_ms / theirs.ttft_ms
            verdicts.append((speed >= 1.0, f"{protocol} at {concurrency}: {speed:.2f}x streams/s"))
            verdicts.append((ttft <= 1.0, f"{protocol} at {concurrency}: {ttft:.2f}x median TTFT"))
    return verdicts


def _verdicts(rows: list[Row]) -> list[tuple[bool, str]]:
    if any(r.impl == "openai" for r in rows):
        return _verdicts_openai(rows)
    by = {(r.protocol, r.concurrency, r.impl): r for r in rows}
    ours, stock = by[("https", 1, "ours")], by[("https", 1, "stock")]
    speed = ours.streams_per_s / stock.streams_per_s
    ttft = ours.ttft_ms / stock.ttft_ms
    verdicts = [
        (speed >= 1.8, f"HTTPS, 1 stream at a time: {speed:.2f}x the stock streams/s (≥ 1.8x)"),
        (ttft <= 1 / 3, f"HTTPS, 1 stream at a time: {ttft:.2f}x the stock median TTFT (≤ 0.33x)"),
    ]
    for row in rows:
        if row.impl == "ours":
            fine = row.max_connections <= row.concurrency
            verdicts.append(
                (
                    fine,
                    f"{row.protocol} at {row.concurrency}: at most {row.max_connections} "
                    f"connections for {row.concurrency} concurrent streams",
                )
            )
    for protocol in ("http", "https"):
        for concurrency in (16, 64):
            ratio = (
                by[(protocol, concurrency, "ours")].streams_per_s
                / by[(protocol, concurrency, "stock")].streams_per_s
            )
            verdicts.append(
                (ratio >= 1.0, f"{protocol} at {concurrency}: {ratio:.2f}x the stock streams/s")
            )
    return verdicts


def _orchestrate(args: argparse.Namespace) -> int:
    scale = 4 if args.quick else 1
    started = time.perf_counter()
    print(
        f"{TOKENS}-token streams, {args.token_delay * 1000:g} ms per token, "
        f"{'fake TGI' if args.api == 'tgi' else 'fake OpenAI-compatible server'} in another "
        f"process on 127.0.0.1. Two runs per client, alternating: streams/s is their mean, TTFT "
        f"the median over both. Load average before: {os.getloadavg()[0]:.1f} (2 cores: above "
        f"~1, other work is skewing the figures).",
        flush=True,
    )
    rows = []
    impls = CLIENTS[args.api]
    with _servers(args.token_delay, args.api) as servers:
        for protocol, (server, tls) in servers.items():
            for concurrency in CONCURRENCY:
                streams = max(concurrency, STREAMS[concurrency] // scale)
                runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
                for order in (impls, impls[::-1]):
                    for impl in order:
                        runs[impl].append(
                            _measure(server, tls, impl, streams, concurrency, args.api)
                        )
                for impl in impls:
                    rows.append(_summarise(protocol, concurrency, impl, runs[impl]))
                print(f"  {protocol} at {concurrency}: {streams} streams per run", flush=True)
    print()
    print(_table(rows))
    print()
    verdicts = _verdicts(rows)
    for ok, text in verdicts:
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    elapsed = time.perf_counter() - started
    if args.llama:
        print()
        print(_llama_rows())
    print(f"\n(total {elapsed:.0f} s; load average after: {os.getloadavg()[0]:.1f})")
    return 1 if args.check and not all(ok for ok, _ in verdicts) else 0


class _Llama:
    """The tests' real llama.cpp server (tests/fixtures/llama.py), for ``_measure``."""

    def __init__(self, directory: Path) -> None:
        from tests.fixtures.llama import LlamaServer, write_tiny_gguf

        self.server = LlamaServer(write_tiny_gguf(directory / "tiny.gguf"))
        self.server.start(directory / "server.log")
        self.server.wait_ready()
        self.url = self.server.url

    def connections(self) -> int:
        return 0  # the real server does not count them


def _llama_rows() -> str:
    """Time to first token and tokens/s against llama-cpp-python's server, ours vs AsyncOpenAI."""
    lines = [
        f"real llama.cpp (llama-cpp-python server, tiny GGUF), {LLAMA_STREAMS} streams of up to "
        f"{LLAMA_TOKENS} tokens, one at a time:",
        f"{'client':<8}{'TTFT ms':>10}{'tokens/s':>10}",
    ]
    with tempfile.TemporaryDirectory(prefix="koalabot-bench-llama-") as directory:
        llama = _Llama(Path(directory))
        try:
            for impl in ("ours", "openai"):
                run = _measure(llama, None, impl, LLAMA_STREAMS, 1, "openai", LLAMA_TOKENS)
                ttft = statistics.median(run["ttfts"]) * 1000
                lines.append(f"{impl:<8}{ttft:>10.2f}{run['tokens'] / run['seconds']:>10.1f}")
        finally:
            llama.server.stop()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or, with --client, one measurement)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.backend", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a quarter of the streams")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--api", choices=tuple(CLIENTS), default="tgi", help="server kind")
    parser.add_argument("--llama", action="store_true", help="add rows against llama.cpp")
    parser.add_argument("--client", choices=("ours", "stock", "openai"), help=argparse.SUPPRESS)
    parser.add_argument("--max-tokens", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _client(args) if args.client else _orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
