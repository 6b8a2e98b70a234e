"""The load generator: a separate process that drives the service over real HTTP/1.1 with
keep-alive connections, one request in flight per connection, and reports what it saw.

A hand-written client on uvloop streams: the requests are tiny and the point is to spend as
little CPU as possible here, so the service, not the generator, is what gets measured. The
generator reports its own CPU use so a run can tell when it was the bottleneck.

    python -m bench.loadgen --scenario accrual_spread --clients 32 --duration 10 --seed F
"""

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import uvloop

from bench.scenarios import SCENARIOS, Request, Seed


def _encode(request: Request, host: str) -> bytes:
    body = request.body or b""
    head = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    if request.body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(
    host: str,
    port: int,
    make: Callable[[], Request],
    deadline: float,
    stats: dict[str, Any],
    delay: float,
) -> None:
    # Connections open a few milliseconds apart, as tills do, not in one burst: a burst is
    # accepted by whichever worker process wakes first, which then serves nearly all of them.
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[int] = stats["latencies_ns"]
    try:
        while time.perf_counter() < deadline:
            request = make()
            started = time.perf_counter_ns()
            writer.write(_encode(request, host))
            try:
                status, body = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                stats["errors"] += 1
                stats["error_samples"].append(repr(exc))
                return
            latencies.append(time.perf_counter_ns() - started)
            stats["requests"] += 1
            if 200 <= status < 300:
                stats["postings"] += request.count_postings(body)
            else:
                stats["errors"] += 1
                if len(stats["error_samples"]) < 5:
                    stats["error_samples"].append(f"{status} {body[:300].decode(errors='replace')}")
    finally:
        writer.close()


async def run(
    scenario: str, clients: int, duration: float, seed: Seed, port: int
) -> dict[str, Any]:
    rng = random.Random(uuid.uuid4().int)
    make = SCENARIOS[scenario](seed, rng)
    stats: dict[str, Any] = {
        "requests": 0,
        "postings": 0,
        "errors": 0,
        "error_samples": [],
        "latencies_ns": [],
    }
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_client("127.0.0.1", port, make, deadline, stats, i * 0.01) for i in range(clients))
    )
    wall = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    latencies = sorted(stats.pop("latencies_ns"))

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    return {
        "scenario": scenario,
        "clients": clients,
        "duration_s": round(wall, 3),
        "requests": stats["requests"],
        "requests_per_s": round(stats["requests"] / wall, 1),
        "postings": stats["postings"],
        "postings_per_s": round(stats["postings"] / wall, 1),
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "errors": stats["errors"],
        "error_samples": stats["error_samples"],
        # Share of one core this (single-threaded) generator used: near 1.0 means it, not the
        # service, set the pace.
        "loadgen_cpu_share": round(cpu / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", required=True, help="JSON file written by bench.seed")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with open(args.seed) as f:
        seed = Seed.from_json(json.load(f))
    if args.scenario == "engine_accrual":
        from bench.engine_probe import run_engine

        result = uvloop.run(run_engine(args.clients, args.duration, seed))
    else:
        result = uvloop.run(run(args.scenario, args.clients, args.duration, seed, args.port))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
