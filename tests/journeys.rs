//! Journeys end to end (issue 17): definitions published with `omni journeys publish`, events in
//! through the ingest-gateway, the journeys service on the real broker, and every assertion on
//! what it committed to `journey.actions.v1` and `journey.states.v1`. The expected decisions are
//! worked out by hand from the definition below, not by the core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use omnistream_model::decode_record;
use omnistream_model::records::{CustomerJourneyState, JourneyAction, JourneyExitReason, JourneyOutcome};
use omnistream_model::{EventPayload, decode_event};
use omnistream_testkit::stack::{Stack, StackOptions};
use omnistream_testkit::{ServiceProcess, free_port, read_committed_to_end, unique_topic, workspace_binary};
use rdkafka::message::Message;
use serde_json::{Value, json};

/// No frequency caps and no quiet hours: decisions then do not depend on the time of day.
const RULES: &str = "frequency_caps = []\nquiet_hours = []\n";

/// The shipped Black Friday flow (journeys/black-friday.toml) with its waits compressed to
/// seconds: offer by email; not opened within 3 s, a follow-up by SMS or WhatsApp; then 20 s
/// more (room for the test to order first, a SIGKILL's recovery included) and a push. An order ends it (goal); a click on one of its messages exits it.
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
wait = { for = "20s" }

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

/// A provider's webhook: records every call's path and `Idempotency-Key`, and answers the first
/// call of each key 503 (a provider's hiccup: the dispatcher must retry with the same key).
#[derive(Debug, Clone, Default)]
struct Sink {
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sink {
    async fn start(&self) -> u16 {
        let port = free_port();
        let calls = Arc::clone(&self.calls);
        let app = axum::Router::new().route(
            "/{channel}",
            axum::routing::post(
                move |axum::extract::Path(channel): axum::extract::Path<String>, headers: HeaderMap| {
                    let calls = Arc::clone(&calls);
                    async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let mut calls = calls.lock().expect("calls");
                        let first = !calls.iter().any(|(_, seen)| *seen == key);
                        calls.push((channel, key));
                        if first { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the sink");
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    fn calls_of(&self, key: &str) -> Vec<String> {
        let calls = self.calls.lock().expect("calls");
        calls.iter().filter(|(_, seen)| seen == key).map(|(channel, _)| channel.clone()).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn black_friday_through_the_gateway_with_a_goal_mid_wait_a_ticket_a_retry_and_a_sigkill() {
    let mut stack = Stack::start(
        "journeys",
        StackOptions { suppression_rules: Some(RULES.into()), ..Default::default() },
    )
    .await;
    stack.publish_journeys(&[BLACK_FRIDAY]);
    // The sender side: every send through a webhook, its message_sent back into the pipeline.
    let sink = Sink::default();
    let sink_port = sink.start().await;
    let webhooks: Vec<String> = ["email", "sms", "whatsapp", "push"]
        .iter()
        .flat_map(|channel| {
            ["--webhook".to_owned(), format!("{channel}=http://127.0.0.1:{sink_port}/{channel}")]
        })
        .collect();
    let group = unique_topic("journeys-dispatcher");
    let mut dispatch_args = vec![
        "journeys",
        "dispatch",
        "--actions-topic",
        stack.topics.output("actions"),
        "--events-topic",
        &stack.topics.events,
        "--group-id",
        &group,
        "--backoff-ms",
        "50",
    ];
    dispatch_args.extend(webhooks.iter().map(String::as_str));
    let dispatcher =
        ServiceProcess::spawn(&workspace_binary("omni"), "journeys-dispatcher", &dispatch_args, &[]);
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

    // Mid-flow: the ticket is resolved, and at once the journeys service is SIGKILLed (while
    // c-goal waits for an open and the resolution may be in flight), and restarts.
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
    stack.sigkill_and_restart("journeys");

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
    // The support desk's view of it, through the customer-api.
    let served = stack
        .api_until("/v1/customers/c-goal/journeys", Duration::from_secs(30), |doc| {
            doc["last_exits"].as_array().is_some_and(|exits| !exits.is_empty())
        })
        .await;
    assert_eq!(served["entries"], json!([]), "{served}");
    assert_eq!(served["last_exits"][0]["reason"], "goal", "{served}");
    assert_eq!(served["last_exits"][0]["detail"], "bf-goal-order", "{served}");
    // Past the end of the last call (20 s after the follow-up): still no bonus.
    let follow_up_at = of(&followed, "c-goal")[1].decided_at;
    let bonus_due = follow_up_at + chrono::Duration::seconds(22);
    if let Ok(left) = (bonus_due - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
    let settled = actions(&stack);
    assert_eq!(summary(of(&settled, "c-goal")).len(), 2, "no push after the goal: {settled:#?}");
    let ticket = summary(of(&settled, "c-ticket"));
    assert_eq!(ticket[..2], [("offer".to_owned(), JourneyOutcome::Waiting, None), send("offer", "email")]);
    assert_eq!(
        ticket.iter().filter(|decision| decision.0 == "offer").count(),
        2,
        "one wait, one send: {ticket:?}"
    );

    // Neither lost nor repeated across the SIGKILL: every decision id once, and each one the id
    // of its (journey, entry, step, attempt).
    let ids: Vec<&str> = settled.values().flatten().map(|a| a.decision_id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a decision repeated: {settled:#?}");
    assert!(settled.values().flatten().all(|a| a.journey_id == "bf-test" && a.journey_version == 1));
    assert_eq!(of(&settled, "c-goal")[0].entry_id, "bf-goal-view");

    // Each send went through its channel's webhook under its decision id, retried once after the
    // 503, and came back as a message_sent with that id.
    let sends: Vec<&JourneyAction> =
        settled.values().flatten().filter(|a| a.outcome == JourneyOutcome::Send).collect();
    let started = Instant::now();
    let sent_back = loop {
        let sent_back: Vec<(String, String)> = read_committed_to_end(&stack.topics.events)
            .iter()
            .filter_map(|message| decode_event(message.payload()?).ok())
            .filter_map(|event| match event.payload {
                EventPayload::MessageSent { message_id, .. } => Some((event.event_id, message_id)),
                _ => None,
            })
            .collect();
        if sent_back.len() >= sends.len() {
            break sent_back;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "message_sent back: {sent_back:?} of {sends:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for send in &sends {
        let channel = send.channel.clone().expect("a send's channel");
        assert_eq!(sink.calls_of(&send.decision_id), vec![channel.clone(), channel], "{send:?}");
        let id = send.decision_id.clone();
        assert_eq!(
            sent_back.iter().filter(|sent| **sent == (id.clone(), id.clone())).count(),
            1,
            "{sent_back:?}"
        );
    }
    dispatcher.kill();
}

/// The shipped price-drop flow cut to its first send: a price drop enters every customer who
/// viewed the product within 30 days; one email (or the best allowed channel).
const PRICE_DROP: &str = r#"
id = "pd-test"
version = 1

[entry]
catalog = "price_drop"
within = "30d"
reentry = { after = "7d" }

[[steps]]
id = "offer"
send = { best_of = ["email", "sms"], template = "price-drop" }
"#;

fn catalog_event(id: &str, product: &str, kind: &str, properties: Value) -> Value {
    json!({
        "event_id": id, "product_id": product, "occurred_at": Utc::now().to_rfc3339(),
        "type": kind, "properties": properties, "source": "journeys-test"
    })
}

async fn publish_catalog(stack: &Stack, events: Vec<Value>) {
    let (status, answer) = stack.post_catalog_events(&json!({ "events": events }), None).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_price_drop_through_the_gateway_fans_out_to_the_customers_who_viewed_the_product() {
    let mut stack = Stack::start(
        "journeys-catalog",
        StackOptions { suppression_rules: Some(RULES.into()), ..Default::default() },
    )
    .await;
    stack.publish_journeys(&[PRICE_DROP]);
    // Views appended the lookup grace (4 s) after the definition are kept for it.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Eight viewers of sku-a, spread over the partitions, and one viewer of sku-b only.
    let viewers: Vec<String> = (0..8).map(|n| format!("c-view-{n}")).collect();
    let mut views: Vec<Value> = viewers
        .iter()
        .map(|customer| {
            let id = format!("{customer}-sku-a");
            event(&id, customer, "web", "product_viewed", json!({"product_id": "sku-a"}))
        })
        .collect();
    views.push(event("c-other-sku-b", "c-other", "web", "product_viewed", json!({"product_id": "sku-b"})));
    publish(&stack, views).await;
    // The drop comes after the views were applied (the views' own time is what counts: sent
    // right after them, the drop could be appended first).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drop = catalog_event(
        "drop-1",
        "sku-a",
        "product_price_changed",
        json!({"old_minor": 4_999, "new_minor": 3_999, "currency": "EUR"}),
    );
    let rise = catalog_event(
        "rise-1",
        "sku-b",
        "product_price_changed",
        json!({"old_minor": 1_000, "new_minor": 1_200, "currency": "EUR"}),
    );
    publish_catalog(&stack, vec![drop.clone(), rise]).await;

    let decided = decisions_until(&stack, "every viewer of sku-a gets the offer", |actions| {
        viewers.iter().all(|customer| !of(actions, customer).is_empty())
    });
    for customer in &viewers {
        let decisions = of(&decided, customer);
        assert_eq!(summary(decisions), vec![send("offer", "email")], "{customer}");
        assert_eq!(
            (decisions[0].entry_id.as_str(), decisions[0].entry_key.as_deref()),
            ("drop-1", Some("sku-a")),
            "{customer}: the entry names the catalog event and the product"
        );
    }

    // Mid-flow: journeys is SIGKILLed and restarts (its state restored from the changelog); then
    // the producer retries the drop, and a customer views sku-a only after it: nothing more.
    stack.sigkill_and_restart("journeys");
    publish(
        &stack,
        vec![event("c-late-sku-a", "c-late", "web", "product_viewed", json!({"product_id": "sku-a"}))],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_catalog(&stack, vec![drop]).await;
    // A marker after everything above: a second product dropping for c-other proves the
    // retry and the late view were passed (the service handles catalog events in append order).
    publish(
        &stack,
        vec![event("c-other-sku-c", "c-other", "web", "product_viewed", json!({"product_id": "sku-c"}))],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_catalog(
        &stack,
        vec![catalog_event(
            "drop-2",
            "sku-c",
            "product_price_changed",
            json!({"old_minor": 2_000, "new_minor": 1_500, "currency": "EUR"}),
        )],
    )
    .await;
    let finished =
        decisions_until(&stack, "c-other's sku-c offer", |actions| !of(actions, "c-other").is_empty());
    assert_eq!(summary(of(&finished, "c-other")), vec![send("offer", "email")]);
    assert_eq!(of(&finished, "c-other")[0].entry_key.as_deref(), Some("sku-c"), "not sku-b: its price rose");
    for customer in &viewers {
        assert_eq!(of(&finished, customer).len(), 1, "{customer}: the retried drop enters no one again");
    }
    assert!(of(&finished, "c-late").is_empty(), "c-late viewed sku-a after the drop");
    let ids: Vec<&str> = finished.values().flatten().map(|a| a.decision_id.as_str()).collect();
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "no decision twice, the SIGKILL included");
    assert!(stack.restart_exited().is_empty(), "{}", stack.warnings());
}

/// Black Friday with room for a login between the offer and the follow-up.
const BLACK_FRIDAY_SLOW: &str = r#"
id = "bf-merge"
version = 1

[entry]
event = "page_viewed"
where = [{ property = "url", starts_with = "/black-friday" }]
reentry = "once"

[[goals]]
event = "order_placed"

[[steps]]
id = "offer"
send = { channel = "email", template = "bf-offer" }

[[steps]]
id = "opened"
wait = { event = { event = "message_opened", of_this_journey = true }, timeout = "45s", on_timeout = "follow-up" }
next = "end"

[[steps]]
id = "follow-up"
send = { channel = "sms", template = "bf-follow-up" }
"#;

fn identified(
    id: &str,
    customer: &str,
    kind: &str,
    properties: Value,
    identifiers: &[(&str, &str)],
) -> Value {
    let mut event = event(id, customer, "web", kind, properties);
    event["identifiers"] =
        identifiers.iter().map(|(kind, value)| json!({"type": kind, "value": value})).collect();
    event
}

/// Waits until `check` holds of the committed journeys record of `customer` (`None`: none or
/// a tombstone).
fn journeys_until(
    stack: &Stack,
    customer: &str,
    what: &str,
    check: impl Fn(&Option<CustomerJourneyState>) -> bool,
) -> Option<CustomerJourneyState> {
    let started = Instant::now();
    loop {
        let state = journeys_of(stack, customer);
        if check(&state) {
            return state;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "{what}: {state:#?}\n{}", stack.warnings());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With identity resolution: a cookie enters Black Friday, then logs in (its customer is merged
/// into the account, canonical by byte order); the entry goes on under the account, and the
/// account's order ends it at once (the follow-up never goes). The journeys service is SIGKILLed
/// once the merge has landed: the moved entry comes back from its changelog.
#[tokio::test(flavor = "multi_thread")]
async fn a_journey_entered_as_a_cookie_goes_on_under_the_account_it_logs_in_to_and_ends_at_its_order() {
    let mut stack = Stack::start(
        "journeys-merge",
        StackOptions { suppression_rules: Some(RULES.into()), resolution: true, ..Default::default() },
    )
    .await;
    stack.publish_journeys(&[BLACK_FRIDAY_SLOW]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = identified(
        "jm-view",
        "anon-9c1d",
        "page_viewed",
        json!({"url": "/black-friday"}),
        &[("anonymous_id", "9c1d")],
    );
    publish(&stack, vec![view]).await;
    let offered =
        decisions_until(&stack, "the offer to the cookie", |actions| !of(actions, "anon-9c1d").is_empty());
    assert_eq!(summary(of(&offered, "anon-9c1d")), vec![send("offer", "email")]);

    let login = identified(
        "jm-login",
        "U-2001",
        "identify",
        json!({}),
        &[("anonymous_id", "9c1d"), ("user_id", "U-2001")],
    );
    publish(&stack, vec![login]).await;
    let moved = journeys_until(&stack, "U-2001", "the cookie's entry under the account", |state| {
        state.as_ref().is_some_and(|s| s.entries.iter().any(|e| e.entry_id == "jm-view"))
    })
    .expect("the account's journeys");
    assert_eq!(moved.entries.len(), 1, "{moved:?}");
    assert_eq!(
        (moved.entries[0].journey_id.as_str(), moved.entries[0].step.as_str()),
        ("bf-merge", "opened")
    );
    journeys_until(&stack, "anon-9c1d", "the cookie's record gone", Option::is_none);
    stack.sigkill_and_restart("journeys");

    publish(
        &stack,
        vec![identified(
            "jm-order",
            "U-2001",
            "order_placed",
            json!({"order_id": "o-jm", "value_minor": 4999, "currency": "EUR"}),
            &[("user_id", "U-2001")],
        )],
    )
    .await;
    let ended = journeys_until(&stack, "U-2001", "the moved entry ended by the order", |state| {
        state.as_ref().is_some_and(|s| s.entries.is_empty() && !s.last_exits.is_empty())
    })
    .expect("the account's journeys");
    let exit = &ended.last_exits[0];
    assert_eq!(
        (exit.entry_id.as_str(), exit.reason, exit.detail.as_deref()),
        ("jm-view", JourneyExitReason::Goal, Some("jm-order")),
        "{ended:?}"
    );
    // Past the 45 s the follow-up would have waited from the offer: nothing else was decided,
    // for either id.
    let offered_at = offered["anon-9c1d"][0].decided_at;
    while Utc::now() < offered_at + chrono::Duration::seconds(47) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = actions(&stack);
    assert_eq!(summary(of(&all, "anon-9c1d")), vec![send("offer", "email")]);
    assert!(of(&all, "U-2001").is_empty(), "{all:#?}");
    let dead_lettered = read_committed_to_end(&stack.topics.dlq);
    assert!(dead_lettered.is_empty(), "{} records dead-lettered\n{}", dead_lettered.len(), stack.warnings());
}
