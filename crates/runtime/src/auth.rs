//! Bearer API keys (SPEC 5): `name:secret` pairs from configuration. The name labels logs and the
//! rate limit; the secret never leaves this module.

/// Configured API keys; none configured means the gateway is open.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeysError {
    #[error("API key {0:?} is not of the form name:secret")]
    NotNamePair(String),
    #[error("API key {0:?}: the secret must be at least 16 characters")]
    ShortSecret(String),
    #[error("API key name {0:?} is used twice")]
    DuplicateName(String),
    #[error("API keys {0:?} and {1:?} have the same secret: a caller could not be told apart")]
    SharedSecret(String, String),
}

/// Who a request is from, for the rate limit and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No keys are configured.
    Anonymous,
    Key(String),
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Key(name) => name,
        }
    }
}

/// Why a request is refused before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
}

impl ApiKeys {
    /// Parses `name:secret` entries (blank entries are skipped).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, ApiKeysError> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, secret)) = entry.split_once(':').filter(|(n, s)| !n.is_empty() && !s.is_empty())
            else {
                return Err(ApiKeysError::NotNamePair(redact(entry)));
            };
            if secret.len() < 16 {
                return Err(ApiKeysError::ShortSecret(name.to_owned()));
            }
            if keys.iter().any(|(known, _)| known == name) {
                return Err(ApiKeysError::DuplicateName(name.to_owned()));
            }
            if let Some((other, _)) = keys.iter().find(|(_, known)| known == secret) {
                return Err(ApiKeysError::SharedSecret(other.clone(), name.to_owned()));
            }
            keys.push((name.to_owned(), secret.to_owned()));
        }
        Ok(Self { keys })
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(name, _)| name.as_str())
    }

    /// The caller of a request with this `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if self.is_open() {
            return Ok(Caller::Anonymous);
        }
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(AuthError::Missing)?;
        // Every key is compared in full, so the time taken does not tell how much of one matched.
        let mut found = None;
        for (name, secret) in &self.keys {
            if constant_time_eq(token.as_bytes(), secret.as_bytes()) {
                found = Some(name);
            }
        }
        found.map(|name| Caller::Key(name.clone())).ok_or(AuthError::Unknown)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// An entry as it may be shown in an error: its name part only.
fn redact(entry: &str) -> String {
    match entry.split_once(':') {
        Some((name, _)) => format!("{name}:…"),
        None => "…".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "web:0123456789abcdef";
    const POS: &str = "pos:fedcba9876543210";

    #[test]
    fn no_keys_means_open_to_anonymous_callers() {
        let keys = ApiKeys::parse(["", " "]).unwrap();
        assert!(keys.is_open());
        assert_eq!(keys.authenticate(None), Ok(Caller::Anonymous));
    }

    #[test]
    fn a_bearer_token_names_its_key() {
        let keys = ApiKeys::parse([WEB, POS]).unwrap();
        let cases: &[(Option<&str>, Result<Caller, AuthError>)] = &[
            (Some("Bearer 0123456789abcdef"), Ok(Caller::Key("web".into()))),
            (Some("Bearer fedcba9876543210"), Ok(Caller::Key("pos".into()))),
            (Some("bearer fedcba9876543210"), Ok(Caller::Key("pos".into()))),
            (None, Err(AuthError::Missing)),
            (Some("Basic d2ViOnNlY3JldA=="), Err(AuthError::Missing)),
            (Some("Bearer 0123456789abcdeX"), Err(AuthError::Unknown)),
            (Some("Bearer 0123456789abcdef0"), Err(AuthError::Unknown)),
            (Some("Bearer web:0123456789abcdef"), Err(AuthError::Unknown)),
        ];
        for (header, expected) in cases {
            assert_eq!(&keys.authenticate(*header), expected, "{header:?}");
        }
    }

    #[test]
    fn malformed_configuration_is_refused_without_echoing_secrets() {
        assert_eq!(ApiKeys::parse(["nocolon"]).unwrap_err(), ApiKeysError::NotNamePair("…".into()));
        assert_eq!(ApiKeys::parse(["web:short"]).unwrap_err(), ApiKeysError::ShortSecret("web".into()));
        assert_eq!(ApiKeys::parse([WEB, WEB]).unwrap_err(), ApiKeysError::DuplicateName("web".into()));
        assert_eq!(
            ApiKeys::parse([WEB, "pos:0123456789abcdef"]).unwrap_err(),
            ApiKeysError::SharedSecret("web".into(), "pos".into())
        );
        assert!(!ApiKeys::parse([":0123456789abcdef"]).unwrap_err().to_string().contains("0123"));
    }
}
