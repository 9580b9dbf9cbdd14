//! The six stories of SPEC 1, end to end through HTTP: events go in through the ingest-gateway,
//! the four services process them on the real broker, and every assertion reads the
//! customer-api, as the website, the campaign sender and the support desk would.

use std::time::{Duration, Instant};

use apache_avro::types::Value as AvroValue;
use chrono::Utc;
use omnistream_model::decode_any;
use omnistream_testkit::stack::{Stack, StackOptions, StackTopics};
use omnistream_testkit::{CommittedReader, produce_all, read_committed_to_end};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};

/// No frequency caps and no quiet hours: the stories then do not depend on the time of day.
const STORY_RULES: &str = "frequency_caps = []\nquiet_hours = []\n";

/// An event in the JSON form of SPEC 2, `ago` before now.
fn event(
    id: &str,
    customer: &str,
    ago: chrono::Duration,
    channel: &str,
    kind: &str,
    properties: Value,
) -> Value {
    json!({
        "event_id": id, "customer_id": customer, "occurred_at": (Utc::now() - ago).to_rfc3339(),
        "channel": channel, "type": kind, "source": "stories-test", "properties": properties
    })
}

fn now(id: &str, customer: &str, channel: &str, kind: &str, properties: Value) -> Value {
    event(id, customer, chrono::Duration::zero(), channel, kind, properties)
}

async fn publish(stack: &Stack, events: Vec<Value>) {
    let (status, answer) = stack.post_events(&json!({ "events": events }), None).await;
    assert_eq!(status, 200, "{answer}");
}

fn codes(channel: &Value) -> Vec<&str> {
    channel["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect()
}

fn entry_kinds(loyalty: &Value) -> Vec<&str> {
    // Newest first in the API: reversed to read in order.
    let mut kinds: Vec<&str> =
        loyalty["recent_entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    kinds.reverse();
    kinds
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn the_six_stories_of_spec_1_through_the_gateway_and_the_customer_api() {
    let mut stack = Stack::start(
        "stories",
        StackOptions { suppression_rules: Some(STORY_RULES.into()), ..Default::default() },
    )
    .await;

    // 1. Respecting the moment: a WhatsApp ticket suppresses marketing on every channel within a
    //    second, naming the ticket; resolved, the customer is reachable again and the profile
    //    shows the ticket resolved.
    publish(&stack, vec![now("s1-view", "c-s1", "web", "page_viewed", json!({"url": "/orders/1"}))]).await;
    stack
        .api_until("/v1/customers/c-s1/reachability", WAIT, |r| r["allowed"].as_array().unwrap().len() == 4)
        .await;
    let opened = now(
        "s1-open",
        "c-s1",
        "whatsapp",
        "support_ticket_opened",
        json!({"ticket_id": "T-77", "topic": "delivery"}),
    );
    publish(&stack, vec![opened]).await;
    let published = Instant::now();
    let suppressed = stack
        .api_until("/v1/customers/c-s1/reachability?purpose=marketing", WAIT, |r| {
            r["allowed"].as_array().unwrap().is_empty()
        })
        .await;
    let took = published.elapsed();
    assert!(took < Duration::from_secs(1), "suppressed {took:?} after the gateway's answer");
    assert_eq!(suppressed["channels"].as_array().unwrap().len(), 4, "{suppressed}");
    for channel in suppressed["channels"].as_array().unwrap() {
        assert_eq!(channel["status"], "blocked", "{channel}");
        assert_eq!(channel["reasons"][0]["code"], "support_ticket_open");
        assert_eq!(channel["reasons"][0]["detail"], "T-77", "the reason names the ticket");
    }
    publish(
        &stack,
        vec![now("s1-resolve", "c-s1", "whatsapp", "support_ticket_resolved", json!({"ticket_id": "T-77"}))],
    )
    .await;
    stack
        .api_until("/v1/customers/c-s1/reachability", WAIT, |r| r["allowed"].as_array().unwrap().len() == 4)
        .await;
    let document = stack
        .api_until("/v1/customers/c-s1", WAIT, |d| !d["profile"]["last_resolved_ticket"].is_null())
        .await;
    assert_eq!(document["profile"]["last_resolved_ticket"]["ticket_id"], "T-77");
    assert_eq!(document["profile"]["open_tickets"], json!([]));

    // 2. From store to inbox: a store purchase updates the profile at once and earns points.
    let purchase = now(
        "s2-order",
        "c-s2",
        "store",
        "order_placed",
        json!({"order_id": "o-2", "value_minor": 4999, "currency": "EUR"}),
    );
    publish(&stack, vec![purchase]).await;
    let document = stack
        .api_until("/v1/customers/c-s2", WAIT, |d| !d["profile"].is_null() && !d["loyalty"].is_null())
        .await;
    let profile = &document["profile"];
    assert_eq!(profile["orders_count"], 1);
    assert_eq!(profile["lifetime_value_minor"], json!({"EUR": 4999}));
    assert_eq!(profile["last_order_channel"], "store");
    assert!(profile["channels"].as_array().unwrap().iter().any(|c| c["channel"] == "store"));
    assert_eq!(document["loyalty"]["pending"], 49, "earned, pending until the return window passes");

    // Erasure (SPEC 4.5): every service tombstones the customer; the API forgets them.
    publish(&stack, vec![now("s2-erase", "c-s2", "web", "erasure_requested", json!({}))]).await;
    let started = Instant::now();
    while stack.api("/v1/customers/c-s2").await.0 != 404 {
        assert!(started.elapsed() < WAIT, "c-s2 still served after erasure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.api("/v1/customers/c-s2/loyalty").await.0, 404);
    // SPEC 4.5 and 6: an erased id is no unknown one ("send"): every channel is blocked, for
    // every purpose, while the erasure marker lives.
    for purpose in ["marketing", "transactional"] {
        let path = format!("/v1/customers/c-s2/reachability?purpose={purpose}");
        let erased =
            stack.api_until(&path, WAIT, |r| r["channels"][0]["reasons"][0]["code"] == "erased").await;
        assert_eq!(
            (erased["known"].as_bool(), erased["allowed"].clone()),
            (Some(false), json!([])),
            "{erased}"
        );
        for channel in erased["channels"].as_array().unwrap() {
            assert_eq!((channel["status"].as_str(), codes(channel)), (Some("blocked"), vec!["erased"]));
        }
    }
    // An id never seen gets the defaults (no channel requires consent by default).
    let (status, unknown) = stack.api("/v1/customers/c-never-seen/reachability").await;
    assert_eq!((status, unknown["known"].as_bool()), (200, Some(false)), "{unknown}");
    assert_eq!(unknown["allowed"], json!(["email", "sms", "whatsapp", "push"]));

    // 3. Earn in store, spend on the web: the store order's points activate, two channels redeem
    //    at the same moment and only one fits, a refund takes the points back.
    let old_order = event(
        "s3-order",
        "c-s3",
        chrono::Duration::days(15),
        "store",
        "order_placed",
        json!({"order_id": "o-3", "value_minor": 12999, "currency": "EUR"}),
    );
    publish(&stack, vec![old_order]).await;
    stack.api_until("/v1/customers/c-s3/loyalty", WAIT, |l| l["balance"]["active"] == 129).await;
    let redeem = |id: &str, channel: &str| json!({"events": [now(id, "c-s3", channel, "loyalty_redeem_requested", json!({"redemption_id": id, "points": 100}))]});
    let (web_body, app_body) = (redeem("s3-web", "web"), redeem("s3-app", "mobile_app"));
    let (web, app) = tokio::join!(stack.post_events(&web_body, None), stack.post_events(&app_body, None));
    assert_eq!((web.0, app.0), (200, 200));
    // The ledger and the balances are two topics, read apart: wait for both.
    let loyalty = stack
        .api_until("/v1/customers/c-s3/loyalty", WAIT, |l| {
            entry_kinds(l).len() >= 4 && l["balance"]["spent"] == 100
        })
        .await;
    let kinds = entry_kinds(&loyalty);
    assert!(
        kinds == ["earn", "activate", "redeem", "reject"]
            || kinds == ["earn", "activate", "reject", "redeem"],
        "{kinds:?}"
    );
    let reject =
        loyalty["recent_entries"].as_array().unwrap().iter().find(|e| e["kind"] == "reject").unwrap();
    assert_eq!(reject["reason"], "insufficient_points", "{reject}");
    assert!(reject["redemption_id"].is_string(), "{reject}");
    assert_eq!(loyalty["balance"]["active"], 29, "never overdrawn");
    publish(
        &stack,
        vec![now(
            "s3-refund",
            "c-s3",
            "store",
            "order_refunded",
            json!({"order_id": "o-3", "value_minor": 12999, "currency": "EUR"}),
        )],
    )
    .await;
    // Two topics read apart again: the balance may show before its ledger entry.
    let loyalty = stack
        .api_until("/v1/customers/c-s3/loyalty", WAIT, |l| {
            l["balance"]["active"] == -100 && l["recent_entries"][0]["kind"] == "reverse"
        })
        .await;
    let reverse = &loyalty["recent_entries"][0];
    assert_eq!((reverse["kind"].as_str(), reverse["points"].as_i64()), (Some("reverse"), Some(-129)));
    assert_eq!(reverse["negative_balance"], true);

    // 4. Price drop with channel routing: never opens email, clicks SMS, replies on WhatsApp, and
    //    unsubscribed from push: whatsapp > sms > email, push never recommended.
    let mut events = Vec::new();
    let mut n = 0;
    let mut add = |minutes_ago: i64, channel: &str, kind: &str, properties: Value| {
        n += 1;
        events.push(event(
            &format!("s4-{n}"),
            "c-s4",
            chrono::Duration::minutes(minutes_ago),
            channel,
            kind,
            properties,
        ));
    };
    // Engagement counts once per message (SPEC 4): every send is a message of its own.
    let sent = |id: String| json!({"message_id": id, "purpose": "marketing"});
    for minute in 0..5 {
        for channel in ["email", "sms", "push"] {
            add(60 - minute, channel, "message_sent", sent(format!("{channel}-{minute}")));
        }
    }
    for minute in 5..8 {
        add(60 - minute, "sms", "message_clicked", json!({"message_id": format!("sms-{}", minute - 5)}));
        add(60 - minute, "whatsapp", "message_sent", sent(format!("whatsapp-{minute}")));
        add(60 - minute, "whatsapp", "message_received", json!({"conversation_id": "w-1"}));
        add(60 - minute, "push", "message_opened", json!({"message_id": format!("push-{}", minute - 5)}));
    }
    add(50, "push", "consent_changed", json!({"purpose": "marketing", "granted": false}));
    let total = events.len();
    publish(&stack, events).await;
    // Every event applied by channel-affinity (and suppression, which is faster): then ask.
    let document =
        stack.api_until("/v1/customers/c-s4", WAIT, |d| d["channel_affinity"]["version"] == total).await;
    let reachability = stack
        .api_until("/v1/customers/c-s4/reachability?purpose=marketing", WAIT, |r| {
            r["channels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["channel"] == "push" && c["status"] == "blocked")
        })
        .await;
    assert_eq!(reachability["allowed"], json!(["whatsapp", "sms", "email"]));
    let push = reachability["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "push").unwrap();
    assert_eq!((push["status"].as_str(), codes(push)), (Some("blocked"), vec!["consent_revoked"]));
    let counts = |channel: &str| {
        let score = document["channel_affinity"]["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel)
            .unwrap()
            .clone();
        (score["sent"].as_f64().unwrap().round(), score["engaged"].as_f64().unwrap().round())
    };
    assert_eq!(
        [counts("email"), counts("sms"), counts("whatsapp")],
        [(5.0, 0.0), (5.0, 3.0), (3.0, 3.0)],
        "the counts that explain it"
    );

    // 5. Nothing lost, nothing twice: a producer retry counts once, and a profile-updater killed
    //    with SIGKILL mid-stream restarts and ends where an uninterrupted run would. A customer's
    //    events are applied in order, so once a marker published last shows, all before it were
    //    applied: the counts are final, not a value on its way up.
    let view = now("s5-retried", "c-s5", "web", "page_viewed", json!({"url": "/"}));
    publish(&stack, vec![view.clone()]).await;
    publish(&stack, vec![view]).await;
    let marker = |id: &str| now(id, "c-s5", "web", "traits_updated", json!({"set": {"marker": id}}));
    publish(&stack, vec![marker("s5-after-retry")]).await;
    let page_views = |d: &Value| -> i64 {
        d["profile"]["channels"].as_array().map_or(0, |channels| {
            channels.iter().filter_map(|c| c["event_counts"]["page_viewed"].as_i64()).sum()
        })
    };
    let marker_shown = |id: &'static str| move |d: &Value| d["profile"]["traits"]["marker"]["value"] == id;
    let document = stack.api_until("/v1/customers/c-s5", WAIT, marker_shown("s5-after-retry")).await;
    assert_eq!(
        (page_views(&document), document["profile"]["version"].as_i64()),
        (1, Some(2)),
        "the retry counted once"
    );
    for batch in 0..6 {
        let views = (0..50)
            .map(|i| now(&format!("s5-{batch}-{i}"), "c-s5", "web", "page_viewed", json!({"url": "/"})))
            .collect();
        publish(&stack, views).await;
        if batch == 2 {
            stack.sigkill_and_restart("profile-updater");
        }
    }
    publish(&stack, vec![marker("s5-end")]).await;
    let document =
        stack.api_until("/v1/customers/c-s5", Duration::from_secs(90), marker_shown("s5-end")).await;
    assert_eq!((page_views(&document), document["profile"]["version"].as_i64()), (301, Some(303)));

    // 6. Bad input: the gateway names each bad event and field and publishes none of them; bytes
    //    that bypass the gateway go to the dead-letter topic with a reason; the pipeline goes on.
    let mut negative = now(
        "s6-negative",
        "c-s6",
        "web",
        "order_placed",
        json!({"order_id": "o-6", "value_minor": -1, "currency": "EUR"}),
    );
    negative["source"] = json!("till-7");
    let good = now("s6-good", "c-s6", "web", "page_viewed", json!({"url": "/"}));
    // Identifiers (schema v2): accepted normalized, or the event is refused naming the one that
    // is malformed; fastavro reads them back below.
    let mut login = now("s6-login", "c-s6", "web", "identify", json!({}));
    login["identifiers"] = json!([{"type": "email", "value": " Six@Example.COM "}, {"type": "phone", "value": "+1 415 555 0106"}]);
    let mut no_country_code = now("s6-phone", "c-s6", "sms", "page_viewed", json!({"url": "/"}));
    no_country_code["identifiers"] = json!([{"type": "phone", "value": "415 555 0106"}]);
    let (status, answer) = stack
        .post_events(
            &json!({"events": [negative, {"event_id": "s6-empty"}, good, login, no_country_code]}),
            None,
        )
        .await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["results"][1]["errors"][0]["field"], "customer_id");
    assert_eq!(answer["results"][0]["errors"][0]["code"], "negative_amount");
    assert_eq!(answer["results"][3]["status"], "accepted", "{answer}");
    assert_eq!(answer["results"][4]["errors"][0]["code"], "invalid_identifier");
    assert_eq!(answer["results"][4]["errors"][0]["field"], "identifiers[0].value");
    produce_all(&stack.topics.events, [("c-s6".to_owned(), b"\x01not avro at all".to_vec())]).await;
    publish(&stack, vec![now("s6-after", "c-s6", "web", "page_viewed", json!({"url": "/after"}))]).await;
    let document = stack.api_until("/v1/customers/c-s6", WAIT, |d| page_views(d) == 2).await;
    assert_eq!(document["profile"]["orders_count"], 0, "the rejected order was not published");
    let dlq = stack.topics.dlq.clone();
    let code = tokio::task::spawn_blocking(move || {
        CommittedReader::from_beginning(&dlq).read_until(WAIT, |message| {
            let headers = message.headers()?;
            headers
                .iter()
                .find(|h| h.key == "error.code")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    })
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("malformed"));

    every_record_decodes_with_fastavro(&stack.topics, &SERVICE_RECORDS).await;
}

/// What the services write.
const SERVICE_RECORDS: [&str; 6] = ["events", "profiles", "suppressions", "affinity", "ledger", "balances"];

/// An event carrying identifiers (docs/identity.md), `ago` before now.
fn identified(
    id: &str,
    customer: &str,
    ago: chrono::Duration,
    channel: &str,
    kind: &str,
    properties: Value,
    identifiers: &[(&str, &str)],
) -> Value {
    let mut event = event(id, customer, ago, channel, kind, properties);
    event["identifiers"] =
        identifiers.iter().map(|(kind, value)| json!({"type": kind, "value": value})).collect();
    event
}

/// Issue 16's stories with identity resolution on, through the gateway and the customer-api.
/// Canonical ids are the smallest producer id of those linked (byte order: `U-1042` before
/// `anon-…`, `card-…` and `wa-…`).
#[tokio::test(flavor = "multi_thread")]
async fn identity_stories_one_customer_across_cookie_login_store_card_and_whatsapp() {
    let stack = Stack::start(
        "identity-stories",
        StackOptions { suppression_rules: Some(STORY_RULES.into()), resolution: true, ..Default::default() },
    )
    .await;
    let zero = chrono::Duration::zero();

    // An anonymous visitor browses, logs in, then buys in store with a loyalty card whose
    // holder gave the same email: one customer, one profile, one balance.
    publish(
        &stack,
        vec![
            identified(
                "i1-view",
                "anon-7f3a",
                zero,
                "web",
                "page_viewed",
                json!({"url": "/shoes"}),
                &[("anonymous_id", "7f3a")],
            ),
            identified(
                "i1-login",
                "U-1042",
                zero,
                "web",
                "identify",
                json!({}),
                &[("anonymous_id", "7f3a"), ("user_id", "U-1042"), ("email", "ann@example.com")],
            ),
        ],
    )
    .await;
    let order = identified(
        "i1-order",
        "card-5555",
        chrono::Duration::days(15),
        "store",
        "order_placed",
        json!({"order_id": "o-i1", "value_minor": 12999, "currency": "EUR"}),
        &[("loyalty_card", "5555 0001"), ("email", " Ann@Example.com")],
    );
    publish(&stack, vec![order]).await;
    // The card's points, on the web account (the merge, then the handoff of the card's points,
    // come a moment after the order).
    let loyalty = stack
        .api_until("/v1/customers/card-5555/loyalty", WAIT, |l| {
            l["customer_id"] == "U-1042" && l["balance"]["active"] == 129
        })
        .await;
    assert_eq!(loyalty["balance"]["customer_id"], "U-1042", "{loyalty}");
    // Every id answers the one customer: the same document, once each service has taken the
    // merges (they do so one after the other).
    let started = Instant::now();
    let document = loop {
        let document =
            stack.api_until("/v1/customers/anon-7f3a", WAIT, |d| d["profile"]["orders_count"] == 1).await;
        let (status, same) = stack.api("/v1/customers/U-1042").await;
        if (status, &same) == (200, &document) {
            break document;
        }
        assert!(
            started.elapsed() < WAIT,
            "every id answers the one customer: {document} and {status} {same}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(document["customer_id"], "U-1042");
    let channels: Vec<&str> = document["profile"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert!(channels.contains(&"web") && channels.contains(&"store"), "{channels:?}");
    let identity = stack
        .api_until("/v1/customers/card-5555/identity", WAIT, |i| i["aliases"].as_array().unwrap().len() == 2)
        .await;
    let mut aliases: Vec<&str> =
        identity["aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    aliases.sort_unstable();
    assert_eq!(aliases, ["anon-7f3a", "card-5555"], "{identity}");
    let held: Vec<(&str, &str)> = identity["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["type"].as_str().unwrap(), i["value"].as_str().unwrap()))
        .collect();
    for expected in [
        ("anonymous_id", "7f3a"),
        ("user_id", "U-1042"),
        ("email", "ann@example.com"),
        ("loyalty_card", "55550001"),
    ] {
        assert!(held.contains(&expected), "{expected:?} in {identity}");
    }
    // Each merge names the identifier and the event that linked it: whichever of the two events
    // carrying it came second (the stages may see the order before the login).
    for merge in identity["merges"].as_array().unwrap() {
        let evidence = (
            merge["merged_customer_id"].as_str().unwrap(),
            merge["identifier_type"].as_str().unwrap(),
            merge["evidence_event_id"].as_str().unwrap(),
        );
        assert!(
            [
                ("anon-7f3a", "anonymous_id", "i1-login"),
                ("anon-7f3a", "customer_id", "i1-view"),
                ("card-5555", "email", "i1-login"),
                ("card-5555", "email", "i1-order"),
            ]
            .contains(&evidence),
            "{evidence:?} in {identity}"
        );
    }

    // A ticket opened on WhatsApp, known by phone, suppresses the email promo once a login from
    // the app links that phone to the account.
    publish(
        &stack,
        vec![identified(
            "i2-ticket",
            "wa-14155550100",
            zero,
            "whatsapp",
            "support_ticket_opened",
            json!({"ticket_id": "T-9", "topic": "delivery"}),
            &[("phone", "+1 415 555 0100")],
        )],
    )
    .await;
    stack.api_until("/v1/customers/wa-14155550100", WAIT, |d| !d["suppression"].is_null()).await;
    let email_allowed = |r: &Value| r["allowed"].as_array().unwrap().iter().any(|c| c == "email");
    assert!(email_allowed(&stack.api("/v1/customers/U-1042/reachability").await.1), "not linked yet");
    publish(
        &stack,
        vec![identified(
            "i2-login",
            "U-1042",
            zero,
            "mobile_app",
            "identify",
            json!({}),
            &[("user_id", "U-1042"), ("phone", "+14155550100")],
        )],
    )
    .await;
    let reachability =
        stack.api_until("/v1/customers/U-1042/reachability", WAIT, |r| !email_allowed(r)).await;
    let email =
        reachability["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "email").unwrap();
    assert_eq!(
        (email["reasons"][0]["code"].as_str(), email["reasons"][0]["detail"].as_str()),
        (Some("support_ticket_open"), Some("T-9")),
        "{reachability}"
    );

    // A family email on two loyalty-card holders: they stay two customers, and the link is a
    // conflict for review.
    publish(
        &stack,
        vec![
            identified(
                "i3-a",
                "card-1111",
                zero,
                "store",
                "identify",
                json!({}),
                &[("loyalty_card", "1111"), ("email", "family@example.com")],
            ),
            identified(
                "i3-b",
                "card-2222",
                zero,
                "store",
                "identify",
                json!({}),
                &[("loyalty_card", "2222"), ("email", "family@example.com")],
            ),
            // A blocked value links nothing: two till sales with the placeholder email.
            identified(
                "i4-a",
                "till-a",
                zero,
                "store",
                "page_viewed",
                json!({"url": "/till"}),
                &[("email", "test@example.com")],
            ),
            identified(
                "i4-b",
                "till-b",
                zero,
                "store",
                "page_viewed",
                json!({"url": "/till"}),
                &[("email", "test@example.com")],
            ),
        ],
    )
    .await;
    let conflicts = stack.topics.output("conflicts").to_owned();
    let conflict = tokio::task::spawn_blocking(move || {
        CommittedReader::from_beginning(&conflicts).read_until(WAIT, |message| {
            let (_, value) = decode_any(message.payload()?).ok()?;
            Some(omnistream_model::value_to_json(&value))
        })
    })
    .await
    .unwrap()
    .expect("a conflict");
    assert_eq!(
        (
            &conflict["customer_id"],
            &conflict["other_customer_id"],
            &conflict["rule"],
            &conflict["identifier_value"]
        ),
        (&json!("card-1111"), &json!("card-2222"), &json!("different_strong"), &json!("family@example.com")),
        "{conflict}"
    );
    for (id, other) in
        [("card-1111", "card-2222"), ("card-2222", "card-1111"), ("till-a", "till-b"), ("till-b", "till-a")]
    {
        let document =
            stack.api_until(&format!("/v1/customers/{id}"), WAIT, |d| !d["profile"].is_null()).await;
        assert_eq!(document["customer_id"], id);
        let identity = stack.api(&format!("/v1/customers/{id}/identity")).await.1;
        assert_eq!(identity["aliases"], json!([]), "{id} and {other} stay apart: {identity}");
    }

    // Erasure through any alias forgets the customer, every alias and its identifiers.
    publish(&stack, vec![now("i5-erase", "card-5555", "web", "erasure_requested", json!({}))]).await;
    for id in ["U-1042", "anon-7f3a", "card-5555", "wa-14155550100"] {
        let started = Instant::now();
        while stack.api(&format!("/v1/customers/{id}/identity")).await.0 != 404
            || stack.api(&format!("/v1/customers/{id}")).await.0 != 404
        {
            assert!(started.elapsed() < WAIT, "{id} still served after the erasure");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Every id of the person, merged ones included, is erased (SPEC 4.5), not unknown.
    for id in ["U-1042", "anon-7f3a", "card-5555", "wa-14155550100"] {
        let path = format!("/v1/customers/{id}/reachability");
        let answer =
            stack.api_until(&path, WAIT, |r| r["channels"][0]["reasons"][0]["code"] == "erased").await;
        assert_eq!(answer["allowed"], json!([]), "{id}: {answer}");
    }

    let mut required = SERVICE_RECORDS.to_vec();
    required.extend(["resolved", "identity", "conflicts"]);
    every_record_decodes_with_fastavro(&stack.topics, &required).await;
}

/// SPEC 2: any Avro library decodes every topic with the `.avsc` files alone. fastavro finds each
/// record's writer schema by its own fingerprint and must read the same values as omnistream.
async fn every_record_decodes_with_fastavro(stack_topics: &StackTopics, required: &[&str]) {
    let mut topics: Vec<(&'static str, String)> =
        stack_topics.outputs.iter().map(|(role, topic)| (*role, topic.clone())).collect();
    topics.push(("events", stack_topics.events.clone()));
    let records = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        for (label, topic) in topics {
            for message in read_committed_to_end(&topic) {
                if let Some(bytes) = message.payload()
                    && bytes.starts_with(&[0xC3, 0x01])
                {
                    records.push((label, bytes.to_vec()));
                }
            }
        }
        records
    })
    .await
    .unwrap();
    for label in required {
        assert!(records.iter().any(|(l, _)| l == label), "no {label} record to decode");
    }
    let input: String = records.iter().map(|(label, bytes)| format!("{label} {}\n", hex(bytes))).collect();
    let decoded = run_fastavro(&input);
    assert_eq!(decoded.len(), records.len(), "fastavro decoded every record");
    for ((label, bytes), theirs) in records.iter().zip(&decoded) {
        let (kind, value) = decode_any(bytes).expect("omnistream decodes its own record");
        assert_eq!(theirs["schema"], kind.file_name(), "{label}: the schema fastavro found");
        assert_eq!(theirs["value"], plain_json(&value), "{label}: the values fastavro read");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `tests/interop/fastavro_decode.py` with the Python that `make test` gave fastavro.
fn run_fastavro(input: &str) -> Vec<Value> {
    use std::io::Write;
    let root = omnistream_testkit::repo_root();
    let python = std::env::var("OMNISTREAM_PYTHON")
        .unwrap_or_else(|_| root.join("target/py/bin/python3").to_string_lossy().into_owned());
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/interop/fastavro_decode.py"))
        .arg(root.join("schemas"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (`make py-deps` installs fastavro in target/py)"));
    // Written from a thread of its own: fastavro answers line by line, and a full stdout pipe
    // would otherwise stop it reading while this side still writes.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "fastavro: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// An Avro value as fastavro's JSON: unions unwrapped, enums as symbols, timestamps as millis.
fn plain_json(value: &AvroValue) -> Value {
    match value {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(flag) => json!(flag),
        AvroValue::Int(n) => json!(n),
        AvroValue::Long(n) | AvroValue::TimestampMillis(n) => json!(n),
        AvroValue::Double(n) => json!(n),
        AvroValue::String(text) | AvroValue::Enum(_, text) => json!(text),
        AvroValue::Union(_, inner) => plain_json(inner),
        AvroValue::Array(items) => Value::Array(items.iter().map(plain_json).collect()),
        AvroValue::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), plain_json(v))).collect()),
        AvroValue::Record(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), plain_json(v))).collect())
        }
        other => panic!("no schema of omnistream holds {other:?}"),
    }
}
