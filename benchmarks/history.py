"""Persistence benchmark: what storing conversations adds to time to first delta and CPU, and how fast the list is.

Not a test: it prints figures. One run starts, each as its own subprocess on 127.0.0.1, the fake
upstream (``python -m tests.fake_upstream``) and one service per database — SQLite (a file in a
temporary directory) and PostgreSQL (a database of its own on 127.0.0.1:5432, dropped at the
end; ``--databases sqlite`` skips it). On each service the same streams run with ``store``
false and true, taking turns, so the difference is what persistence adds:

- TTFD: 1 client, sequential 20-token streams: ``store: false``, ``store: true`` starting a new
  conversation each time, and ``store: true`` continuing one conversation (its stored history,
  up to ``history.max_messages``, is read and sent upstream); p50/p99 added over ``store: false``.
- CPU: 64 clients, 128 streams, one token per upstream read 10 ms apart, at two answer lengths
  (200 and 2,000 tokens): the service's CPU-seconds per 1,000 tokens with store false and true,
  and the extra CPU per answer. Persistence costs a few writes per answer plus one checkpoint
  per ``history.checkpoint_seconds`` of streaming (a 2,000-token answer at this pace streams
  for 20 s); ``--checkpoint-seconds 1000`` leaves the checkpoints out, so that what is left at
  both lengths is the per-answer cost, and any per-token cost would show as a tenfold growth.
- RESUME (``--scenarios resume``): the CPU scenario and sequential ``store: true`` TTFD on two
  more services of the same database, ``streams.resume`` on (in process; and through Redis with
  ``--resume-redis redis://127.0.0.1:6379/0``), against the first (resume off): what keeping each
  answer resumable costs (one list append per upstream read; with Redis one queued write per read).
- LIST: ``GET /conversations?limit=20`` p50/p99 with 10,000 conversations of one owner (seeded
  straight into the database, as migrated), the first page and a page deep in the walk.

Run from the repository root::

    .venv/bin/python -m benchmarks.history                # both databases, a few minutes
    .venv/bin/python -m benchmarks.history --databases sqlite --repeat 1
    .venv/bin/python -m benchmarks.history --scenarios cpu --checkpoint-seconds 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks._loadclient import HOST, HttpConn, LoadResult, Target, bench_model, bench_text, one_stream, pct
from benchmarks.relay import REPO, Server, free_port, start_upstream, wait_healthy

__all__ = ("main",)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class ChatTarget(Target):
    """The service's ``/chat`` with extra body fields (``store``, ``conversation_id``)."""

    extra: dict[str, Any] | None = None

    def body(self, model: str) -> tuple[bytes, bytes]:
        return b"/chat", json.dumps({"message": "hi", "model": model, **(self.extra or {})}).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Persistence benchmark (see the module docstring).")
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--scenarios", default="ttfd,cpu,list", help="any of ttfd, cpu, list, resume")
    p.add_argument("--resume-redis", default="", help="resume scenario: also a service resuming through this Redis")
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=5.0,
        help="history.checkpoint_seconds of the services (a long one leaves checkpoints out of the CPU figures)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of the CPU scenario per setting (median)")
    p.add_argument("--ttfd-requests", type=int, default=300)
    p.add_argument("--cpu-clients", type=int, default=64)
    p.add_argument("--cpu-streams", type=int, default=128)
    p.add_argument("--cpu-tokens", default="200,2000")
    p.add_argument("--cpu-delay-ms", type=float, default=10.0)
    p.add_argument("--list-conversations", type=int, default=10_000)
    p.add_argument("--list-requests", type=int, default=300)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.cpu_tokens = [int(t) for t in args.cpu_tokens.split(",")]
    args.scenarios = {x.strip() for x in args.scenarios.split(",") if x.strip()}
    return args


def start_service(
    args: argparse.Namespace, upstream: Server, url: str, logdir: Path, name: str, **extra_env: str
) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("AGENT_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(
        APP_ENV="development",
        AGENT_LOG_LEVEL="warning",
        AGENT_PROVIDERS__LOCAL__BASE_URL=f"http://{HOST}:{upstream.port}/v1",
        AGENT_DATABASE__URL=url,
        AGENT_HISTORY__CHECKPOINT_SECONDS=str(args.checkpoint_seconds),
        **extra_env,
    )
    flags = ["--host", HOST, "--port", str(port), "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    cmd = [args.python, "-m", "uvicorn", "app:create_app", "--factory", *flags]
    log = logdir / f"{name}.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


@contextlib.contextmanager
def cpu_of(server: Server, res: LoadResult) -> Iterator[None]:
    c0 = server.cpu()
    busy0 = _busy()
    yield
    res.cpu = server.cpu() - c0
    res.others_cpu = max(0.0, _busy() - busy0 - res.cpu)


def _busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class Collect:
    def __init__(self) -> None:
        self.data = b""

    def feed(self, data: bytes) -> None:
        self.data += data


async def get_json(conn: HttpConn, path: str) -> Any:
    sink = Collect()
    status, _ = await conn.request(b"GET", path.encode(), b"", sink)
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status} {sink.data[:200]!r}")
    return json.loads(sink.data)


async def first_conversation(port: int, model: str) -> str:
    conn = HttpConn(HOST, port)
    try:
        sink = Collect()
        await conn.request(b"POST", b"/chat", json.dumps({"message": "start", "model": model}).encode(), sink)
        cid: str = json.loads(sink.data.split(b"\n", 1)[0])["meta"]["conversation_id"]
        return cid
    finally:
        conn.close()


async def ttfd(port: int, n: int) -> dict[str, list[float]]:
    tokens = 20
    model, expected = bench_model(tokens), bench_text(tokens)
    cid = await first_conversation(port, model)
    targets = [
        ChatTarget("off", port, extra={"store": False}),
        ChatTarget("new", port, extra={"store": True}),
        ChatTarget("continue", port, extra={"store": True, "conversation_id": cid}),
    ]
    conns = {t.name: HttpConn(HOST, port) for t in targets}
    found: dict[str, list[float]] = {t.name: [] for t in targets}
    failures: list[str] = []
    try:
        for i in range(n):
            for t in targets if i % 2 == 0 else targets[::-1]:
                outcome = await one_stream(conns[t.name], t, model, expected, 30)
                if outcome.failure:
                    failures.append(f"{t.name}: {outcome.failure}")
                elif outcome.ttfd is not None:
                    found[t.name].append(outcome.ttfd)
    finally:
        for c in conns.values():
            c.close()
    if failures:
        print(f"  !! {len(failures)} failed streams, e.g. {failures[0]}")
    return found


async def cpu_run(server: Server, store: bool, clients: int, streams: int, tokens: int, delay_ms: float) -> LoadResult:
    target = ChatTarget("store" if store else "off", server.port, extra={"store": store})
    model, expected = bench_model(tokens, 1, delay_ms), bench_text(tokens)
    res = LoadResult()
    indices = iter(range(streams))

    async def worker() -> None:
        conn = HttpConn(HOST, server.port)
        try:
            for _ in indices:
                res.record(await one_stream(conn, target, model, expected, 120), tokens)
        finally:
            conn.close()

    with cpu_of(server, res):
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        res.wall = time.perf_counter() - t0
    return res


async def seed(url: str, owner: str, count: int) -> None:
    """``count`` conversations of ``owner`` straight into the migrated schema (one message each)."""
    from app.history.models import Conversation, Message

    engine = create_async_engine(url)
    now = datetime.now(UTC)
    conversations, messages = [], []
    for n in range(count):
        cid = uuid.uuid4()
        moment = now - timedelta(seconds=count - n)
        conversations.append(
            {"id": cid, "owner": owner, "title": f"conversation {n}", "created_at": moment, "updated_at": moment,
             "message_count": 1, "streaming_message_id": None, "heartbeat_at": None}
        )  # fmt: skip
        messages.append(
            {"id": uuid.uuid4(), "conversation_id": cid, "position": 0, "role": "user", "content": f"question {n}",
             "created_at": moment}
        )  # fmt: skip
    try:
        async with engine.begin() as connection:
            for start in range(0, count, 1000):
                await connection.execute(insert(Conversation.__table__), conversations[start : start + 1000])
                await connection.execute(insert(Message.__table__), messages[start : start + 1000])
    finally:
        await engine.dispose()


async def list_timings(port: int, n: int) -> tuple[list[float], list[float]]:
    conn = HttpConn(HOST, port)
    first: list[float] = []
    deep: list[float] = []
    try:
        cursor = None
        for _ in range(250):  # 5,000 conversations in: a deep page's cursor
            page = await get_json(conn, "/conversations?limit=20" + (f"&cursor={cursor}" if cursor else ""))
            cursor = page["next_cursor"]
        for _ in range(n):
            t0 = time.perf_counter()
            page = await get_json(conn, "/conversations?limit=20")
            first.append(time.perf_counter() - t0)
            assert len(page["data"]) == 20
            t0 = time.perf_counter()
            await get_json(conn, f"/conversations?limit=20&cursor={cursor}")
            deep.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return first, deep


async def make_pg_database() -> tuple[str, str]:
    name = f"agb_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await connection.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_pg_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def ms(values: list[float], q: float) -> float:
    return pct(values, q) * 1e3


async def bench_database(args: argparse.Namespace, kind: str, upstream: Server, logdir: Path) -> dict[str, Any]:
    pg_name = None
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{logdir / 'bench.db'}"
    else:
        pg_name, url = await make_pg_database()
    server = start_service(args, upstream, url, logdir, f"service-{kind}")
    figures: dict[str, Any] = {}
    try:
        await wait_healthy(server, 30)
        # Warm-up: imports, code paths, pools.
        for store in (False, True):
            await cpu_run(server, store, 8, 40, 20, 0)

        if "ttfd" in args.scenarios:
            figures["ttfd"] = await ttfd_figures(server, args, kind)
        if "cpu" in args.scenarios:
            figures["cpu"] = await cpu_figures(server, args, kind)
        if "resume" in args.scenarios:
            figures["resume"] = await resume_figures(server, args, kind, upstream, url, logdir)
        if "list" in args.scenarios:
            figures["list"] = await list_figures(server, args, kind, url)
    finally:
        server.stop()
        if pg_name is not None:
            await drop_pg_database(pg_name)
    return figures


async def ttfd_figures(server: Server, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    found = await ttfd(server.port, args.ttfd_requests)
    off50, off99 = ms(found["off"], 50), ms(found["off"], 99)
    figures: dict[str, Any] = {"store_false_p50_ms": off50, "store_false_p99_ms": off99}
    print(f"\n== {kind}: TTFD, {args.ttfd_requests} sequential 20-token streams each")
    print(f"  store false            p50 {off50:7.3f} ms  p99 {off99:7.3f} ms")
    for name in ("new", "continue"):
        p50, p99 = ms(found[name], 50), ms(found[name], 99)
        figures[name] = {"p50_ms": p50, "p99_ms": p99, "added_p50_ms": p50 - off50, "added_p99_ms": p99 - off99}
        label = "store true, new" if name == "new" else "store true, continuing"
        print(
            f"  {label:22s} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms"
            f"  added p50 {p50 - off50:+.3f} ms  p99 {p99 - off99:+.3f} ms"
        )
    return figures


async def cpu_figures(server: Server, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    print(
        f"\n== {kind}: CPU, {args.cpu_clients} clients, {args.cpu_streams} streams,"
        f" 1 token/read {args.cpu_delay_ms:g} ms apart, checkpoints every {args.checkpoint_seconds:g} s"
    )
    figures: dict[str, Any] = {}
    for tokens in args.cpu_tokens:
        runs: dict[bool, list[LoadResult]] = {False: [], True: []}
        for _ in range(args.repeat):
            for store in (False, True):
                runs[store].append(
                    await cpu_run(server, store, args.cpu_clients, args.cpu_streams, tokens, args.cpu_delay_ms)
                )
        row: dict[str, Any] = {}
        for store in (False, True):
            per_1k = statistics.median(r.cpu_per_1k for r in runs[store])
            failures = sum(len(r.failures) for r in runs[store])
            others = statistics.median(r.others_cpu for r in runs[store])
            row["store" if store else "off"] = {"cpu_per_1k": per_1k, "failures": failures, "others_cpu": others}
            for r in runs[store]:
                for failure in r.failures[:2]:
                    print(f"  !! store {str(store).lower()}: {failure}")
        extra_per_stream_ms = (row["store"]["cpu_per_1k"] - row["off"]["cpu_per_1k"]) * tokens / 1000 * 1e3
        row["extra_cpu_per_stream_ms"] = extra_per_stream_ms
        figures[str(tokens)] = row
        print(
            f"  {tokens:5d} tokens: CPU s/1k tokens store false {row['off']['cpu_per_1k']:.4f}"
            f"  store true {row['store']['cpu_per_1k']:.4f}  (+{extra_per_stream_ms:.2f} ms CPU per answer;"
            f" failures {row['off']['failures']}/{row['store']['failures']};"
            f" others' CPU meanwhile {row['off']['others_cpu']:.1f}/{row['store']['others_cpu']:.1f} s)"
        )
    return figures


async def stored_ttfd(port: int, n: int) -> list[float]:
    """Sequential 20-token ``store: true`` streams, each a new conversation: their times to first delta."""
    model, expected = bench_model(20), bench_text(20)
    target = ChatTarget("store", port, extra={"store": True})
    conn = HttpConn(HOST, port)
    found: list[float] = []
    try:
        for _ in range(n):
            outcome = await one_stream(conn, target, model, expected, 30)
            if outcome.ttfd is not None and not outcome.failure:
                found.append(outcome.ttfd)
    finally:
        conn.close()
    return found


async def resume_figures(
    server: Server, args: argparse.Namespace, kind: str, upstream: Server, url: str, logdir: Path
) -> dict[str, Any]:
    """``store: true`` streams with resume off (``server``) and on, taking turns: CPU and TTFD."""
    variants = {"off": server}
    started: list[Server] = []
    try:
        on = start_service(args, upstream, url, logdir, f"service-{kind}-resume", AGENT_STREAMS__RESUME="true")
        started.append(on)
        variants["on"] = on
        if args.resume_redis:
            redis = start_service(
                args,
                upstream,
                url,
                logdir,
                f"service-{kind}-resume-redis",
                AGENT_STREAMS__RESUME="true",
                AGENT_STREAMS__REDIS_URL=args.resume_redis,
                AGENT_RATE_LIMIT__KEY_PREFIX=f"agent-backend-bench:{uuid.uuid4().hex[:8]}:",
            )
            started.append(redis)
            variants["redis"] = redis
        for extra in started:
            await wait_healthy(extra, 30)
            await cpu_run(extra, True, 8, 40, 20, 0)
        print(f"\n== {kind}: resume off / on{' / on through Redis' if args.resume_redis else ''}, store true")
        figures: dict[str, Any] = {}
        ttfd_runs: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(max(1, args.ttfd_requests // 50)):
            for name, target in variants.items():  # taking turns, 50 streams at a time
                ttfd_runs[name].extend(await stored_ttfd(target.port, 50))
        figures["ttfd"] = {name: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99)} for name, v in ttfd_runs.items()}
        print("  TTFD " + "  ".join(f"{n}: p50 {ms(v, 50):.3f} p99 {ms(v, 99):.3f} ms" for n, v in ttfd_runs.items()))
        for tokens in args.cpu_tokens:
            runs: dict[str, list[LoadResult]] = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, target in variants.items():
                    runs[name].append(
                        await cpu_run(target, True, args.cpu_clients, args.cpu_streams, tokens, args.cpu_delay_ms)
                    )
            row = {name: statistics.median(r.cpu_per_1k for r in results) for name, results in runs.items()}
            failures = {name: sum(len(r.failures) for r in results) for name, results in runs.items()}
            figures[str(tokens)] = {"cpu_per_1k": row, "failures": failures}
            print(
                f"  {tokens:5d} tokens: CPU s/1k tokens "
                + "  ".join(f"{n} {v:.4f}" for n, v in row.items())
                + f"  (failures {failures})"
            )
        return figures
    finally:
        for extra in started:
            extra.stop()


async def list_figures(server: Server, args: argparse.Namespace, kind: str, url: str) -> dict[str, Any]:
    await seed(url, "anonymous", args.list_conversations)
    first, deep = await list_timings(server.port, args.list_requests)
    print(f"\n== {kind}: GET /conversations?limit=20 with {args.list_conversations:,}+ conversations of one owner")
    print(f"  first page p50 {ms(first, 50):.3f} ms  p99 {ms(first, 99):.3f} ms")
    print(f"  page 251   p50 {ms(deep, 50):.3f} ms  p99 {ms(deep, 99):.3f} ms")
    return {
        "conversations": args.list_conversations,
        "first_page_p50_ms": ms(first, 50),
        "first_page_p99_ms": ms(first, 99),
        "deep_page_p50_ms": ms(deep, 50),
        "deep_page_p99_ms": ms(deep, 99),
    }


async def run(args: argparse.Namespace) -> int:
    logdir = Path(tempfile.mkdtemp(prefix="history-bench-"))
    upstream = start_upstream(args.python, logdir, 30)
    results: dict[str, Any] = {"machine": {"cores": psutil.cpu_count(), "load_1min": os.getloadavg()[0]}}
    try:
        for kind in args.databases:
            results[kind] = await bench_database(args, kind, upstream, logdir)
    finally:
        upstream.stop()
    results["machine"]["load_1min_after"] = os.getloadavg()[0]
    print(
        f"\nmachine: {results['machine']['cores']} cores, load average {results['machine']['load_1min']:.2f}"
        f" before, {results['machine']['load_1min_after']:.2f} after (shared: compare within one run)"
    )
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
