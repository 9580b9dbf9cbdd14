//! Learning the schema ids a process reads, on a thread of its own: a record whose id is not
//! known waits (its reader pauses it) while the registry is asked, and keeps waiting while the
//! registry cannot be reached; it is never refused for that. An id the registry does not have,
//! or whose schema is no omnistream record, is refused: the decoder then rejects the record as
//! `unknown_schema` (bad input).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use omnistream_model::{confluent_schema_id, is_schema_id_known, learn_schema};
use tracing::{info, warn};

use crate::client::{RegistryClient, RegistryError};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Whether a record can be decoded now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Its schema is known, or never will be (the decoder says why).
    Ready,
    /// Its schema id is being learned from the registry: hold the record, ask again later.
    Wait(u32),
}

/// Learns schema ids from the registry, if there is one.
#[derive(Debug)]
pub struct SchemaLearner {
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    client: RegistryClient,
    ids: Mutex<Ids>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Ids {
    wanted: BTreeSet<u32>,
    refused: BTreeSet<u32>,
    stop: bool,
}

impl Shared {
    fn ids(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SchemaLearner {
    pub(crate) fn start(client: Option<RegistryClient>) -> Self {
        let Some(client) = client else { return Self { shared: None, thread: None } };
        let shared = Arc::new(Shared { client, ids: Mutex::default(), wake: Condvar::new() });
        let thread = std::thread::Builder::new()
            .name("schema-ids".into())
            .spawn({
                let shared = shared.clone();
                move || learn_wanted_ids(&shared)
            })
            .expect("a thread starts");
        Self { shared: Some(shared), thread: Some(thread) }
    }

    /// Whether `bytes` can be decoded now; a Confluent record of an id not known yet starts
    /// its learning.
    pub fn check(&self, bytes: &[u8]) -> SchemaCheck {
        let Some(id) = confluent_schema_id(bytes) else { return SchemaCheck::Ready };
        match &self.shared {
            Some(shared) if !is_schema_id_known(id) => {
                let mut ids = shared.ids();
                if ids.refused.contains(&id) || is_schema_id_known(id) {
                    return SchemaCheck::Ready;
                }
                if ids.wanted.insert(id) {
                    shared.wake.notify_all();
                }
                SchemaCheck::Wait(id)
            }
            _ => SchemaCheck::Ready,
        }
    }

    /// Waits until `bytes` can be decoded, or `keep_waiting` says to stop (then `false`): for
    /// readers that may stop everything while the registry is down.
    pub fn wait_until_ready(&self, bytes: &[u8], keep_waiting: impl Fn() -> bool) -> bool {
        let mut warned = false;
        let started = Instant::now();
        while let SchemaCheck::Wait(id) = self.check(bytes) {
            if !keep_waiting() {
                return false;
            }
            if !warned && started.elapsed() > Duration::from_secs(5) {
                warn!(id, "waiting for the schema registry to tell schema id {id}");
                warned = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// How many schema ids are being learned now.
    pub fn waiting(&self) -> usize {
        self.shared.as_ref().map_or(0, |shared| shared.ids().wanted.len())
    }
}

impl Drop for SchemaLearner {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.ids().stop = true;
            shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn learn_wanted_ids(shared: &Shared) {
    let mut retry = FIRST_RETRY;
    let mut last_warned: Option<Instant> = None;
    loop {
        let id = {
            let mut ids = shared.ids();
            while ids.wanted.is_empty() && !ids.stop {
                ids = shared.wake.wait(ids).unwrap_or_else(PoisonError::into_inner);
            }
            if ids.stop {
                return;
            }
            *ids.wanted.first().expect("not empty")
        };
        let learned = shared
            .client
            .schema_text(id)
            .and_then(|text| learn_schema(id, &text).map_err(|e| RegistryError::Settings(e.to_string())));
        match learned {
            Ok(kind) => {
                info!(id, ?kind, "schema registry: schema id learned");
                shared.ids().wanted.remove(&id);
                retry = FIRST_RETRY;
                last_warned = None;
            }
            Err(error) if error.is_transient() => {
                // Logged at once, then every minute: the readers hold their records meanwhile.
                if last_warned.is_none_or(|warned| warned.elapsed() >= Duration::from_secs(60)) {
                    warn!(id, %error, "schema registry unavailable: records of this schema id wait");
                    last_warned = Some(Instant::now());
                }
                let ids = shared.ids();
                if !ids.stop {
                    let _ = shared.wake.wait_timeout(ids, retry);
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
            Err(error) => {
                warn!(id, %error, "schema id refused: its records are rejected as unknown_schema");
                let mut ids = shared.ids();
                ids.wanted.remove(&id);
                ids.refused.insert(id);
            }
        }
    }
}
