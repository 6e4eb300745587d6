"""Flight SQL on the Flight port, through the real ADBC Flight SQL driver (Apache Arrow ADBC's Go
driver, through `adbc_driver_flightsql.dbapi`): every key is a table in catalog `flightcache`,
schema `public`. Queries, parameters, errors, metadata (`adbc_get_objects`,
`adbc_get_table_schema`, `adbc_get_info`), users and TLS, against a real `flightcache serve`.
Tables go in with plain pyarrow.flight `do_put`, as in the other tests.

The driver's DBAPI prepares every statement (the `CreatePreparedStatement` action), binds
parameters with a `DoPut` of one row under `CommandPreparedStatementQuery` and runs the query
with `GetFlightInfo` and `DoGet`."""

import json
import subprocess
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as dbapi
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from conftest import _binary
from flight_helpers import LZ4, action, put, zeros
from test_security import Authority, hash_password, log_in, new_token
from test_security import pki  # noqa: F401 (a fixture: a CA and a server certificate)

ROOT_CERTS = adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value
AUTHORIZATION = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
CLIENT_CERT = adbc_driver_flightsql.DatabaseOptions.MTLS_CERT_CHAIN.value
CLIENT_KEY = adbc_driver_flightsql.DatabaseOptions.MTLS_PRIVATE_KEY.value


def make_table(rows=5000, batch_rows=1000):
    """int64 `a` (distinct, so ORDER BY a is one order; some nulls), utf8 `b` and float64 `c`
    with nulls, in batches of `batch_rows`."""
    rng = np.random.default_rng(7)
    a = rng.permutation(rows).astype(np.int64) - 1000
    table = pa.table(
        {
            "a": pa.array(a, pa.int64(), mask=np.arange(rows) % 97 == 0),
            "b": pa.array([f"s{i % 50}" if i % 7 else None for i in range(rows)], pa.utf8()),
            "c": pa.array(rng.normal(size=rows), pa.float64(), mask=np.arange(rows) % 11 == 0),
        }
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=batch_rows))


TABLE = make_table()
SMALL = make_table(rows=30, batch_rows=10)


def connect(url, db_kwargs=None):
    """An ADBC DBAPI connection. Autocommit: flightcache has no transactions (the driver only
    warns when asked to turn autocommit off)."""
    return dbapi.connect(url, db_kwargs=db_kwargs, autocommit=True)


def query(conn, sql, parameters=None):
    """The whole result of `sql`, run on a new cursor."""
    with conn.cursor() as cursor:
        cursor.execute(sql, parameters)
        return cursor.fetch_arrow_table()


def table_names(conn, **filters):
    """The tables adbc_get_objects lists in flightcache.public."""
    [catalog] = conn.adbc_get_objects(**filters).read_all().to_pylist()
    assert catalog["catalog_name"] == "flightcache"
    [schema] = catalog["catalog_db_schemas"]
    assert schema["db_schema_name"] == "public"
    return [table["table_name"] for table in schema["db_schema_tables"]]


def assert_not_found(failure, name):
    """A table the caller cannot query: a ProgrammingError that says "not found" and names it."""
    message = str(failure.value)
    assert isinstance(failure.value, dbapi.ProgrammingError), repr(failure.value)
    assert "not found" in message.lower() and name in message, message


@pytest.fixture
def sql(server):
    conn = connect(server.url)
    yield conn
    conn.close()


# --- ingest -----------------------------------------------------------------------------------


def test_adbc_ingest_creates_a_key_that_plain_flight_reads_back(client, sql):
    with sql.cursor() as cursor:
        assert cursor.adbc_ingest("in/gested", TABLE, mode="create") == TABLE.num_rows
    got = client.do_get(flight.Ticket(b"in/gested")).read_all()
    assert got.equals(TABLE)
    assert query(sql, 'SELECT count(*) AS n FROM "in/gested"')["n"].to_pylist() == [TABLE.num_rows]


def test_adbc_ingest_replaces_only_in_replace_mode_and_appends_in_append_modes(client, sql):
    with sql.cursor() as cursor:
        cursor.adbc_ingest("k", TABLE, mode="create")
        with pytest.raises(dbapi.Error) as exists:
            cursor.adbc_ingest("k", SMALL, mode="create")
        assert exists.value.status_code == AdbcStatusCode.ALREADY_EXISTS, exists.value
        assert cursor.adbc_ingest("k", SMALL, mode="replace") == SMALL.num_rows
        assert cursor.adbc_ingest("k", SMALL, mode="append") == SMALL.num_rows
        assert cursor.adbc_ingest("new", SMALL, mode="create_append") == SMALL.num_rows
        with pytest.raises(dbapi.Error) as missing:
            cursor.adbc_ingest("absent", SMALL, mode="append")
        assert missing.value.status_code == AdbcStatusCode.NOT_FOUND, missing.value
    assert client.do_get(flight.Ticket(b"k")).read_all().equals(pa.concat_tables([SMALL, SMALL]))
    assert client.do_get(flight.Ticket(b"new")).read_all().equals(SMALL)
    # A growing key is one table to SQL.
    assert query(sql, "SELECT count(*) AS n FROM k")["n"].to_pylist() == [2 * SMALL.num_rows]


# --- cancellation -----------------------------------------------------------------------------


def test_a_cancelled_query_ends_and_frees_its_place(start_server):
    """ADBC's cancel ends the query's stream; the server frees its place (--max-queries 1)
    for the next query."""
    server = start_server("--max-queries", "1")
    client = flight.connect(server.url)
    big = pa.table({"v": np.arange(8 << 20, dtype=np.float64)})  # 64 MiB
    put(client, "big", big)
    with connect(server.url) as conn:
        cursor = conn.cursor()
        cursor.execute('SELECT * FROM "big"')
        reader = cursor.fetch_record_batch()
        reader.read_next_batch()
        cursor.adbc_cancel()
        with pytest.raises(Exception):
            reader.read_all()
        cursor.close()
        for _ in range(100):  # until the server has seen the stream reset
            try:
                assert query(conn, 'SELECT count(*) AS n FROM "big"')["n"].to_pylist() == [8 << 20]
                break
            except dbapi.Error as refused:
                assert "--max-queries" in str(refused), refused
                time.sleep(0.02)
        else:
            pytest.fail("the cancelled query kept its place")


@pytest.mark.parametrize("eviction", ["noeviction", "lru"])
def test_a_scan_of_a_compressed_table_charges_it_decompressed_to_the_budget(start_server, eviction):
    """pyarrow's LZ4 batches are stored compressed; a query decompresses each one it scans,
    within the memory budget: a batch that cannot fit is RESOURCE_EXHAUSTED (nothing may be
    evicted) or evicts another key (never the one scanned), and is never decompressed beyond
    the budget; smaller batches are queried either way."""
    server = start_server("--max-memory", "96MiB", "--eviction", eviction)
    client = flight.connect(server.url)
    # 64 MiB of zeros in one batch, under 1 MiB compressed; and the same rows in 1 MiB batches.
    count = 8 << 20
    put(client, "zeros", zeros(count), LZ4)
    put(client, "chunked", pa.Table.from_batches(zeros(count).to_batches(max_chunksize=1 << 17)), LZ4)
    # 48 MiB of the budget held by another table.
    put(client, "filler", pa.table({"f": np.arange(6 << 20, dtype=np.int64)}))
    with connect(server.url) as conn:
        assert query(conn, 'SELECT sum(z) AS s, count(*) AS n FROM "chunked"').to_pylist() == [
            {"s": 0, "n": count}
        ]
        first = 'SELECT z FROM "zeros" LIMIT 3'
        if eviction == "noeviction":
            with pytest.raises(dbapi.Error, match="(?i)resource.?exhausted|memory budget") as refused:
                query(conn, first)
            assert "--max-memory" in str(refused.value), refused.value
        else:
            assert query(conn, first).to_pylist() == [{"z": 0}] * 3
            # The whole batch through an aggregate, whose repartition holds slices of it: each
            # is its own size to DataFusion, not the whole decompressed batch's.
            total = 'SELECT sum(z) AS s, count(*) AS n FROM "zeros"'
            assert query(conn, total).to_pylist() == [{"s": 0, "n": count}]
    stats = json.loads(action(client, "stats"))
    if eviction == "noeviction":
        assert (stats["evictions"], stats["tables"]) == (0, 3), stats
    else:
        # Keys other than the one scanned made room: the least recently used first.
        assert stats["evictions"] >= 1, stats
        assert client.do_get(flight.Ticket("zeros")).read_all().num_rows == count
    client.close()


def test_a_scan_decompresses_and_charges_only_the_columns_it_reads(start_server):
    """Of a compressed batch, a query decompresses the columns it reads and no others, and is
    charged only for those: a narrow column of a wide compressed table is queried where the
    whole batch would not fit in what the budget has free."""
    server = start_server("--max-memory", "96MiB", "--eviction", "noeviction")
    client = flight.connect(server.url)
    count = 8 << 20
    # One batch: 64 MiB of `z` and 8 MiB of `n` once decompressed, under 1 MiB as stored.
    wide = zeros(count).append_column("n", pa.repeat(pa.scalar(1, pa.int8()), count))
    put(client, "wide", wide, LZ4)
    # 48 MiB of the budget held by another table: `z` cannot be decompressed beside it.
    put(client, "filler", pa.table({"f": np.arange(6 << 20, dtype=np.int64)}))
    with connect(server.url) as conn:
        assert query(conn, 'SELECT n FROM "wide" LIMIT 3').to_pylist() == [{"n": 1}] * 3
        with pytest.raises(dbapi.Error, match="(?i)resource.?exhausted|memory budget") as refused:
            query(conn, 'SELECT z FROM "wide" LIMIT 3')
        assert "--max-memory" in str(refused.value), refused.value
    stats = json.loads(action(client, "stats"))
    assert (stats["evictions"], stats["tables"]) == (0, 2), stats
    client.close()


def _list_column(rows):
    """Lists of 8 int64 a row, and how a query sums their sizes."""
    values = pa.array(np.arange(rows * 8, dtype=np.int64))
    offsets = pa.array(np.arange(0, rows * 8 + 1, 8, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values), "array_length(v)", 8


def _string_view_column(rows):
    """Strings of 60 characters a row (longer than a view holds inline), as string_view."""
    strings = pa.array([f"{i:060d}" for i in range(rows)], pa.string_view())
    return strings, "length(v)", 60


def _dictionary_column(rows):
    """Strings of 60 characters a row, each its own value of a dictionary of `rows` values."""
    strings = pa.array([f"{i:060d}" for i in range(rows)]).dictionary_encode()
    return strings, "length(v)", 60


@pytest.mark.parametrize(
    ("column", "batch_rows"),
    [
        (_list_column, None),
        (_string_view_column, None),
        (_dictionary_column, None),
        # One dictionary, written once, for 64 batches: DataFusion counts all of it with each.
        (_dictionary_column, 1 << 14),
    ],
    ids=["list", "string_view", "dictionary", "dictionary_of_64_batches"],
)
def test_an_aggregate_over_a_giant_batch_or_dictionary_fits_what_the_budget_has_free(
    start_server, column, batch_rows
):
    """A batch with a nested, view or dictionary column is stored as it came, however large
    (pyarrow sends a table chunk as one message), and batches may share one large dictionary;
    a query over them is charged what it holds, not the whole batch or dictionary for each
    piece the scan hands on: aggregates over 76-84 MiB tables under a budget with about
    170 MiB free are answered, exactly, and every row comes back in order."""
    server = start_server("--max-memory", "256MiB", "--eviction", "noeviction")
    client = flight.connect(server.url)
    rows = 1 << 20
    values, size_of, size = column(rows)
    table = pa.table({"k": pa.array(np.arange(rows, dtype=np.int64) % 100), "v": values})
    assert table.nbytes > 72 << 20
    if batch_rows:
        table = pa.Table.from_batches(table.to_batches(max_chunksize=batch_rows))
    put(client, "giant", table)
    with connect(server.url) as conn:
        assert query(conn, 'SELECT sum(k) AS s FROM "giant"').to_pylist() == [
            {"s": sum(range(100)) * (rows // 100) + sum(range(rows % 100))}
        ]
        grouped = query(
            conn,
            f'SELECT k, count(*) AS n, sum({size_of}) AS v FROM "giant" '
            "GROUP BY k ORDER BY k LIMIT 2",
        )
        per_key = rows // 100 + 1  # keys 0..75 have one row more than the rest
        assert grouped.to_pylist() == [{"k": k, "n": per_key, "v": size * per_key} for k in (0, 1)]
        # Every row back, in order (a dictionary column in batches of dictionaries of their own).
        everything = query(conn, 'SELECT * FROM "giant"')
        got, want = everything["v"], table["v"]
        if pa.types.is_dictionary(want.type):
            got, want = got.cast(want.type.value_type), want.cast(want.type.value_type)
        assert everything["k"].equals(table["k"]) and got.equals(want)
    stats = json.loads(action(client, "stats"))
    assert (stats["evictions"], stats["tables"]) == (0, 1), stats
    client.close()


def test_cancel_flight_info_ends_a_running_query(client):
    """pyarrow's CancelFlightInfo with a statement's FlightInfo cancels its running query."""
    big = pa.table({"v": np.arange(8 << 20, dtype=np.float64)})
    put(client, "big", big)
    command = _statement_query('SELECT * FROM "big"')
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    reader = client.do_get(info.endpoints[0].ticket)
    reader.read_chunk()
    # CancelFlightInfoRequest { info = 1 }, by hand: pyarrow has no helper for it.
    request = _field(1, info.serialize())
    [result] = client.do_action(flight.Action("CancelFlightInfo", request))
    # CancelFlightInfoResult { status = CANCEL_STATUS_CANCELLED (1) }
    assert result.body.to_pybytes() == b"\x08\x01"
    # ABORTED, which pyarrow raises as an error (a CANCELLED status it would turn into
    # KeyboardInterrupt).
    with pytest.raises(flight.FlightError, match="cancelled"):
        reader.read_all()


def _field(number, payload):
    """A length-delimited protobuf field."""
    out = bytes([number << 3 | 2])
    length = len(payload)
    while length >= 0x80:
        out += bytes([length & 0x7F | 0x80])
        length >>= 7
    return out + bytes([length]) + payload


def _statement_query(sql):
    """A CommandStatementQuery in a protobuf Any, encoded by hand (pyarrow has no Flight SQL)."""
    url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return _field(1, url) + _field(2, _field(1, sql.encode()))


# --- queries ----------------------------------------------------------------------------------


def test_select_star_gives_back_the_table_that_was_put(client, sql):
    assert len(TABLE.to_batches()) == 5 and all(c.null_count for c in TABLE.columns)
    put(client, "k", TABLE)
    result = query(sql, 'SELECT * FROM "k"')
    assert result.schema == TABLE.schema
    assert result.equals(TABLE)


def test_a_projection_and_filter_match_pyarrow_compute(client, sql):
    put(client, "k", TABLE)
    expected = TABLE.filter(pc.greater(TABLE["a"], 10)).sort_by("a").select(["b"])
    result = query(sql, 'SELECT b FROM "k" WHERE a > 10 ORDER BY a')
    assert result.schema == expected.schema
    assert result.equals(expected)


def test_aggregates_match_pyarrow_compute(client, sql):
    put(client, "k", TABLE)
    result = query(
        sql,
        'SELECT sum(a) AS total, count(*) AS n, count(b) AS n_b, min(c) AS low, max(c) AS high '
        'FROM "k"',
    )
    assert result.to_pylist() == [
        {
            "total": pc.sum(TABLE["a"]).as_py(),
            "n": TABLE.num_rows,
            "n_b": TABLE.num_rows - TABLE["b"].null_count,
            "low": pc.min(TABLE["c"]).as_py(),
            "high": pc.max(TABLE["c"]).as_py(),
        }
    ]
    assert result.schema.field("total").type == pa.int64()


def test_a_group_by_matches_pyarrow(client, sql):
    put(client, "k", TABLE)
    result = query(sql, 'SELECT b, count(*) AS n FROM "k" GROUP BY b ORDER BY b')
    expected = TABLE.group_by("b").aggregate([([], "count_all")]).sort_by("b")
    assert [(row["b"], row["n"]) for row in result.to_pylist()] == [
        (row["b"], row["count_all"]) for row in expected.to_pylist()
    ]


def test_keys_with_a_slash_or_capitals_are_quoted_table_names(client, sql):
    put(client, "nyc/trips", TABLE.slice(0, 10))
    put(client, "Trips2024", TABLE.slice(0, 20))
    put(client, "plain", TABLE.slice(0, 30))
    assert query(sql, 'SELECT count(*) AS n FROM "nyc/trips"')["n"].to_pylist() == [10]
    assert query(sql, 'SELECT count(*) AS n FROM "Trips2024"')["n"].to_pylist() == [20]
    assert query(sql, "SELECT count(*) AS n FROM plain")["n"].to_pylist() == [30]
    assert query(sql, 'SELECT count(*) AS n FROM flightcache.public."nyc/trips"')["n"].to_pylist() == [10]


def test_a_table_put_again_is_queried_as_replaced(client, sql):
    put(client, "k", TABLE)
    assert query(sql, 'SELECT count(*) AS n FROM "k"')["n"].to_pylist() == [5000]
    put(client, "k", SMALL)
    assert query(sql, 'SELECT * FROM "k"').equals(SMALL)


# --- parameters -------------------------------------------------------------------------------


def above(threshold, table=TABLE):
    """The `a` values over `threshold`, in order: what `WHERE a > $1 ORDER BY a` answers."""
    return sorted(a for a in table["a"].to_pylist() if a is not None and a > threshold)


def test_a_parameter_is_bound_to_the_prepared_query(client, sql):
    put(client, "k", TABLE)
    result = query(sql, 'SELECT a FROM "k" WHERE a > $1 ORDER BY a', (10,))
    assert result.schema == pa.schema([pa.field("a", pa.int64())])
    assert result["a"].to_pylist() == above(10)


def test_the_same_prepared_query_runs_again_with_new_parameters(client, sql):
    put(client, "k", TABLE)
    with sql.cursor() as cursor:
        for threshold in [10, 3900, 10**9, -5]:
            cursor.execute('SELECT a FROM "k" WHERE a > $1 ORDER BY a', (threshold,))
            result = cursor.fetch_arrow_table()
            assert result["a"].to_pylist() == above(threshold), threshold
            assert result.schema.field("a").type == pa.int64()


def test_parameters_of_several_types(client, sql):
    put(client, "k", TABLE)
    result = query(sql, 'SELECT count(*) AS n FROM "k" WHERE a > $1 AND b = $2', (100, "s3"))
    mask = pc.and_(pc.greater(TABLE["a"], 100), pc.equal(TABLE["b"], "s3"))
    assert result["n"].to_pylist() == [TABLE.filter(mask).num_rows]


# --- errors -----------------------------------------------------------------------------------


def test_a_syntax_error_is_a_programming_error_that_quotes_the_problem(client, sql):
    put(client, "k", TABLE)
    with pytest.raises(dbapi.ProgrammingError) as failure:
        query(sql, 'SELEC * FROM "k"')
    assert failure.value.status_code == AdbcStatusCode.INVALID_ARGUMENT, failure.value
    assert "SELEC" in str(failure.value)


def test_a_missing_table_is_not_found(sql):
    with pytest.raises(dbapi.Error) as failure:
        query(sql, 'SELECT * FROM "never-stored"')
    assert_not_found(failure, "never-stored")


def test_a_missing_column_is_a_programming_error(client, sql):
    put(client, "k", TABLE)
    with pytest.raises(dbapi.ProgrammingError, match="no_such_column"):
        query(sql, 'SELECT no_such_column FROM "k"')


# --- metadata ---------------------------------------------------------------------------------


def test_get_objects_lists_every_key_as_a_table_with_its_columns(client, sql):
    put(client, "k", TABLE)
    put(client, "nyc/trips", TABLE.select(["c", "a"]))
    [catalog] = sql.adbc_get_objects(depth="all").read_all().to_pylist()
    assert catalog["catalog_name"] == "flightcache"
    [schema] = catalog["catalog_db_schemas"]
    assert schema["db_schema_name"] == "public"
    tables = {table["table_name"]: table for table in schema["db_schema_tables"]}
    assert sorted(tables) == ["k", "nyc/trips"]
    assert {table["table_type"] for table in tables.values()} == {"TABLE"}
    columns = {
        name: [(c["column_name"], c["ordinal_position"]) for c in table["table_columns"]]
        for name, table in tables.items()
    }
    assert columns == {"k": [("a", 1), ("b", 2), ("c", 3)], "nyc/trips": [("c", 1), ("a", 2)]}


def test_get_objects_filters_table_names_with_like_patterns(client, sql):
    for key in ["k", "nyc/trips", "nyc/zones", "paris"]:
        put(client, key, SMALL)
    assert table_names(sql, depth="tables", table_name_filter="nyc/%") == ["nyc/trips", "nyc/zones"]
    assert table_names(sql, depth="tables", table_name_filter="_") == ["k"]
    assert sorted(table_names(sql, depth="tables")) == ["k", "nyc/trips", "nyc/zones", "paris"]


def test_get_table_schema_is_the_schema_that_was_put(client, sql):
    put(client, "k", TABLE)
    put(client, "nyc/trips", TABLE.select(["c"]))
    assert sql.adbc_get_table_schema("k") == TABLE.schema
    assert sql.adbc_get_table_schema("nyc/trips") == TABLE.select(["c"]).schema
    assert (
        sql.adbc_get_table_schema("k", catalog_filter="flightcache", db_schema_filter="public")
        == TABLE.schema
    )


def test_get_table_schema_of_a_missing_table_is_not_found(client, sql):
    put(client, "k", TABLE)
    with pytest.raises(dbapi.ProgrammingError) as failure:
        sql.adbc_get_table_schema("never-stored")
    assert failure.value.status_code == AdbcStatusCode.NOT_FOUND, failure.value


def test_the_one_table_type_is_table(sql):
    assert sql.adbc_get_table_types() == ["TABLE"]


def test_get_info_names_flightcache_and_its_version(sql):
    version = subprocess.run(
        [_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    info = sql.adbc_get_info()
    assert info["vendor_name"] == "flightcache"
    assert info["vendor_version"] == version


# --- users ------------------------------------------------------------------------------------

# The driver signs in with `Basic` + base64 WITHOUT padding (Go's RawStdEncoding), where pyarrow
# pads: user:password lengths of every remainder mod 3 check that both are taken.
CREDENTIALS = {"admin": "admin-pw", "alice": "alice-pw!", "bob": "bob-pw"}


def test_the_credentials_cover_every_base64_padding():
    assert {len(f"{user}:{password}") % 3 for user, password in CREDENTIALS.items()} == {0, 1, 2}


@pytest.fixture(scope="module")
def sql_users(tmp_path_factory):
    """A users file: an admin, alice who may read shared/* only, bob who may read everything,
    and ci with an API token for shared/*; returns (path, ci's token)."""
    token, token_line = new_token()
    text = f"""
[users.admin]
{hash_password(CREDENTIALS["admin"])}
read = ["*"]
write = ["*"]
admin = true

[users.alice]
{hash_password(CREDENTIALS["alice"])}
read = ["shared/*"]

[users.bob]
{hash_password(CREDENTIALS["bob"])}
read = ["*"]

[users.ci]
{token_line}
read = ["shared/*"]
"""
    path = tmp_path_factory.mktemp("sql-users") / "users.toml"
    path.write_text(text)
    return str(path), token


@pytest.fixture
def users_server(start_server, sql_users):
    """A server with users, holding `shared/t` and `secret` (put by the admin)."""
    server = start_server("--users", sql_users[0])
    client = flight.connect(server.url)
    admin = log_in(client, "admin", CREDENTIALS["admin"])
    put(client, "shared/t", SMALL, options=admin)
    put(client, "secret", SMALL, options=admin)
    client.close()
    return server


def sign_in(server, user):
    return connect(server.url, {"username": user, "password": CREDENTIALS[user]})


def test_each_user_signs_in_with_username_and_password(users_server):
    for user in CREDENTIALS:
        with sign_in(users_server, user) as conn:
            assert query(conn, 'SELECT * FROM "shared/t"').equals(SMALL), user


def test_a_table_outside_the_users_read_patterns_is_not_found_like_a_missing_one(users_server):
    with sign_in(users_server, "alice") as conn:
        assert query(conn, 'SELECT count(*) AS n FROM "shared/t"')["n"].to_pylist() == [30]
        with pytest.raises(dbapi.Error) as hidden:
            query(conn, 'SELECT * FROM "secret"')
        assert_not_found(hidden, "secret")
        with pytest.raises(dbapi.Error) as missing:
            query(conn, 'SELECT * FROM "never-stored"')
        assert type(hidden.value) is type(missing.value)
        assert hidden.value.status_code == missing.value.status_code
        with pytest.raises(dbapi.ProgrammingError) as schema:
            conn.adbc_get_table_schema("secret")
        assert schema.value.status_code == AdbcStatusCode.NOT_FOUND, schema.value


def test_a_read_only_user_may_not_ingest(users_server):
    with sign_in(users_server, "alice") as conn:
        with conn.cursor() as cursor:
            with pytest.raises(dbapi.Error) as failure:
                cursor.adbc_ingest("shared/new", SMALL, mode="create")
    assert "may not write" in str(failure.value), failure.value


def test_get_objects_lists_only_the_tables_the_user_may_read(users_server):
    with sign_in(users_server, "alice") as conn:
        assert table_names(conn) == ["shared/t"]
    with sign_in(users_server, "bob") as conn:
        assert sorted(table_names(conn)) == ["secret", "shared/t"]


def test_a_read_only_user_binds_parameters(users_server):
    with sign_in(users_server, "alice") as conn:
        result = query(conn, 'SELECT a FROM "shared/t" WHERE a > $1 ORDER BY a', (-990,))
    assert result["a"].to_pylist() == above(-990, SMALL)


def test_a_wrong_password_is_refused(users_server):
    with pytest.raises(dbapi.ProgrammingError, match="user name or password") as failure:
        with connect(users_server.url, {"username": "alice", "password": "wrong"}) as conn:
            query(conn, 'SELECT * FROM "shared/t"')
    assert failure.value.status_code == AdbcStatusCode.UNAUTHENTICATED, failure.value


def test_without_credentials_a_query_is_unauthenticated(users_server):
    with pytest.raises(dbapi.ProgrammingError) as failure:
        with connect(users_server.url) as conn:
            query(conn, 'SELECT * FROM "shared/t"')
    assert failure.value.status_code == AdbcStatusCode.UNAUTHENTICATED, failure.value


def test_an_api_token_goes_in_the_authorization_header_option(users_server, sql_users):
    token = sql_users[1]
    with connect(users_server.url, {AUTHORIZATION: f"Bearer {token}"}) as conn:
        assert query(conn, 'SELECT * FROM "shared/t"').equals(SMALL)
        with pytest.raises(dbapi.Error) as hidden:
            query(conn, 'SELECT * FROM "secret"')
        assert_not_found(hidden, "secret")


# --- TLS --------------------------------------------------------------------------------------


def test_tls_with_the_servers_ca_and_refused_with_another(start_server, pki):  # noqa: F811
    ca, files = pki
    server = start_server("--tls-cert", files["cert"], "--tls-key", files["key"])
    assert server.url.startswith("grpc+tls://127.0.0.1:")
    client = flight.connect(server.url, tls_root_certs=ca.pem)
    put(client, "k", TABLE)
    client.close()
    with connect(server.url, {ROOT_CERTS: ca.pem.decode()}) as conn:
        assert query(conn, 'SELECT * FROM "k"').equals(TABLE)
        result = query(conn, 'SELECT a FROM "k" WHERE a > $1 ORDER BY a', (10,))
        assert result["a"].to_pylist() == above(10)
    stranger = Authority("not the server's CA")
    with pytest.raises(dbapi.OperationalError):
        with connect(server.url, {ROOT_CERTS: stranger.pem.decode()}) as conn:
            query(conn, 'SELECT * FROM "k"')


def test_mutual_tls_signs_in_the_user_its_certificate_names(start_server, pki, sql_users):  # noqa: F811
    ca, files = pki
    server = start_server(
        "--users", sql_users[0],
        "--tls-cert", files["cert"], "--tls-key", files["key"], "--tls-client-ca", files["ca"],
    )
    cert, key = ca.issue("admin", server=False)
    client = flight.connect(server.url, tls_root_certs=ca.pem, cert_chain=cert, private_key=key)
    put(client, "shared/t", SMALL)
    put(client, "secret", SMALL)
    client.close()
    cert, key = ca.issue("alice", server=False)
    options = {ROOT_CERTS: ca.pem.decode(), CLIENT_CERT: cert.decode(), CLIENT_KEY: key.decode()}
    with connect(server.url, options) as conn:
        assert query(conn, 'SELECT * FROM "shared/t"').equals(SMALL)
        assert table_names(conn) == ["shared/t"]
        with pytest.raises(dbapi.Error) as hidden:
            query(conn, 'SELECT * FROM "secret"')
        assert_not_found(hidden, "secret")
