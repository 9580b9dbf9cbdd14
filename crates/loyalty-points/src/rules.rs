//! Loyalty rules (SPEC 4.4), from a TOML file; the defaults are the SPEC's.

use std::collections::BTreeMap;
use std::path::Path;

use omnistream_model::Channel;
use omnistream_runtime::{RulesError, read_rules};
use serde::Deserialize;

/// A tier reached with `min_points` earned over the tier window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    pub min_points: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoyaltyRules {
    /// Points per major unit of a currency (rounded down); currencies not listed earn
    /// `default_points_per_unit`.
    pub default_points_per_unit: f64,
    pub points_per_unit: BTreeMap<String, f64>,
    /// Multiplier per channel of the order (default 1).
    pub channel_multipliers: BTreeMap<Channel, f64>,
    /// Points stay pending this long after the order (the return window).
    pub return_window_days: i64,
    /// Points expire this many calendar months after the order (SPEC 4, Months).
    pub expiry_months: i64,
    /// Tiers by points earned over the last `tier_window_months`, lowest first.
    pub tiers: Vec<Tier>,
    pub tier_window_months: i64,
}

impl Default for LoyaltyRules {
    fn default() -> Self {
        let tier = |name: &str, min_points| Tier { name: name.to_owned(), min_points };
        Self {
            default_points_per_unit: 1.0,
            points_per_unit: BTreeMap::new(),
            channel_multipliers: BTreeMap::new(),
            return_window_days: 14,
            expiry_months: 12,
            tiers: vec![tier("bronze", 0), tier("silver", 500), tier("gold", 2_000)],
            tier_window_months: 12,
        }
    }
}

const DAY_MS: i64 = 86_400_000;
/// The shortest calendar month, for checking the rules: 28 days.
const SHORTEST_MONTH_MS: i64 = 28 * DAY_MS;

/// `months` calendar months after (or, negative, before) `millis` in UTC: the same day and time of
/// day, or the last day of the month when it has no such day (SPEC 4, Months). An order on
/// 31 January expires on 31 January a year later; with one month, on 28 (or 29) February; an
/// order on 29 February expires on 28 February the next year.
pub fn add_months(millis: i64, months: i64) -> i64 {
    let Some(at) = chrono::DateTime::from_timestamp_millis(millis) else { return millis };
    let shifted = if months >= 0 {
        at.checked_add_months(chrono::Months::new(u32::try_from(months).unwrap_or(u32::MAX)))
    } else {
        at.checked_sub_months(chrono::Months::new(u32::try_from(-months).unwrap_or(u32::MAX)))
    };
    match shifted {
        Some(shifted) => shifted.timestamp_millis(),
        None if months >= 0 => i64::MAX,
        None => i64::MIN,
    }
}

impl LoyaltyRules {
    pub fn from_file(path: &Path) -> Result<Self, RulesError> {
        let rules: LoyaltyRules = read_rules(path)?;
        rules.check()?;
        Ok(rules)
    }

    pub fn check(&self) -> Result<(), RulesError> {
        let invalid = |message: String| Err(RulesError::Invalid(message));
        let rates = std::iter::once(self.default_points_per_unit)
            .chain(self.points_per_unit.values().copied())
            .chain(self.channel_multipliers.values().copied());
        for rate in rates {
            if !(rate.is_finite() && rate >= 0.0) {
                return invalid(format!("rates and multipliers must be finite and not negative, not {rate}"));
            }
        }
        if self.return_window_days < 0 || self.expiry_months <= 0 || self.tier_window_months <= 0 {
            return invalid(
                "return_window_days must not be negative; expiry and tier windows must be positive".into(),
            );
        }
        if self.return_window_ms() >= self.expiry_months.saturating_mul(SHORTEST_MONTH_MS) {
            return invalid("points would expire before the return window ends".into());
        }
        if self.tiers.is_empty() || self.tiers[0].min_points != 0 {
            return invalid("the first tier must start at 0 points".into());
        }
        if self.tiers.windows(2).any(|pair| pair[0].min_points >= pair[1].min_points) {
            return invalid("tiers must be listed lowest first with growing min_points".into());
        }
        Ok(())
    }

    /// Points an amount earns: major units (ISO 4217 exponent) times the currency's rate and the
    /// channel's multiplier, rounded down.
    pub fn points_for(&self, value_minor: i64, currency: &str, channel: Channel) -> i64 {
        let rate = self.points_per_unit.get(currency).copied().unwrap_or(self.default_points_per_unit);
        let multiplier = self.channel_multipliers.get(&channel).copied().unwrap_or(1.0);
        let major = value_minor as f64 / 10f64.powi(minor_unit_exponent(currency));
        // Rates are decimals, which binary floating point only approximates (100 x 1.15 is
        // 114.99999999999999): a product within a few units in the last place of a whole number
        // is that number, at any magnitude; anything else is rounded down.
        let points = major * rate * multiplier;
        let whole = points.round();
        let points = if (points - whole).abs() <= whole.abs() * 1e-12 { whole } else { points.floor() };
        points.max(0.0) as i64
    }

    pub fn return_window_ms(&self) -> i64 {
        self.return_window_days * DAY_MS
    }

    /// When points earned at `earned_at` expire.
    pub fn expires_at(&self, earned_at: i64) -> i64 {
        add_months(earned_at, self.expiry_months)
    }

    /// The first instant at which points earned at `earned_at` no longer count for the tier.
    pub fn leaves_tier_window(&self, earned_at: i64) -> i64 {
        let leaves = add_months(earned_at, self.tier_window_months);
        if self.tier_window_start(leaves) >= earned_at {
            return leaves;
        }
        // A clamped month end (earned 29 February, window ending 28 February): the window's
        // start passes the earning time at the next midnight (UTC), when it jumps to the 1st.
        let mut midnight = leaves - leaves.rem_euclid(DAY_MS) + DAY_MS;
        while self.tier_window_start(midnight) < earned_at {
            midnight = midnight.saturating_add(DAY_MS);
        }
        midnight
    }

    /// Points earned after this count for the tier at `at`: the tier window's start.
    pub fn tier_window_start(&self, at: i64) -> i64 {
        add_months(at, -self.tier_window_months)
    }

    /// The highest tier whose threshold `earned` reaches.
    pub fn tier_for(&self, earned: i64) -> &str {
        self.tiers.iter().rev().find(|tier| earned >= tier.min_points).map_or("", |tier| tier.name.as_str())
    }
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217); 2 for most.
fn minor_unit_exponent(currency: &str) -> i32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}
