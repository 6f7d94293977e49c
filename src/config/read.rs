//! Reading the configuration's sources: the `WXSESSION_*` variables laid over
//! the parsed file ([`overlay_env`]), and one deserializer ([`Node`]) that reads
//! each value as the type its key asks for and names the key in every error.

use std::{collections::BTreeMap, fmt};

use serde::de::{
    self, value::StringDeserializer, DeserializeSeed, IntoDeserializer, MapAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use super::{apps::APP_KEYS, ConfigError, ENV_PREFIX};

/// Lays the `WXSESSION_<SECTION>_<KEY>` variables over `table`, each as a string;
/// returns which variable set each dotted key, so an error about it can name it.
pub(super) fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    // Sorted so that a name given twice ends with its last value, and errors come
    // in the same order on every start.
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = BTreeMap::new();
    for (name, value) in overrides {
        let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            return Err(ConfigError::new(
                name,
                "not a WXSESSION_<SECTION>_<KEY> variable",
            ));
        };
        if section == "apps" {
            let Some((app, app_key)) = APP_KEYS.iter().find_map(|k| {
                key.strip_suffix(k)
                    .and_then(|app| app.strip_suffix('_'))
                    .filter(|app| !app.is_empty())
                    .map(|app| (app, *k))
            }) else {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "not a WXSESSION_APPS_<NAME>_<KEY> variable (KEY: {})",
                        APP_KEYS.join(", ").to_ascii_uppercase()
                    ),
                ));
            };
            let apps = table
                .entry("apps")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(apps) = apps {
                let keys = apps
                    .entry(app)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match keys {
                    toml::Value::Table(keys) => {
                        keys.insert(app_key.to_string(), toml::Value::String(value));
                    }
                    _ => return Err(ConfigError::new(format!("apps.{app}"), "expected a table")),
                }
            }
            names.insert(format!("apps.{app}.{app_key}"), name);
            continue;
        }
        let keys = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // Every section of the file is a table by now (from_sources checks first).
        if let toml::Value::Table(keys) = keys {
            keys.insert(key.to_string(), toml::Value::String(value));
        }
        names.insert(format!("{section}.{key}"), name);
    }
    Ok(names)
}

/// A value that does not fit its key, with the path of that key.
#[derive(Debug)]
pub(super) struct DeError {
    pub(super) path: Vec<String>,
    pub(super) message: String,
}

impl DeError {
    fn at(mut self, key: &str) -> Self {
        self.path.insert(0, key.to_string());
        self
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DeError {
            path: Vec::new(),
            message: message.to_string(),
        }
    }

    // serde's own message repeats the key and lists every other one of its section.
    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        de::Error::custom("unknown key")
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.join("."), self.message)
    }
}

impl std::error::Error for DeError {}

/// A value of the merged file-and-environment table, read as the type its field
/// asks for. A scalar (string, integer or boolean) is read through its text form,
/// so a variable (always a string) and a file value are read alike: `"12345"` stays
/// a string where a string is wanted, `"60"` is a number where a number is, and
/// `"soon"` there is an error naming the key.
pub(super) struct Node(pub(super) toml::Value);

impl Node {
    fn text(self) -> Result<String, DeError> {
        match self.0 {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(de::Error::custom(
                "expected a string, an integer or a boolean",
            )),
        }
    }

    /// The trimmed text parsed as `T`; else an error saying what was `expected`.
    fn parse<T: std::str::FromStr>(self, expected: &str) -> Result<T, DeError> {
        let text = self.text()?;
        let v = text.trim();
        v.parse()
            .map_err(|_| de::Error::custom(format!("expected {expected}, got {v:?}")))
    }
}

impl<'de> IntoDeserializer<'de, DeError> for Node {
    type Deserializer = Node;

    fn into_deserializer(self) -> Node {
        self
    }
}

/// Integers of every width go through 64 bits; the visitor rejects what does not fit.
macro_rules! deserialize_integers {
    ($($method:ident => $visit:ident($int:ty, $expected:literal)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.parse::<$int>($expected)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::String(s) => visitor.visit_string(s),
            toml::Value::Integer(i) => visitor.visit_i64(i),
            toml::Value::Float(f) => visitor.visit_f64(f),
            toml::Value::Boolean(b) => visitor.visit_bool(b),
            toml::Value::Datetime(d) => visitor.visit_string(d.to_string()),
            toml::Value::Array(items) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter().map(Node)))
            }
            toml::Value::Table(table) => visitor.visit_map(Table::new(table)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text()?;
        match text.trim() {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            v => Err(de::Error::custom(format!(
                "expected true or false, got {v:?}"
            ))),
        }
    }

    deserialize_integers! {
        deserialize_u8 => visit_u64(u64, "a non-negative integer"),
        deserialize_u16 => visit_u64(u64, "a non-negative integer"),
        deserialize_u32 => visit_u64(u64, "a non-negative integer"),
        deserialize_u64 => visit_u64(u64, "a non-negative integer"),
        deserialize_i8 => visit_i64(i64, "an integer"),
        deserialize_i16 => visit_i64(i64, "an integer"),
        deserialize_i32 => visit_i64(i64, "an integer"),
        deserialize_i64 => visit_i64(i64, "an integer"),
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::Float(f) => visitor.visit_f64(f),
            other => visitor.visit_f64(Node(other).parse("a number")?),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.text()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.text()?)
    }

    // A key that is present has a value; leaving it out is how a key is unset.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let variant: StringDeserializer<DeError> = self.text()?.into_deserializer();
        visitor.visit_enum(variant)
    }

    /// A list: a TOML array, or (as the environment writes one) comma-separated
    /// text; blank items are skipped, so an empty value is an empty list.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::String(s) => {
                let items: Vec<Node> = s
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Node(toml::Value::String(item.to_string())))
                    .collect();
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
            }
            other => Node(other).deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// The entries of a table; an error about one is prefixed with its key.
struct Table {
    entries: toml::map::IntoIter,
    pending: Option<(String, toml::Value)>,
}

impl Table {
    fn new(table: toml::Table) -> Self {
        Table {
            entries: table.into_iter(),
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for Table {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name: StringDeserializer<DeError> = key.clone().into_deserializer();
        match seed.deserialize(name) {
            Ok(name) => {
                self.pending = Some((key, value));
                Ok(Some(name))
            }
            Err(e) => {
                let mut e = e.at(&key);
                // An unknown section is named by its first key: that is what a
                // variable sets, so the variable that made the section is found.
                if let Some(first) = value.as_table().and_then(|keys| keys.keys().next()) {
                    e.path.push(first.clone());
                }
                Err(e)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self
            .pending
            .take()
            .expect("serde asks for a value only after its key");
        seed.deserialize(Node(value)).map_err(|e| e.at(&key))
    }
}
