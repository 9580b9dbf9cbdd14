//! Support tickets (SPEC 4, arrival order vs event time): a ticket's openings and resolutions are
//! applied in `occurred_at` order (ties: openings first, then arrival order), whatever order they
//! arrive in. An opening opens the ticket when it is not open; a resolution closes it. So a
//! resolution that arrives before its ticket, or is dated between two openings, means what it
//! would mean had everything arrived in event-time order.

use serde::{Deserialize, Serialize};

/// Facts kept per ticket; beyond it the oldest by event time are dropped.
pub const FACTS_KEPT: usize = 16;

/// One ticket's openings and resolutions. Times are unix millis of `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TicketLog {
    pub ticket_id: String,
    /// `(occurred_at, resolves)` in arrival order.
    pub facts: Vec<(i64, bool)>,
}

/// Where a ticket stands after all its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    /// Open since the opening that opened it last.
    Open { opened_at: i64 },
    /// Closed at `resolved_at`; `opened_at` is the opening it closed, if any.
    Resolved { opened_at: Option<i64>, resolved_at: i64 },
}

impl TicketLog {
    pub fn new(ticket_id: &str) -> Self {
        Self { ticket_id: ticket_id.to_owned(), facts: Vec::new() }
    }

    /// Notes an opening (`resolves` false) or a resolution dated `at`.
    pub fn record(&mut self, at: i64, resolves: bool) {
        self.facts.push((at, resolves));
        if self.facts.len() > FACTS_KEPT
            && let Some(oldest) = (0..self.facts.len()).min_by_key(|&i| (self.facts[i], i))
        {
            self.facts.remove(oldest);
        }
    }

    /// The facts applied in event-time order; `None` when there are none.
    pub fn status(&self) -> Option<TicketStatus> {
        let mut order: Vec<usize> = (0..self.facts.len()).collect();
        order.sort_by_key(|&i| (self.facts[i], i));
        let mut status = None;
        for (at, resolves) in order.into_iter().map(|i| self.facts[i]) {
            status = match (status, resolves) {
                (Some(TicketStatus::Open { opened_at }), true) => {
                    Some(TicketStatus::Resolved { opened_at: Some(opened_at), resolved_at: at })
                }
                (_, true) => Some(TicketStatus::Resolved { opened_at: None, resolved_at: at }),
                (Some(open @ TicketStatus::Open { .. }), false) => Some(open),
                (_, false) => Some(TicketStatus::Open { opened_at: at }),
            };
        }
        status
    }

    /// The latest event time among its facts.
    pub fn last_at(&self) -> i64 {
        self.facts.iter().map(|(at, _)| *at).max().unwrap_or(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(facts: &[(i64, bool)]) -> TicketLog {
        TicketLog { ticket_id: "T".into(), facts: facts.to_vec() }
    }

    type Case = (&'static [(i64, bool)], Option<TicketStatus>);

    #[test]
    fn facts_apply_in_event_time_order() {
        // given facts in arrival order, when resolved, then the status event-time order gives
        let cases: [Case; 6] = [
            (&[(10, false)], Some(TicketStatus::Open { opened_at: 10 })),
            // a resolution arriving first, dated after the opening, closes it
            (
                &[(20, true), (10, false)],
                Some(TicketStatus::Resolved { opened_at: Some(10), resolved_at: 20 }),
            ),
            // an earlier-dated second opening is when it opened
            (&[(30, false), (10, false)], Some(TicketStatus::Open { opened_at: 10 })),
            // a resolution dated between two openings: open since the second
            (&[(10, false), (30, false), (20, true)], Some(TicketStatus::Open { opened_at: 30 })),
            // resolutions at 40 and 0, then an opening at 30: closed at 40
            (
                &[(40, true), (0, true), (30, false)],
                Some(TicketStatus::Resolved { opened_at: Some(30), resolved_at: 40 }),
            ),
            // at one instant the opening comes first
            (
                &[(10, true), (10, false)],
                Some(TicketStatus::Resolved { opened_at: Some(10), resolved_at: 10 }),
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(log(facts).status(), want, "{facts:?}");
        }
    }

    #[test]
    fn the_oldest_fact_goes_when_the_log_is_full() {
        let mut log = TicketLog::new("T");
        for at in (0..=FACTS_KEPT as i64).rev() {
            log.record(at, false);
        }
        assert_eq!(log.facts.len(), FACTS_KEPT);
        assert_eq!(log.status(), Some(TicketStatus::Open { opened_at: 1 }));
    }
}
