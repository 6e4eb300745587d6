"""A pyarrow table with a column of every type flightcache promises to round-trip."""

import datetime
import decimal
import json

import numpy as np
import pyarrow as pa


class LabelType(pa.ExtensionType):
    """A custom extension type over utf8, with parameters serialized as JSON."""

    def __init__(self, lang="fr"):
        self.lang = lang
        super().__init__(pa.utf8(), "example.label")

    def __arrow_ext_serialize__(self):
        return json.dumps({"lang": self.lang}).encode()

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls(json.loads(serialized)["lang"])


pa.register_extension_type(LabelType())


def every_type_table():
    n = 4
    ts = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901)
    dense_union = pa.UnionArray.from_dense(
        pa.array([0, 1, 1, 0], type=pa.int8()),
        pa.array([0, 0, 1, 1], type=pa.int32()),
        [pa.array([1, None]), pa.array(["s", "t"])],
        ["int", "str"],
    )
    sparse_union = pa.UnionArray.from_sparse(
        pa.array([0, 1, 0, 1], type=pa.int8()),
        [pa.array([1, None, None, 9]), pa.array([None, "s", None, None])],
        ["int", "str"],
    )
    dict_values = pa.array(["x", None])
    columns = {
        "null": pa.nulls(n),
        "bool": pa.array([True, None, False, True]),
        "i8": pa.array([-128, None, 0, 127], pa.int8()),
        "i16": pa.array([-32768, None, 0, 32767], pa.int16()),
        "i32": pa.array([-(2**31), None, 0, 2**31 - 1], pa.int32()),
        "i64": pa.array([-(2**63), None, 0, 2**63 - 1], pa.int64()),
        "u8": pa.array([0, None, 1, 255], pa.uint8()),
        "u16": pa.array([0, None, 1, 65535], pa.uint16()),
        "u32": pa.array([0, None, 1, 2**32 - 1], pa.uint32()),
        "u64": pa.array([0, None, 1, 2**64 - 1], pa.uint64()),
        "f16": pa.array(np.array([1.5, 0, -np.inf, 65504], dtype=np.float16), mask=np.array([False, True, False, False])),
        "f32": pa.array([1.5, None, float("nan"), -0.0], pa.float32()),
        "f64": pa.array([1e300, None, float("inf"), 5e-324], pa.float64()),
        "decimal32": pa.array([decimal.Decimal("123.45"), None, decimal.Decimal("-0.01"), decimal.Decimal("9999999.99")], pa.decimal32(9, 2)),
        "decimal64": pa.array([decimal.Decimal("12345.6789"), None, decimal.Decimal("-1"), decimal.Decimal("0")], pa.decimal64(18, 4)),
        "decimal128": pa.array([decimal.Decimal("1234567890.0123456789"), None, decimal.Decimal("-5"), decimal.Decimal("0")], pa.decimal128(38, 10)),
        "decimal256": pa.array([decimal.Decimal("1" * 50 + "." + "2" * 20), None, decimal.Decimal("-1"), decimal.Decimal("0")], pa.decimal256(76, 20)),
        "date32": pa.array([datetime.date(1970, 1, 1), None, datetime.date(2024, 2, 29), datetime.date(1, 1, 1)], pa.date32()),
        "date64": pa.array([datetime.date(1970, 1, 1), None, datetime.date(2024, 2, 29), datetime.date(1969, 12, 31)], pa.date64()),
        "time32s": pa.array([0, None, 3600, 86399], pa.time32("s")),
        "time32ms": pa.array([0, None, 1, 86399999], pa.time32("ms")),
        "time64us": pa.array([0, None, 1, 86399999999], pa.time64("us")),
        "time64ns": pa.array([0, None, 1, 86399999999999], pa.time64("ns")),
        "ts_s_utc": pa.array([ts, None, ts, ts], pa.timestamp("s", tz="UTC")),
        "ts_ms_ny": pa.array([ts, None, ts, ts], pa.timestamp("ms", tz="America/New_York")),
        "ts_us_naive": pa.array([ts, None, ts, ts], pa.timestamp("us")),
        "ts_ns_offset": pa.array([0, None, 1, -1], pa.timestamp("ns", tz="+05:30")),
        "dur_s": pa.array([0, None, -1, 2**62], pa.duration("s")),
        "dur_ms": pa.array([0, None, -1, 1], pa.duration("ms")),
        "dur_us": pa.array([0, None, -1, 1], pa.duration("us")),
        "dur_ns": pa.array([0, None, -1, 1], pa.duration("ns")),
        "interval_mdn": pa.array([pa.MonthDayNano([1, 2, 3]), None, pa.MonthDayNano([-1, 0, 2**62]), pa.MonthDayNano([0, 0, 0])], pa.month_day_nano_interval()),
        "binary": pa.array([b"a", None, b"", b"\x00\xff"], pa.binary()),
        "large_binary": pa.array([b"a", None, b"", b"xyz"], pa.large_binary()),
        "utf8": pa.array(["a", None, "", "données ✓"], pa.utf8()),
        "large_utf8": pa.array(["a", None, "", "z"], pa.large_utf8()),
        "binary_view": pa.array([b"short", None, b"a value longer than twelve bytes", b""], pa.binary_view()),
        "utf8_view": pa.array(["short", None, "a string longer than twelve bytes", ""], pa.string_view()),
        "fixed_binary": pa.array([b"\x01\x02\x03", None, b"\x00\x00\x00", b"\xff\xfe\xfd"], pa.binary(3)),
        "list": pa.array([[1, None], None, [], [4]], pa.list_(pa.int32())),
        "large_list": pa.array([[1], None, [2, 3, None], []], pa.large_list(pa.int64())),
        "fixed_list": pa.array([[1.0, 2.0], None, [None, 3.0], [0.0, 0.0]], pa.list_(pa.float32(), 2)),
        "list_view": pa.ListViewArray.from_arrays([0, 2, 0, 3], [2, 0, 0, 2], pa.array([1, 2, None, 4, 5], pa.int32()), mask=pa.array([False, True, False, False])),
        "large_list_view": pa.LargeListViewArray.from_arrays([1, 0, 0, 0], [2, 0, 1, 3], pa.array(["x", "y", None])),
        "struct": pa.array([{"a": 1, "b": "w"}, None, {"a": None, "b": "y"}, {"a": 4, "b": None}], pa.struct([("a", pa.int32()), ("b", pa.utf8())])),
        "map": pa.array([[("one", 1), ("none", None)], None, [], [("k", -7)]], pa.map_(pa.utf8(), pa.int32())),
        "sparse_union": sparse_union,
        "dense_union": dense_union,
        "dict_utf8": pa.array(["red", None, "blue", "red"]).dictionary_encode(),
        "dict_null_values": pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 0], pa.int8()), dict_values),
        "list_of_dict": pa.ListArray.from_arrays([0, 2, 2, 3, 4], pa.array(["p", "q", None, "p"]).dictionary_encode(), mask=pa.array([False, True, False, False])),
        "struct_of_dict": pa.StructArray.from_arrays([pa.array(["p", "q", None, "p"]).dictionary_encode(), pa.array([1, None, 3, 4], pa.uint16())], ["tag", "n"]),
        "run_end": pa.RunEndEncodedArray.from_arrays(pa.array([2, 3, 4], pa.int32()), pa.array(["run", None, "end"])),
        "nested": pa.array([[{"tags": [1], "score": 0.5}], None, [{"tags": None, "score": None}, None], []],
                           pa.list_(pa.struct([("tags", pa.list_(pa.int32())), ("score", pa.float64())]))),
        "uuid": pa.array([b"\x07" * 16, None, b"\x00" * 16, b"\xff" * 16], pa.uuid()),
        "label": pa.ExtensionArray.from_storage(LabelType("fr"), pa.array(["un", None, "deux", ""])),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({"origin": "flightcache type matrix", "empty": ""})
