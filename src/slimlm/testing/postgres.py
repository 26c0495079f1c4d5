"""A throwaway PostgreSQL server on loopback, for tests and for trying a shared study on one machine.

``with postgres_server() as url:`` runs ``initdb`` in a fresh directory, starts the server on a free port
bound to 127.0.0.1 (and a Unix socket in that directory), creates a database and yields its SQLAlchemy URL;
on exit it stops the server and removes the directory. PostgreSQL refuses to run as root, so when this
process is root the server runs as the ``postgres`` user (``runuser -u postgres --``) in a directory that
user owns. The server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``)
or ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if
                   p.parent.name.isdigit() else 0, reverse=True)
    for d in roots:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(database: str = "slimlm") -> Iterator[str]:
    """Start a server, yield ``postgresql://slimlm@127.0.0.1:PORT/DATABASE``, stop it afterwards."""
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found; install Debian's postgresql package.")
    root = Path(tempfile.mkdtemp(prefix="slimlm-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    env = {**os.environ, "LC_ALL": "C"}

    def run(*cmd: str) -> None:
        subprocess.run(prefix + list(cmd), check=True, capture_output=True, env=env, cwd=root)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "slimlm", "-A", "trust", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60", "start")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="slimlm", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield f"postgresql://slimlm@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, env=env, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
