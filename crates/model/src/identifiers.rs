//! Typed identifiers on events (SPEC 4.7, docs/identity.md): who the customer is known as on one
//! touchpoint (a cookie, a login, an email, a phone, a loyalty card, a device), normalized so that
//! one person's email written two ways is one identifier.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The website's cookie or the app's install id before login.
pub const ANONYMOUS_ID: &str = "anonymous_id";
/// The shop's own account id (a login).
pub const USER_ID: &str = "user_id";
pub const EMAIL: &str = "email";
/// A phone number, in E.164.
pub const PHONE: &str = "phone";
pub const LOYALTY_CARD: &str = "loyalty_card";
/// A push token or advertising id.
pub const DEVICE_ID: &str = "device_id";

/// The types every deployment knows; any other well-formed type name is a custom type.
pub const BUILT_IN_TYPES: [&str; 6] = [ANONYMOUS_ID, USER_ID, EMAIL, PHONE, LOYALTY_CARD, DEVICE_ID];

/// Identity resolution takes the event's `customer_id` as an identifier of this type; an event
/// cannot name another.
pub const RESERVED_TYPE: &str = "customer_id";

/// Most identifiers on one event: a touchpoint knows a handful; hundreds are a bug upstream.
pub const MAX_IDENTIFIERS: usize = 20;
/// Longest type name.
pub const MAX_TYPE_LEN: usize = 32;
/// Longest value: an email address may have 254 characters (RFC 5321), every other id 128.
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_VALUE_LEN: usize = 128;

/// One identifier of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// A built-in type ([`BUILT_IN_TYPES`]) or a custom one (`[a-z][a-z0-9_]{0,31}`).
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// Why a value is no identifier of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error(
        "{0:?} is no identifier type: lower-case letters, digits and `_`, starting with a letter, at most 32"
    )]
    Type(String),
    #[error("`customer_id` is reserved: the event's own customer id is that identifier")]
    Reserved,
    #[error("is empty")]
    Empty,
    #[error("has {length} characters, more than {limit}")]
    TooLong { length: usize, limit: usize },
    #[error("contains a control character")]
    Control,
    #[error("{0:?} is no email address ({1})")]
    Email(String, &'static str),
    #[error("{0:?} is no phone number in international form ({1})")]
    Phone(String, &'static str),
}

impl Identifier {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self { kind: kind.into(), value: value.into() }
    }

    /// The normalized identifier (see [`normalize`]).
    pub fn normalized(&self) -> Result<Identifier, IdentifierError> {
        Ok(Identifier { kind: self.kind.clone(), value: normalize(&self.kind, &self.value)? })
    }

    /// Is it normalized already? (What a producer that bypasses the gateway must write.)
    pub fn is_normalized(&self) -> bool {
        normalize(&self.kind, &self.value).is_ok_and(|value| value == self.value)
    }
}

impl fmt::Display for Identifier {
    /// `type:value`: the key of the identity graph.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Checks a type name: `[a-z][a-z0-9_]{0,31}`.
pub fn check_type(kind: &str) -> Result<(), IdentifierError> {
    let mut chars = kind.chars();
    let well_formed = chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && kind.len() <= MAX_TYPE_LEN;
    if !well_formed {
        return Err(IdentifierError::Type(kind.to_owned()));
    }
    if kind == RESERVED_TYPE {
        return Err(IdentifierError::Reserved);
    }
    Ok(())
}

/// The normalized value of an identifier of type `kind`, the same for every spelling a producer
/// may send of it (normalizing twice changes nothing):
/// - `email`: trimmed and lower-cased (the local part too: no mail provider in use tells
///   `Ann@` from `ann@`), one `@`, a dotted domain, no spaces;
/// - `phone`: E.164, `+` then 7 to 15 digits, from `+`, `00` or spaced, dashed, dotted and
///   bracketed forms (`+1 (415) 555-0100`, `0044 20 7946 0958`); a national number without its
///   country code is refused, not guessed;
/// - `loyalty_card`: every whitespace and dash removed, upper-cased (cards print `1234 5678`);
/// - `device_id`: trimmed and lower-cased (advertising ids and push tokens are case-insensitive);
/// - `anonymous_id`, `user_id` and custom types: trimmed, case kept (cookies and account ids are
///   case-sensitive).
pub fn normalize(kind: &str, raw: &str) -> Result<String, IdentifierError> {
    check_type(kind)?;
    let trimmed = raw.trim();
    if trimmed.chars().any(char::is_control) {
        return Err(IdentifierError::Control);
    }
    let value = match kind {
        EMAIL => normalize_email(trimmed)?,
        PHONE => normalize_phone(trimmed)?,
        LOYALTY_CARD => {
            trimmed.chars().filter(|c| !c.is_whitespace() && *c != '-').collect::<String>().to_uppercase()
        }
        DEVICE_ID => trimmed.to_lowercase(),
        _ => trimmed.to_owned(),
    };
    if value.is_empty() {
        return Err(IdentifierError::Empty);
    }
    let limit = if kind == EMAIL { MAX_EMAIL_LEN } else { MAX_VALUE_LEN };
    let length = value.chars().count();
    if length > limit {
        return Err(IdentifierError::TooLong { length, limit });
    }
    Ok(value)
}

fn normalize_email(trimmed: &str) -> Result<String, IdentifierError> {
    let email = trimmed.to_lowercase();
    let refuse = |why| Err(IdentifierError::Email(trimmed.to_owned(), why));
    if email.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if email.chars().any(char::is_whitespace) {
        return refuse("a space");
    }
    let Some((local, domain)) = email.split_once('@') else { return refuse("no @") };
    if domain.contains('@') {
        return refuse("more than one @");
    }
    if local.is_empty() {
        return refuse("nothing before the @");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return refuse("the domain needs dot-separated labels");
    }
    Ok(email)
}

fn normalize_phone(trimmed: &str) -> Result<String, IdentifierError> {
    let refuse = |why| Err(IdentifierError::Phone(trimmed.to_owned(), why));
    if trimmed.is_empty() {
        return Err(IdentifierError::Empty);
    }
    // `(0)` is the national trunk prefix some countries print after the country code
    // (`+44 (0)20 ...`): dialled internationally it is dropped.
    let without_trunk = trimmed.replace("(0)", "");
    let compact: String = without_trunk
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')' | '/'))
        .collect();
    let digits = match (compact.strip_prefix('+'), compact.strip_prefix("00")) {
        (Some(digits), _) | (None, Some(digits)) => digits,
        (None, None) => return refuse("no country code: start with + or 00"),
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return refuse("only digits after the country code prefix");
    }
    if digits.starts_with('0') {
        return refuse("a country code never starts with 0");
    }
    if !(7..=15).contains(&digits.len()) {
        return refuse("E.164 numbers have 7 to 15 digits");
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_spellings_of_one_identifier_when_normalized_then_they_are_one() {
        let cases: &[(&str, &[&str], &str)] = &[
            (EMAIL, &["ann@example.com", "  Ann@Example.COM ", "ANN@EXAMPLE.COM\t"], "ann@example.com"),
            (
                PHONE,
                &["+14155550100", "+1 (415) 555-0100", "001 415 555 0100", "+1.415.555.0100"],
                "+14155550100",
            ),
            (
                PHONE,
                &["0044 20 7946 0958", "+44 20 7946 0958", "+44-20-7946-0958", "+44 (0)20 7946\u{a0}0958"],
                "+442079460958",
            ),
            (PHONE, &["+683 4002"], "+6834002"),
            (
                LOYALTY_CARD,
                &["1234 5678 90ab", " 1234-5678-90AB", "1234\u{a0}5678-90ab\u{a0}-"],
                "1234567890AB",
            ),
            (DEVICE_ID, &["6D92078A-8246-4BA4-AE5B-76104861E7DC"], "6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            (USER_ID, &[" U-Ann "], "U-Ann"),
            (ANONYMOUS_ID, &["aBc-123"], "aBc-123"),
            ("crm_account", &[" 00042 "], "00042"),
        ];
        for (kind, spellings, expected) in cases {
            for raw in *spellings {
                assert_eq!(normalize(kind, raw).as_deref(), Ok(*expected), "{kind} {raw:?}");
                assert_eq!(normalize(kind, expected).as_deref(), Ok(*expected), "idempotent: {kind}");
            }
        }
    }

    #[test]
    fn given_malformed_identifiers_when_normalized_then_each_is_refused_with_its_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (EMAIL, "ann.example.com", "no @"),
            (EMAIL, "ann@@example.com", "more than one @"),
            (EMAIL, "@example.com", "nothing before the @"),
            (EMAIL, "ann@localhost", "dot-separated"),
            (EMAIL, "ann@example..com", "dot-separated"),
            (EMAIL, "ann smith@example.com", "a space"),
            (PHONE, "(415) 555-0100", "no country code"),
            (PHONE, "+1 415 555 01OO", "only digits"),
            (PHONE, "+0 415 555 0100", "never starts with 0"),
            (PHONE, "+123456", "7 to 15 digits"),
            (PHONE, "+1234567890123456", "7 to 15 digits"),
            ("customer_id", "c-1", "reserved"),
            (USER_ID, "   ", "is empty"),
            (USER_ID, "a\u{0}b", "control character"),
            ("Email", "ann@example.com", "no identifier type"),
            ("9lives", "x", "no identifier type"),
            ("a_very_long_custom_identifier_type", "x", "no identifier type"),
        ];
        for (kind, raw, reason) in cases {
            let error = normalize(kind, raw).expect_err(raw).to_string();
            assert!(error.contains(reason), "{kind} {raw:?}: {error:?} should say {reason:?}");
        }
        assert_eq!(
            normalize(USER_ID, &"x".repeat(129)),
            Err(IdentifierError::TooLong { length: 129, limit: 128 })
        );
        let long_email = format!("{}@example.com", "a".repeat(242));
        assert_eq!(normalize(EMAIL, &long_email).map(|email| email.len()), Ok(254));
        assert!(normalize(EMAIL, &format!("a{long_email}")).is_err());
    }

    #[test]
    fn an_identifier_prints_as_its_graph_key() {
        assert_eq!(Identifier::new(EMAIL, "ann@example.com").to_string(), "email:ann@example.com");
        assert!(Identifier::new(PHONE, "+14155550100").is_normalized());
        assert!(!Identifier::new(PHONE, "+1 415 555 0100").is_normalized());
    }
}
