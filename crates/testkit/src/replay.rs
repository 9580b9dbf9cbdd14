//! A service's core driven in process by the runtime's own engine (`ProcessorTest`), one partition
//! (SPEC 4): records in offset order, validated and applied as of the partition clock after every
//! timer due by then has fired as of its due time; dedupe of recent event ids; an erasure's marker
//! dropping its retries and events dated at or before it for the 30-day horizon; `check_limits`
//! refusals dead-lettered. The differential tests run it against the executable SPEC
//! (`omnistream-spec`) on thousands of streams; the broker tests then run the real binaries.

use chrono::{DateTime, Utc};
use omnistream_model::TouchpointEvent;
use omnistream_runtime::Processor;
use omnistream_runtime::testing::ProcessorTest;

use crate::pipeline::OutputsByKey;

/// What a replay wrote and refused.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Per (output role, key), every value in the order written (`None` is a tombstone).
    pub outputs: OutputsByKey,
    /// Events `check_limits` refused (dead-lettered `state_limit`).
    pub refused: usize,
}

impl Replayed {
    /// The last value written under output `role` and `key`, if any was (`Some(None)`: a
    /// tombstone).
    pub fn last(&self, role: &str, key: &str) -> Option<Option<&[u8]>> {
        let values = self.outputs.get(&(role.to_owned(), key.to_owned()))?;
        values.last().map(Option::as_deref)
    }
}

/// Replays `records` (event, broker append time; append times never decrease) through
/// `processor` on the runtime's own engine (`ProcessorTest`), then fires the timers due by `until`.
pub fn replay<P: Processor<Input = TouchpointEvent> + Clone>(
    processor: &P,
    records: &[(TouchpointEvent, DateTime<Utc>)],
    until: DateTime<Utc>,
) -> Replayed {
    let mut test = ProcessorTest::new(processor.clone());
    let mut replayed = Replayed::default();
    let steps =
        records.iter().map(|(event, appended)| test.when_appended(event, *appended)).collect::<Vec<_>>();
    for then in steps.into_iter().chain([test.when_time_passes(until)]) {
        for (code, message) in &then.dead_letters {
            assert_eq!(code, "state_limit", "a replayed event was dead-lettered: {message}");
            replayed.refused += 1;
        }
        for (role, key, value) in then.records {
            replayed.outputs.entry((role, key)).or_default().push(value);
        }
    }
    replayed
}
