"""Real servers for the team-catalog tests, started on 127.0.0.1 and stopped after:

- PostgreSQL 15 from the system's package (initdb + pg_ctl into a temporary folder; run as the
  ``postgres`` user when the tests run as root, since initdb refuses root), trust auth;
- an S3-compatible object store: moto in server mode (``ThreadedMotoServer``).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return shutil.which(name)


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``conninfo(db)`` names a database on it."""

    def __init__(self):
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="masters-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self._as_postgres else []) + list(args)

    def start(self) -> "PostgresServer":
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); .ci/run installs it")
        if self._as_postgres:
            uid, gid = pwd.getpwnam("postgres")[2:4]
            os.chown(self.root, uid, gid)
        self.root.chmod(0o755)
        subprocess.run(self._cmd(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                                 "-E", "UTF8"), check=True, capture_output=True)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(self._cmd(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start"),
                       check=True, capture_output=True)
        return self

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user=postgres"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self) -> None:
        subprocess.run(self._cmd(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class S3Server:
    """moto's S3 on 127.0.0.1; ``env`` is the AWS environment that points clients at it."""

    KEY_ID = "masters-test-key"
    SECRET = "masters-s3cr3t-never-logged"

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on the console
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.endpoint = ""

    def start(self) -> "S3Server":
        self._server.start()
        host, port = self._server._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.KEY_ID, "AWS_SECRET_ACCESS_KEY": self.SECRET,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def create_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.KEY_ID,
                     aws_secret_access_key=self.SECRET).create_bucket(Bucket=name)
        return f"s3://{name}/"

    def stop(self) -> None:
        self._server.stop()
