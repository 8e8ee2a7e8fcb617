//! Event-type patterns of a subscription.

use std::fmt;

/// What a subscription's `event_types` entry selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventTypePattern {
    /// `*`: every event.
    All,
    /// `domain.*` or `domain.object.*`: every event whose name starts with the
    /// prefix (stored with its trailing dot, e.g. `freights.`).
    Prefix(String),
    /// One exact event name.
    Exact(String),
}

/// Why a pattern string is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// A `*` somewhere other than a whole trailing segment.
    #[error("`*` is only allowed alone or as the last segment, as in `freights.*`")]
    MisplacedWildcard,
    /// Empty segment or a character outside `[A-Za-z0-9_-]`.
    #[error("segments must be non-empty and use letters, digits, `_` or `-`, separated by `.`")]
    BadSegment,
}

impl EventTypePattern {
    /// Parses `*`, `a.b.*` or `a.b.c`.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s == "*" {
            return Ok(Self::All);
        }
        let (body, is_prefix) = match s.strip_suffix(".*") {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(PatternError::MisplacedWildcard);
        }
        let segment_ok = |seg: &str| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !body.split('.').all(segment_ok) {
            return Err(PatternError::BadSegment);
        }
        Ok(if is_prefix {
            Self::Prefix(format!("{body}."))
        } else {
            Self::Exact(body.to_owned())
        })
    }

    /// Whether an event of that name is selected.
    pub fn matches(&self, event_name: &str) -> bool {
        match self {
            // `*` selects every event but Waybill's operational ones.
            Self::All => !crate::catalog::is_operational(event_name),
            Self::Prefix(prefix) => event_name.starts_with(prefix.as_str()),
            Self::Exact(name) => name == event_name,
        }
    }
}

impl fmt::Display for EventTypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms_and_round_trips() {
        for s in [
            "*",
            "freights.*",
            "freights.publication.*",
            "freights.publication.accepted",
        ] {
            assert_eq!(EventTypePattern::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            EventTypePattern::parse("freights.*").unwrap(),
            EventTypePattern::Prefix("freights.".into())
        );
    }

    #[test]
    fn refuses_bad_patterns() {
        assert_eq!(EventTypePattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            EventTypePattern::parse("freights*"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(
            EventTypePattern::parse("*.created"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(
            EventTypePattern::parse("a..b"),
            Err(PatternError::BadSegment)
        );
        assert_eq!(
            EventTypePattern::parse("a b"),
            Err(PatternError::BadSegment)
        );
        assert_eq!(EventTypePattern::parse(".*"), Err(PatternError::BadSegment));
    }

    #[test]
    fn matching() {
        let p = |s| EventTypePattern::parse(s).unwrap();
        assert!(p("*").matches("anything.at.all"));
        assert!(p("freights.*").matches("freights.publication.accepted"));
        assert!(!p("freights.*").matches("freights_processing.publication.finished"));
        assert!(p("freights.publication.*").matches("freights.publication.accepted"));
        assert!(!p("freights.publication.*").matches("freights.proposal_request.accepted"));
        assert!(p("freights.publication.accepted").matches("freights.publication.accepted"));
        assert!(!p("freights.publication.accepted").matches("freights.publication.accepted2"));
    }
}
