//! The etcd v3 [`Store`]: what every user-facing command and the node daemon run on.
//!
//! Requests carry a deadline so that an unreachable etcd is an error within seconds, not a hang.
//! With several endpoints (one per member of an etcd cluster) a request that fails on one
//! member as unavailable is sent to the next within that deadline (see [`EtcdStore`]); reads
//! stay linearizable, so an answer from any member is current. Watches run in a task of their
//! own that moves to another member or reconnects with back-off when etcd goes away, and
//! re-lists when the history it needs was compacted, logging both.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::{mpsc, OnceCell};
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

/// One etcd member as this store reaches it: a client of its own, connected on first use.
struct Member {
    url: String,
    client: OnceCell<Client>,
}

/// The etcd v3 store. Cloning shares the connections.
///
/// With several endpoints (one per etcd member) every request goes to one member, the same one
/// while it answers; a request that fails there as unavailable (connection refused or reset, no
/// answer in time, "no leader") is sent to the next member, until the request's deadline. The
/// etcd-client crate's own multi-endpoint channel balances requests over the endpoints and
/// does not retry elsewhere, so a dead member failed a share of all requests: hence one client
/// per member here.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Member>,
    options: ConnectOptions,
    /// Index of the member requests go to first.
    current: AtomicUsize,
    endpoints: String,
    /// Deadline for one request, failovers included.
    timeout: Duration,
    /// Deadline for one attempt on one member: short enough that a dead or cut-off member
    /// leaves time to try the others within `timeout`.
    attempt_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

/// The shortest time one attempt on one member gets when there are several.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 keep-alive: how often an idle-looking connection is pinged, and how long a ping may
/// go unanswered before the connection counts as dead. etcd refuses pings more frequent than
/// its `--grpc-keepalive-min-time` (5 s by default) with GOAWAY, so the interval stays above
/// that; the total bounds how long a watch on a cut-off member stays silent.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(6), Duration::from_secs(3));

/// What went wrong on one attempt.
struct AttemptError {
    /// Why, with the member's URL.
    reason: String,
    /// Whether the member may have applied the request (the connection broke or timed out
    /// after it was sent). A connection that was never made, or a member that refused for lack
    /// of a leader, applied nothing.
    maybe_applied: bool,
}

impl EtcdStore {
    /// Connects and checks that etcd answers: an unreachable etcd is an error within the
    /// configured timeout (5 s by default). With several endpoints, one live member is enough.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        let timeout = config.timeout();
        let n = u32::try_from(config.endpoints.len().max(1)).unwrap_or(u32::MAX);
        let attempt_timeout = if n == 1 {
            timeout
        } else {
            (timeout / n).max(MIN_ATTEMPT_TIMEOUT).min(timeout)
        };
        let options = config
            .connect_options()?
            .with_connect_timeout(attempt_timeout)
            .with_timeout(attempt_timeout)
            .with_keep_alive(KEEPALIVE.0, KEEPALIVE.1)
            // A member cut off from the others answers "no leader" at once (and cancels its
            // watches) instead of holding requests until they time out.
            .with_require_leader(true);
        let members = config
            .endpoints
            .iter()
            .map(|url| Member {
                url: url.clone(),
                client: OnceCell::new(),
            })
            .collect();
        let store = EtcdStore {
            inner: Arc::new(Inner {
                members,
                options,
                // Spread processes over the members, and the cost of a dead first member.
                current: AtomicUsize::new(rand::random_range(0..n as usize)),
                endpoints,
                timeout,
                attempt_timeout,
            }),
        };
        // The connections are made lazily: one cheap read proves that etcd is there.
        store.get("/calico/").await?;
        Ok(store)
    }

    /// A client of the member requests currently go to, for operations outside the [`Store`]
    /// trait (tests compact and inspect through it).
    pub async fn client(&self) -> Result<Client, StoreError> {
        let index = self.current_member();
        self.member_client(index)
            .await
            .map_err(|e| self.unavailable(e.reason))
    }

    /// The URL of the member requests currently go to.
    pub fn current_endpoint(&self) -> &str {
        &self.inner.members[self.current_member()].url
    }

    fn current_member(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.members.len().max(1)
    }

    /// Moves requests off member `failed` to the next one, unless another request already did.
    fn rotate_from(&self, failed: usize) {
        let n = self.inner.members.len();
        if n > 1 {
            let next = (failed + 1) % n;
            let _ = self.inner.current.compare_exchange(
                failed,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Member `index`'s client, connecting it first if needed.
    async fn member_client(&self, index: usize) -> Result<Client, AttemptError> {
        let Some(member) = self.inner.members.get(index) else {
            return Err(AttemptError {
                reason: format!("no etcd member number {index}"),
                maybe_applied: false,
            });
        };
        let connect = async {
            tokio::time::timeout(
                self.inner.attempt_timeout,
                Client::connect([member.url.as_str()], Some(self.inner.options.clone())),
            )
            .await
            .map_err(|_| etcd_client::Error::InvalidArgs("connect timed out".into()))?
        };
        member
            .client
            .get_or_try_init(|| connect)
            .await
            .cloned()
            .map_err(|e| AttemptError {
                reason: format!("{}: {}", member.url, error_chain(&e)),
                maybe_applied: false,
            })
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.inner.endpoints.clone(),
            reason,
        }
    }

    /// Sorts one failed attempt: retried on another member, or returned to the caller.
    fn classify(&self, url: &str, error: etcd_client::Error) -> Result<AttemptError, StoreError> {
        use etcd_client::Error as E;
        let chain = error_chain(&error);
        let reason = format!("{url}: {chain}");
        let maybe_applied = may_have_been_applied(&chain);
        let retry = |reason: String| {
            Ok(AttemptError {
                reason,
                maybe_applied,
            })
        };
        match &error {
            E::TransportError(_) | E::IoError(_) => retry(reason),
            E::GRpcStatus(status) => match status.code() {
                // tonic reports a broken connection as `Unknown: transport error`; etcd says
                // "no leader", "leader changed" and "request timed out" as Unavailable.
                tonic_code::Unavailable
                | tonic_code::DeadlineExceeded
                | tonic_code::Cancelled
                | tonic_code::Unknown => retry(reason),
                _ => Err(StoreError::Backend(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                ))),
            },
            _ => Err(StoreError::Backend(chain)),
        }
    }

    /// Runs one request under the store's deadline: on the current member, then on the next
    /// ones while it fails as unavailable. Returns the answer and whether an earlier attempt
    /// may have applied the request already (then a write's failed compare is no proof that
    /// someone else wrote).
    async fn call<T, F, Fut>(&self, mut request: F) -> Result<(T, bool), StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.inner.members.len().max(1);
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut index = self.current_member();
        let mut failures: Vec<String> = Vec::new();
        let mut maybe_applied = false;
        // One attempt per member and round; rounds only repeat while every member fails fast
        // (an election in progress), with a pause between them. A single endpoint gets one
        // attempt, as before failover existed.
        let max_attempts = if n == 1 { 1 } else { n * 8 };
        for attempt in 1..=max_attempts {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let budget = self.inner.attempt_timeout.min(deadline - now);
            let url = self.inner.members[index].url.clone();
            let outcome = match self.member_client(index).await {
                Err(e) => Err(e),
                Ok(client) => match tokio::time::timeout(budget, request(client)).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err(self.classify(&url, e)?),
                    Err(_) => Err(AttemptError {
                        reason: format!("{url}: no answer within {budget:?}"),
                        maybe_applied: true,
                    }),
                },
            };
            match outcome {
                Ok(answer) => {
                    if !failures.is_empty() {
                        debug!(member = %url, failed = ?failures, "etcd request failed over");
                    }
                    return Ok((answer, maybe_applied));
                }
                Err(e) => {
                    if n > 1 {
                        debug!(member = %url, reason = %e.reason, "etcd member failed; trying the next");
                    }
                    maybe_applied |= e.maybe_applied;
                    failures.push(e.reason);
                    self.rotate_from(index);
                    index = (index + 1) % n;
                    if attempt % n == 0 && attempt < max_attempts {
                        let round = u32::try_from(attempt / n).unwrap_or(u32::MAX);
                        let pause = Duration::from_millis(50)
                            .saturating_mul(1u32 << round.min(4))
                            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        // The last failure of each member says most.
        let tail = failures.len().saturating_sub(n);
        let reason = if failures.is_empty() {
            format!("no answer within {:?}", self.inner.timeout)
        } else {
            failures[tail..].join("; ")
        };
        Err(self.unavailable(reason))
    }

    /// Lists a prefix in pages, every page read at the revision of the first one.
    async fn list_paged(&self, prefix: &str) -> Result<Listing, StoreError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut listing = Listing::default();
        // Bounded by the keys there are: every page moves `from` past the last key it got.
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE);
            if listing.revision > 0 {
                options = options.with_revision(listing.revision);
            }
            let (response, _) = self
                .call(|client| {
                    let key = from.clone();
                    let options = options.clone();
                    async move { client.kv_client().get(key, Some(options)).await }
                })
                .await?;
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

/// Whether a request that failed with this error (its whole source chain) may still have been
/// applied by the member. Only errors that prove the request never got to a proposal say no:
/// a connection that could not be made, or a member that refused it for lack of a leader
/// (with require-leader, etcd checks that before anything else). A connection that broke or
/// a request that timed out may have been applied.
fn may_have_been_applied(chain: &str) -> bool {
    const NOT_SENT: [&str; 3] = ["tcp connect error", "Connection refused", "no leader"];
    !NOT_SENT.iter().any(|m| chain.contains(m))
}

/// An error with its sources, e.g. "transport error: tcp connect error: Connection refused":
/// tonic's top-level messages alone do not say what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short, and a cyclic one must not hang us.
    for _ in 0..8 {
        let Some(e) = source else { break };
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
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
        // Linearizable (etcd's default): the answer is current even from a member that was
        // cut off or just restarted.
        let (response, _) = self
            .call(|client| async move { client.kv_client().get(key, None).await })
            .await?;
        Ok(response.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.list_paged(prefix).await
    }

    async fn transaction(&self, txn: Transaction) -> Result<Revision, StoreError> {
        let compares: Vec<Compare> = txn.preconditions.iter().map(compare).collect();
        let operations: Vec<TxnOp> = txn.operations.iter().map(txn_op).collect();
        let (response, maybe_applied) = self
            .call(|client| {
                let request = Txn::new()
                    .when(compares.clone())
                    .and_then(operations.clone());
                async move { client.kv_client().txn(request).await }
            })
            .await?;
        if !response.succeeded() {
            if maybe_applied && !txn.preconditions.is_empty() {
                // An earlier attempt may have committed this very transaction, and that is
                // what made the compare fail now: the outcome is unknown. Say so, and the
                // caller re-reads (as after any unavailable error) instead of taking it for
                // someone else's write.
                return Err(self.unavailable(
                    "a transaction retried on another etcd member found its preconditions \
                     changed; the first attempt may have been applied"
                        .to_string(),
                ));
            }
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
        // The member this stream runs on; a stream that ends for any reason but a stop moves
        // the store (and so the next attempt) to the next member.
        let member = self.store.current_member();
        let end = self
            .stream_on(member, options, was_disconnected, backoff)
            .await;
        if matches!(end, StreamEnd::Disconnected(_)) {
            self.store.rotate_from(member);
        }
        end
    }

    async fn stream_on(
        &mut self,
        member: usize,
        options: WatchOptions,
        was_disconnected: &mut bool,
        backoff: &mut Duration,
    ) -> StreamEnd {
        let mut client = match self.store.member_client(member).await {
            Ok(client) => client,
            Err(e) => return StreamEnd::Disconnected(e.reason),
        };
        let timeout = self.store.inner.attempt_timeout;
        let opened = tokio::select! {
            _ = self.stop.cancelled() => return StreamEnd::Stopped,
            opened = tokio::time::timeout(timeout, client.watch(self.prefix.as_str(), Some(options))) => opened,
        };
        let url = &self.store.inner.members[member].url;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return StreamEnd::Disconnected(format!("{url}: {}", error_chain(&e))),
            Err(_) => return StreamEnd::Disconnected(format!("{url}: watch request timed out")),
        };
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => return StreamEnd::Stopped,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return StreamEnd::Disconnected(format!("{url}: watch stream closed")),
                Err(e) => return StreamEnd::Disconnected(format!("{url}: {}", error_chain(&e))),
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
                info!(prefix = %self.prefix, revision = self.next_revision, member = %url,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_before_a_proposal_rule_out_an_applied_request() {
        // What tonic and etcd say, as `error_chain` renders them.
        let refused = "grpc request error: code: 'The service is currently unavailable', \
                       message: \"tcp connect error\": Connection refused (os error 111)";
        assert!(!may_have_been_applied(refused));
        assert!(!may_have_been_applied(
            "grpc request error: status: Unavailable, message: \"etcdserver: no leader\""
        ));
        for broken in [
            "grpc request error: status: Unknown, message: \"transport error\": connection reset",
            "grpc request error: status: Unavailable, message: \"etcdserver: request timed out\"",
            "grpc request error: status: Unavailable, message: \"etcdserver: leader changed\"",
            "http://10.0.0.1:2379: no answer within 1.6s",
        ] {
            assert!(may_have_been_applied(broken), "{broken}");
        }
    }

    #[test]
    fn an_error_chain_names_every_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = etcd_client::Error::IoError(inner);
        let chain = error_chain(&outer);
        assert!(chain.contains("refused"), "{chain}");
        assert_eq!(chain.matches("refused").count(), 1, "{chain}");
    }
}
