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

/// A service's remembered values, in key order, its SecureStrings' names,
/// and whether a complete listing stands behind them.
pub struct RememberedService {
    pub values: Vec<(ConfigKey, Entry)>,
    pub sensitive: Vec<ConfigKey>,
    pub complete: bool,
}

/// How far in the future a read time from a file may be (clocks differ
/// slightly between the agent that wrote it and this one): past it the
/// entry is refused, not served as "fresh".
const CLOCK_TOLERANCE_MS: i64 = 60_000;

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
    /// Keys a just-started agent is reading in the background.
    probing: std::sync::Mutex<std::collections::HashSet<Key>>,
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
            probing: std::sync::Mutex::new(std::collections::HashSet::new()),
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

    /// Remembers a whole-service read: each value, and, when the listing
    /// was complete (not truncated), exactly its keys: a key no longer
    /// listed (deleted) or now a SecureString is forgotten, and the service
    /// is served whole from the snapshot, its SecureStrings by name.
    pub fn record_service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        values: &[(&ConfigKey, &Entry)],
        sensitive: &[ConfigKey],
        complete: bool,
    ) {
        for (key, entry) in values {
            self.record(tenant, service, key, entry);
        }
        if !complete {
            return;
        }
        let slot = (tenant.clone(), service.clone());
        let listed: std::collections::HashSet<&ConfigKey> =
            values.iter().map(|(k, _)| *k).collect();
        {
            let held = self.held.read().unwrap_or_else(|e| e.into_inner());
            let unchanged = held.sensitive.get(&slot).map(Vec::as_slice) == Some(sensitive)
                && !held
                    .values
                    .keys()
                    .any(|(t, s, k)| t == tenant && s == service && !listed.contains(k));
            if unchanged {
                return;
            }
        }
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<Key> = held
            .values
            .keys()
            .filter(|(t, s, k)| t == tenant && s == service && !listed.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = held.values.remove(&key) {
                held.bytes -= old.bytes(&key);
            }
        }
        held.sensitive.insert(slot, sensitive.to_vec());
        self.dirty.store(true, Ordering::Release);
    }

    /// Forgets every value of a tenant (made inactive: nothing of it may
    /// be served, from memory or disk).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<Key> = held
            .values
            .keys()
            .filter(|(t, _, _)| t == tenant)
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for key in gone {
            if let Some(old) = held.values.remove(&key) {
                held.bytes -= old.bytes(&key);
            }
        }
        held.sensitive.retain(|(t, _), _| t != tenant);
        self.dirty.store(true, Ordering::Release);
    }

    /// Starts the one background read of a key its snapshot holds that a
    /// just-started agent makes; false when one is in flight already.
    pub fn begin_probe(&self, tenant: &TenantId, service: &ServiceName, key: &ConfigKey) -> bool {
        self.probing
            .lock()
            .map(|mut probing| probing.insert((tenant.clone(), service.clone(), key.clone())))
            .unwrap_or(false)
    }

    pub fn end_probe(&self, tenant: &TenantId, service: &ServiceName, key: &ConfigKey) {
        if let Ok(mut probing) = self.probing.lock() {
            probing.remove(&(tenant.clone(), service.clone(), key.clone()));
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
        self.find(tenant, service, key, |kept| kept.served.is_none())
    }

    /// The remembered value of a key, stale, if it is within the bound.
    pub fn lookup(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Option<Entry> {
        self.find(tenant, service, key, |_| true)
    }

    fn find(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
        wanted: impl FnOnce(&Kept) -> bool,
    ) -> Option<Entry> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let kept = held
            .values
            .get(&(tenant.clone(), service.clone(), key.clone()))?;
        wanted(kept).then(|| self.entry(kept)).flatten()
    }

    /// Every remembered value of a service, in key order, stale; the
    /// SecureStrings its last complete whole-service read named; and
    /// whether there was one (else the values are only those read alone).
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
        let listed = held.sensitive.get(&(tenant.clone(), service.clone()));
        Some(RememberedService {
            values,
            sensitive: listed.cloned().unwrap_or_default(),
            complete: listed.is_some(),
        })
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

    /// The snapshot's plaintext, within the bound: while the serialized
    /// form (the real size, escaping and names included) is over it, the
    /// values read longest ago go.
    fn to_bounded_json(&self) -> Result<Vec<u8>, SealError> {
        loop {
            let json = serde_json::to_vec(&self.to_snapshot())
                .map_err(|_| SealError::Malformed("the snapshot does not serialize"))?;
            if json.len() <= self.max_bytes {
                return Ok(json);
            }
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            if held.values.is_empty() {
                return Err(SealError::Malformed(
                    "the snapshot's names alone exceed its bound",
                ));
            }
            let target = held.bytes.saturating_sub(held.bytes / 10 + 1);
            evict_oldest(&mut held, target);
        }
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
            if now.saturating_sub(value.kept.read_at_ms) > self.serve_for.as_millis() as i64
                || value.kept.read_at_ms > now + CLOCK_TOLERANCE_MS
            {
                continue;
            }
            let key = (tenant, service, key);
            // What this process read already is newer than the file.
            if held.values.contains_key(&key) {
                continue;
            }
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
            held.sensitive.entry((tenant, service)).or_insert(keys);
        }
        for (client, grant) in snapshot.grants {
            if held.grants.len() >= MAX_GRANTS || grant.read_at_ms > now + CLOCK_TOLERANCE_MS {
                continue;
            }
            held.grants.entry(client).or_insert(grant);
        }
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
    /// This process's data key, generated at its first write: one key per
    /// process, never the one the file was sealed with (a nonce space per
    /// key of at most a process's writes).
    key: tokio::sync::Mutex<Option<DataKey>>,
    /// Set when the file exists but could not be opened for want of a data
    /// key (KMS unreachable or slow): it is opened again before the first
    /// write, so a transient KMS failure does not overwrite a good snapshot
    /// with the little this process has served.
    pending_open: AtomicBool,
}

/// Bytes a sealed file may hold beyond its plaintext bound (header, key, tag).
const SEAL_OVERHEAD: u64 = 64 * 1024;

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
        let warm = Self {
            values,
            settings,
            keys,
            key: tokio::sync::Mutex::new(None),
            pending_open: AtomicBool::new(false),
        };
        warm.open_file().await;
        warm
    }

    /// Reads the file into the values (what is there is kept: an entry this
    /// process read is newer than the file's).
    async fn open_file(&self) {
        let read = tokio::time::timeout(OPEN_TIMEOUT, self.read())
            .await
            .unwrap_or(Err(SealError::DataKey(format!(
                "no data key within {OPEN_TIMEOUT:?}"
            ))));
        let path = self.settings.path.display();
        self.pending_open.store(false, Ordering::Release);
        match read {
            Ok(Some(snapshot)) => {
                let written_at_ms = snapshot.written_at_ms;
                let restored = self.values.restore(snapshot);
                tracing::info!(
                    path = %path,
                    values = restored,
                    age_ms = unix_ms_now().saturating_sub(written_at_ms),
                    "warm start: opened the snapshot"
                );
            }
            Ok(None) => tracing::info!(path = %path, "warm start: no snapshot yet"),
            Err(error @ SealError::DataKey(_)) => {
                self.pending_open.store(true, Ordering::Release);
                tracing::warn!(path = %path, %error, "warm start: the snapshot cannot be opened now; starting cold, trying again before the first write");
            }
            Err(error) => {
                tracing::warn!(path = %path, %error, "warm start: the snapshot cannot be opened; starting cold")
            }
        }
    }

    async fn read(&self) -> Result<Option<Snapshot>, SealError> {
        let path = self.settings.path.clone();
        let limit = self.settings.max_bytes as u64 + SEAL_OVERHEAD;
        let Some(file) = tokio::task::spawn_blocking(move || sealed::read_bounded(&path, limit))
            .await
            .map_err(|e| SealError::Io(std::io::Error::other(e)))??
        else {
            return Ok(None);
        };
        let data_key = self.keys.decrypt(sealed::encrypted_key(&file)?).await?;
        let plaintext = zeroize::Zeroizing::new(sealed::open(&data_key, &file)?);
        let snapshot = serde_json::from_slice(&plaintext)
            .map_err(|_| SealError::Malformed("the plaintext is not a snapshot"))?;
        Ok(Some(snapshot))
    }

    /// Writes the snapshot if anything changed since the last write. One
    /// write at a time: a caller waits for one in flight, then writes what
    /// changed since.
    pub async fn write_if_changed(&self) -> Result<bool, SealError> {
        let mut key = self.key.lock().await;
        if self.pending_open.load(Ordering::Acquire) {
            self.open_file().await;
            if self.pending_open.load(Ordering::Acquire) {
                return Err(SealError::DataKey(
                    "the snapshot on disk is not opened yet; not overwriting it".into(),
                ));
            }
        }
        if !self.values.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let written = self.write(&mut key).await;
        if written.is_err() {
            self.values.dirty.store(true, Ordering::Release);
        }
        written.map(|()| true)
    }

    async fn write(&self, key: &mut Option<DataKey>) -> Result<(), SealError> {
        let plaintext = zeroize::Zeroizing::new(self.values.to_bounded_json()?);
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

    /// Writes what changed since the last write (waiting for a write in
    /// flight), as the agent stops.
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
        let service = second.values.service(&t, &s).unwrap();
        assert_eq!(service.values.len(), 2);
        assert!(!service.complete, "read key by key, never listed whole");
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

    #[test]
    fn a_complete_listing_forgets_what_it_no_longer_holds_and_an_inactive_tenant_goes() {
        let lkg = LastKnownGood::new(1 << 20, Duration::from_secs(3600));
        let (t, s, kept) = names("tenant_config_kept");
        let (_, _, deleted) = names("tenant_config_deleted");
        let (_, _, turned) = names("param_config_now_secret");
        for key in [&kept, &deleted, &turned] {
            lkg.record(&t, &s, key, &fresh(json!("v"), 1));
        }
        // WHEN a truncated listing holds only one THEN nothing is forgotten
        let one = fresh(json!("v"), 1);
        lkg.record_service(&t, &s, &[(&kept, &one)], &[], false);
        assert_eq!(lkg.len(), 3);
        assert!(!lkg.service(&t, &s).unwrap().complete);
        // WHEN a complete listing holds one and names another a SecureString
        lkg.record_service(
            &t,
            &s,
            &[(&kept, &one)],
            std::slice::from_ref(&turned),
            true,
        );
        // THEN the deleted and the secret are gone; the service is served whole
        assert!(lkg.lookup(&t, &s, &deleted).is_none());
        assert!(lkg.lookup(&t, &s, &turned).is_none());
        let service = lkg.service(&t, &s).unwrap();
        assert!(service.complete);
        assert_eq!(service.sensitive, vec![turned]);
        assert_eq!(service.values.len(), 1);
        // WHEN the tenant is made inactive THEN nothing of it remains
        lkg.forget_tenant(&t);
        assert!(lkg.service(&t, &s).is_none());
        assert!(lkg.is_empty());
    }

    #[test]
    fn a_read_time_from_the_future_is_refused_on_restore() {
        let lkg = LastKnownGood::new(1 << 20, Duration::from_secs(3600));
        let now = unix_ms_now();
        let value = |key: &str, read_at_ms: i64| SnapshotValue {
            tenant: "tenant-a".into(),
            service: "billing".into(),
            key: key.into(),
            kept: Kept {
                value: json!(1),
                version: None,
                source: StoreKind::DynamoDb,
                read_at_ms,
                sequence: 0,
                served: None,
            },
        };
        let restored = lkg.restore(Snapshot {
            written_at_ms: now,
            values: vec![
                value("tenant_config_past", now - 1_000),
                value("tenant_config_future", now + 3_600_000),
                value("tenant_config_too_old", now - 7_200_000),
            ],
            sensitive: vec![],
            grants: HashMap::new(),
        });
        assert_eq!(restored, 1);
    }
}
