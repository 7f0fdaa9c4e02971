"""API latency under load: the job list and job detail, against ``/health`` in the same run.

Creates a fresh PostgreSQL database (``--database``, dropped afterwards unless ``--keep``),
migrates it and seeds it with bulk Core inserts, not through the API: 50 organizations, each
with a user, an API key, a dataset and 200 jobs in varied statuses with their events, metric
points and (succeeded jobs) models. Then it serves the app as production does, ``uvicorn
tuneforge.app:create_app --factory --workers 2`` without the embedded worker, and drives it
with 50 closed-loop keep-alive clients, each request made as a random organization, for
``--seconds`` per phase:

- ``GET /health``: one database round trip, no auth, no query work: the baseline;
- ``GET /fine-tuning/jobs?limit=20`` and ``GET /fine-tuning/jobs/{id}`` (a random job of
  that organization), once with API keys and once with JWTs (``--auth`` picks).

Each phase's p99 and throughput are printed relative to the baseline's, with the server's
CPU per request, which contention on a shared machine disturbs least.

``--rate R ...`` (400 by default) adds paced phases: the same clients offer R requests per
second in all, each request due on a schedule and timed from when it was due, so a queue
shows as latency (no coordinated omission). The goal is stated at an offered load, since a
closed loop of C clients has a mean latency of C / throughput (Little's law) and 2 shared
cores cannot serve the 1,000 req/s that 50 ms at 50 clients needs: at 400 req/s, job list
p99 <= 50 ms and job detail p99 <= 25 ms, no errors. It is printed as PASS/FAIL, never
asserted.

The clients speak HTTP/1.1 over plain asyncio streams rather than httpx, since they share
the cores with the server; the generator's CPU is printed and flagged near one core (its
loop is one thread). Clients are spread evenly over the workers, as the kernel's split is
often 40/10. PostgreSQL CPU counts the benchmark database's backends alive at the phase's
end, so a pool that churns connections (also printed) makes it an underestimate.

    python benchmarks/api_load.py                      # 15 s per phase
    python benchmarks/api_load.py --auth jwt --seconds 5
    python benchmarks/api_load.py --rate 400 800        # paced phases at both rates
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from sqlalchemy import Engine, insert

from tuneforge.auth.security import (
    TokenClaims,
    email_key,
    generate_api_key,
    hash_api_key,
    hash_password,
    issue_access_token,
)
from tuneforge.db.base import new_id, utcnow
from tuneforge.db.engine import make_engine
from tuneforge.db.migrate import upgrade_to_head
from tuneforge.db.tables.auth import ApiKey, Membership, Organization, Role, User
from tuneforge.db.tables.datasets import DatasetFormat, DatasetStatus, FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobMetric, JobStatus
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.jobs.states import TERMINAL_STATUSES

S = JobStatus
JWT_SECRET = "api-load-benchmark-signing-key-long-enough-for-hs256"
GOAL_RATE = 400.0
GOAL_P99_MS = {"list": 50.0, "detail": 25.0}
GENERATOR_SATURATED = 0.85  # of one core: the client's event loop is one thread
NOISY_OTHER_CORES = 0.25
STATUS_WEIGHTS = {
    S.SUCCEEDED: 40,
    S.FAILED: 10,
    S.CANCELLED: 10,
    S.RUNNING: 15,
    S.QUEUED: 10,
    S.VALIDATING_FILES: 5,
    S.PENDING: 10,
}
# The status events a job in each status has been through, after its "created" event.
STATUS_PATHS = {
    S.PENDING: [],
    S.VALIDATING_FILES: [S.VALIDATING_FILES],
    S.QUEUED: [S.VALIDATING_FILES, S.QUEUED],
    S.RUNNING: [S.VALIDATING_FILES, S.QUEUED, S.RUNNING],
    S.SUCCEEDED: [S.VALIDATING_FILES, S.QUEUED, S.RUNNING, S.SUCCEEDED],
    S.FAILED: [S.VALIDATING_FILES, S.QUEUED, S.RUNNING, S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}
METRIC_STEPS = 10
LIST_PATH = "/fine-tuning/jobs?limit=20"
RESOLVED_HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}
BASE_MODELS = {"local": "SmolLM2-135M-Instruct", "openai": "gpt-4o-mini-2024-07-18"}


@dataclass
class Seeded:
    """Per organization: its API key, a JWT of its user, its job ids."""

    api_keys: list[str] = field(default_factory=list)
    jwts: list[str] = field(default_factory=list)
    job_ids: list[list[str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {version[0] if version else '?'}: database {name} created")
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Rows:
    """Rows to bulk-insert, by table, in the order their foreign keys need."""

    def __init__(self) -> None:
        self.by_table: dict[type, list[dict[str, Any]]] = defaultdict(list)

    def add(self, table: type, **values: Any) -> dict[str, Any]:
        self.by_table[table].append(values)
        return values


def add_jobs(
    rows: Rows, rng: random.Random, count: int, org_id: str, user_id: str, dataset_id: str
) -> None:
    """An organization's jobs, with the events, metric points and models their status implies."""
    now = utcnow()
    weights = list(STATUS_WEIGHTS.values())
    for status in rng.choices(list(STATUS_WEIGHTS), weights=weights, k=count):
        job_id, provider = new_id(), rng.choice(list(BASE_MODELS))
        created = now - timedelta(seconds=rng.uniform(0, 90 * 86_400))
        trained = status in (S.RUNNING, S.SUCCEEDED, S.FAILED)
        losses = [2.5 * 0.8**step + rng.uniform(0, 0.05) for step in range(METRIC_STEPS)]
        rows.add(
            FineTuningJob,
            id=job_id,
            organization_id=org_id,
            created_by=user_id,
            dataset_id=dataset_id,
            provider=provider,
            base_model=BASE_MODELS[provider],
            status=status,
            hyperparameters={"n_epochs": "auto", "batch_size": "auto"},
            # What job creation stores: "auto" resolved once, read back by every view.
            resolved_hyperparameters=RESOLVED_HYPERPARAMETERS,
            # Core inserts take column names; an attribute name such as job_metadata is dropped.
            metadata={"team": rng.choice(["search", "support", "sales"])},
            progress_percentage=100.0 if status == S.SUCCEEDED else 50.0 if trained else 0.0,
            latest_metrics={"train_loss": losses[-1]} if trained else None,
            started_at=created + timedelta(minutes=1) if trained else None,
            finished_at=created + timedelta(minutes=30) if status in TERMINAL_STATUSES else None,
            fine_tuned_model_name=f"ft:{job_id}" if status == S.SUCCEEDED else None,
            error_code="training_error" if status == S.FAILED else None,
            error_message="Loss diverged" if status == S.FAILED else None,
            created_at=created,
            updated_at=created + timedelta(minutes=30),
        )
        previous = "created"
        for minute, target in enumerate(["created", *STATUS_PATHS[status]]):
            message = f"Job status changed from {previous} to {target}"
            at = created + timedelta(minutes=minute)
            event_type = "created" if target == "created" else "status"
            rows.add(
                FineTuningEvent,
                job_id=job_id,
                event_type=event_type,
                message=message,
                created_at=at,
                updated_at=at,
            )
            previous = target
        for step, loss in enumerate(losses if trained else [], start=1):
            rows.add(JobMetric, job_id=job_id, step=step, name="train_loss", value=loss)
        if status == S.SUCCEEDED:
            rows.add(
                FineTunedModel,
                organization_id=org_id,
                job_id=job_id,
                dataset_id=dataset_id,
                name=f"ft:{job_id}",
                provider=provider,
                base_model=BASE_MODELS[provider],
                provider_model_id=f"ft:{job_id}",
            )


def seed(engine: Engine, organizations: int, jobs_per_org: int) -> Seeded:
    """Accounts, datasets and jobs in one executemany per table; one password hash for all."""
    rng = random.Random(7)
    password_hash = hash_password("benchmark password")
    seeded = Seeded()
    rows = Rows()
    for n in range(organizations):
        org_id = rows.add(Organization, id=new_id(), name=f"Bench org {n}")["id"]
        email = f"bench{n}@example.com"
        user_id = rows.add(
            User,
            id=new_id(),
            email=email,
            email_key=email_key(email),
            name=f"User {n}",
            password_hash=password_hash,
        )["id"]
        rows.add(Membership, user_id=user_id, organization_id=org_id, role=Role.OWNER)
        key = generate_api_key()
        rows.add(
            ApiKey,
            organization_id=org_id,
            user_id=user_id,
            name="benchmark",
            prefix=key[:10],
            key_hash=hash_api_key(key),
        )
        dataset_id = rows.add(
            FineTuningDataset,
            id=new_id(),
            organization_id=org_id,
            name=f"Dataset {n}",
            format=DatasetFormat.JSONL,
            status=DatasetStatus.VALID,
            total_examples=1_000,
            valid_examples=1_000,
            train_examples=900,
            validation_examples=100,
        )["id"]
        first_job = len(rows.by_table[FineTuningJob])
        add_jobs(rows, rng, jobs_per_org, org_id, user_id, dataset_id)
        seeded.job_ids.append([job["id"] for job in rows.by_table[FineTuningJob][first_job:]])
        claims = TokenClaims(user_id=user_id, organization_id=org_id)
        seeded.api_keys.append(key)
        seeded.jwts.append(issue_access_token(claims, JWT_SECRET, 86_400))
    with engine.begin() as conn:
        for table, table_rows in rows.by_table.items():
            conn.execute(insert(table), table_rows)
            seeded.counts[table.__tablename__] = len(table_rows)  # type: ignore[attr-defined]
        conn.exec_driver_sql("ANALYZE")
    return seeded


def start_server(database_url: str, workers: int, data_dir: Path) -> tuple[subprocess.Popen, int]:
    """The app as ``tuneforge serve`` runs it in production, minus the embedded worker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": database_url,
        "TUNEFORGE_EMBEDDED_WORKER": "false",
        "TUNEFORGE_JWT_SECRET": JWT_SECRET,
        "TUNEFORGE_DATA_DIR": str(data_dir),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tuneforge.app:create_app",
        "--factory",
        f"--workers={workers}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--log-level=warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, env=env, cwd=data_dir)
    return server, port


def worker_processes(server: subprocess.Popen, workers: int) -> list[psutil.Process]:
    """The processes that serve requests (the supervisor also runs a resource tracker)."""
    supervisor = psutil.Process(server.pid)
    if workers == 1:
        return [supervisor]
    return [p for p in supervisor.children() if "--multiprocessing-fork" in p.cmdline()]


def client_ports_per_worker(processes: list[psutil.Process], port: int) -> list[set[int]]:
    """For each worker, the client-side ports of the connections it has accepted."""
    return [
        {
            c.raddr.port
            for c in process.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr
        }
        for process in processes
    ]


def connections_per_worker(processes: list[psutil.Process], port: int) -> list[int]:
    return [len(ports) for ports in client_ports_per_worker(processes, port)]


async def wait_until_serving(
    server: subprocess.Popen, port: int, workers: int
) -> list[psutil.Process]:
    """Until every worker has answered ``/health``: a late one would get no connections."""
    deadline = time.monotonic() + 60
    held: list[Connection] = []
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"uvicorn exited with status {server.returncode}")
            try:
                held.append(await Connection.open(port))
                if await held[-1].get("/health", "") == 200:
                    processes = worker_processes(server, workers)
                    if len(processes) == workers and all(connections_per_worker(processes, port)):
                        return processes
            except (OSError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(0.1)
    finally:
        for connection in held:
            connection.close()
    raise SystemExit("uvicorn's workers did not all answer /health within 60 s")


class Connection:
    """One keep-alive HTTP/1.1 connection: a GET written by hand, the body read by length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str, token: str) -> int:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            raise ConnectionResetError("server closed the connection")
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Phase:
    """An endpoint under load: its path for an organization, and each one's credential."""

    name: str
    path_for: Callable[[int, random.Random], str]
    tokens: list[str]
    kind: str = "health"  # "list" or "detail": which goal applies
    rate: float | None = None  # offered req/s in all; None: a closed loop

    def paced(self, rate: float) -> Phase:
        return Phase(f"{self.name} @{rate:g}/s", self.path_for, self.tokens, self.kind, rate)


@dataclass
class PhaseResult:
    name: str
    kind: str = "health"
    rate: float | None = None
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    new_db_connections: int = 0
    connections_per_worker: list[int] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def cpu_ms_per_request(self, group: str) -> float:
        return self.cpu_seconds[group] * 1000 / max(1, len(self.latencies_ms))

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Client:
    """A closed-loop client: one request at a time on its own keep-alive connection."""

    def __init__(self, connection: Connection, port: int, seed: str) -> None:
        self.connection: Connection | None = connection
        self.port = port
        self.rng = random.Random(seed)

    async def run(
        self, phase: Phase, until: float, out: PhaseResult, interval: float | None
    ) -> None:
        """Closed loop; or paced, one request due every ``interval`` seconds, its latency
        counted from when it was due: a server that falls behind cannot hide its queue
        (no coordinated omission)."""
        due = time.perf_counter() + self.rng.uniform(0, interval or 0)
        while time.monotonic() < until:
            org = self.rng.randrange(len(phase.tokens))
            if interval is None:
                started = time.perf_counter()
            else:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                started, due = due, due + interval
            try:
                self.connection = self.connection or await Connection.open(self.port)
                status = await self.connection.get(phase.path_for(org, self.rng), phase.tokens[org])
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                out.errors[type(exc).__name__] += 1
                self.close()
                continue
            if status == 200:
                out.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                out.errors[f"HTTP {status}"] += 1

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


class CpuMeter:
    """CPU seconds by who used them: this generator, uvicorn, the benchmark database's
    PostgreSQL backends, and everything else (on a shared machine, other people's work).

    Backends come and go with connections, so each group is a per-pid snapshot and a
    process born during the phase counts whole.
    """

    def __init__(self, server: subprocess.Popen, database: str) -> None:
        self.server = psutil.Process(server.pid)
        self.database = database
        self.started = self._snapshot()

    def _processes(self) -> dict[str, list[psutil.Process]]:
        backends = []
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "postgres" and any(
                f" {self.database} " in part for part in process.info["cmdline"] or []
            ):
                backends.append(process)
        return {
            "generator": [psutil.Process()],
            "uvicorn": [self.server, *self.server.children(recursive=True)],
            "postgres": backends,
        }

    def _snapshot(self) -> tuple[float, dict[str, dict[int, float]]]:
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + times.irq + times.softirq
        groups: dict[str, dict[int, float]] = {}
        for group, processes in self._processes().items():
            groups[group] = {}
            for process in processes:
                try:
                    cpu = process.cpu_times()
                except psutil.Error:
                    continue
                groups[group][process.pid] = cpu.user + cpu.system
        return busy, groups

    def used(self) -> dict[str, float]:
        """CPU seconds each group used since this meter started."""
        busy_before, before = self.started
        busy_after, after = self._snapshot()
        used = {
            group: sum(cpu - before[group].get(pid, 0.0) for pid, cpu in pids.items())
            for group, pids in after.items()
        }
        used["other"] = max(0.0, busy_after - busy_before - sum(used.values()))
        return used


def database_sessions(admin_dsn: str, database: str) -> int:
    """Connections ever opened to the database: a pool that churns opens new ones under load."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Target:
    server: subprocess.Popen
    port: int
    workers: list[psutil.Process]
    admin_dsn: str
    database: str


async def balanced_connections(target: Target, count: int) -> list[Connection]:
    """``count`` connections spread evenly over the workers.

    Which worker accepts a connection is a race between their event loops, and a 43/7
    split is common; the busier worker then decides p99, differently in every phase.
    """
    quota = -(-count // len(target.workers))
    kept: list[list[Connection]] = [[] for _ in target.workers]
    spare: list[Connection] = []
    try:
        for _ in range(20 * count):
            if sum(map(len, kept)) == count:
                break
            connection = await Connection.open(target.port)
            await connection.get("/health", "")
            client_port = connection.writer.get_extra_info("sockname")[1]
            owners = client_ports_per_worker(target.workers, target.port)
            worker = next((i for i, ports in enumerate(owners) if client_port in ports), None)
            if worker is not None and len(kept[worker]) < quota:
                kept[worker].append(connection)
            else:
                spare.append(connection)
    finally:
        for connection in spare:
            connection.close()
    connections = [c for per_worker in kept for c in per_worker]
    for _ in range(count - len(connections)):
        connections.append(await Connection.open(target.port))
    return connections


async def run_phase(phase: Phase, target: Target, args: argparse.Namespace) -> PhaseResult:
    """Connect the clients evenly over the workers, warm up (discarded), then measure
    ``args.seconds`` on the same connections."""
    connections = await balanced_connections(target, args.clients)
    clients = [Client(c, target.port, f"{phase.name}-{i}") for i, c in enumerate(connections)]
    interval = len(clients) / phase.rate if phase.rate else None
    try:
        until = time.monotonic() + args.warmup
        warmup = PhaseResult(phase.name)
        await asyncio.gather(*(c.run(phase, until, warmup, interval) for c in clients))
        result = PhaseResult(phase.name, phase.kind, phase.rate)
        result.connections_per_worker = connections_per_worker(target.workers, target.port)
        meter = CpuMeter(target.server, target.database)
        sessions = database_sessions(target.admin_dsn, target.database)
        started = time.monotonic()
        until = started + args.seconds
        await asyncio.gather(*(c.run(phase, until, result, interval) for c in clients))
        result.seconds = time.monotonic() - started
        result.cpu_seconds = meter.used()
        result.new_db_connections = database_sessions(target.admin_dsn, target.database) - sessions
        return result
    finally:
        for client in clients:
            client.close()


def report(results: list[PhaseResult], clients: int) -> None:
    baseline = results[0]
    header = (
        f"{'endpoint':<46} {'requests':>8} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'p99/health':>10} {'req/s/health':>12} {'app CPU ms/req':>14} "
        f"{'db CPU ms/req':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<46} {len(r.latencies_ms):>8,} {r.throughput:>6.0f} "
            f"{r.percentile(0.50):>7.1f} {r.percentile(0.99):>7.1f} "
            f"{sum(r.errors.values()):>6} {r.percentile(0.99) / baseline.percentile(0.99):>10.2f} "
            f"{r.throughput / baseline.throughput:>12.2f} {r.cpu_ms_per_request('uvicorn'):>14.2f} "
            f"{r.cpu_ms_per_request('postgres'):>13.2f}"
        )
    print()
    cores = psutil.cpu_count() or 1
    for r in results:
        busy = ", ".join(f"{group} {sec / r.seconds:.2f}" for group, sec in r.cpu_seconds.items())
        split = "/".join(map(str, r.connections_per_worker))
        print(
            f"{r.name}: CPU cores busy (of {cores}): {busy}; client connections per worker "
            f"{split}; {r.new_db_connections} new PostgreSQL connections"
        )
        if r.errors:
            print(f"  errors: {dict(r.errors)}")
    generator = max(r.cpu_seconds["generator"] / r.seconds for r in results)
    if generator >= GENERATOR_SATURATED:
        print(f"The load generator used {generator:.2f} of its one core: it may be the bottleneck.")
    else:
        print(
            f"The load generator used at most {generator:.2f} core: the server is the bottleneck."
        )
    other = max(r.cpu_seconds["other"] / r.seconds for r in results)
    if other >= NOISY_OTHER_CORES:
        print(
            f"Other processes used up to {other:.2f} cores: absolute figures are noisy here; "
            "the ratios to /health and the CPU per request are the comparable ones."
        )
    print(
        f"\nPaced phases; goal at {GOAL_RATE:g} req/s offered: list p99 <= "
        f"{GOAL_P99_MS['list']:g} ms, detail p99 <= {GOAL_P99_MS['detail']:g} ms, no errors"
    )
    for r in results:
        if r.rate is None:
            continue
        p99, errors = r.percentile(0.99), sum(r.errors.values())
        line = (
            f"  {r.name:<46} p99 {p99:.1f} ms at {r.throughput:.0f} of {r.rate:g} req/s "
            f"offered ({r.throughput / baseline.throughput:.2f} of /health's), {errors} errors"
        )
        if r.rate == GOAL_RATE and r.kind in GOAL_P99_MS:
            line += ": PASS" if p99 <= GOAL_P99_MS[r.kind] and not errors else ": FAIL"
        print(line)
    print(
        f"Closed loop at {clients} clients (for reference): /health {baseline.throughput:.0f} req/s"
    )


async def measure(
    args: argparse.Namespace, seeded: Seeded, server: subprocess.Popen, port: int
) -> list[PhaseResult]:
    workers = await wait_until_serving(server, port, args.workers)
    target = Target(server, port, workers, args.admin_dsn, args.database)
    phases = [Phase("GET /health", lambda org, rng: "/health", [""] * len(seeded.job_ids))]
    for auth in args.auth:
        tokens = seeded.api_keys if auth == "api-key" else seeded.jwts
        phases += [
            Phase(
                f"GET /fine-tuning/jobs?limit=20 {auth}",
                lambda org, rng: LIST_PATH,
                tokens,
                "list",
            ),
            Phase(
                f"GET /fine-tuning/jobs/{{id}} {auth}",
                lambda org, rng: f"/fine-tuning/jobs/{rng.choice(seeded.job_ids[org])}",
                tokens,
                "detail",
            ),
        ]
    phases += [phase.paced(rate) for rate in args.rate for phase in phases[1:]]
    return [await run_phase(phase, target, args) for phase in phases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="per phase, not counted")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[GOAL_RATE],
        help="also run each endpoint paced at these offered req/s (all clients together)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--organizations", type=int, default=50)
    parser.add_argument("--jobs-per-org", type=int, default=200)
    parser.add_argument("--auth", nargs="+", choices=["api-key", "jwt"], default=["api-key", "jwt"])
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get(
            "TUNEFORGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--database", default="tuneforge_bench")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()

    database_url = create_database(args.admin_dsn, args.database)
    try:
        upgrade_to_head(database_url)
        engine = make_engine(database_url)
        started = time.perf_counter()
        seeded = seed(engine, args.organizations, args.jobs_per_org)
        engine.dispose()
        counts = ", ".join(f"{n:,} {table}" for table, n in seeded.counts.items())
        print(f"Seeded in {time.perf_counter() - started:.1f} s: {counts}")
        print(
            f"{args.workers} uvicorn workers, {args.clients} clients, "
            f"{args.seconds:g} s per phase after {args.warmup:g} s warm-up, "
            f"{psutil.cpu_count()} CPU cores shared by server, database and generator\n"
        )
        with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as data_dir:
            server, port = start_server(database_url, args.workers, Path(data_dir))
            try:
                results = asyncio.run(measure(args, seeded, server, port))
            finally:
                server.terminate()
                server.wait(timeout=30)
        report(results, args.clients)
    finally:
        if not args.keep:
            drop_database(args.admin_dsn, args.database)


if __name__ == "__main__":
    main()
