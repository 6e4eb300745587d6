//! Flight SQL through arrow-flight's `FlightSqlServiceClient`, on the same port as plain
//! Flight: statements, prepared statements with parameters, metadata commands, rights, and
//! tables read in place while they are replaced or dropped.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo,
    ProstMessageExt, SqlInfo,
};
use flightcache::ServerConfig;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::types::every_type_batch;
use crate::common::{TestServer, key, large_batches, numbered_batches, quiet};

async fn sql_client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .expect("channel connects");
    FlightSqlServiceClient::new(channel)
}

async fn put(server: &TestServer, name: &str, batches: Vec<RecordBatch>) {
    let mut client = server.client().await;
    client
        .put_batches(&key(name), batches[0].schema(), batches)
        .await
        .expect("put");
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint has a ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("the stream"));
    }
    batches
}

/// A query of all of `big` (64 MiB, put here) started: its `FlightInfo`, and its stream with
/// the first batch read (the server is still sending: the rest exceeds HTTP/2's windows).
async fn started_query(
    server: &TestServer,
    client: &mut FlightSqlServiceClient<Channel>,
) -> (FlightInfo, arrow_flight::decode::FlightRecordBatchStream) {
    let (_, batches) = large_batches(64);
    put(server, "big", batches).await;
    let info = client
        .execute(r#"SELECT * FROM "big""#.into(), None)
        .await
        .unwrap();
    let mut stream = client
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    stream.try_next().await.unwrap().expect("a first batch");
    (info, stream)
}

/// The error `stream` ends with, after the batches already on their way.
async fn final_error(
    mut stream: arrow_flight::decode::FlightRecordBatchStream,
) -> arrow_flight::error::FlightError {
    loop {
        match stream.try_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the query ran to its end"),
            Err(err) => return err,
        }
    }
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .expect("execute");
    fetch(client, info).await
}

/// The status of a refused call, as its code and message.
fn refusal(err: arrow_flight::error::FlightError) -> (Code, String) {
    let status = crate::common::status(err);
    (status.code(), status.message().to_string())
}

#[tokio::test]
async fn select_star_gives_back_the_table_rows_in_order() {
    let server = TestServer::start().await;
    let batches = numbered_batches(4, 1000);
    put(&server, "numbers", batches.clone()).await;
    let mut client = sql_client(&server).await;
    let got = query(&mut client, r#"SELECT * FROM "numbers""#).await;
    assert_eq!(got, batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn every_arrow_type_comes_back_exact_through_select_star() {
    let server = TestServer::start().await;
    let batch = every_type_batch();
    put(&server, "types", vec![batch.clone()]).await;
    let mut client = sql_client(&server).await;
    // Column by column first, so that a failure names its type.
    let mut failed = Vec::new();
    for (column, field) in batch.schema().fields().iter().enumerate() {
        let sql = format!(r#"SELECT "{}" FROM "types""#, field.name());
        let info = client.execute(sql, None).await.expect("execute");
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        match client
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(got) if got[0].column(0).to_data() == batch.column(column).to_data() => {}
            Ok(got) => failed.push(format!("{}: {:?}", field.name(), got[0].column(0))),
            Err(err) => failed.push(format!("{} ({}): {err}", field.name(), field.data_type())),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    let got = query(&mut client, r#"SELECT * FROM "types""#).await;
    let got = concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(
        got.schema(),
        batch.schema(),
        "the schema, metadata included"
    );
    for (column, field) in batch.schema().fields().iter().enumerate() {
        assert_eq!(
            got.column(column).to_data(),
            batch.column(column).to_data(),
            "column {}",
            field.name()
        );
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_giant_batch_stored_in_pieces_is_scanned_in_place() {
    // One 8 MiB batch of flat columns is stored as pieces over the same memory (resplit);
    // the scan reads each piece from its segments.
    let rows = 500_000;
    let values: Vec<i64> = (0..rows).collect();
    let text: Vec<Option<String>> = (0..rows)
        .map(|i| (i % 7 != 0).then(|| format!("row {i}")))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new("half", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(values.clone())),
            Arc::new(StringArray::from(text.clone())),
            Arc::new(Float64Array::from_iter_values(
                values.iter().map(|v| *v as f64 / 2.0),
            )),
        ],
    )
    .unwrap();
    let server = TestServer::start().await;
    put(&server, "giant", vec![batch.clone()]).await;
    let mut client = sql_client(&server).await;
    let got = query(&mut client, r#"SELECT * FROM "giant""#).await;
    assert!(got.len() > 1, "stored in pieces: {} batches", got.len());
    assert_eq!(concat_batches(&schema, &got).unwrap(), batch);
    let got = query(
        &mut client,
        r#"SELECT text FROM "giant" WHERE id >= 499990 ORDER BY id"#,
    )
    .await;
    let got = concat_batches(&got[0].schema(), &got).unwrap();
    let expected: StringArray = text[499_990..].iter().map(|t| t.as_deref()).collect();
    assert_eq!(got.column(0).as_ref(), &expected as &dyn Array);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_prepared_statement_binds_parameters_and_runs_again_with_new_ones() {
    let server = TestServer::start().await;
    put(&server, "numbers", numbered_batches(2, 100)).await;
    let mut client = sql_client(&server).await;
    let mut prepared = client
        .prepare(
            r#"SELECT count(*) AS n FROM "numbers" WHERE id >= $1"#.to_string(),
            None,
        )
        .await
        .expect("prepare");
    assert_eq!(
        prepared.parameter_schema().unwrap().field(0).data_type(),
        &DataType::Int64
    );
    for (from, expected) in [(150_i64, 50_i64), (0, 200), (500, 0)] {
        let parameters = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![from])) as ArrayRef],
        )
        .unwrap();
        prepared.set_parameters(parameters).unwrap();
        let info = prepared.execute().await.expect("execute");
        let got = fetch(&mut client, info).await;
        let count = got[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(count.value(0), expected, "from {from}");
    }
    prepared.close().await.expect("close");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn sql_errors_are_invalid_argument_with_the_engines_message() {
    let server = TestServer::start().await;
    let mut client = sql_client(&server).await;
    let (code, message) = refusal(client.execute("SELEC 1".into(), None).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(
        message.contains("SELEC") && message.contains("Column: 1"),
        "{message}"
    );
    let (code, message) = refusal(
        client
            .execute(r#"SELECT * FROM "missing""#.into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(
        message.contains("missing") && message.contains("not found"),
        "{message}"
    );
    // Statements that would change the server or read its files are refused, and so are
    // the functions whose output the caller sizes at will.
    for statement in [
        "SELECT generate_series(1, 10000000000)",
        "SELECT * FROM range(10000000000)",
        "SELECT repeat('x', 1000000000)",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE TABLE t AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (code, message) = refusal(client.execute(statement.into(), None).await.unwrap_err());
        assert_eq!(code, Code::InvalidArgument, "{statement}: {message}");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn metadata_commands_describe_the_cache_and_its_tables() {
    let server = TestServer::start().await;
    put(&server, "nyc/trips", numbered_batches(1, 10)).await;
    put(&server, "other", numbered_batches(1, 10)).await;
    let mut client = sql_client(&server).await;

    let info = client.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut client, info).await;
    assert_eq!(catalogs[0].num_rows(), 1);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = fetch(&mut client, info).await;
    let names = schemas[0].column(1).as_string::<i32>();
    assert_eq!(names.value(0), "public");

    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("flightcache".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("nyc/%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await;
    let tables = concat_batches(&tables[0].schema(), &tables).unwrap();
    assert_eq!(tables.num_rows(), 1);
    let names = tables.column(2).as_string::<i32>();
    assert_eq!(names.value(0), "nyc/trips");
    let schema_bytes = tables
        .column(4)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes.value(0)).unwrap();
    assert_eq!(&schema, crate::common::numbered_schema().as_ref());

    // GetSchema of a statement: its result's schema, planned, not run.
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::CommandStatementQuery {
            query: r#"SELECT id AS n FROM "other""#.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    );
    let answer = client
        .inner_mut()
        .get_schema(descriptor)
        .await
        .unwrap()
        .into_inner();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&answer.schema).unwrap();
    assert_eq!(schema.field(0).name(), "n");
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);

    let info = client.get_table_types().await.unwrap();
    let types = fetch(&mut client, info).await;
    let types = types[0].column(0).as_string::<i32>();
    assert_eq!(types.value(0), "TABLE");

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let infos = fetch(&mut client, info).await;
    let ids = infos[0]
        .column(0)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap();
    assert_eq!(ids.len(), 2);

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = fetch(&mut client, info).await;
    assert!(types[0].num_rows() >= 10, "{}", types[0].num_rows());

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "other".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await;
    assert_eq!(keys.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_table_dropped_while_a_query_reads_it_stays_readable_to_that_query() {
    let server = TestServer::start().await;
    let (_, batches) = large_batches(64);
    put(&server, "big", batches.clone()).await;
    let mut client = sql_client(&server).await;
    let info = client
        .execute(r#"SELECT * FROM "big""#.into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    let mut cache = server.client().await;
    cache.drop_table(&key("big")).await.expect("drop");
    let mut got = vec![first];
    got.extend(stream.try_collect::<Vec<_>>().await.expect("the rest"));
    assert_eq!(got, batches);
    // A new query no longer finds it.
    let (code, _) = refusal(
        client
            .execute(r#"SELECT * FROM "big""#.into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn plain_flight_is_unchanged_beside_flight_sql() {
    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let batches = numbered_batches(3, 100);
    put(&server, "numbers", batches.clone()).await;
    let mut flight = server.flight_client().await;
    let got: Vec<RecordBatch> = flight
        .do_get(key("numbers").to_ticket())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got, batches);
    let actions: Vec<_> = flight
        .list_actions()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a.r#type == "CreatePreparedStatement")
    );
    server.shutdown_and_wait().await;
}

/// A query that runs longer than `--query-timeout` ends with DEADLINE_EXCEEDED (tokio's paused
/// clock moves the time).
#[tokio::test(start_paused = true)]
async fn a_query_past_the_time_limit_ends_with_deadline_exceeded() {
    let config = ServerConfig {
        query_timeout: std::time::Duration::from_secs(10),
        max_concurrent_queries: 1,
        ..quiet(ServerConfig::default())
    };
    let server = TestServer::start_with(config).await;
    let mut client = sql_client(&server).await;
    let (_, stream) = started_query(&server, &mut client).await;
    tokio::time::advance(std::time::Duration::from_secs(11)).await;
    // Ended by its deadline although its client has stopped reading: its place is free.
    let counted = query(&mut client, r#"SELECT count(*) FROM "big""#).await;
    assert_eq!(counted[0].num_rows(), 1);
    let err = final_error(stream).await;
    let (code, message) = refusal(err);
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("--query-timeout"), "{message}");
    server.shutdown_and_wait().await;
}

/// Past `--max-queries` running at once, a query is RESOURCE_EXHAUSTED; one that ends (or
/// whose client goes away) frees its place.
#[tokio::test]
async fn queries_past_the_limit_are_refused_until_one_ends() {
    let config = ServerConfig {
        max_concurrent_queries: 1,
        ..quiet(ServerConfig::default())
    };
    let server = TestServer::start_with(config).await;
    let (_, batches) = large_batches(64);
    put(&server, "big", batches).await;
    let mut client = sql_client(&server).await;
    let info = client
        .execute(r#"SELECT * FROM "big""#.into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut running = client.do_get(ticket.clone()).await.unwrap();
    running.try_next().await.unwrap().expect("a first batch");
    let err = match client.do_get(ticket.clone()).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
        Err(err) => err,
    };
    let (code, message) = refusal(err);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("--max-queries"), "{message}");
    drop(running);
    // The server frees the place once it sees the stream reset.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = match client.do_get(ticket.clone()).await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(batches) => {
                assert_eq!(
                    batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
                    64 << 17
                );
                break;
            }
            Err(err) if attempts < 100 => {
                let (code, _) = refusal(err);
                assert_eq!(code, Code::ResourceExhausted);
                tokio::task::yield_now().await;
            }
            Err(err) => panic!("still refused: {err}"),
        }
    }
    server.shutdown_and_wait().await;
}

/// Query memory is charged to the memory budget: a sort that does not fit beside the table is
/// RESOURCE_EXHAUSTED (nothing spills to disk), and the server and its table are unharmed.
#[tokio::test]
async fn a_query_that_does_not_fit_in_the_budget_is_resource_exhausted() {
    let config = ServerConfig {
        max_memory: Some(24 << 20),
        ..quiet(ServerConfig::default())
    };
    let server = TestServer::start_with(config).await;
    let (_, batches) = large_batches(16);
    put(&server, "big", batches.clone()).await;
    let mut client = sql_client(&server).await;
    let err = match client
        .execute(
            r#"SELECT v, random() AS r FROM "big" ORDER BY r"#.into(),
            None,
        )
        .await
    {
        Ok(info) => {
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            match client.do_get(ticket).await {
                Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
                Err(err) => err,
            }
        }
        Err(err) => err,
    };
    let (code, message) = refusal(err);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("--max-memory"), "{message}");
    let got = query(&mut client, r#"SELECT * FROM "big""#).await;
    assert_eq!(got, batches, "the table is still there, whole");
    server.shutdown_and_wait().await;
}

fn ingest_command(
    table: &str,
    if_exists: arrow_flight::sql::TableExistsOption,
) -> arrow_flight::sql::CommandStatementIngest {
    use arrow_flight::sql::TableDefinitionOptions;
    arrow_flight::sql::CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: arrow_flight::sql::TableNotExistOption::Create.into(),
            if_exists: if_exists.into(),
        }),
        table: table.into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    }
}

/// `CommandStatementIngest` (ADBC's `adbc_ingest`) stores a key: create, replace, and a clear
/// refusal to replace without being asked or to append.
#[tokio::test]
async fn an_ingest_stores_the_key_and_replaces_it_only_when_asked() {
    use arrow_flight::sql::TableExistsOption;
    let server = TestServer::start().await;
    let mut client = sql_client(&server).await;
    let batches = numbered_batches(3, 100);
    let rows = client
        .execute_ingest(
            ingest_command("in/gested", TableExistsOption::Fail),
            futures::stream::iter(batches.clone().into_iter().map(Ok)),
        )
        .await
        .expect("ingest");
    assert_eq!(rows, 300);
    let mut cache = server.client().await;
    let (_, got) = cache.get_all(&key("in/gested")).await.unwrap();
    assert_eq!(got, batches, "stored as a key, batches as sent");

    let again = client
        .execute_ingest(
            ingest_command("in/gested", TableExistsOption::Fail),
            futures::stream::iter(batches.clone().into_iter().map(Ok)),
        )
        .await
        .unwrap_err();
    let (code, message) = refusal(again);
    assert_eq!(code, Code::AlreadyExists, "{message}");

    let smaller = numbered_batches(1, 10);
    let rows = client
        .execute_ingest(
            ingest_command("in/gested", TableExistsOption::Replace),
            futures::stream::iter(smaller.clone().into_iter().map(Ok)),
        )
        .await
        .expect("replace");
    assert_eq!(rows, 10);
    let (_, got) = cache.get_all(&key("in/gested")).await.unwrap();
    assert_eq!(got, smaller);

    // ADBC's append mode appends: the key keeps its rows and gains the new ones, which take
    // the next offsets.
    let appended = client
        .execute_ingest(
            ingest_command("in/gested", TableExistsOption::Append),
            futures::stream::iter(smaller.clone().into_iter().map(Ok)),
        )
        .await
        .expect("append");
    assert_eq!(appended, 10);
    let (_, got) = cache.get_all(&key("in/gested")).await.unwrap();
    assert_eq!(got, [smaller.clone(), smaller].concat());
    let offsets = cache
        .info(&key("in/gested"))
        .await
        .unwrap()
        .offsets
        .unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (0, 20));
    server.shutdown_and_wait().await;
}

/// `CancelFlightInfo` of a running query ends its stream with ABORTED; of a query that is not
/// running (finished), NOT_CANCELLABLE.
#[tokio::test]
async fn cancel_flight_info_cancels_a_running_query() {
    let server = TestServer::start().await;
    let mut client = sql_client(&server).await;
    let (info, stream) = started_query(&server, &mut client).await;
    let mut flight = server.flight_client().await;
    let status = flight
        .cancel_flight_info(arrow_flight::CancelFlightInfoRequest::new(info.clone()))
        .await
        .unwrap();
    assert_eq!(status.status(), arrow_flight::CancelStatus::Cancelled);
    let err = final_error(stream).await;
    let (code, message) = refusal(err);
    assert_eq!(code, Code::Aborted, "{message}");
    let status = flight
        .cancel_flight_info(arrow_flight::CancelFlightInfoRequest::new(info))
        .await
        .unwrap();
    assert_eq!(status.status(), arrow_flight::CancelStatus::NotCancellable);
    server.shutdown_and_wait().await;
}

/// A `do_put` under a Flight SQL command other than a bind or an ingest is refused before its
/// body is read.
#[tokio::test]
async fn a_do_put_under_a_query_command_is_refused() {
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    let server = TestServer::start().await;
    let command = CommandStatementQuery {
        query: "SELECT 1".into(),
        transaction_id: None,
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let messages = flightcache::protocol::encode::encode_stream(
        &crate::common::numbered_schema(),
        Some(descriptor),
        futures::stream::iter(numbered_batches(1, 10)).map(Ok::<_, flightcache::Error>),
    )
    .map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)));
    let mut flight = server.flight_client().await;
    let err = match flight.do_put(messages).await {
        Ok(results) => results.try_collect::<Vec<_>>().await.unwrap_err(),
        Err(err) => err,
    };
    let (code, message) = refusal(err);
    assert_eq!(code, Code::Unimplemented, "{message}");
    server.shutdown_and_wait().await;
}
