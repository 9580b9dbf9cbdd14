//! The customer 360 page (`/ui`) in a real browser (headless Chromium from Debian's packages,
//! over WebDriver) against the whole pipeline on the broker: events go in through the gateway,
//! and what the page shows is checked against figures worked out by hand from those events, not
//! against the API's own answers. It covers the unauthorized state, a search by email (identity
//! resolution on), the found state, a live update, a missing scope, the not-found and erased
//! states, and leaves a screenshot at `target/ui/customer-360.png`.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use omnistream_testkit::browser::Browser;
use omnistream_testkit::stack::{Stack, StackOptions};
use serde_json::{Value, json};

/// No frequency caps and no quiet hours: what the page says does not depend on the time of day.
const RULES: &str = "frequency_caps = []\nquiet_hours = []\n";
const AGENT_KEY: &str = "agent-0123456789abcdef";
const DESK_KEY: &str = "desk-fedcba9876543210";
const WAIT: Duration = Duration::from_secs(30);
const CUSTOMER: &str = "c-ui-ann";
/// A trait value a producer may send: shown as text, never run.
const HOSTILE: &str = "<img src=x onerror=\"document.title='injected'\">";

fn event(id: &str, ago_minutes: i64, channel: &str, kind: &str, properties: Value) -> Value {
    json!({
        "event_id": id, "customer_id": CUSTOMER, "channel": channel, "type": kind, "properties": properties,
        "occurred_at": (Utc::now() - chrono::Duration::minutes(ago_minutes)).to_rfc3339(),
    })
}

/// Rendered text with every run of white space (line breaks between cells and list items) as
/// one space.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_360_page_shows_one_customer_live() {
    let options = StackOptions {
        suppression_rules: Some(RULES.to_owned()),
        api_args: vec![
            "--api-keys".to_owned(),
            format!("agent:{AGENT_KEY},desk:{DESK_KEY}"),
            "--api-key-scopes".to_owned(),
            "agent=read:profile+read:reachability+read:loyalty,desk=read:profile+read:reachability"
                .to_owned(),
        ],
        // Identity resolution links the email the first event carries to the customer.
        resolution: true,
        ..StackOptions::default()
    };
    let mut stack = Stack::start("ui", options).await;
    stack.api_key = Some(AGENT_KEY.to_owned());
    // 20 days ago an order of EUR 129.90 on the web: past the 14-day return window, so its 129
    // points are spendable at once (1 point per euro). Marketing email consent given, SMS
    // consent withdrawn; one marketing email sent and opened.
    let mut login = event(
        "ui-1",
        30 * 24 * 60,
        "web",
        "traits_updated",
        json!({"set": {"first_name": "Ann", "nickname": HOSTILE}}),
    );
    login["identifiers"] = json!([{"type": "email", "value": " Ann@Example.COM"}]);
    let events = vec![
        login,
        event(
            "ui-2",
            20 * 24 * 60,
            "web",
            "order_placed",
            json!({"order_id": "o-ui-1", "value_minor": 12990, "currency": "EUR"}),
        ),
        event("ui-3", 60, "email", "consent_changed", json!({"purpose": "marketing", "granted": true})),
        event("ui-4", 50, "sms", "consent_changed", json!({"purpose": "marketing", "granted": false})),
        event("ui-5", 40, "email", "message_sent", json!({"message_id": "m-ui-1", "purpose": "marketing"})),
        event("ui-6", 35, "email", "message_opened", json!({"message_id": "m-ui-1"})),
    ];
    let (status, answer) = stack.post_events(&json!({ "events": events }), None).await;
    assert_eq!(status, 200, "{answer}");
    let path = format!("/v1/customers/{CUSTOMER}");
    stack
        .api_until(&path, WAIT, |d| {
            d["profile"]["consent_history"].as_array().is_some_and(|h| h.len() == 2)
                && d["channel_affinity"].is_object()
                && d["loyalty"]["active"] == 129
        })
        .await;
    stack
        .api_until(&format!("{path}/identity"), WAIT, |i| i["identifiers"][0]["value"] == "ann@example.com")
        .await;

    let browser = Browser::start(2400).await;
    let page = format!("http://127.0.0.1:{}/ui", stack.api_port);
    browser.client.goto(&page).await.expect("the page loads");
    assert_eq!(browser.client.title().await.expect("a title"), "Customer 360 · omnistream");

    // Unauthorized: a key the API does not know.
    browser.fill("#customer-id", CUSTOMER).await;
    browser.fill("#api-key", "not-a-key-at-all").await;
    browser.click("#search button").await;
    browser.wait_for_text("#alert", WAIT, |text| text.starts_with("Not authorized")).await;
    assert!(!browser.is_displayed("#customer").await, "no customer shown");

    // Found by email (spelled otherwise than the event did), with a key that reads everything
    // the page shows.
    browser.fill("#api-key", AGENT_KEY).await;
    browser.click("#search-by option[value=email]").await;
    browser.fill("#customer-id", "ann@EXAMPLE.com").await;
    browser.click("#search button").await;
    browser.wait_for_text("#customer-title", WAIT, |text| text == format!("Customer {CUSTOMER}")).await;
    assert_eq!(browser.text("#alert").await, "", "no alert once authorized");
    let profile = browser.text("#profile").await;
    for shown in ["€129.90", "Orders\n1", "Website", "first_name", "Ann", HOSTILE] {
        assert!(profile.contains(shown), "the profile shows {shown:?}:\n{profile}");
    }
    let injected = browser
        .client
        .execute("return document.querySelectorAll('#profile img').length", vec![])
        .await
        .expect("runs");
    assert_eq!(injected, json!(0), "a trait value is text, not markup");
    assert_eq!(browser.client.title().await.unwrap(), "Customer 360 · omnistream");
    assert_eq!(browser.text("#tickets").await, "Open tickets\nNo open tickets.");
    let loyalty = browser.text("#loyalty").await;
    for shown in
        ["Spendable\n129", "Pending\n0", "Earned (pending)", "+129", "Became spendable", "order o-ui-1"]
    {
        assert!(loyalty.contains(shown), "loyalty shows {shown:?}:\n{loyalty}");
    }
    let reachability = words(&browser.text("#reachability").await);
    for shown in [
        "Marketing may go out on Email",
        "Email May send now",
        "SMS Do not send the customer withdrew consent until they consent again",
    ] {
        assert!(reachability.contains(shown), "reachability shows {shown:?}:\n{reachability}");
    }
    let consent = browser.text("#consent").await;
    assert!(
        consent.contains("Email marketing: granted") && consent.contains("SMS marketing: withdrawn"),
        "{consent}"
    );
    // Newest first: the SMS withdrawal (ui-4) above the email grant (ui-3).
    let (sms, email) =
        (consent.find("ui-4").expect("ui-4 listed"), consent.find("ui-3").expect("ui-3 listed"));
    assert!(sms < email, "{consent}");
    // One email sent and opened: email is the only channel with a message, ranked first.
    let affinity = browser.text("#affinity").await;
    assert!(affinity.starts_with("Channel affinity\nEmail"), "{affinity}");
    assert_eq!(browser.text("#journeys").await, "Journeys\nNot in any journey.");
    assert!(words(&browser.text("#identity").await).contains("email ann@example.com"));
    browser.wait_for_text("#live", WAIT, |text| text == "Live updates: on").await;

    // Live: a ticket opened on WhatsApp shows up without a reload (the marker set in this page
    // survives), and suppression's answer follows.
    browser.client.execute("window.stillThisPage = true", vec![]).await.expect("runs");
    let ticket = event(
        "ui-7",
        0,
        "whatsapp",
        "support_ticket_opened",
        json!({"ticket_id": "T-UI-9", "topic": "delivery"}),
    );
    let (status, answer) = stack.post_events(&json!({ "events": [ticket] }), None).await;
    assert_eq!(status, 200, "{answer}");
    browser.wait_for_text("#tickets", WAIT, |text| text.contains("T-UI-9 on WhatsApp about delivery")).await;
    browser
        .wait_for_text("#reachability", WAIT, |text| {
            let text = words(text);
            text.contains("Email Do not send a support ticket is open")
                && text.contains("until the ticket is resolved")
        })
        .await;
    let same_page =
        browser.client.execute("return window.stillThisPage === true", vec![]).await.expect("runs");
    assert_eq!(same_page, json!(true), "updated in place, not reloaded");
    assert!(browser.text("#message").await.starts_with("Updated at"), "the update is announced");
    browser.client.execute("window.scrollTo(0, 0)", vec![]).await.expect("runs");
    let shot = browser.screenshot(Path::new("target/ui/customer-360.png")).await;
    assert!(std::fs::metadata(&shot).expect("the screenshot").len() > 10_000, "{}", shot.display());

    // An email no one has.
    browser.fill("#customer-id", "nobody@example.com\u{E007}").await;
    browser
        .wait_for_text("#message", WAIT, |text| text == "No customer with the email nobody@example.com.")
        .await;

    // A key without `read:loyalty`: the rest shows, loyalty says why it does not.
    browser.click("#search-by option[value=customer_id]").await;
    browser.fill("#customer-id", CUSTOMER).await;
    browser.fill("#api-key", DESK_KEY).await;
    browser.click("#search button").await;
    browser
        .wait_for_text("#loyalty", WAIT, |text| text.contains("Your API key may not read loyalty points."))
        .await;
    assert!(browser.text("#profile").await.contains("€129.90"));

    // Not found: an id no service knows, searched from the keyboard (Enter in the field).
    browser.fill("#customer-id", "nobody-at-all\u{E007}").await;
    browser
        .wait_for_text("#message", WAIT, |text| text.starts_with("No customer with the id “nobody-at-all”"))
        .await;
    assert!(!browser.is_displayed("#customer").await, "no customer shown");

    // Erased: a customer with points asks to be forgotten (SPEC 4.5); the page says so, and
    // nothing of them is left on it.
    let gone = |id: &str, kind: &str, properties: Value| {
        let mut event = event(id, 1, "web", kind, properties);
        event["customer_id"] = json!("c-ui-gone");
        event
    };
    let order =
        gone("ui-g1", "order_placed", json!({"order_id": "o-ui-g", "value_minor": 5000, "currency": "EUR"}));
    let erasure = gone("ui-g2", "erasure_requested", json!({}));
    let (status, answer) = stack.post_events(&json!({ "events": [order, erasure] }), None).await;
    assert_eq!(status, 200, "{answer}");
    stack
        .api_until("/v1/customers/c-ui-gone/reachability", WAIT, |r| {
            r["known"] == false && r["channels"][0]["reasons"][0]["code"] == "erased"
        })
        .await;
    browser.fill("#customer-id", "c-ui-gone\u{E007}").await;
    browser
        .wait_for_text("#message", WAIT, |text| {
            text == "Customer “c-ui-gone” was erased at their request: nothing is held on them."
        })
        .await;
    // Hidden text reads as "" through WebDriver whatever it holds: the document is asked.
    let left = browser
        .client
        .execute(
            "return document.getElementById('customer-title').textContent + document.querySelectorAll('#customer .body *').length",
            vec![],
        )
        .await
        .expect("runs");
    assert_eq!(left, json!("0"), "nothing of the previous customer is left in the page");
    browser.close().await;
}
