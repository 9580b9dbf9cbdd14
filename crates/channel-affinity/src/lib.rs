//! channel-affinity's pure core (SPEC 4.3): per messaging channel, exponentially decayed sends and
//! engagements from the customer's own history, a Beta posterior score with its standard
//! deviation, and a ranking of the channels with marketing consent.
//!
//! Event time decides, whatever the arrival order (SPEC 4): the state keeps the customer's recent
//! FACTS (sends, the first engagement of each message by event time, inbound messages, clicks,
//! orders), sorted by event time (ties: arrival order), up to [`FACTS_KEPT`]; the record walks them
//! in that order as of its `as_of`, each weighted `2^-(max(0, as_of - t) / half_life)`, so an
//! inbound message, an order or a first open gets the meaning its event time gives it, even when
//! its cause arrives later. Older facts are folded, in event-time order, into decayed sums kept
//! as of the latest folded event time (plus, per channel, the sends not yet answered and the
//! latest folded click), which the record decays to `as_of`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::records::{ChannelAffinity, ChannelScore};
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent};
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

/// The model's settings as flags and environment variables: channel-affinity's, and journeys'
/// (which embeds the same core and must rank by the same settings).
#[derive(Debug, Clone, clap::Args)]
pub struct AffinityArgs {
    /// Half-life of the exponential decay of sends and engagements, in days.
    #[arg(long, env = "AFFINITY_HALF_LIFE_DAYS", default_value_t = 30.0)]
    pub half_life_days: f64,
    /// Beta prior alpha (pseudo-engagements).
    #[arg(long, env = "AFFINITY_PRIOR_ALPHA", default_value_t = 1.0)]
    pub prior_alpha: f64,
    /// Beta prior beta (pseudo-sends without engagement).
    #[arg(long, env = "AFFINITY_PRIOR_BETA", default_value_t = 1.0)]
    pub prior_beta: f64,
    /// Decayed sends below which a channel is `insufficient_data`.
    #[arg(long, env = "AFFINITY_MIN_SENDS", default_value_t = 3.0)]
    pub min_sends: f64,
    /// Engagement weight of an order placed within 24 h of a click, for the clicked channel.
    #[arg(long, env = "AFFINITY_ORDER_WEIGHT", default_value_t = 1.0)]
    pub order_weight: f64,
}

impl AffinityArgs {
    /// The checked settings.
    pub fn config(&self) -> Result<AffinityConfig, String> {
        let config = AffinityConfig {
            half_life_days: self.half_life_days,
            prior_alpha: self.prior_alpha,
            prior_beta: self.prior_beta,
            min_sends: self.min_sends,
            order_weight: self.order_weight,
        };
        config.check().map(|()| config)
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

/// Decayed counts of one messaging channel, folded from the facts older than those kept, as of
/// [`AffinityState::folded_at`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelCounts {
    pub sent: f64,
    pub engaged: f64,
    /// The latest folded click on this channel (unix millis), for order attribution.
    pub last_click_at: Option<i64>,
    /// The latest marketing consent event (granted, unix millis); none: never recorded.
    pub consent: Option<(bool, i64)>,
}

/// Folded messages whose first open or click is remembered per customer, so that a later one of
/// the same message counts no engagement (unique opens and clicks, as Braze and Klaviyo report
/// them). Messages among the kept facts are known by their fact.
pub const ENGAGED_MESSAGES_KEPT: usize = 256;

/// Facts kept per customer, by event time; older ones are folded into [`ChannelCounts`].
pub const FACTS_KEPT: usize = 1024;

/// `message_sent`.
pub const SEND: u8 = 0;
/// The first open or click of a message (by event time).
pub const ENGAGEMENT: u8 = 1;
/// `message_received`.
pub const INBOUND: u8 = 2;
/// `message_clicked` (every click, for order attribution).
pub const CLICK: u8 = 3;
/// `order_placed` (on any channel; `channel` is unused).
pub const ORDER: u8 = 4;

/// One fact of the customer's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fact {
    /// Event time, unix millis.
    pub at: i64,
    /// Arrival order: the state's `version` when it was applied (breaks event-time ties).
    pub seq: i64,
    /// One of [`SEND`], [`ENGAGEMENT`], [`INBOUND`], [`CLICK`], [`ORDER`].
    pub kind: u8,
    /// Slot in `Channel::MESSAGING`.
    pub channel: u8,
    /// For an engagement: the FNV-1a hash of the channel and `message_id`.
    pub message: u64,
}

impl Fact {
    fn key(&self) -> (i64, i64) {
        (self.at, self.seq)
    }
}

/// What channel-affinity keeps per customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AffinityState {
    /// email, sms, whatsapp, push, in `Channel::MESSAGING` order.
    pub channels: [ChannelCounts; 4],
    /// The latest event time seen (unix millis).
    pub reference: Option<i64>,
    /// Events read and applied (`reads`).
    pub version: i64,
    /// FNV-1a hashes of channel and `message_id` of the last [`ENGAGED_MESSAGES_KEPT`] folded
    /// messages opened or clicked. State written before 2026-12 has none: its messages' first
    /// engagements are already counted.
    #[serde(default)]
    pub engaged_messages: std::collections::VecDeque<u64>,
    /// The kept facts, sorted by (event time, arrival).
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// The time the folded counts in `channels` are decayed to (unix millis): the latest folded
    /// event time. A version 1 state's counts are as of its `reference` (see `upgrade_state`).
    #[serde(default)]
    pub folded_at: Option<i64>,
    /// Per channel, the folded sends not yet matched by an engagement (may be negative).
    #[serde(default)]
    pub unanswered: [i64; 4],
}

fn message_hash(channel: usize, message_id: &str) -> u64 {
    std::iter::once(channel as u8)
        .chain(message_id.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

impl AffinityState {
    /// Inserts a fact at its place in (event time, arrival) order.
    fn insert(&mut self, fact: Fact) {
        let index = self.facts.partition_point(|f| f.key() <= fact.key());
        self.facts.insert(index, fact);
    }

    /// An open or click of a message: its first by event time is its engagement.
    fn engage(&mut self, channel: usize, message_id: &str, at: i64, seq: i64) {
        let message = message_hash(channel, message_id);
        let kept = self
            .facts
            .iter()
            .position(|f| f.kind == ENGAGEMENT && usize::from(f.channel) == channel && f.message == message);
        match kept {
            Some(index) => {
                if (at, seq) < self.facts[index].key() {
                    let mut fact = self.facts.remove(index);
                    fact.at = at;
                    fact.seq = seq;
                    self.insert(fact);
                }
            }
            // Folded already: counted once.
            None if self.engaged_messages.contains(&message) => {}
            None => self.insert(Fact { at, seq, kind: ENGAGEMENT, channel: channel as u8, message }),
        }
    }

    /// Folds the oldest kept fact into the counts.
    fn fold_oldest(&mut self, config: &AffinityConfig) {
        if self.facts.is_empty() {
            return;
        }
        let fact = self.facts.remove(0);
        let weight = match self.folded_at {
            Some(folded) if folded >= fact.at => decay(config, folded - fact.at),
            Some(folded) => {
                let factor = decay(config, fact.at - folded);
                for counts in &mut self.channels {
                    counts.sent *= factor;
                    counts.engaged *= factor;
                }
                self.folded_at = Some(fact.at);
                1.0
            }
            None => {
                self.folded_at = Some(fact.at);
                1.0
            }
        };
        let channel = usize::from(fact.channel);
        match fact.kind {
            CLICK => {
                let counts = &mut self.channels[channel];
                counts.last_click_at = Some(counts.last_click_at.map_or(fact.at, |last| last.max(fact.at)));
            }
            ORDER => {
                let clicks = kept_clicks(&self.facts);
                if let Some(credited) = credited(&clicks, &self.channels, fact.at) {
                    self.channels[credited].engaged += weight * config.order_weight;
                }
            }
            kind => {
                if kind == ENGAGEMENT {
                    if self.engaged_messages.len() >= ENGAGED_MESSAGES_KEPT {
                        self.engaged_messages.pop_front();
                    }
                    self.engaged_messages.push_back(fact.message);
                }
                let counts = &mut self.channels[channel];
                count(kind, weight, &mut counts.sent, &mut counts.engaged, &mut self.unanswered[channel]);
            }
        }
    }
}

/// A send, engagement or inbound message of weight `weight` on a channel. SPEC 4.3: "An inbound
/// message with no send before it counts as a send and an engagement": walking in event-time
/// order, it counts as a send too when every send before it is matched by an engagement;
/// otherwise it answers one of them.
fn count(kind: u8, weight: f64, sent: &mut f64, engaged: &mut f64, unanswered: &mut i64) {
    match kind {
        SEND => {
            *sent += weight;
            *unanswered += 1;
        }
        ENGAGEMENT => {
            *engaged += weight;
            *unanswered -= 1;
        }
        INBOUND => {
            *engaged += weight;
            if *unanswered > 0 {
                *unanswered -= 1;
            } else {
                *sent += weight;
            }
        }
        _ => {}
    }
}

/// The kept clicks as (event time, arrival, channel), sorted.
fn kept_clicks(facts: &[Fact]) -> Vec<(i64, i64, usize)> {
    facts.iter().filter(|f| f.kind == CLICK).map(|f| (f.at, f.seq, usize::from(f.channel))).collect()
}

/// The channel of the latest click 0..=24 h before an order at `at` (ties: the later arrival;
/// folded clicks are older than kept ones), among the kept `clicks` (sorted) and the latest
/// folded click of each channel.
fn credited(clicks: &[(i64, i64, usize)], channels: &[ChannelCounts; 4], at: i64) -> Option<usize> {
    let within = |click: i64| click <= at && at - click <= ORDER_ATTRIBUTION_MS;
    let kept = clicks[..clicks.partition_point(|(click, _, _)| *click <= at)]
        .last()
        .filter(|(click, _, _)| within(*click))
        .map(|&(click, _, channel)| (click, channel));
    let folded = channels
        .iter()
        .enumerate()
        .filter_map(|(channel, counts)| {
            counts.last_click_at.filter(|click| within(*click)).map(|c| (c, channel))
        })
        .max_by_key(|(click, _)| *click);
    match (kept, folded) {
        (Some(kept), Some(folded)) if folded.0 > kept.0 => Some(folded.1),
        (Some((_, channel)), _) | (None, Some((_, channel))) => Some(channel),
        (None, None) => None,
    }
}

fn slot(channel: Channel) -> Option<usize> {
    Channel::MESSAGING.iter().position(|c| *c == channel)
}

/// The processor.
#[derive(Debug, Clone)]
pub struct ChannelAffinityProcessor {
    pub config: Arc<AffinityConfig>,
}

/// Its one output role: the affinity after each event it reads (`--affinity-topic`).
pub const AFFINITY_OUTPUT: &str = "affinity";

impl Default for ChannelAffinityProcessor {
    fn default() -> Self {
        Self { config: Arc::new(AffinityConfig::default()) }
    }
}

impl Processor for ChannelAffinityProcessor {
    type Input = TouchpointEvent;
    type State = AffinityState;
    type Record = ChannelAffinity;
    const OUTPUTS: &'static [&'static str] = &[AFFINITY_OUTPUT];
    const LATEST_PER_KEY: &'static [&'static str] = &[AFFINITY_OUTPUT];
    /// Version 2 (2026-12) keeps the recent facts and counts by event time; version 1 kept only
    /// the decayed counts, as of its `reference`. Version 2 was never released.
    const STATE_VERSION: u8 = 2;

    /// A version 1 state's counts become the folded counts, as of the time they were decayed to;
    /// its sends are taken as all answered (version 1 topped the sends up to the engagements).
    /// Its messages start with no engagement recorded, so each can count once more.
    fn upgrade_state(&self, state: &mut AffinityState, written_with: u8) {
        if written_with < 2 && state.folded_at.is_none() {
            state.folded_at = state.reference;
        }
    }

    /// Merges (identity resolution, docs/identity.md): the loser's history moves to the winner.
    const HANDS_OFF_STATE: bool = true;

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        event.merge_winner().map(str::to_owned)
    }

    /// The winner's counts over both customers' facts, as of the handoff's time.
    fn merge(
        &self,
        state: &mut Option<AffinityState>,
        customer_id: &str,
        _from: &str,
        _cause: &str,
        handed: AffinityState,
        now: DateTime<Utc>,
    ) -> Vec<Output<ChannelAffinity>> {
        let state = state.get_or_insert_with(AffinityState::default);
        absorb(state, &self.config, handed);
        let record = affinity(state, &self.config, customer_id, now.timestamp_millis());
        vec![Output::new(AFFINITY_OUTPUT, customer_id.to_owned(), Some(record))]
    }

    /// A customer's first event makes their record (every customer seen has one); after it only
    /// sends, engagements, orders, marketing consent, an erasure or a merge (SPEC 4.3: "updated on
    /// every relevant event"). The record's counts are as of the last of those (`as_of`).
    fn reads(&self, event: &TouchpointEvent) -> bool {
        reads(event)
    }

    fn apply(
        &self,
        state: &mut Option<AffinityState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<ChannelAffinity>> {
        if let EventPayload::CustomersMerged { .. } = event.payload {
            // Merged away: the runtime hands the state to the winner; the record goes.
            return vec![Output::new(AFFINITY_OUTPUT, event.customer_id.clone(), None)];
        }
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output::new(AFFINITY_OUTPUT, event.customer_id.clone(), None)];
        }
        let state = state.get_or_insert_with(AffinityState::default);
        apply_event(state, &self.config, event);
        // As of the partition clock (SPEC 4); counts of events dated ahead stay undecayed.
        let record = affinity(state, &self.config, &event.customer_id, now.timestamp_millis());
        vec![Output::new(AFFINITY_OUTPUT, event.customer_id.clone(), Some(record))]
    }
}

/// Folds another customer's state into this one (a merge), as if its events had arrived after
/// this one's: its kept facts join these in event-time order (its engagements deduplicated by
/// message), its folded counts are added once decayed to the same time, and the rest as
/// `apply_event` would have kept it.
pub fn absorb(state: &mut AffinityState, config: &AffinityConfig, loser: AffinityState) {
    let after = state.version;
    for fact in loser.facts {
        let seq = after + fact.seq;
        if fact.kind == ENGAGEMENT {
            let kept = state
                .facts
                .iter()
                .position(|f| f.kind == ENGAGEMENT && f.channel == fact.channel && f.message == fact.message);
            match kept {
                Some(index) if (fact.at, seq) < state.facts[index].key() => {
                    state.facts.remove(index);
                }
                Some(_) => continue,
                None if state.engaged_messages.contains(&fact.message) => continue,
                None => {}
            }
        }
        state.insert(Fact { seq, ..fact });
    }
    // The folded counts, decayed to the later of the two fold times, then added.
    let folded_at = match (state.folded_at, loser.folded_at) {
        (Some(ours), Some(theirs)) => Some(ours.max(theirs)),
        (ours, theirs) => ours.or(theirs),
    };
    let to = |at: Option<i64>| at.zip(folded_at).map_or(1.0, |(at, to)| decay(config, to - at));
    let (ours_factor, theirs_factor) = (to(state.folded_at), to(loser.folded_at));
    for (counts, theirs) in state.channels.iter_mut().zip(loser.channels) {
        counts.sent = counts.sent * ours_factor + theirs.sent * theirs_factor;
        counts.engaged = counts.engaged * ours_factor + theirs.engaged * theirs_factor;
        counts.last_click_at = counts.last_click_at.max(theirs.last_click_at);
        if let Some((granted, at)) = theirs.consent
            && counts.consent.is_none_or(|(_, t)| at >= t)
        {
            counts.consent = Some((granted, at));
        }
    }
    state.folded_at = folded_at;
    for (ours, theirs) in state.unanswered.iter_mut().zip(loser.unanswered) {
        *ours += theirs;
    }
    for message in loser.engaged_messages {
        if !state.engaged_messages.contains(&message) {
            if state.engaged_messages.len() >= ENGAGED_MESSAGES_KEPT {
                state.engaged_messages.pop_front();
            }
            state.engaged_messages.push_back(message);
        }
    }
    state.reference = state.reference.max(loser.reference);
    state.version += loser.version;
    while state.facts.len() > FACTS_KEPT {
        state.fold_oldest(config);
    }
}

/// The decay factor over `elapsed_ms` (>= 0).
fn decay(config: &AffinityConfig, elapsed_ms: i64) -> f64 {
    (-(elapsed_ms as f64) / (config.half_life_days * DAY_MS)).exp2()
}

/// Whether affinity reads `event`: a send, an engagement, an order, marketing consent, an erasure
/// or a merge. `version` counts those applied; another event only makes a customer's first record.
pub fn reads(event: &TouchpointEvent) -> bool {
    matches!(
        event.payload,
        EventPayload::MessageSent { .. }
            | EventPayload::MessageReceived { .. }
            | EventPayload::MessageOpened { .. }
            | EventPayload::MessageClicked { .. }
            | EventPayload::OrderPlaced { .. }
            | EventPayload::ConsentChanged { purpose: Purpose::Marketing, .. }
            | EventPayload::ErasureRequested
            | EventPayload::CustomersMerged { .. }
    )
}

/// Applies one event (everything but erasure); returns the latest event time seen after it.
pub fn apply_event(state: &mut AffinityState, config: &AffinityConfig, event: &TouchpointEvent) -> i64 {
    let at = event.occurred_at.timestamp_millis();
    let reference = state.reference.map_or(at, |reference| reference.max(at));
    state.reference = Some(reference);
    state.version += i64::from(reads(event));
    let seq = state.version;
    let channel = slot(event.channel);
    let fact = |kind: u8, channel: usize| Fact { at, seq, kind, channel: channel as u8, message: 0 };
    match &event.payload {
        // Every send, as every engagement counts whatever the message's purpose (SPEC 4.3).
        EventPayload::MessageSent { .. } => {
            if let Some(index) = channel {
                state.insert(fact(SEND, index));
            }
        }
        EventPayload::MessageReceived { .. } => {
            if let Some(index) = channel {
                state.insert(fact(INBOUND, index));
            }
        }
        // One engagement per message: its first open or click by event time. Its send may be
        // older than the history or arrive later: no send is invented, the record caps engaged at
        // sent.
        EventPayload::MessageOpened { message_id } => {
            if let Some(index) = channel {
                state.engage(index, message_id, at, seq);
            }
        }
        EventPayload::MessageClicked { message_id, .. } => {
            if let Some(index) = channel {
                state.engage(index, message_id, at, seq);
                state.insert(fact(CLICK, index));
            }
        }
        // Credited when the record is computed, to the latest click before it by event time.
        EventPayload::OrderPlaced { .. } => state.insert(fact(ORDER, 0)),
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
    while state.facts.len() > FACTS_KEPT {
        state.fold_oldest(config);
    }
    reference
}

/// The decayed (sent, engaged) of each channel as of `as_of` (unix millis), engaged not yet capped.
fn counts(state: &AffinityState, config: &AffinityConfig, as_of: i64) -> [(f64, f64); 4] {
    // An event dated ahead of `as_of` (clock skew) counts undecayed until the clock passes it.
    let weight = |at: i64| decay(config, (as_of - at).max(0));
    let folded = state.folded_at.map_or(1.0, weight);
    let mut sent = state.channels.map(|counts| counts.sent * folded);
    let mut engaged = state.channels.map(|counts| counts.engaged * folded);
    let mut unanswered = state.unanswered;
    let clicks = kept_clicks(&state.facts);
    for fact in &state.facts {
        let channel = usize::from(fact.channel);
        match fact.kind {
            CLICK => {}
            ORDER => {
                if let Some(credited) = credited(&clicks, &state.channels, fact.at) {
                    engaged[credited] += weight(fact.at) * config.order_weight;
                }
            }
            kind => count(
                kind,
                weight(fact.at),
                &mut sent[channel],
                &mut engaged[channel],
                &mut unanswered[channel],
            ),
        }
    }
    std::array::from_fn(|channel| (sent[channel], engaged[channel]))
}

/// The record as of `as_of` (unix millis).
pub fn affinity(
    state: &AffinityState,
    config: &AffinityConfig,
    customer_id: &str,
    as_of: i64,
) -> ChannelAffinity {
    let counts = counts(state, config, as_of);
    let channels: Vec<ChannelScore> = Channel::MESSAGING
        .iter()
        .zip(&state.channels)
        .zip(counts)
        .map(|((&channel, folded), (sent, engaged))| {
            // The engagements capped at the sends, so the score stays a rate.
            let engaged = engaged.min(sent);
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
                marketing_consent: folded.consent.is_none_or(|(granted, _)| granted),
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
