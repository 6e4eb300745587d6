//! Arrow IPC message headers built or rebuilt by hand, for uploads no Arrow writer produces:
//! the regression corpus of the validator and the fuzzer's structure-aware mutations.

use arrow::datatypes::Schema;
use arrow::ipc::{self, MetadataVersion};
use arrow_flight::FlightData;
use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use flightcache::protocol::encode::FlightEncoder;

/// The fields of a record batch message's header, to change and encode again.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchHeader {
    /// The message's metadata version.
    pub version: MetadataVersion,
    /// The message's declared body length.
    pub body_length: i64,
    /// The batch's row count.
    pub length: i64,
    /// Each field node's (length, null count), depth first.
    pub nodes: Vec<(i64, i64)>,
    /// Each buffer's (offset, length) in the body.
    pub buffers: Vec<(i64, i64)>,
    /// The body's compression codec, if any.
    pub compression: Option<ipc::CompressionType>,
    /// The buffer counts of view columns.
    pub variadic_counts: Vec<i64>,
}

impl BatchHeader {
    /// Read the header of a record batch message.
    pub fn parse(header: &[u8]) -> Self {
        Self::try_parse(header).expect("a record batch message")
    }

    /// Read the header of a record batch message; `None` for anything else.
    pub fn try_parse(header: &[u8]) -> Option<Self> {
        let message = ipc::root_as_message(header).ok()?;
        let batch = message.header_as_record_batch()?;
        Some(Self {
            version: message.version(),
            body_length: message.bodyLength(),
            length: batch.length(),
            nodes: batch
                .nodes()
                .map(|nodes| nodes.iter().map(|n| (n.length(), n.null_count())).collect())
                .unwrap_or_default(),
            buffers: batch
                .buffers()
                .map(|buffers| buffers.iter().map(|b| (b.offset(), b.length())).collect())
                .unwrap_or_default(),
            compression: batch.compression().map(|c| c.codec()),
            variadic_counts: batch
                .variadicBufferCounts()
                .map(|counts| counts.iter().collect())
                .unwrap_or_default(),
        })
    }

    /// Encode the header again, with whatever was changed.
    pub fn encode(&self) -> Bytes {
        let mut fbb = FlatBufferBuilder::new();
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|&(length, nulls)| ipc::FieldNode::new(length, nulls))
            .collect();
        let buffers: Vec<_> = self
            .buffers
            .iter()
            .map(|&(offset, length)| ipc::Buffer::new(offset, length))
            .collect();
        let nodes = fbb.create_vector(&nodes);
        let buffers = fbb.create_vector(&buffers);
        let variadic =
            (!self.variadic_counts.is_empty()).then(|| fbb.create_vector(&self.variadic_counts));
        let compression = self.compression.map(|codec| {
            let mut compression = ipc::BodyCompressionBuilder::new(&mut fbb);
            compression.add_codec(codec);
            compression.finish()
        });
        let mut batch = ipc::RecordBatchBuilder::new(&mut fbb);
        batch.add_length(self.length);
        batch.add_nodes(nodes);
        batch.add_buffers(buffers);
        if let Some(compression) = compression {
            batch.add_compression(compression);
        }
        if let Some(variadic) = variadic {
            batch.add_variadicBufferCounts(variadic);
        }
        let batch = batch.finish().as_union_value();
        finish_message(
            fbb,
            self.version,
            ipc::MessageHeader::RecordBatch,
            batch,
            self.body_length,
        )
    }
}

/// Wrap `header` into a finished `Message` of `version`.
fn finish_message(
    mut fbb: FlatBufferBuilder<'_>,
    version: MetadataVersion,
    header_type: ipc::MessageHeader,
    header: WIPOffset<UnionWIPOffset>,
    body_length: i64,
) -> Bytes {
    let mut message = ipc::MessageBuilder::new(&mut fbb);
    message.add_version(version);
    message.add_header_type(header_type);
    message.add_header(header);
    message.add_bodyLength(body_length);
    let message = message.finish();
    fbb.finish(message, None);
    Bytes::copy_from_slice(fbb.finished_data())
}

/// A schema message for `schema`, as arrow-rs writes it, but of metadata `version`.
pub fn schema_message(schema: &Schema, version: MetadataVersion) -> Bytes {
    let mut fbb = FlatBufferBuilder::new();
    let schema = ipc::convert::IpcSchemaEncoder::new().schema_to_fb_offset(&mut fbb, schema);
    finish_message(
        fbb,
        version,
        ipc::MessageHeader::Schema,
        schema.as_union_value(),
        0,
    )
}

/// A schema message of one nullable column `x` whose type `build_type` adds, of `endianness`.
pub fn one_column_schema(
    endianness: ipc::Endianness,
    type_type: ipc::Type,
    build_type: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset>,
) -> Bytes {
    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("x");
    let type_ = build_type(&mut fbb);
    let mut field = ipc::FieldBuilder::new(&mut fbb);
    field.add_name(name);
    field.add_nullable(true);
    field.add_type_type(type_type);
    field.add_type_(type_);
    let field = field.finish();
    let fields = fbb.create_vector(&[field]);
    let mut schema = ipc::SchemaBuilder::new(&mut fbb);
    schema.add_endianness(endianness);
    schema.add_fields(fields);
    let schema = schema.finish().as_union_value();
    finish_message(
        fbb,
        MetadataVersion::V5,
        ipc::MessageHeader::Schema,
        schema,
        0,
    )
}

/// The `Int` type table of a 64-bit signed integer.
pub fn int64_type(fbb: &mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset> {
    let mut int = ipc::IntBuilder::new(fbb);
    int.add_bitWidth(64);
    int.add_is_signed(true);
    int.finish().as_union_value()
}

/// The `Decimal` type table of a 128-bit decimal of `precision` and `scale`.
pub fn decimal128_type(
    precision: i32,
    scale: i32,
) -> impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset> {
    move |fbb| {
        let mut decimal = ipc::DecimalBuilder::new(fbb);
        decimal.add_precision(precision);
        decimal.add_scale(scale);
        decimal.add_bitWidth(128);
        decimal.finish().as_union_value()
    }
}

/// A schema message of one nullable sparse union column `u` of two `Int64` children, whose
/// type ids are `type_ids`, however Arrow may think of them.
pub fn union_schema(type_ids: &[i32]) -> Bytes {
    let mut fbb = FlatBufferBuilder::new();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let name = fbb.create_string(name);
            let int = int64_type(&mut fbb);
            let mut child = ipc::FieldBuilder::new(&mut fbb);
            child.add_name(name);
            child.add_nullable(true);
            child.add_type_type(ipc::Type::Int);
            child.add_type_(int);
            child.finish()
        })
        .collect();
    let children = fbb.create_vector(&children);
    let ids = fbb.create_vector(type_ids);
    let mut union = ipc::UnionBuilder::new(&mut fbb);
    union.add_mode(ipc::UnionMode::Sparse);
    union.add_typeIds(ids);
    let union = union.finish().as_union_value();
    let name = fbb.create_string("u");
    let mut field = ipc::FieldBuilder::new(&mut fbb);
    field.add_name(name);
    field.add_nullable(true);
    field.add_type_type(ipc::Type::Union);
    field.add_type_(union);
    field.add_children(children);
    let field = field.finish();
    let fields = fbb.create_vector(&[field]);
    let mut schema = ipc::SchemaBuilder::new(&mut fbb);
    schema.add_fields(fields);
    let schema = schema.finish().as_union_value();
    finish_message(
        fbb,
        MetadataVersion::V5,
        ipc::MessageHeader::Schema,
        schema,
        0,
    )
}

/// The messages arrow-rs writes for `batches`, under `descriptor`: the schema, then each
/// batch (its dictionaries first) in one message.
pub fn encode(
    descriptor: arrow_flight::FlightDescriptor,
    batches: &[arrow::array::RecordBatch],
) -> Vec<FlightData> {
    let mut encoder = FlightEncoder::new(usize::MAX);
    let mut messages = vec![encoder.encode_schema(&batches[0].schema(), Some(descriptor))];
    for batch in batches {
        messages.extend(encoder.encode_batch(batch).expect("the batch encodes"));
    }
    messages
}
