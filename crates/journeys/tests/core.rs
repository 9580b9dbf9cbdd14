//! The journeys core, given/when/then with explicit clocks: the flows on the shipped
//! definitions, decisions worked out by hand from them and from suppression's default rules
//! (SPEC 4.2: email 1 per 16 h; quiet hours 21:00-08:00 for sms, whatsapp and push; an open
//! ticket blocks marketing).

use std::sync::Arc;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use omnistream_channel_affinity::AffinityConfig;
use omnistream_journeys::core::{
    CustomerJourneys, Decision, Definitions, EndReason, Engine, Outcome, local_time_after,
};
use omnistream_model::records::{CatalogEvent, CatalogEventType};
use omnistream_model::{Channel, TouchpointEvent, event_from_json};
use omnistream_suppression::Rules;
use serde_json::{Value, json};

const CUSTOMER: &str = "c-1";

fn at(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

fn event(id: &str, kind: &str, channel: &str, when: &str, properties: Value) -> TouchpointEvent {
    let json = json!({
        "event_id": id, "customer_id": CUSTOMER, "occurred_at": when, "channel": channel,
        "type": kind, "properties": properties,
    });
    event_from_json(&json, DateTime::parse_from_rfc3339(when).unwrap().with_timezone(&Utc)).unwrap()
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../../journeys/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A customer, the engine with the default rules, and the journeys published.
struct Given {
    engine: Engine,
    definitions: Definitions,
    state: CustomerJourneys,
}

impl Given {
    fn journeys(texts: &[&str]) -> Self {
        let mut definitions = Definitions::default();
        for text in texts {
            definitions
                .insert(omnistream_journeys::check(text).unwrap_or_else(|problems| panic!("{problems}")));
        }
        let engine =
            Engine { suppression: Arc::new(Rules::default().prepare()), affinity: AffinityConfig::default() };
        Self { engine, definitions, state: CustomerJourneys::default() }
    }

    /// The event arrives when it happened.
    fn when(&mut self, event: &TouchpointEvent) -> Vec<Decision> {
        let now = event.occurred_at.timestamp_millis();
        self.engine.apply(&self.definitions, &mut self.state, CUSTOMER, event, now)
    }

    /// The next timer fires (it must be due by `until`).
    fn timer(&mut self, until: &str) -> (i64, Vec<Decision>) {
        let due = Engine::next_timer(&self.state).expect("a timer");
        assert!(due <= at(until), "due {} after {until}", DateTime::from_timestamp_millis(due).unwrap());
        (due, self.engine.on_timer(&self.definitions, &mut self.state, CUSTOMER, due))
    }
}

fn sends(decisions: &[Decision]) -> Vec<(String, Channel, String)> {
    decisions
        .iter()
        .filter_map(|d| match d.outcome {
            Outcome::Send(channel) => Some((d.step.clone(), channel, d.template.clone())),
            _ => None,
        })
        .collect()
}

fn send(step: &str, channel: Channel, template: &str) -> (String, Channel, String) {
    (step.to_owned(), channel, template.to_owned())
}

fn black_friday_view(when: &str) -> TouchpointEvent {
    event("bf-view", "page_viewed", "web", when, json!({"url": "/black-friday/shoes"}))
}

#[test]
fn black_friday_runs_email_then_the_best_of_sms_and_whatsapp_then_a_push_a_day_later() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    let decisions = given.when(&black_friday_view("2026-11-27T10:00:00Z"));
    assert_eq!(sends(&decisions), [send("offer", Channel::Email, "bf-offer")]);
    // Not opened within 4 hours: the follow-up, on SMS (no history: affinity ranks sms before
    // whatsapp, as the channels are listed).
    let (due, decisions) = given.timer("2026-11-27T14:00:00Z");
    assert_eq!(due, at("2026-11-27T14:00:00Z"));
    assert_eq!(sends(&decisions), [send("follow-up", Channel::Sms, "bf-follow-up")]);
    let (due, decisions) = given.timer("2026-11-28T14:00:00Z");
    assert_eq!(due, at("2026-11-28T14:00:00Z"), "24 hours after the follow-up");
    assert_eq!(sends(&decisions), [send("bonus", Channel::Push, "bf-bonus")]);
    assert!(given.state.entries.is_empty());
    assert_eq!(given.state.ended[0].reason, EndReason::Completed);
    assert_eq!(Engine::next_timer(&given.state), None);
}

#[test]
fn opening_the_offer_skips_the_follow_up_and_a_click_ends_the_journey_at_once_mid_wait() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    let offer = given.when(&black_friday_view("2026-11-27T10:00:00Z")).remove(0);
    let opened = event(
        "open-1",
        "message_opened",
        "email",
        "2026-11-27T11:00:00Z",
        json!({"message_id": offer.decision_id}),
    );
    assert!(given.when(&opened).is_empty());
    assert_eq!(
        Engine::next_timer(&given.state),
        Some(at("2026-11-28T11:00:00Z")),
        "the 24 h wait, from the open"
    );
    // A click in the middle of the 24 hours ends it now, not when the wait ends.
    let clicked = event(
        "click-1",
        "message_clicked",
        "email",
        "2026-11-27T15:00:00Z",
        json!({"message_id": offer.decision_id, "url": "https://shop/bf"}),
    );
    assert!(given.when(&clicked).is_empty());
    assert!(given.state.entries.is_empty());
    assert_eq!(given.state.ended[0].reason, EndReason::Exited { event_id: "click-1".into() });
    assert_eq!(Engine::next_timer(&given.state), None, "nothing left to fire");
}

#[test]
fn an_open_of_another_campaigns_message_is_not_this_journeys() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    given.when(&black_friday_view("2026-11-27T10:00:00Z"));
    let other = event(
        "open-x",
        "message_opened",
        "email",
        "2026-11-27T11:00:00Z",
        json!({"message_id": "newsletter-7"}),
    );
    given.when(&other);
    let (_, decisions) = given.timer("2026-11-27T14:00:00Z");
    assert_eq!(sends(&decisions), [send("follow-up", Channel::Sms, "bf-follow-up")]);
}

#[test]
fn an_order_is_the_goal_whatever_step_the_customer_is_in() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    given.when(&black_friday_view("2026-11-27T10:00:00Z"));
    given.timer("2026-11-27T14:00:00Z");
    let order = event(
        "order-1",
        "order_placed",
        "web",
        "2026-11-27T20:00:00Z",
        json!({"order_id": "o-1", "value_minor": 5000, "currency": "EUR"}),
    );
    assert!(given.when(&order).is_empty());
    assert_eq!(given.state.ended[0].reason, EndReason::Goal { event_id: "order-1".into() });
    // Entered once: viewing again enters nothing.
    assert!(
        given
            .when(&event(
                "bf-view-2",
                "page_viewed",
                "web",
                "2026-11-28T10:00:00Z",
                json!({"url": "/black-friday"})
            ))
            .is_empty()
    );
    assert!(given.state.entries.is_empty());
}

#[test]
fn a_ticket_opened_mid_journey_holds_the_next_send_until_it_is_resolved() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    given.when(&black_friday_view("2026-11-27T10:00:00Z"));
    let ticket = json!({"ticket_id": "T-1", "topic": "delivery"});
    given.when(&event("t-open", "support_ticket_opened", "whatsapp", "2026-11-27T12:00:00Z", ticket));
    let (_, decisions) = given.timer("2026-11-27T14:00:00Z");
    assert_eq!(decisions.len(), 1);
    let held = &decisions[0];
    assert_eq!(
        held.outcome,
        Outcome::Waiting { until: at("2026-11-30T14:00:00Z") },
        "at most 3 days: {held:?}"
    );
    assert_eq!(held.considered[0].reason.as_deref(), Some("support_ticket_open"));
    // Another event while the ticket is open: still held, and no second record.
    assert!(
        given
            .when(&event("v-2", "page_viewed", "web", "2026-11-27T15:00:00Z", json!({"url": "/"})))
            .is_empty()
    );
    let resolved = event(
        "t-done",
        "support_ticket_resolved",
        "call_center",
        "2026-11-27T16:00:00Z",
        json!({"ticket_id": "T-1"}),
    );
    let decisions = given.when(&resolved);
    assert_eq!(sends(&decisions), [send("follow-up", Channel::Sms, "bf-follow-up")]);
    assert_ne!(decisions[0].decision_id, held.decision_id, "a new decision, its own id");
    assert_eq!(Engine::next_timer(&given.state), Some(at("2026-11-28T16:00:00Z")));
}

#[test]
fn two_journeys_cannot_both_pass_the_email_cap() {
    let welcome = "id = \"welcome\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n[[steps]]\nid = \"hello\"\nsend = { channel = \"email\", template = \"welcome\" }\n";
    let promo = "id = \"promo\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n[[steps]]\nid = \"deal\"\nsend = { channel = \"email\", template = \"deal\" }\n";
    let mut given = Given::journeys(&[welcome, promo]);
    let decisions = given.when(&event(
        "view",
        "product_viewed",
        "web",
        "2026-11-27T10:00:00Z",
        json!({"product_id": "p-1"}),
    ));
    let outcomes: Vec<(&str, &Outcome)> =
        decisions.iter().map(|d| (d.journey.as_str(), &d.outcome)).collect();
    // Journeys enter in id order: promo sends, welcome meets the cap its send just filled.
    assert_eq!(outcomes, [("promo", &Outcome::Send(Channel::Email)), ("welcome", &Outcome::Skipped)]);
    assert_eq!(decisions[1].considered[0].reason.as_deref(), Some("frequency_cap"));
    // The dispatcher's message_sent for promo's decision is not counted a second time: 16 hours
    // after the decision the cap is free again.
    let sent = event(
        "sent-1",
        "message_sent",
        "email",
        "2026-11-27T10:00:01Z",
        json!({"message_id": decisions[0].decision_id, "campaign_id": "promo/deal", "purpose": "marketing"}),
    );
    given.when(&sent);
    assert_eq!(given.state.suppression.sends.len(), 1);
    assert!(given.state.pending.is_empty());
}

#[test]
fn store_to_inbox_sends_at_ten_the_next_morning_in_the_customers_zone_across_dst() {
    let mut given = Given::journeys(&[&shipped("store-to-inbox")]);
    let zone = json!({"set": {"timezone": "America/New_York"}, "set_once": {}, "unset": []});
    given.when(&event("tz", "traits_updated", "web", "2026-03-01T12:00:00Z", zone));
    // Saturday 7 March 2026, 15:00 in New York (EST, UTC-5); clocks go forward that night.
    let order = |id: &str, order_id: &str, when: &str| {
        event(
            id,
            "order_placed",
            "store",
            when,
            json!({"order_id": order_id, "value_minor": 4000, "currency": "USD"}),
        )
    };
    assert!(given.when(&order("s-1", "o-1", "2026-03-07T20:00:00Z")).is_empty());
    // 10:00 on Sunday is EDT (UTC-4): 14:00Z, not 15:00Z.
    assert_eq!(Engine::next_timer(&given.state), Some(at("2026-03-08T14:00:00Z")));
    // A second store order is a second entry (per order id); the same order again is none.
    given.when(&order("s-2", "o-2", "2026-03-07T21:00:00Z"));
    given.when(&order("s-3", "o-1", "2026-03-07T22:00:00Z"));
    assert_eq!(given.state.entries.len(), 2);
    let (_, decisions) = given.timer("2026-03-08T14:00:00Z");
    // Both due at once; one email per 16 h: the first entry's offer goes out, the second skips.
    let outcomes: Vec<&Outcome> = decisions.iter().map(|d| &d.outcome).collect();
    assert_eq!(outcomes, [&Outcome::Send(Channel::Email), &Outcome::Skipped]);
}

#[test]
fn a_producer_retry_of_the_trigger_enters_nothing_and_a_replay_decides_the_same_ids() {
    let run = || {
        let mut given = Given::journeys(&[&shipped("black-friday")]);
        let mut decisions = given.when(&black_friday_view("2026-11-27T10:00:00Z"));
        decisions.extend(given.when(&black_friday_view("2026-11-27T10:00:05Z")));
        decisions.extend(given.timer("2026-11-27T14:00:00Z").1);
        decisions
    };
    let first = run();
    assert_eq!(sends(&first).len(), 2, "the retry entered nothing: {first:?}");
    let ids = |decisions: &[Decision]| decisions.iter().map(|d| d.decision_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&run()));
    assert_ne!(first[0].decision_id, first[1].decision_id);
}

#[test]
fn local_times_in_a_gap_move_later_by_the_gap_and_in_an_overlap_take_the_first() {
    let new_york: Tz = "America/New_York".parse().unwrap();
    let time = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let cases = [
        ("02:30 on the night clocks skip it", "2026-03-07T23:00:00Z", time(2, 30), 1, "2026-03-08T07:30:00Z"),
        (
            "01:30 twice when clocks go back: the first",
            "2026-10-31T16:00:00Z",
            time(1, 30),
            1,
            "2026-11-01T05:30:00Z",
        ),
        (
            "10:00 already past today: tomorrow",
            "2026-06-01T15:00:00Z",
            time(10, 0),
            0,
            "2026-06-02T14:00:00Z",
        ),
        ("10:00 still ahead today: today", "2026-06-01T12:00:00Z", time(10, 0), 0, "2026-06-01T14:00:00Z"),
        (
            "the local date, not UTC's (23:00 local is 04:00Z)",
            "2026-06-02T03:00:00Z",
            time(10, 0),
            1,
            "2026-06-02T14:00:00Z",
        ),
        (
            "past the first 01:30 of the night clocks go back: the second, an hour on",
            "2026-11-01T05:45:00Z",
            time(1, 30),
            0,
            "2026-11-01T06:30:00Z",
        ),
    ];
    for (story, now, local, days, expected) in cases {
        assert_eq!(local_time_after(new_york, at(now), local, days), at(expected), "{story}");
    }
    // Lord Howe Island moves its clocks by 30 minutes: 02:15 on the night 02:00 becomes 02:30
    // is taken 30 minutes later, 02:45 at +11:00.
    let lord_howe: Tz = "Australia/Lord_Howe".parse().unwrap();
    assert_eq!(
        local_time_after(lord_howe, at("2026-10-03T12:00:00Z"), time(2, 15), 1),
        at("2026-10-03T15:45:00Z")
    );
}

/// fastavro's reading of records, with only the `.avsc` files (tests/interop/fastavro_decode.py).
fn fastavro(records: &[Vec<u8>]) -> Vec<Value> {
    use std::io::Write;
    let root = format!("{}/../..", env!("CARGO_MANIFEST_DIR"));
    let python =
        std::env::var("OMNISTREAM_PYTHON").unwrap_or_else(|_| format!("{root}/target/py/bin/python3"));
    let mut child = std::process::Command::new(&python)
        .arg(format!("{root}/tests/interop/fastavro_decode.py"))
        .arg(format!("{root}/schemas"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (`make py-deps` installs fastavro in target/py)"));
    let input: String = records
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            format!("r{index} {}\n", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
        })
        .collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn decisions_and_state_are_records_any_avro_library_reads() {
    use omnistream_journeys::records::{action_record, state_record};
    use omnistream_model::OutputRecord;
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    let ticket = json!({"ticket_id": "T-1", "topic": "delivery"});
    let mut decisions = given.when(&black_friday_view("2026-11-27T10:00:00Z"));
    given.when(&event("t-open", "support_ticket_opened", "whatsapp", "2026-11-27T12:00:00Z", ticket));
    decisions.extend(given.timer("2026-11-27T14:00:00Z").1);
    let mut records: Vec<Vec<u8>> = decisions.iter().map(|d| action_record(d).encode()).collect();
    records.push(state_record(CUSTOMER, &given.state, &given.definitions).encode());
    let read = fastavro(&records);
    let offer = &read[0]["value"];
    assert_eq!(read[0]["schema"], "journey_action.avsc");
    assert_eq!(
        (&offer["journey_id"], &offer["step"], &offer["outcome"], &offer["channel"], &offer["decided_at"]),
        (
            &json!("black-friday"),
            &json!("offer"),
            &json!("send"),
            &json!("email"),
            &json!(at("2026-11-27T10:00:00Z"))
        ),
        "{offer}"
    );
    assert_eq!(offer["decision_id"], json!(decisions[0].decision_id));
    let held = &read[1]["value"];
    assert_eq!(
        (&held["outcome"], &held["channel"], &held["waiting_until"]),
        (&json!("waiting"), &Value::Null, &json!(at("2026-11-30T14:00:00Z"))),
        "{held}"
    );
    assert_eq!(held["considered"][0]["reason"], "support_ticket_open", "{held}");
    let state = &read[2]["value"];
    assert_eq!(read[2]["schema"], "journey_state.avsc");
    assert_eq!(
        (&state["entries"][0]["step"], &state["entries"][0]["entered_at"], &state["last_exits"]),
        (&json!("follow-up"), &json!(at("2026-11-27T10:00:00Z")), &json!([])),
        "{state}"
    );
}

/// A journey whose goal, exit and waits are for VIPs only.
const VIP: &str = "id = \"vip\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n\
    [[goals]]\nevent = \"order_placed\"\nwhere = [{ trait = \"vip\", equals = true }]\n\
    [[steps]]\nid = \"w\"\nwait = { event = { event = \"page_viewed\", where = [{ trait = \"vip\", equals = true }] }, timeout = \"1d\", on_timeout = \"late\" }\nnext = \"hit\"\n\
    [[steps]]\nid = \"hit\"\nsend = { channel = \"email\", template = \"hit\" }\nnext = \"end\"\n\
    [[steps]]\nid = \"late\"\nsend = { channel = \"email\", template = \"late\" }\n";

fn vip(when: &str, value: bool) -> TouchpointEvent {
    event("vip", "traits_updated", "web", when, json!({"set": {"vip": value}, "set_once": {}, "unset": []}))
}

fn order(id: &str, order_id: &str, when: &str) -> TouchpointEvent {
    event(
        id,
        "order_placed",
        "web",
        when,
        json!({"order_id": order_id, "value_minor": 100, "currency": "EUR"}),
    )
}

#[test]
fn trait_conditions_hold_in_goals_and_waits_not_only_at_entry() {
    let mut given = Given::journeys(&[VIP]);
    given.when(&event("pv", "product_viewed", "web", "2026-06-01T10:00:00Z", json!({"product_id": "p"})));
    // Not a VIP: neither the page view nor the order counts.
    assert!(
        given
            .when(&event("v1", "page_viewed", "web", "2026-06-01T11:00:00Z", json!({"url": "/"})))
            .is_empty()
    );
    given.when(&order("o1", "o-1", "2026-06-01T11:30:00Z"));
    assert_eq!(given.state.entries.len(), 1, "{:?}", given.state.ended);
    // A VIP now: the next page view ends the wait.
    given.when(&vip("2026-06-01T12:00:00Z", true));
    let decisions =
        given.when(&event("v2", "page_viewed", "web", "2026-06-01T13:00:00Z", json!({"url": "/"})));
    assert_eq!(sends(&decisions), [send("hit", Channel::Email, "hit")]);
}

#[test]
fn once_is_for_good_and_an_order_id_enters_once_however_many_entries_came_between() {
    let once =
        "id = \"bf\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\n[[steps]]\nid = \"x\"\nexit = {}\n";
    let per = "id = \"k\"\nversion = 1\n[entry]\nevent = \"order_placed\"\nreentry = { per = \"order_id\" }\n[[steps]]\nid = \"x\"\nexit = {}\n";
    let mut given = Given::journeys(&[once, per]);
    given.when(&event("pv-1", "page_viewed", "web", "2026-06-01T10:00:00Z", json!({"url": "/bf"})));
    for n in 0..100 {
        given.when(&order(&format!("e-{n}"), &format!("o-{n}"), "2026-06-02T10:00:00Z"));
    }
    given.when(&event("pv-2", "page_viewed", "web", "2026-06-03T10:00:00Z", json!({"url": "/bf"})));
    given.when(&order("e-again", "o-0", "2026-06-03T11:00:00Z"));
    let entered: Vec<&str> = given.state.ended.iter().map(|e| e.entry_id.as_str()).collect();
    assert!(!entered.contains(&"pv-2") && !entered.contains(&"e-again"), "{entered:?}");
}

#[test]
fn best_of_with_no_history_keeps_the_journeys_order() {
    let text = "id = \"b\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n[[steps]]\nid = \"s\"\nsend = { best_of = [\"whatsapp\", \"sms\"], template = \"t\" }\n";
    let mut given = Given::journeys(&[text]);
    let decisions =
        given.when(&event("pv", "product_viewed", "web", "2026-06-01T12:00:00Z", json!({"product_id": "p"})));
    assert_eq!(sends(&decisions), [send("s", Channel::Whatsapp, "t")]);
}

#[test]
fn the_embedded_suppression_forgets_what_can_no_longer_matter() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    // A send every 3 hours for a year, by other campaigns: only those inside the email cap's
    // 16-hour window can matter (at most 6).
    let start = at("2025-01-01T00:00:00Z");
    for n in 0..3000i64 {
        let when = DateTime::from_timestamp_millis(start + n * 3 * 3600 * 1000).unwrap().to_rfc3339();
        let sent = json!({"message_id": format!("m-{n}"), "purpose": "marketing"});
        given.when(&event(&format!("m-{n}"), "message_sent", "email", &when, sent));
    }
    assert!(given.state.suppression.sends.len() <= 6, "{} sends kept", given.state.suppression.sends.len());
}

#[test]
fn happened_means_dated_since_the_entry_not_arrived_since() {
    let text = "id = \"h\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n[[steps]]\nid = \"w\"\nwait = { for = \"1h\" }\n[[steps]]\nid = \"b\"\nbranch = { if = { happened = { event = \"cart_updated\" } }, then = \"end\", else = \"s\" }\n[[steps]]\nid = \"s\"\nsend = { channel = \"email\", template = \"t\" }\n";
    let mut given = Given::journeys(&[text]);
    given.when(&event("pv", "product_viewed", "web", "2026-06-01T10:00:00Z", json!({"product_id": "p"})));
    let cart = json!({"cart_id": "c", "items": 1, "value_minor": 1, "currency": "EUR"});
    let late = event("c", "cart_updated", "web", "2026-06-01T09:00:00Z", cart);
    given.engine.apply(&given.definitions, &mut given.state, CUSTOMER, &late, at("2026-06-01T10:30:00Z"));
    let (_, decisions) = given.timer("2026-06-01T11:00:00Z");
    assert_eq!(sends(&decisions), [send("s", Channel::Email, "t")], "the cart was before the entry");
}

fn catalog(
    id: &str,
    product: &str,
    when: &str,
    kind: CatalogEventType,
    prices: Option<(i64, i64)>,
) -> CatalogEvent {
    CatalogEvent {
        event_id: id.to_owned(),
        product_id: product.to_owned(),
        occurred_at: DateTime::parse_from_rfc3339(when).unwrap().with_timezone(&Utc),
        kind,
        old_minor: prices.map(|(old, _)| old),
        new_minor: prices.map(|(_, new)| new),
        currency: prices.map(|_| "EUR".to_owned()),
        source: None,
    }
}

fn price(id: &str, product: &str, when: &str, old: i64, new: i64) -> CatalogEvent {
    catalog(id, product, when, CatalogEventType::ProductPriceChanged, Some((old, new)))
}

fn restock(id: &str, product: &str, when: &str) -> CatalogEvent {
    catalog(id, product, when, CatalogEventType::ProductRestocked, None)
}

fn product_view(id: &str, product: &str, when: &str) -> TouchpointEvent {
    event(id, "product_viewed", "web", when, json!({"product_id": product}))
}

impl Given {
    /// The catalog event reaches the customer at `when` (its append time plus the grace).
    fn catalog(&mut self, event: &CatalogEvent, when: &str) -> Vec<Decision> {
        let decisions = self.engine.on_catalog(&self.definitions, &mut self.state, CUSTOMER, event, at(when));
        Engine::seen_catalog(&mut self.state, at(when));
        decisions
    }

    /// The journeys entered, in order: (journey, entry id, entry key).
    fn entered(&self) -> Vec<(String, String, Option<String>)> {
        let ended = self.state.ended.iter().map(|e| (e.journey.clone(), e.entry_id.clone(), e.key.clone()));
        let running =
            self.state.entries.iter().map(|e| (e.journey.clone(), e.entry_id.clone(), e.key.clone()));
        ended.chain(running).collect()
    }
}

fn entry(journey: &str, entry_id: &str, product: &str) -> (String, String, Option<String>) {
    (journey.to_owned(), entry_id.to_owned(), Some(product.to_owned()))
}

#[test]
fn a_price_drop_enters_a_customer_who_viewed_the_product_within_the_window_and_nothing_else_does() {
    let mut given = Given::journeys(&[&shipped("price-drop")]);
    given.when(&product_view("v-1", "sku-1", "2026-11-01T10:00:00Z"));
    given.when(&product_view("v-2", "sku-2", "2026-11-20T10:00:00Z"));
    assert!(
        given
            .catalog(&price("up", "sku-2", "2026-11-21T10:00:00Z", 1_000, 1_200), "2026-11-21T10:00:01Z")
            .is_empty()
    );
    assert!(
        given
            .catalog(&price("same", "sku-2", "2026-11-21T11:00:00Z", 1_000, 1_000), "2026-11-21T11:00:01Z")
            .is_empty()
    );
    assert!(
        given.catalog(&restock("back", "sku-2", "2026-11-21T12:00:00Z"), "2026-11-21T12:00:01Z").is_empty(),
        "a restock is not a drop"
    );
    assert!(
        given
            .catalog(&price("other", "sku-9", "2026-11-21T13:00:00Z", 1_000, 900), "2026-11-21T13:00:01Z")
            .is_empty(),
        "not viewed"
    );
    assert!(
        given
            .catalog(&price("late", "sku-1", "2026-12-01T10:00:01Z", 1_000, 900), "2026-12-01T10:00:02Z")
            .is_empty(),
        "sku-1 viewed 30 days and 2 s before: outside the 30 days"
    );
    assert!(given.entered().is_empty());
    let mut given_later = Given::journeys(&[&shipped("price-drop")]);
    given_later.when(&product_view("v-9", "sku-2", "2026-11-22T10:00:05Z"));
    assert!(
        given_later
            .catalog(&price("drop", "sku-2", "2026-11-22T10:00:00Z", 1_000, 999), "2026-11-22T10:01:00Z")
            .is_empty(),
        "viewed after the drop happened (a producer's retry read later): the customer saw the new price"
    );
    let decisions =
        given.catalog(&price("drop", "sku-2", "2026-11-22T10:00:00Z", 1_000, 999), "2026-11-22T10:00:01Z");
    assert_eq!(given.entered(), [entry("price-drop", "drop", "sku-2")]);
    // No history: affinity's ranking keeps its own order (email, sms, whatsapp, push), so
    // email ranks first and the route takes the email step.
    assert_eq!(sends(&decisions), [send("email", Channel::Email, "price-drop-email")]);
    assert_eq!(decisions[0].entry_key.as_deref(), Some("sku-2"), "the sender learns the product");
}

#[test]
fn a_retried_catalog_event_enters_nothing_and_a_later_restock_enters_again_after_the_cool_down() {
    let mut given = Given::journeys(&[&shipped("back-in-stock")]);
    given.when(&product_view("v-1", "sku-1", "2026-11-01T10:00:00Z"));
    let first = given.catalog(&restock("r-1", "sku-1", "2026-11-02T10:00:00Z"), "2026-11-02T10:00:01Z");
    assert_eq!(sends(&first), [send("notify", Channel::Email, "back-in-stock")]);
    assert!(
        given.catalog(&restock("r-1", "sku-1", "2026-11-05T10:00:00Z"), "2026-11-05T10:00:01Z").is_empty(),
        "the producer's retry of r-1, days later"
    );
    assert!(
        given.catalog(&restock("r-2", "sku-1", "2026-11-02T20:00:00Z"), "2026-11-02T20:00:01Z").is_empty(),
        "within the day's cool-down"
    );
    let again = given.catalog(&restock("r-3", "sku-1", "2026-11-06T10:00:00Z"), "2026-11-06T10:00:01Z");
    // Email was sent once and never opened: it now scores below the untried channels, which tie
    // and keep the journey's order.
    assert_eq!(sends(&again), [send("notify", Channel::Push, "back-in-stock")]);
    assert_eq!(
        given.entered(),
        [entry("back-in-stock", "r-1", "sku-1"), entry("back-in-stock", "r-3", "sku-1")]
    );
}

#[test]
fn views_are_kept_only_while_a_catalog_journey_is_published_and_a_change_before_the_view_is_seen() {
    let mut given = Given::journeys(&[&shipped("black-friday")]);
    given.when(&product_view("v-1", "sku-1", "2026-11-01T10:00:00Z"));
    assert!(given.state.interests.is_empty(), "no catalog trigger published: nothing to watch");
    let mut given = Given::journeys(&[&shipped("price-drop")]);
    given.when(&product_view("v-1", "sku-1", "2026-11-01T10:00:00Z"));
    assert_eq!(given.state.interests.len(), 1);
    assert_eq!(
        given.state.interests[0].seen_through,
        at("2026-11-01T10:00:00Z"),
        "changes appended before the view are seen"
    );
    for n in 0..40 {
        given.when(&product_view(&format!("v-{n}"), &format!("p-{n}"), "2026-11-02T10:00:00Z"));
    }
    assert_eq!(given.state.interests.len(), omnistream_journeys::core::INTERESTS_KEPT);
    given.when(&product_view("v-late", "sku-7", "2027-03-01T10:00:00Z"));
    assert_eq!(given.state.interests.len(), 1, "views older than 90 days are forgotten");
}

#[test]
fn a_catalog_change_dated_ahead_by_its_producers_clock_counts_when_it_was_read() {
    let hour_window = shipped("price-drop").replace("within = \"30d\"", "within = \"1h\"");
    let mut given = Given::journeys(&[&hour_window]);
    given.when(&product_view("v-1", "sku-1", "2026-11-20T10:00:00Z"));
    let ahead = price("drop", "sku-1", "2026-11-21T06:00:00Z", 1_000, 900);
    let decisions = given.catalog(&ahead, "2026-11-20T10:30:00Z");
    assert_eq!(
        given.entered(),
        [entry("price-drop", "drop", "sku-1")],
        "dated 20 h ahead, read 30 min after the view"
    );
    assert_eq!(decisions.len(), 1);
}

#[test]
fn a_view_applied_after_a_later_sweep_does_not_make_a_seen_change_new_again() {
    let mut given = Given::journeys(&[&shipped("price-drop")]);
    given.when(&product_view("v-1", "sku-1", "2026-11-20T10:00:00Z"));
    given.catalog(&price("drop", "sku-1", "2026-11-20T11:00:00Z", 1_000, 900), "2026-11-20T11:00:15Z");
    // A view appended before the sweep's time, applied after it (the clock followed the wall).
    let late = product_view("v-2", "sku-1", "2026-11-20T11:00:05Z");
    given.engine.apply(&given.definitions, &mut given.state, CUSTOMER, &late, at("2026-11-20T11:00:05Z"));
    assert_eq!(given.state.interests[0].seen_through, at("2026-11-20T11:00:15Z"));
}

#[test]
fn a_view_arriving_late_but_dated_earlier_does_not_age_the_latest_view() {
    let mut given = Given::journeys(&[&shipped("price-drop")]);
    given.when(&product_view("v-new", "sku-1", "2026-11-20T10:00:00Z"));
    // A store's offline batch: a view from October, arriving a day later.
    let old = product_view("v-old", "sku-1", "2026-10-01T10:00:00Z");
    given.engine.apply(&given.definitions, &mut given.state, CUSTOMER, &old, at("2026-11-21T10:00:00Z"));
    let decisions =
        given.catalog(&price("drop", "sku-1", "2026-11-25T10:00:00Z", 1_000, 900), "2026-11-25T10:00:15Z");
    assert_eq!(decisions.len(), 1, "viewed on 20 November, within the 30 days: {:?}", given.state);
}

/// A browse journey: a product view, three hours later an SMS; an order is its goal.
const BROWSE: &str = "id = \"browse\"\nversion = 1\n[entry]\nevent = \"product_viewed\"\n[[goals]]\nevent = \"order_placed\"\n[[steps]]\nid = \"pause\"\nwait = { for = \"3h\" }\n[[steps]]\nid = \"nudge\"\nsend = { channel = \"sms\", template = \"browse\" }\n";

impl Given {
    /// `other`'s journeys (customer `c-other`) are merged into this customer's at `when` (the
    /// runtime's handoff); how each entry the merge ended ended.
    fn merged_with(&mut self, other: &Given, when: &str) -> Vec<EndReason> {
        let handed = other.state.clone();
        self.engine.merge(&self.definitions, &mut self.state, CUSTOMER, "c-other", handed, at(when))
    }

    fn running(&self) -> Vec<(String, String)> {
        let mut running: Vec<(String, String)> =
            self.state.entries.iter().map(|e| (e.journey.clone(), e.entry_id.clone())).collect();
        running.sort();
        running
    }
}

fn running(journey: &str, entry_id: &str) -> (String, String) {
    (journey.to_owned(), entry_id.to_owned())
}

#[test]
fn a_goal_the_other_customer_reached_while_an_entry_ran_ends_it_at_the_merge_either_way() {
    // The cookie browsed at 09:00 (browse: an order is its goal); the account, never in browse,
    // ordered at 10:00. One person: the cookie's entry ends at the merge, as the goal.
    let mut cookie = Given::journeys(&[BROWSE]);
    cookie.when(&product_view("pv-1", "p-1", "2026-11-27T09:00:00Z"));
    let mut account = Given::journeys(&[BROWSE]);
    account.when(&order("order-1", "o-1", "2026-11-27T10:00:00Z"));
    assert!(account.state.entries.is_empty(), "an order enters nothing");
    let ended = account.merged_with(&cookie, "2026-11-27T10:30:00Z");
    assert_eq!(ended, [EndReason::Goal { event_id: "order-1".into() }]);
    assert!(account.running().is_empty());
    // The other way round: the winner's entry ends by the loser's order.
    let mut account = Given::journeys(&[BROWSE]);
    account.when(&product_view("pv-2", "p-1", "2026-11-27T09:00:00Z"));
    let mut cookie = Given::journeys(&[BROWSE]);
    cookie.when(&order("order-2", "o-2", "2026-11-27T10:00:00Z"));
    let ended = account.merged_with(&cookie, "2026-11-27T10:30:00Z");
    assert_eq!(ended, [EndReason::Goal { event_id: "order-2".into() }]);
    let goals: Vec<_> =
        account.state.goals.iter().map(|g| (g.journey.as_str(), g.version, g.event_id.as_str())).collect();
    assert_eq!(goals, [("browse", 1, "order-2")]);
    // Ended as of the order, as the order would have ended it (re-entry counts from then).
    assert_eq!(account.state.ended.last().map(|ended| ended.at), Some(at("2026-11-27T10:00:00Z")));
}

#[test]
fn a_merge_judges_an_entry_by_the_goals_of_its_own_version() {
    // The cookie entered browse v1 (an order is its goal); v2, published since, ends on a click.
    let v2 = BROWSE
        .replace("version = 1", "version = 2")
        .replace("[[goals]]\nevent = \"order_placed\"", "[[goals]]\nevent = \"message_clicked\"");
    assert_ne!(v2, BROWSE);
    let mut cookie = Given::journeys(&[BROWSE]);
    cookie.when(&product_view("pv-1", "p-1", "2026-11-27T09:00:00Z"));
    let mut account = Given::journeys(&[BROWSE, &v2]);
    account.when(&order("order-1", "o-1", "2026-11-27T10:00:00Z"));
    let ended = account.merged_with(&cookie, "2026-11-27T10:30:00Z");
    assert_eq!(ended, [EndReason::Goal { event_id: "order-1".into() }], "v1's goal, though v2 is the latest");
}

#[test]
fn a_goal_reached_before_the_other_customer_entered_does_not_end_its_entry() {
    let mut account = Given::journeys(&[BROWSE]);
    account.when(&order("order-1", "o-1", "2026-11-27T08:00:00Z"));
    let mut cookie = Given::journeys(&[BROWSE]);
    cookie.when(&product_view("pv-1", "p-1", "2026-11-27T09:00:00Z"));
    assert!(account.merged_with(&cookie, "2026-11-27T10:30:00Z").is_empty());
    assert_eq!(account.running(), [running("browse", "pv-1")]);
}

#[test]
fn a_merge_goes_on_with_the_first_entry_of_a_journey_both_were_in_and_moves_the_others_whoever_wins() {
    let journeys = [shipped("black-friday"), BROWSE.to_owned()];
    let journeys: Vec<&str> = journeys.iter().map(String::as_str).collect();
    // The cookie entered Black Friday at 09:00 and browse at 11:00; the account Black Friday at
    // 10:00. Both got the offer email.
    let mut cookie = Given::journeys(&journeys);
    cookie.when(&black_friday_view("2026-11-27T09:00:00Z"));
    cookie.when(&product_view("pv-c", "p-1", "2026-11-27T11:00:00Z"));
    let mut account = Given::journeys(&journeys);
    let account_view =
        event("bf-view-a", "page_viewed", "web", "2026-11-27T10:00:00Z", json!({"url": "/black-friday"}));
    account.when(&account_view);
    let mut cookie_wins = Given::journeys(&journeys);
    cookie_wins.state = cookie.state.clone();
    cookie_wins.merged_with(&account, "2026-11-27T12:00:00Z");
    account.merged_with(&cookie, "2026-11-27T12:00:00Z");
    // Black Friday goes on with the cookie's entry (entered first); browse moved over.
    assert_eq!(account.running(), [running("black-friday", "bf-view"), running("browse", "pv-c")]);
    assert_eq!(cookie_wins.running(), account.running(), "whichever customer wins");
    let merged_end = account.state.ended.last().expect("an ended entry");
    assert_eq!((merged_end.entry_id.as_str(), merged_end.at), ("bf-view-a", at("2026-11-27T12:00:00Z")));
    assert_eq!(merged_end.reason, EndReason::Merged { continued_by: Some("bf-view".into()) });
    assert_eq!(account.state.entered["black-friday"].last_end, None, "one still runs");
    // Both emails count for the cap; the moved entries go on at their own times.
    assert_eq!(account.state.suppression.sends.len(), 2);
    let (due, decisions) = account.timer("2026-11-27T13:00:00Z");
    assert_eq!(due, at("2026-11-27T13:00:00Z"), "the cookie's offer unopened 4 hours");
    assert_eq!(sends(&decisions), [send("follow-up", Channel::Sms, "bf-follow-up")]);
    let (due, decisions) = account.timer("2026-11-27T14:00:00Z");
    assert_eq!(due, at("2026-11-27T14:00:00Z"), "browse's 3 hours from 11:00");
    // One SMS a day (SPEC 4.2), whichever journey and customer it came from.
    assert_eq!((decisions[0].step.as_str(), &decisions[0].outcome), ("nudge", &Outcome::Skipped));
    assert_eq!(decisions[0].considered[0].reason.as_deref(), Some("frequency_cap"));
    // An order by the account ends both at once.
    given_no_decisions(account.when(&order("ord", "o-1", "2026-11-27T15:00:00Z")));
    assert!(account.state.entries.is_empty());
    let goals = account.state.ended.iter().filter(|e| e.reason == EndReason::Goal { event_id: "ord".into() });
    assert_eq!(goals.count(), 1, "browse had completed; Black Friday ends by the goal");
}

fn given_no_decisions(decisions: Vec<Decision>) {
    assert!(decisions.is_empty(), "{decisions:?}");
}

#[test]
fn a_ticket_the_merged_customer_opened_holds_the_winners_send() {
    let mut account = Given::journeys(&[&shipped("black-friday")]);
    account.when(&black_friday_view("2026-11-27T08:00:00Z"));
    let mut phone = Given::journeys(&[&shipped("black-friday")]);
    let ticket = json!({"ticket_id": "T-1", "topic": "delivery"});
    phone.when(&event("t-open", "support_ticket_opened", "whatsapp", "2026-11-27T09:00:00Z", ticket));
    account.merged_with(&phone, "2026-11-27T10:00:00Z");
    let (_, decisions) = account.timer("2026-11-27T12:00:00Z");
    assert_eq!(decisions[0].outcome, Outcome::Waiting { until: at("2026-11-30T12:00:00Z") });
    assert_eq!(decisions[0].considered[0].reason.as_deref(), Some("support_ticket_open"));
}

#[test]
fn once_counts_for_both_and_a_merge_over_the_entry_limit_ends_the_latest_entered() {
    let mut cookie = Given::journeys(&[&shipped("black-friday")]);
    cookie.when(&black_friday_view("2026-11-27T08:00:00Z"));
    cookie.when(&order("ord", "o-1", "2026-11-27T08:30:00Z"));
    let mut account = Given::journeys(&[&shipped("black-friday")]);
    account.merged_with(&cookie, "2026-11-27T10:00:00Z");
    let again =
        event("bf-view-2", "page_viewed", "web", "2026-11-27T11:00:00Z", json!({"url": "/black-friday"}));
    given_no_decisions(account.when(&again));
    assert!(account.state.entries.is_empty(), "entered once, as the cookie");
    // 20 journeys each side, all different: 32 go on, the 8 entered last end.
    let flows: Vec<String> = (0..40)
        .map(|n| format!("id = \"j{n:02}\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\nwhere = [{{ property = \"url\", equals = \"/{n}\" }}]\n[[steps]]\nid = \"w\"\nwait = {{ for = \"1d\" }}\n"))
        .collect();
    let flows: Vec<&str> = flows.iter().map(String::as_str).collect();
    let mut one = Given::journeys(&flows);
    let mut other = Given::journeys(&flows);
    for n in 0..40 {
        let view = event(
            &format!("v-{n:02}"),
            "page_viewed",
            "web",
            &format!("2026-11-27T{:02}:{:02}:00Z", 8 + n / 20, n % 20 * 2),
            json!({"url": format!("/{n}")}),
        );
        if n % 2 == 0 {
            one.when(&view)
        } else {
            other.when(&view)
        };
    }
    one.merged_with(&other, "2026-11-28T00:00:00Z");
    assert_eq!(one.state.entries.len(), 32);
    let over: Vec<(&str, &EndReason)> =
        one.state.ended.iter().map(|e| (e.entry_id.as_str(), &e.reason)).collect();
    let expected: Vec<String> = (32..40).map(|n| format!("v-{n:02}")).collect();
    assert_eq!(over.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    assert!(over.iter().all(|(_, reason)| **reason == EndReason::Merged { continued_by: None }));
}

fn store_order(id: &str, order_id: &str, when: &str) -> TouchpointEvent {
    event(
        id,
        "order_placed",
        "store",
        when,
        json!({"order_id": order_id, "value_minor": 100, "currency": "EUR"}),
    )
}

#[test]
fn entries_with_different_per_keys_all_go_on_and_only_the_same_key_twice_is_one() {
    let mut account = Given::journeys(&[&shipped("store-to-inbox")]);
    account.when(&store_order("so-1", "o-1", "2026-11-27T09:00:00Z"));
    account.when(&store_order("so-2", "o-2", "2026-11-27T09:10:00Z"));
    let empty = Given::journeys(&[&shipped("store-to-inbox")]);
    assert_eq!(account.merged_with(&empty, "2026-11-27T10:00:00Z"), []);
    let mut card = Given::journeys(&[&shipped("store-to-inbox")]);
    card.when(&store_order("so-3", "o-3", "2026-11-27T09:20:00Z"));
    // The same order scanned under the card too (a receipt and a card scan): one entry.
    card.when(&store_order("so-1-card", "o-1", "2026-11-27T09:30:00Z"));
    let ended = account.merged_with(&card, "2026-11-27T11:00:00Z");
    assert_eq!(ended, [EndReason::Merged { continued_by: Some("so-1".into()) }]);
    let keys: Vec<Option<&str>> = account.state.entries.iter().map(|e| e.key.as_deref()).collect();
    assert_eq!(keys, [Some("o-1"), Some("o-2"), Some("o-3")]);
}

#[test]
fn a_click_on_the_ended_duplicates_offer_ends_the_entry_that_went_on() {
    let bf = shipped("black-friday");
    let mut cookie = Given::journeys(&[&bf]);
    cookie.when(&black_friday_view("2026-11-27T09:00:00Z"));
    let mut account = Given::journeys(&[&bf]);
    let view =
        event("bf-view-a", "page_viewed", "web", "2026-11-27T10:00:00Z", json!({"url": "/black-friday"}));
    let offer = account.when(&view).remove(0);
    account.merged_with(&cookie, "2026-11-27T10:30:00Z");
    assert_eq!(account.running(), [running("black-friday", "bf-view")], "the cookie's entered first");
    let click = event(
        "click",
        "message_clicked",
        "email",
        "2026-11-27T11:00:00Z",
        json!({"message_id": offer.decision_id, "url": "https://shop/bf"}),
    );
    given_no_decisions(account.when(&click));
    assert!(account.state.entries.is_empty());
    assert_eq!(account.state.ended.last().unwrap().reason, EndReason::Exited { event_id: "click".into() });
}

#[test]
fn two_entries_of_one_price_drop_keep_the_same_one_whoever_wins() {
    // Viewed the product 20 days ago (both), then a drop: both enter under the drop's id.
    let drop = shipped("price-drop");
    let entered = |name: &str| {
        let mut given = Given::journeys(&[&drop]);
        given.when(&event(
            &format!("{name}-view"),
            "product_viewed",
            "web",
            "2026-11-01T10:00:00Z",
            json!({"product_id": "sku-1"}),
        ));
        if name == "phone" {
            // This one opted out of email: its first message goes elsewhere.
            let consent = json!({"channel": "email", "purpose": "marketing", "granted": false});
            given.when(&event("optout", "consent_changed", "email", "2026-11-02T10:00:00Z", consent));
        }
        given.catalog(&price("drop", "sku-1", "2026-11-21T10:00:00Z", 5000, 4000), "2026-11-21T10:00:15Z");
        given
    };
    let (email, phone) = (entered("email"), entered("phone"));
    let mut into_email = Given::journeys(&[&drop]);
    into_email.state = email.state.clone();
    into_email.merged_with(&phone, "2026-11-21T11:00:00Z");
    let mut into_phone = Given::journeys(&[&drop]);
    into_phone.state = phone.state.clone();
    into_phone.merged_with(&email, "2026-11-21T11:00:00Z");
    assert_eq!(into_email.state.entries.len(), 1);
    assert_eq!(into_email.state.entries[0].messages, into_phone.state.entries[0].messages);
}

#[test]
fn a_moved_entry_of_a_catalog_change_decides_other_ids_than_the_winners_own_entry_of_it() {
    let flow = "id = \"pd\"\nversion = 1\n[entry]\ncatalog = \"price_drop\"\nwithin = \"30d\"\n[[steps]]\nid = \"look\"\nwait = { event = { event = \"page_viewed\" }, timeout = \"2d\" }\n[[steps]]\nid = \"mail\"\nsend = { channel = \"email\", template = \"pd\" }\n";
    let entered = || {
        let mut given = Given::journeys(&[flow]);
        given.when(&product_view("pv", "sku-1", "2026-11-01T10:00:00Z"));
        given.catalog(&price("drop", "sku-1", "2026-11-21T10:00:00Z", 5000, 4000), "2026-11-21T10:00:15Z");
        given
    };
    // The winner looked again and got the mail (its entry completed); the other still waits.
    let mut winner = entered();
    let own = winner.when(&event("page", "page_viewed", "web", "2026-11-21T12:00:00Z", json!({"url": "/"})));
    let cookie = entered();
    winner.merged_with(&cookie, "2026-11-21T13:00:00Z");
    let (_, moved) = winner.timer("2026-11-23T10:00:15Z");
    assert_eq!((own.len(), moved.len()), (1, 1), "{own:?} {moved:?}");
    assert_eq!((own[0].step.as_str(), moved[0].step.as_str()), ("mail", "mail"));
    assert_ne!(own[0].decision_id, moved[0].decision_id, "one entry id, two entries: two sends");
}

#[test]
fn an_entry_on_a_withdrawn_version_does_not_beat_one_on_the_published_version() {
    let v1 = "id = \"j\"\nversion = 1\n[entry]\nevent = \"page_viewed\"\n[[steps]]\nid = \"w\"\nwait = { for = \"1d\" }\n";
    let v2 = v1.replace("version = 1", "version = 2");
    let mut account = Given::journeys(&[v1]);
    account.when(&event("pv-a", "page_viewed", "web", "2026-11-27T09:00:00Z", json!({"url": "/"})));
    let mut cookie = Given::journeys(&[&v2]);
    cookie.when(&event("pv-c", "page_viewed", "web", "2026-11-27T10:00:00Z", json!({"url": "/"})));
    // Only version 2 is published now.
    account.definitions = cookie.definitions.clone();
    let ended = account.merged_with(&cookie, "2026-11-27T11:00:00Z");
    assert_eq!(ended, [EndReason::Withdrawn]);
    assert_eq!(account.running(), [running("j", "pv-c")]);
}

/// An entry as the release before merges wrote it to the changelog: the same fields, in order,
/// without `origin`.
#[derive(serde::Serialize)]
struct EntryBeforeMerges {
    journey: String,
    version: u32,
    entry_id: String,
    key: Option<String>,
    entered_at: i64,
    step: usize,
    step_since: i64,
    attempt: u32,
    waiting_until: Option<i64>,
    messages: Vec<String>,
    happened: Vec<usize>,
}

#[test]
fn an_entry_written_before_merges_restores_entered_as_its_own_customer() {
    let old = EntryBeforeMerges {
        journey: "bf".into(),
        version: 2,
        entry_id: "e-1".into(),
        key: None,
        entered_at: 1,
        step: 3,
        step_since: 4,
        attempt: 5,
        waiting_until: Some(6),
        messages: vec!["jd-1".into()],
        happened: vec![2],
    };
    // MessagePack arrays, as the runtime writes its changelog.
    let bytes = rmp_serde::to_vec(&old).expect("encodes");
    let entry: omnistream_journeys::core::EntryState = rmp_serde::from_slice(&bytes).expect("restores");
    assert_eq!((entry.entry_id.as_str(), entry.step, entry.happened.as_slice()), ("e-1", 3, &[2][..]));
    assert_eq!(entry.origin, None);
}
