//! Reading key/value parameters: a binding's `--param k=v` pairs (given to `configure`) and a
//! topic's configs (given to a retention policy). This module only looks values up and parses
//! them; what a plugin does with them is its own business.

use std::fmt::Display;
use std::str::FromStr;

/// Key/value pairs as the host passes them, with lookups that turn mistakes into the error
/// strings `configure` returns.
///
/// When a key appears more than once, the last value wins, as a later `--param` overrides an
/// earlier one.
///
/// Keys a plugin does not know should be ignored, not refused: a topic's
/// `sluice.plugin.param.<k>` configs are passed to every plugin bound on that topic, whatever
/// its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Wraps the pairs the host passed.
    pub fn new(pairs: Vec<(String, String)>) -> Params {
        Params { pairs }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `key` parsed as a `T`, or `default` when it is absent.
    ///
    /// The error names the key and the value, e.g. ``param `entries`: "ten" is not valid (invalid
    /// digit found in string)``.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(value) => parse(key, value),
        }
    }

    /// `key` parsed as a `T`; an error when it is absent.
    pub fn parse_required<T>(&self, key: &str) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Err(format!("param `{key}` is required")),
            Some(value) => parse(key, value),
        }
    }

    /// The pairs, in the order the host passed them.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

impl From<Vec<(String, String)>> for Params {
    fn from(pairs: Vec<(String, String)>) -> Params {
        Params::new(pairs)
    }
}

fn parse<T>(key: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    value.trim().parse().map_err(|e| format!("param `{key}`: {value:?} is not valid ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn the_last_value_of_a_key_wins() {
        let p = params(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(p.get("a"), Some("3"));
        assert_eq!(p.get("b"), Some("2"));
        assert_eq!(p.get("c"), None);
    }

    #[test]
    fn parsing_uses_the_default_only_when_absent() {
        let p = params(&[("n", " 42 "), ("bad", "ten")]);
        assert_eq!(p.parse_or::<u64>("n", 7), Ok(42));
        assert_eq!(p.parse_or::<u64>("missing", 7), Ok(7));
        let err = p.parse_or::<u64>("bad", 7).unwrap_err();
        assert!(err.contains("`bad`") && err.contains("\"ten\""), "{err}");
        assert_eq!(p.parse_required::<u64>("missing"), Err("param `missing` is required".to_string()));
        assert_eq!(p.parse_required::<i64>("n"), Ok(42));
    }
}
