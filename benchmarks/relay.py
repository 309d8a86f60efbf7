"""Relay benchmark: CPU per 1,000 relayed tokens, time to first delta and RSS: service vs baseline and floor.

Not a test: it prints a figures table (``PERFORMANCE.md`` has the bar). One run starts, each as
its own subprocess on 127.0.0.1:

- the fake upstream, ``python -m tests.fake_upstream`` (it generates the ``bench:…`` models);
- the service under test, ``uvicorn app:create_app --factory`` (uvloop + httptools, no
  access log), pointed at the fake through ``AGENT_PROVIDERS__LOCAL__BASE_URL``;
- the baseline, ``benchmarks/fastapi_relay.py``, under the same uvicorn flags;
- the floor, ``python -m benchmarks.floor_relay`` (raw asyncio protocols on uvloop, one
  upstream connection per request, content strings copied verbatim into NDJSON lines): an
  estimate of the least CPU a relay needs, not a product.

``--only`` picks any of them (default: all three); the table gives service / baseline and
service / floor CPU ratios per scenario.

Upstream framing: real servers (llama.cpp's server, vLLM, anything on Starlette/uvicorn) send
each SSE event as its own HTTP chunk, and a relay whose HTTP client hands over one piece per
HTTP chunk (httpx/h11) pays per event however many events a socket read brings. Every load
scenario (TTFD, A, B, D) therefore runs once per ``--framings`` entry, in one run: ``event``
(one HTTP chunk per event, the default and the figures that count) and ``grouped`` (the
events of one upstream write in one HTTP chunk, flattering such relays). The table and the
``--json`` output show both, labelled, the default first. M runs with the default only.

The load client is this process (``benchmarks/_loadclient.py``: raw asyncio streams,
keep-alive), so its CPU is not counted. CPU is the relay process's user+system CPU-seconds
(psutil) over a scenario, divided by the tokens relayed, per 1,000 tokens. Every stream is
checked (the deltas must add up to the upstream's text, one ``done`` line must end it);
failures are counted and printed, and make the exit status 1.

Scenarios (counts are options; each load scenario runs ``--repeat`` times per relay and
framing, the relays taking turns, and the table shows the median):

- TTFD: 1 client, sequential 20-token streams, interleaved direct / service / baseline / floor;
  time from sending the request to the first delta; "added" = relay − direct.
- A: 1 client, 100 streams of 200 tokens, the upstream as fast as it can go (1 token/write).
- B: 32 clients, 320 streams of 500 tokens, 50 tokens per upstream write (with ``event``
  framing: 50 HTTP chunks in one socket write).
- D: 64 clients, 128 streams of 200 tokens, one token per write, 10 ms apart.
- M (memory, once per relay, not repeated): the relay's RSS idle; then, per cycle (two by
  default), with 1,000 open slow streams (the upstream sends the role chunk and one token, then
  nothing for minutes), measured once every client has its first delta, and KB per open stream
  = (RSS − idle) / 1,000; then the client aborts all 1,000 connections at once (a browser's
  abort) and the benchmark waits, at most 10 s, until the fake upstream has seen every one of
  the relay's upstream connections of those streams closed (the contract: within 1 s of the
  client leaving). It reports how long that took, what was still open at the bound, and the RSS
  after the cancels. RSS that grows again from cycle 1 to cycle 2 points at a leak rather than
  the allocator's high-water mark. Connections are counted with psutil from the sockets the
  processes hold (the fake's ``/_fake/stats`` only counts connections accepted). The process
  raises its open-file limit to the hard limit first (the servers inherit it) and scales the
  stream count down, saying so, if that is not enough.

Run from the repository root::

    .venv/bin/python -m benchmarks.relay                     # everything, a few minutes
    .venv/bin/python -m benchmarks.relay --only baseline,floor --scenarios ttfd,d --repeat 1
    .venv/bin/python -m benchmarks.relay --framings event    # the default framing only
    .venv/bin/python -m benchmarks.relay --profile d         # py-spy profile of each relay in D
    .venv/bin/python -m benchmarks.relay --only service --server granian   # the service under granian
    .venv/bin/python -m benchmarks.relay --scenarios m --repeat 1   # memory only, about 30 s

The machine has 2 cores (possibly hyper-threads of one): another busy process does not only
take turns with the relay, it slows it down, inflating its CPU-seconds. Each run therefore
reports the CPU that processes outside the benchmark used meanwhile and marks the runs where
it was significant ("busy machine"); ``--wait-quiet 300`` first waits for an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from benchmarks._loadclient import (
    FRAMINGS,
    HOST,
    HeldStreams,
    HttpConn,
    LoadResult,
    Target,
    bench_model,
    bench_text,
    get_ok,
    hold_streams,
    one_stream,
    pct,
    run_streams,
    upstream_connections,
)

__all__ = ("main",)

REPO = Path(__file__).resolve().parents[1]
RELAYS = ("service", "baseline", "floor")
SCENARIOS = ("ttfd", "a", "b", "d", "m")
PROFILED = ("ttfd", "a", "b", "d")
LABELS = {"service": "service (Litestar)", "baseline": "FastAPI baseline", "floor": "floor (raw asyncio)"}
FRAMING_LABELS = {"event": "event (default)", "grouped": "grouped"}
_PROFILE_EXT = {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Relay benchmark: service vs FastAPI baseline and raw-asyncio floor (see the module docstring)."
    )
    p.add_argument("--only", default=",".join(RELAYS), help="relays to run (default: service,baseline,floor)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="any of ttfd,a,b,d,m (default: all)")
    p.add_argument(
        "--framings",
        default=",".join(FRAMINGS),
        help="upstream framings for ttfd,a,b,d: event (one HTTP chunk per SSE event, the default) "
        "and/or grouped (one HTTP chunk per upstream write); default: event,grouped",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each load scenario per relay (median)")
    p.add_argument("--ttfd-requests", type=int, default=200, help="TTFD streams per target per repeat")
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
    p.add_argument("--m-streams", type=int, default=1000, help="open slow streams per memory cycle")
    p.add_argument("--m-cycles", type=int, default=2, help="open/cancel cycles per relay in M")
    p.add_argument(
        "--m-hold-ms",
        type=float,
        default=600_000.0,
        help="upstream silence after the first token of an M stream (longer than the scenario)",
    )
    p.add_argument(
        "--m-close-bound",
        type=float,
        default=10.0,
        help="seconds to wait for the relay to close its upstream connections after the cancels",
    )
    p.add_argument("--m-settle", type=float, default=1.0, help="seconds to wait before the RSS after the cancels")
    p.add_argument("--m-open-concurrency", type=int, default=100, help="M streams being opened at a time")
    p.add_argument("--warmup", type=int, default=40, help="sequential warm-up streams per server")
    p.add_argument("--stream-timeout", type=float, default=60.0, help="seconds allowed for one stream")
    p.add_argument("--scenario-timeout", type=float, default=120.0, help="seconds allowed for one run")
    p.add_argument("--start-timeout", type=float, default=30.0, help="seconds allowed for a server start")
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers (the venv's)")
    p.add_argument(
        "--baseline-app",
        default="benchmarks.fastapi_relay:app",
        help="uvicorn app of the baseline (a variant can be made importable through PYTHONPATH)",
    )
    p.add_argument(
        "--server",
        choices=("uvicorn", "granian"),
        default="uvicorn",
        help="the HTTP server the service runs under (granian: pip install granian)",
    )
    p.add_argument("--profile", default="", help="scenario to record with py-spy: ttfd, a, b or d")
    p.add_argument("--profile-dir", default=str(Path(tempfile.gettempdir()) / "relay-bench-profiles"))
    p.add_argument(
        "--profile-format",
        default="raw",
        choices=tuple(_PROFILE_EXT),
        help="py-spy output; raw (collapsed stacks) also prints a summary",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for the machine to be idle (< 10%% CPU busy)",
    )
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = p.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    args.scenarios = [s.strip().lower() for s in args.scenarios.split(",") if s.strip()]
    framings = [f.strip().lower() for f in args.framings.split(",") if f.strip()]
    for f in framings:
        if f not in FRAMINGS:
            p.error(f"--framings: unknown framing {f!r} (choose from {', '.join(FRAMINGS)})")
    args.framings = [f for f in FRAMINGS if f in framings]  # the default first
    if not args.framings:
        p.error("--framings: at least one")
    for r in args.only:
        if r not in RELAYS:
            p.error(f"--only: unknown relay {r!r} (choose from {', '.join(RELAYS)})")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"--scenarios: unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
    if args.profile and args.profile not in PROFILED:
        p.error("--profile: one of ttfd, a, b, d")
    if args.m_streams < 1 or args.m_cycles < 1 or args.m_open_concurrency < 1:
        p.error("--m-streams, --m-cycles, --m-open-concurrency: at least 1")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat: 1 … 20")
    return args


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

    def _tree(self) -> list[psutil.Process]:
        # granian serves from a worker process of its own; uvicorn's single process has none.
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return [self.ps]

    def cpu(self) -> float:
        return sum(float(t.user + t.system) for t in (p.cpu_times() for p in self._tree()))

    def rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in self._tree()) / 2**20

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


def start_upstream(python: str, logdir: Path, limit: float) -> Server:
    log = logdir / "upstream.log"
    proc = subprocess.Popen(
        [python, "-m", "tests.fake_upstream", "--host", HOST, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    line = b""
    # readline blocks, but the fake prints READY within a second or dies (EOF): bounded.
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith(b"READY "):
            break
    if not line.startswith(b"READY "):
        proc.kill()
        proc.wait(5)
        raise SystemExit(f"fake upstream did not start: {line!r}\n{log.read_text(errors='replace')}")
    return Server("upstream", proc, int(line.split()[1]), log)


def start_relay(name: str, args: argparse.Namespace, upstream: Server, logdir: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    base_url = f"http://{HOST}:{upstream.port}/v1"
    flags = [
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
        # The relay as such; what persistence adds is measured by benchmarks/history.py.
        env.setdefault("AGENT_DATABASE__ENABLED", "false")
        if args.server == "granian":  # the same app under granian's Rust HTTP server (pip install granian)
            cmd = [args.python, "-m", "granian", "--interface", "asgi", "--factory", "--host", HOST]
            cmd += ["--port", str(port), "--loop", "uvloop", "--http", "1", "--no-access-log", "app:create_app"]
        else:
            cmd = [args.python, "-m", "uvicorn", "app:create_app", "--factory", *flags]
    elif name == "floor":
        cmd = [
            args.python,
            "-m",
            "benchmarks.floor_relay",
            "--host",
            HOST,
            "--port",
            str(port),
            "--upstream-host",
            HOST,
            "--upstream-port",
            str(upstream.port),
        ]
    else:
        env["BASELINE_UPSTREAM_BASE_URL"] = base_url
        cmd = [args.python, "-m", "uvicorn", args.baseline_app, *flags]
    log = logdir / f"{name}.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


async def wait_healthy(server: Server, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        if await get_ok(server.port, b"/health"):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{server.name} not healthy after {limit:.0f}s:\n{server.log_tail()}")


# --------------------------------------------------------------------------- measurement


def _busy_cpu() -> float:
    """CPU-seconds the whole machine has been busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@contextlib.contextmanager
def measured(relay: Server, upstream: Server, res: LoadResult) -> Iterator[None]:
    """Fill ``res`` with the CPU the relay, the upstream, this client and everything else used."""
    me = psutil.Process()
    c0, u0, m0, b0 = relay.cpu(), upstream.cpu(), _proc_cpu(me), _busy_cpu()
    yield
    res.cpu = relay.cpu() - c0
    res.upstream_cpu = upstream.cpu() - u0
    res.client_cpu = _proc_cpu(me) - m0
    res.others_cpu = max(0.0, _busy_cpu() - b0 - res.cpu - res.upstream_cpu - res.client_cpu)
    res.rss_mb = relay.rss_mb()


def _proc_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


@contextlib.contextmanager
def profiled(enabled: bool, server: Server, out: Path, fmt_: str) -> Iterator[None]:
    """Record ``server`` with py-spy while the block runs (``pip install py-spy``)."""
    if not enabled:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy, "record", "-p", str(server.proc.pid), "-o", str(out), "--rate", "250", "--format", fmt_]
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
        print(f"  py-spy profile of {server.name}: {out} (the CPU figures of a profiled run are not clean)")
        if fmt_ == "raw" and out.exists():
            print_profile_summary(out)


def _frame_area(frame: str) -> str:
    """Group a py-spy frame ``func (path/file.py:line)`` by package (or stdlib module)."""
    path = frame[frame.rfind("(") + 1 :].rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "?"
    if len(parts) > 1 and parts[0] in ("app", "providers", "benchmarks"):
        return f"{parts[0]}/{parts[1]}"
    return parts[0].removesuffix(".py")


def print_profile_summary(path: Path, top: int = 12) -> None:
    """Self time by package and by function, and inclusive time, from py-spy's raw output."""
    by_func: dict[str, int] = {}
    by_area: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        by_func[frames[-1]] = by_func.get(frames[-1], 0) + count
        area = _frame_area(frames[-1])
        by_area[area] = by_area.get(area, 0) + count
        for name in {f.split(" (", 1)[0] + " " + _frame_area(f) for f in frames}:
            inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        return
    for title, table in (
        ("self time by package", by_area),
        ("self time by function", by_func),
        ("inclusive time", inclusive),
    ):
        print(f"    {title} ({total} samples):")
        for key, n in sorted(table.items(), key=lambda kv: -kv[1])[: top if title != "inclusive time" else 30]:
            print(f"      {n / total:6.1%}  {key}")


# --------------------------------------------------------------------------- scenarios


async def warm_up(target: Target, n: int, clients: int, stream_limit: float) -> list[str]:
    """Sequential short streams, then a burst as wide as the widest scenario (fills pools)."""
    fails: list[str] = []
    for model, tokens, conc, count in (
        (bench_model(20), 20, 1, n),
        (bench_model(200, 50), 200, clients, clients * 2),
    ):
        r = await run_streams(target, conc, count, model, tokens, stream_limit, 60)
        fails += r.failures
    return fails


async def ttfd_scenario(
    targets: list[Target], n: int, tokens: int, stream_limit: float, framing: str
) -> dict[str, LoadResult]:
    model, expected = bench_model(tokens, framing=framing), bench_text(tokens)
    conns = {t.name: HttpConn(HOST, t.port) for t in targets}
    results = {t.name: LoadResult() for t in targets}
    try:
        for i in range(n):
            order = targets if i % 2 == 0 else targets[::-1]  # interleaved: drift hits all alike
            for t in order:
                results[t.name].record(await one_stream(conns[t.name], t, model, expected, stream_limit), tokens)
    finally:
        for c in conns.values():
            c.close()
    return results


def load_scenarios(args: argparse.Namespace, framing: str) -> dict[str, tuple[str, int, int, int, str]]:
    """key -> (title, clients, streams, tokens per stream, model), the upstream framing ``framing``."""
    a, b, d = args.a_tokens, args.b_tokens, args.d_tokens
    return {
        "a": (
            f"A: 1 client, {args.a_streams} streams of {a} tokens, {args.a_per_write}/write, no delay",
            1,
            args.a_streams,
            a,
            bench_model(a, args.a_per_write, framing=framing),
        ),
        "b": (
            f"B: {args.b_clients} clients, {args.b_streams} streams of {b} tokens, {args.b_per_write}/write, no delay",
            args.b_clients,
            args.b_streams,
            b,
            bench_model(b, args.b_per_write, framing=framing),
        ),
        "d": (
            f"D: {args.d_clients} clients, {args.d_streams} streams of {d} tokens, "
            f"1/write, {args.d_delay_ms:g} ms apart",
            args.d_clients,
            args.d_streams,
            d,
            bench_model(d, 1, args.d_delay_ms, framing=framing),
        ),
    }


# --------------------------------------------------------------------------- memory (M)

_FDS_BESIDES_STREAMS = 256  # listening sockets, pools, logs, imports: generous
M_TOKEN_1 = "tok1 "  # the first delta of a bench answer


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:
        try:
            want = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            want = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fds_needed(streams: int) -> int:
    """Open files a relay needs for ``streams`` open streams: a client and an upstream socket each.

    The fake upstream needs as many while a leaking relay keeps the last cycle's open; this
    process needs one per stream.
    """
    return 2 * streams + _FDS_BESIDES_STREAMS


def streams_for_fds(limit: int) -> int:
    return max(1, (limit - _FDS_BESIDES_STREAMS) // 2)


def nofile_soft(ps: psutil.Process) -> int:
    """A process's soft open-file limit (Linux; elsewhere: this process's, as it is inherited)."""
    try:
        soft = int(ps.rlimit(psutil.RLIMIT_NOFILE)[0])
    except (AttributeError, psutil.Error):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


def _tcp(ps: psutil.Process) -> list[Any]:
    try:
        return list(ps.net_connections(kind="tcp"))
    except psutil.Error:
        return []


def relay_upstream_ports(relay: Server, upstream: Server) -> set[int]:
    """Local ports of the relay's sockets connected to the upstream."""
    return {
        c.laddr.port
        for c in _tcp(relay.ps)
        if c.raddr and c.raddr.port == upstream.port and c.status == psutil.CONN_ESTABLISHED
    }


def upstream_still_open(upstream: Server, relay_ports: set[int]) -> int:
    """How many of those connections the fake upstream still holds (it closes its side on EOF)."""
    return sum(
        1 for c in _tcp(upstream.ps) if c.laddr.port == upstream.port and c.raddr and c.raddr.port in relay_ports
    )


def _socket_inodes(pid: int, fds: list[int] | None = None) -> set[str]:
    """The sockets (``socket:[inode]``) a process holds: cheap, unlike parsing /proc/net/tcp."""
    fd_dir = f"/proc/{pid}/fd"
    out = set()
    for fd in fds if fds is not None else os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            link = os.readlink(f"{fd_dir}/{fd}")
            if link.startswith("socket:"):
                out.add(link)
    return out


class UpstreamSide:
    """The fake upstream's side of a set of the relay's upstream connections, to watch them close.

    psutil's ``net_connections`` parses the whole /proc/net/tcp (50–100 ms with thousands of
    sockets and TIME_WAITs, and CPU taken from the relay); so the connections are picked out
    with it once, and then watched by their socket inodes in /proc/<pid>/fd (a few ms).
    """

    def __init__(self, upstream: Server, relay_ports: set[int]) -> None:
        self.upstream = upstream
        self.ports = relay_ports
        fds = [
            c.fd
            for c in _tcp(upstream.ps)
            if c.laddr.port == upstream.port and c.raddr and c.raddr.port in relay_ports and c.fd >= 0
        ]
        try:
            self.inodes: set[str] | None = _socket_inodes(upstream.proc.pid, fds)
        except OSError:  # no /proc: fall back to psutil every time
            self.inodes = None

    def still_open(self) -> int:
        if self.inodes is not None:
            with contextlib.suppress(OSError):
                return len(self.inodes & _socket_inodes(self.upstream.proc.pid))
        return upstream_still_open(self.upstream, self.ports)


def relay_sockets(relay: Server, upstream: Server) -> tuple[int, int]:
    """Sockets the relay holds: (from clients, to the upstream), listening ones excluded."""
    conns = [c for c in _tcp(relay.ps) if c.raddr]
    clients = sum(1 for c in conns if c.laddr.port == relay.port)
    ups = sum(1 for c in conns if c.raddr.port == upstream.port)
    return clients, ups


def num_fds(ps: psutil.Process) -> int:
    try:
        return int(ps.num_fds())
    except (AttributeError, psutil.Error):
        return -1


async def memory_cycle(
    args: argparse.Namespace,
    relay: Server,
    upstream: Server,
    target: Target,
    stats_conn: HttpConn,
    streams: int,
    idle_mb: float,
) -> dict[str, Any]:
    """Open ``streams`` slow streams, measure, abort them all, time the upstream closes, measure."""
    model = bench_model(3, 1, args.m_hold_ms)
    accepted0 = await upstream_connections(stats_conn)
    held: HeldStreams = await hold_streams(
        target,
        streams,
        model,
        M_TOKEN_1,
        args.m_open_concurrency,
        args.stream_timeout,
        args.scenario_timeout,
    )
    try:
        open_mb = relay.rss_mb()
        held_n = len(held.conns)
        new_upstream = await upstream_connections(stats_conn) - accepted0
        ports = relay_upstream_ports(relay, upstream)
        watch = UpstreamSide(upstream, ports)
        fds_open = num_fds(relay.ps)
        cpu0 = relay.cpu()
    finally:
        # Abort every client connection at once; then watch the fake's side of the relay's
        # upstream connections of these streams until it has seen them all closed (or the bound).
        t0 = time.perf_counter()
        held.abort_all()
    closed_s: float | None = None
    half_closed_s: float | None = None
    polls: list[float] = []
    left_at_1s: int | None = None
    while True:
        p0 = time.perf_counter()
        left = watch.still_open()
        polls.append(time.perf_counter() - p0)
        elapsed = p0 - t0  # a poll sees the sockets as they were when it began (roughly)
        if left_at_1s is None and elapsed >= 1.0:
            left_at_1s = left
        if half_closed_s is None and left <= len(ports) / 2:
            half_closed_s = elapsed
        if left == 0:
            closed_s = elapsed
            break
        if elapsed >= args.m_close_bound:
            break
        await asyncio.sleep(0.01)
    if left_at_1s is None:
        left_at_1s = 0
    cancel_cpu = relay.cpu() - cpu0
    left = upstream_still_open(upstream, ports)  # the exact count, once
    await asyncio.sleep(args.m_settle)
    after_mb = relay.rss_mb()
    clients_left, ups_left = relay_sockets(relay, upstream)
    return {
        "streams": held_n,
        "open_wall_s": held.wall,
        "first_delta_p50_ms": pct(held.ttfd, 50) * 1e3,
        "open_mb": open_mb,
        "kb_per_stream": (open_mb - idle_mb) * 1024 / max(held_n, 1),
        "new_upstream_connections": new_upstream,
        "relay_upstream_sockets_open": len(ports),
        "relay_fds_open": fds_open,
        "upstream_closed_s": closed_s,
        "upstream_half_closed_s": half_closed_s,
        "poll_s": statistics.median(polls),
        "cancel_cpu_ms_per_stream": cancel_cpu * 1e3 / max(held_n, 1),
        "close_bound_s": args.m_close_bound,
        "upstream_left_open_at_1s": left_at_1s,
        "upstream_left_open": left,
        "after_mb": after_mb,
        "relay_fds_after": num_fds(relay.ps),
        "relay_client_sockets_after": clients_left,
        "relay_upstream_sockets_after": ups_left,
        "failures": held.failures,
    }


async def memory_scenario(
    args: argparse.Namespace,
    relay: Server,
    upstream: Server,
    target: Target,
    stats_conn: HttpConn,
    streams: int,
) -> dict[str, Any]:
    # A small cycle first, so that the code paths of a cancel are imported and warm.
    warm = await memory_cycle(args, relay, upstream, target, stats_conn, min(50, streams), relay.rss_mb())
    await asyncio.sleep(0.5)
    idle_mb, idle_fds = relay.rss_mb(), num_fds(relay.ps)
    cycles = []
    for _ in range(args.m_cycles):
        cycles.append(await memory_cycle(args, relay, upstream, target, stats_conn, streams, idle_mb))
    failures = [f for c in (warm, *cycles) for f in c.pop("failures")]
    return {
        "streams": streams,
        "idle_mb": idle_mb,
        "idle_fds": idle_fds,
        "cycles": cycles,
        "growth_mb": cycles[-1]["after_mb"] - cycles[0]["after_mb"],
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:5],
    }


def memory_lines(name: str, m: dict[str, Any]) -> list[str]:
    lines = [f"  {name:9s} idle {m['idle_mb']:.1f} MB, {m['idle_fds']} fds"]
    for i, c in enumerate(m["cycles"]):
        closed = (
            f"all closed {c['upstream_closed_s'] * 1e3:.0f} ms after the aborts"
            if c["upstream_closed_s"] is not None
            else f"!! {c['upstream_left_open']} of {c['relay_upstream_sockets_open']} still open "
            f"after {c['close_bound_s']:g} s"
        )
        lines.append(
            f"  {name:9s} cycle {i + 1}: {c['streams']} open in {c['open_wall_s']:.2f} s "
            f"(first delta p50 {fmt(c['first_delta_p50_ms'], '.1f')} ms): RSS {c['open_mb']:.1f} MB "
            f"= {c['kb_per_stream']:.1f} KB/stream, {c['relay_fds_open']} fds, "
            f"{c['relay_upstream_sockets_open']} upstream sockets ({c['new_upstream_connections']} new); "
            f"aborted: upstream {closed} (half by {fmt(c['upstream_half_closed_s'] or float('nan'), '.3f')} s, "
            f"{c['upstream_left_open_at_1s']} open at 1 s; each look {c['poll_s'] * 1e3:.0f} ms; "
            f"relay CPU {c['cancel_cpu_ms_per_stream']:.2f} ms/cancel); "
            f"RSS {c['after_mb']:.1f} MB, {c['relay_fds_after']} fds, sockets left: "
            f"{c['relay_client_sockets_after']} from clients, {c['relay_upstream_sockets_after']} to upstream"
        )
    return lines


# --------------------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".4f") -> str:
    return "—" if x is None or x != x else format(x, spec)  # x != x: NaN


def print_failures(name: str, failures: list[str]) -> None:
    if not failures:
        return
    counts: dict[str, int] = {}
    for f in failures:
        counts[f] = counts.get(f, 0) + 1
    print(f"  !! {name}: {len(failures)} failed streams")
    for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
        print(f"     {c:4d} x {f}")


def run_line(name: str, rep: int, r: LoadResult) -> str:
    warn = "  !! busy machine" if r.others_cpu > 0.1 * r.wall else ""
    return (
        f"  {name:9s} #{rep + 1}  {fmt(r.cpu_per_1k)} CPU s/1k tok  "
        f"({r.cpu:.2f} s over {r.tokens} tok, {r.wall:.2f} s wall, {r.tokens / r.wall:,.0f} tok/s, "
        f"relay CPU {r.cpu / r.wall:.0%}, first delta p50 {fmt(pct(r.ttfd, 50) * 1e3, '.1f')} ms, "
        f"RSS {r.rss_mb:.1f} MB; upstream {r.upstream_conns} new conns, "
        f"CPU s: upstream {r.upstream_cpu:.2f}, client {r.client_cpu:.2f}, others {r.others_cpu:.2f}){warn}"
    )


def summarize(runs: list[LoadResult]) -> dict[str, Any]:
    per_1k = [r.cpu_per_1k for r in runs]
    return {
        "cpu_per_1k": statistics.median(per_1k),
        "cpu_per_1k_runs": per_1k,
        "tokens_per_s": statistics.median(r.tokens / r.wall for r in runs),
        "first_delta_p50_ms": statistics.median(pct(r.ttfd, 50) * 1e3 for r in runs),
        "rss_mb": runs[-1].rss_mb,
        "upstream_connections_per_stream": sum(r.upstream_conns for r in runs) / sum(r.streams for r in runs),
        "others_cpu_s": sum(r.others_cpu for r in runs),
        "failures": sum(len(r.failures) for r in runs),
    }


def ratios(results: dict[str, dict[str, Any]], framing: str) -> dict[str, dict[str, float | None]]:
    """Service CPU per 1k tokens over the baseline's and the floor's, per load scenario."""
    out: dict[str, dict[str, float | None]] = {}
    svc = results.get("service", {}).get("framings", {}).get(framing, {})
    for other in ("baseline", "floor"):
        if "service" not in results or other not in results:
            continue
        oth = results[other].get("framings", {}).get(framing, {})
        row: dict[str, float | None] = {}
        for key in ("a", "b", "d"):
            a = svc.get(key, {}).get("cpu_per_1k")
            b = oth.get(key, {}).get("cpu_per_1k")
            row[key] = a / b if a and b else None
        out[f"service/{other}"] = row
    return out


def write_json(path: str, results: dict[str, dict[str, Any]], framings: list[str]) -> None:
    """The figures: per relay, ``rss_idle_mb``, ``framings.<framing>.<scenario>`` and ``m``."""
    doc = {
        "default_framing": FRAMINGS[0],
        "framings": framings,
        "framing_meaning": {
            "event": "each SSE event its own HTTP chunk (as real servers send them)",
            "grouped": "the events of one upstream write in one HTTP chunk",
        },
        "relays": results,
        "cpu_ratios": {f: ratios(results, f) for f in framings},
    }
    Path(path).write_text(json.dumps(doc, indent=2))


def print_table(results: dict[str, dict[str, Any]], framings: list[str]) -> None:
    def fig(name: str, framing: str) -> dict[str, Any]:
        f: dict[str, Any] = results[name].get("framings", {}).get(framing, {})
        return f

    def cpu(name: str, framing: str, key: str) -> str:
        s = fig(name, framing).get(key)
        if not s:
            return "—"
        runs = s["cpu_per_1k_runs"]
        spread = f" ({min(runs):.4f}–{max(runs):.4f})" if len(runs) > 1 else ""
        return f"{s['cpu_per_1k']:.4f}{spread}"

    def ttfd(name: str, framing: str) -> str:
        t = fig(name, framing).get("ttfd")
        return f"+{t['added_p50_ms']:.2f} / +{t['added_p99_ms']:.2f} ms" if t else "—"

    def rss(name: str, framing: str) -> str:
        vals = [fig(name, framing)[k]["rss_mb"] for k in ("a", "b", "d") if k in fig(name, framing)]
        return f"{max(vals):.0f} MB" if vals else f"{results[name]['rss_idle_mb']:.0f} MB (idle)"

    def fails(name: str, framing: str) -> int:
        return sum(v.get("failures", 0) for v in fig(name, framing).values() if isinstance(v, dict))

    if not any(fig(name, framing) for name in results for framing in framings):  # M only
        print_memory_table(results)
        return
    print(
        "\nCPU s per 1k tokens: median of the runs (min–max); TTFD added = relay − direct upstream.\n"
        "Upstream framing: event = one HTTP chunk per SSE event, as real servers send them (the default, "
        "the figures that count); grouped = one HTTP chunk per upstream write (flatters relays that "
        "pay per HTTP chunk)."
    )
    print(
        "| relay | upstream framing | CPU s/1k tokens A | B | D | TTFD added p50 / p99 "
        "| RSS after A/B/D (max) | failed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for framing in framings:
        label = FRAMING_LABELS[framing]
        if not any(fig(name, framing) for name in results):
            continue
        for name in results:
            print(
                f"| {LABELS[name]} | {label} | {cpu(name, framing, 'a')} | {cpu(name, framing, 'b')} | "
                f"{cpu(name, framing, 'd')} | {ttfd(name, framing)} | {rss(name, framing)} | "
                f"{fails(name, framing)} |"
            )
        for pair, row in ratios(results, framing).items():
            vals = [f"{row[k]:.2f}" if row[k] else "—" for k in ("a", "b", "d")]
            print(f"| {pair.replace('/', ' / ')} (CPU) | {label} | {vals[0]} | {vals[1]} | {vals[2]} | | | |")
    if any("m" in r for r in results.values()):
        print_memory_table(results)


def print_memory_table(results: dict[str, dict[str, Any]]) -> None:
    def closed(c: dict[str, Any]) -> str:
        if c["upstream_closed_s"] is not None:
            return f"{c['upstream_closed_s'] * 1e3:.0f} ms"
        return f"!! {c['upstream_left_open']}/{c['relay_upstream_sockets_open']} open after {c['close_bound_s']:g} s"

    n = next(r["m"]["streams"] for r in results.values() if "m" in r)
    print(
        f"\nMemory (M, {FRAMING_LABELS[FRAMINGS[0]]} framing): relay RSS idle; with {n:,} open slow streams "
        f"(KB/stream = (open − idle) / streams); "
        f"after the client aborted them all; time until the fake upstream saw all of the relay's "
        f"upstream connections of those streams closed (contract: < 1 s). One row per cycle."
    )
    print(
        "| relay | cycle | RSS idle | RSS open | KB/stream | RSS after cancels | upstream closed in "
        "| upstream open at 1 s | relay fds idle / open / after | RSS after vs cycle 1 | failed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        m = r.get("m")
        if not m:
            continue
        for i, c in enumerate(m["cycles"]):
            growth = f"{c['after_mb'] - m['cycles'][0]['after_mb']:+.1f} MB" if i else "—"
            print(
                f"| {LABELS[name] if i == 0 else ''} | {i + 1} | {m['idle_mb']:.1f} MB | {c['open_mb']:.1f} MB | "
                f"{c['kb_per_stream']:.1f} | {c['after_mb']:.1f} MB | {closed(c)} | {c['upstream_left_open_at_1s']} | "
                f"{m['idle_fds']} / {c['relay_fds_open']} / {c['relay_fds_after']} | "
                f"{growth} | "
                f"{m['failures'] if i == 0 else ''} |"
            )


# --------------------------------------------------------------------------- main


def wait_quiet(limit: float) -> None:
    """Wait (at most ``limit`` seconds) until other processes leave the cores alone."""
    deadline = time.monotonic() + limit
    busy = psutil.cpu_percent(interval=2)
    while busy >= 10 and time.monotonic() < deadline:
        print(f"waiting for a quiet machine: {busy:.0f}% busy", flush=True)
        busy = psutil.cpu_percent(interval=3)
    if busy >= 10:
        print(f"!! the machine is still {busy:.0f}% busy: figures will be skewed")


async def run(args: argparse.Namespace) -> int:
    m_streams = args.m_streams
    if "m" in args.scenarios:
        soft, hard = raise_nofile_limit()
        if soft != resource.RLIM_INFINITY and soft < fds_needed(m_streams):
            m_streams = streams_for_fds(soft)
            print(
                f"!! open-file limit {soft} (hard {hard}) is too low for {args.m_streams} streams "
                f"(needs {fds_needed(args.m_streams)}): M scaled down to {m_streams} streams"
            )
    logdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    servers: list[Server] = []
    results: dict[str, dict[str, Any]] = {r: {"framings": {f: {} for f in args.framings}} for r in args.only}
    failures = 0
    ext = _PROFILE_EXT[args.profile_format]
    try:
        upstream = start_upstream(args.python, logdir, args.start_timeout)
        servers.append(upstream)
        relays: dict[str, Server] = {}
        for name in args.only:
            relays[name] = start_relay(name, args, upstream, logdir)
            servers.append(relays[name])
        for s in relays.values():
            await wait_healthy(s, args.start_timeout)
        if "m" in args.scenarios:
            # The servers inherit this process's limit; check, since uvicorn's accept fails
            # with EMFILE (and the relay cannot reach the upstream) when it is too low.
            for s in servers:
                soft = nofile_soft(s.ps)
                if soft < fds_needed(m_streams):
                    m_streams = streams_for_fds(soft)
                    print(f"!! {s.name} may open only {soft} files: M scaled down to {m_streams} streams")
        direct = Target("direct", upstream.port, direct=True)
        targets = {name: Target(name, s.port) for name, s in relays.items()}
        stats_conn = HttpConn(HOST, upstream.port)
        print(
            f"upstream :{upstream.port} (pid {upstream.proc.pid})  "
            + "  ".join(f"{n} :{s.port} (pid {s.proc.pid})" for n, s in relays.items())
        )

        # Warm-up: imports, code paths, and the relays' upstream connection pools.
        for t in [direct, *targets.values()]:
            fails = await warm_up(t, args.warmup, max(args.d_clients, args.b_clients), args.stream_timeout)
            if fails:
                print(f"  !! warm-up of {t.name}: {len(fails)} failures, e.g. {fails[0]}")
        for name, s in relays.items():
            results[name]["rss_idle_mb"] = s.rss_mb()

        if "ttfd" in args.scenarios:
            n = args.ttfd_requests * args.repeat
            for framing in args.framings:
                print(
                    f"\n== TTFD [{framing} framing]: 1 client, {n} sequential {args.ttfd_tokens}-token streams "
                    f"per target"
                )
                with contextlib.ExitStack() as stack:
                    for name, relay in relays.items():
                        out = Path(args.profile_dir) / f"{name}-ttfd.{ext}"
                        prof = args.profile == "ttfd" and framing == args.framings[0]
                        stack.enter_context(profiled(prof, relay, out, args.profile_format))
                    res = await ttfd_scenario(
                        [direct, *targets.values()], n, args.ttfd_tokens, args.stream_timeout, framing
                    )
                d50, d99 = pct(res["direct"].ttfd, 50), pct(res["direct"].ttfd, 99)
                print(f"  {'direct':9s} p50 {d50 * 1e3:7.3f} ms  p99 {d99 * 1e3:7.3f} ms")
                print_failures("direct", res["direct"].failures)
                failures += len(res["direct"].failures)
                for name in targets:
                    r = res[name]
                    p50, p99 = pct(r.ttfd, 50), pct(r.ttfd, 99)
                    results[name]["framings"][framing]["ttfd"] = {
                        "p50_ms": p50 * 1e3,
                        "p99_ms": p99 * 1e3,
                        "direct_p50_ms": d50 * 1e3,
                        "direct_p99_ms": d99 * 1e3,
                        "added_p50_ms": (p50 - d50) * 1e3,
                        "added_p99_ms": (p99 - d99) * 1e3,
                        "failures": len(r.failures),
                    }
                    print(
                        f"  {name:9s} p50 {p50 * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms   "
                        f"added p50 {(p50 - d50) * 1e3:+.3f} ms  p99 {(p99 - d99) * 1e3:+.3f} ms"
                    )
                    print_failures(name, r.failures)
                    failures += len(r.failures)

        for key in ("a", "b", "d"):
            if key not in args.scenarios:
                continue
            for framing in args.framings:  # one scenario's framings back to back: drift hits them alike
                title, clients, streams, tokens, model = load_scenarios(args, framing)[key]
                print(f"\n== {title} [{framing} framing]")
                # Reference: the client straight on the fake, to show the fake is not the limit.
                ref = LoadResult()
                with measured(upstream, upstream, ref):
                    got = await run_streams(
                        direct, clients, streams, model, tokens, args.stream_timeout, args.scenario_timeout
                    )
                print(
                    f"  {'direct':9s}     {got.tokens / got.wall:,.0f} tok/s without a relay "
                    f"(upstream CPU {ref.cpu / max(got.tokens, 1) * 1000:.4f} s/1k tok, "
                    f"client CPU {ref.client_cpu:.2f} s)"
                )
                print_failures("direct", got.failures)
                failures += len(got.failures)
                runs: dict[str, list[LoadResult]] = {name: [] for name in targets}
                for rep in range(args.repeat):
                    # take turns going first
                    order = list(targets) if rep % 2 == 0 else list(targets)[::-1]
                    for name in order:
                        r = LoadResult()
                        out = Path(args.profile_dir) / f"{name}-{key}.{ext}"
                        prof_on = args.profile == key and rep == 0 and framing == args.framings[0]
                        prof = profiled(prof_on, relays[name], out, args.profile_format)
                        conns0 = await upstream_connections(stats_conn)
                        with prof, measured(relays[name], upstream, r):
                            got = await run_streams(
                                targets[name],
                                clients,
                                streams,
                                model,
                                tokens,
                                args.stream_timeout,
                                args.scenario_timeout,
                            )
                        r.upstream_conns = await upstream_connections(stats_conn) - conns0
                        r.streams, r.tokens, r.wall, r.ttfd, r.failures = (
                            got.streams,
                            got.tokens,
                            got.wall,
                            got.ttfd,
                            got.failures,
                        )
                        runs[name].append(r)
                        print(run_line(name, rep, r))
                        print_failures(name, r.failures)
                        failures += len(r.failures)
                for name, rs in runs.items():
                    results[name]["framings"][framing][key] = summarize(rs)

        if "m" in args.scenarios:
            print(
                f"\n== M: {m_streams} open slow streams (role chunk + 1 token, then silence), aborted; "
                f"{args.m_cycles} cycles per relay"
            )
            for name, target in targets.items():
                m = await memory_scenario(args, relays[name], upstream, target, stats_conn, m_streams)
                results[name]["m"] = {"framing": FRAMINGS[0], **m}
                for line in memory_lines(name, m):
                    print(line)
                if m["failures"]:
                    print(f"  !! {name}: {m['failures']} failed streams, e.g. {m['failure_examples']}")
                failures += m["failures"]

        print_table(results, args.framings)
        if args.json:
            write_json(args.json, results, args.framings)
        for name, s in relays.items():
            if s.proc.poll() is not None:
                print(f"!! {name} exited early ({s.proc.returncode}):\n{s.log_tail()}")
                failures += 1
    finally:
        for s in reversed(servers):
            s.stop()
        if args.keep_logs:
            print(f"server logs: {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    if failures:
        print(f"\n!! {failures} failures: the figures above are not valid")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
