"""The accepting direction: every valid table pyarrow writes is stored and comes back exact.

`FLIGHTCACHE_VALID_CASES` sets how many generated tables the test uploads (the test command's
default is a bounded part; the full set is run by hand with a larger number) and
`FLIGHTCACHE_VALID_SEED` the seed.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_helpers import get, put
from valid_tables import generate, pyarrow_round_trip

CASES = int(os.environ.get("FLIGHTCACHE_VALID_CASES", "1500"))
SEED = int(os.environ.get("FLIGHTCACHE_VALID_SEED", "20261207"))


def assert_exact(got, want, what):
    assert got.schema.equals(want.schema, check_metadata=True), f"{what}: schema\n{got.schema}\n!=\n{want.schema}"
    got.validate(full=True)
    assert got.equals(want), f"{what}: values differ"


def test_issue_18_an_all_null_dense_union_is_stored_and_comes_back_exact(client):
    union = pa.UnionArray.from_dense(
        pa.array([0, 1], pa.int8()),
        pa.array([0, 0], pa.int32()),
        [pa.array([7], pa.int64()), pa.array(["x"])],
        field_names=["i", "s"],
    )
    table = pa.table({"v": pa.nulls(3, union.type)})
    put(client, b"a", table)
    assert_exact(get(client, b"a"), table, "all-null dense union")


def test_issue_18_a_fixed_shape_tensor_is_stored_and_comes_back_exact(client):
    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(np.arange(24, dtype=np.float32).reshape(3, 2, 4))
    table = pa.table({"v": tensors})
    put(client, b"b", table)
    got = get(client, b"b")
    assert_exact(got, table, "fixed_shape_tensor")
    assert got.column("v").type.shape == [2, 4]
    np.testing.assert_array_equal(got.column("v").combine_chunks().to_numpy_ndarray(), tensors.to_numpy_ndarray())


def test_fixed_shape_tensors_with_names_and_permutations_keep_their_metadata(client):
    for i, tensor_type in enumerate([
        pa.fixed_shape_tensor(pa.int8(), [2, 2], dim_names=["h", "w"]),
        pa.fixed_shape_tensor(pa.float64(), [1, 2, 3], permutation=[2, 0, 1]),
        pa.fixed_shape_tensor(pa.uint16(), [3, 1], dim_names=["c", "x"], permutation=[1, 0]),
    ]):
        size = int(np.prod(tensor_type.shape))
        storage = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(2 * size), tensor_type.value_type), size)
        table = pa.table({"t": pa.ExtensionArray.from_storage(tensor_type, storage)})
        key = f"tensor-{i}".encode()
        put(client, key, table)
        got = get(client, key)
        assert_exact(got, table, str(tensor_type))
        assert got.column("t").type.permutation == tensor_type.permutation
        assert got.column("t").type.dim_names == tensor_type.dim_names


def test_extension_metadata_pyarrow_refuses_to_read_is_refused(client):
    """The other side of the rule: a canonical extension type Arrow C++ would not read back is
    never stored (here a tensor whose shape does not fill its lists)."""
    storage = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(16), pa.float32()), 8)
    field = pa.field("t", storage.type, metadata={
        "ARROW:extension:name": "arrow.fixed_shape_tensor",
        "ARROW:extension:metadata": '{"shape":[2,3]}',
    })
    table = pa.Table.from_arrays([storage], schema=pa.schema([field]))
    with pytest.raises(pa.ArrowInvalid) as refused:
        put(client, b"bad-tensor", table)
    message = str(refused.value)
    assert "nothing was stored" in message and "arrow.fixed_shape_tensor" in message, message
    assert "the product of its shape (6) is not its list size (8)" in message, message
    with pytest.raises(pa.ArrowKeyError):
        get(client, b"bad-tensor")


def test_every_generated_valid_table_is_stored_and_comes_back_exact(client):
    refused, differed = [], []
    for number in range(CASES):
        case = generate(number, SEED)
        key = f"valid-{number}".encode()
        options = flight.FlightCallOptions(write_options=case.write_options)
        writer, _ = client.do_put(flight.FlightDescriptor.for_command(key), case.table.schema, options=options)
        try:
            for batch in case.batches:
                writer.write_batch(batch)
            writer.close()
        except pa.ArrowException as err:
            refused.append(f"{case}: {str(err)[:400]}")
            continue
        got = get(client, key)
        try:
            # Exactly what was written, and what pyarrow itself reads back from its own stream.
            assert_exact(got, case.table, repr(case))
            assert_exact(got, pyarrow_round_trip(case), repr(case))
        except (AssertionError, pa.ArrowInvalid) as err:
            differed.append(str(err)[:400])
        list(client.do_action(flight.Action("drop", key)))
    print(f"{CASES} valid tables (seed {SEED}): {len(refused)} refused, {len(differed)} changed")
    assert not refused, f"{len(refused)} of {CASES} valid tables refused:\n" + "\n".join(refused[:10])
    assert not differed, f"{len(differed)} of {CASES} tables changed:\n" + "\n".join(differed[:10])
