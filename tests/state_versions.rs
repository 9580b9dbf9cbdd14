//! Changelog records written by earlier releases still restore (docs/runtime.md, State
//! versions). The samples under `tests/state-samples/v1/` were written by release d331c2b itself
//! (a throwaway program that folded simulated customers with that release's cores and serialized
//! each entry as its runtime did), next to a JSON rendering of the same state: every field the old
//! release wrote must come back unchanged, except the ones each service's upgrade documents.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, Utc};
use omnistream_runtime::Processor;
use omnistream_runtime::changelog::{self, StateDecodeError};
use serde_json::Value;

fn samples(service: &str) -> Vec<(PathBuf, Vec<u8>, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("state-samples/v1");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "msgpack")
                && path.file_name().unwrap().to_string_lossy().starts_with(&format!("{service}-"))
        })
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let json: Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
            (path, bytes, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no {service} samples in {}", dir.display());
    found
}

/// Asserts that every field of `old` is in `new` with the same value, but for the paths (dotted,
/// `*` for any array element) `except` names.
fn contains(old: &Value, new: &Value, path: &str, except: &[&str]) {
    if except.iter().any(|pattern| matches(pattern, path)) {
        return;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                let inner = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let new_value = new.get(key).unwrap_or_else(|| panic!("{inner} is gone"));
                contains(value, new_value, &inner, except);
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            assert_eq!(old.len(), new.len(), "{path}: length");
            for (index, (old, new)) in old.iter().zip(new).enumerate() {
                contains(old, new, &format!("{path}.{index}"), except);
            }
        }
        _ => assert_eq!(old, new, "{path}"),
    }
}

fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, path): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), path.split('.').collect());
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
}

/// Decodes each sample, compares it with the old release's JSON, and checks that the record this
/// build writes for it decodes to the same state. Returns the upgraded states as JSON.
fn restore<P: Processor>(processor: &P, service: &str, except: &[&str]) -> Vec<(Value, Value)> {
    samples(service)
        .into_iter()
        .map(|(path, bytes, old)| {
            let entry = changelog::decode(processor, &bytes)
                .unwrap_or_else(|e| panic!("{} does not restore: {e}", path.display()));
            assert!(!entry.recent.is_empty(), "{}: dedupe ids", path.display());
            let new = serde_json::to_value(entry.state.as_ref().unwrap()).unwrap();
            contains(&old, &new, "", except);
            let mut rewritten = Vec::new();
            changelog::encode::<P>(&entry, omnistream_runtime::IdsLayout::Bytes, &mut rewritten);
            let again = changelog::decode(processor, &rewritten).unwrap();
            assert_eq!(
                serde_json::to_value(again.state.as_ref().unwrap()).unwrap(),
                new,
                "{}",
                path.display()
            );
            (old, new)
        })
        .collect()
}

/// Every (ticket id, time, resolves) fact in a restored state's ticket logs, sorted.
fn ticket_facts(state: &Value) -> Vec<(String, i64, bool)> {
    let mut facts: Vec<(String, i64, bool)> = Vec::new();
    for log in state["tickets"].as_array().unwrap() {
        let id = log["ticket_id"].as_str().unwrap();
        for fact in log["facts"].as_array().unwrap() {
            facts.push((id.to_owned(), fact["at"].as_i64().unwrap(), fact["resolves"].as_bool().unwrap()));
        }
    }
    facts.sort();
    facts
}

#[test]
fn profiles_of_version_1_restore_with_their_tickets_in_logs() {
    let restored =
        restore(&omnistream_profile_updater::ProfileUpdater, "profile-updater", &["resolved_tickets"]);
    for (old, new) in restored {
        assert_eq!(new["resolved_tickets"], serde_json::json!([]));
        let mut want: Vec<(String, i64, bool)> = old["profile"]["open_tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["ticket_id"].as_str().unwrap().to_owned(), t["opened_at"].as_i64().unwrap(), false))
            .collect();
        // The last resolution's opening, which version 1 kept only there.
        let last = &old["profile"]["last_resolved_ticket"];
        if let Some(opened_at) = last["opened_at"].as_i64() {
            want.push((last["ticket_id"].as_str().unwrap().to_owned(), opened_at, false));
        }
        want.extend(
            old["resolved_tickets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t[0].as_str().unwrap().to_owned(), t[1].as_i64().unwrap(), true)),
        );
        want.sort();
        assert_eq!(ticket_facts(&new), want);
    }
}

#[test]
fn affinity_of_version_1_restores_unchanged() {
    restore(&omnistream_channel_affinity::ChannelAffinityProcessor::default(), "channel-affinity", &[]);
}

#[test]
fn suppression_of_version_1_moves_time_zone_tickets_and_last_order() {
    let moved = ["timezone", "open_tickets", "resolved_tickets", "last_order_at"];
    let restored = restore(&omnistream_suppression::Suppression::default(), "suppression", &moved);
    let mut zones = 0;
    for (old, new) in restored {
        assert_eq!(new["timezone"], Value::Null);
        // Each open or resolved ticket becomes a log of that one fact.
        let facts = |key: &str, resolves: bool| -> Vec<(String, i64, bool)> {
            old[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t[0].as_str().unwrap().to_owned(), t[1].as_i64().unwrap(), resolves))
                .collect()
        };
        let mut want = facts("open_tickets", false);
        want.extend(facts("resolved_tickets", true));
        want.sort();
        assert_eq!(ticket_facts(&new), want);
        assert_eq!(new["open_tickets"], serde_json::json!([]));
        let orders: Vec<Value> = old["last_order_at"].as_i64().map(Value::from).into_iter().collect();
        assert_eq!(new["orders"], Value::Array(orders));
        if let Some(name) = old["timezone"][0].as_str() {
            zones += 1;
            let base = &new["timezone_history"]["base"];
            assert_eq!(base[0]["String"].as_str().or(base[0].as_str()), Some(name), "{new:#}");
            assert_eq!(base[1], old["timezone"][1]);
        }
    }
    assert!(zones > 0, "no sample holds a time zone");
}

#[test]
fn loyalty_of_version_1_moves_expiry_to_the_calendar_date() {
    let restored = restore(
        &omnistream_loyalty_points::LoyaltyPoints::default(),
        "loyalty-points",
        &["lots.*.expires_at"],
    );
    let mut lots = 0;
    for (old, new) in restored {
        for (old_lot, new_lot) in old["lots"].as_array().unwrap().iter().zip(new["lots"].as_array().unwrap())
        {
            lots += 1;
            let earned =
                DateTime::<Utc>::from_timestamp_millis(old_lot["earned_at"].as_i64().unwrap()).unwrap();
            // 12 calendar months (the default) by chrono, not by the service's own month arithmetic.
            let calendar = earned.checked_add_months(Months::new(12)).unwrap().timestamp_millis();
            assert_eq!(new_lot["expires_at"].as_i64(), Some(calendar));
            // Version 1 expired them 360 days after the order.
            assert_eq!(old_lot["expires_at"].as_i64(), Some(earned.timestamp_millis() + 360 * 86_400_000));
        }
    }
    assert!(lots > 0, "no sample holds a lot");
}

#[test]
fn a_record_from_a_newer_release_is_refused_not_misread() {
    let (_, bytes, _) = samples("loyalty-points").remove(0);
    let processor = omnistream_loyalty_points::LoyaltyPoints::default();
    let entry = changelog::decode(&processor, &bytes).unwrap();
    let mut record = Vec::new();
    changelog::encode::<omnistream_loyalty_points::LoyaltyPoints>(
        &entry,
        omnistream_runtime::IdsLayout::Bytes,
        &mut record,
    );
    record[1] += 1;
    match changelog::decode(&processor, &record) {
        Err(StateDecodeError::Newer { written: 3, supported: 2 }) => {}
        other => panic!("{other:?}"),
    }
}
