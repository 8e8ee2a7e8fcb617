//! Logging: human-readable by default, JSON with `WAYBILL_LOG_FORMAT=json`,
//! level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// From the value of `WAYBILL_LOG_FORMAT` (unset = human).
    pub fn from_env_value(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("human") | Some("text") => Ok(Self::Human),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "WAYBILL_LOG_FORMAT must be `human` or `json`, not `{other}`"
            )),
        }
    }
}

/// Installs the global subscriber; logs go to stderr. `filter` is the
/// `RUST_LOG` value, if set.
pub fn init(format: LogFormat, filter: Option<&str>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A subscriber already installed (tests) is fine.
    drop(result);
}
