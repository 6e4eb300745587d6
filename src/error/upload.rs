//! What is wrong with an upload: [`UploadProblem`], the problem of
//! [`Error::InvalidUpload`](super::Error::InvalidUpload), and the [`Violation`]s of the rules
//! the store's validator checks.

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// What is wrong with an upload ([`Error::InvalidUpload`](super::Error::InvalidUpload)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadProblem {
    /// A message has a body but no IPC header.
    #[error("a message has a body but no IPC header")]
    BodyWithoutHeader,
    /// A message header is not an Arrow IPC flatbuffer.
    #[error("a message header is not valid Arrow IPC ({0})")]
    BadHeader(#[source] flatbuffers::InvalidFlatbuffer),
    /// A message of a kind that has no place in a record batch stream (a tensor, say).
    #[error("a `{kind}` message is not part of an Arrow record batch stream")]
    UnexpectedMessage {
        /// The message kind.
        kind: &'static str,
    },
    /// A message whose header names its kind but holds nothing.
    #[error("the {kind} message has an empty header")]
    EmptyHeader {
        /// The message kind.
        kind: &'static str,
    },
    /// A second schema.
    #[error(
        "a second schema arrived mid-stream; a table has one schema, upload it under another key"
    )]
    SecondSchema,
    /// A schema Arrow cannot read.
    #[error("bad schema ({0})")]
    BadSchema(#[source] ArrowError),
    /// A batch before the schema.
    #[error("a {kind} arrived before the schema")]
    BeforeSchema {
        /// The message kind.
        kind: &'static str,
    },
    /// A dictionary batch that does not decode.
    #[error("bad dictionary batch ({source})")]
    BadDictionary {
        /// Why it does not decode.
        source: DecodeFailure,
    },
    /// A record batch that does not decode against the schema.
    #[error("record batch {batch} does not match the schema ({source})")]
    BadRecordBatch {
        /// Its position among the stream's record batches, from 0.
        batch: u64,
        /// Why it does not decode.
        source: DecodeFailure,
    },
    /// The stream ended without a schema.
    #[error("the stream ended before a schema was sent")]
    NoSchema,
    /// A record batch whose header does not lay out the schema's columns as Arrow readers
    /// require (see [`Violation`]).
    #[error("record batch {batch} does not match the schema's layout ({violation})")]
    BatchLayout {
        /// Its position among the stream's record batches, from 0.
        batch: u64,
        /// What is wrong.
        violation: Violation,
    },
    /// A message breaks a rule Arrow readers enforce (see [`Violation`]).
    #[error("{0}")]
    Invalid(#[from] Violation),
}

/// Why arrow-ipc could not decode a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeFailure {
    /// arrow-ipc refused it.
    #[error("{0}")]
    Arrow(ArrowError),
    /// arrow-ipc panicked on it (apache/arrow-rs#7124); the panic's message.
    #[error("malformed IPC data: {0}")]
    Panic(String),
}

/// What a message, schema or batch breaks ([`UploadProblem::Invalid`](super::upload::UploadProblem)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A metadata version Arrow C++ does not read.
    #[error(
        "metadata version {0} is not supported; Arrow readers read V4 and V5 (Arrow 1.0 and later)"
    )]
    MetadataVersion(i16),
    /// The header's body length is not the body's.
    #[error("the header declares a body of {declared} bytes, the body has {actual}")]
    BodyLength {
        /// What the header says.
        declared: i64,
        /// What arrived.
        actual: usize,
    },
    /// A big-endian schema.
    #[error(
        "the schema is big-endian; flightcache serves tables as uploaded, so upload little-endian \
         data (pyarrow and arrow-rs write it on every common machine)"
    )]
    BigEndian,
    /// A union's type ids that Arrow cannot represent.
    #[error(
        "union field `{field}` has type ids {type_ids:?}; they must be distinct, in 0..=127, one per child"
    )]
    UnionTypeIds {
        /// The field's name.
        field: String,
        /// The ids declared.
        type_ids: Vec<i32>,
    },
    /// A decimal whose precision does not fit its width.
    #[error("field `{field}` is {data_type}, whose precision must be 1..={max}")]
    DecimalPrecision {
        /// The field's name.
        field: String,
        /// Its type.
        data_type: DataType,
        /// The largest precision of its width.
        max: u8,
    },
    /// A fixed-size type of negative size.
    #[error("field `{field}` is {data_type}: a size cannot be negative")]
    NegativeWidth {
        /// The field's name.
        field: String,
        /// Its type.
        data_type: DataType,
    },
    /// Custom metadata with a key or a value missing.
    #[error("the {place} custom metadata has an entry without a key or a value")]
    MetadataEntry {
        /// Whose metadata: the message's, the schema's or a field's.
        place: &'static str,
    },
    /// A map whose entries or keys may be null.
    #[error(
        "map field `{field}` must have non-nullable entries of two fields, the key non-nullable"
    )]
    MapLayout {
        /// The field's name.
        field: String,
    },
    /// A canonical extension type over the wrong storage or with bad parameters.
    #[error("field `{field}` is not a valid `{name}` ({reason})")]
    ExtensionType {
        /// The field's name.
        field: String,
        /// The extension type's name.
        name: String,
        /// Why not.
        reason: String,
    },
    /// A flatbuffer offset of zero, which points at itself: Arrow C++'s verifier refuses it
    /// (flatbuffers' Rust verifier, which arrow-rs uses, does not).
    #[error(
        "the IPC header holds a flatbuffer offset of zero at byte {at}; it is not a valid flatbuffer"
    )]
    ZeroOffset {
        /// Where in the header.
        at: usize,
    },
    /// A header whose buffer list lies over its other fields (flatbuffers' verifiers allow
    /// objects to overlap), so that its buffers cannot be declared otherwise alone.
    #[error(
        "the IPC header's buffer list overlaps its other fields; no Arrow writer makes such a header"
    )]
    OverlappingHeader,
    /// A negative row count.
    #[error("the batch declares {0} rows")]
    NegativeLength(i64),
    /// A node whose length or null count is impossible.
    #[error("node {node} declares length {length} and null count {null_count}")]
    BadNode {
        /// The node's position, depth first.
        node: usize,
        /// Its declared length.
        length: i64,
        /// Its declared null count.
        null_count: i64,
    },
    /// A top-level column whose length is not the batch's.
    #[error("column {column} has {length} rows, the batch {rows}")]
    ColumnLength {
        /// The column's position.
        column: usize,
        /// Its length.
        length: i64,
        /// The batch's row count.
        rows: i64,
    },
    /// A struct child of another length than its struct. Arrow C++ writes each child at its
    /// struct's length; a longer one would be read as the struct's length by C++ and as the
    /// child's by arrow-rs, so readers would disagree on what the struct holds.
    #[error(
        "a child of a struct of {parent} rows has {child} (a struct's children have its length)"
    )]
    ChildLength {
        /// The struct's length.
        parent: i64,
        /// The child's length.
        child: i64,
    },
    /// A node that may not have nulls declares some (unions, run-end encoded arrays).
    #[error(
        "node {node} of type {data_type} declares {null_count} nulls; it has no validity bitmap"
    )]
    NullsWithoutBitmap {
        /// The node's position.
        node: usize,
        /// Its type.
        data_type: DataType,
        /// The null count declared.
        null_count: i64,
    },
    /// A buffer outside the body, or not 8-byte aligned.
    #[error(
        "buffer {buffer} (offset {offset}, length {length}) is not an 8-byte aligned range of the \
         {body}-byte body"
    )]
    BadBuffer {
        /// The buffer's position.
        buffer: usize,
        /// Its declared offset.
        offset: i64,
        /// Its declared length.
        length: i64,
        /// The body's length.
        body: usize,
    },
    /// A buffer too small for the array that reads it.
    #[error(
        "buffer {buffer} has {length} bytes; its {data_type} array of {rows} rows needs {needed}"
    )]
    ShortBuffer {
        /// The buffer's position.
        buffer: usize,
        /// Its length.
        length: i64,
        /// The array's type.
        data_type: DataType,
        /// The array's length.
        rows: i64,
        /// The bytes needed.
        needed: i64,
        /// The size of its values.
        unit: i64,
    },
    /// Fewer or more nodes, buffers or variadic counts than the schema calls for.
    #[error("the batch has {found} {what}, its schema calls for {expected}")]
    Count {
        /// Nodes, buffers or variadic buffer counts.
        what: &'static str,
        /// How many the header has.
        found: usize,
        /// How many the schema needs.
        expected: usize,
    },
    /// A compressed buffer whose declared size is impossible, or too large to decompress.
    #[error("compressed buffer {buffer} declares {declared} uncompressed bytes{}", if *over_limit { "; a message may not decompress to more than --max-message-size" } else { "" })]
    CompressedSize {
        /// The buffer's position.
        buffer: usize,
        /// The size it declares.
        declared: i64,
        /// Whether it is refused for the limit rather than for being malformed.
        over_limit: bool,
    },
    /// An LZ4 compressed buffer that decompresses to more bytes than it declares.
    #[error(
        "compressed buffer {buffer} declares {declared} uncompressed bytes but decompresses to \
         more"
    )]
    CompressedOverrun {
        /// The buffer's position.
        buffer: usize,
        /// The size it declares.
        declared: i64,
    },
    /// A value outside the range its type allows (a decimal beyond its precision, a time of
    /// day, a date in milliseconds).
    #[error("{data_type} value {value} at row {row} is out of range: {rule}")]
    ValueOutOfRange {
        /// The column's type.
        data_type: DataType,
        /// The value.
        value: i64,
        /// Its row.
        row: usize,
        /// What the type allows.
        rule: &'static str,
    },
    /// A dense union offset below an earlier offset of the same child.
    #[error("dense union offset {offset} at row {row} goes back from {previous} for its type id")]
    UnionOffsetBack {
        /// The row.
        row: usize,
        /// Its offset.
        offset: i32,
        /// The child's offset before it.
        previous: i32,
    },
}
