//! Canonical extension types, checked as Arrow C++ checks them when it reads a schema.
//!
//! Arrow C++ (and so pyarrow) parses the metadata of each canonical extension type it knows
//! as it reads a schema, and refuses the whole stream when that fails; a type it does not know
//! is read as its storage, whatever its metadata. So a cache checks exactly what C++ checks,
//! no more. arrow-rs's own parsers disagree with C++ (arrow-rs 60: `FixedShapeTensorMetadata`
//! reads and writes a `permutations` key where the specification and C++ use `permutation`,
//! so it refuses every tensor pyarrow writes with `dim_names` or a permutation; its
//! `arrow.json` refuses metadata C++ ignores), and where they disagree C++ wins: a table
//! pyarrow writes and reads back must never be refused. See docs/protocol.md. The rules below are Arrow C++ 26's, as pyarrow
//! 26 reads them.

use arrow::datatypes::{DataType, Field};
use serde_json::Value;

/// Why a canonical extension type would not be read: its message.
pub type Reason = String;

/// The field metadata key naming an extension type.
const NAME_KEY: &str = "ARROW:extension:name";
/// The field metadata key holding an extension type's parameters.
const METADATA_KEY: &str = "ARROW:extension:metadata";

/// Check `field`'s extension type if it is a canonical one: the name and the reason Arrow C++
/// would refuse to read it.
pub fn check(field: &Field) -> Result<(), (String, Reason)> {
    let Some(name) = field.metadata().get(NAME_KEY) else {
        return Ok(());
    };
    // Arrow C++ reads an absent metadata entry as empty.
    let metadata = field
        .metadata()
        .get(METADATA_KEY)
        .map_or("", String::as_str);
    let storage = field.data_type();
    let result = match name.as_str() {
        "arrow.fixed_shape_tensor" => fixed_shape_tensor(storage, metadata),
        "arrow.variable_shape_tensor" => variable_shape_tensor(storage, metadata),
        "arrow.json" => json(storage),
        "arrow.uuid" => parameterless(storage, &DataType::FixedSizeBinary(16), metadata),
        "arrow.bool8" => parameterless(storage, &DataType::Int8, metadata),
        "arrow.opaque" => opaque(metadata),
        _ => Ok(()),
    };
    result.map_err(|reason| (name.clone(), reason))
}

/// A type without parameters over one storage type: `arrow.uuid`, `arrow.bool8`.
fn parameterless(storage: &DataType, expected: &DataType, metadata: &str) -> Result<(), Reason> {
    if storage != expected {
        return Err(format!("its storage must be {expected}, not {storage}"));
    }
    if !metadata.is_empty() {
        return Err(format!(
            "it has no parameters, but its metadata is {metadata:?}"
        ));
    }
    Ok(())
}

/// `arrow.json`: UTF-8 storage of any layout; C++ ignores its metadata.
fn json(storage: &DataType) -> Result<(), Reason> {
    match storage {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        other => Err(format!("its storage must be a string type, not {other}")),
    }
}

/// `arrow.opaque`: any storage; metadata a JSON object with string `type_name` and
/// `vendor_name`.
fn opaque(metadata: &str) -> Result<(), Reason> {
    let object = Parameters::parse(metadata, &["type_name", "vendor_name"])?;
    for key in ["type_name", "vendor_name"] {
        match object.get(key) {
            Some(Value::String(_)) => {}
            Some(_) => return Err(format!("`{key}` must be a string")),
            None => return Err(format!("its metadata has no `{key}`")),
        }
    }
    Ok(())
}

/// `arrow.fixed_shape_tensor`: a fixed-size list whose size is the product of `shape`, with
/// an optional `permutation` and `dim_names` of one entry per dimension.
fn fixed_shape_tensor(storage: &DataType, metadata: &str) -> Result<(), Reason> {
    let DataType::FixedSizeList(_, list_size) = storage else {
        return Err(format!(
            "its storage must be a fixed-size list, not {storage}"
        ));
    };
    let parameters = Parameters::parse(metadata, &["shape", "permutation", "dim_names"])?;
    let shape = match parameters.get("shape") {
        Some(shape) => integers(shape, "shape")?,
        None => return Err("its metadata has no `shape`".into()),
    };
    if let Some(dimension) = shape.iter().find(|&&d| d < 0) {
        return Err(format!(
            "shape must have non-negative values, got {dimension}"
        ));
    }
    dimensions(&parameters, shape.len())?;
    let product = shape
        .iter()
        .try_fold(1i64, |product, &d| product.checked_mul(d))
        .ok_or("the product of its shape does not fit in 64 bits")?;
    if product != i64::from(*list_size) {
        return Err(format!(
            "the product of its shape ({product}) is not its list size ({list_size})"
        ));
    }
    Ok(())
}

/// `arrow.variable_shape_tensor`: a struct of a list of fixed-width values and a fixed-size
/// list of `ndim` int32 sizes, with optional `permutation`, `dim_names` and `uniform_shape`
/// of one entry per dimension.
fn variable_shape_tensor(storage: &DataType, metadata: &str) -> Result<(), Reason> {
    let DataType::Struct(fields) = storage else {
        return Err(format!("its storage must be a struct, not {storage}"));
    };
    let [data, shape] = fields.iter().collect::<Vec<_>>()[..] else {
        return Err(format!(
            "its storage must be a struct of 2 fields, not {}",
            fields.len()
        ));
    };
    let DataType::List(values) = data.data_type() else {
        return Err(format!(
            "its first field must be a list, not {}",
            data.data_type()
        ));
    };
    if !is_fixed_width(values.data_type()) {
        return Err(format!(
            "its values must be of a fixed width, not {}",
            values.data_type()
        ));
    }
    let ndim = match shape.data_type() {
        DataType::FixedSizeList(sizes, ndim) if sizes.data_type() == &DataType::Int32 => *ndim,
        other => {
            return Err(format!(
                "its second field must be a fixed-size list of int32, not {other}"
            ));
        }
    };
    let ndim = usize::try_from(ndim).map_err(|_| "its shape has a negative size".to_string())?;
    let parameters = Parameters::parse(metadata, &["permutation", "dim_names", "uniform_shape"])?;
    dimensions(&parameters, ndim)?;
    if let Some(uniform) = parameters.get("uniform_shape") {
        let Value::Array(sizes) = uniform else {
            return Err("`uniform_shape` must be an array".into());
        };
        if sizes.len() != ndim {
            return Err(format!(
                "`uniform_shape` has {} entries for {ndim} dimensions",
                sizes.len()
            ));
        }
        for size in sizes {
            match size {
                Value::Null => {}
                size => match size.as_i64() {
                    Some(size) if size >= 0 => {}
                    _ => {
                        return Err(
                            "`uniform_shape` must hold non-negative integers or nulls".into()
                        );
                    }
                },
            }
        }
    }
    Ok(())
}

/// The checks both tensor types make of `permutation` and `dim_names`, each optional and, when
/// present, of one entry per dimension.
fn dimensions(parameters: &Parameters, ndim: usize) -> Result<(), Reason> {
    if let Some(permutation) = parameters.get("permutation") {
        let permutation = integers(permutation, "permutation")?;
        if permutation.len() != ndim {
            return Err(format!(
                "its permutation has {} entries for {ndim} dimensions",
                permutation.len()
            ));
        }
        let mut seen = vec![false; ndim];
        for &index in &permutation {
            let fresh = usize::try_from(index)
                .ok()
                .and_then(|i| seen.get_mut(i))
                .is_some_and(|seen| !std::mem::replace(seen, true));
            if !fresh {
                return Err(format!(
                    "its permutation {permutation:?} is not one of 0..{ndim}, each once"
                ));
            }
        }
    }
    if let Some(names) = parameters.get("dim_names") {
        let Value::Array(names) = names else {
            return Err("`dim_names` must be an array".into());
        };
        if !names.iter().all(Value::is_string) {
            return Err("`dim_names` must hold strings".into());
        }
        if names.len() != ndim {
            return Err(format!(
                "it has {} dim_names for {ndim} dimensions",
                names.len()
            ));
        }
    }
    Ok(())
}

/// A JSON array of 64-bit integers (not floats, as C++ reads them).
fn integers(value: &Value, what: &str) -> Result<Vec<i64>, Reason> {
    let Value::Array(values) = value else {
        return Err(format!("`{what}` must be an array"));
    };
    values
        .iter()
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| format!("`{what}` must hold integers"))
        })
        .collect()
}

/// Whether C++ stores values of `data_type` at a fixed width (what a tensor can view).
fn is_fixed_width(data_type: &DataType) -> bool {
    data_type.is_primitive()
        || matches!(data_type, DataType::Boolean | DataType::FixedSizeBinary(_))
}

/// The parameters an extension type's JSON metadata holds: of each key asked for, its first
/// occurrence, as Arrow C++'s parser finds it; other keys are ignored.
struct Parameters(Vec<(String, Value)>);

impl Parameters {
    /// Parse `metadata`, which must be one JSON object.
    fn parse(metadata: &str, wanted: &[&str]) -> Result<Self, Reason> {
        let object: Vec<(String, Value)> = serde_json::from_str::<FirstEntries>(metadata)
            .map_err(|e| format!("its metadata is not a JSON object ({e})"))?
            .0;
        Ok(Self(
            object
                .into_iter()
                .filter(|(key, _)| wanted.contains(&key.as_str()))
                .collect(),
        ))
    }

    /// The first value of `key`.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A JSON object's entries in order, repeated keys kept (`serde_json::Map` keeps the last).
struct FirstEntries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for FirstEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = FirstEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FirstEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(FirstEntries(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;

    fn field(name: &str, storage: DataType, metadata: Option<&str>) -> Field {
        let mut entries = HashMap::from([(NAME_KEY.to_string(), name.to_string())]);
        if let Some(metadata) = metadata {
            entries.insert(METADATA_KEY.to_string(), metadata.to_string());
        }
        Field::new("v", storage, true).with_metadata(entries)
    }

    fn tensor(list_size: i32, metadata: &str) -> Result<(), (String, Reason)> {
        let item = Arc::new(Field::new_list_field(DataType::Float32, true));
        check(&field(
            "arrow.fixed_shape_tensor",
            DataType::FixedSizeList(item, list_size),
            Some(metadata),
        ))
    }

    /// Each case was read by pyarrow 26 as this test expects (issue 18).
    #[test]
    fn fixed_shape_tensors_are_read_as_arrow_cpp_reads_them() {
        for (size, metadata) in [
            (8, r#"{"shape":[2,4]}"#),
            (8, r#"{"shape":[2,4],"permutation":[1,0]}"#),
            (8, r#"{"shape":[2,4],"permutations":[1,0]}"#), // an unknown key is ignored
            (8, r#"{"shape":[2,4],"dim_names":["a","b"],"extra":1}"#),
            (8, r#" {"shape":[8]} "#),
            (1, r#"{"shape":[]}"#),
            (0, r#"{"shape":[2,0]}"#),
            (2, r#"{"shape":[2],"shape":[3]}"#), // the first wins
            (8, r#"{"shape":[1,8],"dim_names":["a","a"]}"#),
        ] {
            assert_eq!(tensor(size, metadata), Ok(()), "{metadata}");
        }
        for (size, metadata) in [
            (6, r#"{"shape":[2,4]}"#),
            (8, r#"{"shape":[2,4],"permutation":[0,0]}"#),
            (8, r#"{"shape":[2,4],"permutation":[0,5]}"#),
            (8, r#"{"shape":[2,4],"permutation":[]}"#),
            (8, r#"{"shape":[2,4],"dim_names":["a"]}"#),
            (8, r#"{"shape":[2,4],"dim_names":[1,2]}"#),
            (2, r#"{"shape":[2],"dim_names":[]}"#),
            (2, r#"{"shape":[2.0]}"#),
            (2, r#"{"shape":[2e0]}"#),
            (2, r#"{"shape":"x"}"#),
            (0, r#"{"shape":[9223372036854775808]}"#),
            (0, r#"{"shape":[4294967296,4294967296]}"#),
            (4, r#"{"shape":[-2,-2]}"#),
            (2, "{\"shape\":[2]}\u{0}"),
            (2, "{}"),
            (2, "[1]"),
            (2, ""),
            (2, "garbage"),
        ] {
            assert!(tensor(size, metadata).is_err(), "{metadata}");
        }
        let list = DataType::new_list(DataType::Float32, true);
        assert!(
            check(&field(
                "arrow.fixed_shape_tensor",
                list,
                Some(r#"{"shape":[1]}"#)
            ))
            .is_err()
        );
    }

    #[test]
    fn parameterless_types_need_their_storage_and_no_metadata() {
        assert!(check(&field("arrow.uuid", DataType::FixedSizeBinary(16), None)).is_ok());
        assert!(
            check(&field(
                "arrow.uuid",
                DataType::FixedSizeBinary(16),
                Some("")
            ))
            .is_ok()
        );
        assert!(
            check(&field(
                "arrow.uuid",
                DataType::FixedSizeBinary(16),
                Some("x")
            ))
            .is_err()
        );
        assert!(check(&field("arrow.uuid", DataType::FixedSizeBinary(8), None)).is_err());
        assert!(check(&field("arrow.bool8", DataType::Int8, Some(""))).is_ok());
        assert!(check(&field("arrow.bool8", DataType::Int16, Some(""))).is_err());
        assert!(check(&field("arrow.bool8", DataType::Int8, Some("x"))).is_err());
    }

    #[test]
    fn json_takes_any_metadata_over_strings_and_opaque_needs_its_names() {
        for storage in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            for metadata in ["", "{}", "x", r#"{"a":1}"#] {
                assert!(check(&field("arrow.json", storage.clone(), Some(metadata))).is_ok());
            }
        }
        assert!(check(&field("arrow.json", DataType::Binary, None)).is_err());
        let opaque = |metadata| check(&field("arrow.opaque", DataType::Int32, Some(metadata)));
        assert!(opaque(r#"{"type_name":"a","vendor_name":"b","x":2}"#).is_ok());
        for bad in [
            "",
            "x",
            r#"{"type_name":"a"}"#,
            r#"{"type_name":1,"vendor_name":"b"}"#,
        ] {
            assert!(opaque(bad).is_err(), "{bad}");
        }
        // Types Arrow C++ does not know are read as their storage, whatever their metadata.
        assert!(check(&field("example.label", DataType::Int32, Some("garbage"))).is_ok());
    }

    #[test]
    fn variable_shape_tensors_are_a_list_of_values_and_their_shape() {
        let storage = |data: DataType, shape: DataType| {
            DataType::Struct(
                vec![
                    Field::new("data", data, true),
                    Field::new("shape", shape, true),
                ]
                .into(),
            )
        };
        let sizes =
            |n| DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Int32, true)), n);
        let good = storage(DataType::new_list(DataType::Int8, true), sizes(2));
        let check_with = |storage: &DataType, metadata| {
            check(&field(
                "arrow.variable_shape_tensor",
                storage.clone(),
                Some(metadata),
            ))
        };
        for metadata in [
            "{}",
            r#"{"permutation":[1,0]}"#,
            r#"{"dim_names":["a","b"]}"#,
            r#"{"uniform_shape":[null,2]}"#,
        ] {
            assert_eq!(check_with(&good, metadata), Ok(()), "{metadata}");
        }
        for metadata in [
            "",
            "[]",
            r#"{"permutation":[1]}"#,
            r#"{"permutation":[]}"#,
            r#"{"uniform_shape":[null,-2]}"#,
            r#"{"uniform_shape":[1.5,2]}"#,
        ] {
            assert!(check_with(&good, metadata).is_err(), "{metadata}");
        }
        for bad in [
            storage(DataType::new_large_list(DataType::Int8, true), sizes(2)),
            storage(DataType::new_list(DataType::Utf8, true), sizes(2)),
            storage(
                DataType::new_list(DataType::Int8, true),
                DataType::new_list(DataType::Int32, true),
            ),
        ] {
            assert!(check_with(&bad, "{}").is_err(), "{bad}");
        }
    }
}
