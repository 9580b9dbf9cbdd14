//! Live updates: after each commit the writer announces which customers it changed, and
//! `GET /v1/customers/{id}/changes` tells a watcher (the customer 360 page) when the customer
//! it shows changed, as server-sent events. An event names the customer, not what changed: the
//! watcher reads the customer again through the routes its key may read.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::identity_document;
use crate::store::{LedgerDepth, Store};

/// Commits a slow watcher may fall behind by before it is told it missed some (and reads
/// the customer again anyway). The feed holds this many commits' ids while anyone watches: at
/// most 64 × 2,000 ids, a few MiB.
const FEED_CAPACITY: usize = 64;

/// Streams open at once, at most: each scans every commit's ids.
pub const MAX_WATCHERS: usize = 1_000;

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The customers each commit changed.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    commits: broadcast::Sender<Arc<[Arc<str>]>>,
    /// Ends every stream at shutdown: an open stream would hold the server's graceful stop.
    shutdown: CancellationToken,
}

impl ChangeFeed {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { commits: broadcast::channel(FEED_CAPACITY).0, shutdown }
    }

    /// Announces a commit's customers; nothing is built while no one watches (a catch-up
    /// commits millions).
    pub fn committed<'a>(&self, customers: impl Iterator<Item = &'a str>) {
        if self.commits.receiver_count() == 0 {
            return;
        }
        let mut seen = HashSet::new();
        let changed: Arc<[Arc<str>]> = customers.filter(|id| seen.insert(*id)).map(Arc::from).collect();
        if !changed.is_empty() {
            // No receiver left since the count: nothing to tell.
            let _ = self.commits.send(changed);
        }
    }

    /// The events of one watched customer: `open` first, then `change` after every commit
    /// that touched it, under any of its ids (the id asked for, the customer it was merged
    /// into, the ids merged into that one), until the client leaves or the API stops. With it,
    /// the customer the id stands for now. `None` when [`MAX_WATCHERS`] streams are open.
    pub fn watch(
        &self,
        store: Arc<Store>,
        customer_id: String,
    ) -> Option<(Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, String)> {
        if self.commits.receiver_count() >= MAX_WATCHERS {
            return None;
        }
        let (ids, canonical) = watched_ids(&store, &customer_id);
        let state = Watch {
            commits: self.commits.subscribe(),
            ids,
            store,
            customer_id,
            shutdown: self.shutdown.clone(),
            opened: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let event = state.next().await?;
            Some((Ok(event), state))
        });
        Some((Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)), canonical))
    }
}

struct Watch {
    commits: broadcast::Receiver<Arc<[Arc<str>]>>,
    store: Arc<Store>,
    customer_id: String,
    /// Every id the customer is known under.
    ids: HashSet<String>,
    shutdown: CancellationToken,
    opened: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Event> {
        if !self.opened {
            self.opened = true;
            return Some(self.event("open"));
        }
        loop {
            let commit = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                commit = self.commits.recv() => commit,
            };
            match commit {
                Ok(changed) if !changed.iter().any(|id| self.ids.contains(&**id)) => {}
                // A merge may have given the customer new ids, or made it another's alias; if
                // commits were missed, whether the customer was among them is unknown: say it
                // may have been.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    self.ids = watched_ids(&self.store, &self.customer_id).0;
                    return Some(self.event("change"));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn event(&self, kind: &str) -> Event {
        Event::default().event(kind).data(serde_json::json!({ "customer_id": self.customer_id }).to_string())
    }
}

/// `customer_id`, the customer it stands for and every id merged into that one; and the
/// customer it stands for.
fn watched_ids(store: &Store, customer_id: &str) -> (HashSet<String>, String) {
    let mut ids = HashSet::from([customer_id.to_owned()]);
    match store.canonical(customer_id, LedgerDepth::None) {
        Ok(Some((canonical, view))) => {
            if let Ok(identity) = identity_document(store, &canonical, &view) {
                let aliases = identity["aliases"].as_array().cloned().unwrap_or_default();
                ids.extend(aliases.iter().filter_map(|alias| alias.as_str().map(str::to_owned)));
            }
            ids.insert(canonical.clone());
            (ids, canonical)
        }
        Ok(None) => (ids, customer_id.to_owned()),
        Err(error) => {
            warn!(%error, "the store cannot be read: watching the id asked for only");
            (ids, customer_id.to_owned())
        }
    }
}
