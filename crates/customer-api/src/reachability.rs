//! "May I send, and where?" (SPEC 6): a customer's suppression state for one purpose, with the
//! allowed channels in affinity order. Pure; the API renders it as JSON.

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    ChannelAffinity, ChannelSuppression, SuppressionReason, SuppressionState, SuppressionStatus, reason_code,
};
use omnistream_model::{Channel, Purpose, format_timestamp};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reachability {
    pub customer_id: String,
    /// False for an id suppression holds no state of: never seen (the defaults), or erased.
    pub known: bool,
    pub purpose: Purpose,
    /// The channels a message may go out on now, most likely to engage first.
    pub allowed: Vec<Channel>,
    /// Every messaging channel: allowed ones in the order of `allowed`, then the others.
    pub channels: Vec<ChannelReachability>,
    pub holdout: bool,
    /// When the suppression state was evaluated, and when it changes next without a new event.
    pub evaluated_at: String,
    pub next_change_at: Option<String>,
    /// `next_change_at` has passed and suppression has not re-evaluated yet (it lags or is down):
    /// a change may be due that this answer cannot know of (quiet hours may have begun).
    pub stale: bool,
    /// False when channel-affinity has not scored the customer yet: `allowed` is then in the
    /// default channel order.
    pub ranked_by_affinity: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelReachability {
    pub channel: Channel,
    pub status: SuppressionStatus,
    /// When every reason has lapsed; none while one waits for an event (e.g. a ticket).
    pub until: Option<String>,
    pub reasons: Vec<Reason>,
    /// The affinity score (posterior mean) and whether it rests on too few sends.
    pub affinity: Option<f64>,
    pub insufficient_data: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: String,
    pub detail: Option<String>,
    pub until: Option<String>,
}

fn timestamp(time: Option<DateTime<Utc>>) -> Option<String> {
    time.map(format_timestamp)
}

/// Combines the suppression state and the affinity of one customer for `purpose`, as of `now`:
/// reasons whose `until` has passed no longer count.
pub fn reachability(
    suppression: &SuppressionState,
    affinity: Option<&ChannelAffinity>,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Reachability {
    let stored = match purpose {
        Purpose::Marketing => &suppression.marketing,
        Purpose::Transactional => &suppression.transactional,
    };
    let states: Vec<ChannelSuppression> = stored
        .iter()
        .map(|state| {
            let live =
                state.reasons.iter().filter(|r| r.until.is_none_or(|until| until > now)).cloned().collect();
            ChannelSuppression::from_reasons(state.channel, live)
        })
        .collect();
    // Affinity's ranking first (consented channels with enough data, by score), then the rest of
    // its channels by score, then channels it does not know, in the default order.
    let rank_of = |channel: Channel| -> (usize, f64) {
        let Some(affinity) = affinity else { return (usize::MAX, 0.0) };
        let score = affinity.channels.iter().find(|s| s.channel == channel).map_or(-1.0, |s| s.score);
        match affinity.ranking.iter().position(|c| *c == channel) {
            Some(position) => (position, score),
            None if score >= 0.0 => (affinity.ranking.len(), score),
            None => (usize::MAX, score),
        }
    };
    let mut ordered: Vec<&ChannelSuppression> = states.iter().collect();
    ordered.sort_by(|a, b| {
        let allowed = |s: &ChannelSuppression| s.status != SuppressionStatus::Allowed;
        let (rank_a, score_a) = rank_of(a.channel);
        let (rank_b, score_b) = rank_of(b.channel);
        allowed(a)
            .cmp(&allowed(b))
            .then(rank_a.cmp(&rank_b))
            .then(score_b.total_cmp(&score_a))
            .then(a.channel.index().cmp(&b.channel.index()))
    });
    let channels: Vec<ChannelReachability> = ordered
        .into_iter()
        .map(|state| {
            let score = affinity.and_then(|a| a.channels.iter().find(|s| s.channel == state.channel));
            ChannelReachability {
                channel: state.channel,
                status: state.status,
                until: timestamp(state.until),
                reasons: state
                    .reasons
                    .iter()
                    .map(|r| Reason {
                        code: r.code.to_string(),
                        detail: r.detail.clone(),
                        until: timestamp(r.until),
                    })
                    .collect(),
                affinity: score.map(|s| s.score),
                insufficient_data: score.map(|s| s.insufficient_data),
            }
        })
        .collect();
    Reachability {
        customer_id: suppression.customer_id.clone(),
        known: true,
        purpose,
        allowed: channels
            .iter()
            .filter(|c| c.status == SuppressionStatus::Allowed)
            .map(|c| c.channel)
            .collect(),
        channels,
        holdout: suppression.holdout,
        evaluated_at: format_timestamp(suppression.evaluated_at),
        next_change_at: timestamp(suppression.next_change_at),
        stale: suppression.next_change_at.is_some_and(|at| at <= now),
        ranked_by_affinity: affinity.is_some(),
    }
}

/// SPEC 6: an id never seen gets the defaults: allowed, but for the channels whose consent is
/// required (as in suppression's rules), blocked with `no_consent` until a grant.
pub fn unknown(
    customer_id: &str,
    purpose: Purpose,
    consent_required: &[Channel],
    now: DateTime<Utc>,
) -> Reachability {
    let reasons = |channel: &Channel| match purpose {
        Purpose::Marketing if consent_required.contains(channel) => {
            vec![fixed_reason(reason_code::NO_CONSENT, None)]
        }
        _ => Vec::new(),
    };
    without_state(customer_id, purpose, now, None, reasons)
}

/// SPEC 4.5 and 6: an erased id, while the erasure marker lives (until `until`), is blocked on every
/// channel for every purpose with reason `erased`: a "not found" would read as "unknown, send".
pub fn erased(customer_id: &str, purpose: Purpose, until: DateTime<Utc>, now: DateTime<Utc>) -> Reachability {
    let reasons = |_: &Channel| vec![fixed_reason(reason_code::ERASED, Some(until))];
    without_state(customer_id, purpose, now, Some(until), reasons)
}

fn fixed_reason(code: &'static str, until: Option<DateTime<Utc>>) -> SuppressionReason {
    SuppressionReason { code: std::borrow::Cow::Borrowed(code), detail: None, until }
}

fn without_state(
    customer_id: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
    next_change_at: Option<DateTime<Utc>>,
    reasons: impl Fn(&Channel) -> Vec<SuppressionReason>,
) -> Reachability {
    let states: Vec<ChannelSuppression> = Channel::MESSAGING
        .iter()
        .map(|channel| ChannelSuppression::from_reasons(*channel, reasons(channel)))
        .collect();
    let state = SuppressionState {
        customer_id: customer_id.to_owned(),
        marketing: states.clone(),
        transactional: states,
        holdout: false,
        evaluated_at: now,
        next_change_at,
        version: 0,
    };
    Reachability { known: false, ..reachability(&state, None, purpose, now) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::records::{ChannelScore, SuppressionReason};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn allowed(channel: Channel) -> ChannelSuppression {
        ChannelSuppression { channel, status: SuppressionStatus::Allowed, until: None, reasons: Vec::new() }
    }

    fn suppression(marketing: Vec<ChannelSuppression>) -> SuppressionState {
        SuppressionState {
            customer_id: "c-1".into(),
            transactional: Channel::MESSAGING.iter().map(|c| allowed(*c)).collect(),
            marketing,
            holdout: false,
            evaluated_at: at("2026-11-23T10:00:00Z"),
            next_change_at: None,
            version: 3,
        }
    }

    fn score(channel: Channel, score: f64, marketing_consent: bool) -> ChannelScore {
        ChannelScore {
            channel,
            score,
            std_dev: 0.1,
            sent: 5.0,
            engaged: 3.0,
            insufficient_data: false,
            marketing_consent,
        }
    }

    /// Story 4: whatsapp > sms > email; push unsubscribed (blocked, never recommended).
    fn story_four_affinity() -> ChannelAffinity {
        ChannelAffinity {
            customer_id: "c-1".into(),
            ranking: vec![Channel::Whatsapp, Channel::Sms, Channel::Email],
            channels: vec![
                score(Channel::Email, 0.1, true),
                score(Channel::Sms, 0.5, true),
                score(Channel::Whatsapp, 0.7, true),
                score(Channel::Push, 0.9, false),
            ],
            half_life_days: 30.0,
            as_of: at("2026-11-23T10:00:00Z"),
            version: 9,
        }
    }

    #[test]
    fn allowed_channels_come_in_affinity_order_and_the_others_carry_their_reasons() {
        let push = ChannelSuppression {
            channel: Channel::Push,
            status: SuppressionStatus::Blocked,
            until: None,
            reasons: vec![SuppressionReason { code: "consent_revoked".into(), detail: None, until: None }],
        };
        let state = suppression(vec![
            allowed(Channel::Email),
            allowed(Channel::Sms),
            allowed(Channel::Whatsapp),
            push,
        ]);
        let view = reachability(
            &state,
            Some(&story_four_affinity()),
            Purpose::Marketing,
            at("2026-11-23T10:00:01Z"),
        );
        assert_eq!(view.allowed, [Channel::Whatsapp, Channel::Sms, Channel::Email]);
        let last = view.channels.last().unwrap();
        assert_eq!(
            (last.channel, last.status, last.reasons[0].code.as_str()),
            (Channel::Push, SuppressionStatus::Blocked, "consent_revoked")
        );
        assert!(view.ranked_by_affinity);
    }

    #[test]
    fn a_deferred_channel_is_not_allowed_and_says_until_when() {
        let until = at("2026-11-23T21:00:00Z");
        let deferred = ChannelSuppression {
            channel: Channel::Whatsapp,
            status: SuppressionStatus::Deferred,
            until: Some(until),
            reasons: vec![SuppressionReason {
                code: "frequency_cap".into(),
                detail: Some("1 per 1d".into()),
                until: Some(until),
            }],
        };
        let state = suppression(vec![
            allowed(Channel::Email),
            allowed(Channel::Sms),
            deferred,
            allowed(Channel::Push),
        ]);
        let view = reachability(
            &state,
            Some(&story_four_affinity()),
            Purpose::Marketing,
            at("2026-11-23T10:00:01Z"),
        );
        // Push is allowed by suppression; affinity did not rank it (no consent there) but scored it.
        assert_eq!(view.allowed, [Channel::Sms, Channel::Email, Channel::Push]);
        let whatsapp = view.channels.iter().find(|c| c.channel == Channel::Whatsapp).unwrap();
        assert_eq!(whatsapp.until.as_deref(), Some("2026-11-23T21:00:00.000Z"));
        assert_eq!(whatsapp.reasons[0].until.as_deref(), Some("2026-11-23T21:00:00.000Z"));
    }

    #[test]
    fn a_reason_whose_until_has_passed_no_longer_counts_when_read() {
        let cap_until = at("2026-11-23T12:00:00Z");
        let capped = ChannelSuppression::from_reasons(
            Channel::Sms,
            vec![SuppressionReason { code: "frequency_cap".into(), detail: None, until: Some(cap_until) }],
        );
        let mut state = suppression(vec![allowed(Channel::Email), capped]);
        state.next_change_at = Some(cap_until);
        let before = reachability(&state, None, Purpose::Marketing, at("2026-11-23T11:59:59Z"));
        assert_eq!((before.allowed.clone(), before.stale), (vec![Channel::Email], false));
        // Suppression has not re-emitted yet: the API already answers as of now, and says so.
        let after = reachability(&state, None, Purpose::Marketing, at("2026-11-23T12:00:00Z"));
        assert_eq!((after.allowed, after.stale), (vec![Channel::Email, Channel::Sms], true));
    }

    #[test]
    fn without_affinity_the_default_order_applies_and_transactional_reads_its_own_states() {
        let state = suppression(vec![]);
        let view = reachability(&state, None, Purpose::Transactional, at("2026-11-23T10:00:01Z"));
        assert_eq!(view.allowed, Channel::MESSAGING);
        assert!(!view.ranked_by_affinity);
        assert_eq!(view.evaluated_at, "2026-11-23T10:00:00.000Z");
    }
}
