//! The fuzz targets' short run in `make test` (stable, no libFuzzer): every seed of
//! `fuzz/corpus/<target>/`, every input of `fuzz/regressions/<target>/` (what a fuzzer once
//! found, kept so that it stays fixed), and a few hundred mutants of each seed (bit flips,
//! insertions, deletions, truncations, splices; a fixed random seed, so a failure replays).
//! `OMNISTREAM_WRITE_CORPUS=1` writes the seeds again from the inputs below.

use std::path::{Path, PathBuf};

use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_fuzz_targets::{TARGETS, now};
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::codec::current_header;
use omnistream_model::{RecordKind, encode_event, event_from_json};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::changelog;
use omnistream_suppression::Suppression;

const MUTANTS_PER_SEED: usize = 300;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// xorshift64*: enough randomness to mutate with, and the same on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutant(seed: &[u8], other: &[u8], random: &mut Random) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=random.below(4) {
        let at = random.below(bytes.len() + 1);
        match random.below(6) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << random.below(8);
            }
            1 => bytes.insert(at, random.next() as u8),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            // Interesting bytes: lengths and counts at their edges.
            4 => bytes
                .splice(at..at, [0x00, 0x7f, 0x80, 0xff, 0x01][random.below(5)..].iter().copied())
                .for_each(drop),
            _ => {
                let from = random.below(other.len() + 1);
                let to = from + random.below(other.len() - from + 1);
                bytes.splice(at..at, other[from..to].iter().copied()).for_each(drop);
            }
        }
    }
    bytes
}

/// The seeds are inputs each door accepts: a fuzzer starts from the paths that do something.
#[test]
fn the_seeds_are_valid_inputs() {
    let corpus = |name: &str| inputs(&fuzz_dir().join("corpus").join(name));
    let header = current_header(RecordKind::TouchpointEvent);
    for (path, datum) in corpus("touchpoint_avro") {
        let bytes = [header.as_slice(), &datum].concat();
        assert!(omnistream_model::decode_event(&bytes).is_ok(), "{}", path.display());
    }
    for (path, text) in corpus("touchpoint_json") {
        let value = serde_json::from_slice(&text).expect("JSON");
        assert!(event_from_json(&value, now()).is_ok(), "{}", path.display());
    }
    for (path, seed) in corpus("changelog_state") {
        let (which, bytes) = seed.split_first().expect("a selector byte");
        let decodes = match which {
            0 => changelog::decode(&ProfileUpdater, bytes).is_ok(),
            1 => changelog::decode(&Suppression::default(), bytes).is_ok(),
            2 => changelog::decode(&ChannelAffinityProcessor::default(), bytes).is_ok(),
            _ => changelog::decode(&LoyaltyPoints::new(LoyaltyRules::default()), bytes).is_ok(),
        };
        assert!(decodes, "{}", path.display());
    }
}

#[test]
fn every_seed_regression_and_mutant_passes_every_target() {
    if std::env::var_os("OMNISTREAM_WRITE_CORPUS").is_some() {
        write_seeds();
    }
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for (name, target) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} holds seeds (OMNISTREAM_WRITE_CORPUS=1 writes them)");
        for (path, bytes) in seeds.iter().chain(&inputs(&fuzz_dir().join("regressions").join(name))) {
            let outcome = std::panic::catch_unwind(|| target(bytes));
            assert!(outcome.is_ok(), "{name} fails on {}", path.display());
        }
        for (index, (path, seed)) in seeds.iter().enumerate() {
            let other = &seeds[(index + 1) % seeds.len()].1;
            for _ in 0..MUTANTS_PER_SEED {
                let bytes = mutant(seed, other, &mut random);
                let outcome = std::panic::catch_unwind(|| target(&bytes));
                assert!(outcome.is_ok(), "{name} fails on a mutant of {}: {bytes:?}", path.display());
            }
        }
    }
}

/// Valid inputs of each door, for the fuzzers to start from.
fn write_seeds() {
    let events = [
        r#"{"event_id":"s-1","customer_id":"c-1","occurred_at":"2026-12-05T11:00:00Z","channel":"web","type":"page_viewed","properties":{"url":"/"}}"#,
        r#"{"event_id":"s-2","customer_id":"c-1","occurred_at":"2026-12-05T11:01:00Z","channel":"store","type":"order_placed","source":"till-7","properties":{"order_id":"o-1","value_minor":12990,"currency":"EUR","items":3}}"#,
        r#"{"event_id":"s-3","customer_id":"c-2","occurred_at":"2026-12-05T11:02:00Z","channel":"whatsapp","type":"support_ticket_opened","properties":{"ticket_id":"T-77","topic":"delivery"}}"#,
        r#"{"event_id":"s-4","customer_id":"c-2","occurred_at":"2026-12-05T11:03:00Z","channel":"email","type":"consent_changed","properties":{"purpose":"marketing","granted":false}}"#,
        r#"{"event_id":"s-5","customer_id":"c-3","occurred_at":"2026-12-05T11:04:00Z","channel":"web","type":"traits_updated","properties":{"set":{"first_name":"Ann","vip":true,"score":4.5},"set_once":{"signup":"2026"},"unset":["nickname"]},"identifiers":[{"type":"email","value":" Ann@Example.COM"},{"type":"phone","value":"+1 415 555 0100"}]}"#,
        r#"{"event_id":"s-6","customer_id":"c-3","occurred_at":"2026-12-05T11:05:00Z","channel":"sms","type":"message_bounced","properties":{"message_id":"m-1","hard":true}}"#,
        r#"{"event_id":"s-7","customer_id":"c-4","occurred_at":"2026-12-05T11:06:00Z","channel":"web","type":"loyalty_points_adjusted","properties":{"points":-20,"reason":"goodwill"},"campaign":"x"}"#,
        r#"{"event_id":"s-8","customer_id":"c-4","occurred_at":"2026-12-05T11:07:00Z","channel":"call_center","type":"erasure_requested","properties":{}}"#,
    ];
    let write = |target: &str, index: usize, bytes: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("creates the corpus directory");
        std::fs::write(dir.join(format!("seed-{index:02}")), bytes).expect("writes a seed");
    };
    let header = current_header(RecordKind::TouchpointEvent);
    for (index, text) in events.iter().enumerate() {
        write("touchpoint_json", index, text.as_bytes());
        let event =
            event_from_json(&serde_json::from_str(text).expect("JSON"), now()).expect("a valid event");
        let encoded = encode_event(&event).expect("encodes");
        write("touchpoint_avro", index, &encoded[header.len()..]);
    }
    write("gateway_body", 0, format!(r#"{{"events": [{}]}}"#, events.join(",")).as_bytes());
    write("gateway_body", 1, events[1].as_bytes());
    write("gateway_body", 2, br#"{"events": [{"event_id": "x"}, 7, []]}"#);
    let repo = fuzz_dir().join("..");
    let text = |path: &str| std::fs::read(repo.join(path)).expect("an example file");
    let rules = [
        (0u8, text("deploy/suppression-rules.example.toml")),
        (1, text("deploy/loyalty-rules.example.toml")),
        (2, b"blocked_values = [\"test\"]\n[types.email]\nlimit = 3\npriority = 2\n[types.user_id]\nstrong = true\nlimit = 1\npriority = 0\nblocked = [\"^0+$\"]\n".to_vec()),
        (3, text("journeys/black-friday.toml")),
        (3, text("journeys/price-drop.toml")),
    ];
    for (index, (which, text)) in rules.into_iter().enumerate() {
        let mut bytes = vec![which];
        bytes.extend(text);
        write("rules_files", index, &bytes);
    }
    let samples = repo.join("tests/state-samples/v1");
    let services = ["profile-updater", "suppression", "channel-affinity", "loyalty-points"];
    let mut index = 0;
    for (path, bytes) in inputs(&samples) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(which) = services.iter().position(|service| name.starts_with(service)) else { continue };
        if !name.ends_with(".msgpack") {
            continue;
        }
        let mut seed = vec![u8::try_from(which).expect("four services")];
        seed.extend(bytes);
        write("changelog_state", index, &seed);
        index += 1;
    }
}
