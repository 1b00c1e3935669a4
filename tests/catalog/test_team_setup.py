"""The README's team set-up, run as written against real local servers: PostgreSQL on
127.0.0.1 and moto's S3; only the host names, port, bucket and credentials are replaced."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def team_block() -> str:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL) if "createdb" in b]
    return block


def test_the_readme_team_setup_runs_on_real_servers(postgres_server, s3_server, tmp_path):
    db = "team_" + uuid.uuid4().hex[:8]
    bucket = "team-" + uuid.uuid4().hex[:8]
    s3_server.create_bucket(bucket)
    script = (team_block()
              .replace("db.example", "127.0.0.1").replace("port=5432", f"port={postgres_server.port}")
              .replace("-p 5432", f"-p {postgres_server.port}").replace("dbname=lake", f"dbname={db}")
              .replace("-U postgres lake", f"-U postgres {db}").replace("http://s3.example:9000", s3_server.endpoint)
              .replace("team-bucket", bucket).replace("/mnt/team/snapshots", str(tmp_path / "snapshots"))
              .replace("AKIAEXAMPLE", s3_server.KEY_ID).replace("SECRETEXAMPLE", s3_server.SECRET))
    assert "createdb" in script and "masters roundtrip" in script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MASTERS_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # the installed `masters`
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert s3_server.SECRET not in proc.stdout + proc.stderr  # credentials are never printed
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=s3_server.KEY_ID, secret_key=s3_server.SECRET, region="us-east-1",
                           endpoint_override=s3_server.endpoint)
    stored = fs.get_file_info(pafs.FileSelector(f"{bucket}/lake/main", recursive=True))
    assert any(f.path.endswith(".parquet") for f in stored)  # the data went to the bucket
    assert not (tmp_path / "lake").exists()
