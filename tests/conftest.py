import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # test helpers: hub_server, servers


@pytest.fixture
def catalog_dir(tmp_path):
    return tmp_path / "cat"


@pytest.fixture
def gendata():
    from masters.synthetic_gendata import synthetic_gendata

    return synthetic_gendata(num_questions=6, responses_per_source=4)


@pytest.fixture
def filled_catalog(catalog_dir, gendata):
    """A catalog holding one synthetic iteration, committed once. Yields (catalog, tables, config)."""
    from catalog import Catalog

    tables, config = gendata
    cat = Catalog.open(catalog_dir)
    with cat.commit("synthetic", stage="generate", iteration=0) as tx:
        for name, table in tables.items():
            tx.append(name, table)
    yield cat, tables, config
    cat.close()


@pytest.fixture
def both_encodings_catalog(catalog_dir):
    """A catalog whose iteration 0 was scored before fx/2 (token_stats rows in fx16/1) and whose
    iteration 1 after (fx/2). Yields (catalog, {iteration: tables}, reward config)."""
    from catalog import Catalog
    from masters.synthetic_gendata import synthetic_gendata
    from schemas import token_codec as codec

    cat = Catalog.open(catalog_dir)
    made = {}
    for iteration, encoding in ((0, codec.FX16), (1, codec.FX2)):
        tables, config = synthetic_gendata(num_questions=4, responses_per_source=3, iteration=iteration,
                                           seed=iteration, encoding=encoding)
        with cat.commit(f"iteration {iteration}", stage="generate", iteration=iteration) as tx:
            for name, table in tables.items():
                tx.append(name, table)
        made[iteration] = tables
    assert sorted(cat.sql("SELECT DISTINCT encoding FROM token_stats").column(0).to_pylist()) == ["fx/2", "fx16/1"]
    yield cat, made, config
    cat.close()


def _run_python(code: str, *args: str, **kwargs):
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)


def _masters_cli(*args, fault: str | None = None, timeout: int = 900, popen: bool = False, env: dict | None = None):
    """The `masters` CLI in a fresh interpreter (one torch thread; ``MASTERS_FAULT=fault`` when
    given; ``env`` added to the environment): a CompletedProcess, or a running Popen with ``popen``."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("MASTERS_FAULT", None)
    if fault:
        env["MASTERS_FAULT"] = fault
    cmd = [sys.executable, "-m", "masters.cli", *[str(a) for a in args]]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def masters_cli():
    """Run the `masters` CLI in a fresh interpreter (see ``_masters_cli``)."""
    return _masters_cli


@pytest.fixture
def run_python():
    """Run code in a fresh interpreter with this checkout importable (returns a Popen)."""
    return _run_python


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """One tiny randomly initialised checkpoint per VLM family, sharing nothing but the recipe."""
    from gendata.synthetic_vqa import synthetic_vqa
    from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, train_tokenizer

    qs = synthetic_vqa(60, "train")
    texts = [q["question"] + " " + q["answer"] for q in qs.questions.to_pylist()]
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for name, fam in FAMILIES.items():
        tok = train_tokenizer(texts, fam.special_tokens, 400, fam.image_placeholder)
        out[name] = build_tiny_vlm(name, TinySize(64, 2, 4, 2, 32, 2, 2), tok, root / name)
    return out


@pytest.fixture(scope="session")
def sft_folder(tmp_path_factory):
    from gendata.synthetic_vqa import synthetic_vqa
    from masters.sft_data import write_sft_folder

    return write_sft_folder(synthetic_vqa(96, "train"), tmp_path_factory.mktemp("sft") / "sft", "sft-test")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """family -> (student, teacher): two tiny checkpoints sharing one tokenizer, the teacher wider
    and differently seeded (a real scoring pair)."""
    from gendata.synthetic_vqa import synthetic_vqa
    from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, train_tokenizer

    made = {}

    def make(family: str):
        if family not in made:
            root = tmp_path_factory.mktemp(f"pair-{family}")
            qs = synthetic_vqa(60, "train")
            texts = [q["question"] + " " + q["answer"] for q in qs.questions.to_pylist()]
            fam = FAMILIES[family]
            tok = train_tokenizer(texts, fam.special_tokens, 400, fam.image_placeholder)
            student = build_tiny_vlm(family, TinySize(64, 2, 4, 2, 32, 2, 2), tok, root / "student", seed=0)
            teacher = build_tiny_vlm(family, TinySize(96, 2, 4, 2, 32, 2, 2), tok, root / "teacher", seed=1)
            made[family] = (student, teacher)
        return made[family]

    return make


@pytest.fixture
def tampered_copy(tmp_path):
    """A writable copy of a snapshot folder with one byte of one data shard flipped.
    Returns (copy, the shard changed)."""
    import os
    import shutil

    def make(folder, offset: int = 100):
        copy = tmp_path / "tampered"
        shutil.copytree(folder, copy)
        for p in copy.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shard = next((copy / "data").glob("*.parquet"))
        data = bytearray(shard.read_bytes())
        data[offset] ^= 0xFF
        shard.write_bytes(bytes(data))
        return copy, shard

    return make


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for the session (tests/servers.py)."""
    from servers import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1 for the session (tests/servers.py)."""
    from servers import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def pg_catalog(postgres_server, tmp_path, request):
    """The config of a fresh ducklake:postgres: catalog (its own database) with a local data path."""
    from schemas.config import CatalogConfig

    import uuid

    name = "lake_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:30] + "_" + uuid.uuid4().hex[:8]
    conninfo = postgres_server.create_database(name)
    return CatalogConfig(uri=f"ducklake:postgres:{conninfo}", data_path=str(tmp_path / "pgdata") + "/",
                         snapshot_root=str(tmp_path / "snapshots"))


@pytest.fixture
def sqlite_catalog(tmp_path):
    """The config of a fresh ducklake:sqlite: catalog with a local data path."""
    from schemas.config import CatalogConfig

    return CatalogConfig(uri=f"ducklake:sqlite:{tmp_path / 'meta' / 'catalog.sqlite'}",
                         data_path=str(tmp_path / "sqdata") + "/", snapshot_root=str(tmp_path / "snapshots"))
