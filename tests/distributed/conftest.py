"""A throw-away PostgreSQL server for the distributed tests.

`pg_url` yields a SQLAlchemy URL of a fresh, empty database. The server is either the one named by
the TASKSCOUT_PG_URL environment variable (each test then gets its own database on it when the
role may create databases, else the named database itself), or a private PostgreSQL cluster that
this session starts: `initdb` in a temporary directory, listening on 127.0.0.1 only on a free
port, run as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
The cluster is stopped and its directory removed when the session ends, also after failures.

Tests that use it are marked `postgres` and are skipped, with the reason, when neither a URL nor
the PostgreSQL binaries (/usr/lib/postgresql/15/bin, or TASKSCOUT_PG_BIN) are available.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("TASKSCOUT_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class PgServer:
    """Where the test server listens, and whether each test may get a database of its own."""

    base_url: str  # SQLAlchemy URL without the database name
    database: str  # the database to use when `own_databases` is false
    own_databases: bool


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, args: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool, as `user` when given (we are root then)."""
    if user is not None:
        entry = pwd.getpwnam(user)
        kw.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **kw)


def _start_cluster(root: Path, user: str | None) -> tuple[str, int, str]:
    """initdb + pg_ctl start in `root`; returns (superuser, port, password)."""
    data = root / "data"
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    superuser = "taskscout"
    _run_as(user, [
        str(PG_BIN / "initdb"), "-D", str(data), "-U", superuser, "-E", "UTF8", "--no-sync",
        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
    ], cwd=root)
    last_error = ""
    for _ in range(3):  # a free port can be taken between probing and binding; try another
        port = _free_port()
        opts = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        try:
            _run_as(user, [
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                "-w", "-t", "60", "-o", opts, "start",
            ], cwd=root)
            return superuser, port, password
        except subprocess.CalledProcessError as e:
            last_error = (e.stdout or "") + (e.stderr or "")
    log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
    raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{log}")


def _stop_cluster(root: Path, user: str | None) -> None:
    try:
        _run_as(user, [str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"], cwd=root)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass  # not running (failed start) or already gone: removing the directory is all that is left
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _admin(url: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("TASKSCOUT_PG_URL")
    if url:
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        try:
            _admin(url, "SELECT 1")
        except Exception as e:  # noqa: BLE001 - any failure means the named server is unusable
            pytest.fail(f"TASKSCOUT_PG_URL={url} is set but the server cannot be reached: {e}")
        try:  # a test database of our own, when the role is allowed to create one
            probe = f"taskscout_probe_{uuid.uuid4().hex[:8]}"
            _admin(url, f'CREATE DATABASE "{probe}"')
            _admin(url, f'DROP DATABASE "{probe}"')
            own = True
        except Exception:  # noqa: BLE001
            own = False
        yield PgServer(parsed.set(database="").render_as_string(hide_password=False).rstrip("/"),
                       parsed.database or "", own)
        return
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (install postgresql-15 or set TASKSCOUT_PG_URL)")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        user = "postgres"
    # Not pytest's tmp_path: its parents are private to root and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="taskscout-pg-"))
    try:
        superuser, port, password = _start_cluster(root, user)
        yield PgServer(f"postgresql+psycopg2://{superuser}:{password}@127.0.0.1:{port}", "postgres", True)
    finally:
        _stop_cluster(root, user)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database on the test server (dropped afterwards)."""
    if not pg_server.own_databases:
        yield f"{pg_server.base_url}/{pg_server.database}"
        return
    name = f"ts_{uuid.uuid4().hex[:12]}"
    admin = f"{pg_server.base_url}/{pg_server.database}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_server.base_url}/{name}"
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever needs the server is a `postgres` test, so `-m "not postgres"` leaves it out.
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


# ------------------------------------------------------------------ a real search to compare with

REAL_TASKS = ["g0_t0", "g0_t1", "g1_t0"]


def real_settings(out: Path, **search) -> dict:
    """A tiny search with the real trainer: 3 planted tasks, 2 seeds, 4 epochs (14 models)."""
    return {
        "data": "builtin:planted", "name": "tiny", "tasks": REAL_TASKS, "out": str(out), "device": "cpu",
        "data_options": {"n_rows": 240, "n_inputs": 8, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": 2, "epochs": 4, "batch_size": 64}, "model": {"depth": 2, "width": 8},
        "search": {"phases": ["single", "pairs"], "heartbeat_interval": 1, "grace_period": 3, **search},
    }


@pytest.fixture(scope="session")
def real_one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of the tiny real search, one process, SQLite, every model in one stack."""
    from taskscout.search import run_search
    from taskscout.spec import resolve_spec

    out = tmp_path_factory.mktemp("real") / "run"
    run_search(resolve_spec(None, real_settings(out, stack_size=64)))
    return out
