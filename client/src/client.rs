//! The client: one Watch stream to an agent, kept open in a background task
//! that applies each event to [`Values`], and reads that never leave the
//! process.
//!
//! The stream resumes from the last position it applied after any break
//! (the agent sends what changed since, or a reset and a snapshot), with a
//! fresh token each time, backing off from 100 ms to 5 s. While it is down,
//! reads answer the values last received and [`StreamStatus::connected`] is false.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use crate::proto::config_reader_client::ConfigReaderClient;
use crate::proto::{GetConfigRequest, WatchEvent, WatchRequest, watch_event};
use crate::secret::Secret;
use crate::token::TokenSource;
use crate::values::{Change, Entry, ReadError, Typed, Values};

/// How long a connection attempt to the agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a secret read may take, end to end.
pub const SECRET_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle stream: a dead agent (or a cut network) is
/// noticed within interval + timeout, and the stream resumes elsewhere.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Changes buffered per subscriber; one that lags past it misses changes
/// (its receiver says how many) and should re-read what it needs.
const CHANGE_BUFFER: usize = 1024;

/// Why the client could not start or answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid agent endpoint: {0}")]
    Endpoint(String),
    #[error("no token: {0}")]
    Token(String),
    #[error("the agent refused: {code:?}: {message}")]
    Refused { code: Code, message: String },
    #[error("no snapshot from the agent within {waited:?} (last error: {last_error})")]
    NotReady {
        waited: Duration,
        last_error: String,
    },
    #[error("the agent did not answer: {0}")]
    Unavailable(String),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ClientError::Unavailable(status.message().to_owned())
            }
            code => ClientError::Refused {
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

/// The stream's state, for health checks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    /// A stream is open (the agent accepted it).
    pub connected: bool,
    /// The journal position of the last event applied (what a reconnect
    /// resumes from).
    pub position: Option<String>,
    /// Why the last stream ended, if it did.
    pub last_error: Option<String>,
    /// Streams opened after the first (reconnections).
    pub reconnects: u64,
    /// Snapshots applied: 1 after a start; more after resets (or resumes
    /// that followed a shared change). A resume that replays only what it
    /// missed applies none.
    pub snapshots: u64,
}

/// Connects a [`ConfigClient`].
pub struct ClientBuilder {
    endpoint: String,
    service: String,
    keys: Option<Vec<String>>,
    token: Option<Arc<dyn TokenSource>>,
    ready_timeout: Duration,
}

impl ClientBuilder {
    /// Watch only these keys (at most 50), not the whole service.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Where the caller's ID token comes from (required).
    pub fn token(mut self, token: impl TokenSource) -> Self {
        self.token = Some(Arc::new(token));
        self
    }

    /// How long [`Self::connect`] waits for the first snapshot (default 10 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Opens the stream and waits for the watched values. A refusal that
    /// retrying cannot mend (a bad token, service, key or grant) is returned
    /// at once; an agent that is not up yet is retried until the timeout.
    pub async fn connect(self) -> Result<ConfigClient, ClientError> {
        let token = self
            .token
            .ok_or_else(|| ClientError::Token("no token source given".into()))?;
        let channel = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientError::Endpoint(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let values = Arc::new(Values::new(self.keys.clone()));
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let (status, _) = watch::channel(StreamStatus::default());
        let (ready, is_ready) = oneshot::channel();
        let connected = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            connected: Arc::clone(&connected),
            service: self.service.clone(),
            keys: self.keys.unwrap_or_default(),
            channel: channel.clone(),
            token: Arc::clone(&token),
            values: Arc::clone(&values),
            changes: changes.clone(),
            status: status.clone(),
        };
        let task = tokio::spawn(stream.run(ready));
        let client = ConfigClient {
            inner: Arc::new(Inner {
                service: self.service,
                connected,
                values,
                channel,
                token,
                changes,
                status,
                task: task.abort_handle(),
            }),
        };
        match tokio::time::timeout(self.ready_timeout, is_ready).await {
            Ok(Ok(Ok(()))) => Ok(client),
            Ok(Ok(Err(refused))) => Err(refused),
            Ok(Err(_)) => Err(ClientError::Unavailable("the stream task ended".into())),
            Err(_) => Err(ClientError::NotReady {
                waited: self.ready_timeout,
                last_error: client.status().last_error.unwrap_or_else(|| "none".into()),
            }),
        }
    }
}

struct Inner {
    service: String,
    /// [`StreamStatus::connected`], read on every OpenFeature evaluation.
    connected: Arc<AtomicBool>,
    values: Arc<Values>,
    channel: Channel,
    token: Arc<dyn TokenSource>,
    changes: broadcast::Sender<Change>,
    status: watch::Sender<StreamStatus>,
    task: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Configuration of one service for the caller's tenant, held in memory and
/// kept current by the agent's Watch stream. Cheap to clone; the stream
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct ConfigClient {
    inner: Arc<Inner>,
}

impl ConfigClient {
    /// A client of the agent at `endpoint` (e.g. `http://127.0.0.1:50051`)
    /// for `service`.
    pub fn builder(endpoint: impl Into<String>, service: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            service: service.into(),
            keys: None,
            token: None,
            ready_timeout: Duration::from_secs(10),
        }
    }

    /// The service this client watches.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// `key`'s value with its version, source and staleness.
    pub fn entry(&self, key: &str) -> Result<Arc<Entry>, ReadError> {
        self.inner.values.entry(key)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, ReadError> {
        match self.entry(key)?.value {
            Typed::Bool(b) => Ok(b),
            ref other => Err(mismatch(key, "boolean", other)),
        }
    }

    pub fn get_i64(&self, key: &str) -> Result<i64, ReadError> {
        match self.entry(key)?.value {
            Typed::Int(i) => Ok(i),
            ref other => Err(mismatch(key, "integer", other)),
        }
    }

    /// A number; an integer is widened.
    pub fn get_f64(&self, key: &str) -> Result<f64, ReadError> {
        match self.entry(key)?.value {
            Typed::Float(f) => Ok(f),
            Typed::Int(i) => Ok(i as f64),
            ref other => Err(mismatch(key, "number", other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Arc<str>, ReadError> {
        match &self.entry(key)?.value {
            Typed::Str(s) => Ok(Arc::clone(s)),
            other => Err(mismatch(key, "string", other)),
        }
    }

    /// Any value, as JSON.
    pub fn get_json(&self, key: &str) -> Result<Value, ReadError> {
        Ok(self.entry(key)?.value.to_json())
    }

    /// A value deserialized into `T` (a document into your struct).
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, ReadError> {
        let entry = self.entry(key)?;
        let json = match &entry.value {
            Typed::Json(value) => T::deserialize(value.as_ref()),
            other => T::deserialize(other.to_json()),
        };
        json.map_err(|_| ReadError::TypeMismatch {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
            found: entry.value.type_name(),
        })
    }

    /// Every value held, by key.
    pub fn values(&self) -> HashMap<String, Arc<Entry>> {
        self.inner.values.all()
    }

    /// Each change from now on, as it is applied.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Whether a stream is open now (cheaper than [`Self::status`]).
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// The stream's state now.
    pub fn status(&self) -> StreamStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits until the stream's state satisfies `done` (e.g. connected again).
    pub async fn wait_for(&self, done: impl FnMut(&StreamStatus) -> bool) -> StreamStatus {
        let mut status = self.inner.status.subscribe();
        match status.wait_for(done).await {
            Ok(now) => now.clone(),
            Err(_) => self.status(),
        }
    }

    /// A secret (or any key) read through the agent with decryption, every
    /// time: the client never holds it. The agent answers only callers on
    /// its own host.
    pub async fn secret(&self, key: &str) -> Result<Secret, ClientError> {
        let token = self.inner.token.token().await.map_err(ClientError::Token)?;
        let mut request = Request::new(GetConfigRequest {
            service: self.inner.service.clone(),
            key: key.to_owned(),
        });
        authorize(&mut request, &token)?;
        request.set_timeout(SECRET_TIMEOUT);
        let mut agent = ConfigReaderClient::new(self.inner.channel.clone());
        let answer = tokio::time::timeout(SECRET_TIMEOUT, agent.get_secret(request))
            .await
            .map_err(|_| ClientError::Unavailable(format!("no answer within {SECRET_TIMEOUT:?}")))??
            .into_inner();
        let value = serde_json::from_str(&answer.value_json).map_err(|e| {
            ClientError::Unavailable(format!("the agent sent a value that is not JSON: {e}"))
        })?;
        Ok(Secret::new(value, answer.version))
    }
}

fn mismatch(key: &str, expected: &'static str, found: &Typed) -> ReadError {
    ReadError::TypeMismatch {
        key: key.to_owned(),
        expected,
        found: found.type_name(),
    }
}

fn authorize<T>(request: &mut Request<T>, token: &str) -> Result<(), ClientError> {
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::Token("the token is not valid header text".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(())
}

/// The background task: the stream, its events and its reconnections.
struct Stream {
    connected: Arc<AtomicBool>,
    service: String,
    keys: Vec<String>,
    channel: Channel,
    token: Arc<dyn TokenSource>,
    values: Arc<Values>,
    changes: broadcast::Sender<Change>,
    status: watch::Sender<StreamStatus>,
}

/// How one stream ended.
enum Ended {
    /// Open again (resuming); `worked`: it had delivered an event.
    Retry { worked: bool, error: String },
    /// Refused in a way a retry cannot mend before the client is ready.
    Fatal(ClientError),
}

impl Stream {
    async fn run(self, ready: oneshot::Sender<Result<(), ClientError>>) {
        let mut ready = Some(ready);
        let mut backoff = FIRST_BACKOFF;
        let mut opened: u64 = 0;
        loop {
            opened += 1;
            let ended = self.follow(&mut ready).await;
            let error = match ended {
                Ended::Fatal(error) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(error));
                        return;
                    }
                    error.to_string()
                }
                Ended::Retry { worked, error } => {
                    if worked {
                        backoff = FIRST_BACKOFF;
                    }
                    error
                }
            };
            tracing::info!(service = %self.service, %error, retry_in_ms = backoff.as_millis() as u64, "config stream ended; reopening");
            self.connected.store(false, Ordering::Relaxed);
            self.status.send_modify(|status| {
                status.connected = false;
                status.last_error = Some(error);
                status.reconnects = opened;
            });
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens one stream and applies its events until it ends.
    async fn follow(&self, ready: &mut Option<oneshot::Sender<Result<(), ClientError>>>) -> Ended {
        let token = match self.token.token().await {
            Ok(token) => token,
            Err(error) => {
                return Ended::Retry {
                    worked: false,
                    error: format!("no token: {error}"),
                };
            }
        };
        let mut request = Request::new(WatchRequest {
            service: self.service.clone(),
            keys: self.keys.clone(),
            resume_from: self.status.borrow().position.clone(),
        });
        if let Err(error) = authorize(&mut request, &token) {
            return Ended::Retry {
                worked: false,
                error: error.to_string(),
            };
        }
        let mut client = ConfigReaderClient::new(self.channel.clone());
        let mut events = match client.watch(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.refused(status, ready.is_none(), false),
        };
        // Open: a resume with nothing missed may send nothing for a while.
        self.connected.store(true, Ordering::Relaxed);
        self.status.send_modify(|status| status.connected = true);
        let mut worked = false;
        loop {
            match events.message().await {
                Ok(Some(event)) => {
                    let snapshot = self.apply(event);
                    worked = true;
                    if snapshot && let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Ok(None) => {
                    return Ended::Retry {
                        worked,
                        error: "the agent closed the stream".into(),
                    };
                }
                Err(status) => return self.refused(status, ready.is_none(), worked),
            }
        }
    }

    /// What a refusal means: before the client is ready, a refusal that a
    /// retry cannot mend is returned to `connect`; after, every refusal is
    /// retried (a token expired, an agent stopping) and one that denies the
    /// tenant (made inactive) drops what is held.
    fn refused(&self, status: tonic::Status, was_ready: bool, worked: bool) -> Ended {
        let error = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::PermissionDenied if was_ready => {
                for change in self.values.refuse(status.message().to_owned()) {
                    let _ = self.changes.send(change);
                }
                // Nothing is held: once allowed again, start from a snapshot
                // (a restored grant is not in the journal).
                self.status.send_modify(|status| status.position = None);
                Ended::Retry { worked, error }
            }
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::NotFound
            | Code::Unimplemented
            | Code::FailedPrecondition
                if !was_ready =>
            {
                Ended::Fatal(status.into())
            }
            _ => Ended::Retry { worked, error },
        }
    }

    /// Applies one event; true when it was a snapshot.
    fn apply(&self, event: WatchEvent) -> bool {
        let mut snapshot = false;
        let mut reset = false;
        let changes = match event.event {
            Some(watch_event::Event::Snapshot(values)) => {
                snapshot = true;
                self.values.apply_snapshot(values)
            }
            Some(watch_event::Event::Change(change)) => {
                self.values.apply_change(change).into_iter().collect()
            }
            Some(watch_event::Event::Reset(why)) => {
                tracing::info!(service = %self.service, reason = %why.reason, "the agent reset the stream; a snapshot follows");
                reset = true;
                Vec::new()
            }
            Some(watch_event::Event::Progress(_)) | None => Vec::new(),
        };
        self.status.send_modify(|status| {
            if reset {
                // Cut before the snapshot, the next stream starts afresh.
                status.position = None;
            } else if !event.position.is_empty() {
                status.position = Some(event.position);
            }
            if snapshot {
                status.snapshots += 1;
            }
        });
        for change in changes {
            // No subscriber is no error.
            let _ = self.changes.send(change);
        }
        snapshot
    }
}

/// `backoff` ± 20 %, so clients of one agent that stopped do not all
/// come back in the same millisecond.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let spread = backoff.as_millis() as u64 / 5;
    if spread == 0 {
        return backoff;
    }
    backoff - Duration::from_millis(spread) + Duration::from_millis(nanos % (2 * spread + 1))
}
