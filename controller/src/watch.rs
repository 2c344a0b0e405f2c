//! One watch per resource type, shared by every controller that reads or
//! reacts to it.
//!
//! A [`SharedWatch`] runs one `watcher` into one reflector store and hands
//! every object it touches (applied or deleted) to each subscriber, after
//! the store has it. A controller that is triggered by a subscription and
//! reads the same store therefore never sees an older state than the event
//! that started its reconcile, and the API server serves one watch per type
//! instead of one per (controller, type).
//!
//! kube-runtime's own shared streams (`store_shared`) hand out only applied
//! objects; the PolicyServer reconciler must also hear of deleted policies,
//! to drop them from `policies.yml`.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;

use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

/// Objects a subscriber may lag behind before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// A watch with its store and its subscribers; [`SharedWatch::run`] drives it.
pub struct SharedWatch<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Vec<mpsc::Sender<K>>,
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A watch of `api`'s objects matching `config`.
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Self {
            api,
            config,
            store,
            writer,
            subscribers: Vec::new(),
        }
    }

    /// The cache this watch fills.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A stream of every object this watch touches from now on (including
    /// deleted ones, in their last state), each after the store has it.
    /// Poll it, or drop it: the watch waits for subscribers that lag more
    /// than a buffer behind.
    pub fn subscribe(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(tx);
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|object| (Ok(object), rx))
        })
    }

    /// Runs the watch until `shutdown` completes. Watch errors are logged
    /// and retried with kube-runtime's default backoff.
    pub fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Self {
            api,
            config,
            writer,
            mut subscribers,
            ..
        } = self;
        let kind = K::kind(&()).into_owned();
        let events = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects()
            .take_until(shutdown);
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(object) => {
                        let mut i = 0;
                        while i < subscribers.len() {
                            if subscribers[i].send(object.clone()).await.is_err() {
                                // That controller has stopped.
                                subscribers.swap_remove(i);
                            } else {
                                i += 1;
                            }
                        }
                    }
                    Err(error) => warn!(%error, kind, "watch failed; retrying"),
                }
            }
        }
    }
}
