"""Auth and rate-limit benchmark: time to first delta that authentication and the limit checks add.

Not a test: it prints a figures table. One run starts, each as its own subprocess on 127.0.0.1,
the fake upstream (``python -m tests.fake_upstream``) and one service per variant, all through
``benchmarks/relay.py``'s server helpers and with the same uvicorn flags (uvloop, httptools, no
access log):

- ``open``: auth off, limits off — the reference;
- ``open-again``: the same as ``open`` in a process of its own — the noise floor: what two
  identical services differ by on this machine right now;
- ``key``: an API key (``X-API-Key``), limits off;
- ``key+memory``: an API key, limits counted in the process;
- ``key+redis``: an API key, limits in Redis (``--redis-url``, loopback by default), under a key
  prefix of this run's own (deleted at the end);
- ``basic+redis``: HTTP Basic with an Argon2 hash (its success cache makes each check after the
  first a dictionary look-up), limits in Redis.

The middleware itself costs about 10 µs per request (measured in-process); differences between
services that are much smaller than ``open-again``'s are noise.

Every request is a sequential 20-token stream on a keep-alive connection, the variants taking
turns request by request so that drift on a shared machine hits all alike. Time to first delta
is measured in this process (the load client of ``benchmarks/_loadclient.py``); "added" is the
variant's percentile minus ``open``'s. With limits on, a request costs the failure check in the
middleware and the admission in the pipeline before the first delta (one Redis round trip each
with Redis), and the slot's release after the stream.

Run from the repository root::

    .venv/bin/python -m benchmarks.auth                 # 400 streams per variant, about a minute
    .venv/bin/python -m benchmarks.auth --requests 1000 --variants open,key+redis
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from app.auth import key_hash, new_api_key
from benchmarks._loadclient import HOST, HttpConn, NdjsonSink, bench_model, bench_text, pct
from benchmarks.relay import Server, _busy_cpu, _proc_cpu, start_relay, start_upstream, wait_healthy

__all__ = ("main",)

VARIANTS = ("open", "open-again", "key", "key+memory", "key+redis", "basic+redis")
KEY = new_api_key()
USER, PASSWORD = "bench", "bench-password"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time to first delta added by auth and rate limits (see the docstring).")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {','.join(VARIANTS)} (open is always run)")
    p.add_argument("--requests", type=int, default=400, help="sequential streams per variant")
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--warmup", type=int, default=40, help="streams per variant before measuring")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--start-timeout", type=float, default=30.0)
    p.add_argument("--stream-timeout", type=float, default=30.0)
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers (the venv's)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in chosen:
        if variant not in VARIANTS:
            p.error(f"--variants: unknown variant {variant!r}")
    args.variants = [v for v in VARIANTS if v == "open" or v in chosen]
    if args.requests < 10:
        p.error("--requests: at least 10")
    return args


def variant_env(variant: str, redis_url: str, prefix: str) -> dict[str, str]:
    """The service's configuration for ``variant`` (on top of ``start_relay``'s)."""
    from argon2 import PasswordHasher

    env = {"APP_ENV": "testing", "AGENT_LOG_LEVEL": "warning"}
    if variant.startswith("open"):
        return env
    env |= {"AGENT_AUTH__ENABLED": "true", "AGENT_AUTH__API_KEYS__BENCH": key_hash(KEY)}
    if variant.startswith("basic"):
        env |= {"AGENT_AUTH__USERNAME": USER, "AGENT_AUTH__PASSWORD": PasswordHasher().hash(PASSWORD)}
    if "+" in variant:
        env |= {
            "AGENT_RATE_LIMIT__ENABLED": "true",
            "AGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": "100000000",
            "AGENT_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE": "100000000",
        }
    if variant.endswith("+redis"):
        env |= {"AGENT_RATE_LIMIT__REDIS_URL": redis_url, "AGENT_RATE_LIMIT__KEY_PREFIX": prefix}
    return env


def credential(variant: str) -> bytes:
    if variant.startswith("open"):
        return b""
    if variant.startswith("basic"):
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return f"authorization: Basic {token}\r\n".encode()
    return f"x-api-key: {KEY}\r\n".encode()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``start_relay`` copies this process's environment: set a variant's variables around the start."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def one(conn: HttpConn, headers: bytes, model: str, expected: str, limit: float) -> float:
    """One stream; its time to first delta in seconds (raises on any failure)."""
    sink = NdjsonSink()
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        body = json.dumps({"message": "hi", "model": model}).encode()
        status, _ = await conn.request(b"POST", b"/chat", body, sink, headers=headers)
    failure = sink.verdict(status, expected)
    if failure:
        raise SystemExit(f"a stream failed: {failure}")
    return sink.first_delta_at - started


async def measure(args: argparse.Namespace, servers: dict[str, Server]) -> dict[str, list[float]]:
    model, expected = bench_model(args.tokens), bench_text(args.tokens)
    conns = {name: HttpConn(HOST, server.port) for name, server in servers.items()}
    headers = {name: credential(name) for name in servers}
    times: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for number in range(args.warmup + args.requests):
            order = list(servers) if number % 2 == 0 else list(servers)[::-1]
            for name in order:
                ttfd = await one(conns[name], headers[name], model, expected, args.stream_timeout)
                if number >= args.warmup:
                    times[name].append(ttfd)
    finally:
        for conn in conns.values():
            conn.close()
    return times


async def cleanup_redis(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def report(times: dict[str, list[float]], others: float) -> dict[str, dict[str, float]]:
    base50, base99 = pct(times["open"], 50), pct(times["open"], 99)
    figures: dict[str, dict[str, float]] = {}
    print(f"\nTime to first delta, {len(times['open'])} sequential streams per variant, interleaved")
    cores = psutil.cpu_count() or 1
    print(f"(processes outside this benchmark used {others:.2f} of the machine's {cores} cores meanwhile)\n")
    print("| variant | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        p50, p99 = pct(values, 50), pct(values, 99)
        figures[name] = {
            "p50_ms": p50 * 1e3,
            "p99_ms": p99 * 1e3,
            "added_p50_ms": (p50 - base50) * 1e3,
            "added_p99_ms": (p99 - base99) * 1e3,
        }
        added = "—" if name == "open" else f"{(p50 - base50) * 1e3:+.3f}"
        added99 = "—" if name == "open" else f"{(p99 - base99) * 1e3:+.3f}"
        print(f"| {name} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} | {added} | {added99} |")
    return figures


async def run(args: argparse.Namespace) -> dict[str, object]:
    prefix = f"agent-backend-bench:{uuid.uuid4().hex[:8]}:"
    logdir = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    upstream = start_upstream(args.python, logdir, args.start_timeout)
    servers: dict[str, Server] = {}
    try:
        for variant in args.variants:
            with environment(variant_env(variant, args.redis_url, prefix)):
                servers[variant] = start_relay("service", args, upstream, logdir)
            servers[variant].name = variant
        for server in servers.values():
            await wait_healthy(server, args.start_timeout)
        me = psutil.Process()

        def ours() -> float:
            return sum(server.cpu() for server in servers.values()) + upstream.cpu() + _proc_cpu(me)

        busy0, ours0, wall0 = _busy_cpu(), ours(), time.monotonic()
        times = await measure(args, servers)
        wall = time.monotonic() - wall0
        others = max(0.0, (_busy_cpu() - busy0) - (ours() - ours0)) / wall  # CPU-seconds per second
        figures: dict[str, object] = {"others_cores": others, "figures": report(times, others)}
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()
        if any(variant.endswith("+redis") for variant in args.variants):
            await cleanup_redis(args.redis_url, prefix)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
