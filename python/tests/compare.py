"""Table comparison for the interop tests: schema with metadata, and values bit for bit."""

import pyarrow as pa


def _comparable(column):
    """Floats as their bit patterns, so NaN equals NaN and -0.0 differs from 0.0."""
    if not pa.types.is_floating(column.type):
        return column
    bits = {16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[column.type.bit_width]
    return column.combine_chunks().view(bits)


def assert_same_table(got, want):
    assert got.schema.equals(want.schema, check_metadata=True), f"{got.schema}\n!=\n{want.schema}"
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        assert _comparable(got.column(name)).equals(_comparable(want.column(name))), f"column {name} differs"
