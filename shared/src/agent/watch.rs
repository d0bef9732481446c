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
use crate::catch_up::MAX_PAGES;
use crate::error::ConfigError;
use crate::reads::ConfigReads;
use crate::refresh::change::Subject;
use crate::refresh::journal::{JournalEntry, RETENTION, position_at};
use crate::refresh::proto::{
    ConfigValue, WatchChange, WatchEvent, WatchReset, WatchSnapshot, watch_event,
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

/// Whether a value a caller holds differs from one read now (a stale mark's
/// age is no change).
fn differs(held: Option<&ConfigValue>, now: Option<&ConfigValue>) -> bool {
    match (held, now) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            (a.value_json.as_str(), a.version, a.source.as_str())
                != (b.value_json.as_str(), b.version, b.source.as_str())
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

    async fn read(&self, reads: &ConfigReads) -> Result<Held, ConfigError> {
        let mut held = Held::default();
        match &self.keys {
            None => {
                let config = reads.get_service(&self.tenant, &self.service).await?;
                for (key, entry) in &config.values {
                    held.values
                        .insert(key.to_string(), config_value(key, entry));
                }
                held.sensitive = config.sensitive.iter().map(ToString::to_string).collect();
            }
            Some(keys) => {
                let mut asked: Vec<ConfigKey> = keys.iter().cloned().collect();
                // A key that became a SecureString is named, not read; the
                // others are read again without it.
                let batch = loop {
                    match reads.get_many(&self.tenant, &self.service, &asked).await {
                        Err(ConfigError::SensitiveValue { keys }) if !keys.is_empty() => {
                            asked.retain(|key| !keys.iter().any(|k| k == key.as_str()));
                            held.sensitive.extend(keys);
                            if asked.is_empty() {
                                break Default::default();
                            }
                        }
                        other => break other?,
                    }
                };
                for (key, entry) in &batch.values {
                    held.values
                        .insert(key.to_string(), config_value(key, entry));
                }
                held.missing = batch.missing.iter().map(ToString::to_string).collect();
                held.sensitive.sort();
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
        if from_ms < unix_ms_now() - RETENTION.as_millis() as i64 + overlap {
            return Err(format!(
                "the position is older than the journal keeps ({} h)",
                RETENTION.as_secs() / 3600
            ));
        }
        let journal = catch_up.journal();
        let page_size = settings.max_entries.max(1);
        let mut entries: Vec<JournalEntry> = Vec::new();
        let mut complete = false;
        let deadline = tokio::time::Instant::now() + settings.timeout * 4;
        for _ in 0..MAX_PAGES {
            let query = match entries.last() {
                None => journal.since(from_ms - overlap, page_size),
                Some(last) => journal.after(&last.position, page_size),
            };
            let page = match tokio::time::timeout_at(deadline, query).await {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    return Err(format!("the change journal could not be read: {error}"));
                }
                Err(_) => return Err("the change journal did not answer in time".to_owned()),
            };
            let full = page.len() >= page_size;
            entries.extend(page);
            if !full {
                complete = true;
                break;
            }
        }
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
    /// Held while the stream lasts (bounds the streams one agent serves).
    pub permit: OwnedSemaphorePermit,
}

impl Watcher {
    /// Where this reader stands in the journal now.
    fn position(&self) -> String {
        position_at(
            self.reads
                .catch_up()
                .map_or_else(unix_ms_now, |catch_up| catch_up.caught_up_ms()),
        )
    }

    async fn send(&self, event: watch_event::Event) -> Result<(), ()> {
        let event = WatchEvent {
            position: self.position(),
            event: Some(event),
        };
        self.events.send(Ok(event)).await.map_err(drop)
    }

    async fn snapshot(&self, held: &Held) -> Result<(), ()> {
        self.send(watch_event::Event::Snapshot(WatchSnapshot {
            values: held.values.values().cloned().collect(),
            missing: held.missing.clone(),
            sensitive: held.sensitive.clone(),
        }))
        .await
    }

    async fn change(&self, key: &str, value: Option<&ConfigValue>) -> Result<(), ()> {
        self.send(watch_event::Event::Change(WatchChange {
            key: key.to_owned(),
            value: value.cloned(),
        }))
        .await
    }

    /// Streams until the caller goes away or its token expires.
    pub async fn run(self, resume_from: Option<i64>) {
        let Some(feed) = self.reads.change_feed().cloned() else {
            let _ = self
                .events
                .send(Err(Status::unimplemented("this reader serves no Watch")))
                .await;
            return;
        };
        // Subscribed before the first read: nothing learned after it is missed.
        let mut notices = feed.subscribe();
        let replayed = match resume_from {
            Some(from_ms) => Some(self.watched.replay(&self.reads, from_ms).await),
            None => None,
        };
        let mut held = match self.watched.read(&self.reads).await {
            Ok(held) => held,
            Err(error) => {
                let _ = self.events.send(Err(status(&error))).await;
                return;
            }
        };
        let started = match replayed {
            None => self.snapshot(&held).await,
            Some(Err(reason)) => {
                tracing::info!(%reason, "watch: resumed with a reset");
                match self
                    .send(watch_event::Event::Reset(WatchReset { reason }))
                    .await
                {
                    Ok(()) => self.snapshot(&held).await,
                    Err(()) => Err(()),
                }
            }
            Some(Ok(Replayed::Everything)) => self.snapshot(&held).await,
            Some(Ok(Replayed::Keys(keys))) => {
                let mut sent = Ok(());
                for key in keys {
                    sent = self
                        .change(key.as_str(), held.values.get(key.as_str()))
                        .await;
                    if sent.is_err() {
                        break;
                    }
                }
                sent
            }
        };
        if started.is_err() {
            return;
        }
        let expires_in =
            Duration::from_secs(self.expires_at.saturating_sub(unix_ms_now() as u64 / 1000));
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut tick =
            tokio::time::interval(self.reads.catch_up().map_or(CATCH_UP_TICK, |catch_up| {
                catch_up.settings().interval.min(CATCH_UP_TICK)
            }));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        loop {
            tokio::select! {
                () = self.events.closed() => return,
                () = &mut expiry => {
                    let _ = self.events.send(Err(Status::unauthenticated(
                        "the token expired: watch again with a fresh one",
                    ))).await;
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
                // Learns what no push brought; its notices arrive above.
                _ = tick.tick() => self.reads.catch_up_if_due().await,
            }
            if !dirty {
                continue;
            }
            // A failing read leaves it dirty: tried again on the next tick.
            let Ok(now) = self.watched.read(&self.reads).await else {
                continue;
            };
            dirty = false;
            let keys: BTreeSet<String> = held
                .values
                .keys()
                .chain(now.values.keys())
                .cloned()
                .collect();
            for key in keys {
                let (before, after) = (held.values.get(&key), now.values.get(&key));
                if differs(before, after) && self.change(&key, after).await.is_err() {
                    return;
                }
            }
            held = now;
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
