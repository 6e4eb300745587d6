//! Flight SQL's metadata commands: what ADBC's `adbc_get_info`, `adbc_get_objects` and
//! `adbc_get_table_schema`, JDBC's `DatabaseMetaData` and DBeaver's object browser ask for.
//! Each answers one record batch, built by arrow-flight's builders from the tables the caller
//! may read.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, Nullable, Searchable, SqlInfo,
    SqlSupportedTransaction, XdbcDataType,
};

use crate::error::{Error, Result};
use crate::sql::catalog::{CATALOG, CallerTables, SCHEMA};

/// The one table type.
pub const TABLE_TYPE: &str = "TABLE";

/// A metadata command.
#[derive(Debug, Clone)]
pub(crate) enum MetadataCommand {
    /// `CommandGetSqlInfo`.
    SqlInfo(CommandGetSqlInfo),
    /// `CommandGetCatalogs`.
    Catalogs(CommandGetCatalogs),
    /// `CommandGetDbSchemas`.
    DbSchemas(CommandGetDbSchemas),
    /// `CommandGetTables`.
    Tables(CommandGetTables),
    /// `CommandGetTableTypes`.
    TableTypes(CommandGetTableTypes),
    /// `CommandGetXdbcTypeInfo`.
    XdbcTypeInfo(CommandGetXdbcTypeInfo),
    /// `CommandGetPrimaryKeys`: no cached table has a primary key.
    PrimaryKeys(CommandGetPrimaryKeys),
}

impl MetadataCommand {
    /// The schema of the command's answer.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::SqlInfo(command) => command.clone().into_builder(&SQL_INFO).schema(),
            Self::Catalogs(command) => (*command).into_builder().schema(),
            Self::DbSchemas(command) => command.clone().into_builder().schema(),
            Self::Tables(command) => command.clone().into_builder().schema(),
            Self::TableTypes(command) => (*command).into_builder().schema(),
            Self::XdbcTypeInfo(command) => (*command).into_builder(&XDBC_TYPES).schema(),
            Self::PrimaryKeys(_) => Arc::clone(&PRIMARY_KEYS_SCHEMA),
        }
    }

    /// The command's answer, from the tables the caller may read.
    ///
    /// # Errors
    /// [`Error::Arrow`] if a builder fails (a bug).
    pub fn answer(self, tables: &CallerTables) -> Result<RecordBatch> {
        let batch = match self {
            Self::SqlInfo(command) => command.into_builder(&SQL_INFO).build(),
            Self::Catalogs(command) => {
                let mut builder = command.into_builder();
                builder.append(CATALOG);
                builder.build()
            }
            Self::DbSchemas(command) => {
                let mut builder = command.into_builder();
                builder.append(CATALOG, SCHEMA);
                builder.build()
            }
            Self::Tables(command) => {
                let mut builder = command.into_builder();
                for (key, stored) in tables.list("") {
                    builder
                        .append(
                            CATALOG,
                            SCHEMA,
                            key.as_str(),
                            TABLE_TYPE,
                            stored.table.schema(),
                        )
                        .map_err(builder_error)?;
                }
                builder.build()
            }
            Self::TableTypes(command) => {
                let mut builder = command.into_builder();
                builder.append(TABLE_TYPE);
                builder.build()
            }
            Self::XdbcTypeInfo(command) => command.into_builder(&XDBC_TYPES).build(),
            Self::PrimaryKeys(_) => Ok(RecordBatch::new_empty(Arc::clone(&PRIMARY_KEYS_SCHEMA))),
        };
        batch.map_err(builder_error)
    }
}

/// A metadata builder's failure: Arrow's, on a batch the server built (a bug).
fn builder_error(err: arrow_flight::error::FlightError) -> Error {
    match err {
        arrow_flight::error::FlightError::Arrow(source) => Error::Internal {
            context: "building a Flight SQL metadata answer",
            source: Box::new(source),
        },
        other => Error::Internal {
            context: "building a Flight SQL metadata answer",
            source: Box::new(arrow::error::ArrowError::ExternalError(Box::new(other))),
        },
    }
}

/// What `CommandGetSqlInfo` answers: the server, and the SQL it takes (DataFusion's dialect,
/// read-only, no transactions).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "flightcache");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs's MetadataVersion V5).
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlTransactionsSupported, false);
    builder.build().expect("the SQL info is well formed")
});

/// The SQL types DataFusion takes in statements (`CAST(x AS type)`, parameters), for
/// `CommandGetXdbcTypeInfo`.
static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("BOOLEAN", XdbcDataType::XdbcBit, None, None),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(8), Some(2)),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(16), Some(2)),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(32), Some(2)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64), Some(2)),
        ("FLOAT", XdbcDataType::XdbcFloat, Some(24), Some(2)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), Some(2)),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), Some(10)),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, None),
        ("BINARY", XdbcDataType::XdbcBinary, None, None),
        ("DATE", XdbcDataType::XdbcDate, None, None),
        ("TIME", XdbcDataType::XdbcTime, None, None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, None),
    ];
    for (name, data_type, column_size, radix) in types {
        let quoted = matches!(
            data_type,
            XdbcDataType::XdbcVarchar
                | XdbcDataType::XdbcDate
                | XdbcDataType::XdbcTime
                | XdbcDataType::XdbcTimestamp
        );
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: quoted.then(|| "'".into()),
            literal_suffix: quoted.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: data_type == XdbcDataType::XdbcVarchar,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: radix.map(|_| false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: radix,
            interval_precision: None,
        });
    }
    builder.build().expect("the type list is well formed")
});

/// The schema of `CommandGetPrimaryKeys`' answer, as Flight SQL defines it.
static PRIMARY_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});
