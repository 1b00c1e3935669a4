"""schemas/value_checks.py on Arrow data directly: the row and the list element named are the
ones at fault whatever the layout of the arrays (slices, null lists whose offsets span values),
and every message reads '<problem>: <value>; <fix>'."""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import pytest

from masters.synthetic_gendata import synthetic_gendata
from schemas.errors import SchemaMismatchError
from schemas.tables import RESPONSES
from schemas.value_checks import check_values

FORMAT = re.compile(r"^schema mismatch in table '\w+', column '\w+', row \d+: [^;]+: [^;]+; .+$")


@pytest.fixture(scope="module")
def responses() -> pa.Table:
    tables, _ = synthetic_gendata(num_questions=2, responses_per_source=3)
    return tables["responses"]


def _with_logprobs(responses: pa.Table, values: np.ndarray, offsets: list[int], nulls: list[bool]) -> pa.Table:
    column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.float32()),
                                      mask=pa.array(nulls))
    return responses.set_column(responses.schema.get_field_index("behaviour_logprobs"), RESPONSES.schema.field(
        "behaviour_logprobs"), column)


def test_a_null_list_spanning_values_hides_them_and_the_row_named_is_the_right_one(responses):
    """Row 1's list is null but its offsets span a NaN (as Arrow allows): not checked. Row 3 holds
    a NaN at its element 2: named as such, not shifted by row 1's hidden values."""
    n = responses.num_rows
    lengths = responses.column("num_tokens").to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    values = np.full(offsets[-1], -0.5, np.float32)
    values[offsets[1]:offsets[2]] = np.nan  # under the null of row 1
    nulls = [i == 1 for i in range(n)]
    check_values(RESPONSES, _with_logprobs(responses, values, offsets, nulls))  # accepted
    values[offsets[3] + 2] = np.nan
    with pytest.raises(SchemaMismatchError) as err:
        check_values(RESPONSES, _with_logprobs(responses, values, offsets, nulls), row_offset=100)
    assert (err.value.column, err.value.row) == ("behaviour_logprobs", 103)
    assert "element 2 is not a finite number: nan" in str(err.value)
    assert FORMAT.match(str(err.value)), str(err.value)


def test_a_slice_names_rows_of_the_slice(responses):
    t = responses.set_column(responses.schema.get_field_index("mask_ratio"), "mask_ratio",
                             pa.array([0.0] * 5 + [math.inf] + [0.0] * (responses.num_rows - 6)))
    with pytest.raises(SchemaMismatchError) as err:
        check_values(RESPONSES, t.slice(2))
    assert (err.value.column, err.value.row) == ("mask_ratio", 3)
    assert FORMAT.match(str(err.value)), str(err.value)


@pytest.mark.parametrize("column,value,words", [
    ("source", "oracle", "not one of teacher, student: 'oracle'; use one of"),
    ("num_tokens", 99, "num_tokens must equal len(token_ids) = "),
    ("mask_ratio", 1.0, "outside [0, 1): 1.0; a mask ratio is in [0, 1)"),
])
def test_every_message_reads_problem_value_fix(responses, column, value, words):
    rows = responses.to_pylist()
    rows[4][column] = value
    with pytest.raises(SchemaMismatchError) as err:
        check_values(RESPONSES, pa.Table.from_pylist(rows, schema=RESPONSES.schema))
    assert err.value.row == 4 and words in str(err.value), str(err.value)
    assert FORMAT.match(str(err.value)), str(err.value)
