//! identity-resolver's rules (docs/identity.md): which identifiers of an event take part in
//! resolution, which one routes the event, and whether two customers may become one (merge
//! protection). Pure functions; the service that applies them to the identity graph is built on
//! them (issue 16).

pub mod protocol;
pub mod stages;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use omnistream_model::identifiers::{
    ANONYMOUS_ID, DEVICE_ID, EMAIL, IdentifierError, LOYALTY_CARD, PHONE, USER_ID, normalize,
};
use omnistream_model::{Identifier, TouchpointEvent};
use omnistream_runtime::{RulesError, read_rules};
use regex_lite::Regex;
use serde::Deserialize;

/// The producer's `customer_id`, taken as the weakest identifier of its event.
pub const CUSTOMER_ID: &str = omnistream_model::identifiers::RESERVED_TYPE;

/// How one identifier type takes part in resolution.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    /// Two customers that hold different values of a strong type never merge automatically.
    #[serde(default)]
    pub strong: bool,
    /// Most values of the type one customer holds.
    pub limit: usize,
    /// Lower is stronger: an event is routed by its strongest identifier.
    pub priority: u32,
    /// Values of the type that link nothing: regular expressions over the normalized value, each
    /// matching the whole value.
    #[serde(default)]
    pub blocked: Vec<String>,
}

impl TypeRule {
    fn new(strong: bool, limit: usize, priority: u32) -> Self {
        Self { strong, limit, priority, blocked: Vec::new() }
    }
}

/// The rules file (`--rules`). `[types.<name>]` replaces that type's default rule or adds a custom
/// type; `blocked_values` and `blocked_patterns`, when given, replace the default lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RulesFile {
    types: BTreeMap<String, TypeRule>,
    blocked_values: Option<Vec<String>>,
    blocked_patterns: Option<Vec<String>>,
}

/// Placeholders that real producers send for "nobody" (Segment's recommended list, PostHog's
/// `identify(null)`): compared lower-cased with every type's normalized value.
pub const DEFAULT_BLOCKED_VALUES: &[&str] = &[
    "null",
    "undefined",
    "nil",
    "none",
    "n/a",
    "unknown",
    "anonymous",
    "guest",
    "void",
    "abc123",
    "0",
    "-1",
    "test@example.com",
];

/// Zeros and dashes only (`0`, `000-000`, the all-zero advertising id).
pub const DEFAULT_BLOCKED_PATTERNS: &[&str] = &["[0-]+"];

/// Why an identifier of an event takes no part in resolution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("its type is not in the identity rules")]
    UnknownType,
    #[error("it does not normalize: {0}")]
    Malformed(IdentifierError),
    #[error("its value is blocked ({0})")]
    Blocked(String),
}

/// An event's identifiers as resolution sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sorted {
    /// Normalized, each once, strongest first (by priority, then type, then value).
    pub linked: Vec<Identifier>,
    pub skipped: Vec<(Identifier, Skipped)>,
}

/// Where an event is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// At this identifier's partition (its strongest, else its `customer_id`).
    By(Identifier),
    /// Nowhere: it has no usable identifier and its `customer_id` is blocked (a till's shared
    /// `guest`); it keeps its `customer_id` and links nothing.
    Unlinked,
}

/// The values of each type one customer holds.
pub type Holdings = BTreeMap<String, BTreeSet<String>>;

/// Why two customers (or a customer and a new identifier) may not become one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("each holds a different {kind} ({values:?}): {kind} is strong")]
    DifferentStrong { kind: String, values: Vec<String> },
    #[error("together they would hold {count} values of {kind}, more than its limit of {limit}")]
    OverLimit { kind: String, count: usize, limit: usize },
    /// Not a rule's: an offer to merge that no answer came to (`protocol::customer_timer`).
    #[error("no answer to {offers} offers to merge over a day: the two stay apart")]
    Unanswered { offers: u32 },
}

#[derive(Debug, Clone)]
struct CompiledType {
    rule: TypeRule,
    blocked: Vec<Regex>,
}

/// The identity rules: types, limits, priorities, blocked values.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    types: BTreeMap<String, CompiledType>,
    blocked_values: BTreeSet<String>,
    blocked_patterns: Vec<Regex>,
}

impl Default for IdentityRules {
    /// The table of docs/identity.md.
    fn default() -> Self {
        Self::compile(RulesFile::default()).expect("the default rules compile")
    }
}

impl IdentityRules {
    pub fn from_file(path: &Path) -> Result<Self, RulesError> {
        Self::compile(read_rules(path)?)
    }

    pub fn from_toml(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|error| RulesError::Invalid(error.to_string()))?;
        Self::compile(file)
    }

    fn compile(file: RulesFile) -> Result<Self, RulesError> {
        let mut rules: BTreeMap<String, TypeRule> = [
            (USER_ID, TypeRule::new(true, 1, 1)),
            (LOYALTY_CARD, TypeRule::new(true, 1, 2)),
            (EMAIL, TypeRule::new(false, 5, 3)),
            (PHONE, TypeRule::new(false, 3, 4)),
            (ANONYMOUS_ID, TypeRule::new(false, 100, 5)),
            (DEVICE_ID, TypeRule::new(false, 100, 5)),
            (CUSTOMER_ID, TypeRule::new(false, 100, 6)),
        ]
        .into_iter()
        .map(|(kind, rule)| (kind.to_owned(), rule))
        .collect();
        rules.extend(file.types);
        let mut types = BTreeMap::new();
        for (kind, rule) in rules {
            if kind != CUSTOMER_ID {
                omnistream_model::identifiers::check_type(&kind)
                    .map_err(|error| RulesError::Invalid(format!("types.{kind}: {error}")))?;
            }
            if rule.limit == 0 {
                return Err(RulesError::Invalid(format!(
                    "types.{kind}: a limit of 0 links nothing; leave the type out"
                )));
            }
            if rule.strong && rule.limit != 1 {
                return Err(RulesError::Invalid(format!(
                    "types.{kind}: a strong type identifies one person, its limit must be 1 (not {})",
                    rule.limit
                )));
            }
            let blocked = rule
                .blocked
                .iter()
                .map(|pattern| {
                    whole_match(pattern)
                        .map_err(|error| RulesError::Invalid(format!("types.{kind}.blocked: {error}")))
                })
                .collect::<Result<_, _>>()?;
            types.insert(kind, CompiledType { rule, blocked });
        }
        let blocked_values = match file.blocked_values {
            Some(values) => values.iter().map(|value| value.trim().to_lowercase()).collect(),
            None => DEFAULT_BLOCKED_VALUES.iter().map(|value| (*value).to_owned()).collect(),
        };
        let patterns = file.blocked_patterns.unwrap_or_else(|| {
            DEFAULT_BLOCKED_PATTERNS.iter().map(|pattern| (*pattern).to_owned()).collect()
        });
        let blocked_patterns = patterns
            .iter()
            .map(|pattern| {
                whole_match(pattern)
                    .map_err(|error| RulesError::Invalid(format!("blocked_patterns: {error}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { types, blocked_values, blocked_patterns })
    }

    pub fn rule(&self, kind: &str) -> Option<&TypeRule> {
        self.types.get(kind).map(|compiled| &compiled.rule)
    }

    /// The identifier as resolution uses it (normalized), or why it takes no part.
    pub fn linkable(&self, identifier: &Identifier) -> Result<Identifier, Skipped> {
        let Some(compiled) = self.types.get(&identifier.kind) else { return Err(Skipped::UnknownType) };
        let value = if identifier.kind == CUSTOMER_ID {
            // Kept as sent: it is the customer's id in every record (a blank one links nothing).
            if identifier.value.trim().is_empty() {
                return Err(Skipped::Blocked("a blank customer id".into()));
            }
            identifier.value.clone()
        } else {
            normalize(&identifier.kind, &identifier.value).map_err(Skipped::Malformed)?
        };
        if self.blocked_values.contains(&value.to_lowercase()) {
            return Err(Skipped::Blocked(format!("{value:?} is a placeholder")));
        }
        if let Some(pattern) =
            self.blocked_patterns.iter().chain(&compiled.blocked).find(|p| p.is_match(&value))
        {
            return Err(Skipped::Blocked(format!("{value:?} matches {}", pattern.as_str())));
        }
        Ok(Identifier { kind: identifier.kind.clone(), value })
    }

    /// The event's identifiers sorted into those that link (strongest first) and those skipped.
    pub fn sort(&self, event: &TouchpointEvent) -> Sorted {
        let mut sorted = Sorted::default();
        for identifier in &event.identifiers {
            match self.linkable(identifier) {
                Ok(linked) if !sorted.linked.contains(&linked) => sorted.linked.push(linked),
                Ok(_) => {}
                Err(skipped) => sorted.skipped.push((identifier.clone(), skipped)),
            }
        }
        sorted.linked.sort_by_key(|identifier| (self.priority(&identifier.kind), identifier.clone()));
        sorted
    }

    /// Where the event is resolved: its strongest linkable identifier, else its `customer_id`.
    pub fn route(&self, event: &TouchpointEvent) -> Route {
        if let Some(strongest) = self.sort(event).linked.into_iter().next() {
            return Route::By(strongest);
        }
        match self.linkable(&Identifier::new(CUSTOMER_ID, event.customer_id.as_str())) {
            Ok(customer) => Route::By(customer),
            Err(_) => Route::Unlinked,
        }
    }

    fn priority(&self, kind: &str) -> u32 {
        self.rule(kind).map_or(u32::MAX, |rule| rule.priority)
    }

    /// Whether a customer holding `held` may take `incoming` too: never two different values of a
    /// strong type, never more values of a type than its limit. The first refusal by priority.
    pub fn may_join(&self, held: &Holdings, incoming: &Holdings) -> Result<(), Refusal> {
        let mut kinds: Vec<&String> = incoming.keys().collect();
        kinds.sort_by_key(|kind| (self.priority(kind), *kind));
        for kind in kinds {
            let Some(rule) = self.rule(kind) else { continue };
            let (Some(ours), Some(theirs)) = (held.get(kind), incoming.get(kind)) else { continue };
            let union: BTreeSet<&String> = ours.iter().chain(theirs).collect();
            if union.len() <= rule.limit {
                continue;
            }
            return Err(if rule.strong {
                Refusal::DifferentStrong { kind: kind.clone(), values: union.into_iter().cloned().collect() }
            } else {
                Refusal::OverLimit { kind: kind.clone(), count: union.len(), limit: rule.limit }
            });
        }
        Ok(())
    }
}

fn whole_match(pattern: &str) -> Result<Regex, regex_lite::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use omnistream_model::{Channel, EventPayload};

    use super::*;

    fn event(customer_id: &str, identifiers: &[(&str, &str)]) -> TouchpointEvent {
        TouchpointEvent {
            event_id: "e-1".into(),
            customer_id: customer_id.into(),
            occurred_at: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            channel: Channel::Web,
            source: None,
            payload: EventPayload::Identify,
            context: BTreeMap::new(),
            identifiers: identifiers.iter().map(|(kind, value)| Identifier::new(*kind, *value)).collect(),
        }
    }

    /// Identifiers as (type, value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    fn id(kind: &str, value: &str) -> Identifier {
        Identifier::new(kind, value)
    }

    fn holdings(pairs: &[(&str, &str)]) -> Holdings {
        let mut holdings = Holdings::new();
        for (kind, value) in pairs {
            holdings.entry((*kind).to_owned()).or_default().insert((*value).to_owned());
        }
        holdings
    }

    #[test]
    fn given_an_events_identifiers_when_routed_then_the_strongest_usable_one_decides() {
        let rules = IdentityRules::default();
        let cases: &[(&str, Pairs, Route)] = &[
            (
                "c-1",
                &[("anonymous_id", "a1"), ("email", "Ann@X.com"), ("user_id", "U-1")],
                Route::By(id(USER_ID, "U-1")),
            ),
            ("c-1", &[("anonymous_id", "a1"), ("email", " Ann@X.com")], Route::By(id(EMAIL, "ann@x.com"))),
            ("c-1", &[("email", "b@x.com"), ("email", "a@x.com")], Route::By(id(EMAIL, "a@x.com"))),
            (
                "c-1",
                &[("email", "test@example.com"), ("anonymous_id", "a1")],
                Route::By(id(ANONYMOUS_ID, "a1")),
            ),
            ("c-1", &[("crm_account", "42")], Route::By(id(CUSTOMER_ID, "c-1"))),
            ("c-1", &[("phone", "415 555 0100")], Route::By(id(CUSTOMER_ID, "c-1"))),
            ("c-1", &[], Route::By(id(CUSTOMER_ID, "c-1"))),
            ("guest", &[("user_id", "null")], Route::Unlinked),
        ];
        for (customer_id, identifiers, expected) in cases {
            assert_eq!(
                &rules.route(&event(customer_id, identifiers)),
                expected,
                "{customer_id} {identifiers:?}"
            );
        }
    }

    #[test]
    fn given_placeholders_when_sorted_then_they_are_skipped_with_the_reason() {
        let rules = IdentityRules::default();
        let sorted = rules.sort(&event(
            "c-1",
            &[
                ("user_id", "NULL"),
                ("device_id", "00000000-0000-0000-0000-000000000000"),
                ("email", "Test@Example.com"),
                ("anonymous_id", "undefined"),
                ("phone", "+1 415 555 0100"),
                ("phone", "+14155550100"),
                ("crm_account", "42"),
            ],
        ));
        assert_eq!(sorted.linked, [id(PHONE, "+14155550100")], "normalized, once");
        let reasons: Vec<String> =
            sorted.skipped.iter().map(|(identifier, why)| format!("{identifier}: {why}")).collect();
        assert_eq!(
            reasons,
            [
                "user_id:NULL: its value is blocked (\"NULL\" is a placeholder)",
                "device_id:00000000-0000-0000-0000-000000000000: its value is blocked (\"00000000-0000-0000-0000-000000000000\" matches ^(?:[0-]+)$)",
                "email:Test@Example.com: its value is blocked (\"test@example.com\" is a placeholder)",
                "anonymous_id:undefined: its value is blocked (\"undefined\" is a placeholder)",
                "crm_account:42: its type is not in the identity rules",
            ]
        );
    }

    #[test]
    fn given_two_customers_when_joined_then_strong_ids_and_limits_decide() {
        let rules = IdentityRules::default();
        let cases: &[(&str, Pairs, Pairs, Result<(), Refusal>)] = &[
            (
                "an anonymous visitor who logged in, and a card holder with the same email",
                &[("user_id", "U-1"), ("anonymous_id", "a1"), ("email", "ann@x.com")],
                &[("loyalty_card", "C-1"), ("email", "ann@x.com")],
                Ok(()),
            ),
            (
                "two card holders sharing a family email",
                &[("loyalty_card", "C-1"), ("email", "family@x.com")],
                &[("loyalty_card", "C-2"), ("email", "family@x.com")],
                Err(Refusal::DifferentStrong {
                    kind: "loyalty_card".into(),
                    values: vec!["C-1".into(), "C-2".into()],
                }),
            ),
            (
                "two accounts: the user id decides before the card",
                &[("user_id", "U-1"), ("loyalty_card", "C-1")],
                &[("user_id", "U-2"), ("loyalty_card", "C-2")],
                Err(Refusal::DifferentStrong {
                    kind: "user_id".into(),
                    values: vec!["U-1".into(), "U-2".into()],
                }),
            ),
            ("the same account seen twice", &[("user_id", "U-1")], &[("user_id", "U-1")], Ok(())),
            (
                "a sixth email",
                &[("email", "1@x.com"), ("email", "2@x.com"), ("email", "3@x.com"), ("email", "4@x.com")],
                &[("email", "5@x.com"), ("email", "6@x.com")],
                Err(Refusal::OverLimit { kind: "email".into(), count: 6, limit: 5 }),
            ),
            ("a custom type the rules do not list", &[("crm", "1")], &[("crm", "2")], Ok(())),
        ];
        for (story, held, incoming, expected) in cases {
            assert_eq!(&rules.may_join(&holdings(held), &holdings(incoming)), expected, "{story}");
        }
    }

    #[test]
    fn given_a_rules_file_when_read_then_it_overrides_by_type_and_refuses_what_cannot_work() {
        let rules = IdentityRules::from_toml(
            "blocked_values = [\"nobody\"]\n[types.email]\nlimit = 2\npriority = 3\nblocked = [\".*@example\\\\.org\"]\n[types.crm_account]\nstrong = true\nlimit = 1\npriority = 0\n",
        )
        .unwrap();
        assert_eq!(rules.rule(EMAIL).map(|rule| rule.limit), Some(2));
        assert_eq!(
            rules.route(&event("c-1", &[("user_id", "U-1"), ("crm_account", "7")])),
            Route::By(id("crm_account", "7"))
        );
        assert!(matches!(rules.linkable(&id(EMAIL, "a@example.org")), Err(Skipped::Blocked(_))));
        assert!(matches!(rules.linkable(&id(USER_ID, "Nobody")), Err(Skipped::Blocked(_))));
        assert_eq!(
            rules.linkable(&id(USER_ID, "null")),
            Ok(id(USER_ID, "null")),
            "the file replaced the default list"
        );
        for (text, complaint) in [
            ("[types.user_id]\nstrong = true\nlimit = 2\npriority = 1\n", "its limit must be 1"),
            ("[types.email]\nlimit = 0\npriority = 3\n", "a limit of 0"),
            ("[types.Email]\nlimit = 1\npriority = 3\n", "no identifier type"),
            ("blocked_patterns = [\"(\"]\n", "blocked_patterns"),
            ("[types.email]\nlimit = 5\n", "priority"),
            ("unknown_key = 1\n", "unknown_key"),
        ] {
            let error = IdentityRules::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(complaint), "{text:?}: {error}");
        }
    }
}
