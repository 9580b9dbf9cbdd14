//! channel-affinity's pure core (SPEC 4.3): per messaging channel, exponentially decayed sends and
//! engagements from the customer's own history, a Beta posterior score with its standard
//! deviation, and a ranking of the channels with marketing consent.
//!
//! Decay is exact whatever the arrival order: counts are kept as of a reference time (the latest
//! event time seen) and an event at `t` adds `weight * 2^-((reference - t) / half_life)`; moving
//! the reference forward multiplies the counts by the decay of the gap. The sum of decayed weights
//! is the same for any order of the same events (but for the engaged-within-sent top-up, which
//! looks at what has arrived).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::records::{ChannelAffinity, ChannelScore};
use omnistream_model::topics::CHANNEL_AFFINITY;
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent, encode_record};
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};

const DAY_MS: f64 = 86_400_000.0;
/// An order this soon after a click on a channel counts as an extra engagement there.
const ORDER_ATTRIBUTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The model's settings (SPEC 4.3: all from configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct AffinityConfig {
    pub half_life_days: f64,
    /// Beta prior: pseudo-engagements and pseudo-misses before any data.
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// Below this many (decayed) sends a channel is `insufficient_data`.
    pub min_sends: f64,
    /// Weight of an order placed within 24 h of a click, credited to the clicked channel.
    pub order_weight: f64,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        Self { half_life_days: 30.0, prior_alpha: 1.0, prior_beta: 1.0, min_sends: 3.0, order_weight: 1.0 }
    }
}

impl AffinityConfig {
    /// Rejects settings that make the model meaningless.
    pub fn check(&self) -> Result<(), String> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        let non_negative = |value: f64| value.is_finite() && value >= 0.0;
        if !positive(self.half_life_days) {
            return Err(format!("the half-life must be positive, not {}", self.half_life_days));
        }
        if !positive(self.prior_alpha) || !positive(self.prior_beta) {
            return Err(format!(
                "the Beta prior must be positive, not ({}, {})",
                self.prior_alpha, self.prior_beta
            ));
        }
        if !non_negative(self.min_sends) || !non_negative(self.order_weight) {
            return Err("min sends and the order weight must not be negative".to_owned());
        }
        Ok(())
    }
}

/// Decayed counts of one messaging channel, as of the customer's reference time.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelCounts {
    pub sent: f64,
    pub engaged: f64,
    /// The latest click on this channel (unix millis), for order attribution.
    pub last_click_at: Option<i64>,
    /// The latest marketing consent event (granted, unix millis); none: never recorded.
    pub consent: Option<(bool, i64)>,
}

/// Messages whose first open or click is remembered per customer, so that a later one of the same
/// message counts no engagement (unique opens and clicks, as Braze and Klaviyo report them).
pub const ENGAGED_MESSAGES_KEPT: usize = 256;

/// What channel-affinity keeps per customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AffinityState {
    /// email, sms, whatsapp, push, in `Channel::MESSAGING` order.
    pub channels: [ChannelCounts; 4],
    /// The time the counts are decayed to (unix millis): the latest event time seen.
    pub reference: Option<i64>,
    /// Events applied.
    pub version: i64,
    /// FNV-1a hashes of channel and `message_id` of the last [`ENGAGED_MESSAGES_KEPT`] messages
    /// opened or clicked. State
    /// written before 2026-12 has none: its messages' first engagements are already counted.
    #[serde(default)]
    pub engaged_messages: std::collections::VecDeque<u64>,
}

impl AffinityState {
    /// Whether this is the first open or click of the message seen; remembers it.
    fn first_engagement(&mut self, channel: usize, message_id: &str) -> bool {
        let hash = std::iter::once(channel as u8)
            .chain(message_id.bytes())
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        if self.engaged_messages.contains(&hash) {
            return false;
        }
        if self.engaged_messages.len() >= ENGAGED_MESSAGES_KEPT {
            self.engaged_messages.pop_front();
        }
        self.engaged_messages.push_back(hash);
        true
    }
}

fn slot(channel: Channel) -> Option<usize> {
    Channel::MESSAGING.iter().position(|c| *c == channel)
}

/// The processor.
#[derive(Debug, Clone)]
pub struct ChannelAffinityProcessor {
    pub config: Arc<AffinityConfig>,
    pub affinity_topic: Arc<str>,
}

impl Default for ChannelAffinityProcessor {
    fn default() -> Self {
        Self { config: Arc::new(AffinityConfig::default()), affinity_topic: Arc::from(CHANNEL_AFFINITY) }
    }
}

impl Processor for ChannelAffinityProcessor {
    type State = AffinityState;
    /// Version 2 (2026-12) counts an engagement once per message. A version 1 state's decayed
    /// counts are left as they are (repeat opens fade with the half-life); its messages start with
    /// no engagement recorded, so each can count once more.
    const STATE_VERSION: u8 = 2;

    fn apply(
        &self,
        state: &mut Option<AffinityState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output {
                topic: self.affinity_topic.clone(),
                key: event.customer_id.clone(),
                value: None,
            }];
        }
        let state = state.get_or_insert_with(AffinityState::default);
        apply_event(state, &self.config, event);
        // As of the partition clock (SPEC 4); counts of events dated ahead stay undecayed.
        let record = affinity(state, &self.config, &event.customer_id, now.timestamp_millis());
        let value = encode_record(&record).expect("a channel affinity matches its schema");
        vec![Output {
            topic: self.affinity_topic.clone(),
            key: event.customer_id.clone(),
            value: Some(value),
        }]
    }
}

/// The decay factor over `elapsed_ms` (>= 0).
fn decay(config: &AffinityConfig, elapsed_ms: i64) -> f64 {
    (-(elapsed_ms as f64) / (config.half_life_days * DAY_MS)).exp2()
}

/// Folds one event into the counts (everything but erasure); returns the reference time after it.
pub fn apply_event(state: &mut AffinityState, config: &AffinityConfig, event: &TouchpointEvent) -> i64 {
    let at = event.occurred_at.timestamp_millis();
    let reference = match state.reference {
        Some(reference) if reference >= at => reference,
        Some(reference) => {
            let factor = decay(config, at - reference);
            for counts in &mut state.channels {
                counts.sent *= factor;
                counts.engaged *= factor;
            }
            at
        }
        None => at,
    };
    state.reference = Some(reference);
    state.version += 1;
    // The weight of this event as of the reference time (below 1 for a late event).
    let weight = decay(config, reference - at);
    let channel = slot(event.channel);
    match &event.payload {
        // Every send, as every engagement counts whatever the message's purpose (SPEC 4.3).
        EventPayload::MessageSent { .. } => {
            if let Some(index) = channel {
                state.channels[index].sent += weight;
            }
        }
        // An inbound message is an engagement, and a send too when the sends so far are all
        // engaged already (nobody prompted it).
        EventPayload::MessageReceived { .. } => {
            if let Some(index) = channel {
                let counts = &mut state.channels[index];
                counts.engaged += weight;
                counts.sent = counts.sent.max(counts.engaged);
            }
        }
        // One engagement per message: its first open or click. Its send may be older than the
        // history or arrive later: no send is invented, the record caps engaged at sent.
        EventPayload::MessageOpened { message_id } => {
            if let Some(index) = channel
                && state.first_engagement(index, message_id)
            {
                state.channels[index].engaged += weight;
            }
        }
        EventPayload::MessageClicked { message_id, .. } => {
            if let Some(index) = channel {
                if state.first_engagement(index, message_id) {
                    state.channels[index].engaged += weight;
                }
                let counts = &mut state.channels[index];
                counts.last_click_at = Some(counts.last_click_at.map_or(at, |last| last.max(at)));
            }
        }
        EventPayload::OrderPlaced { .. } => {
            // The most recent click before the order, within 24 h, on any messaging channel.
            let clicked = state
                .channels
                .iter_mut()
                .filter_map(|counts| counts.last_click_at.map(|click| (click, counts)))
                .filter(|(click, _)| *click <= at && at - click <= ORDER_ATTRIBUTION_MS)
                .max_by_key(|(click, _)| *click);
            if let Some((_, counts)) = clicked {
                counts.engaged += weight * config.order_weight;
            }
        }
        EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted } => {
            if let Some(index) = channel {
                let counts = &mut state.channels[index];
                if counts.consent.is_none_or(|(_, t)| at >= t) {
                    counts.consent = Some((*granted, at));
                }
            }
        }
        _ => {}
    }
    reference
}

/// The record as of `as_of` (unix millis; the counts decay to it from the reference time).
pub fn affinity(
    state: &AffinityState,
    config: &AffinityConfig,
    customer_id: &str,
    as_of: i64,
) -> ChannelAffinity {
    let reference = state.reference.unwrap_or(as_of);
    let factor = decay(config, (as_of - reference).max(0));
    let channels: Vec<ChannelScore> = Channel::MESSAGING
        .iter()
        .zip(&state.channels)
        .map(|(&channel, counts)| {
            let sent = counts.sent * factor;
            let engaged = (counts.engaged * factor).min(sent);
            let alpha = config.prior_alpha + engaged;
            let beta = config.prior_beta + sent - engaged;
            let total = alpha + beta;
            ChannelScore {
                channel,
                score: alpha / total,
                std_dev: (alpha * beta / (total * total * (total + 1.0))).sqrt(),
                sent,
                engaged,
                // Decayed, so sends of a few hours ago count a little under one each: a 1 %
                // tolerance lets them count whole.
                insufficient_data: sent < config.min_sends * 0.99,
                marketing_consent: counts.consent.is_none_or(|(granted, _)| granted),
            }
        })
        .collect();
    let mut ranked: Vec<&ChannelScore> = channels.iter().filter(|c| c.marketing_consent).collect();
    // Channels with enough data first, then by score; equal scores keep the channel order.
    ranked.sort_by(|a, b| a.insufficient_data.cmp(&b.insufficient_data).then(b.score.total_cmp(&a.score)));
    ChannelAffinity {
        customer_id: customer_id.to_owned(),
        ranking: ranked.iter().map(|c| c.channel).collect(),
        channels: channels.clone(),
        half_life_days: config.half_life_days,
        as_of: DateTime::from_timestamp_millis(as_of).unwrap_or_default(),
        version: state.version,
    }
}
