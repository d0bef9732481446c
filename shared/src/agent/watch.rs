//! `Watch`: one caller's stream of a service's values (or some of its keys).
//!
//! A watcher subscribes to its reader's [`ChangeFeed`] first, then reads what
//! it watches and sends it (a snapshot), or, resuming from a position, first
//! replays the change journal since then (dropping what those changes made
//! stale) and sends what changed. After that, each notice that concerns it
//! (a change pushed by config-refresh or caught up from the journal) makes it
//! read again and send every key whose value or version differs from what it
//! sent last. While it streams it also runs the reader's catch-up on its
//! interval, so a change no push reached arrives even when nobody reads.
//!
//! Positions are the journal's (`{journaled_at_ms:013}`): an event carries
//! the time up to which this reader had applied the journal when it was
//! sent, so resuming from it replays that change again if need be (some
//! twice, never none). A position older than the journal keeps, or a replay
//! longer than one catch-up reads, is a reset: drop everything, a snapshot
//! follows. The stream ends when the caller's token expires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tonic::Status;

use super::server::{config_value, status};
use crate::catch_up::{PagingError, read_pages};
use crate::error::ConfigError;
use crate::reads::ConfigReads;
use crate::refresh::change::Subject;
use crate::refresh::journal::{RETENTION, position_at};
use crate::refresh::proto::{
    ConfigValue, WatchChange, WatchEvent, WatchProgress, WatchReset, WatchSnapshot, watch_event,
};
use crate::refresh::signing::unix_ms_now;
use crate::validate::{ConfigKey, ServiceName, TenantId};
use crate::watch::Notice;

/// Watch streams one agent serves at once; more are RESOURCE_EXHAUSTED.
pub const MAX_WATCHES: usize = 1024;
/// Events buffered for one caller before its watcher waits for it.
pub const EVENT_BUFFER: usize = 64;
/// How often a watcher runs the catch-up when the reader has none of its own
/// schedule (it runs only when due, whoever calls it).
const CATCH_UP_TICK: Duration = Duration::from_secs(1);
/// How long a read answered stale waits for loads in flight to end before
/// the store counts as failing (the value is then read again next tick).
const STALE_WAIT: Duration = Duration::from_millis(150);
/// A stream with nothing to send for this long sends its position
/// (`progress`), so a quiet stream resumes from a recent position rather
/// than one the journal no longer keeps.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// What one stream watches, for whom.
#[derive(Debug, Clone)]
pub struct Watched {
    pub tenant: TenantId,
    pub service: ServiceName,
    /// `None`: every non-secret key of the service.
    pub keys: Option<BTreeSet<ConfigKey>>,
}

/// What a watcher last sent: each key's value, and the watched keys that
/// had none or hold a SecureString.
#[derive(Debug, Default, PartialEq)]
struct Held {
    values: BTreeMap<String, ConfigValue>,
    missing: Vec<String>,
    sensitive: Vec<String>,
}

/// What a replay found changed since the position resumed from.
enum Replayed {
    Keys(BTreeSet<ConfigKey>),
    /// A shared layer, a registration or a rollout: possibly every key.
    Everything,
}

/// A position a caller sent back: the journal time it stands for.
pub fn parse_position(position: &str) -> Result<i64, ConfigError> {
    let invalid = || ConfigError::BadRequest("resume_from is not a watch position".to_owned());
    let (ms, rest) = position.split_at_checked(13).ok_or_else(invalid)?;
    let suffix_ok = rest.is_empty()
        || (rest.len() <= 200
            && rest.starts_with('#')
            && rest[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)));
    if !ms.bytes().all(|b| b.is_ascii_digit()) || !suffix_ok {
        return Err(invalid());
    }
    ms.parse().map_err(|_| invalid())
}

/// Whether a value a caller holds differs from one read now. A stale mark's
/// age is no change, but a value sent stale (in a snapshot) that reads
/// fresh now is: the caller learns its store answers again.
fn differs(held: Option<&ConfigValue>, now: Option<&ConfigValue>) -> bool {
    match (held, now) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            (a.value_json.as_str(), a.version, a.source.as_str())
                != (b.value_json.as_str(), b.version, b.source.as_str())
                || (a.stale_age_ms.is_some() && b.stale_age_ms.is_none())
        }
        _ => true,
    }
}

impl Watched {
    /// Whether a change may alter what this stream watches.
    fn concerns(&self, subject: &Subject) -> bool {
        let watched = |key: &ConfigKey| self.keys.as_ref().is_none_or(|keys| keys.contains(key));
        match subject {
            Subject::Entry(item) => {
                item.tenant == self.tenant && item.service == self.service && watched(&item.key)
            }
            Subject::Shared { service, key, .. } => *service == self.service && watched(key),
            Subject::Registration(tenant) => *tenant == self.tenant,
            Subject::Rollout(entry) => entry.service == self.service && watched(&entry.key),
        }
    }

    /// What the stream watches, read now. Keys are read one by one, so
    /// concurrent watchers of a key share one store read (the cache
    /// coalesces loads of a key; a batch would not).
    async fn read(&self, reads: &ConfigReads) -> Result<Held, ConfigError> {
        let mut held = Held::default();
        match &self.keys {
            None => {
                let config = reads.get_service(&self.tenant, &self.service).await?;
                if config.truncated {
                    return Err(ConfigError::BadRequest(
                        "the service holds more keys than one listing returns (200 per store): \
                         watch named keys"
                            .to_owned(),
                    ));
                }
                for (key, entry) in &config.values {
                    held.values
                        .insert(key.to_string(), config_value(key, entry));
                }
                held.sensitive = config.sensitive.iter().map(ToString::to_string).collect();
            }
            Some(keys) => {
                let reads = futures::future::join_all(
                    keys.iter()
                        .map(|key| reads.get(&self.tenant, &self.service, key)),
                )
                .await;
                for (key, read) in keys.iter().zip(reads) {
                    match read {
                        Ok(entry) => {
                            held.values
                                .insert(key.to_string(), config_value(key, &entry));
                        }
                        Err(ConfigError::NotFound { .. }) => held.missing.push(key.to_string()),
                        // A SecureString is named, never read here.
                        Err(ConfigError::SensitiveValue { .. }) => {
                            held.sensitive.push(key.to_string());
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
        }
        Ok(held)
    }

    /// The journal since `from_ms` (less the catch-up's overlap, for late
    /// writers): what concerns this stream is dropped from the reader's
    /// caches, and named. `Err` is a reset's reason.
    async fn replay(&self, reads: &ConfigReads, from_ms: i64) -> Result<Replayed, String> {
        let Some(catch_up) = reads.catch_up() else {
            return Err("this agent keeps no change journal: read everything again".to_owned());
        };
        let settings = catch_up.settings();
        let overlap = settings.overlap.as_millis() as i64;
        let now = unix_ms_now();
        if from_ms > now + overlap {
            return Err("the position is ahead of this agent's clock".to_owned());
        }
        if from_ms < now - RETENTION.as_millis() as i64 + overlap {
            return Err(format!(
                "the position is older than the journal keeps ({} h)",
                RETENTION.as_secs() / 3600
            ));
        }
        let deadline = tokio::time::Instant::now() + settings.timeout * 4;
        let (entries, complete) = read_pages(
            catch_up.journal().as_ref(),
            from_ms - overlap,
            settings.max_entries.max(1),
            deadline,
            || {},
        )
        .await
        .map_err(|error| match error {
            PagingError::Journal(error) => format!("the change journal could not be read: {error}"),
            PagingError::TimedOut => "the change journal did not answer in time".to_owned(),
        })?;
        if !complete {
            return Err("more changes since that position than one resume replays".to_owned());
        }
        let mut keys = BTreeSet::new();
        let mut everything = false;
        for entry in entries {
            let subject = &entry.change.subject;
            if !self.concerns(subject) {
                continue;
            }
            // This reader may not have applied it yet (a push it missed).
            let _ = reads
                .invalidate_subject(subject, entry.change.changed())
                .await;
            match subject {
                Subject::Entry(item) => {
                    keys.insert(item.key.clone());
                }
                _ => everything = true,
            }
        }
        Ok(if everything {
            Replayed::Everything
        } else {
            Replayed::Keys(keys)
        })
    }
}

/// One caller's stream.
pub struct Watcher {
    pub watched: Watched,
    pub reads: ConfigReads,
    /// `exp` of the caller's token, seconds since the epoch.
    pub expires_at: u64,
    pub events: mpsc::Sender<Result<WatchEvent, Status>>,
    /// Turns true when the agent stops: every stream ends, to resume elsewhere.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Held while the stream lasts (bounds the streams one agent serves,
    /// and one tenant's).
    pub permits: (OwnedSemaphorePermit, TenantPermit),
}

/// Why a stream cannot go on.
enum Ended {
    /// The caller went away or stopped reading: nothing more can be sent.
    Gone,
}

/// How a read turned out, for the loop.
enum Read {
    /// Fresh values, and the position they stand for.
    Fresh(Held, String),
    /// Some value was its store's last good one, or the store failed:
    /// nothing is sent; read again on the next tick.
    Retry,
    /// The caller may no longer read this (an inactive tenant, a listing
    /// too long to watch): the stream ends with this status.
    Fatal(Status),
}

impl Watcher {
    /// Where this reader stands in the journal now: read before the values
    /// it stamps, so resuming from it replays whatever they may predate.
    fn position(&self) -> String {
        position_at(
            self.reads
                .catch_up()
                .map_or_else(unix_ms_now, |catch_up| catch_up.caught_up_ms()),
        )
    }

    async fn read(&self) -> Read {
        // A value answered stale is most often another reader's load of it
        // still in flight (the cache answers the last good value rather than
        // wait): read again as soon as a load ends, and only after
        // `STALE_WAIT` without a fresh answer count the store as failing.
        let deadline = tokio::time::Instant::now() + STALE_WAIT;
        let settled = self.reads.loads_settled().clone();
        loop {
            // Registered before the read: a load ending during it wakes us.
            let load_ended = settled.notified();
            tokio::pin!(load_ended);
            load_ended.as_mut().enable();
            let position = self.position();
            match self.watched.read(&self.reads).await {
                Ok(held) if held.values.values().any(|v| v.stale_age_ms.is_some()) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Read::Retry;
                    }
                    // A load ended since the read began: read again now.
                    if futures::FutureExt::now_or_never(load_ended.as_mut()).is_some() {
                        continue;
                    }
                    // Stale with no load in flight: the store is failing
                    // (or a shared layer's is); read again next tick.
                    if !self.loading_any_stale(&held)
                        || tokio::time::timeout_at(deadline, load_ended).await.is_err()
                    {
                        return Read::Retry;
                    }
                }
                Ok(held) => return Read::Fresh(held, position),
                Err(error) if matches!(error.status(), 400 | 401 | 403 | 404) => {
                    return Read::Fatal(status(&error));
                }
                Err(_) => return Read::Retry,
            }
        }
    }

    /// Whether any value answered stale has a load in flight.
    fn loading_any_stale(&self, held: &Held) -> bool {
        held.values
            .values()
            .filter(|v| v.stale_age_ms.is_some())
            .filter_map(|v| ConfigKey::parse(&v.key).ok())
            .any(|key| {
                self.reads
                    .loading(&self.watched.tenant, &self.watched.service, &key)
            })
    }

    /// Sends one event; a caller that does not take it within
    /// [`SEND_TIMEOUT`] (its buffer full) is dropped rather than holding
    /// its slot and this task.
    async fn send(&self, position: &str, event: watch_event::Event) -> Result<(), Ended> {
        let event = WatchEvent {
            position: position.to_owned(),
            event: Some(event),
        };
        self.events
            .send_timeout(Ok(event), SEND_TIMEOUT)
            .await
            .map_err(|_| Ended::Gone)
    }

    async fn snapshot(&self, held: &Held, position: &str) -> Result<(), Ended> {
        self.send(
            position,
            watch_event::Event::Snapshot(WatchSnapshot {
                values: held.values.values().cloned().collect(),
                missing: held.missing.clone(),
                sensitive: held.sensitive.clone(),
            }),
        )
        .await
    }

    async fn progress(&self, position: &str) -> Result<(), Ended> {
        self.send(position, watch_event::Event::Progress(WatchProgress {}))
            .await
    }

    async fn change(
        &self,
        position: &str,
        key: &str,
        value: Option<&ConfigValue>,
    ) -> Result<(), Ended> {
        self.send(
            position,
            watch_event::Event::Change(WatchChange {
                key: key.to_owned(),
                value: value.cloned(),
            }),
        )
        .await
    }

    /// Ends the stream with `status` (as far as the caller still listens).
    async fn end(&self, status: Status) {
        let _ = self.events.send_timeout(Err(status), SEND_TIMEOUT).await;
    }

    /// Streams until the caller goes away, its token expires or the agent
    /// stops.
    pub async fn run(self, resume_from: Option<i64>) {
        let Some(feed) = self.reads.change_feed().cloned() else {
            self.end(Status::unimplemented("this reader serves no Watch"))
                .await;
            return;
        };
        // Subscribed before the first read: nothing learned after it is missed.
        let mut notices = feed.subscribe();
        let replayed = match resume_from {
            Some(from_ms) => Some(self.watched.replay(&self.reads, from_ms).await),
            None => None,
        };
        // The first answer is sent as read, last good values included (what
        // any read would answer now); only changes wait for fresh values.
        let position = self.position();
        let mut held = match self.watched.read(&self.reads).await {
            Ok(held) => held,
            Err(error) => {
                self.end(status(&error)).await;
                return;
            }
        };
        // A resume's events before its last carry the position resumed
        // from: a stream cut among them resumes from there again.
        let resumed_at = resume_from.map(position_at).unwrap_or_default();
        let started = match replayed {
            None => self.snapshot(&held, &position).await,
            Some(Err(reason)) => {
                tracing::info!(%reason, "watch: resumed with a reset");
                match self
                    .send(
                        &resumed_at,
                        watch_event::Event::Reset(WatchReset { reason }),
                    )
                    .await
                {
                    Ok(()) => self.snapshot(&held, &position).await,
                    Err(ended) => Err(ended),
                }
            }
            Some(Ok(Replayed::Everything)) => self.snapshot(&held, &position).await,
            Some(Ok(Replayed::Keys(keys))) => {
                let mut sent = Ok(());
                for key in keys {
                    sent = self
                        .change(&resumed_at, key.as_str(), held.values.get(key.as_str()))
                        .await;
                    if sent.is_err() {
                        break;
                    }
                }
                match sent {
                    Ok(()) => self.progress(&position).await,
                    ended => ended,
                }
            }
        };
        if started.is_err() {
            return;
        }
        let mut sent_position = position;
        let mut quiet_since = tokio::time::Instant::now();
        let mut progress_due = false;
        let expires_in =
            Duration::from_secs(self.expires_at.saturating_sub(unix_ms_now() as u64 / 1000));
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut tick =
            tokio::time::interval(self.reads.catch_up().map_or(CATCH_UP_TICK, |catch_up| {
                catch_up.settings().interval.min(CATCH_UP_TICK)
            }));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A value sent stale is read again until it reads fresh.
        let mut dirty = held.values.values().any(|v| v.stale_age_ms.is_some());
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                () = self.events.closed() => return,
                () = async { drop(stopping.wait_for(|stopping| *stopping).await) } => {
                    self.end(Status::unavailable(
                        "the agent is stopping: watch again from your last position",
                    )).await;
                    return;
                }
                () = &mut expiry => {
                    self.end(Status::unauthenticated(
                        "the token expired: watch again with a fresh one",
                    )).await;
                    return;
                }
                notice = notices.recv() => match notice {
                    Ok(notice) => match &*notice {
                        Notice::Changed(subject) if !self.watched.concerns(subject) => continue,
                        _ => dirty = true,
                    },
                    // Fell behind the feed: whatever was missed is read again.
                    Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                // Learns what no push brought; its notices arrive above. Run
                // apart, so a slow journal never holds this stream's pushes.
                _ = tick.tick() => {
                    let reads = self.reads.clone();
                    tokio::spawn(async move { reads.catch_up_if_due().await });
                    // Quiet for a while: read everything again (from the
                    // caches) to stamp a newer position on it.
                    if quiet_since.elapsed() >= PROGRESS_INTERVAL {
                        progress_due = true;
                        dirty = true;
                    }
                }
            }
            if !dirty {
                continue;
            }
            let (now, position) = match self.read().await {
                Read::Fresh(now, position) => (now, position),
                // Still dirty: read again on the next tick.
                Read::Retry => continue,
                Read::Fatal(status) => {
                    self.end(status).await;
                    return;
                }
            };
            dirty = false;
            let changed: Vec<String> = held
                .values
                .keys()
                .chain(now.values.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|key| differs(held.values.get(*key), now.values.get(*key)))
                .cloned()
                .collect();
            // All but the last change carry the position sent before this
            // read: a stream cut among them resumes early, never late.
            for (i, key) in changed.iter().enumerate() {
                let stamp = if i + 1 == changed.len() {
                    &position
                } else {
                    &sent_position
                };
                if self.change(stamp, key, now.values.get(key)).await.is_err() {
                    return;
                }
            }
            if changed.is_empty() && progress_due && self.progress(&position).await.is_err() {
                return;
            }
            if !changed.is_empty() || progress_due {
                sent_position = position;
                quiet_since = tokio::time::Instant::now();
                progress_due = false;
            }
            held = now;
        }
    }
}

/// The longest a watcher waits for a caller to take an event.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one tenant may hold on one agent, so that no tenant takes every
/// slot.
pub const MAX_WATCHES_PER_TENANT: usize = 256;

/// Counts each tenant's streams.
#[derive(Default)]
pub struct TenantWatches {
    counts: std::sync::Mutex<std::collections::HashMap<TenantId, usize>>,
}

/// One tenant's share of [`TenantWatches`], given back when dropped.
pub struct TenantPermit {
    watches: Arc<TenantWatches>,
    tenant: TenantId,
}

impl TenantWatches {
    /// A slot for `tenant`, unless it holds [`MAX_WATCHES_PER_TENANT`].
    pub fn acquire(self: &Arc<Self>, tenant: &TenantId) -> Option<TenantPermit> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(tenant.clone()).or_default();
        if *count >= MAX_WATCHES_PER_TENANT {
            return None;
        }
        *count += 1;
        Some(TenantPermit {
            watches: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for TenantPermit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.watches.counts.lock()
            && let Some(count) = counts.get_mut(&self.tenant)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// Checks a Watch request's keys: at most 50, each valid, none twice.
pub fn watched_keys(keys: &[String]) -> Result<Option<BTreeSet<ConfigKey>>, ConfigError> {
    if keys.is_empty() {
        return Ok(None);
    }
    if keys.len() > crate::reads::MAX_BATCH_KEYS {
        return Err(ConfigError::BadRequest(format!(
            "at most {} keys per watch",
            crate::reads::MAX_BATCH_KEYS
        )));
    }
    keys.iter()
        .map(|key| ConfigKey::parse(key))
        .collect::<Result<BTreeSet<_>, _>>()
        .map(Some)
}

/// The semaphore bounding one agent's streams.
pub fn watch_permits() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_the_journals_and_nothing_else() {
        assert_eq!(parse_position("0001764600000000").ok(), None);
        assert_eq!(
            parse_position("1764600000000").ok(),
            Some(1_764_600_000_000)
        );
        assert_eq!(
            parse_position("1764600000000#evt-1:a.b_c").ok(),
            Some(1_764_600_000_000)
        );
        for bad in [
            "",
            "176460000000",
            "17646000000x0",
            "1764600000000x",
            "1764600000000#a b",
        ] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stale_mark_is_no_change_but_a_version_is() {
        let value = |json: &str, version| ConfigValue {
            key: "k".into(),
            value_json: json.into(),
            source: "dynamodb".into(),
            version,
            stale_age_ms: None,
        };
        let mut stale = value("1", Some(1));
        stale.stale_age_ms = Some(500);
        assert!(!differs(Some(&value("1", Some(1))), Some(&stale)));
        assert!(differs(
            Some(&value("1", Some(1))),
            Some(&value("1", Some(2)))
        ));
        assert!(differs(Some(&value("1", Some(1))), None));
        assert!(!differs(None, None));
    }
}
