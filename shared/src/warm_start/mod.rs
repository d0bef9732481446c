//! An agent's warm start: the values it served last, kept on local disk
//! encrypted, so an agent that starts while its stores are unreachable
//! answers from them (marked stale) instead of failing.
//!
//! - [`LastKnownGood`] remembers each effective value a read answered fresh
//!   (never a SecureString: the reads that record never return one) and
//!   each whole-service read's keys; a read that finds no value forgets it.
//!   It is bounded in bytes: past the bound, the values read longest ago go.
//! - Every interval, if anything changed, the writer seals it
//!   ([`sealed`]: AES-256-GCM under a KMS data key) and replaces the file
//!   atomically; once more when the agent stops.
//! - At start the file is opened (KMS decrypts its data key) before the
//!   listener binds; entries older than the stale bound are dropped.
//! - A read whose stores fail (502/503) and that has no value of its own to
//!   fall back on answers the remembered value, stale, with its age
//!   ([`crate::reads::ConfigReads::with_last_known_good`]). Once the stores
//!   answer, reads are fresh again and record anew.

pub mod kms;
pub mod sealed;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{PlainValue, ValueKind};
use crate::grants::Grant;
use crate::kinds::StoreKind;
use crate::reads::Entry;
use crate::refresh::signing::unix_ms_now;
use crate::validate::{ConfigKey, ServiceName, TenantId};
use sealed::{DataKey, SealError, SharedDataKeys};

/// How long opening the snapshot (KMS decrypting its data key) may hold
/// up an agent's start before it starts cold.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an agent's first read of a key in its snapshot waits for the
/// stores before answering the snapshot's value (stale); the read goes on
/// and its answer serves the next reads. Without it a start with the stores
/// unreachable would wait out the SDK's retries (seconds) per first read.
pub const FIRST_READ_DEADLINE: Duration = Duration::from_millis(25);

/// Where and how an agent keeps its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmStartSettings {
    /// The snapshot file (`AGENT_SNAPSHOT_FILE`).
    pub path: PathBuf,
    /// The KMS key its data keys come from (`AGENT_SNAPSHOT_KMS_KEY_ID`).
    pub kms_key_id: String,
    /// The most the snapshot may hold, in bytes of values and names
    /// (`AGENT_SNAPSHOT_MAX_BYTES`).
    pub max_bytes: usize,
    /// How often a changed snapshot is written (`AGENT_SNAPSHOT_INTERVAL_SECS`).
    pub interval: Duration,
}

/// One remembered value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kept {
    value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    source: StoreKind,
    /// When the value was read (Unix ms): its age when served.
    read_at_ms: i64,
    /// Order of recording in this process: which went first when several
    /// were read in the same millisecond.
    #[serde(skip)]
    sequence: u64,
    /// The value as last served: a read answering this very value again
    /// (a cache hit) is recognised by pointer, without comparing JSON.
    #[serde(skip)]
    served: Option<Arc<PlainValue>>,
}

impl Kept {
    fn bytes(&self, key: &Key) -> usize {
        // An estimate: the JSON the value serializes to, plus the names.
        estimate(&self.value)
            + key.0.as_str().len()
            + key.1.as_str().len()
            + key.2.as_str().len()
            + 48
    }
}

fn estimate(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(estimate).sum::<usize>() + 2,
        Value::Object(members) => {
            members
                .iter()
                .map(|(k, v)| k.len() + 3 + estimate(v))
                .sum::<usize>()
                + 2
        }
    }
}

type Key = (TenantId, ServiceName, ConfigKey);

/// App clients' grants kept at most (each a few names).
const MAX_GRANTS: usize = 1_000;

/// A service's remembered values, in key order, and its SecureStrings' names.
pub type RememberedService = (Vec<(ConfigKey, Entry)>, Vec<ConfigKey>);

#[derive(Default)]
struct Held {
    values: HashMap<Key, Kept>,
    /// Per app client, its service grant (`None`: it has none) and when it
    /// was read: without them an agent enforcing grants serves nothing
    /// while the table is unreachable.
    grants: HashMap<String, KeptGrant>,
    /// Per tenant and service, the SecureStrings' names a whole-service
    /// read listed (names only: never a value).
    sensitive: HashMap<(TenantId, ServiceName), Vec<ConfigKey>>,
    bytes: usize,
}

/// The effective values an agent served, to start from.
pub struct LastKnownGood {
    held: RwLock<Held>,
    /// Changed since the last write.
    dirty: AtomicBool,
    recorded: std::sync::atomic::AtomicU64,
    max_bytes: usize,
    /// How old a value may be and still be served (the stale bound).
    serve_for: Duration,
}

/// The snapshot's plaintext.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    written_at_ms: i64,
    values: Vec<SnapshotValue>,
    #[serde(default)]
    sensitive: Vec<SnapshotNames>,
    #[serde(default)]
    grants: HashMap<String, KeptGrant>,
}

/// An app client's grant as last read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeptGrant {
    grant: Option<KeptServices>,
    read_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeptServices {
    services: std::collections::BTreeSet<String>,
    secure_services: std::collections::BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotValue {
    tenant: String,
    service: String,
    key: String,
    #[serde(flatten)]
    kept: Kept,
}

#[derive(Serialize, Deserialize)]
struct SnapshotNames {
    tenant: String,
    service: String,
    keys: Vec<String>,
}

impl LastKnownGood {
    pub fn new(max_bytes: usize, serve_for: Duration) -> Self {
        Self {
            held: RwLock::new(Held::default()),
            dirty: AtomicBool::new(false),
            recorded: std::sync::atomic::AtomicU64::new(1),
            max_bytes,
            serve_for,
        }
    }

    /// Remembers what a fresh read answered (a stale answer is not news).
    pub fn record(&self, tenant: &TenantId, service: &ServiceName, key: &ConfigKey, entry: &Entry) {
        if entry.stale.is_some() || entry.value.kind == ValueKind::Secret {
            return;
        }
        let key = (tenant.clone(), service.clone(), key.clone());
        let same_value = {
            let held = self.held.read().unwrap_or_else(|e| e.into_inner());
            match held.values.get(&key) {
                Some(kept)
                    if kept
                        .served
                        .as_ref()
                        .is_some_and(|served| Arc::ptr_eq(served, &entry.value)) =>
                {
                    return;
                }
                Some(kept) => {
                    kept.version == entry.value.version
                        && kept.source == entry.source
                        && kept.value == entry.value.value
                }
                None => false,
            }
        };
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        if same_value {
            // The same value from another load: read fresh now.
            if let Some(kept) = held.values.get_mut(&key) {
                kept.served = Some(Arc::clone(&entry.value));
                kept.read_at_ms = unix_ms_now();
            }
            self.dirty.store(true, Ordering::Release);
            return;
        }
        let kept = Kept {
            value: entry.value.value.clone(),
            version: entry.value.version,
            source: entry.source,
            read_at_ms: unix_ms_now(),
            sequence: self.recorded.fetch_add(1, Ordering::Relaxed),
            served: Some(Arc::clone(&entry.value)),
        };
        let added = kept.bytes(&key);
        if let Some(old) = held.values.insert(key.clone(), kept) {
            held.bytes -= old.bytes(&key);
        }
        held.bytes += added;
        if held.bytes > self.max_bytes {
            evict_oldest(&mut held, self.max_bytes * 9 / 10);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Remembers which SecureStrings a whole-service read named.
    pub fn record_sensitive(&self, tenant: &TenantId, service: &ServiceName, keys: &[ConfigKey]) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let slot = (tenant.clone(), service.clone());
        if held.sensitive.get(&slot).map(Vec::as_slice) != Some(keys) {
            held.sensitive.insert(slot, keys.to_vec());
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Forgets a key a read found without a value (deleted, or now a secret).
    pub fn forget(&self, tenant: &TenantId, service: &ServiceName, key: &ConfigKey) {
        let key = (tenant.clone(), service.clone(), key.clone());
        if !self
            .held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values
            .contains_key(&key)
        {
            return;
        }
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = held.values.remove(&key) {
            held.bytes -= old.bytes(&key);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// The remembered value of a key if it came from the snapshot and no
    /// read in this process has confirmed it yet (an agent just started):
    /// what a first read races the stores with.
    pub fn unconfirmed(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Option<Entry> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let kept = held
            .values
            .get(&(tenant.clone(), service.clone(), key.clone()))?;
        if kept.served.is_some() {
            return None;
        }
        self.entry(kept)
    }

    /// The remembered value of a key, stale, if it is within the bound.
    pub fn lookup(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Option<Entry> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let kept = held
            .values
            .get(&(tenant.clone(), service.clone(), key.clone()))?;
        self.entry(kept)
    }

    /// Every remembered value of a service, in key order, stale, and the
    /// SecureStrings its last whole-service read named.
    pub fn service(&self, tenant: &TenantId, service: &ServiceName) -> Option<RememberedService> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let mut values: Vec<(ConfigKey, Entry)> = held
            .values
            .iter()
            .filter(|((t, s, _), _)| t == tenant && s == service)
            .filter_map(|((_, _, key), kept)| Some((key.clone(), self.entry(kept)?)))
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let sensitive = held
            .sensitive
            .get(&(tenant.clone(), service.clone()))
            .cloned()
            .unwrap_or_default();
        Some((values, sensitive))
    }

    fn entry(&self, kept: &Kept) -> Option<Entry> {
        let age =
            Duration::from_millis(unix_ms_now().saturating_sub(kept.read_at_ms).max(0) as u64);
        (age <= self.serve_for).then(|| Entry {
            source: kept.source,
            value: Arc::new(PlainValue {
                value: kept.value.clone(),
                version: kept.version,
                kind: ValueKind::Plain,
                written: Default::default(),
            }),
            // At least a millisecond: a value from the snapshot is never fresh.
            stale: Some(age.max(Duration::from_millis(1))),
        })
    }

    /// Remembers an app client's grant as read (`None`: it has none).
    pub fn record_grant(&self, client: &str, grant: Option<&Grant>) {
        let kept = grant.map(|g| KeptServices {
            services: g.services.clone(),
            secure_services: g.secure_services.clone(),
        });
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let now = unix_ms_now();
        match held.grants.get_mut(client) {
            // Re-read within the interval: not worth a write of its own.
            Some(known) if known.grant == kept && now - known.read_at_ms < 60_000 => {}
            _ => {
                if held.grants.len() >= MAX_GRANTS && !held.grants.contains_key(client) {
                    return;
                }
                held.grants.insert(
                    client.to_owned(),
                    KeptGrant {
                        grant: kept,
                        read_at_ms: now,
                    },
                );
                self.dirty.store(true, Ordering::Release);
            }
        }
    }

    /// An app client's grant as last read, if read within `max_age`:
    /// `Some(None)` when it had none.
    pub fn grant(&self, client: &str, max_age: Duration) -> Option<Option<Grant>> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let kept = held.grants.get(client)?;
        let age = unix_ms_now().saturating_sub(kept.read_at_ms);
        (age <= max_age.as_millis() as i64).then(|| {
            kept.grant.as_ref().map(|g| Grant {
                services: g.services.clone(),
                secure_services: g.secure_services.clone(),
            })
        })
    }

    /// How many values are remembered.
    pub fn len(&self) -> usize {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_snapshot(&self) -> Snapshot {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            written_at_ms: unix_ms_now(),
            values: held
                .values
                .iter()
                .map(|((tenant, service, key), kept)| SnapshotValue {
                    tenant: tenant.to_string(),
                    service: service.to_string(),
                    key: key.to_string(),
                    kept: kept.clone(),
                })
                .collect(),
            sensitive: held
                .sensitive
                .iter()
                .map(|((tenant, service), keys)| SnapshotNames {
                    tenant: tenant.to_string(),
                    service: service.to_string(),
                    keys: keys.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            grants: held.grants.clone(),
        }
    }

    /// Fills from a snapshot; names that do not validate are skipped (the
    /// file was written by an agent, but is read as hostile all the same).
    fn restore(&self, snapshot: Snapshot) -> usize {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let now = unix_ms_now();
        for value in snapshot.values {
            let (Ok(tenant), Ok(service), Ok(key)) = (
                TenantId::parse(&value.tenant),
                ServiceName::parse(&value.service),
                ConfigKey::parse(&value.key),
            ) else {
                continue;
            };
            if now.saturating_sub(value.kept.read_at_ms) > self.serve_for.as_millis() as i64 {
                continue;
            }
            let key = (tenant, service, key);
            held.bytes += value.kept.bytes(&key);
            held.values.insert(key, value.kept);
        }
        for names in snapshot.sensitive {
            let (Ok(tenant), Ok(service)) = (
                TenantId::parse(&names.tenant),
                ServiceName::parse(&names.service),
            ) else {
                continue;
            };
            let keys = names
                .keys
                .iter()
                .filter_map(|k| ConfigKey::parse(k).ok())
                .collect();
            held.sensitive.insert((tenant, service), keys);
        }
        held.grants = snapshot.grants.into_iter().take(MAX_GRANTS).collect();
        if held.bytes > self.max_bytes {
            evict_oldest(&mut held, self.max_bytes);
        }
        held.values.len()
    }
}

/// Drops the values read longest ago until `held` fits in `target` bytes.
fn evict_oldest(held: &mut Held, target: usize) {
    let mut by_age: Vec<((i64, u64), Key)> = held
        .values
        .iter()
        .map(|(key, kept)| ((kept.read_at_ms, kept.sequence), key.clone()))
        .collect();
    by_age.sort_by_key(|(at, _)| *at);
    for (_, key) in by_age {
        if held.bytes <= target {
            break;
        }
        if let Some(old) = held.values.remove(&key) {
            held.bytes -= old.bytes(&key);
        }
    }
}

/// The warm start of one agent: its [`LastKnownGood`], its file and keys.
pub struct WarmStart {
    pub values: Arc<LastKnownGood>,
    settings: WarmStartSettings,
    keys: SharedDataKeys,
    /// The data key in use: the snapshot's own when one was opened, else
    /// one generated at the first write.
    key: tokio::sync::Mutex<Option<DataKey>>,
}

impl WarmStart {
    /// Opens the snapshot at `settings.path` if there is one. A missing file
    /// is a cold start; a file that cannot be opened (damaged, another key,
    /// KMS unreachable) is logged and the agent starts cold, never stops.
    pub async fn open(
        settings: WarmStartSettings,
        keys: SharedDataKeys,
        serve_for: Duration,
    ) -> Self {
        let values = Arc::new(LastKnownGood::new(settings.max_bytes, serve_for));
        let mut key = None;
        let read = tokio::time::timeout(OPEN_TIMEOUT, Self::read(&settings, keys.as_ref()))
            .await
            .unwrap_or(Err(SealError::DataKey(format!(
                "no data key within {OPEN_TIMEOUT:?}"
            ))));
        match read {
            Ok(Some((snapshot, data_key))) => {
                let written_at_ms = snapshot.written_at_ms;
                let restored = values.restore(snapshot);
                tracing::info!(
                    path = %settings.path.display(),
                    values = restored,
                    age_ms = unix_ms_now().saturating_sub(written_at_ms),
                    "warm start: opened the snapshot"
                );
                key = Some(data_key);
            }
            Ok(None) => {
                tracing::info!(path = %settings.path.display(), "warm start: no snapshot yet")
            }
            Err(error) => {
                tracing::warn!(path = %settings.path.display(), %error, "warm start: the snapshot cannot be opened; starting cold")
            }
        }
        Self {
            values,
            settings,
            keys,
            key: tokio::sync::Mutex::new(key),
        }
    }

    async fn read(
        settings: &WarmStartSettings,
        keys: &dyn sealed::DataKeys,
    ) -> Result<Option<(Snapshot, DataKey)>, SealError> {
        let file = match std::fs::read(&settings.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Sealing adds a few hundred bytes; the plaintext JSON may be twice
        // the estimate of what it holds.
        if file.len() > settings.max_bytes * 2 + 64 * 1024 {
            return Err(SealError::Malformed("larger than the snapshot bound"));
        }
        let data_key = keys.decrypt(sealed::encrypted_key(&file)?).await?;
        let plaintext = sealed::open(&data_key, &file)?;
        let snapshot = serde_json::from_slice(&plaintext)
            .map_err(|_| SealError::Malformed("the plaintext is not a snapshot"))?;
        Ok(Some((snapshot, data_key)))
    }

    /// Writes the snapshot if anything changed since the last write.
    pub async fn write_if_changed(&self) -> Result<bool, SealError> {
        if !self.values.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let written = self.write().await;
        if written.is_err() {
            self.values.dirty.store(true, Ordering::Release);
        }
        written.map(|()| true)
    }

    async fn write(&self) -> Result<(), SealError> {
        let plaintext = serde_json::to_vec(&self.values.to_snapshot())
            .map_err(|_| SealError::Malformed("the snapshot does not serialize"))?;
        let mut key = self.key.lock().await;
        if key.is_none() {
            *key = Some(self.keys.generate().await?);
        }
        let Some(data_key) = key.as_ref() else {
            return Err(SealError::DataKey("no data key".into()));
        };
        let file = sealed::seal(data_key, &plaintext)?;
        let path = self.settings.path.clone();
        tokio::task::spawn_blocking(move || sealed::replace_atomically(&path, &file))
            .await
            .map_err(|e| SealError::Io(std::io::Error::other(e)))?
    }

    /// Writes what changed since the last write, as the agent stops.
    pub async fn write_last(&self) {
        match self.write_if_changed().await {
            Ok(written) => tracing::info!(written, "warm start: the snapshot is current"),
            Err(error) => tracing::warn!(%error, "warm start: the last snapshot was not written"),
        }
    }

    /// Writes every interval until `stop` resolves, then once more.
    pub async fn keep_written(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            if let Err(error) = self.write_if_changed().await {
                tracing::warn!(%error, "warm start: the snapshot was not written; retrying next interval");
            }
        }
        self.write_last().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealed::MemoryDataKeys;
    use serde_json::json;

    fn names(key: &str) -> (TenantId, ServiceName, ConfigKey) {
        (
            TenantId::parse("tenant-a").unwrap(),
            ServiceName::parse("billing").unwrap(),
            ConfigKey::parse(key).unwrap(),
        )
    }

    fn fresh(value: Value, version: i64) -> Entry {
        Entry {
            source: StoreKind::DynamoDb,
            value: Arc::new(PlainValue {
                value,
                version: Some(version),
                kind: ValueKind::Plain,
                written: Default::default(),
            }),
            stale: None,
        }
    }

    fn settings(path: PathBuf, max_bytes: usize) -> WarmStartSettings {
        WarmStartSettings {
            path,
            kms_key_id: "alias/test".into(),
            max_bytes,
            interval: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn values_served_fresh_come_back_stale_after_a_restart_and_nothing_else_does() {
        let directory = std::env::temp_dir().join(format!("warm-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("agent.snapshot");
        let keys: SharedDataKeys = Arc::new(MemoryDataKeys::default());
        // GIVEN an agent that served two values fresh, one stale, and found one gone
        let first = WarmStart::open(
            settings(path.clone(), 1 << 20),
            keys.clone(),
            Duration::from_secs(3600),
        )
        .await;
        let (t, s, limits) = names("tenant_config_limits");
        let (_, _, seats) = names("tenant_config_seats");
        let (_, _, gone) = names("tenant_config_gone");
        first
            .values
            .record(&t, &s, &limits, &fresh(json!({"rps": 5}), 3));
        first.values.record(&t, &s, &seats, &fresh(json!(25), 1));
        first.values.record(&t, &s, &gone, &fresh(json!("x"), 1));
        first.values.forget(&t, &s, &gone);
        let mut stale = fresh(json!(99), 9);
        stale.stale = Some(Duration::from_secs(5));
        first.values.record(&t, &s, &seats, &stale);
        assert!(first.write_if_changed().await.unwrap());
        assert!(
            !first.write_if_changed().await.unwrap(),
            "nothing changed since"
        );
        // THEN the file holds no value in the clear
        let file = std::fs::read(&path).unwrap();
        assert!(!file.windows(4).any(|w| w == b"\"rps"));
        // WHEN another agent starts from it
        let second = WarmStart::open(
            settings(path.clone(), 1 << 20),
            keys,
            Duration::from_secs(3600),
        )
        .await;
        // THEN what was served fresh is answered, marked stale
        let seats_now = second.values.lookup(&t, &s, &seats).unwrap();
        assert_eq!(seats_now.value.value, json!(25));
        assert_eq!(seats_now.value.version, Some(1));
        assert!(seats_now.stale.is_some());
        assert!(second.values.lookup(&t, &s, &gone).is_none());
        let (service, _) = second.values.service(&t, &s).unwrap();
        assert_eq!(service.len(), 2);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn the_bound_keeps_the_values_read_last() {
        let lkg = LastKnownGood::new(2_000, Duration::from_secs(3600));
        let (t, s, _) = names("k");
        for i in 0..100 {
            let key = ConfigKey::parse(&format!("tenant_config_k{i:03}")).unwrap();
            lkg.record(&t, &s, &key, &fresh(json!("v".repeat(50)), i));
        }
        assert!(lkg.held.read().unwrap().bytes <= 2_000);
        assert!(lkg.len() < 100 && lkg.len() > 5, "{}", lkg.len());
        let last = ConfigKey::parse("tenant_config_k099").unwrap();
        assert!(lkg.lookup(&t, &s, &last).is_some(), "the newest stays");
        let first = ConfigKey::parse("tenant_config_k000").unwrap();
        assert!(lkg.lookup(&t, &s, &first).is_none(), "the oldest went");
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_snapshot_starts_cold() {
        let directory = std::env::temp_dir().join(format!("warm-bad-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("agent.snapshot");
        std::fs::write(&path, b"not a snapshot").unwrap();
        let keys: SharedDataKeys = Arc::new(MemoryDataKeys::default());
        let started =
            WarmStart::open(settings(path, 1 << 20), keys, Duration::from_secs(3600)).await;
        assert!(started.values.is_empty());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
