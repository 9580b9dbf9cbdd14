//! Quiet hours in the customer's time zone (SPEC 4.2): whether an instant is inside a rule's
//! nightly window, when it ends and when the next begins, across daylight-saving changes (a
//! skipped end moves later by the gap, an ambiguous time is the earlier unless already past).

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use crate::rules::QuietHours;

/// Quiet hours at `at` in `zone`: when they end if `at` is inside them, and when they next start.
pub(crate) fn quiet_hours(quiet: &QuietHours, zone: Tz, at: i64) -> (Option<i64>, i64) {
    let instant = DateTime::from_timestamp_millis(at).unwrap_or_default().with_timezone(&zone);
    let local = instant.naive_local();
    let inside = quiet.covers(local.time());
    let next_local = |clock| {
        let today = local.date().and_time(clock);
        if today > local { today } else { today + Days::new(1) }
    };
    let until = inside.then(|| instant_of(zone, next_local(quiet.end), at)).or_else(|| {
        // An end the clocks skipped moves later by the gap: the night that began before the
        // gap lasts until then, though the wall clock already reads past its end.
        (0..=1).find_map(|days_back| {
            let began = local.date() - Days::new(days_back);
            let ends_on = if quiet.start < quiet.end { began } else { began + Days::new(1) };
            let end = ends_on.and_time(quiet.end);
            let skipped = matches!(zone.from_local_datetime(&end), LocalResult::None);
            let start = zone.from_local_datetime(&began.and_time(quiet.start)).earliest()?.timestamp_millis();
            let end = instant_of(zone, end, at);
            (skipped && start <= at && at < end).then_some(end)
        })
    });
    (until, instant_of(zone, next_local(quiet.start), at))
}

/// `zone`'s UTC offset (milliseconds) when it is the same two days either side of `at`: no clock
/// change can touch the quiet hours evaluated at `at` (the night that began up to two days
/// before, the next start within one), and local times convert with plain arithmetic. Most
/// evaluations take this path; the conversions of `quiet_hours` cost several times as much.
/// Sampled daily: no time zone changes its offset and back within a day.
pub(crate) fn steady_offset(zone: Tz, at: i64) -> Option<i64> {
    use chrono::Offset;
    const DAY: i64 = 86_400_000;
    if zone == Tz::UTC {
        return Some(0);
    }
    let offset = |millis: i64| {
        DateTime::from_timestamp_millis(millis)
            .map(|t| i64::from(zone.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc()) * 1_000)
    };
    let at_offset = offset(at)?;
    [-2, -1, 1, 2].iter().all(|days| offset(at + days * DAY) == Some(at_offset)).then_some(at_offset)
}

/// `quiet_hours` for a zone whose offset stays `offset` (milliseconds) around `at`.
pub(crate) fn quiet_hours_at_offset(quiet: &QuietHours, offset: i64, at: i64) -> (Option<i64>, i64) {
    let local = DateTime::from_timestamp_millis(at + offset).unwrap_or_default().naive_utc();
    let inside = quiet.covers(local.time());
    let next = |clock| {
        let today = local.date().and_time(clock);
        let next = if today > local { today } else { today + Days::new(1) };
        next.and_utc().timestamp_millis() - offset
    };
    (inside.then(|| next(quiet.end)), next(quiet.start))
}

/// The first instant in `(after, by]` at which `zone`'s UTC offset changes, if it does.
pub(crate) fn offset_change(zone: Tz, after: i64, by: i64) -> Option<i64> {
    use chrono::Offset;
    let offset = |millis: i64| {
        DateTime::from_timestamp_millis(millis).map(|t| zone.offset_from_utc_datetime(&t.naive_utc()).fix())
    };
    let before = offset(after)?;
    if by <= after || offset(by)? == before {
        return None;
    }
    // Bisection: at most one change within the day between two evaluations.
    let (mut same, mut changed) = (after, by);
    while changed - same > 1 {
        let middle = same + (changed - same) / 2;
        if offset(middle)? == before { same = middle } else { changed = middle }
    }
    Some(changed)
}

/// The instant of a local wall-clock time, for a change after `after`. An ambiguous one (clocks
/// set back) is the earlier, or the later when the earlier is not after `after`; one skipped by
/// clocks set forward moves later by the gap, as `java.time.ZonedDateTime.of` does (02:30 on the
/// night 02:00 jumps to 03:00 is 03:30 summer time).
fn instant_of(zone: Tz, local: NaiveDateTime, after: i64) -> i64 {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        // The earlier, unless it is already past (evaluated inside the repeated hour).
        LocalResult::Ambiguous(earlier, later) => {
            let earlier = earlier.timestamp_millis();
            if earlier > after { earlier } else { later.timestamp_millis() }
        }
        LocalResult::None => {
            let hour = chrono::Duration::hours(1);
            zone.from_local_datetime(&(local - hour))
                .earliest()
                .map(|before| (before + hour).timestamp_millis())
                .unwrap_or_else(|| local.and_utc().timestamp_millis())
        }
    }
}
