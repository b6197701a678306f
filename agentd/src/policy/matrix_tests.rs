//! The promise matrix (`docs/enforcement.md`) against the schema: every key
//! a policy can have has a row, every row names a real key or guarantee,
//! and every test the matrix names exists.
//!
//! The keys come from the `Raw*` structs themselves: they are deserialized
//! from a [`Walker`], a deserializer that answers every request with a
//! placeholder and records the field names each struct asks for, so a field
//! added to a `Raw*` struct shows up here without anyone listing it.
use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use serde::{
    Deserialize,
    de::{
        self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess,
        Visitor,
        value::{BorrowedStrDeserializer, MapDeserializer, SeqDeserializer},
    },
};

use super::schema::RawPolicy;

/// The matrix, as committed.
const MATRIX: &str = include_str!("../../../docs/enforcement.md");

/// The numbered guarantees of SPEC.md ("What a session guarantees").
const GUARANTEES: u32 = 11;

/// First cells of the matrix's header rows.
const HEADERS: &[&str] = &["key", "guarantee"];

/// The struct name `toml::Spanned` deserializes through: a wrapper around
/// a value, not a table of the policy.
const SPANNED: &str = "$__serde_spanned_private_Spanned";

/// What a map's entries stand for in a key (`secrets.<name>.file`).
const MAP_ENTRY: &str = "<name>";

/// A walk that failed, with the deepest key whose value failed.
#[derive(Debug)]
struct WalkError {
    message: String,
    path: Option<String>,
}

impl WalkError {
    /// Attributes the error to `path` unless a deeper key already has it.
    fn at(mut self, path: &str) -> Self {
        self.path.get_or_insert_with(|| path.to_owned());
        self
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "`{p}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for WalkError {}

impl de::Error for WalkError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            message: msg.to_string(),
            path: None,
        }
    }
}

/// What a walker answers at a key whose value refused the usual
/// placeholders (a hand-written `Deserialize`), in the order tried: the
/// key is recorded and the walk stops there.
#[derive(Clone, Copy, Debug)]
enum Fallback {
    Str,
    Int,
    Bool,
    Unit,
    EmptyMap,
    EmptySeq,
}

const FALLBACKS: [Fallback; 6] = [
    Fallback::Str,
    Fallback::Int,
    Fallback::Bool,
    Fallback::Unit,
    Fallback::EmptyMap,
    Fallback::EmptySeq,
];

fn visit_fallback<'de, V: Visitor<'de>>(f: Fallback, visitor: V) -> Result<V::Value, WalkError> {
    match f {
        Fallback::Str => visitor.visit_str(""),
        Fallback::Int => visitor.visit_i64(0),
        Fallback::Bool => visitor.visit_bool(false),
        Fallback::Unit => visitor.visit_unit(),
        Fallback::EmptyMap => visitor.visit_map(MapDeserializer::<_, WalkError>::new(
            std::iter::empty::<((), ())>(),
        )),
        Fallback::EmptySeq => visitor.visit_seq(SeqDeserializer::<_, WalkError>::new(
            std::iter::empty::<()>(),
        )),
    }
}

/// Shared by every walker of one walk.
#[derive(Clone, Copy, Debug)]
struct Walk<'a> {
    /// Every key seen, dotted.
    keys: &'a RefCell<BTreeSet<String>>,
    /// Keys answered with a [`Fallback`] (index into [`FALLBACKS`]).
    fallbacks: &'a BTreeMap<String, usize>,
}

/// Deserializes the value at one key.
#[derive(Debug)]
struct Walker<'a> {
    walk: Walk<'a>,
    path: String,
}

impl<'a> Walker<'a> {
    fn at(&self, path: String) -> Self {
        Walker {
            walk: self.walk,
            path,
        }
    }

    fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn fallback(&self) -> Option<Fallback> {
        self.walk
            .fallbacks
            .get(&self.path)
            .and_then(|i| FALLBACKS.get(*i).copied())
    }
}

macro_rules! placeholders {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
                match self.fallback() {
                    Some(f) => visit_fallback(f, visitor),
                    None => visitor.$visit($($value)?),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = WalkError;

    placeholders! {
        deserialize_any => visit_str(""),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_i128 => visit_i128(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_u128 => visit_u128(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('x'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        match self.fallback() {
            Some(f) => visit_fallback(f, visitor),
            None => visitor.visit_some(self),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        match self.fallback() {
            Some(f) => visit_fallback(f, visitor),
            None => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.deserialize_tuple(1, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        match self.fallback() {
            Some(f) => visit_fallback(f, visitor),
            None => visitor.visit_seq(Elements {
                walker: self,
                left: len,
            }),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        match self.fallback() {
            Some(f) => visit_fallback(f, visitor),
            None => visitor.visit_map(Entries {
                walker: self,
                done: false,
            }),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        if let Some(f) = self.fallback() {
            return visit_fallback(f, visitor);
        }
        let record = name != SPANNED;
        if record {
            let mut keys = self.walk.keys.borrow_mut();
            keys.extend(fields.iter().map(|f| self.child(f)));
        }
        visitor.visit_map(Fields {
            walker: self,
            fields: fields.iter(),
            record,
            current: None,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        if let Some(f) = self.fallback() {
            return visit_fallback(f, visitor);
        }
        let Some(&variant) = variants.first() else {
            return Err(de::Error::custom("an enum without variants"));
        };
        visitor.visit_enum(Variant {
            walker: self,
            variant,
        })
    }
}

/// A struct's fields, each once, with a placeholder value.
struct Fields<'a> {
    walker: Walker<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    /// Whether the fields are policy keys (not `Spanned`'s internals).
    record: bool,
    current: Option<String>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        let Some(&field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = Some(if self.record {
            self.walker.child(field)
        } else {
            self.walker.path.clone()
        });
        seed.deserialize(BorrowedStrDeserializer::<WalkError>::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkError> {
        let path = self
            .current
            .take()
            .unwrap_or_else(|| self.walker.path.clone());
        seed.deserialize(self.walker.at(path.clone()))
            .map_err(|e| e.at(&path))
    }
}

/// A map with one entry, standing for any name.
struct Entries<'a> {
    walker: Walker<'a>,
    done: bool,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let path = self.walker.child(MAP_ENTRY);
        seed.deserialize(self.walker.at(path.clone()))
            .map(Some)
            .map_err(|e| e.at(&path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkError> {
        let path = self.walker.child(MAP_ENTRY);
        seed.deserialize(self.walker.at(path.clone()))
            .map_err(|e| e.at(&path))
    }
}

/// A sequence of `left` placeholders.
struct Elements<'a> {
    walker: Walker<'a>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = WalkError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, WalkError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.walker.at(self.walker.path.clone()))
            .map(Some)
    }
}

/// An enum's first variant.
struct Variant<'a> {
    walker: Walker<'a>,
    variant: &'static str,
}

impl<'de, 'a> EnumAccess<'de> for Variant<'a> {
    type Error = WalkError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), WalkError> {
        let v = seed.deserialize(BorrowedStrDeserializer::<WalkError>::new(self.variant))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_> {
    type Error = WalkError;

    fn unit_variant(self) -> Result<(), WalkError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, WalkError> {
        let path = self.walker.child(self.variant);
        seed.deserialize(self.walker.at(path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, WalkError> {
        let path = self.walker.child(self.variant);
        de::Deserializer::deserialize_tuple(self.walker.at(path), len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        let path = self.walker.child(self.variant);
        de::Deserializer::deserialize_struct(self.walker.at(path), "", fields, visitor)
    }
}

/// Every key `T` accepts, dotted (`limits.memory`, `secrets.<name>.file`),
/// tables included. A key whose value cannot be walked is recorded and the
/// walk stops there.
fn keys_of<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut fallbacks: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let keys = RefCell::new(BTreeSet::new());
        let walker = Walker {
            walk: Walk {
                keys: &keys,
                fallbacks: &fallbacks,
            },
            path: String::new(),
        };
        let err = match T::deserialize(walker) {
            Ok(_) => return keys.into_inner(),
            Err(e) => e,
        };
        let Some(path) = err.path.clone().filter(|p| !p.is_empty()) else {
            panic!("cannot walk the schema: {err}");
        };
        let next = fallbacks.get(&path).map_or(0, |i| i + 1);
        assert!(
            next < FALLBACKS.len(),
            "no placeholder is accepted at {err}"
        );
        fallbacks.insert(path, next);
    }
}

/// The first cell of every table row of the matrix (backticks removed),
/// without separator rows.
fn first_cells(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|rest| rest.split('|').next())
        .map(|cell| cell.trim().trim_matches('`').trim().to_owned())
        .filter(|cell| !cell.chars().all(|c| matches!(c, '-' | ':' | ' ')))
        .collect()
}

/// The guarantee number a row is about (`3. Syscalls` → 3).
fn guarantee_number(cell: &str) -> Option<u32> {
    let (n, _) = cell.split_once('.')?;
    n.trim().parse().ok()
}

/// Every `path/file.rs::function` the matrix names.
fn named_tests(doc: &str) -> Vec<(String, String)> {
    let in_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.');
    let in_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    doc.match_indices(".rs::")
        .map(|(i, sep)| {
            let before = &doc[..i];
            let start = before
                .char_indices()
                .rev()
                .find(|(_, c)| !in_path(*c))
                .map_or(0, |(j, c)| j + c.len_utf8());
            let after = &doc[i + sep.len()..];
            let end = after.find(|c: char| !in_name(c)).unwrap_or(after.len());
            (format!("{}.rs", &doc[start..i]), after[..end].to_owned())
        })
        .collect()
}

#[test]
fn every_schema_key_has_a_row() {
    let keys = keys_of::<RawPolicy>();
    for known in [
        "version",
        "agent",
        "agent.name",
        "filesystem.read",
        "network.allow",
        "exec.allow",
        "limits.memory",
        "secrets",
        "secrets.<name>.file",
        "enforcement.allow_degraded",
    ] {
        assert!(keys.contains(known), "the walk missed {known}: {keys:?}");
    }
    let rows: BTreeSet<String> = first_cells(MATRIX).into_iter().collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !rows.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "policy keys without a row in docs/enforcement.md (say how each is \
         enforced, what happens without the mechanism, and which test attacks it): {missing:?}"
    );
}

#[test]
fn every_row_is_a_schema_key_or_a_guarantee() {
    let keys = keys_of::<RawPolicy>();
    let stale: Vec<String> = first_cells(MATRIX)
        .into_iter()
        .filter(|c| !HEADERS.contains(&c.as_str()))
        .filter(|c| guarantee_number(c).is_none() && !keys.contains(c))
        .collect();
    assert!(
        stale.is_empty(),
        "rows in docs/enforcement.md for keys the schema does not have: {stale:?}"
    );
}

#[test]
fn every_guarantee_has_a_row() {
    let numbers: BTreeSet<u32> = first_cells(MATRIX)
        .iter()
        .filter_map(|c| guarantee_number(c))
        .collect();
    let missing: Vec<u32> = (1..=GUARANTEES).filter(|n| !numbers.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "SPEC.md guarantees without a row in docs/enforcement.md: {missing:?}"
    );
}

#[test]
fn every_named_test_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let named = named_tests(MATRIX);
    assert!(named.len() > 20, "too few tests found: {named:?}");
    let mut missing = Vec::new();
    for (file, function) in &named {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let defined = [format!("fn {function}("), format!("fn {function}<")]
            .iter()
            .any(|d| text.contains(d.as_str()));
        if function.is_empty() || !defined {
            missing.push(format!("{file}::{function}"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "tests named in docs/enforcement.md that do not exist: {missing:?}"
    );
}

/// A value only a hand-written `Deserialize` understands: an integer, or a
/// string that is not empty.
#[derive(Debug)]
struct Opaque;

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Opaque;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a name")
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Opaque, E> {
                Ok(Opaque)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Opaque, E> {
                if s.is_empty() {
                    Err(E::custom("empty name"))
                } else {
                    Ok(Opaque)
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the walk over the fields matters")]
struct Sample {
    plain: u32,
    opaque: Option<Opaque>,
    #[serde(rename = "renamed-table")]
    table: Inner,
    list: Vec<Inner>,
    map: BTreeMap<String, Inner>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the walk over the fields matters")]
struct Inner {
    leaf: Option<toml::Spanned<String>>,
}

#[test]
fn the_walk_reaches_every_field_and_stops_at_opaque_values() {
    let keys: Vec<String> = keys_of::<Sample>().into_iter().collect();
    assert_eq!(
        keys,
        [
            "list",
            "list.leaf",
            "map",
            "map.<name>.leaf",
            "opaque",
            "plain",
            "renamed-table",
            "renamed-table.leaf",
        ]
    );
}

#[test]
fn rows_and_named_tests_are_read_from_the_tables() {
    let doc = "intro naming `a/b.rs::not_in_a_table`\n\n\
               | key | mechanism |\n| --- | --- |\n| `exec.allow` | Landlock |\n\
               | 5. Exec | see tests/tests/exec.rs::only_allowed_programs_run |\n";
    assert_eq!(
        first_cells(doc),
        ["key", "exec.allow", "5. Exec"].map(str::to_owned)
    );
    assert_eq!(guarantee_number("5. Exec"), Some(5));
    assert_eq!(guarantee_number("exec.allow"), None);
    assert_eq!(
        named_tests(doc),
        [
            ("a/b.rs".to_owned(), "not_in_a_table".to_owned()),
            (
                "tests/tests/exec.rs".to_owned(),
                "only_allowed_programs_run".to_owned()
            ),
        ]
    );
}
