"""Every read API and SQL accept a version."""

import pytest

from schemas.errors import UnknownVersionError


@pytest.fixture
def two_versions(catalog_dir, gendata):
    from catalog import Catalog

    tables, _ = gendata
    q = tables["questions"]
    cat = Catalog.open(catalog_dir)
    v1 = cat.append("questions", q.slice(0, 2), "two").version
    v2 = cat.append("questions", q.slice(2), "rest").version
    yield cat, v1, v2, q
    cat.close()


def test_read_count_and_sql_at_each_version(two_versions):
    cat, v1, v2, q = two_versions
    assert v2 == v1 + 1
    assert cat.count("questions", version=v1) == 2
    assert cat.count("questions", version=v2) == q.num_rows
    assert cat.count("questions", version=v1 - 1) == 0
    assert sorted(cat.read("questions", version=v1).column("question_id").to_pylist()) == \
        sorted(q.slice(0, 2).column("question_id").to_pylist())
    assert cat.sql("SELECT count(*) FROM questions", version=v1).column(0)[0].as_py() == 2
    assert cat.sql("SELECT count(*) FROM questions").column(0)[0].as_py() == q.num_rows
    # joins see one consistent version
    n = cat.sql("SELECT count(*) FROM questions a JOIN questions b USING (question_id)", version=v1)
    assert n.column(0)[0].as_py() == 2
    # and the unversioned path is back afterwards
    assert cat.sql("SELECT count(*) FROM questions").column(0)[0].as_py() == q.num_rows


def test_existing_ids_at_a_version(two_versions):
    cat, v1, _, q = two_versions
    present = cat.existing_ids("questions", q.column("question_id").combine_chunks(), version=v1)
    assert sorted(present.to_pylist()) == sorted(q.slice(0, 2).column("question_id").to_pylist())


def test_unknown_version_lists_what_exists(two_versions):
    cat, _, v2, _ = two_versions
    for bad in (v2 + 5, -1):
        with pytest.raises(UnknownVersionError, match=rf"versions 0\.\.{v2} exist"):
            cat.count("questions", version=bad)
        with pytest.raises(UnknownVersionError):
            cat.sql("SELECT 1", version=bad)


def test_versions_before_a_table_existed_read_as_empty(two_versions):
    cat, v1, _, q = two_versions
    assert cat.count("questions", version=0) == 0
    assert cat.read("questions", version=0).num_rows == 0
    assert cat.read("questions", version=0).schema.names == cat.read("questions").schema.names
    assert len(cat.existing_ids("questions", q.column("question_id").combine_chunks(), version=0)) == 0
    assert cat.sql("SELECT count(*) FROM questions", version=0).column(0)[0].as_py() == 0


def test_qualified_names_cannot_escape_the_version(two_versions):
    from schemas.errors import MastersError

    cat, v1, _, _ = two_versions
    with pytest.raises(MastersError, match="refer to tables unqualified.*write questions"):
        cat.sql("SELECT count(*) FROM lake.questions", version=v1)


def test_booleans_are_not_versions(two_versions):
    cat, _, _, _ = two_versions
    with pytest.raises(UnknownVersionError):
        cat.count("questions", version=True)
