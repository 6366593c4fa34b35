"""The team setup of deploy/kuberay/mlflow.yaml on one machine: a throwaway PostgreSQL cluster and an `mlflow server`
on it. The tests (tests/test_tracking_server.py) and bench/tracking.py start them from here.

PostgreSQL listens on a unix socket in its own temporary directory only (no TCP port to collide with other work);
the tracking server binds 127.0.0.1 on a free port. Each runs in its own process group and is stopped by its PID
or process group, never by name; leaving a `with` block stops it, whatever happened inside."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alt_core.errors import ALTError

DEBIAN_POSTGRES = "/usr/lib/postgresql/*/bin"  # Debian's `postgresql` package installs here, not on PATH
DATABASE = "mlflow"
SUPERUSER = "alt"


@dataclass(frozen=True)
class Server:
    """A server we started: the address its clients use and its process group (its leader's PID)."""

    address: str
    pgid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path:
    """The directory of PostgreSQL's server programs: initdb's, from PATH or else Debian's versioned directory
    (the newest version there)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # a link on PATH leads to the directory with pg_ctl and createdb
    found = sorted(glob.glob(f"{DEBIAN_POSTGRES}/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ALTError(f"PostgreSQL's initdb is neither on PATH nor in {DEBIAN_POSTGRES}: install the server "
                       "(Debian: apt-get install postgresql)")
    return Path(found[-1]).parent


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ALTError("PostgreSQL does not run as root and there is no `postgres` or `nobody` user to run it as")


def _run(args: list, user: pwd.struct_passwd | None, cwd: Path, what: str) -> None:
    ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env=os.environ | {"LC_ALL": "C"}, **ids)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ALTError(f"{what} failed ({args[0]} exited with {result.returncode}): {tail[0]}")


@contextmanager
def local_postgres() -> Iterator[Server]:
    """A fresh PostgreSQL cluster with a database `mlflow`; yields its SQLAlchemy URI (a unix socket).

    The cluster lives in a new directory under /tmp, short because a socket path holds at most 107 bytes, and
    owned by the user the server runs as (an unprivileged one when we are root); its mode (0700) leaves the socket,
    whose connections need no password, to that user and root. Leaving stops the server (pg_ctl's fast shutdown)
    and deletes the directory."""
    bin_dir, user = postgres_bin_dir(), _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="altpg-", dir="/tmp"))
    data = root / "data"
    try:
        if user:
            os.chown(root, user.pw_uid, user.pw_gid)
        _run([bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
              "--no-instructions"], user, root, "initdb")
        _run([bin_dir / "pg_ctl", "-D", data, "-l", root / "postgres.log", "-w", "-t", "60",
              "-o", f"-c listen_addresses='' -k {root}", "start"], user, root, "pg_ctl start")
        _run([bin_dir / "createdb", "-h", root, "-U", SUPERUSER, DATABASE], user, root, "createdb")
        yield Server(f"postgresql+psycopg://{SUPERUSER}@/{DATABASE}?host={root}", _postmaster_pid(data))
    finally:
        postmaster = _postmaster_pid(data)
        if postmaster is not None:
            _stop_postgres(bin_dir, data, user, postmaster)
        shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(data: Path) -> int | None:
    """The running server's PID, from its pid file; pg_ctl detaches the postmaster into a session of its own,
    so this is also its process group."""
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_postgres(bin_dir: Path, data: Path, user: pwd.struct_passwd | None, postmaster: int) -> None:
    """Fast shutdown through pg_ctl (it signals the postmaster and waits for it to exit); whatever is left of the
    server's process group after that is killed."""
    try:
        _run([bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop"], user, data.parent,
             "pg_ctl stop")
    except (ALTError, subprocess.TimeoutExpired):
        pass  # killed below
    _await_group_exit(postmaster, 30)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of a process group still runs (zombies, which only wait to be reaped, do not count)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _await_group_exit(pgid: int, timeout_s: float) -> None:
    """Wait until a process group has ended; past the timeout, kill what is left of it."""
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)
        while group_alive(pgid):
            time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: str | Path, log: str | Path, workers: int = 2,
                  allowed_hosts: str | None = None, timeout_s: float = 180.0) -> Iterator[Server]:
    """`mlflow server` on 127.0.0.1 (a free port) over a backend store, proxying artifacts to `artifacts`; yields
    its URL once /health answers. Its output goes to `log`. Leaving stops its whole process group (the server
    and its workers): SIGTERM, then SIGKILL to what is left after 30 s."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
               "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as output:
        server = subprocess.Popen(command, start_new_session=True, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if server.poll() is not None:
                lines = Path(log).read_text(errors="replace").strip().splitlines()
                raise ALTError(f"mlflow server exited with code {server.returncode}: {(lines or ['no output'])[-1]}"
                               f" (log: {log})")
            if time.monotonic() > deadline:
                raise ALTError(f"mlflow server did not answer {url}/health within {timeout_s:.0f} s (log: {log})")
            time.sleep(0.5)
        yield Server(url, server.pid)
    finally:
        _kill_group(server.pid, signal.SIGTERM)
        _await_group_exit(server.pid, 30)
        server.wait()
