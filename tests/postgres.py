"""A throwaway PostgreSQL server for tests: its own data folder, 127.0.0.1 only, trust auth.

Optuna's RDB storage (``nas-mtl tune --storage postgresql+psycopg2://...``) is tested against
a real server, because what it relies on (row locks that keep trial numbers unique while
several workers create trials, heartbeats of running trials) differs from SQLite's. The
server is started with ``initdb`` + ``pg_ctl`` from PATH, ``/usr/lib/postgresql/*/bin``
(Debian and Ubuntu keep them there) or ``/usr/local/bin``. PostgreSQL refuses to run as root,
so as root it runs as the system user :data:`PG_USER` (created when missing), which owns the
temporary folder that holds the data, the socket and the log.

Example::

    with postgres_server() as url:
        optuna.create_study(storage=url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "nasmtl-pg"  # the unprivileged owner of the server when the tests run as root
SUPERUSER = "postgres"  # the database role that initdb creates
DATABASE = "nas_mtl_test"
REQUIRED_ENV = "NAS_MTL_POSTGRES"  # set (by .ci/run): a missing server fails the tests
SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/local/bin")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (no binaries, no psycopg2, no user)."""


@dataclass(frozen=True)
class Binaries:
    initdb: Path
    pg_ctl: Path


def find_binaries() -> Binaries | None:
    """``initdb`` and ``pg_ctl``: ``$NAS_MTL_POSTGRES`` (the initdb that .ci/run found or
    installed), then PATH, then the newest of :data:`SEARCH_DIRS`."""
    given = os.environ.get(REQUIRED_ENV, "")
    if given:
        for initdb in (Path(given), Path(given).resolve()):
            if os.access(initdb.with_name("pg_ctl"), os.X_OK):
                return Binaries(initdb, initdb.with_name("pg_ctl"))
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return Binaries(Path(on_path[0]), Path(on_path[1]))  # type: ignore[arg-type]
    for pattern in SEARCH_DIRS:
        for folder in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
            if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
                return Binaries(initdb, pg_ctl)
    return None


def _version_key(folder: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/16/bin`` -> (16,), so that 16 sorts above 9.6."""
    part = Path(folder).parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)


@dataclass(frozen=True)
class _Account:
    """Whom the server processes run as: ``None`` ids keep the current user."""

    uid: int | None = None
    gid: int | None = None
    home: str = "/"


def _server_account() -> _Account:
    """The current user, or (as root) :data:`PG_USER`, created as a system user if missing."""
    if os.geteuid() != 0:
        return _Account(home=tempfile.gettempdir())
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresUnavailable(
                f"running as root, PostgreSQL needs an unprivileged user, and {PG_USER!r} "
                f"does not exist and useradd is missing; create it: "
                f"useradd --system --no-create-home {PG_USER}"
            ) from None
        made = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--shell", "/bin/false"]
            + [PG_USER],
            capture_output=True,
            text=True,
        )
        try:  # another test process may have created it at the same moment
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"could not create the user {PG_USER!r}: {made.stderr.strip()}"
            ) from None
    return _Account(entry.pw_uid, entry.pw_gid, "/")


def _run(cmd: list[str], account: _Account, cwd: Path, log: Path) -> None:
    """Run a PostgreSQL tool as ``account``; its output goes to ``log`` (no pipe a daemon
    could keep open); a failure raises with the end of that log."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": account.home,
        "LC_ALL": "C",
        "LANG": "C",
    }
    with open(log, "ab") as out:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            user=account.uid,
            group=account.gid,
            extra_groups=[] if account.uid is not None else None,
            timeout=120,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {done.returncode}):\n{tail}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    port: int
    database: str = DATABASE
    user: str = SUPERUSER

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (Optuna's ``storage=``)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"


@contextlib.contextmanager
def postgres_server(database: str = DATABASE) -> Iterator[PostgresServer]:
    """Start a server in a new temporary folder, create ``database``; stop and delete after.

    Raises :class:`PostgresUnavailable` when it cannot run here (tests skip on that).
    """
    binaries = find_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            "PostgreSQL binaries (initdb, pg_ctl) were not found on PATH or in "
            f"{', '.join(SEARCH_DIRS)}; install them (apt-get install postgresql)"
        )
    try:
        import psycopg2
        from psycopg2 import sql
    except ImportError:
        raise PostgresUnavailable(
            "psycopg2 is not installed; pip install -e '.[test]' installs psycopg2-binary"
        ) from None
    account = _server_account()
    # /tmp, not a root-only temp folder: the server's user must reach its own folder
    root = Path(tempfile.mkdtemp(prefix="nas-mtl-pg-", dir="/tmp" if account.uid else None))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        if account.uid is not None:
            os.chown(root, account.uid, account.gid)  # type: ignore[arg-type]
        log.touch()
        if account.uid is not None:
            os.chown(log, account.uid, account.gid)  # type: ignore[arg-type]
        _run(
            [str(binaries.initdb), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
            + ["--encoding=UTF8", "--no-locale", "--no-sync"],
            account,
            root,
            log,
        )
        for attempt in range(3):  # the free port may be taken between choosing and binding
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    [str(binaries.pg_ctl), "-D", str(data), "-l", str(log), "-o", options]
                    + ["-w", "-t", "60", "start"],
                    account,
                    root,
                    log,
                )
                started = True
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        with contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres")
        ) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        yield PostgresServer(port=port, database=database)
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run(
                    [str(binaries.pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    account,
                    root,
                    log,
                )
        shutil.rmtree(root, ignore_errors=True)
