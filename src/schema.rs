//! The shape of a workflow's entity, from a JSON Schema or a sample entity.
//!
//! A workflow names it with the setting `entity schema "FILE"` (relative to
//! the workflow), or the command line gives it with `--entity-schema`. The
//! checker uses it to report unknown `entity.` paths and values that cannot
//! fit where they are used. The language server uses it for completion and
//! hover.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{File, Item, PathKey};

/// The type of a value in the entity.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Object(Vec<(String, Shape)>),
    Array(Box<Shape>),
    String,
    Number,
    Integer,
    Boolean,
    Null,
    /// Anything: an object without declared properties, a union, or a type
    /// the schema does not give.
    Any,
}

/// One value of the entity: its type, an example and a description.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub ty: Type,
    pub example: Option<Value>,
    pub description: Option<String>,
}

impl Shape {
    fn any() -> Shape {
        Shape {
            ty: Type::Any,
            example: None,
            description: None,
        }
    }

    /// Names the type as JSON Schema does.
    pub fn type_name(&self) -> &'static str {
        match self.ty {
            Type::Object(_) => "object",
            Type::Array(_) => "array",
            Type::String => "string",
            Type::Number => "number",
            Type::Integer => "integer",
            Type::Boolean => "boolean",
            Type::Null => "null",
            Type::Any => "any",
        }
    }

    /// Returns the declared fields of an object.
    pub fn fields(&self) -> &[(String, Shape)] {
        match &self.ty {
            Type::Object(fields) => fields,
            _ => &[],
        }
    }
}

/// The result of following a path.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    Found(&'a Shape),
    /// The key at `index` is not a field of the object before it.
    Unknown {
        index: usize,
        parent: &'a Shape,
    },
    /// The path goes through a value of unknown shape.
    Opaque,
}

/// The largest entity schema file read: 16 MiB, far above any real schema,
/// so that a huge file cannot exhaust memory in the checker or the
/// language server.
pub const MAX_SCHEMA_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct EntitySchema {
    pub root: Shape,
    /// The file it was read from.
    pub source: PathBuf,
}

impl EntitySchema {
    /// Reads a JSON Schema or a sample entity. A document with `$schema`,
    /// or a `type` of `object` beside `properties`, is a JSON Schema;
    /// any other object is a sample.
    pub fn from_json(value: &Value, source: PathBuf) -> EntitySchema {
        let is_schema = value.get("$schema").is_some()
            || (value.get("type").is_some() && value.get("properties").is_some());
        let root = if is_schema {
            from_schema(value, value, 0)
        } else {
            from_sample(value)
        };
        EntitySchema { root, source }
    }

    /// Reads a schema file: a regular file of at most [`MAX_SCHEMA_BYTES`].
    pub fn load(path: &Path) -> Result<EntitySchema, String> {
        let bytes = crate::input::read_regular_file(path, Some(MAX_SCHEMA_BYTES))
            .map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("`{}` is not valid UTF-8 text", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|error| format!("`{}` is not valid JSON: {error}", path.display()))?;
        if !value.is_object() {
            return Err(format!("`{}` does not contain a JSON object", path.display()));
        }
        Ok(EntitySchema::from_json(&value, path.to_path_buf()))
    }

    /// Follows `keys` from the entity's root.
    pub fn lookup(&self, keys: &[PathKey]) -> Lookup<'_> {
        let mut shape = &self.root;
        for (index, key) in keys.iter().enumerate() {
            shape = match (&shape.ty, key) {
                (Type::Object(fields), PathKey::Field(name)) => {
                    match fields.iter().find(|(field, _)| field == name) {
                        Some((_, next)) => next,
                        None => return Lookup::Unknown { index, parent: shape },
                    }
                }
                (Type::Array(item), PathKey::Index(_)) => item,
                (Type::Any, _) => return Lookup::Opaque,
                _ => return Lookup::Unknown { index, parent: shape },
            };
        }
        Lookup::Found(shape)
    }
}

const MAX_DEPTH: usize = 32;

fn from_schema(schema: &Value, root: &Value, depth: usize) -> Shape {
    if depth > MAX_DEPTH {
        return Shape::any();
    }
    let schema = resolve_ref(schema, root);
    let example = schema
        .get("examples")
        .and_then(|examples| examples.get(0))
        .or_else(|| schema.get("example"))
        .or_else(|| schema.get("default"))
        .or_else(|| schema.get("const"))
        .cloned();
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let type_name = match schema.get("type") {
        Some(Value::String(name)) => Some(name.as_str()),
        // `["string", "null"]` is a nullable string.
        Some(Value::Array(names)) => {
            let named: Vec<&str> = names
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| *name != "null")
                .collect();
            if named.len() == 1 {
                Some(named[0])
            } else {
                None
            }
        }
        _ if schema.get("properties").is_some() => Some("object"),
        _ => None,
    };
    let ty = match type_name {
        Some("object") => match schema.get("properties").and_then(Value::as_object) {
            Some(properties) if !properties.is_empty() => Type::Object(
                properties
                    .iter()
                    .map(|(name, property)| (name.clone(), from_schema(property, root, depth + 1)))
                    .collect(),
            ),
            _ => Type::Any,
        },
        Some("array") => Type::Array(Box::new(
            schema
                .get("items")
                .map_or_else(Shape::any, |items| from_schema(items, root, depth + 1)),
        )),
        Some("string") => Type::String,
        Some("number") => Type::Number,
        Some("integer") => Type::Integer,
        Some("boolean") => Type::Boolean,
        Some("null") => Type::Null,
        _ => Type::Any,
    };
    Shape {
        ty,
        example,
        description,
    }
}

/// Follows a local `$ref` such as `#/$defs/Address`.
fn resolve_ref<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..MAX_DEPTH {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return current;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return current;
        };
        match root.pointer(pointer) {
            Some(target) => current = target,
            None => return current,
        }
    }
    current
}

fn from_sample(value: &Value) -> Shape {
    let ty = match value {
        Value::Object(map) => Type::Object(
            map.iter()
                .map(|(name, field)| (name.clone(), from_sample(field)))
                .collect(),
        ),
        Value::Array(items) => Type::Array(Box::new(items.first().map_or_else(Shape::any, from_sample))),
        Value::String(_) => Type::String,
        Value::Number(number) if number.is_i64() || number.is_u64() => Type::Integer,
        Value::Number(_) => Type::Number,
        Value::Bool(_) => Type::Boolean,
        // A null in a sample gives no type for the field.
        Value::Null => Type::Any,
    };
    let example = match value {
        Value::Object(_) | Value::Array(_) | Value::Null => None,
        other => Some(other.clone()),
    };
    Shape {
        ty,
        example,
        description: None,
    }
}

/// Splits `a.b[0].c` into its root and keys.
pub fn split_path(path: &str) -> (String, Vec<PathKey>) {
    let mut root = None;
    let mut keys = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let name = pieces.next().unwrap_or("");
        if root.is_none() {
            root = Some(name.to_string());
        } else if !name.is_empty() {
            keys.push(PathKey::Field(name.to_string()));
        }
        for piece in pieces {
            if let Ok(index) = piece.trim_end_matches(']').parse() {
                keys.push(PathKey::Index(index));
            }
        }
    }
    (root.unwrap_or_default(), keys)
}

/// Finds the `entity schema "FILE"` setting of a workflow: the path as
/// written and the span of the string.
pub fn setting(file: &File) -> Option<(String, Span)> {
    file.items.iter().find_map(|item| match item {
        Item::Setting(setting) if setting.name.text == "entity" => {
            let path = setting.args.get(1)?;
            (setting.args.first()?.text == "schema").then(|| (path.text.clone(), path.span))
        }
        _ => None,
    })
}

/// Loads the schema of a workflow: the one its `entity schema` line names,
/// relative to the workflow's folder, else `fallback`. Returns it with the
/// diagnostic of a schema that cannot be read.
pub fn for_workflow(
    file: &File,
    workflow: &Path,
    fallback: Option<&Path>,
) -> (Option<EntitySchema>, Option<Diagnostic>) {
    let folder = workflow
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (path, span) = match setting(file) {
        Some((written, span)) => (folder.join(written), Some(span)),
        None => match fallback {
            Some(path) => (path.to_path_buf(), None),
            None => return (None, None),
        },
    };
    match EntitySchema::load(&path) {
        Ok(schema) => (Some(schema), None),
        Err(message) => {
            let mut diagnostic = Diagnostic::error(
                Code::InvalidEntitySchema,
                format!("invalid entity schema: {message}"),
            )
            .with_help("name a JSON Schema file or a sample entity JSON file, relative to the workflow");
            if let Some(span) = span {
                diagnostic = diagnostic.with_label(span, "this entity schema");
            }
            (None, Some(diagnostic))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(names: &[&str]) -> Vec<PathKey> {
        names
            .iter()
            .map(|name| match name.parse() {
                Ok(index) => PathKey::Index(index),
                Err(_) => PathKey::Field(name.to_string()),
            })
            .collect()
    }

    #[test]
    fn json_schema_gives_types_examples_and_refs() {
        let schema = EntitySchema::from_json(
            &json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "examples": [1200.5]},
                    "policy": {"$ref": "#/$defs/policy"},
                    "tags": {"type": "array", "items": {"type": ["string", "null"]}}
                },
                "$defs": {"policy": {"type": "object", "properties": {"id": {"type": "string", "description": "Policy number"}}}}
            }),
            PathBuf::from("s.json"),
        );
        let Lookup::Found(amount) = schema.lookup(&keys(&["amount"])) else {
            panic!("amount")
        };
        assert_eq!(amount.type_name(), "number");
        assert_eq!(amount.example, Some(json!(1200.5)));
        let Lookup::Found(id) = schema.lookup(&keys(&["policy", "id"])) else {
            panic!("policy.id")
        };
        assert_eq!(id.description.as_deref(), Some("Policy number"));
        let Lookup::Found(tag) = schema.lookup(&keys(&["tags", "0"])) else {
            panic!("tags[0]")
        };
        assert_eq!(tag.type_name(), "string");
        assert!(matches!(
            schema.lookup(&keys(&["policy", "number"])),
            Lookup::Unknown { index: 1, .. }
        ));
    }

    #[test]
    fn sample_entity_gives_types() {
        let schema = EntitySchema::from_json(
            &json!({"id": "C-1", "items": [{"sku": "A"}], "meta": null}),
            PathBuf::new(),
        );
        let Lookup::Found(sku) = schema.lookup(&keys(&["items", "0", "sku"])) else {
            panic!("sku")
        };
        assert_eq!(sku.example, Some(json!("A")));
        assert_eq!(schema.lookup(&keys(&["meta", "x"])), Lookup::Opaque);
        assert!(matches!(
            schema.lookup(&keys(&["idd"])),
            Lookup::Unknown { index: 0, .. }
        ));
    }
}
