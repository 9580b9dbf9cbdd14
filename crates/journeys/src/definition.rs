//! Journey definitions (docs/journeys.md, "Writing a journey"): the TOML file a marketer writes,
//! read into a checked [`Journey`] or refused with every problem found, each at its line.
//!
//! Reading happens in two passes: serde with `deny_unknown_fields` refuses what is not the shape
//! (a misspelt key, a channel that does not exist, a number where a duration belongs), then
//! [`check`] refuses what is the shape but cannot run: a step that names a step that does not
//! exist, a step nothing leads to, a loop with no wait in it (it would spin at one instant), a wait
//! for an event with no timeout (it would wait forever), a duration that does not parse.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::NaiveTime;
use omnistream_model::{Channel, EventType};
use serde::Deserialize;
use toml::Spanned;

/// Most steps a journey has: a flow longer than this is several journeys.
pub const MAX_STEPS: usize = 100;
/// Shortest duration: a timer fires by the millisecond partition clock, and a wait shorter than
/// this is no wait (a loop through it would spin).
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// Longest duration a journey waits for anything: timers are state, kept per customer.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most days a local-time wait looks ahead.
pub const MAX_DAYS_LATER: u32 = 31;

/// One problem of a definition file, at its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// A file that is not a journey that can run: every problem found, in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

/// A checked journey: what the service runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    /// Stable across versions: `[a-z0-9-]`, at most 64 characters.
    pub id: String,
    /// Raised by every edit that is published; an entry stays on the version it entered with.
    pub version: u32,
    pub name: Option<String>,
    pub entry: Entry,
    /// Events that end the journey at once, whatever step the customer is in.
    pub exit_when: Vec<EventFilter>,
    /// Events that end it at once as converted (counted apart from other exits).
    pub goals: Vec<EventFilter>,
    /// The first step is where an entry starts.
    pub steps: Vec<Step>,
}

/// How customers enter.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub trigger: Trigger,
    pub reentry: Reentry,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// One of the customer's own events.
    Event(EventFilter),
    /// A product's catalog event: every customer who viewed it within `within`.
    Catalog { change: CatalogChange, within: Duration },
}

/// The catalog events a journey can start from (`catalog.events.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogChange {
    /// `product_price_changed` to a lower price.
    PriceDrop,
    /// `product_restocked`.
    BackInStock,
}

impl CatalogChange {
    /// As written in a definition.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogChange::PriceDrop => "price_drop",
            CatalogChange::BackInStock => "back_in_stock",
        }
    }
}

/// Whether a customer may enter again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reentry {
    /// Never again (the default: a flow that repeats by mistake is the complaint users have most).
    Once,
    /// Again once this long has passed since the last entry ended.
    After(Duration),
    /// Once per value of the trigger event's property (an order id), several at the same time.
    PerKey(String),
}

/// Which events match.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFilter {
    pub event: EventType,
    /// Empty: any channel.
    pub channels: Vec<Channel>,
    pub conditions: Vec<Condition>,
    /// Only an engagement with a message this journey decided (its `message_id`).
    pub of_this_journey: bool,
}

/// A test of one property of the event or one trait of the customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Property(String),
    Trait(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Scalar),
    OneOf(Vec<Scalar>),
    AtLeast(f64),
    AtMost(f64),
    StartsWith(String),
    Exists(bool),
}

/// A value a condition compares with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

/// One step; `next` is an index into [`Journey::steps`], `None` the journey's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        channels: ChannelChoice,
        template: String,
        when_suppressed: WhenSuppressed,
        next: Option<usize>,
    },
    Wait {
        wait: Wait,
        next: Option<usize>,
    },
    /// Waits for a matching event, at most `timeout`; then `on_timeout`.
    WaitForEvent {
        filter: EventFilter,
        timeout: Duration,
        next: Option<usize>,
        on_timeout: Option<usize>,
    },
    Branch {
        condition: BranchCondition,
        then: Option<usize>,
        otherwise: Option<usize>,
    },
    Exit {
        reason: String,
    },
}

/// Where a send goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelChoice {
    Fixed(Channel),
    /// The allowed one of these the customer's affinity ranks first.
    BestOf(Vec<Channel>),
    /// Every one of these that is allowed.
    EveryAllowed(Vec<Channel>),
}

/// What a send does when suppression does not allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenSuppressed {
    /// Go on to the next step without sending (the default).
    Skip,
    /// Leave the journey.
    Exit,
    /// Wait until allowed, at most this long, then skip.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    For(Duration),
    /// Until `time` in the customer's time zone, `days_later` days after the local date the wait
    /// starts on (0: the next such time, today if it is still ahead).
    UntilLocalTime {
        time: NaiveTime,
        days_later: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum BranchCondition {
    /// A matching event happened since the customer entered.
    Happened(EventFilter),
    /// A trait of the customer passes a test.
    Trait(Condition),
    /// The customer's affinity ranks this channel first.
    AffinityFirst(Channel),
}

// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJourney {
    id: Spanned<String>,
    version: Spanned<i64>,
    name: Option<String>,
    entry: Spanned<RawEntry>,
    #[serde(default)]
    exit_when: Vec<Spanned<RawFilter>>,
    #[serde(default)]
    goals: Vec<Spanned<RawFilter>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    event: Option<EventType>,
    #[serde(default)]
    channel: Vec<Channel>,
    #[serde(default, rename = "where")]
    conditions: Vec<Spanned<RawCondition>>,
    catalog: Option<CatalogChange>,
    within: Option<Spanned<String>>,
    /// `"once"`, `{ after = "30d" }` or `{ per = "order_id" }`: read by [`Checker::entry`].
    reentry: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    event: EventType,
    #[serde(default)]
    channel: Vec<Channel>,
    #[serde(default, rename = "where")]
    conditions: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    of_this_journey: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    property: Option<String>,
    #[serde(rename = "trait")]
    trait_name: Option<String>,
    equals: Option<Scalar>,
    one_of: Option<Vec<Scalar>>,
    at_least: Option<f64>,
    at_most: Option<f64>,
    starts_with: Option<String>,
    exists: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    send: Option<Spanned<RawSend>>,
    wait: Option<Spanned<RawWait>>,
    branch: Option<Spanned<RawBranch>>,
    exit: Option<RawExit>,
    next: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSend {
    channel: Option<Channel>,
    best_of: Option<Vec<Channel>>,
    every_allowed: Option<Vec<Channel>>,
    template: String,
    when_suppressed: Option<RawWhenSuppressed>,
    max_wait: Option<Spanned<String>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawWhenSuppressed {
    Skip,
    Exit,
    Wait,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    #[serde(rename = "for")]
    duration: Option<Spanned<String>>,
    until_local_time: Option<Spanned<String>>,
    days_later: Option<u32>,
    event: Option<Spanned<RawFilter>>,
    timeout: Option<Spanned<String>>,
    on_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    #[serde(rename = "if")]
    condition: Spanned<RawBranchCondition>,
    then: Spanned<String>,
    #[serde(rename = "else")]
    otherwise: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranchCondition {
    happened: Option<Spanned<RawFilter>>,
    #[serde(rename = "trait")]
    trait_test: Option<Spanned<RawCondition>>,
    affinity_first: Option<Channel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExit {
    reason: Option<String>,
}

/// Reads and checks one definition file.
pub fn check(text: &str) -> Result<Journey, Problems> {
    let raw: RawJourney = toml::from_str(text).map_err(|error| {
        let line = error.span().map_or(1, |span| line_of(text, span.start));
        Problems(vec![Problem { line, message: error.message().trim().to_owned() }])
    })?;
    let mut checker = Checker { text, problems: Vec::new() };
    let journey = checker.journey(raw);
    let mut problems = checker.problems;
    if problems.is_empty()
        && let Some(journey) = journey
    {
        return Ok(journey);
    }
    problems.sort_by_key(|problem| problem.line);
    Err(Problems(problems))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|byte| **byte == b'\n').count() + 1
}

/// Collects problems; each method returns what it could read (`None` after a problem).
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem<T>(&mut self, span: &Spanned<T>, message: impl Into<String>) {
        let line = line_of(self.text, span.span().start);
        self.problems.push(Problem { line, message: message.into() });
    }

    fn problem_at(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem { line, message: message.into() });
    }

    fn journey(&mut self, raw: RawJourney) -> Option<Journey> {
        let id = raw.id.get_ref();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            self.problem(&raw.id, format!("id {id:?}: use 1 to 64 of a-z, 0-9 and -"));
        }
        // At most 2^31 - 1: the records carry it as an Avro int.
        let version = u32::try_from(*raw.version.get_ref())
            .ok()
            .filter(|version| *version >= 1 && i32::try_from(*version).is_ok());
        if version.is_none() {
            self.problem(
                &raw.version,
                "version: a whole number from 1 to 2147483647, raised by every published edit",
            );
        }
        let entry = self.entry(raw.entry);
        let exit_when = self.filters(raw.exit_when);
        let goals = self.filters(raw.goals);
        let steps = self.steps(raw.steps);
        Some(Journey {
            id: raw.id.into_inner(),
            version: version?,
            name: raw.name,
            entry: entry?,
            exit_when: exit_when?,
            goals: goals?,
            steps: steps?,
        })
    }

    fn entry(&mut self, spanned: Spanned<RawEntry>) -> Option<Entry> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let at = Spanned::new(span, ());
        let conditions = self.conditions(raw.conditions);
        let trigger = match (raw.event, raw.catalog) {
            (Some(event), None) => {
                if let Some(within) = &raw.within {
                    self.problem(within, "entry.within is for a catalog trigger");
                }
                Trigger::Event(EventFilter {
                    event,
                    channels: raw.channel,
                    conditions: conditions?,
                    of_this_journey: false,
                })
            }
            (None, Some(change)) => {
                if !raw.channel.is_empty() || conditions.as_ref().is_none_or(|c| !c.is_empty()) {
                    self.problem(
                        &at,
                        "entry: a catalog trigger takes no channel or where (it is the product's event)",
                    );
                }
                let Some(within) = raw.within else {
                    self.problem(
                        &at,
                        "entry: a catalog trigger needs within = \"30d\" (how recent a view counts)",
                    );
                    return None;
                };
                let window = self.duration(&within, "entry.within")?;
                if window > crate::core::INTEREST_KEPT_FOR {
                    self.problem(&within, "entry.within: at most 90d (how long a view is kept)");
                    return None;
                }
                Trigger::Catalog { change, within: window }
            }
            (Some(_), Some(_)) => {
                self.problem(&at, "entry: event or catalog, not both");
                return None;
            }
            (None, None) => {
                self.problem(&at, "entry: an event = \"order_placed\" or a catalog = \"price_drop\" trigger");
                return None;
            }
        };
        let reentry = match raw.reentry {
            None => Reentry::Once,
            Some(spanned) => {
                let text = |value: &toml::Value| value.as_str().map(str::to_owned);
                let policy = match spanned.get_ref() {
                    toml::Value::String(keyword) if keyword == "once" => Some(Reentry::Once),
                    toml::Value::Table(table) if table.len() == 1 => match table.iter().next() {
                        Some((key, value)) if key == "after" => match text(value) {
                            Some(after) => {
                                let after = Spanned::new(spanned.span(), after);
                                Some(Reentry::After(self.duration(&after, "entry.reentry.after")?))
                            }
                            None => None,
                        },
                        Some((key, value)) if key == "per" && matches!(trigger, Trigger::Event(_)) => {
                            text(value).filter(|per| !per.is_empty()).map(Reentry::PerKey)
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let Some(policy) = policy else {
                    self.problem(
                        &spanned,
                        "entry.reentry: \"once\", { after = \"30d\" }, or, for an event trigger, { per = \"order_id\" } (a property of that event)",
                    );
                    return None;
                };
                policy
            }
        };
        Some(Entry { trigger, reentry })
    }

    fn filters(&mut self, raw: Vec<Spanned<RawFilter>>) -> Option<Vec<EventFilter>> {
        let filters: Vec<Option<EventFilter>> = raw.into_iter().map(|filter| self.filter(filter)).collect();
        filters.into_iter().collect()
    }

    fn filter(&mut self, spanned: Spanned<RawFilter>) -> Option<EventFilter> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let engagement = matches!(
            raw.event,
            EventType::MessageDelivered
                | EventType::MessageOpened
                | EventType::MessageClicked
                | EventType::MessageBounced
                | EventType::SpamReported
        );
        if raw.of_this_journey && !engagement {
            let message = format!(
                "of_this_journey is for events about a message (message_opened, message_clicked, ...), not {}",
                raw.event
            );
            self.problem(&Spanned::new(span, ()), message);
        }
        Some(EventFilter {
            event: raw.event,
            channels: raw.channel,
            conditions: self.conditions(raw.conditions)?,
            of_this_journey: raw.of_this_journey,
        })
    }

    fn conditions(&mut self, raw: Vec<Spanned<RawCondition>>) -> Option<Vec<Condition>> {
        let conditions: Vec<Option<Condition>> =
            raw.into_iter().map(|condition| self.condition(condition)).collect();
        conditions.into_iter().collect()
    }

    fn condition(&mut self, spanned: Spanned<RawCondition>) -> Option<Condition> {
        let raw = spanned.get_ref();
        let field = match (&raw.property, &raw.trait_name) {
            (Some(property), None) if !property.is_empty() => Field::Property(property.clone()),
            (None, Some(name)) if !name.is_empty() => Field::Trait(name.clone()),
            _ => {
                self.problem(&spanned, "a condition tests one property = \"...\" or one trait = \"...\"");
                return None;
            }
        };
        let mut tests = Vec::new();
        if let Some(value) = &raw.equals {
            tests.push(Test::Equals(value.clone()));
        }
        if let Some(values) = &raw.one_of {
            tests.push(Test::OneOf(values.clone()));
        }
        if let Some(bound) = raw.at_least {
            tests.push(Test::AtLeast(bound));
        }
        if let Some(bound) = raw.at_most {
            tests.push(Test::AtMost(bound));
        }
        if let Some(prefix) = &raw.starts_with {
            tests.push(Test::StartsWith(prefix.clone()));
        }
        if let Some(exists) = raw.exists {
            tests.push(Test::Exists(exists));
        }
        if tests.len() != 1 {
            self.problem(
                &spanned,
                "a condition has one test: equals, one_of, at_least, at_most, starts_with or exists",
            );
            return None;
        }
        Some(Condition { field, test: tests.remove(0) })
    }

    fn duration(&mut self, spanned: &Spanned<String>, what: &str) -> Option<Duration> {
        let text = spanned.get_ref();
        // humantime reads `M` as 30.44 days and `y` as 365.25: neither is a calendar month or
        // year (SPEC 4), and `1M` is too close to `1m`.
        if text.contains('M') || text.contains('y') || text.contains("month") {
            self.problem(
                spanned,
                format!("{what} {text:?}: months and years have no fixed length: write days (30d)"),
            );
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(duration) if duration >= MIN_DURATION && duration <= MAX_DURATION => Some(duration),
            Ok(_) => {
                self.problem(spanned, format!("{what}: at least 1s and at most 366 days"));
                None
            }
            Err(error) => {
                self.problem(
                    spanned,
                    format!("{what} {:?}: {error} (write 90s, 4h, 30d)", spanned.get_ref()),
                );
                None
            }
        }
    }

    fn steps(&mut self, spanned: Spanned<Vec<Spanned<RawStep>>>) -> Option<Vec<Step>> {
        let at = Spanned::new(spanned.span(), ());
        let raw = spanned.into_inner();
        if raw.is_empty() || raw.len() > MAX_STEPS {
            self.problem(&at, format!("a journey has 1 to {MAX_STEPS} [[steps]]"));
            return None;
        }
        let mut index = BTreeMap::new();
        for (position, step) in raw.iter().enumerate() {
            let id = step.get_ref().id.get_ref();
            if id.is_empty() || id.len() > 64 {
                self.problem(&step.get_ref().id, "a step id has 1 to 64 characters");
            } else if id == "end" {
                self.problem(&step.get_ref().id, "\"end\" is where a journey ends: name the step otherwise");
            } else if index.insert(id.clone(), position).is_some() {
                self.problem(&step.get_ref().id, format!("step {id:?} twice"));
            }
        }
        let count = raw.len();
        let lines: Vec<usize> = raw.iter().map(|step| line_of(self.text, step.span().start)).collect();
        let steps: Vec<Option<Step>> = raw
            .into_iter()
            .enumerate()
            .map(|(position, step)| {
                let following = (position + 1 < count).then_some(position + 1);
                self.step(step, following, &index)
            })
            .collect();
        let steps: Vec<Step> = steps.into_iter().collect::<Option<_>>()?;
        self.reachable_and_waiting(&steps, &lines);
        Some(steps)
    }

    /// A target step id: its index, or `None` for `"end"`.
    fn target(
        &mut self,
        spanned: &Spanned<String>,
        index: &BTreeMap<String, usize>,
    ) -> Option<Option<usize>> {
        let name = spanned.get_ref();
        if name == "end" {
            return Some(None);
        }
        match index.get(name) {
            Some(position) => Some(Some(*position)),
            None => {
                let known: Vec<&str> = index.keys().map(String::as_str).collect();
                self.problem(spanned, format!("no step {name:?} (steps: {}, or \"end\")", known.join(", ")));
                None
            }
        }
    }

    fn step(
        &mut self,
        spanned: Spanned<RawStep>,
        following: Option<usize>,
        index: &BTreeMap<String, usize>,
    ) -> Option<Step> {
        let at = Spanned::new(spanned.span(), ());
        let raw = spanned.into_inner();
        let id = raw.id.get_ref().clone();
        let kinds = usize::from(raw.send.is_some())
            + usize::from(raw.wait.is_some())
            + usize::from(raw.branch.is_some())
            + usize::from(raw.exit.is_some());
        if kinds != 1 {
            self.problem(&at, format!("step {id:?}: one of send, wait, branch or exit"));
            return None;
        }
        let next = match &raw.next {
            Some(next) if raw.branch.is_some() || raw.exit.is_some() => {
                self.problem(next, format!("step {id:?}: a branch or an exit has no next"));
                return None;
            }
            Some(next) => self.target(next, index),
            None => Some(following),
        };
        // The action is checked even when its next is not, so that every problem is listed.
        let (next_known, next) = (next.is_some(), next.flatten());
        let action = if let Some(send) = raw.send {
            self.send(&id, send, next)?
        } else if let Some(wait) = raw.wait {
            self.wait(&id, wait, next, index)?
        } else if let Some(branch) = raw.branch {
            let RawBranch { condition, then, otherwise } = branch.into_inner();
            let condition = self.branch_condition(&id, condition);
            let then = self.target(&then, index);
            let otherwise = self.target(&otherwise, index);
            Action::Branch { condition: condition?, then: then?, otherwise: otherwise? }
        } else {
            let reason = raw.exit.and_then(|exit| exit.reason).unwrap_or_else(|| format!("exit at {id}"));
            Action::Exit { reason }
        };
        next_known.then_some(Step { id, action })
    }

    fn send(&mut self, id: &str, spanned: Spanned<RawSend>, next: Option<usize>) -> Option<Action> {
        let at = Spanned::new(spanned.span(), ());
        let raw = spanned.into_inner();
        let channels = match (raw.channel, raw.best_of, raw.every_allowed) {
            (Some(channel), None, None) => Some(ChannelChoice::Fixed(channel)),
            (None, Some(list), None) => self.messaging(id, &at, list).map(ChannelChoice::BestOf),
            (None, None, Some(list)) => self.messaging(id, &at, list).map(ChannelChoice::EveryAllowed),
            _ => {
                self.problem(&at, format!("step {id:?}: send has one of channel, best_of or every_allowed"));
                None
            }
        };
        if let Some(ChannelChoice::Fixed(channel)) = &channels
            && !Channel::MESSAGING.contains(channel)
        {
            self.problem(
                &at,
                format!("step {id:?}: omnistream sends on email, sms, whatsapp and push, not {channel}"),
            );
        }
        if raw.template.trim().is_empty() || raw.template.len() > 128 {
            self.problem(&at, format!("step {id:?}: a template id of 1 to 128 characters"));
        }
        let when_suppressed = match (raw.when_suppressed, raw.max_wait) {
            (None | Some(RawWhenSuppressed::Skip), None) => Some(WhenSuppressed::Skip),
            (Some(RawWhenSuppressed::Exit), None) => Some(WhenSuppressed::Exit),
            (Some(RawWhenSuppressed::Wait), Some(max)) => {
                self.duration(&max, &format!("step {id:?}: max_wait")).map(WhenSuppressed::Wait)
            }
            (Some(RawWhenSuppressed::Wait), None) => {
                self.problem(&at, format!("step {id:?}: when_suppressed = \"wait\" needs max_wait = \"3d\""));
                None
            }
            (_, Some(max)) => {
                self.problem(&max, format!("step {id:?}: max_wait is for when_suppressed = \"wait\""));
                None
            }
        };
        Some(Action::Send {
            channels: channels?,
            template: raw.template,
            when_suppressed: when_suppressed?,
            next,
        })
    }

    fn messaging(&mut self, id: &str, at: &Spanned<()>, list: Vec<Channel>) -> Option<Vec<Channel>> {
        let distinct: BTreeSet<&Channel> = list.iter().collect();
        if list.is_empty() || distinct.len() != list.len() {
            self.problem(at, format!("step {id:?}: a list of different channels, at least one"));
            return None;
        }
        if let Some(channel) = list.iter().find(|channel| !Channel::MESSAGING.contains(channel)) {
            self.problem(
                at,
                format!("step {id:?}: omnistream sends on email, sms, whatsapp and push, not {channel}"),
            );
            return None;
        }
        Some(list)
    }

    fn wait(
        &mut self,
        id: &str,
        spanned: Spanned<RawWait>,
        next: Option<usize>,
        index: &BTreeMap<String, usize>,
    ) -> Option<Action> {
        let at = Spanned::new(spanned.span(), ());
        let raw = spanned.into_inner();
        let event_only = raw.timeout.is_some() || raw.on_timeout.is_some();
        match (raw.duration, raw.until_local_time, raw.event) {
            (Some(duration), None, None) if raw.days_later.is_none() && !event_only => {
                let duration = self.duration(&duration, &format!("step {id:?}: wait.for"))?;
                Some(Action::Wait { wait: Wait::For(duration), next })
            }
            (None, Some(time), None) if !event_only => {
                let days_later = raw.days_later.unwrap_or(0);
                if days_later > MAX_DAYS_LATER {
                    self.problem(&at, format!("step {id:?}: days_later at most {MAX_DAYS_LATER}"));
                    return None;
                }
                let Ok(parsed) = NaiveTime::parse_from_str(time.get_ref(), "%H:%M") else {
                    self.problem(
                        &time,
                        format!("step {id:?}: until_local_time {:?} is not HH:MM", time.get_ref()),
                    );
                    return None;
                };
                Some(Action::Wait { wait: Wait::UntilLocalTime { time: parsed, days_later }, next })
            }
            (None, None, Some(event)) if raw.days_later.is_none() => {
                let filter = self.filter(event);
                let Some(timeout) = raw.timeout else {
                    self.problem(
                        &at,
                        format!("step {id:?}: a wait for an event needs a timeout (it would wait forever)"),
                    );
                    return None;
                };
                let timeout = self.duration(&timeout, &format!("step {id:?}: wait.timeout"));
                let on_timeout = match &raw.on_timeout {
                    Some(target) => self.target(target, index)?,
                    None => next,
                };
                Some(Action::WaitForEvent { filter: filter?, timeout: timeout?, next, on_timeout })
            }
            _ => {
                self.problem(
                    &at,
                    format!(
                        "step {id:?}: wait has one of for = \"4h\", until_local_time = \"10:00\" (with days_later), or event = {{ ... }} (with timeout and on_timeout)"
                    ),
                );
                None
            }
        }
    }

    fn branch_condition(
        &mut self,
        id: &str,
        spanned: Spanned<RawBranchCondition>,
    ) -> Option<BranchCondition> {
        let at = Spanned::new(spanned.span(), ());
        let raw = spanned.into_inner();
        match (raw.happened, raw.trait_test, raw.affinity_first) {
            (Some(filter), None, None) => self.filter(filter).map(BranchCondition::Happened),
            (None, Some(condition), None) => {
                let condition = self.condition(condition)?;
                if !matches!(condition.field, Field::Trait(_)) {
                    self.problem(&at, format!("step {id:?}: if.trait tests a trait = \"...\""));
                    return None;
                }
                Some(BranchCondition::Trait(condition))
            }
            (None, None, Some(channel)) => Some(BranchCondition::AffinityFirst(channel)),
            _ => {
                self.problem(&at, format!("step {id:?}: if has one of happened, trait or affinity_first"));
                None
            }
        }
    }

    /// Every step can be reached from the first, and every loop passes a wait (a loop of sends
    /// and branches alone would run forever at one instant).
    fn reachable_and_waiting(&mut self, steps: &[Step], lines: &[usize]) {
        let successors = |step: &Step| -> Vec<usize> {
            match &step.action {
                Action::Send { next, .. } | Action::Wait { next, .. } => next.iter().copied().collect(),
                Action::WaitForEvent { next, on_timeout, .. } => {
                    next.iter().chain(on_timeout).copied().collect()
                }
                Action::Branch { then, otherwise, .. } => then.iter().chain(otherwise).copied().collect(),
                Action::Exit { .. } => Vec::new(),
            }
        };
        let mut seen = BTreeSet::from([0]);
        let mut stack = vec![0];
        while let Some(position) = stack.pop() {
            for successor in successors(&steps[position]) {
                if seen.insert(successor) {
                    stack.push(successor);
                }
            }
        }
        for position in (0..steps.len()).filter(|position| !seen.contains(position)) {
            self.problem_at(lines[position], format!("no step leads to step {:?}", steps[position].id));
        }
        // A loop with no wait: a cycle in the graph of the steps that do not wait.
        let waits = |step: &Step| matches!(step.action, Action::Wait { .. } | Action::WaitForEvent { .. });
        let mut state = vec![0u8; steps.len()]; // 0 unvisited, 1 on the path, 2 done
        for start in 0..steps.len() {
            if state[start] != 0 || waits(&steps[start]) {
                continue;
            }
            let mut path = vec![(start, successors(&steps[start]))];
            state[start] = 1;
            while let Some((position, pending)) = path.last_mut() {
                let position = *position;
                match pending.pop() {
                    Some(successor) if waits(&steps[successor]) || state[successor] == 2 => {}
                    Some(successor) if state[successor] == 1 => {
                        let from = path.iter().position(|(p, _)| *p == successor).unwrap_or(0);
                        let names: Vec<&str> =
                            path[from..].iter().map(|(p, _)| steps[*p].id.as_str()).collect();
                        let message = format!(
                            "a loop with no wait: {} (it would run forever at once)",
                            names.join(" → ")
                        );
                        self.problem_at(lines[successor], message);
                    }
                    Some(successor) => {
                        state[successor] = 1;
                        path.push((successor, successors(&steps[successor])));
                    }
                    None => {
                        state[position] = 2;
                        path.pop();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK_FRIDAY: &str = include_str!("../../../journeys/black-friday.toml");

    fn hours(count: u64) -> Duration {
        Duration::from_secs(count * 3600)
    }

    #[test]
    fn given_the_shipped_flows_when_checked_then_each_reads_as_written() {
        for (name, text) in [
            ("black-friday", BLACK_FRIDAY),
            ("price-drop", include_str!("../../../journeys/price-drop.toml")),
            ("back-in-stock", include_str!("../../../journeys/back-in-stock.toml")),
            ("store-to-inbox", include_str!("../../../journeys/store-to-inbox.toml")),
        ] {
            let journey = check(text).unwrap_or_else(|problems| panic!("{name}:\n{problems}"));
            assert_eq!(journey.id, name);
        }
        let journey = check(BLACK_FRIDAY).unwrap();
        let ids: Vec<&str> = journey.steps.iter().map(|step| step.id.as_str()).collect();
        assert_eq!(ids, ["offer", "opened", "follow-up", "last-call", "bonus"]);
        assert_eq!(
            journey.steps[0].action,
            Action::Send {
                channels: ChannelChoice::Fixed(Channel::Email),
                template: "bf-offer".into(),
                when_suppressed: WhenSuppressed::Wait(hours(72)),
                next: Some(1),
            }
        );
        let Action::WaitForEvent { filter, timeout, next, on_timeout } = &journey.steps[1].action else {
            panic!("{:?}", journey.steps[1]);
        };
        assert_eq!(
            (filter.event, filter.of_this_journey, *timeout, *next, *on_timeout),
            (EventType::MessageOpened, true, hours(4), Some(3), Some(2))
        );
        assert_eq!(
            journey.steps[4].action,
            Action::Send {
                channels: ChannelChoice::Fixed(Channel::Push),
                template: "bf-bonus".into(),
                when_suppressed: WhenSuppressed::Skip,
                next: None,
            }
        );
        assert_eq!(journey.entry.reentry, Reentry::Once);
        assert_eq!(journey.goals[0].event, EventType::OrderPlaced);
        let store = check(include_str!("../../../journeys/store-to-inbox.toml")).unwrap();
        assert_eq!(store.entry.reentry, Reentry::PerKey("order_id".into()));
        assert_eq!(
            store.steps[0].action,
            Action::Wait {
                wait: Wait::UntilLocalTime {
                    time: NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
                    days_later: 1
                },
                next: Some(1)
            }
        );
    }

    /// A file with one step changed: `steps` replaces everything from the first `[[steps]]`.
    fn with_steps(steps: &str) -> String {
        format!("id = \"j\"\nversion = 1\n[entry]\nevent = \"order_placed\"\n{steps}")
    }

    #[test]
    fn given_a_broken_file_when_checked_then_each_problem_is_named_at_its_line() {
        let cases: Vec<(&str, String, usize, &str)> = vec![
            ("a misspelt key", with_steps("[[steps]]\nid = \"a\"\nsned = { channel = \"email\", template = \"t\" }\n"), 7, "unknown field `sned`"),
            ("a channel that does not exist", with_steps("[[steps]]\nid = \"a\"\nsend = { channel = \"fax\", template = \"t\" }\n"), 7, "unknown variant `fax`"),
            ("an event type that does not exist", "id = \"j\"\nversion = 1\n[entry]\nevent = \"order_paced\"\n".into(), 4, "unknown variant `order_paced`"),
            ("a channel one cannot send on", with_steps("[[steps]]\nid = \"a\"\nsend = { channel = \"store\", template = \"t\" }\n"), 7, "not store"),
            ("a target that does not exist", with_steps("[[steps]]\nid = \"a\"\nsend = { channel = \"email\", template = \"t\" }\nnext = \"b\"\n"), 8, "no step \"b\""),
            ("two steps with one id", with_steps("[[steps]]\nid = \"a\"\nwait = { for = \"1h\" }\n[[steps]]\nid = \"a\"\nwait = { for = \"1h\" }\n"), 9, "step \"a\" twice"),
            ("a wait for an event with no timeout", with_steps("[[steps]]\nid = \"a\"\nwait = { event = { event = \"message_opened\" } }\n"), 7, "needs a timeout"),
            ("a duration that does not parse", with_steps("[[steps]]\nid = \"a\"\nwait = { for = \"4 hourz\" }\n"), 7, "wait.for \"4 hourz\""),
            ("a zero duration", with_steps("[[steps]]\nid = \"a\"\nwait = { for = \"0s\" }\n"), 7, "at least 1s"),
            ("a wait under a second", with_steps("[[steps]]\nid = \"a\"\nwait = { for = \"500ms\" }\n"), 7, "at least 1s"),
            ("a month", with_steps("[[steps]]\nid = \"a\"\nwait = { for = \"1M\" }\n"), 7, "months and years"),
            ("a step named end", with_steps("[[steps]]\nid = \"end\"\nexit = {}\n"), 6, "\"end\" is where a journey ends"),
            ("a version over an Avro int", "id = \"j\"\nversion = 2147483648\n[entry]\nevent = \"page_viewed\"\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 2, "version"),
            ("a local time that is not one", with_steps("[[steps]]\nid = \"a\"\nwait = { until_local_time = \"25:00\" }\n"), 7, "is not HH:MM"),
            ("a step nothing leads to", with_steps("[[steps]]\nid = \"a\"\nexit = {}\n[[steps]]\nid = \"b\"\nexit = {}\n"), 8, "no step leads to step \"b\""),
            ("a loop with no wait", with_steps("[[steps]]\nid = \"a\"\nsend = { channel = \"email\", template = \"t\" }\n[[steps]]\nid = \"b\"\nbranch = { if = { affinity_first = \"sms\" }, then = \"a\", else = \"end\" }\n"), 5, "a loop with no wait: a → b"),
            ("a step of two kinds", with_steps("[[steps]]\nid = \"a\"\nexit = {}\nwait = { for = \"1h\" }\n"), 5, "one of send, wait, branch or exit"),
            ("of_this_journey on an order", with_steps("[[goals]]\nevent = \"order_placed\"\nof_this_journey = true\n[[steps]]\nid = \"a\"\nexit = {}\n"), 5, "of_this_journey is for events about a message"),
            ("a suppressed wait with no maximum", with_steps("[[steps]]\nid = \"a\"\nsend = { channel = \"sms\", template = \"t\", when_suppressed = \"wait\" }\n"), 7, "needs max_wait"),
            ("a condition with two tests", "id = \"j\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\nwhere = [{ property = \"url\", equals = \"/\", exists = true }]\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 5, "one test"),
            ("a version of 0", "id = \"j\"\nversion = 0\n[entry]\nevent = \"page_viewed\"\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 2, "version"),
            ("an id with capitals", "id = \"Black Friday\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 1, "id \"Black Friday\""),
            ("a catalog trigger with no window", "id = \"j\"\nversion = 1\n[entry]\ncatalog = \"price_drop\"\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 3, "needs within"),
            ("a per-key reentry on a catalog trigger", "id = \"j\"\nversion = 1\n[entry]\ncatalog = \"price_drop\"\nwithin = \"30d\"\nreentry = { per = \"order_id\" }\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 6, "entry.reentry"),
            ("a reentry policy misspelt", "id = \"j\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\nreentry = { aftr = \"7d\" }\n[[steps]]\nid = \"a\"\nexit = {}\n".into(), 5, "entry.reentry: \"once\""),
            ("no steps", "id = \"j\"\nversion = 1\nsteps = []\n[entry]\nevent = \"page_viewed\"\n".into(), 3, "1 to 100 [[steps]]"),
        ];
        for (story, text, line, complaint) in cases {
            let problems = check(&text).expect_err(story).0;
            assert!(
                problems.iter().any(|problem| problem.line == line && problem.message.contains(complaint)),
                "{story}: expected line {line} {complaint:?}, got {problems:?}\n{text}"
            );
        }
    }

    #[test]
    fn given_two_loops_with_no_wait_when_checked_then_both_are_named() {
        let text = with_steps(
            "[[steps]]\nid = \"a\"\nbranch = { if = { affinity_first = \"sms\" }, then = \"a\", else = \"b\" }\n[[steps]]\nid = \"b\"\nbranch = { if = { affinity_first = \"sms\" }, then = \"b\", else = \"end\" }\n",
        );
        let problems = check(&text).unwrap_err().0;
        let loops: Vec<usize> =
            problems.iter().filter(|p| p.message.contains("a loop with no wait")).map(|p| p.line).collect();
        assert_eq!(loops, [5, 8], "{problems:?}");
    }

    #[test]
    fn given_a_loop_through_a_wait_when_checked_then_it_runs() {
        // A reminder every day until the customer orders (the goal ends it), at most a week.
        let text = with_steps(
            "[[goals]]\nevent = \"order_placed\"\n[[steps]]\nid = \"remind\"\nsend = { channel = \"push\", template = \"t\" }\n[[steps]]\nid = \"a-day\"\nwait = { event = { event = \"message_clicked\", of_this_journey = true }, timeout = \"1d\", on_timeout = \"remind\" }\n",
        );
        let journey = check(&text).unwrap_or_else(|problems| panic!("{problems}"));
        let Action::WaitForEvent { next, on_timeout, .. } = &journey.steps[1].action else { panic!() };
        assert_eq!((*next, *on_timeout), (None, Some(0)), "a click ends it, a quiet day reminds again");
    }

    #[test]
    fn given_several_problems_when_checked_then_all_are_listed_in_line_order() {
        let text = with_steps(
            "[[steps]]\nid = \"a\"\nwait = { for = \"soon\" }\n[[steps]]\nid = \"b\"\nsend = { channel = \"email\", template = \"t\" }\nnext = \"c\"\n",
        );
        let problems = check(&text).unwrap_err().0;
        let lines: Vec<usize> = problems.iter().map(|problem| problem.line).collect();
        assert_eq!(lines, [7, 11], "{problems:?}");
    }
}
