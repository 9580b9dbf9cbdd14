//! The suppression rules of SPEC 4.2, every one configurable from a TOML file; the defaults are the
//! SPEC's.

use std::path::Path;

use chrono::NaiveTime;
use omnistream_model::Channel;
use omnistream_runtime::{RulesError, read_rules};
use serde::{Deserialize, Deserializer};

/// At most `max` marketing messages on `channel` within any `window_hours`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub channel: Channel,
    pub max: u32,
    pub window_hours: f64,
}

impl FrequencyCap {
    pub fn window_ms(&self) -> i64 {
        hours_ms(self.window_hours)
    }
}

/// No marketing on `channels` between `start` and `end`, customer's local time (wrapping
/// midnight when `start` is after `end`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub channels: Vec<Channel>,
    #[serde(deserialize_with = "clock_time")]
    pub start: NaiveTime,
    #[serde(deserialize_with = "clock_time")]
    pub end: NaiveTime,
}

impl QuietHours {
    /// Whether local time `time` is inside the window (one that ends before it starts spans
    /// midnight).
    pub fn covers(&self, time: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }
}

/// Every rule of SPEC 4.2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// An open support ticket stops blocking marketing after this long (a safety maximum for
    /// tickets nobody resolves).
    pub ticket_max_days: f64,
    /// Channels on which marketing needs a recorded grant (`no_consent` until then); on the
    /// others a channel without a consent event is allowed.
    pub consent_required: Vec<Channel>,
    pub frequency_caps: Vec<FrequencyCap>,
    pub quiet_hours: Vec<QuietHours>,
    /// Marketing deferred this long after an order; 0 = off.
    pub order_cooldown_hours: f64,
    /// Share of customers (by a hash of the id) in the global control group, in percent.
    pub holdout_percent: f64,
}

impl Default for Rules {
    fn default() -> Self {
        let cap = |channel, max, window_hours| FrequencyCap { channel, max, window_hours };
        Self {
            ticket_max_days: 14.0,
            consent_required: Vec::new(),
            frequency_caps: vec![
                cap(Channel::Email, 1, 16.0),
                cap(Channel::Sms, 1, 24.0),
                cap(Channel::Whatsapp, 1, 24.0),
                cap(Channel::Push, 2, 24.0),
            ],
            quiet_hours: vec![QuietHours {
                channels: vec![Channel::Sms, Channel::Whatsapp, Channel::Push],
                start: NaiveTime::from_hms_opt(21, 0, 0).expect("valid time"),
                end: NaiveTime::from_hms_opt(8, 0, 0).expect("valid time"),
            }],
            order_cooldown_hours: 0.0,
            holdout_percent: 0.0,
        }
    }
}

impl Rules {
    /// Reads rules from a TOML file; what it leaves out keeps its default.
    pub fn from_file(path: &Path) -> Result<Self, RulesError> {
        let rules: Rules = read_rules(path)?;
        rules.check()?;
        Ok(rules)
    }

    /// Rejects values that would make a rule meaningless.
    pub fn check(&self) -> Result<(), RulesError> {
        let invalid = |message: String| Err(RulesError::Invalid(message));
        if !is_positive(self.ticket_max_days) {
            return invalid(format!("ticket_max_days must be positive, not {}", self.ticket_max_days));
        }
        if !(0.0..=100.0).contains(&self.holdout_percent) {
            return invalid(format!("holdout_percent must be within 0..=100, not {}", self.holdout_percent));
        }
        if !(is_positive(self.order_cooldown_hours) || self.order_cooldown_hours == 0.0) {
            return invalid(format!(
                "order_cooldown_hours must not be negative, not {}",
                self.order_cooldown_hours
            ));
        }
        for cap in &self.frequency_caps {
            if cap.max == 0 || !is_positive(cap.window_hours) {
                return invalid(format!("frequency cap {cap:?}: max and window_hours must be positive"));
            }
        }
        for quiet in &self.quiet_hours {
            if quiet.start == quiet.end {
                return invalid(format!("quiet hours {quiet:?}: start and end are equal"));
            }
        }
        Ok(())
    }
}

/// Rules with what every evaluation needs computed once (durations in millis, reason details).
#[derive(Debug, Clone)]
pub struct PreparedRules {
    pub rules: Rules,
    pub(crate) ticket_max_ms: i64,
    pub(crate) order_cooldown_ms: i64,
    pub(crate) order_cooldown_detail: String,
    /// Each cap with its window in millis and its reason detail.
    pub(crate) caps: Vec<(FrequencyCap, i64, String)>,
    /// Each quiet-hours rule with its window label (`21:00-08:00`).
    pub(crate) quiet: Vec<(QuietHours, String)>,
}

impl Rules {
    pub fn prepare(self) -> PreparedRules {
        use chrono::Timelike;
        let clock = |t: NaiveTime| format!("{:02}:{:02}", t.hour(), t.minute());
        PreparedRules {
            ticket_max_ms: hours_ms(self.ticket_max_days * 24.0),
            order_cooldown_ms: hours_ms(self.order_cooldown_hours),
            order_cooldown_detail: format!("cool-down {}h", self.order_cooldown_hours),
            caps: self
                .frequency_caps
                .iter()
                .map(|cap| {
                    (cap.clone(), cap.window_ms(), format!("at most {} per {}h", cap.max, cap.window_hours))
                })
                .collect(),
            quiet: self
                .quiet_hours
                .iter()
                .map(|quiet| (quiet.clone(), format!("{}-{}", clock(quiet.start), clock(quiet.end))))
                .collect(),
            rules: self,
        }
    }
}

impl PreparedRules {
    /// The longest frequency-cap window of a channel: older sends can no longer count.
    pub(crate) fn longest_window_ms(&self, channel: Channel) -> i64 {
        self.caps
            .iter()
            .filter(|(cap, _, _)| cap.channel == channel)
            .map(|(_, window, _)| *window)
            .max()
            .unwrap_or(0)
    }
}

/// Positive and finite (false for NaN).
fn is_positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

fn hours_ms(hours: f64) -> i64 {
    (hours * 3_600_000.0).round() as i64
}

/// `"21:00"` or `"21:00:00"`.
fn clock_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    NaiveTime::parse_from_str(&text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(&text, "%H:%M:%S"))
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a clock time (HH:MM): {e}")))
}
