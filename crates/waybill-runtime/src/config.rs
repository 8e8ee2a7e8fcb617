//! Layered configuration: defaults → TOML file → `WAYBILL_*` environment.
//!
//! Environment variables name a key path with `__` between levels:
//! `WAYBILL_KAFKA__BROKERS=k1:9092` sets `kafka.brokers`. Every key lives in
//! a section, so a `WAYBILL_*` variable without `__` is not configuration
//! (e.g. `WAYBILL_CACHE` of the scripts) — unless it starts with a section
//! name, which is a typo reported with the right spelling. Values are read as
//! TOML scalars when they parse as one (`3`, `true`), else as strings. Under
//! `kafka.properties`, single underscores become dots, so
//! `WAYBILL_KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL` sets the librdkafka
//! property `security.protocol`.
//!
//! The environment is passed in (never read here), so tests need not touch
//! the process environment.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Environment variables that are not configuration keys.
pub const NOT_CONFIG: &[&str] = &[
    "WAYBILL_LOG_FORMAT",
    "WAYBILL_CONFIG",
    // The test tools' Apache Kafka jars (`scripts/ensure-kafka.sh`), which
    // `make test` passes to every process it starts.
    "WAYBILL_KAFKA_LIBS",
];

/// Every problem found while loading configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Implemented by configuration roots: cross-field checks after parsing.
pub trait Validate {
    /// Names of the top-level sections.
    const SECTIONS: &'static [&'static str];

    /// Every problem (empty when valid).
    fn problems(&self) -> Vec<String>;
}

/// Loads `T` from `base` (e.g. `waybill dev`'s defaults), overlaid by an
/// optional TOML file, overlaid by environment pairs.
pub fn load<T, I>(base: toml::Table, file: Option<&Path>, env: I) -> Result<T, ConfigErrors>
where
    T: DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let mut problems = Vec::new();
    let mut root = base;
    let from_file = match file {
        None => toml::Table::new(),
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => {
                return Err(ConfigErrors(vec![format!(
                    "cannot read config file {}: {e}",
                    path.display()
                )]));
            }
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(table) => table,
                Err(e) => {
                    return Err(ConfigErrors(vec![format!(
                        "config file {} is not valid TOML: {e}",
                        path.display()
                    )]));
                }
            },
        },
    };
    merge(&mut root, from_file);

    for (name, value) in env {
        let Some(rest) = name.strip_prefix("WAYBILL_") else {
            continue;
        };
        if NOT_CONFIG.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        if !rest.contains("__") {
            let lower = rest.to_ascii_lowercase();
            if let Some(section) = T::SECTIONS
                .iter()
                .find(|s| lower.starts_with(&format!("{s}_")))
            {
                let key = &rest[section.len() + 1..];
                problems.push(format!(
                    "{name}: not a configuration variable; did you mean WAYBILL_{}__{key}? (two underscores between section and key)",
                    section.to_ascii_uppercase()
                ));
            }
            continue;
        }
        let mut path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.len() == 3 && path[0] == "kafka" && path[1] == "properties" {
            path[2] = path[2].replace('_', ".");
        }
        if let Err(problem) = set_path(&mut root, &path, parse_scalar(&value)) {
            problems.push(format!("{name}: {problem}"));
        }
    }

    let mut unknown = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(toml::Value::Table(root), |path| {
        unknown.push(path.to_string());
    });
    problems.extend(unknown.into_iter().map(|key| format!("{key}: unknown key")));
    match parsed {
        Ok(config) => {
            problems.extend(config.problems());
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(ConfigErrors(problems))
            }
        }
        Err(e) => {
            problems.push(e.to_string().trim().to_owned());
            Err(ConfigErrors(problems))
        }
    }
}

/// Overlays `top` on `base`, table by table.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// An environment value: a number, boolean or TOML array
/// (`["1s", "5s"]`) as such, anything else as a string.
fn parse_scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut table = root;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Root {
        a: Section,
        name: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Section {
        port: u16,
        on: bool,
        properties: BTreeMap<String, String>,
    }

    impl Validate for Root {
        const SECTIONS: &'static [&'static str] = &["a"];

        fn problems(&self) -> Vec<String> {
            if self.a.port == 1 {
                vec!["a.port: must not be 1".into()]
            } else {
                Vec::new()
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_values_are_typed() {
        assert_eq!(parse_scalar("81"), toml::Value::Integer(81));
        assert_eq!(parse_scalar("true"), toml::Value::Boolean(true));
        assert_eq!(
            parse_scalar(r#"["1s", "5s"]"#),
            toml::Value::Array(vec!["1s".into(), "5s".into()])
        );
        assert_eq!(
            parse_scalar("SASL_SSL"),
            toml::Value::String("SASL_SSL".into())
        );
        assert_eq!(parse_scalar("[oops"), toml::Value::String("[oops".into()));
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("waybill-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "name = \"file\"\n[a]\nport = 80\n").unwrap();
        let base: toml::Table = "name = \"base\"\n[a]\non = false\nport = 1"
            .parse()
            .unwrap();
        let root: Root = load(
            base,
            Some(&file),
            env(&[
                ("WAYBILL_A__PORT", "81"),
                ("WAYBILL_A__ON", "true"),
                ("WAYBILL_A__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL"),
                ("WAYBILL_LOG_FORMAT", "json"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(root.name, "file");
        assert_eq!(root.a.port, 81);
        assert!(root.a.on);
        assert_eq!(root.a.properties["security_protocol"], "SASL_SSL");
    }

    #[test]
    fn every_problem_is_reported() {
        let err = load::<Root, _>(
            toml::Table::new(),
            None,
            env(&[
                ("WAYBILL_A__PORTT", "1"),
                ("WAYBILL_B__C", "x"),
                ("WAYBILL_A_PORT", "2"),
                ("WAYBILL_CACHE", "/tmp"),
                ("WAYBILL_A__PORT", "1"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [
                "WAYBILL_A_PORT: not a configuration variable; did you mean WAYBILL_A__PORT? (two underscores between section and key)",
                "a.portt: unknown key",
                "b: unknown key",
                "a.port: must not be 1"
            ]
        );
        let err = load::<Root, _>(
            toml::Table::new(),
            None,
            env(&[("WAYBILL_A__PORT", "many")]),
        )
        .unwrap_err();
        assert!(err.0[0].contains("invalid type"), "{err}");
        assert!(err.to_string().contains("1 problem"));
    }

    #[test]
    fn missing_file_is_reported() {
        let err = load::<Root, _>(
            toml::Table::new(),
            Some(Path::new("/nonexistent/w.toml")),
            env(&[]),
        )
        .unwrap_err();
        assert!(err.0[0].contains("/nonexistent/w.toml"));
    }
}
