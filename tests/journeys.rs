//! Journeys end to end (issue 17): definitions published with `omni journeys publish`, events in
//! through the ingest-gateway, the journeys service on the real broker, and every assertion on
//! what it committed to `journey.actions.v1` and `journey.states.v1`. The expected decisions are
//! worked out by hand from the definition below, not by the core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_model::decode_record;
use omnistream_model::records::{CustomerJourneyState, JourneyAction, JourneyExitReason, JourneyOutcome};
use omnistream_testkit::read_committed_to_end;
use omnistream_testkit::stack::{Stack, StackOptions};
use rdkafka::message::Message;
use serde_json::{Value, json};

/// No frequency caps and no quiet hours: decisions then do not depend on the time of day.
const RULES: &str = "frequency_caps = []\nquiet_hours = []\n";

/// The shipped Black Friday flow (journeys/black-friday.toml) with its waits compressed to
/// seconds: offer by email; not opened within 3 s, a follow-up by SMS or WhatsApp; then 12 s
/// more (room for the test to order first) and a push. An order ends it (goal); a click on one of its messages exits it.
const BLACK_FRIDAY: &str = r#"
id = "bf-test"
version = 1

[entry]
event = "page_viewed"
where = [{ property = "url", starts_with = "/black-friday" }]
reentry = "once"

[[goals]]
event = "order_placed"

[[exit_when]]
event = "message_clicked"
of_this_journey = true

[[steps]]
id = "offer"
send = { channel = "email", template = "bf-offer", when_suppressed = "wait", max_wait = "1h" }

[[steps]]
id = "opened"
wait = { event = { event = "message_opened", of_this_journey = true }, timeout = "3s", on_timeout = "follow-up" }
next = "last-call"

[[steps]]
id = "follow-up"
send = { best_of = ["sms", "whatsapp"], template = "bf-follow-up", when_suppressed = "wait", max_wait = "1h" }

[[steps]]
id = "last-call"
wait = { for = "12s" }

[[steps]]
id = "bonus"
send = { channel = "push", template = "bf-bonus", when_suppressed = "skip" }
"#;

fn event(id: &str, customer: &str, channel: &str, kind: &str, properties: Value) -> Value {
    json!({
        "event_id": id, "customer_id": customer, "occurred_at": Utc::now().to_rfc3339(),
        "channel": channel, "type": kind, "source": "journeys-test", "properties": properties
    })
}

async fn publish(stack: &Stack, events: Vec<Value>) {
    let (status, answer) = stack.post_events(&json!({ "events": events }), None).await;
    assert_eq!(status, 200, "{answer}");
}

/// Every committed decision, by customer, in log order.
fn actions(stack: &Stack) -> BTreeMap<String, Vec<JourneyAction>> {
    let mut by_customer: BTreeMap<String, Vec<JourneyAction>> = BTreeMap::new();
    for message in read_committed_to_end(stack.topics.output("actions")) {
        let action: JourneyAction =
            decode_record(message.payload().expect("a value")).expect("a JourneyAction");
        by_customer.entry(action.customer_id.clone()).or_default().push(action);
    }
    by_customer
}

/// The latest committed journeys record of `customer`.
fn journeys_of(stack: &Stack, customer: &str) -> Option<CustomerJourneyState> {
    read_committed_to_end(stack.topics.output("states"))
        .iter()
        .rfind(|message| message.key() == Some(customer.as_bytes()))
        .and_then(|message| message.payload().map(|bytes| decode_record(bytes).expect("a state")))
}

/// (step, outcome, channel) of each decision.
fn summary(actions: &[JourneyAction]) -> Vec<(String, JourneyOutcome, Option<String>)> {
    actions.iter().map(|a| (a.step.clone(), a.outcome, a.channel.clone())).collect()
}

/// Waits until `check` holds of the committed decisions.
fn decisions_until(
    stack: &Stack,
    what: &str,
    check: impl Fn(&BTreeMap<String, Vec<JourneyAction>>) -> bool,
) -> BTreeMap<String, Vec<JourneyAction>> {
    let started = Instant::now();
    loop {
        let actions = actions(stack);
        if check(&actions) {
            return actions;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "{what}: {actions:#?}\n{}", stack.warnings());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn of<'a>(actions: &'a BTreeMap<String, Vec<JourneyAction>>, customer: &str) -> &'a [JourneyAction] {
    actions.get(customer).map_or(&[], Vec::as_slice)
}

fn send(step: &str, channel: &str) -> (String, JourneyOutcome, Option<String>) {
    (step.to_owned(), JourneyOutcome::Send, Some(channel.to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn black_friday_through_the_gateway_with_a_goal_mid_wait_a_ticket_a_retry_and_a_sigkill() {
    let mut stack = Stack::start(
        "journeys",
        StackOptions { suppression_rules: Some(RULES.into()), ..Default::default() },
    )
    .await;
    stack.publish_journeys(&[BLACK_FRIDAY]);
    // Events appended the lookup grace (4 s) after the definition see it.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // c-goal runs the flow to the follow-up, then orders while the last call waits: it ends at
    // once with the goal, and no push follows. c-ticket has an open WhatsApp ticket: the offer
    // waits (one `waiting` decision) until the ticket is resolved, then goes. The view of c-goal
    // is sent twice (a producer's retry): one entry.
    let view = event("bf-goal-view", "c-goal", "web", "page_viewed", json!({"url": "/black-friday/tv"}));
    publish(&stack, vec![view.clone()]).await;
    publish(&stack, vec![view]).await;
    publish(
        &stack,
        vec![
            event(
                "bf-ticket-open",
                "c-ticket",
                "whatsapp",
                "support_ticket_opened",
                json!({"ticket_id": "T-1", "topic": "delivery"}),
            ),
            event("bf-ticket-view", "c-ticket", "web", "page_viewed", json!({"url": "/black-friday"})),
        ],
    )
    .await;
    let first = decisions_until(&stack, "the offer to c-goal, c-ticket waiting", |actions| {
        !of(actions, "c-goal").is_empty() && !of(actions, "c-ticket").is_empty()
    });
    assert_eq!(summary(of(&first, "c-goal")), vec![send("offer", "email")]);
    let waiting = &of(&first, "c-ticket")[0];
    assert_eq!((waiting.step.as_str(), waiting.outcome), ("offer", JourneyOutcome::Waiting));
    let email = waiting.considered.iter().find(|c| c.channel == "email").expect("email considered");
    assert_ne!(email.status, "allowed", "marketing is suppressed while a ticket is open: {waiting:?}");

    // Mid-flow: the journeys service is SIGKILLed while c-goal waits for an open, and restarts.
    stack.sigkill_and_restart("journeys");
    publish(
        &stack,
        vec![event(
            "bf-ticket-solved",
            "c-ticket",
            "whatsapp",
            "support_ticket_resolved",
            json!({"ticket_id": "T-1"}),
        )],
    )
    .await;

    // Not opened within 3 s: the follow-up (no affinity data: SMS, first in the list).
    let followed = decisions_until(&stack, "c-goal's follow-up, c-ticket's offer", |actions| {
        of(actions, "c-goal").len() >= 2 && of(actions, "c-ticket").len() >= 2
    });
    assert_eq!(summary(of(&followed, "c-goal")), vec![send("offer", "email"), send("follow-up", "sms")]);
    assert_eq!(
        summary(of(&followed, "c-ticket"))[1],
        send("offer", "email"),
        "sent once the ticket is resolved"
    );

    // The order, while the last call waits: the entry ends with the goal, and no bonus follows.
    publish(
        &stack,
        vec![event(
            "bf-goal-order",
            "c-goal",
            "web",
            "order_placed",
            json!({"order_id": "O-1", "value_minor": 1000, "currency": "EUR"}),
        )],
    )
    .await;
    let started = Instant::now();
    let ended = loop {
        let state = journeys_of(&stack, "c-goal");
        if let Some(state) = state.filter(|state| state.entries.is_empty() && !state.last_exits.is_empty()) {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "c-goal's entry did not end\n{}",
            stack.warnings()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ended.last_exits[0].reason, JourneyExitReason::Goal);
    assert_eq!(ended.last_exits[0].detail.as_deref(), Some("bf-goal-order"));
    // Past the end of the last call (12 s after the follow-up): still no bonus.
    let follow_up_at = of(&followed, "c-goal")[1].decided_at;
    let bonus_due = follow_up_at + chrono::Duration::seconds(14);
    if let Ok(left) = (bonus_due - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
    let settled = actions(&stack);
    assert_eq!(summary(of(&settled, "c-goal")).len(), 2, "no push after the goal: {settled:#?}");

    // Neither lost nor repeated across the SIGKILL: every decision id once, and each one the id
    // of its (journey, entry, step, attempt).
    let ids: Vec<&str> = settled.values().flatten().map(|a| a.decision_id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a decision repeated: {settled:#?}");
    assert!(settled.values().flatten().all(|a| a.journey_id == "bf-test" && a.journey_version == 1));
    assert_eq!(of(&settled, "c-goal")[0].entry_id, "bf-goal-view");
}
