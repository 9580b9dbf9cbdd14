//! Learning the schema ids a process reads, on a thread of its own: a record whose id is not
//! known waits (its reader pauses it) while the registry is asked, and keeps waiting while the
//! registry cannot be reached or answers anything but the schema or a plain "no such id" (a 5xx,
//! a 401 while credentials rotate, a proxy's page): it is never refused for that. An id the
//! registry says it does not have, or whose schema is no omnistream record, is refused: the
//! decoder then rejects the record as `unknown_schema` (bad input). A refusal is asked again after
//! [`REFUSAL_TTL`]: a replica that had not caught up, or a restored version, is then believed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use omnistream_model::{confluent_schema_id, is_schema_id_known, learn_schema};
use tracing::{info, warn};

use crate::client::{RegistryClient, RegistryError};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// How long an id the registry refused stays refused before it is asked again.
pub const REFUSAL_TTL: Duration = Duration::from_secs(300);

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
    /// When each refused id was refused.
    refused: HashMap<u32, Instant>,
    stop: bool,
}

impl Shared {
    fn ids(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What asking the registry for an id came to.
enum Asked {
    Learned(omnistream_model::RecordKind),
    /// The record is bad input: the registry has no such id, or its schema is no omnistream record.
    Refused(String),
    /// The registry could not say: ask again.
    Unanswered(RegistryError),
}

impl SchemaLearner {
    pub(crate) fn start(client: Option<RegistryClient>) -> Result<Self, RegistryError> {
        let Some(client) = client else { return Ok(Self { shared: None, thread: None }) };
        client.check_api()?;
        let shared = Arc::new(Shared { client, ids: Mutex::default(), wake: Condvar::new() });
        let thread = std::thread::Builder::new()
            .name("schema-ids".into())
            .spawn({
                let shared = shared.clone();
                move || learn_wanted_ids(&shared)
            })
            .expect("a thread starts");
        Ok(Self { shared: Some(shared), thread: Some(thread) })
    }

    /// Whether `bytes` can be decoded now; a Confluent record of an id not known yet starts
    /// its learning.
    pub fn check(&self, bytes: &[u8]) -> SchemaCheck {
        let Some(id) = confluent_schema_id(bytes) else { return SchemaCheck::Ready };
        match &self.shared {
            Some(shared) if !is_schema_id_known(id) => {
                let mut ids = shared.ids();
                if is_schema_id_known(id) {
                    return SchemaCheck::Ready;
                }
                match ids.refused.get(&id) {
                    Some(refused) if refused.elapsed() < REFUSAL_TTL => return SchemaCheck::Ready,
                    Some(_) => {
                        ids.refused.remove(&id);
                    }
                    None => {}
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
    /// readers that may hold everything while the registry is down.
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

fn ask(client: &RegistryClient, id: u32) -> Asked {
    match client.schema_text(id) {
        Ok(text) => match learn_schema(id, &text) {
            Ok(kind) => Asked::Learned(kind),
            Err(error) => Asked::Refused(error.to_string()),
        },
        Err(error @ RegistryError::NoSuchId { .. }) => Asked::Refused(error.to_string()),
        Err(error) => Asked::Unanswered(error),
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
        match ask(&shared.client, id) {
            Asked::Learned(kind) => {
                info!(id, ?kind, "schema registry: schema id learned");
                shared.ids().wanted.remove(&id);
                retry = FIRST_RETRY;
                last_warned = None;
            }
            Asked::Refused(reason) => {
                warn!(id, reason, "schema id refused: its records are rejected as unknown_schema");
                let mut ids = shared.ids();
                ids.wanted.remove(&id);
                ids.refused.insert(id, Instant::now());
            }
            Asked::Unanswered(error) => {
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
        }
    }
}
