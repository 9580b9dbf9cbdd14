//! suppression's rules (SPEC 4.2) as given/when/then tables over the pure core.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use omnistream_model::records::{ChannelSuppression, SuppressionState, SuppressionStatus};
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent, TraitValue};
use omnistream_runtime::Processor;
use omnistream_runtime::testing::{ProcessorTest, Then};
use omnistream_suppression::SUPPRESSIONS_OUTPUT as SUPPRESSIONS;
use omnistream_suppression::{QuietHours, Rules, Suppression, code};
use omnistream_testkit::temp_file;

use SuppressionStatus::{Allowed, Blocked, Deferred};

/// 2026-11-20 12:00 UTC plus `minutes`.
fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn event(n: usize, at: DateTime<Utc>, channel: Channel, payload: EventPayload) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("e-{n}"),
        customer_id: "c-1".into(),
        occurred_at: at,
        channel,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    }
}

fn page_view() -> EventPayload {
    EventPayload::PageViewed { url: "/".into() }
}
fn opened(ticket: &str) -> EventPayload {
    EventPayload::SupportTicketOpened { ticket_id: ticket.into(), topic: None }
}
fn resolved(ticket: &str) -> EventPayload {
    EventPayload::SupportTicketResolved { ticket_id: ticket.into() }
}
fn consent(granted: bool) -> EventPayload {
    EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted }
}
fn sent(purpose: Purpose) -> EventPayload {
    EventPayload::MessageSent { message_id: "m".into(), campaign_id: None, purpose }
}
fn hard_bounce() -> EventPayload {
    EventPayload::MessageBounced { message_id: "m".into(), hard: true }
}
fn timezone(name: &str) -> EventPayload {
    EventPayload::TraitsUpdated {
        set: BTreeMap::from([("timezone".into(), TraitValue::String(name.into()))]),
        set_once: BTreeMap::new(),
        unset: Vec::new(),
    }
}
fn order() -> EventPayload {
    EventPayload::OrderPlaced { order_id: "o".into(), value_minor: 100, currency: "EUR".into(), items: None }
}

/// Rules without the default caps and quiet hours, so a table sees only the rule it is about.
fn bare() -> Rules {
    Rules { frequency_caps: Vec::new(), quiet_hours: Vec::new(), ..Rules::default() }
}

/// An event of the given part of a table: when, where, what.
type Given = (DateTime<Utc>, Channel, EventPayload);

/// The processor driven through the runtime's own engine, one customer: each step's record is
/// the last suppression state it produced.
struct Run {
    test: ProcessorTest<Suppression>,
    last: Option<SuppressionState>,
    n: usize,
}

impl Run {
    fn new(rules: Rules) -> Self {
        Self { test: ProcessorTest::new(Suppression::new(rules)), last: None, n: 0 }
    }

    fn given(mut self, events: Vec<Given>) -> Self {
        for (at, channel, payload) in events {
            self.when(at, channel, payload);
        }
        self
    }

    /// It arrives as it happens: appended at its own time (the partition clock never goes back).
    fn when(&mut self, at: DateTime<Utc>, channel: Channel, payload: EventPayload) -> &SuppressionState {
        self.arrives(at, at, channel, payload)
    }

    /// An event dated `occurred_at` that the broker appends at `arrives` (the partition clock).
    fn arrives(
        &mut self,
        arrives: DateTime<Utc>,
        occurred_at: DateTime<Utc>,
        channel: Channel,
        payload: EventPayload,
    ) -> &SuppressionState {
        self.n += 1;
        let then = self.test.when_appended(&event(self.n, occurred_at, channel, payload), arrives);
        self.record(&then)
    }

    /// The partition caught up and the wall clock reads `now`: due timers fire.
    fn timer(&mut self, now: DateTime<Utc>) -> &SuppressionState {
        let then = self.test.when_time_passes(now);
        self.record(&then)
    }

    fn record(&mut self, then: &Then) -> &SuppressionState {
        assert_eq!(then.dead_letters, Vec::new());
        let values = then.decoded::<SuppressionState>(SUPPRESSIONS);
        let last = values.into_iter().last().expect("a record").expect("a state, not a tombstone");
        self.last = Some(last);
        self.last.as_ref().unwrap()
    }

    fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.test.processor().next_timer(&self.test.state("c-1")?)
    }

    fn marketing(&self, channel: Channel) -> &ChannelSuppression {
        self.last.as_ref().unwrap().marketing.iter().find(|c| c.channel == channel).unwrap()
    }

    fn transactional(&self, channel: Channel) -> &ChannelSuppression {
        self.last.as_ref().unwrap().transactional.iter().find(|c| c.channel == channel).unwrap()
    }
}

fn codes(channel: &ChannelSuppression) -> Vec<&str> {
    channel.reasons.iter().map(|r| &*r.code).collect()
}

#[test]
fn an_open_ticket_blocks_marketing_everywhere_until_resolved_or_its_maximum() {
    let mut run = Run::new(bare()).given(vec![(t(0), Channel::Whatsapp, opened("T-77"))]);
    for &channel in Channel::MESSAGING {
        let state = run.marketing(channel);
        assert_eq!((state.status, codes(state)), (Blocked, vec![code::SUPPORT_TICKET_OPEN]), "{channel}");
        assert_eq!(state.reasons[0].detail.as_deref(), Some("T-77"));
        assert_eq!(state.until, Some(t(0) + Duration::days(14)), "the safety maximum");
        assert_eq!(run.transactional(channel).status, Allowed, "transactional ignores tickets");
    }
    run.when(t(45), Channel::CallCenter, resolved("T-77"));
    assert!(Channel::MESSAGING.iter().all(|&c| run.marketing(c).status == Allowed));

    // The maximum lapses on its own.
    let mut run = Run::new(bare()).given(vec![(t(0), Channel::Web, opened("T-1"))]);
    run.when(t(0) + Duration::days(14), Channel::Web, page_view());
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
}

#[test]
fn every_open_ticket_must_be_resolved_and_a_late_open_does_not_reopen() {
    let mut run =
        Run::new(bare()).given(vec![(t(0), Channel::Web, opened("A")), (t(1), Channel::Web, opened("B"))]);
    run.when(t(2), Channel::Web, resolved("A"));
    let email = run.marketing(Channel::Email);
    assert_eq!((email.status, email.reasons.len()), (Blocked, 1));
    assert_eq!(email.reasons[0].detail.as_deref(), Some("B"));
    run.when(t(3), Channel::Web, resolved("B"));
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
    // The opening of A arrives again late (a retry with another id, older event time).
    run.when(t(0), Channel::Web, opened("A"));
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
}

#[test]
fn consent_by_channel_newest_event_time_wins() {
    // given / when / then: status of sms marketing
    let cases: Vec<(&str, Vec<Given>, SuppressionStatus, Vec<&str>)> = vec![
        ("no consent event, default granted", vec![(t(0), Channel::Web, page_view())], Allowed, vec![]),
        ("revoked", vec![(t(0), Channel::Sms, consent(false))], Blocked, vec![code::CONSENT_REVOKED]),
        (
            "revoked then granted",
            vec![(t(0), Channel::Sms, consent(false)), (t(1), Channel::Sms, consent(true))],
            Allowed,
            vec![],
        ),
        (
            "a late older grant does not undo a revocation",
            vec![(t(5), Channel::Sms, consent(false)), (t(1), Channel::Sms, consent(true))],
            Blocked,
            vec![code::CONSENT_REVOKED],
        ),
        ("another channel's revocation", vec![(t(0), Channel::Email, consent(false))], Allowed, vec![]),
    ];
    for (name, given, status, reasons) in cases {
        let run = Run::new(bare()).given(given);
        let sms = run.marketing(Channel::Sms);
        assert_eq!((sms.status, codes(sms)), (status, reasons), "{name}");
        assert_eq!(sms.until, None, "{name}: waits for an event, no time");
        assert_eq!(run.transactional(Channel::Sms).status, Allowed, "{name}: transactional ignores consent");
    }
}

#[test]
fn a_channel_that_requires_consent_is_blocked_until_a_grant() {
    let rules = Rules { consent_required: vec![Channel::Sms, Channel::Whatsapp], ..bare() };
    let mut run = Run::new(rules).given(vec![(t(0), Channel::Web, page_view())]);
    assert_eq!(codes(run.marketing(Channel::Sms)), vec![code::NO_CONSENT]);
    assert_eq!(codes(run.marketing(Channel::Whatsapp)), vec![code::NO_CONSENT]);
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
    run.when(t(1), Channel::Sms, consent(true));
    assert_eq!(run.marketing(Channel::Sms).status, Allowed);
    assert_eq!(run.marketing(Channel::Whatsapp).status, Blocked);
}

#[test]
fn hard_bounces_and_spam_reports_block_every_purpose_until_consent_is_granted_again() {
    for (name, payload, reason) in [
        ("hard bounce", hard_bounce(), code::HARD_BOUNCE),
        ("spam report", EventPayload::SpamReported { message_id: "m".into() }, code::SPAM_REPORT),
    ] {
        let mut run = Run::new(bare())
            .given(vec![(t(0), Channel::Email, consent(true)), (t(1), Channel::Email, payload)]);
        assert_eq!(
            codes(run.marketing(Channel::Email)),
            vec![reason],
            "{name}: a grant before it does not lift it"
        );
        assert_eq!(codes(run.transactional(Channel::Email)), vec![reason], "{name}");
        assert_eq!(run.transactional(Channel::Email).status, Blocked, "{name}");
        assert_eq!(run.marketing(Channel::Sms).status, Allowed, "{name}: only that channel");
        run.when(t(2), Channel::Email, consent(true));
        assert_eq!(run.marketing(Channel::Email).status, Allowed, "{name}: granted again");
        assert_eq!(run.transactional(Channel::Email).status, Allowed, "{name}");
    }
    let run = Run::new(bare()).given(vec![(
        t(0),
        Channel::Email,
        EventPayload::MessageBounced { message_id: "m".into(), hard: false },
    )]);
    assert_eq!(run.marketing(Channel::Email).status, Allowed, "a soft bounce blocks nothing");
}

#[test]
fn frequency_caps_defer_until_the_oldest_counted_send_leaves_the_window() {
    // Default caps: email 1 per 16 h, push 2 per 24 h.
    let rules = Rules { quiet_hours: Vec::new(), ..Rules::default() };
    let mut run = Run::new(rules).given(vec![(t(0), Channel::Email, sent(Purpose::Marketing))]);
    let email = run.marketing(Channel::Email);
    assert_eq!((email.status, codes(email)), (Deferred, vec![code::FREQUENCY_CAP]));
    assert_eq!(email.until, Some(t(0) + Duration::hours(16)));
    assert_eq!(email.reasons[0].detail.as_deref(), Some("at most 1 per 16h"));
    assert_eq!(run.last.as_ref().unwrap().next_change_at, Some(t(0) + Duration::hours(16)));

    run.when(t(10), Channel::Push, sent(Purpose::Marketing));
    assert_eq!(run.marketing(Channel::Push).status, Allowed, "one of two");
    run.when(t(20), Channel::Push, sent(Purpose::Marketing));
    assert_eq!(run.marketing(Channel::Push).until, Some(t(10) + Duration::hours(24)), "the older of the two");

    run.when(t(0) + Duration::hours(16), Channel::Web, page_view());
    assert_eq!(run.marketing(Channel::Email).status, Allowed, "the send left the window");

    let run = Run::new(Rules { quiet_hours: Vec::new(), ..Rules::default() }).given(vec![(
        t(0),
        Channel::Email,
        sent(Purpose::Transactional),
    )]);
    assert_eq!(run.marketing(Channel::Email).status, Allowed, "transactional sends do not count");
}

#[test]
fn several_caps_on_one_channel_all_apply() {
    let cap =
        |max, window_hours| omnistream_suppression::FrequencyCap { channel: Channel::Sms, max, window_hours };
    let rules = Rules { frequency_caps: vec![cap(2, 1.0), cap(3, 24.0)], ..bare() };
    let mut run = Run::new(rules).given(vec![
        (t(0), Channel::Sms, sent(Purpose::Marketing)),
        (t(70), Channel::Sms, sent(Purpose::Marketing)),
        (t(80), Channel::Sms, sent(Purpose::Marketing)),
    ]);
    let sms = run.marketing(Channel::Sms);
    assert_eq!(codes(sms), vec![code::FREQUENCY_CAP, code::FREQUENCY_CAP]);
    assert_eq!(sms.reasons[0].until, Some(t(70 + 60)), "2 per hour");
    assert_eq!(sms.reasons[1].until, Some(t(0) + Duration::hours(24)), "3 per day");
    assert_eq!(sms.until, Some(t(0) + Duration::hours(24)), "allowed when both have lapsed");
    run.when(t(131), Channel::Web, page_view());
    assert_eq!(codes(run.marketing(Channel::Sms)), vec![code::FREQUENCY_CAP]);
}

#[test]
fn quiet_hours_follow_the_customers_time_zone() {
    let rules = Rules { frequency_caps: Vec::new(), ..Rules::default() };
    // given time zone, when an event at, then sms deferred until (None: allowed)
    let cases = [
        ("UTC by default, evening", None, "2026-11-20T22:00:00Z", Some("2026-11-21T08:00:00Z")),
        ("UTC by default, afternoon", None, "2026-11-20T15:00:00Z", None),
        ("UTC by default, early morning", None, "2026-11-20T07:59:00Z", Some("2026-11-20T08:00:00Z")),
        ("Tokyo at 22:00 JST", Some("Asia/Tokyo"), "2026-11-20T13:00:00Z", Some("2026-11-20T23:00:00Z")),
        ("New York in the afternoon there", Some("America/New_York"), "2026-11-20T19:00:00Z", None),
        (
            "an unknown zone counts as UTC",
            Some("Mars/Olympus"),
            "2026-11-20T22:00:00Z",
            Some("2026-11-21T08:00:00Z"),
        ),
        // Spring forward in Berlin on 2026-03-29 (02:00 CET -> 03:00 CEST): the night is an hour shorter.
        (
            "Berlin, clocks set forward",
            Some("Europe/Berlin"),
            "2026-03-28T21:30:00Z",
            Some("2026-03-29T06:00:00Z"),
        ),
        // Fall back on 2026-10-25 (03:00 CEST -> 02:00 CET): an hour longer.
        (
            "Berlin, clocks set back",
            Some("Europe/Berlin"),
            "2026-10-24T20:30:00Z",
            Some("2026-10-25T07:00:00Z"),
        ),
    ];
    for (name, zone, at, until) in cases {
        let mut given = Vec::new();
        if let Some(zone) = zone {
            given.push((utc(at) - Duration::days(1), Channel::Web, timezone(zone)));
        }
        given.push((utc(at), Channel::Web, page_view()));
        let run = Run::new(rules.clone()).given(given);
        let sms = run.marketing(Channel::Sms);
        assert_eq!(sms.until, until.map(utc), "{name}");
        if until.is_some() {
            assert_eq!((sms.status, codes(sms)), (Deferred, vec![code::QUIET_HOURS]), "{name}");
        }
        assert_eq!(
            run.marketing(Channel::Email).status,
            Allowed,
            "{name}: email has no quiet hours by default"
        );
    }
}

#[test]
fn quiet_hours_starting_are_a_change_the_timer_announces() {
    let rules = Rules { frequency_caps: Vec::new(), ..Rules::default() };
    let mut run = Run::new(rules).given(vec![(utc("2026-11-20T15:00:00Z"), Channel::Web, page_view())]);
    assert_eq!(run.last.as_ref().unwrap().next_change_at, Some(utc("2026-11-20T21:00:00Z")));
    let state = run.timer(utc("2026-11-20T21:00:00.500Z"));
    assert_eq!(state.next_change_at, Some(utc("2026-11-21T08:00:00Z")));
    assert_eq!(run.marketing(Channel::Push).status, Deferred);
    run.timer(utc("2026-11-21T08:00:00.200Z"));
    assert_eq!(run.marketing(Channel::Push).status, Allowed);
}

#[test]
fn a_post_order_cool_down_is_off_by_default() {
    let run = Run::new(bare()).given(vec![(t(0), Channel::Store, order())]);
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
    let run =
        Run::new(Rules { order_cooldown_hours: 48.0, ..bare() }).given(vec![(t(0), Channel::Store, order())]);
    let email = run.marketing(Channel::Email);
    assert_eq!((email.status, codes(email)), (Deferred, vec![code::RECENT_ORDER]));
    assert_eq!(email.until, Some(t(0) + Duration::hours(48)));
    assert_eq!(run.transactional(Channel::Email).status, Allowed);
}

#[test]
fn the_holdout_is_a_stable_share_of_customers() {
    let run =
        Run::new(Rules { holdout_percent: 100.0, ..bare() }).given(vec![(t(0), Channel::Web, page_view())]);
    assert!(run.last.as_ref().unwrap().holdout);
    assert_eq!(codes(run.marketing(Channel::Email)), vec![code::HOLDOUT]);
    assert_eq!(run.transactional(Channel::Email).status, Allowed);
    let run = Run::new(bare()).given(vec![(t(0), Channel::Web, page_view())]);
    assert!(!run.last.as_ref().unwrap().holdout);
    let share =
        (0..10_000).filter(|i| omnistream_suppression::in_holdout(&format!("c-{i:06}"), 10.0)).count();
    assert!((900..1_100).contains(&share), "10 % of customers, got {share} of 10,000");
}

#[test]
fn every_applicable_reason_is_listed_with_the_time_all_have_lapsed() {
    // An open ticket, quiet hours and a full cap on sms at once.
    let mut run = Run::new(Rules::default()).given(vec![
        (utc("2026-11-20T20:00:00Z"), Channel::Sms, sent(Purpose::Marketing)),
        (utc("2026-11-20T21:30:00Z"), Channel::Whatsapp, opened("T-9")),
    ]);
    let sms = run.marketing(Channel::Sms);
    assert_eq!(sms.status, Blocked);
    assert_eq!(codes(sms), vec![code::SUPPORT_TICKET_OPEN, code::FREQUENCY_CAP, code::QUIET_HOURS]);
    assert_eq!(sms.until, Some(utc("2026-12-04T21:30:00Z")), "the ticket's maximum lapses last");
    assert_eq!(
        run.last.as_ref().unwrap().next_change_at,
        Some(utc("2026-11-21T08:00:00Z")),
        "quiet hours end first"
    );
    run.when(utc("2026-11-20T21:40:00Z"), Channel::Web, resolved("T-9"));
    let sms = run.marketing(Channel::Sms);
    assert_eq!((sms.status, codes(sms)), (Deferred, vec![code::FREQUENCY_CAP, code::QUIET_HOURS]));
    assert_eq!(sms.until, Some(utc("2026-11-21T20:00:00Z")), "the cap lapses after the night");
}

#[test]
fn a_deferral_passes_by_timer_without_a_new_event() {
    let rules = Rules { quiet_hours: Vec::new(), ..Rules::default() };
    let mut run = Run::new(rules).given(vec![(t(0), Channel::Email, sent(Purpose::Marketing))]);
    let due = run.next_timer().unwrap();
    assert_eq!(due, t(0) + Duration::hours(16));
    let state = run.timer(due + Duration::seconds(1)).clone();
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
    assert_eq!(state.evaluated_at, due, "as of the timer's due time, however late it runs");
    assert_eq!(state.next_change_at, None);
    assert_eq!(run.next_timer(), None, "the timer moved on");
}

#[test]
fn a_late_event_is_evaluated_at_the_latest_time_seen() {
    let mut run = Run::new(bare()).given(vec![(t(100), Channel::Web, page_view())]);
    let late = run.when(t(0), Channel::Sms, consent(true)).clone();
    assert_eq!(late.evaluated_at, t(100), "a late event is evaluated at the latest time seen");
    assert_eq!(late.version, 1, "the page view made the record; the consent is the first event read");
}

/// The limit of open tickets counts those open when the new one arrives, not when the last event
/// suppression read did: the 16 of day 0 lapsed at day 14 (the safety maximum), and a page view
/// since (ignored) moved only the partition clock.
#[test]
fn the_ticket_limit_is_judged_at_the_partition_clock_not_at_the_last_event_read() {
    const DAY: i64 = 1_440;
    let first = (0..16).map(|n| (t(n), Channel::CallCenter, opened(&format!("T-{n}"))));
    let later = (16..64).map(|n| (t(DAY + n), Channel::CallCenter, opened(&format!("T-{n}"))));
    let mut run = Run::new(bare()).given(first.chain(later).collect());
    run.when(t(14 * DAY + 60), Channel::Web, page_view());
    let state = run.when(t(14 * DAY + 61), Channel::CallCenter, opened("T-64")).clone();
    assert_eq!(state.version, 65, "accepted, not dead-lettered");
}

#[test]
fn after_the_first_event_one_suppression_does_not_read_writes_nothing() {
    let mut run = Run::new(bare()).given(vec![(t(0), Channel::Sms, consent(false))]);
    run.n += 1;
    let then = run.test.when(&event(run.n, t(1), Channel::Web, page_view()));
    assert_eq!(then, Then::default(), "no record, no dead letter");
    let next = run.when(t(2), Channel::Sms, consent(true)).clone();
    assert_eq!((next.evaluated_at, next.version), (t(2), 2), "as of the consent; the page view not counted");
}

#[test]
fn erasure_forgets_the_customer_and_writes_a_tombstone() {
    let mut run = Run::new(bare()).given(vec![(t(0), Channel::Sms, consent(false))]);
    run.n += 1;
    let then = run.test.when(&event(run.n, t(1), Channel::Web, EventPayload::ErasureRequested));
    assert_eq!(then.values(SUPPRESSIONS), vec![None], "a tombstone");
    assert!(run.test.state("c-1").is_none(), "forgotten");
    let retry = run.test.when(&event(1, t(0), Channel::Sms, consent(false)));
    assert_eq!(retry, Then::default(), "a retry of an erased event recreates nothing");
}

#[test]
fn rules_come_from_a_toml_file_with_the_spec_defaults_for_what_it_leaves_out() {
    let file = temp_file(
        "suppression-rules",
        "toml",
        r#"
consent_required = ["sms", "whatsapp"]
holdout_percent = 5
[[quiet_hours]]
channels = ["push"]
start = "22:30"
end = "07:00"
"#,
    );
    let rules = Rules::from_file(&file).unwrap();
    assert_eq!(rules.consent_required, vec![Channel::Sms, Channel::Whatsapp]);
    assert_eq!(rules.holdout_percent, 5.0);
    assert_eq!(
        rules.quiet_hours,
        vec![QuietHours {
            channels: vec![Channel::Push],
            start: NaiveTime::from_hms_opt(22, 30, 0).unwrap(),
            end: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
        }]
    );
    assert_eq!(rules.frequency_caps, Rules::default().frequency_caps, "left out: the default");
    assert_eq!(rules.ticket_max_days, 14.0);

    for (bad, mentions) in [
        ("holdout_percent = 120", "holdout_percent"),
        ("unknown_rule = 1", "unknown_rule"),
        ("[[frequency_caps]]\nchannel = \"email\"\nmax = 0\nwindow_hours = 1", "max"),
        ("[[quiet_hours]]\nchannels = [\"sms\"]\nstart = \"9pm\"\nend = \"08:00\"", "9pm"),
        ("consent_required = [\"pigeon\"]", "pigeon"),
    ] {
        let file = temp_file("suppression-rules", "toml", bad);
        let error = Rules::from_file(&file).unwrap_err().to_string();
        assert!(error.contains(mentions), "{bad:?} gave {error}");
        std::fs::remove_file(file).ok();
    }
    std::fs::remove_file(file).ok();
}

#[test]
fn the_example_rules_file_states_the_defaults() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/suppression-rules.example.toml");
    assert_eq!(Rules::from_file(&example).unwrap(), Rules::default());
}

#[test]
fn a_bounce_stays_lifted_when_a_later_revocation_follows_the_grant() {
    let mut run = Run::new(bare()).given(vec![
        (t(0), Channel::Email, hard_bounce()),
        (t(1), Channel::Email, consent(true)),
        (t(2), Channel::Email, consent(false)),
    ]);
    assert_eq!(codes(run.marketing(Channel::Email)), vec![code::CONSENT_REVOKED]);
    assert_eq!(run.transactional(Channel::Email).status, Allowed, "receipts still go out");
    // A bounce older than the grant, arriving late, stays lifted; a newer one blocks again.
    run.when(t(0), Channel::Email, hard_bounce());
    assert_eq!(run.transactional(Channel::Email).status, Allowed);
    run.when(t(3), Channel::Email, hard_bounce());
    assert_eq!(codes(run.transactional(Channel::Email)), vec![code::HARD_BOUNCE]);
}

/// SPEC 4, future-dated events: one event dated 20 h ahead (clock skew) made suppression evaluate
/// as of its time, so a marketing email sent now no longer capped email (1 per 16 h).
#[test]
fn an_event_dated_ahead_does_not_move_the_clock() {
    let email_cap = Rules {
        frequency_caps: vec![omnistream_suppression::FrequencyCap {
            channel: Channel::Email,
            max: 1,
            window_hours: 16.0,
        }],
        ..bare()
    };
    let mut run = Run::new(email_cap.clone());
    run.arrives(t(0), t(20 * 60), Channel::Web, page_view());
    let state = run.arrives(t(1), t(1), Channel::Email, sent(Purpose::Marketing)).clone();
    assert_eq!(state.evaluated_at, t(1), "as of the partition clock");
    let email = run.marketing(Channel::Email);
    assert_eq!((email.status, email.until), (Deferred, Some(t(1) + Duration::hours(16))));

    // A send dated 20 h ahead counts in the window from its own time, not at once.
    let mut run = Run::new(email_cap);
    let state = run.arrives(t(0), t(20 * 60), Channel::Email, sent(Purpose::Marketing)).clone();
    assert_eq!(run.marketing(Channel::Email).status, Allowed);
    assert_eq!(state.next_change_at, Some(t(20 * 60)), "re-evaluated when the send's time comes");
    run.timer(t(20 * 60));
    let email = run.marketing(Channel::Email);
    assert_eq!((email.status, email.until), (Deferred, Some(t(36 * 60))));
}

/// SPEC 4, one rule in one place: suppression resolved `timezone` differently from
/// profile-updater (a late `set` lost to an older-arriving, later-dated `set_once`). Arrival:
/// set_once Asia/Tokyo at 12:05, set America/New_York at 12:01. In event-time order the set comes
/// first and the set_once finds the trait present: New York, in both services.
#[test]
fn suppression_and_the_profile_resolve_the_timezone_alike() {
    let quiet_all_day = Rules {
        quiet_hours: vec![QuietHours {
            channels: vec![Channel::Sms],
            start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(23, 59, 0).unwrap(),
        }],
        ..bare()
    };
    let zone = |name: &str| BTreeMap::from([("timezone".to_owned(), TraitValue::String(name.into()))]);
    let events = [
        (
            t(5),
            EventPayload::TraitsUpdated {
                set: BTreeMap::new(),
                set_once: zone("Asia/Tokyo"),
                unset: Vec::new(),
            },
        ),
        (
            t(1),
            EventPayload::TraitsUpdated {
                set: zone("America/New_York"),
                set_once: BTreeMap::new(),
                unset: Vec::new(),
            },
        ),
    ];
    let mut run = Run::new(quiet_all_day);
    let profiles = omnistream_profile_updater::ProfileUpdater;
    let mut profile = None;
    for (n, (at, payload)) in events.into_iter().enumerate() {
        let event = event(n, at, Channel::Web, payload.clone());
        profiles.apply(&mut profile, &event, t(6));
        run.arrives(t(6), at, Channel::Web, payload);
    }
    let profile = profile.expect("a profile").profile;
    assert_eq!(
        profile.traits.get("timezone").map(|t| &t.value),
        Some(&TraitValue::String("America/New_York".into()))
    );
    let sms = run.marketing(Channel::Sms);
    assert!(sms.reasons[0].detail.as_deref().unwrap().ends_with("America/New_York"), "{sms:?}");
}

/// SPEC 4, event time: a resolution dated before the ticket's opening (arriving after it) does
/// not close it: in event-time order the ticket is open.
#[test]
fn a_resolution_dated_before_the_opening_leaves_the_ticket_open() {
    let mut run = Run::new(bare()).given(vec![(t(60), Channel::Whatsapp, opened("T-9"))]);
    run.arrives(t(61), t(30), Channel::CallCenter, resolved("T-9"));
    assert_eq!(codes(run.marketing(Channel::Email)), vec![code::SUPPORT_TICKET_OPEN]);
}

/// The marketing reasons per channel of a record.
fn marketing_reasons(record: &SuppressionState) -> Vec<(Channel, SuppressionStatus, Vec<String>)> {
    record
        .marketing
        .iter()
        .map(|c| (c.channel, c.status, c.reasons.iter().map(|r| r.code.to_string()).collect()))
        .collect()
}

fn merged_record(outputs: &[omnistream_runtime::Output<SuppressionState>]) -> SuppressionState {
    outputs[0].value.clone().expect("the winner's record")
}

#[test]
fn given_a_whatsapp_ticket_on_one_customer_when_merged_with_the_email_customer_then_email_marketing_is_blocked_either_way()
 {
    let suppression = Suppression::default();
    let of = |customer: &str, mut event: TouchpointEvent| {
        event.customer_id = customer.into();
        event
    };
    let mut phone = None;
    suppression.apply(&mut phone, &of("c-phone", event(1, t(0), Channel::Whatsapp, opened("T-1"))), t(0));
    suppression.apply(&mut phone, &of("c-phone", event(2, t(1), Channel::Sms, hard_bounce())), t(1));
    let mut email = None;
    suppression.apply(&mut email, &of("c-email", event(3, t(2), Channel::Email, consent(true))), t(2));
    suppression.apply(&mut email, &of("c-email", event(4, t(3), Channel::Sms, consent(true))), t(3));

    let into_email = merged_record(&suppression.merge(
        &mut email.clone(),
        "c-email",
        "c-phone",
        "merge-1",
        phone.clone().unwrap(),
        t(4),
    ));
    let into_phone = merged_record(&suppression.merge(
        &mut phone.clone(),
        "c-phone",
        "c-email",
        "merge-1",
        email.clone().unwrap(),
        t(4),
    ));
    let reasons = marketing_reasons(&into_email);
    let email_marketing = reasons.iter().find(|(channel, ..)| *channel == Channel::Email).expect("email");
    assert_eq!(email_marketing.1, Blocked, "{reasons:?}");
    assert!(email_marketing.2.contains(&code::SUPPORT_TICKET_OPEN.to_owned()), "{reasons:?}");
    // The SMS bounce (at 1) came before the SMS grant (at 3): lifted, whichever side held which.
    let sms = reasons.iter().find(|(channel, ..)| *channel == Channel::Sms).expect("sms");
    assert!(!sms.2.contains(&code::HARD_BOUNCE.to_owned()), "{reasons:?}");
    assert_eq!(reasons, marketing_reasons(&into_phone), "the same whichever customer wins");
    assert_eq!(into_email.transactional, into_phone.transactional);
}

#[test]
fn given_a_merge_event_then_the_losers_record_is_a_tombstone_and_its_memory_stays_for_the_handoff() {
    let suppression = Suppression::default();
    let mut state = None;
    suppression.apply(&mut state, &event(1, t(0), Channel::Whatsapp, opened("T-1")), t(0));
    let merge = EventPayload::CustomersMerged {
        winner: "c-0".into(),
        merge_id: "m".into(),
        identifier_type: "phone".into(),
        identifier_value: "+14155550100".into(),
        evidence_event_id: "e-9".into(),
    };
    let merge = event(2, t(1), Channel::Whatsapp, merge);
    assert_eq!(suppression.handoff_target(&merge).as_deref(), Some("c-0"));
    let before = state.clone();
    let outputs = suppression.apply(&mut state, &merge, t(1));
    assert_eq!(outputs.len(), 1);
    assert_eq!((outputs[0].key.as_str(), outputs[0].value.is_none()), ("c-1", true));
    assert_eq!(state, before, "untouched: the runtime moves it");
}
