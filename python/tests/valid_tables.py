"""A seeded generator of valid Arrow tables, as pyarrow builds and writes them.

Each case is a table of one to three columns drawn from every type pyarrow writes (every
primitive, decimals of every width, temporal types, binary and string in every layout, views,
lists of every kind, structs, maps, unions of both modes, dictionaries, run-end encoding and
every canonical extension type pyarrow ships), nested up to three deep, with no, some or only
nulls (including `pa.nulls(n, type)`, whose buffers Arrow C++ shares between children),
sliced at every level, split into batches (empty ones included), and written uncompressed or
compressed (LZ4, ZSTD) in IPC metadata V5, or uncompressed in V4. Every table passes
pyarrow's full validation, so a cache must take every one and give it back exactly.
"""

import decimal
import json
import random

import numpy as np
import pyarrow as pa

# Leaf types: (name, type).
LEAVES = [
    ("null", pa.null()),
    ("bool", pa.bool_()),
    ("int8", pa.int8()),
    ("int16", pa.int16()),
    ("int32", pa.int32()),
    ("int64", pa.int64()),
    ("uint8", pa.uint8()),
    ("uint16", pa.uint16()),
    ("uint32", pa.uint32()),
    ("uint64", pa.uint64()),
    ("float16", pa.float16()),
    ("float32", pa.float32()),
    ("float64", pa.float64()),
    ("decimal32", pa.decimal32(9, 2)),
    ("decimal64", pa.decimal64(18, 4)),
    ("decimal128", pa.decimal128(38, 10)),
    ("decimal256", pa.decimal256(76, 20)),
    ("date32", pa.date32()),
    ("date64", pa.date64()),
    ("time32s", pa.time32("s")),
    ("time32ms", pa.time32("ms")),
    ("time64us", pa.time64("us")),
    ("time64ns", pa.time64("ns")),
    ("timestamp_s", pa.timestamp("s")),
    ("timestamp_ms_utc", pa.timestamp("ms", tz="UTC")),
    ("timestamp_us_ny", pa.timestamp("us", tz="America/New_York")),
    ("timestamp_ns_offset", pa.timestamp("ns", tz="+05:30")),
    ("duration_s", pa.duration("s")),
    ("duration_ns", pa.duration("ns")),
    ("interval_mdn", pa.month_day_nano_interval()),
    ("binary", pa.binary()),
    ("large_binary", pa.large_binary()),
    ("utf8", pa.utf8()),
    ("large_utf8", pa.large_utf8()),
    ("binary_view", pa.binary_view()),
    ("string_view", pa.string_view()),
    ("fixed_binary", pa.binary(5)),
    ("uuid", pa.uuid()),
    ("json", pa.json_(pa.utf8())),
    ("json_large", pa.json_(pa.large_utf8())),
    ("json_view", pa.json_(pa.string_view())),
    ("bool8", pa.bool8()),
    ("opaque", pa.opaque(pa.binary(), "geometry", "vendor.example")),
    ("tensor", pa.fixed_shape_tensor(pa.float32(), [2, 3])),
    ("tensor_named", pa.fixed_shape_tensor(pa.int16(), [2, 2], dim_names=["h", "w"])),
    ("tensor_permuted", pa.fixed_shape_tensor(pa.float64(), [1, 2, 3], permutation=[2, 0, 1])),
    ("tensor_all", pa.fixed_shape_tensor(pa.uint8(), [3, 1], dim_names=["c", "x"], permutation=[1, 0])),
]

# Ways to wrap a type in another: the name and how many children the wrapper takes.
WRAPPERS = [
    "list", "large_list", "fixed_list", "list_view", "large_list_view", "struct", "map",
    "sparse_union", "dense_union", "dictionary", "run_end",
]

NULLS = ["none", "some", "all"]


class Case:
    """One generated table, with the choices that made it (for a failure's message)."""

    def __init__(self, number, table, batches, write_options, description):
        self.number = number
        self.table = table
        self.batches = batches
        self.write_options = write_options
        self.description = description

    def __repr__(self):
        return f"case {self.number}: {self.description}"


def random_type(rng, depth):
    """A random type: a leaf, or a wrapper over random types, at most `depth` deep."""
    if depth == 0 or rng.random() < 0.4:
        name, type_ = rng.choice(LEAVES)
        return name, type_
    wrapper = rng.choice(WRAPPERS)
    if wrapper in ("struct", "sparse_union", "dense_union"):
        children = [random_type(rng, depth - 1) for _ in range(rng.randint(1, 3))]
        fields = [pa.field(f"f{i}_{name}", t) for i, (name, t) in enumerate(children)]
        names = ",".join(name for name, _ in children)
        if wrapper == "struct":
            return f"struct<{names}>", pa.struct(fields)
        mode = "sparse" if wrapper == "sparse_union" else "dense"
        codes = rng.sample(range(128), len(fields)) if rng.random() < 0.5 else None
        return f"{mode}_union<{names}>", pa.union(fields, mode, type_codes=codes)
    if wrapper == "map":
        key_name, key_type = rng.choice(
            [(n, t) for n, t in LEAVES if n in ("int32", "utf8", "int64", "binary", "uuid")]
        )
        value_name, value_type = random_type(rng, depth - 1)
        return f"map<{key_name},{value_name}>", pa.map_(key_type, value_type)
    if wrapper == "dictionary":
        index = rng.choice([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32()])
        value_name, value_type = rng.choice(
            [(n, t) for n, t in LEAVES if n in ("utf8", "large_utf8", "binary", "int64", "float64", "decimal128", "date32", "fixed_binary", "string_view")]
        )
        return f"dictionary<{index},{value_name}>", pa.dictionary(index, value_type)
    if wrapper == "run_end":
        child_name, child_type = random_type(rng, depth - 1)
        run_ends = rng.choice([pa.int16(), pa.int32(), pa.int64()])
        return f"run_end<{run_ends},{child_name}>", pa.run_end_encoded(run_ends, child_type)
    child_name, child_type = random_type(rng, depth - 1)
    make = {
        "list": pa.list_,
        "large_list": pa.large_list,
        "fixed_list": lambda t: pa.list_(t, 2),
        "list_view": pa.list_view,
        "large_list_view": pa.large_list_view,
    }[wrapper]
    return f"{wrapper}<{child_name}>", make(child_type)


def mask(rng, n, nulls):
    """A validity mask (True = null) for `n` slots, or None."""
    if nulls == "none" or n == 0:
        return None
    if nulls == "all":
        return np.ones(n, dtype=bool)
    return np.array([rng.random() < 0.3 for _ in range(n)], dtype=bool)


def leaf_values(rng, type_, n):
    """`n` valid Python values of a leaf storage type."""
    if pa.types.is_boolean(type_):
        return [rng.random() < 0.5 for _ in range(n)]
    if pa.types.is_integer(type_):
        info = np.iinfo(type_.to_pandas_dtype())
        edges = [int(info.min), int(info.max), 0, 1]
        return [rng.choice(edges) if rng.random() < 0.2 else rng.randint(int(info.min), int(info.max)) for _ in range(n)]
    if pa.types.is_floating(type_):
        return [rng.choice([0.0, -0.0, 1.5, float("inf"), -2.25e3]) if rng.random() < 0.3 else round(rng.uniform(-1e3, 1e3), 3) for _ in range(n)]
    if pa.types.is_decimal(type_):
        digits = type_.precision
        return [
            decimal.Decimal(rng.randint(-(10**digits - 1), 10**digits - 1)).scaleb(-type_.scale)
            for _ in range(n)
        ]
    if pa.types.is_date32(type_):
        return [rng.randint(-719162, 2932896) for _ in range(n)]
    if pa.types.is_date64(type_):
        return [rng.randint(-719162, 2932896) * 86_400_000 for _ in range(n)]
    if pa.types.is_time32(type_) or pa.types.is_time64(type_):
        day = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}[type_.unit]
        return [rng.randrange(day) for _ in range(n)]
    if pa.types.is_timestamp(type_) or pa.types.is_duration(type_):
        return [rng.randint(-(2**62), 2**62) for _ in range(n)]
    if pa.types.is_interval(type_):
        return [pa.MonthDayNano([rng.randint(-(2**31), 2**31 - 1), rng.randint(-(2**31), 2**31 - 1), rng.randint(-(2**63), 2**63 - 1)]) for _ in range(n)]
    if pa.types.is_fixed_size_binary(type_):
        return [bytes(rng.randrange(256) for _ in range(type_.byte_width)) for _ in range(n)]
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or pa.types.is_binary_view(type_):
        return [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 12, 13, 40]))) for _ in range(n)]
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        words = ["", "a", "données ✓", "a string longer than twelve bytes", "x" * 13, "日本"]
        return [rng.choice(words) + str(rng.randrange(1000)) * rng.randint(0, 1) for _ in range(n)]
    raise AssertionError(f"no values for {type_}")


def make_array(rng, type_, n, nulls, depth=0):
    """A valid array of `type_` and length `n` whose nulls follow `nulls` where the type has a
    validity bitmap; often built longer and sliced, so offsets are not zero at any level."""
    if nulls == "all" and rng.random() < 0.5:
        # Arrow C++'s own all-null layout, one zeroed buffer shared by every child. For some
        # nestings (a run-end encoded child) pyarrow builds one its own validation refuses:
        # those are not valid tables, so they are built value by value instead.
        try:
            array = pa.nulls(n, type_)
            array.validate(full=True)
            return array
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    extra_front = rng.choice([0, 0, 1, 3])
    extra_back = rng.choice([0, 0, 2])
    total = n + extra_front + extra_back
    array = _make_whole(rng, type_, total, nulls, depth)
    return array.slice(extra_front, n)


def _make_whole(rng, type_, n, nulls, depth):
    child_nulls = rng.choice(NULLS)
    if isinstance(type_, pa.ExtensionType) or isinstance(type_, pa.BaseExtensionType):
        storage = _extension_storage(rng, type_, n, nulls)
        return pa.ExtensionArray.from_storage(type_, storage)
    if pa.types.is_null(type_):
        return pa.nulls(n)
    if pa.types.is_struct(type_):
        children = [make_array(rng, f.type, n, child_nulls, depth + 1) for f in type_]
        return pa.StructArray.from_arrays(children, fields=list(type_), mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    if pa.types.is_union(type_):
        return _union(rng, type_, n, child_nulls, depth)
    if pa.types.is_dictionary(type_):
        size = rng.randint(1, 6)
        dictionary = pa.array(leaf_values(rng, type_.value_type, size), type_.value_type)
        if rng.random() < 0.3:
            dictionary = pa.array(leaf_values(rng, type_.value_type, size), type_.value_type, mask=mask(rng, size, "some"))
        # Only some of the dictionary's values are used: unused values are valid.
        used = rng.randint(1, size)
        indices = pa.array([rng.randrange(used) for _ in range(n)], type_.index_type, mask=mask(rng, n, nulls))
        return pa.DictionaryArray.from_arrays(indices, dictionary)
    if pa.types.is_run_end_encoded(type_):
        runs = []
        left = n
        while left > 0:
            run = rng.randint(1, max(1, min(left, 4)))
            runs.append(run)
            left -= run
        run_ends = np.cumsum(runs).tolist() if runs else []
        values = make_array(rng, type_.value_type, len(runs), nulls, depth + 1)
        return pa.RunEndEncodedArray.from_arrays(pa.array(run_ends, type_.run_end_type), values)
    if pa.types.is_map(type_):
        sizes = [rng.randint(0, 3) for _ in range(n)]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        count = int(offsets[-1])
        keys = pa.array(leaf_values(rng, type_.key_type.storage_type if isinstance(type_.key_type, pa.BaseExtensionType) else type_.key_type, count), type_.key_type.storage_type if isinstance(type_.key_type, pa.BaseExtensionType) else type_.key_type)
        if isinstance(type_.key_type, pa.BaseExtensionType):
            keys = pa.ExtensionArray.from_storage(type_.key_type, keys)
        items = make_array(rng, type_.item_type, count, child_nulls, depth + 1)
        return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items, mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    if pa.types.is_fixed_size_list(type_):
        values = make_array(rng, type_.value_type, n * type_.list_size, child_nulls, depth + 1)
        return pa.FixedSizeListArray.from_arrays(values, type=type_, mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    if pa.types.is_list_view(type_) or pa.types.is_large_list_view(type_):
        # Views may overlap, share values and come in any order.
        pool = rng.randint(0, 6)
        values = make_array(rng, type_.value_type, pool, child_nulls, depth + 1)
        offsets, sizes = [], []
        for _ in range(n):
            start = rng.randint(0, pool)
            offsets.append(start)
            sizes.append(rng.randint(0, pool - start))
        cls = pa.ListViewArray if pa.types.is_list_view(type_) else pa.LargeListViewArray
        index = pa.int32() if pa.types.is_list_view(type_) else pa.int64()
        return cls.from_arrays(pa.array(offsets, index), pa.array(sizes, index), values, type=type_, mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        sizes = [rng.randint(0, 3) for _ in range(n)]
        start = rng.choice([0, 0, 2])
        offsets = np.concatenate([[start], start + np.cumsum(sizes)])
        values = make_array(rng, type_.value_type, int(offsets[-1]) + rng.choice([0, 1]), child_nulls, depth + 1)
        cls = pa.ListArray if pa.types.is_list(type_) else pa.LargeListArray
        index = pa.int32() if pa.types.is_list(type_) else pa.int64()
        return cls.from_arrays(pa.array(offsets, index), values, type=type_, mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    values = leaf_values(rng, type_, n)
    array = pa.array(values, type_, mask=mask(rng, n, nulls))
    if (pa.types.is_binary_view(type_) or pa.types.is_string_view(type_)) and n and rng.random() < 0.5:
        # Views that share bytes and point at them out of order, over several buffers.
        array = _shuffled_views(rng, type_, values, mask(rng, n, nulls))
    return array


def _shuffled_views(rng, type_, values, null_mask):
    """A view array over two data buffers whose views share bytes and point at them out of
    order, as `take` and `concat` leave them."""
    values = [v.encode() if isinstance(v, str) else v for v in values]
    long_values = [v for v in values if len(v) > 12]
    buffers = [b"".join(reversed(long_values)), b"padding " + b"".join(long_values)]
    views = bytearray()
    for v in values:
        if len(v) <= 12:
            views += len(v).to_bytes(4, "little") + v.ljust(12, b"\0")
            continue
        which = rng.randrange(2)
        at = buffers[which].find(v) if which == 0 else buffers[1].rfind(v)
        views += len(v).to_bytes(4, "little") + v[:4] + which.to_bytes(4, "little") + at.to_bytes(4, "little")
    validity = None
    if null_mask is not None:
        validity = pa.py_buffer(np.packbits(~null_mask, bitorder="little").tobytes())
    null_count = int(null_mask.sum()) if null_mask is not None else 0
    return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(bytes(views))] + [pa.py_buffer(b) for b in buffers], null_count)


def _extension_storage(rng, type_, n, nulls):
    storage_type = type_.storage_type
    if isinstance(type_, pa.FixedShapeTensorType):
        values = make_array(rng, storage_type.value_type, n * storage_type.list_size, "none")
        return pa.FixedSizeListArray.from_arrays(values, type=storage_type, mask=pa.array(mask(rng, n, nulls)) if nulls != "none" and n else None)
    if str(type_).startswith("extension<arrow.json"):
        values = [json.dumps({"k": rng.randrange(100)}) for _ in range(n)]
        return pa.array(values, storage_type, mask=mask(rng, n, nulls))
    if pa.types.is_int8(storage_type):  # bool8
        return pa.array([rng.choice([0, 1, -3]) for _ in range(n)], storage_type, mask=mask(rng, n, nulls))
    return pa.array(leaf_values(rng, storage_type, n), storage_type, mask=mask(rng, n, nulls))


def _union(rng, type_, n, child_nulls, depth):
    codes = list(type_.type_codes)
    chosen = [rng.randrange(len(codes)) for _ in range(n)]
    type_ids = pa.array([codes[c] for c in chosen], pa.int8())
    if type_.mode == "sparse":
        children = [make_array(rng, f.type, n, child_nulls, depth + 1) for f in type_]
        return pa.UnionArray.from_sparse(type_ids, children, [f.name for f in type_], codes)
    # Dense: each child holds at least what its rows use, sometimes more (children longer than
    # their union needs are valid).
    counts = [chosen.count(i) for i in range(len(codes))]
    children = [make_array(rng, f.type, counts[i] + rng.choice([0, 0, 2]), child_nulls, depth + 1) for i, f in enumerate(type_)]
    seen = [0] * len(codes)
    offsets = []
    for c in chosen:
        offsets.append(seen[c])
        seen[c] += 1
    return pa.UnionArray.from_dense(type_ids, pa.array(offsets, pa.int32()), children, [f.name for f in type_], codes)


def pyarrow_round_trip(case):
    """The table as pyarrow itself reads back the IPC stream it writes for the case's batches."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, case.table.schema, options=case.write_options) as writer:
        for batch in case.batches:
            writer.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def generate(number, seed):
    """Case `number` of the set seeded `seed`: a valid table and the batches to upload it in."""
    rng = random.Random(f"{seed}:{number}")
    columns = []
    names = []
    rows = rng.choice([0, 1, 2, 3, 7, 16, 33])
    for i in range(rng.randint(1, 3)):
        name, type_ = random_type(rng, rng.choice([0, 1, 1, 2, 3]))
        nulls = rng.choice(NULLS)
        columns.append(make_array(rng, type_, rows, nulls))
        names.append(f"c{i}_{name}_{nulls}")
    metadata = {"case": str(number)} if rng.random() < 0.5 else None
    table = pa.table(columns, names=[n[:60] for n in names], metadata=metadata)
    if rows and rng.random() < 0.3:
        start = rng.randrange(rows)
        table = table.slice(start, rng.randint(0, rows - start))
    chunk = rng.choice([1, 2, 5, 1000])
    batches = table.to_batches(max_chunksize=chunk)
    if rng.random() < 0.3:
        empty = pa.RecordBatch.from_arrays([c.slice(0, 0) for c in columns], schema=table.schema)
        batches.insert(rng.randint(0, len(batches)), empty)
    table.validate(full=True)
    version = rng.choice([pa.ipc.MetadataVersion.V5, pa.ipc.MetadataVersion.V5, pa.ipc.MetadataVersion.V4])
    # Compression came with metadata V5; pyarrow 26 writes compressed V4 too, but reads it back
    # changed (values in place of nulls) or invalid (short view buffers), no server involved.
    compression = rng.choice([None, None, "lz4", "zstd"]) if version == pa.ipc.MetadataVersion.V5 else None
    write_options = pa.ipc.IpcWriteOptions(compression=compression, metadata_version=version)
    return Case(
        number, table, batches, write_options,
        f"{table.num_rows} rows in {len(batches)} batches, {compression or 'uncompressed'}, {version}, columns {names}",
    )
