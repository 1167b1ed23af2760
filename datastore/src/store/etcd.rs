//! The etcd v3 [`Store`]: what every user-facing command and the node daemon run on.
//!
//! Requests carry a deadline so that an unreachable etcd is an error within seconds, not a hang.
//! Watches run in a task of their own that reconnects with back-off when etcd goes away and
//! re-lists when the history it needs was compacted, logging both.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    prefix_end, KeyValue, Listing, Operation, Precondition, Revision, Store, StoreError,
    Transaction, Watch, WatchEvent, REQUEST_TIMEOUT,
};

/// How many keys one range request returns; larger listings are paged at one revision.
const PAGE_SIZE: i64 = 1000;

/// The longest pause between two attempts to re-establish a watch.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(5);

/// How to reach etcd: the same settings calicoctl takes (`ETCD_ENDPOINTS`, `ETCD_USERNAME`,
/// `ETCD_PASSWORD`, `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// User name for etcd authentication.
    pub username: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// CA certificate (PEM) that signed etcd's server certificate.
    pub ca_cert_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Deadline for connecting and for each request.
    pub timeout: Option<Duration>,
}

impl EtcdConfig {
    /// A configuration from a comma-separated endpoint list, as `ETCD_ENDPOINTS` holds it.
    pub fn from_endpoints(endpoints: &str) -> Result<Self, StoreError> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Config("no etcd endpoint given".into()));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {e:?} must start with http:// or https://"
                )));
            }
        }
        Ok(EtcdConfig {
            endpoints,
            ..EtcdConfig::default()
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(REQUEST_TIMEOUT)
    }

    fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout())
            .with_timeout(self.timeout())
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => options = options.with_user(user, password),
            (None, None) => {}
            _ => {
                return Err(StoreError::Config(
                    "etcd username and password must be given together".into(),
                ))
            }
        }
        if self.ca_cert_file.is_some() || self.cert_file.is_some() || self.key_file.is_some() {
            options = options.with_tls(self.tls_options()?);
        }
        Ok(options)
    }

    fn tls_options(&self) -> Result<TlsOptions, StoreError> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| {
                StoreError::Config(format!("cannot read etcd {what} {}: {e}", path.display()))
            })
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca_cert_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Config(
                    "etcd client certificate and key must be given together".into(),
                ))
            }
        }
        Ok(tls)
    }
}

/// The etcd v3 store. Cloning shares one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers: an unreachable etcd is an error within the
    /// configured timeout (5 s by default).
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        let timeout = config.timeout();
        let options = config.connect_options()?;
        let unavailable = |reason: String| StoreError::Unavailable {
            endpoints: endpoints.clone(),
            reason,
        };
        let client = tokio::time::timeout(
            timeout,
            Client::connect(config.endpoints.clone(), Some(options)),
        )
        .await
        .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unavailable(e.to_string()))?;
        let store = EtcdStore {
            client,
            endpoints: endpoints.clone(),
            timeout,
        };
        // The connection is made lazily: one cheap read proves that etcd is there.
        store.get("/calico/").await?;
        Ok(store)
    }

    /// The underlying client, for operations outside the [`Store`] trait (tests compact and
    /// inspect through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn map_error(&self, error: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        match error {
            E::TransportError(e) => self.unavailable(e.to_string()),
            E::IoError(e) => self.unavailable(e.to_string()),
            E::GRpcStatus(status) => match status.code() {
                // tonic reports a broken connection as `Unknown: transport error`.
                tonic_code::Unavailable
                | tonic_code::DeadlineExceeded
                | tonic_code::Cancelled
                | tonic_code::Unknown => self.unavailable(status.message().to_string()),
                _ => StoreError::Backend(format!("{:?}: {}", status.code(), status.message())),
            },
            other => StoreError::Backend(other.to_string()),
        }
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.endpoints.clone(),
            reason,
        }
    }

    /// Runs one request under the deadline, mapping both failure kinds.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| self.map_error(e)),
            Err(_) => Err(self.unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Lists a prefix in pages, every page read at the revision of the first one.
    async fn list_paged(&self, prefix: &str) -> Result<Listing, StoreError> {
        let end = prefix_end(prefix);
        let mut kv = self.client.kv_client();
        let mut from = prefix.as_bytes().to_vec();
        let mut listing = Listing::default();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE);
            if listing.revision > 0 {
                options = options.with_revision(listing.revision);
            }
            let response = self.call(kv.get(from.clone(), Some(options))).await?;
            if listing.revision == 0 {
                listing.revision = response.header().map_or(0, |h| h.revision());
            }
            for item in response.kvs() {
                listing.kvs.push(convert(item));
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(listing),
            }
        }
    }
}

/// gRPC status codes, under a short name.
use tonic::Code as tonic_code;

fn convert(item: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(item.key()).into_owned(),
        value: item.value().to_vec(),
        create_revision: item.create_revision(),
        mod_revision: item.mod_revision(),
    }
}

fn compare(precondition: &Precondition) -> Compare {
    match precondition {
        Precondition::Absent(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
        Precondition::Exists(k) => Compare::create_revision(k.as_str(), CompareOp::Greater, 0),
        Precondition::ModRevision(k, rev) => {
            Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev)
        }
    }
}

fn txn_op(operation: &Operation) -> TxnOp {
    match operation {
        Operation::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
        Operation::Delete { key } => TxnOp::delete(key.as_str(), None),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call(kv.get(key, None)).await?;
        Ok(response.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.list_paged(prefix).await
    }

    async fn transaction(&self, txn: Transaction) -> Result<Revision, StoreError> {
        let request = Txn::new()
            .when(txn.preconditions.iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.operations.iter().map(txn_op).collect::<Vec<_>>());
        let mut kv = self.client.kv_client();
        let response = self.call(kv.txn(request)).await?;
        if !response.succeeded() {
            return Err(StoreError::TransactionFailed);
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch, StoreError> {
        let (watch, tx, stop) = Watch::channel();
        let task = WatchTask {
            store: self.clone(),
            prefix: prefix.to_string(),
            next_revision: from_revision,
            events: tx,
            stop,
        };
        tokio::spawn(task.run());
        Ok(watch)
    }
}

/// Why one etcd watch stream ended.
enum StreamEnd {
    /// The consumer dropped the [`Watch`] or the store shut down: stop for good.
    Stopped,
    /// etcd went away: reconnect with back-off.
    Disconnected(String),
    /// The history needed was compacted: re-list, then resume.
    Compacted(Revision),
}

/// The task behind one etcd watch: keeps an etcd watch stream alive across disconnections and
/// compactions, and feeds the consumer's bounded channel.
struct WatchTask {
    store: EtcdStore,
    prefix: String,
    next_revision: Revision,
    events: mpsc::Sender<WatchEvent>,
    stop: CancellationToken,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut was_disconnected = false;
        loop {
            match self.stream_once(&mut was_disconnected, &mut backoff).await {
                StreamEnd::Stopped => return,
                StreamEnd::Disconnected(reason) => {
                    if !was_disconnected {
                        warn!(prefix = %self.prefix, %reason,
                            "watch lost its connection to etcd; reconnecting with back-off");
                    }
                    was_disconnected = true;
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
                }
                StreamEnd::Compacted(compacted) => {
                    info!(prefix = %self.prefix, wanted = self.next_revision, compacted,
                        "watch history was compacted; re-listing and resuming");
                    if self.resync().await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps unless stopped; true when stopped.
    async fn pause(&self, how_long: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(how_long) => false,
        }
    }

    /// Re-lists the prefix (retrying while etcd is away) and hands the listing to the consumer.
    /// True when stopped.
    async fn resync(&mut self) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.list(&self.prefix).await {
                Ok(listing) => {
                    self.next_revision = listing.revision + 1;
                    return self.events.send(WatchEvent::Resync(listing)).await.is_err();
                }
                Err(e) => {
                    debug!(prefix = %self.prefix, error = %e, "re-list for watch failed; retrying");
                    if self.pause(backoff).await {
                        return true;
                    }
                    backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
                }
            }
        }
    }

    /// Runs one etcd watch stream until it ends.
    async fn stream_once(
        &mut self,
        was_disconnected: &mut bool,
        backoff: &mut Duration,
    ) -> StreamEnd {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next_revision)
            .with_progress_notify();
        let mut client = self.store.client.clone();
        let opened = tokio::select! {
            _ = self.stop.cancelled() => return StreamEnd::Stopped,
            opened = tokio::time::timeout(self.store.timeout, client.watch(self.prefix.as_str(), Some(options))) => opened,
        };
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return StreamEnd::Disconnected(e.to_string()),
            Err(_) => return StreamEnd::Disconnected("watch request timed out".into()),
        };
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => return StreamEnd::Stopped,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return StreamEnd::Disconnected("watch stream closed".into()),
                Err(e) => return StreamEnd::Disconnected(e.to_string()),
            };
            if response.compact_revision() > 0 {
                return StreamEnd::Compacted(response.compact_revision());
            }
            if response.canceled() {
                return StreamEnd::Disconnected(format!(
                    "watch cancelled by etcd: {}",
                    response.cancel_reason()
                ));
            }
            if *was_disconnected {
                info!(prefix = %self.prefix, revision = self.next_revision,
                    "watch reconnected to etcd and resumed");
                *was_disconnected = false;
                *backoff = Duration::from_millis(100);
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                let out = match event.event_type() {
                    etcd_client::EventType::Put => WatchEvent::Put(convert(kv)),
                    etcd_client::EventType::Delete => WatchEvent::Delete {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        revision,
                    },
                };
                self.next_revision = revision + 1;
                if self.events.send(out).await.is_err() {
                    return StreamEnd::Stopped;
                }
            }
        }
    }
}
