"""Relay benchmark: CPU per 1,000 relayed tokens, time to first delta and RSS, service vs baseline.

Not a test: it prints a figures table (see ``PERFORMANCE.md`` for the bar). One run starts,
each as its own subprocess on 127.0.0.1:

- the fake upstream, ``python -m tests.fake_upstream`` (generates ``bench:…`` models);
- the service under test, ``uvicorn app:create_app --factory`` (uvloop + httptools, no
  access log), pointed at the fake through ``AGENT_PROVIDERS__LOCAL__BASE_URL``;
- the baseline, ``benchmarks/fastapi_relay.py`` under the same uvicorn flags.

The load client is this process (raw asyncio streams, hand-written HTTP/1.1, keep-alive),
so its CPU is not counted. CPU is the relay process's user+system CPU-seconds (psutil) over
a scenario divided by the tokens relayed, per 1,000 tokens. Every stream is checked: the
concatenated deltas must equal the upstream's text and the stream must end with one ``done``
line; failures are counted and printed (a relay that drops content must not look fast).

Scenarios (counts are options):

- TTFD: 1 client, sequential 20-token streams, interleaved direct / service / baseline; time
  from sending the request to the first delta; "added" = relay − direct.
- A: 1 client, 100 streams of 200 tokens, the upstream as fast as it can go (1 token/write).
- B: 32 clients, 320 streams of 500 tokens, 50 tokens per upstream write.
- D: 64 clients, 128 streams of 200 tokens, one token per write, 10 ms apart.

Run from the repository root::

    .venv/bin/python -m benchmarks.relay                 # everything (~2 minutes)
    .venv/bin/python -m benchmarks.relay --only baseline --scenarios ttfd,d
    .venv/bin/python -m benchmarks.relay --profile d     # py-spy flame graphs of each relay in D
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil  # type: ignore[import-untyped]

__all__ = ("main",)

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
RELAYS = ("service", "baseline")
SCENARIOS = ("ttfd", "a", "b", "d")

_decode = msgspec.json.decode


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Relay benchmark (see module docstring).")
    p.add_argument("--only", default=",".join(RELAYS), help="relays to run: service,baseline")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="ttfd,a,b,d")
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers (the venv's)")
    p.add_argument("--ttfd-requests", type=int, default=200)
    p.add_argument("--ttfd-tokens", type=int, default=20)
    p.add_argument("--a-streams", type=int, default=100)
    p.add_argument("--a-tokens", type=int, default=200)
    p.add_argument("--a-per-write", type=int, default=1)
    p.add_argument("--b-clients", type=int, default=32)
    p.add_argument("--b-streams", type=int, default=320)
    p.add_argument("--b-tokens", type=int, default=500)
    p.add_argument("--b-per-write", type=int, default=50)
    p.add_argument("--d-clients", type=int, default=64)
    p.add_argument("--d-streams", type=int, default=128)
    p.add_argument("--d-tokens", type=int, default=200)
    p.add_argument("--d-delay-ms", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=40, help="sequential warm-up streams per server")
    p.add_argument("--stream-timeout", type=float, default=60.0, help="seconds allowed for one stream")
    p.add_argument("--scenario-timeout", type=float, default=180.0, help="seconds allowed for one run")
    p.add_argument("--start-timeout", type=float, default=30.0, help="seconds allowed for a server start")
    p.add_argument("--profile", default="", help="scenario to record with py-spy (a, b or d)")
    p.add_argument("--profile-dir", default="benchmarks/profiles")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' stderr logs")
    args = p.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    args.scenarios = [s.strip().lower() for s in args.scenarios.split(",") if s.strip()]
    for r in args.only:
        if r not in RELAYS:
            p.error(f"--only: unknown relay {r!r} (choose from {', '.join(RELAYS)})")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"--scenarios: unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
    if args.profile and args.profile not in ("a", "b", "d"):
        p.error("--profile: one of a, b, d")
    return args


def bench_model(tokens: int, per_write: int = 1, delay_ms: float = 0.0) -> str:
    return f"bench:tokens={tokens}:per_write={per_write}:delay_ms={delay_ms:g}"


def bench_text(tokens: int) -> str:
    # Same text as tests.fake_upstream.bench_text; repeated so the client needs no import of it.
    return "".join(f"tok{i} " for i in range(1, tokens + 1))


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss / 2**20)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def start_upstream(python: str, logdir: Path, timeout: float) -> Server:
    log = logdir / "upstream.log"
    proc = subprocess.Popen(
        [python, "-m", "tests.fake_upstream", "--host", HOST, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    # readline blocks; the fake prints READY within a second or dies (EOF), so this is bounded.
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith(b"READY "):
            break
    if not line.startswith(b"READY "):
        proc.kill()
        raise SystemExit(f"fake upstream did not start: {line!r}\n{log.read_text(errors='replace')}")
    return Server("upstream", proc, int(line.split()[1]), log)


def start_relay(name: str, python: str, upstream: Server, logdir: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    base_url = f"http://{HOST}:{upstream.port}/v1"
    common = [
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    if name == "service":
        env["AGENT_PROVIDERS__LOCAL__BASE_URL"] = base_url
        env.setdefault("APP_ENV", "development")
        cmd = [python, "-m", "uvicorn", "app:create_app", "--factory", *common]
    else:
        env["BASELINE_UPSTREAM_BASE_URL"] = base_url
        cmd = [python, "-m", "uvicorn", "benchmarks.fastapi_relay:app", *common]
    log = logdir / f"{name}.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


async def wait_healthy(server: Server, limit: float) -> None:
    deadline = time.monotonic() + limit
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        conn = HttpConn(HOST, server.port)
        try:
            async with asyncio.timeout(2):
                status, _ = await conn.request(b"GET", b"/health", b"", _Discard())
            if status == 200:
                return
        except (OSError, ConnectionError, TimeoutError) as exc:
            last = exc
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise SystemExit(f"{server.name} not healthy after {limit:.0f}s ({last!r}):\n{server.log_tail()}")


# --------------------------------------------------------------------------- the client


class _Discard:
    def feed(self, data: bytes) -> None:
        pass


class HttpConn:
    """One keep-alive HTTP/1.1 client connection, hand-written to be cheap."""

    __slots__ = ("buf", "host", "port", "reader", "writer")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.buf.clear()

    async def _more(self) -> None:
        assert self.reader is not None
        data = await self.reader.read(262144)
        if not data:
            raise ConnectionError("server closed the connection mid-response")
        self.buf += data

    async def request(self, method: bytes, path: bytes, body: bytes, sink: Any) -> tuple[int, dict[str, str]]:
        """Send one request; feed each decoded body piece to ``sink.feed`` as it arrives."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.writer is not None
        self.writer.write(
            b"%b %b HTTP/1.1\r\nhost: %b:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (method, path, self.host.encode(), self.port, len(body), body)
        )
        buf = self.buf
        while (i := buf.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(buf[:i]).decode("latin-1").split("\r\n")
        del buf[: i + 4]
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                while (j := buf.find(b"\r\n")) < 0:
                    await self._more()
                size = int(bytes(buf[:j]).split(b";", 1)[0], 16)
                if size == 0:
                    while len(buf) < j + 4:
                        await self._more()
                    del buf[: j + 4]
                    break
                end = j + 2 + size
                while len(buf) < end + 2:
                    await self._more()
                sink.feed(bytes(buf[j + 2 : end]))
                del buf[: end + 2]
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(buf) < n:
                await self._more()
            if n:
                sink.feed(bytes(buf[:n]))
            del buf[:n]
        else:  # close-delimited
            assert self.reader is not None
            while data := await self.reader.read(262144):
                buf += data
            sink.feed(bytes(buf))
            self.close()
            return status, headers
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers


class NdjsonSink:
    """Reads the relays' NDJSON, times the first delta and checks the stream's shape."""

    __slots__ = ("buf", "errors", "first_delta_at", "lines", "meta", "parts", "terminal")

    def __init__(self) -> None:
        self.buf = b""
        self.parts: list[str] = []
        self.first_delta_at = 0.0
        self.meta = False
        self.terminal: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.lines = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        if b"\n" not in data:
            return
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if not line:
                continue
            try:
                obj = _decode(line)
            except msgspec.DecodeError:
                self.errors.append(f"bad JSON line {line[:80]!r}")
                continue
            self.lines += 1
            if self.terminal is not None:
                self.errors.append(f"line after the terminal line: {line[:80]!r}")
            elif "delta" in obj:
                if not self.parts:
                    self.first_delta_at = time.perf_counter()
                if not obj["delta"]:
                    self.errors.append("empty delta")
                self.parts.append(obj["delta"])
            elif "meta" in obj:
                if self.lines != 1:
                    self.errors.append("meta is not the first line")
                self.meta = True
            elif "done" in obj or "error" in obj:
                self.terminal = obj
            elif self.lines == 1:
                self.errors.append(f"first line is not meta: {line[:80]!r}")

    def verdict(self, status: int, expected: str) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        if self.buf.strip():
            self.errors.append(f"unterminated last line {self.buf[:80]!r}")
        if self.errors:
            return "; ".join(self.errors[:3])
        if not self.meta:
            return "no meta line"
        text = "".join(self.parts)
        if text != expected:
            return (
                f"text differs: got {len(text)} chars, want {len(expected)} ({_first_diff(text, expected)})"
            )
        if self.terminal is None:
            return "no terminal line"
        if self.terminal.get("done") is not True:
            return f"ended with {json.dumps(self.terminal)[:200]}"
        if self.terminal.get("finish_reason") != "stop":
            return f"finish_reason {self.terminal.get('finish_reason')!r}"
        return None


class SseSink:
    """Reads the upstream's SSE directly (the TTFD reference): first content chunk, text, [DONE]."""

    __slots__ = ("buf", "done", "finish", "first_delta_at", "parts")

    def __init__(self) -> None:
        self.buf = b""
        self.parts: list[str] = []
        self.first_delta_at = 0.0
        self.done = False
        self.finish: str | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        *events, self.buf = self.buf.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data:"):
                continue
            payload = ev[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            obj = _decode(payload)
            for choice in obj.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if not self.parts:
                        self.first_delta_at = time.perf_counter()
                    self.parts.append(content)
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]

    def verdict(self, status: int, expected: str) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        text = "".join(self.parts)
        if text != expected:
            return f"text differs ({_first_diff(text, expected)})"
        if not self.done or self.finish != "stop":
            return f"ended badly (done={self.done}, finish={self.finish!r})"
        return None


def _first_diff(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at {n}: {a[n : n + 20]!r} vs {b[n : n + 20]!r}"


@dataclass
class Target:
    name: str
    port: int
    direct: bool = False

    def body(self, model: str) -> tuple[bytes, bytes]:
        if self.direct:
            payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
            return b"/v1/chat/completions", json.dumps(payload).encode()
        return b"/chat", json.dumps({"message": "hi", "model": model}).encode()

    def sink(self) -> NdjsonSink | SseSink:
        return SseSink() if self.direct else NdjsonSink()


@dataclass
class StreamResult:
    ttfd: float | None
    failure: str | None


async def one_stream(
    conn: HttpConn, target: Target, model: str, expected: str, stream_limit: float
) -> StreamResult:
    path, body = target.body(model)
    sink = target.sink()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(stream_limit):
            status, _ = await conn.request(b"POST", path, body, sink)
    except (OSError, ConnectionError, TimeoutError, ValueError, IndexError) as exc:
        conn.close()
        return StreamResult(None, f"{type(exc).__name__}: {exc}")
    failure = sink.verdict(status, expected)
    ttfd = sink.first_delta_at - t0 if sink.first_delta_at else None
    return StreamResult(ttfd, failure)


@dataclass
class LoadResult:
    streams: int = 0
    tokens: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    upstream_cpu: float = 0.0
    client_cpu: float = 0.0
    rss_mb: float = 0.0
    ttfd: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / self.tokens * 1000 if self.tokens else float("nan")


async def run_streams(
    target: Target,
    clients: int,
    streams: int,
    model: str,
    tokens: int,
    stream_limit: float,
    total_limit: float,
) -> LoadResult:
    expected = bench_text(tokens)
    res = LoadResult()
    next_index = iter(range(streams))

    async def worker() -> None:
        conn = HttpConn(HOST, target.port)
        try:
            for _ in next_index:  # shared iterator: each stream index is taken once
                r = await one_stream(conn, target, model, expected, stream_limit)
                res.streams += 1
                if r.ttfd is not None:
                    res.ttfd.append(r.ttfd)
                if r.failure:
                    res.failures.append(r.failure)
                else:
                    res.tokens += tokens
        finally:
            conn.close()

    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(total_limit):
            await asyncio.gather(*(worker() for _ in range(clients)))
    except TimeoutError:
        res.failures.append(f"scenario timed out after {total_limit:.0f}s ({res.streams}/{streams} streams)")
    res.wall = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- measurement


@contextlib.contextmanager
def measured(relay: Server, upstream: Server, res: LoadResult) -> Iterator[None]:
    me = psutil.Process()
    c0, u0, m0 = relay.cpu(), upstream.cpu(), _cpu(me)
    yield
    res.cpu = relay.cpu() - c0
    res.upstream_cpu = upstream.cpu() - u0
    res.client_cpu = _cpu(me) - m0
    res.rss_mb = relay.rss_mb()


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


@contextlib.contextmanager
def profiled(enabled: bool, server: Server, out: Path) -> Iterator[None]:
    if not enabled:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy, "record", "-p", str(server.proc.pid), "-o", str(out), "--rate", "250", "--nonblocking"]
    with open(out.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # let py-spy attach before the load starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        print(f"  py-spy profile of {server.name}: {out}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def warm_up(target: Target, n: int, clients: int, stream_limit: float) -> list[str]:
    fails: list[str] = []
    for model, tokens, conc, count in (
        (bench_model(20), 20, 1, n),
        (bench_model(200, 50), 200, clients, clients * 2),
    ):
        r = await run_streams(target, conc, count, model, tokens, stream_limit, 60)
        fails += r.failures
    return fails


async def ttfd_scenario(
    targets: list[Target], n: int, tokens: int, stream_limit: float
) -> dict[str, LoadResult]:
    model, expected = bench_model(tokens), bench_text(tokens)
    conns = {t.name: HttpConn(HOST, t.port) for t in targets}
    results = {t.name: LoadResult() for t in targets}
    try:
        for i in range(n):
            order = targets if i % 2 == 0 else targets[::-1]  # interleave: drift hits all alike
            for t in order:
                r = await one_stream(conns[t.name], t, model, expected, stream_limit)
                res = results[t.name]
                res.streams += 1
                if r.ttfd is not None:
                    res.ttfd.append(r.ttfd)
                if r.failure:
                    res.failures.append(r.failure)
                else:
                    res.tokens += tokens
    finally:
        for c in conns.values():
            c.close()
    return results


# --------------------------------------------------------------------------- report


def fmt(x: float, spec: str = ".4f") -> str:
    return "n/a" if x != x else format(x, spec)  # NaN check


def print_failures(name: str, res: LoadResult) -> None:
    if not res.failures:
        return
    counts: dict[str, int] = {}
    for f in res.failures:
        counts[f] = counts.get(f, 0) + 1
    print(f"  !! {name}: {len(res.failures)} failed streams")
    for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
        print(f"     {c:4d} x {f}")


async def run(args: argparse.Namespace) -> int:
    logdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    servers: list[Server] = []
    results: dict[str, dict[str, Any]] = {r: {} for r in args.only}
    total_failures = 0
    try:
        upstream = start_upstream(args.python, logdir, args.start_timeout)
        servers.append(upstream)
        relays: dict[str, Server] = {}
        for name in args.only:
            relays[name] = start_relay(name, args.python, upstream, logdir)
            servers.append(relays[name])
        for s in relays.values():
            await wait_healthy(s, args.start_timeout)
        direct = Target("direct", upstream.port, direct=True)
        targets = {name: Target(name, s.port) for name, s in relays.items()}
        print(
            f"upstream :{upstream.port}  "
            + "  ".join(f"{n} :{s.port} (pid {s.proc.pid})" for n, s in relays.items())
        )

        # Warm-up: imports, code paths, and the relays' upstream connection pools.
        warm_clients = max(args.d_clients, args.b_clients)
        for t in [direct, *targets.values()]:
            fails = await warm_up(t, args.warmup, warm_clients, args.stream_timeout)
            if fails:
                print(f"  !! warm-up of {t.name}: {len(fails)} failures, e.g. {fails[0]}")
        for name, s in relays.items():
            results[name]["rss_idle_mb"] = s.rss_mb()

        if "ttfd" in args.scenarios:
            print(
                f"\n== TTFD: 1 client, {args.ttfd_requests} sequential "
                f"{args.ttfd_tokens}-token streams per target"
            )
            res = await ttfd_scenario(
                [direct, *targets.values()], args.ttfd_requests, args.ttfd_tokens, args.stream_timeout
            )
            d50, d99 = pct(res["direct"].ttfd, 50), pct(res["direct"].ttfd, 99)
            print(f"  {'direct':9s} p50 {d50 * 1e3:7.3f} ms  p99 {d99 * 1e3:7.3f} ms")
            print_failures("direct", res["direct"])
            total_failures += len(res["direct"].failures)
            for name in targets:
                r = res[name]
                p50, p99 = pct(r.ttfd, 50), pct(r.ttfd, 99)
                results[name]["ttfd"] = {
                    "p50_ms": p50 * 1e3,
                    "p99_ms": p99 * 1e3,
                    "added_p50_ms": (p50 - d50) * 1e3,
                    "added_p99_ms": (p99 - d99) * 1e3,
                    "failures": len(r.failures),
                }
                print(
                    f"  {name:9s} p50 {p50 * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms   "
                    f"added p50 {(p50 - d50) * 1e3:+.3f} ms  p99 {(p99 - d99) * 1e3:+.3f} ms"
                )
                print_failures(name, r)
                total_failures += len(r.failures)

        load = {
            "a": (
                f"A: 1 client, {args.a_streams} streams of {args.a_tokens} tokens, "
                f"{args.a_per_write}/write, no delay",
                1,
                args.a_streams,
                args.a_tokens,
                bench_model(args.a_tokens, args.a_per_write),
            ),
            "b": (
                f"B: {args.b_clients} clients, {args.b_streams} streams of {args.b_tokens} tokens, "
                f"{args.b_per_write}/write, no delay",
                args.b_clients,
                args.b_streams,
                args.b_tokens,
                bench_model(args.b_tokens, args.b_per_write),
            ),
            "d": (
                f"D: {args.d_clients} clients, {args.d_streams} streams of {args.d_tokens} tokens, "
                f"1/write, {args.d_delay_ms:g} ms apart",
                args.d_clients,
                args.d_streams,
                args.d_tokens,
                bench_model(args.d_tokens, 1, args.d_delay_ms),
            ),
        }
        for key in ("a", "b", "d"):
            if key not in args.scenarios:
                continue
            title, clients, streams, tokens, model = load[key]
            print(f"\n== {title}")
            for name, t in targets.items():
                r = LoadResult()
                prof = profiled(
                    args.profile == key, relays[name], REPO / args.profile_dir / f"{name}-{key}.svg"
                )
                with prof, measured(relays[name], upstream, r):
                    got = await run_streams(
                        t, clients, streams, model, tokens, args.stream_timeout, args.scenario_timeout
                    )
                for f in ("streams", "tokens", "wall", "ttfd", "failures"):
                    setattr(r, f, getattr(got, f))
                results[name][key] = {
                    "cpu_s": r.cpu,
                    "tokens": r.tokens,
                    "cpu_per_1k": r.cpu_per_1k,
                    "wall_s": r.wall,
                    "tokens_per_s": r.tokens / r.wall if r.wall else 0.0,
                    "rss_mb": r.rss_mb,
                    "ttfd_p50_ms": pct(r.ttfd, 50) * 1e3,
                    "failures": len(r.failures),
                    "upstream_cpu_s": r.upstream_cpu,
                    "client_cpu_s": r.client_cpu,
                }
                print(
                    f"  {name:9s} {fmt(r.cpu_per_1k)} CPU s/1k tok  "
                    f"({r.cpu:.2f} s CPU over {r.tokens} tokens, "
                    f"{r.wall:.2f} s wall, {r.tokens / r.wall:,.0f} tok/s, relay CPU {r.cpu / r.wall:.0%}, "
                    f"first delta p50 {fmt(pct(r.ttfd, 50) * 1e3, '.1f')} ms)  "
                    f"RSS {r.rss_mb:.1f} MB  "
                    f"[upstream CPU {r.upstream_cpu:.2f} s, client {r.client_cpu:.2f} s]"
                )
                print_failures(name, r)
                total_failures += len(r.failures)

        print_table(args, results)
        if args.json:
            write_json(args.json, results)
        for name, s in relays.items():
            if s.proc.poll() is not None:
                print(f"!! {name} exited early ({s.proc.returncode}):\n{s.log_tail()}")
                total_failures += 1
    finally:
        for s in reversed(servers):
            s.stop()
        if args.keep_logs:
            print(f"server logs: {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    if total_failures:
        print(f"\n!! {total_failures} failures: the figures above are not valid")
        return 1
    return 0


def write_json(path: str, results: dict[str, dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps(results, indent=2))


def print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    def cell(name: str, key: str, field_: str, spec: str = ".4f") -> str:
        v = results[name].get(key, {}).get(field_)
        return "—" if v is None else fmt(v, spec)

    def ttfd(name: str) -> str:
        t = results[name].get("ttfd")
        if not t:
            return "—"
        return f"+{t['added_p50_ms']:.2f} / +{t['added_p99_ms']:.2f} ms"

    def rss(name: str) -> str:
        vals = [results[name][k]["rss_mb"] for k in ("a", "b", "d") if k in results[name]]
        return f"{max(vals):.0f} MB" if vals else f"{results[name].get('rss_idle_mb', 0):.0f} MB (idle)"

    def fails(name: str) -> int:
        return sum(v.get("failures", 0) for v in results[name].values() if isinstance(v, dict))

    print(
        "\n| relay | CPU s/1k tokens A | B | D | TTFD added p50 / p99 | RSS (max after A/B/D) "
        "| failed streams |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in results:
        label = (
            "service (Litestar, uvloop+httptools)"
            if name == "service"
            else "FastAPI baseline (uvloop+httptools)"
        )
        print(
            f"| {label} | {cell(name, 'a', 'cpu_per_1k')} | {cell(name, 'b', 'cpu_per_1k')} | "
            f"{cell(name, 'd', 'cpu_per_1k')} | {ttfd(name)} | {rss(name)} | {fails(name)} |"
        )
    if "service" in results and "baseline" in results:
        ratios = []
        for key in ("a", "b", "d"):
            s = results["service"].get(key, {}).get("cpu_per_1k")
            b = results["baseline"].get(key, {}).get("cpu_per_1k")
            ratios.append(f"{s / b:.2f}" if s and b else "—")
        print(f"| service / baseline (CPU) | {ratios[0]} | {ratios[1]} | {ratios[2]} | | | |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
