//! Support tickets (SPEC 4, arrival order vs event time): a ticket's openings and resolutions are
//! applied in `occurred_at` order (ties: openings first, then arrival order), whatever order they
//! arrive in. An opening opens the ticket when it is not open; a resolution closes it. So a
//! resolution that arrives before its ticket, or is dated between two openings, means what it
//! would mean had everything arrived in event-time order. Used by profile-updater and
//! suppression, so both read a ticket the same way.

use serde::{Deserialize, Serialize};

use crate::event::Channel;

/// Facts kept per ticket; beyond it the oldest by event time are dropped.
pub const FACTS_KEPT: usize = 16;

/// One opening or resolution of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFact {
    /// `occurred_at`, unix millis.
    pub at: i64,
    pub resolves: bool,
    pub channel: Channel,
    /// An opening's topic.
    pub topic: Option<String>,
    /// Arrival order among all of the customer's facts (ties between tickets).
    pub seq: i64,
}

/// One ticket's openings and resolutions, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TicketLog {
    pub ticket_id: String,
    pub facts: Vec<TicketFact>,
}

/// One resolution as event-time order reads it: what it resolved, if the ticket was open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution<'a> {
    pub resolved: &'a TicketFact,
    pub opened: Option<&'a TicketFact>,
}

impl TicketLog {
    pub fn new(ticket_id: &str) -> Self {
        Self { ticket_id: ticket_id.to_owned(), facts: Vec::new() }
    }

    /// Notes an opening or a resolution.
    pub fn record(&mut self, fact: TicketFact) {
        self.facts.push(fact);
        if self.facts.len() > FACTS_KEPT
            && let Some(oldest) = (0..self.facts.len()).min_by_key(|&i| (self.facts[i].at, i))
        {
            self.facts.remove(oldest);
        }
    }

    /// The facts in event-time order (ties: openings first, then arrival order).
    fn in_event_time(&self) -> Vec<&TicketFact> {
        let mut order: Vec<&TicketFact> = self.facts.iter().collect();
        order.sort_by_key(|fact| (fact.at, fact.resolves, fact.seq));
        order
    }

    /// The opening that opened the ticket, if it is open after all its facts.
    pub fn open(&self) -> Option<&TicketFact> {
        let mut open = None;
        for fact in self.in_event_time() {
            if fact.resolves {
                open = None;
            } else if open.is_none() {
                open = Some(fact);
            }
        }
        open
    }

    /// Every resolution, with the opening it closed (`None` when the ticket was not open then).
    pub fn resolutions(&self) -> Vec<Resolution<'_>> {
        let mut open = None;
        let mut resolutions = Vec::new();
        for fact in self.in_event_time() {
            if fact.resolves {
                resolutions.push(Resolution { resolved: fact, opened: open.take() });
            } else if open.is_none() {
                open = Some(fact);
            }
        }
        resolutions
    }

    /// The latest event time among its facts.
    pub fn last_at(&self) -> i64 {
        self.facts.iter().map(|fact| fact.at).max().unwrap_or(i64::MIN)
    }
}

/// Bounds a customer's logs: keeps every one `matters` (e.g. open) and, of the others, the
/// `kept` touched latest by event time, in their order.
pub fn keep_latest(logs: &mut Vec<TicketLog>, kept: usize, matters: impl Fn(&TicketLog) -> bool) {
    let mut others: Vec<(i64, usize)> = (logs.iter().enumerate())
        .filter(|(_, log)| !matters(log))
        .map(|(index, log)| (log.last_at(), index))
        .collect();
    if others.len() <= kept {
        return;
    }
    others.sort_unstable_by(|a, b| b.cmp(a));
    let dropped: Vec<usize> = others[kept..].iter().map(|(_, index)| *index).collect();
    let mut index = 0;
    logs.retain(|_| {
        index += 1;
        !dropped.contains(&(index - 1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(facts: &[(i64, bool)]) -> TicketLog {
        let mut log = TicketLog::new("T");
        for (seq, (at, resolves)) in facts.iter().enumerate() {
            let seq = i64::try_from(seq).unwrap();
            log.record(TicketFact { at: *at, resolves: *resolves, channel: Channel::Web, topic: None, seq });
        }
        log
    }

    type Case = (&'static [(i64, bool)], Option<i64>, &'static [(i64, Option<i64>)]);

    #[test]
    fn facts_apply_in_event_time_order() {
        // given facts in arrival order, then: when it opened if open, and each resolution with
        // the opening it closed
        let cases: [Case; 6] = [
            (&[(10, false)], Some(10), &[]),
            // a resolution arriving first, dated after the opening, closes it
            (&[(20, true), (10, false)], None, &[(20, Some(10))]),
            // an earlier-dated second opening is when it opened
            (&[(30, false), (10, false)], Some(10), &[]),
            // a resolution dated between two openings: open since the second
            (&[(10, false), (30, false), (20, true)], Some(30), &[(20, Some(10))]),
            // resolutions at 40 and 0, then an opening at 30: closed at 40
            (&[(40, true), (0, true), (30, false)], None, &[(0, None), (40, Some(30))]),
            // at one instant the opening comes first
            (&[(10, true), (10, false)], None, &[(10, Some(10))]),
        ];
        for (facts, open, resolutions) in cases {
            let log = log(facts);
            assert_eq!(log.open().map(|fact| fact.at), open, "{facts:?}");
            let got: Vec<(i64, Option<i64>)> =
                log.resolutions().iter().map(|r| (r.resolved.at, r.opened.map(|o| o.at))).collect();
            assert_eq!(got, resolutions, "{facts:?}");
        }
    }

    #[test]
    fn the_oldest_fact_goes_when_the_log_is_full() {
        let facts: Vec<(i64, bool)> = (0..=FACTS_KEPT as i64).rev().map(|at| (at, false)).collect();
        let log = log(&facts);
        assert_eq!(log.facts.len(), FACTS_KEPT);
        assert_eq!(log.open().map(|fact| fact.at), Some(1));
    }
}
