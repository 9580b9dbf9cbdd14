//! Who may read what (issue 19): bearer API keys (`name:secret`, from a Secret, as the gateway's),
//! each granted scopes and redactions by name (`support=read:profile+read:loyalty+redact:traits`,
//! configuration rather than secret), a request rate per key, and the redaction of identifiers
//! and traits in an answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use omnistream_model::records::IDENTIFIER_TRAITS;
use omnistream_runtime::auth::{ApiKeys, ApiKeysError, AuthError, Caller};
use omnistream_runtime::rate_limit::{RateLimit, RateLimiter};
use serde_json::Value;

/// What a key may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The customer document, identity and journeys.
    ReadProfile,
    ReadReachability,
    ReadLoyalty,
    /// Everything held on a customer at once (a subject-access request).
    Export,
}

impl Scope {
    pub const ALL: [Scope; 4] =
        [Scope::ReadProfile, Scope::ReadReachability, Scope::ReadLoyalty, Scope::Export];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadProfile => "read:profile",
            Scope::ReadReachability => "read:reachability",
            Scope::ReadLoyalty => "read:loyalty",
            Scope::Export => "export",
        }
    }
}

/// What is hidden from a key in every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redaction {
    /// Identifier values: the profile's emails and phones, the identity document's identifiers
    /// and the values that linked each merge.
    Identifiers,
    /// The values of the profile's traits (their names and times stay).
    Traits,
}

impl Redaction {
    pub const ALL: [Redaction; 2] = [Redaction::Identifiers, Redaction::Traits];

    pub fn as_str(self) -> &'static str {
        match self {
            Redaction::Identifiers => "redact:identifiers",
            Redaction::Traits => "redact:traits",
        }
    }
}

/// A key's scopes and redactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub scopes: Vec<Scope>,
    pub redactions: Vec<Redaction>,
}

impl Grants {
    /// Everything, nothing hidden: an API without keys.
    fn open() -> Self {
        Self { scopes: Scope::ALL.to_vec(), redactions: Vec::new() }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Keys(#[from] ApiKeysError),
    #[error("API key scopes {0:?} are not of the form name=scope+scope")]
    NotNameGrants(String),
    #[error("API key {key:?}: {grant:?} is neither a scope ({scopes}) nor a redaction ({redactions})")]
    UnknownGrant { key: String, grant: String, scopes: String, redactions: String },
    #[error("API key {0:?} has no scopes: give it some in CUSTOMER_API_KEY_SCOPES")]
    NoGrants(String),
    #[error("scopes are given for {0:?}, which is not an API key")]
    NotAKey(String),
    #[error("scopes are given without API keys: every caller would be let in")]
    ScopesWithoutKeys,
}

/// Why a request is refused before it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated(AuthError),
    /// Over the key's rate: whose, and how long until a request would be allowed.
    RateLimited(Caller, Duration),
}

/// The keys, their grants and their rate.
#[derive(Debug)]
pub struct Access {
    keys: ApiKeys,
    grants: HashMap<String, Grants>,
    limiter: RateLimiter,
}

impl Access {
    /// `keys` as `name:secret`; `grants` as `name=grant+grant`, one entry per key.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        grants: impl IntoIterator<Item = &'a str>,
        rate: RateLimit,
    ) -> Result<Self, AccessError> {
        let keys = ApiKeys::parse(keys)?;
        let mut parsed: HashMap<String, Grants> = HashMap::new();
        for entry in grants.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, list)) = entry.split_once('=') else {
                return Err(AccessError::NotNameGrants(entry.to_owned()));
            };
            let mut key_grants = Grants::default();
            for grant in list.split('+').map(str::trim).filter(|g| !g.is_empty()) {
                if let Some(scope) = Scope::ALL.into_iter().find(|s| s.as_str() == grant) {
                    key_grants.scopes.push(scope);
                } else if let Some(redaction) = Redaction::ALL.into_iter().find(|r| r.as_str() == grant) {
                    key_grants.redactions.push(redaction);
                } else {
                    return Err(AccessError::UnknownGrant {
                        key: name.to_owned(),
                        grant: grant.to_owned(),
                        scopes: Scope::ALL.map(Scope::as_str).join(", "),
                        redactions: Redaction::ALL.map(Redaction::as_str).join(", "),
                    });
                }
            }
            parsed.insert(name.trim().to_owned(), key_grants);
        }
        if keys.is_open() && !parsed.is_empty() {
            return Err(AccessError::ScopesWithoutKeys);
        }
        for name in keys.names() {
            if parsed.get(name).is_none_or(|g| g.scopes.is_empty()) {
                return Err(AccessError::NoGrants(name.to_owned()));
            }
        }
        if let Some(stranger) = parsed.keys().find(|name| !keys.names().any(|known| known == name.as_str())) {
            return Err(AccessError::NotAKey(stranger.clone()));
        }
        Ok(Self { keys, grants: parsed, limiter: RateLimiter::new(rate) })
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_open()
    }

    /// The caller of a request with this `Authorization` header, and what it may read; one
    /// request taken from its rate.
    pub fn admit(&self, authorization: Option<&str>, now: Instant) -> Result<(Caller, Grants), Refusal> {
        let caller = self.keys.authenticate(authorization).map_err(Refusal::Unauthenticated)?;
        if let Err(wait) = self.limiter.take(caller.name(), 1, now) {
            return Err(Refusal::RateLimited(caller, wait));
        }
        let grants = match &caller {
            Caller::Anonymous => Grants::open(),
            Caller::Key(name) => self.grants.get(name).cloned().unwrap_or_default(),
        };
        Ok((caller, grants))
    }
}

/// The text that replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Hides what `redactions` name anywhere in an answer: identifiers, the `value` of each entry of
/// an `identifiers` list, every `identifier_value` and the values of the traits identifiers are
/// read from (`email`, `phone`); traits, the `value` of each entry of a `traits` map.
pub fn redact(document: &mut Value, redactions: &[Redaction]) {
    let identifiers = redactions.contains(&Redaction::Identifiers);
    let traits = redactions.contains(&Redaction::Traits);
    let hide = |entry: &mut Value| {
        if let Some(value) = entry.get_mut("value") {
            *value = Value::from(REDACTED);
        }
    };
    match document {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                match (name.as_str(), field) {
                    ("identifiers", Value::Array(entries)) if identifiers => {
                        entries.iter_mut().for_each(hide)
                    }
                    ("identifier_value", value @ Value::String(_)) if identifiers => {
                        *value = Value::from(REDACTED)
                    }
                    ("traits", Value::Object(entries)) if traits || identifiers => {
                        for (trait_name, entry) in entries.iter_mut() {
                            if traits || IDENTIFIER_TRAITS.contains(&trait_name.as_str()) {
                                hide(entry);
                            }
                        }
                    }
                    (_, field) => redact(field, redactions),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, redactions)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUPPORT: &str = "support:0123456789abcdef";
    const SENDER: &str = "sender:fedcba9876543210";
    const OFF: RateLimit = RateLimit { per_second: 0.0, burst: 0.0 };

    #[test]
    fn each_key_gets_its_grants_and_no_keys_means_everything() {
        let access = Access::new(
            [SUPPORT, SENDER],
            ["support=read:profile+read:loyalty+redact:traits", "sender=read:reachability"],
            OFF,
        )
        .unwrap();
        let now = Instant::now();
        let (caller, grants) = access.admit(Some("Bearer 0123456789abcdef"), now).unwrap();
        assert_eq!(caller, Caller::Key("support".into()));
        assert_eq!(
            grants,
            Grants {
                scopes: vec![Scope::ReadProfile, Scope::ReadLoyalty],
                redactions: vec![Redaction::Traits]
            }
        );
        let (_, grants) = access.admit(Some("Bearer fedcba9876543210"), now).unwrap();
        assert!(grants.allows(Scope::ReadReachability) && !grants.allows(Scope::ReadProfile));
        assert_eq!(access.admit(None, now), Err(Refusal::Unauthenticated(AuthError::Missing)));
        assert_eq!(access.admit(Some("Bearer nope"), now), Err(Refusal::Unauthenticated(AuthError::Unknown)));

        let open = Access::new([], [], OFF).unwrap();
        assert_eq!(open.admit(None, now).unwrap(), (Caller::Anonymous, Grants::open()));
    }

    #[test]
    fn a_configuration_that_would_let_too_much_in_is_refused() {
        let cases: &[(&[&str], &[&str], AccessError)] = &[
            (&[SUPPORT], &[], AccessError::NoGrants("support".into())),
            (&[SUPPORT], &["support=redact:traits"], AccessError::NoGrants("support".into())),
            (&[], &["support=read:profile"], AccessError::ScopesWithoutKeys),
            (
                &[SUPPORT],
                &["support=read:profile", "other=read:profile"],
                AccessError::NotAKey("other".into()),
            ),
            (
                &[SUPPORT],
                &["support read:profile"],
                AccessError::NotNameGrants("support read:profile".into()),
            ),
        ];
        for (keys, grants, expected) in cases {
            assert_eq!(
                &Access::new(keys.iter().copied(), grants.iter().copied(), OFF).unwrap_err(),
                expected,
                "{keys:?} {grants:?}"
            );
        }
        let unknown = Access::new([SUPPORT], ["support=read:everything"], OFF).unwrap_err();
        assert!(unknown.to_string().contains("read:everything"), "{unknown}");
    }

    #[test]
    fn a_key_over_its_rate_waits() {
        let access =
            Access::new([SUPPORT], ["support=read:profile"], RateLimit { per_second: 10.0, burst: 2.0 })
                .unwrap();
        let now = Instant::now();
        let key = Some("Bearer 0123456789abcdef");
        assert!(access.admit(key, now).is_ok());
        assert!(access.admit(key, now).is_ok());
        assert_eq!(
            access.admit(key, now),
            Err(Refusal::RateLimited(Caller::Key("support".into()), Duration::from_millis(100)))
        );
    }

    #[test]
    fn redaction_hides_identifier_and_trait_values_only() {
        let document = json!({
            "customer_id": "c-1",
            "profile": {
                "identifiers": [{"kind": "email", "value": "ann@example.com", "first_seen_at": "2026-12-01T10:00:00.000Z"}],
                "traits": {"tier": {"value": "gold", "updated_at": "2026-12-01T10:00:00.000Z"},
                           "email": {"value": "ann@example.com", "updated_at": "2026-12-01T10:00:00.000Z"}},
                "orders_count": 2,
            },
            "merges": [{"identifier_type": "email", "identifier_value": "ann@example.com"}],
        });
        let mut identifiers = document.clone();
        redact(&mut identifiers, &[Redaction::Identifiers]);
        assert_eq!(identifiers["profile"]["identifiers"][0]["value"], REDACTED);
        assert_eq!(identifiers["profile"]["identifiers"][0]["kind"], "email");
        assert_eq!(identifiers["merges"][0]["identifier_value"], REDACTED);
        assert_eq!(identifiers["profile"]["traits"]["tier"]["value"], "gold");
        assert_eq!(
            identifiers["profile"]["traits"]["email"]["value"], REDACTED,
            "identifiers are read from it"
        );

        let mut traits = document.clone();
        redact(&mut traits, &[Redaction::Traits]);
        assert_eq!(traits["profile"]["traits"]["tier"]["value"], REDACTED);
        assert_eq!(traits["profile"]["traits"]["tier"]["updated_at"], "2026-12-01T10:00:00.000Z");
        assert_eq!(traits["profile"]["identifiers"][0]["value"], "ann@example.com");

        let mut untouched = document.clone();
        redact(&mut untouched, &[]);
        assert_eq!(untouched, document);
    }
}
