//! (19) Past one fleet: thousands of readers as light in-process tasks, each
//! the real reader code (a `CachedStore`, a `CatchUp` over the stack's
//! journal table in moto, and with the change feed a `NoticeFollower` on its
//! own MQTT connection to the stack's broker), against the local stack's
//! real change path: a burst of DynamoDB writes → the stream mapping →
//! config-refresh under cargo lambda watch → journal (+ sequence numbers) →
//! notices. Some readers are paused (their tasks not polled, as a stopped
//! process) and some cut off (connection and journal unreachable) during the
//! burst, then healed.
//!
//! Counted: journal Queries per second the readers make (the store cost of
//! change detection) while nothing changes and during the burst; per reader
//! and change, the time from the write to the reader dropping its entry
//! (its next read then loads the new value); readers left stale.
//!
//! Today's design (no feed: every reader polls the journal every 2 s as it
//! reads) runs beside it, first; in a full run each design and size on a
//! fresh stack of its own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tenant_config_admin::values::put_item;
use tenant_config_local_stack::stack::{LocalStack, SERVICE, StackOptions, TABLE};
use tenant_config_shared::ItemKey;
use tenant_config_shared::StoreKind;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::cache::{CacheSettings, CachedStore, StaleIfError};
use tenant_config_shared::catch_up::{CatchUp, CatchUpSettings, Invalidate};
use tenant_config_shared::domain::{Changed, ReadMode};
use tenant_config_shared::error::ConfigError;
use tenant_config_shared::notices::feed::FeedSettings;
use tenant_config_shared::notices::follower::{FollowerSettings, NoticeFollower};
use tenant_config_shared::notices::mqtt::{Connector, follow};
use tenant_config_shared::refresh::change::{ChangeRecord, Subject};
use tenant_config_shared::refresh::journal::{ChangeJournal, JournalEntry, JournalError};
use tenant_config_shared::refresh::signing::TrustedKeys;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::values::plain;

use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

const TENANT: &str = "tenant-a";
/// How often each reader reads (one of the burst's keys, in turn).
const READ_EVERY: Duration = Duration::from_secs(1);
/// The window store calls are counted over while nothing changes (the
/// smoke run's: shorter).
const QUIET: Duration = Duration::from_secs(10);
const QUIET_SMOKE: Duration = Duration::from_secs(3);
/// How long after the burst every healthy reader must have every change.
const SETTLE: Duration = Duration::from_secs(30);
/// How long after the heal every troubled reader may take to have every
/// change: each cut-off one reads the burst's entries from the journal, five
/// hundred of them at once at full size, and one moto process answers a
/// Query of a hundred entries in about half a second (DynamoDB in
/// milliseconds), four at a time.
const HEAL_LIMIT: Duration = Duration::from_secs(300);
/// The least time troubled readers stay paused or cut off: past the
/// catch-up's 10 s overlap, so that a healed reader that read the journal
/// only from where it was would miss what came before.
const TROUBLE_AT_LEAST: Duration = Duration::from_secs(15);
/// Journal calls in flight to moto at once (see [`ReachableJournal`]).
const MOTO_CONNECTIONS: usize = 4;
/// Readers started a second: each start reads the journal once, and one
/// moto process answers about a hundred Queries a second on this machine
/// (besides the functions' own calls).
const STARTS_PER_SEC: u64 = 40;
/// How long a simulated reader's journal read may wait: its turn at one of
/// moto's four connections, then moto's answer. The agents' 500 ms is what
/// DynamoDB answers well within; against moto, readers that gave up would
/// queue again behind the others and the heal's reads would never clear.
const SIMULATED_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Overrides the change feed's reader count of a full run (working on the
/// figure: a smaller fleet runs sooner). RESULTS.md's run leaves it unset.
const READERS_VARIABLE: &str = "BENCH_SCALE_READERS";
/// Overrides the polling sizes (of a smoke run too): comma-separated reader
/// counts, empty for none (working on the feed's figure alone; figure 19b
/// then has no polling rate to price and is left out).
const POLLING_VARIABLE: &str = "BENCH_SCALE_POLLING";
/// The bounds.
const CALLS_TARGET: f64 = 50.0;
const P50_TARGET: Duration = Duration::from_secs(1);
const P99_TARGET: Duration = Duration::from_secs(2);

/// One simulated reader's cache, recording when it dropped what.
struct Reader {
    cache: CachedStore,
    drops: Mutex<Vec<(String, Instant)>>,
}

/// What the catch-up and the follower drop entries from.
#[derive(Clone)]
struct Drops(Arc<Reader>);

impl Invalidate for Drops {
    async fn invalidate(&self, subject: &Subject, change: Changed) -> Result<(), ConfigError> {
        if let Subject::Entry(item) = subject {
            self.0.cache.invalidate(item, change).await;
            if let Ok(mut drops) = self.0.drops.lock() {
                drops.push((item.key.to_string(), Instant::now()));
            }
        }
        Ok(())
    }

    fn invalidate_all(&self) {
        self.0.cache.invalidate_all();
        if let Ok(mut drops) = self.0.drops.lock() {
            drops.push(("*".to_owned(), Instant::now()));
        }
    }
}

/// The journal as one reader reaches it: unreachable while the reader is cut
/// off.
struct ReachableJournal {
    journal: Arc<dyn ChangeJournal>,
    cut: Arc<AtomicBool>,
    /// Calls that reached the journal table, the fleet's total.
    calls: Arc<AtomicUsize>,
    /// Calls of this reader alone.
    own_calls: Arc<AtomicUsize>,
    /// Calls in flight to moto at once, the fleet's total: one moto process
    /// (a thread per connection) falls over under thousands at once, which
    /// DynamoDB would serve. A call waiting here counts against its
    /// catch-up's timeout like a slow answer.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Calls given up at the reader's timeout, the fleet's total.
    given_up: Arc<GivenUp>,
}

/// Journal calls a reader's timeout gave up: while waiting for a
/// connection to moto, or while moto worked on them (moto finishes those,
/// and their connection stays taken until it does).
#[derive(Default)]
struct GivenUp {
    waiting: AtomicUsize,
    in_moto: AtomicUsize,
}

/// Where one journal call is, told to [`GivenUp`] if it is dropped unfinished.
struct CallWatch<'a> {
    given_up: &'a GivenUp,
    stage: u8,
}

impl CallWatch<'_> {
    const WAITING: u8 = 0;
    const IN_MOTO: u8 = 1;
    const DONE: u8 = 2;
}

impl Drop for CallWatch<'_> {
    fn drop(&mut self) {
        match self.stage {
            Self::WAITING => self.given_up.waiting.fetch_add(1, Ordering::Relaxed),
            Self::IN_MOTO => self.given_up.in_moto.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

#[async_trait]
impl ChangeJournal for ReachableJournal {
    async fn append(&self, changes: &[ChangeRecord]) -> Result<Vec<JournalEntry>, JournalError> {
        self.journal.append(changes).await
    }
    async fn since(&self, from_ms: i64, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        self.watched(move |journal| async move { journal.since(from_ms, limit).await })
            .await
    }
    async fn after(&self, position: &str, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        let position = position.to_owned();
        self.watched(move |journal| async move { journal.after(&position, limit).await })
            .await
    }
    async fn head(&self) -> Result<u64, JournalError> {
        self.watched(|journal| async move { journal.head().await })
            .await
    }
}

/// What a simulated journal call that did not reach an answer gets.
fn unreachable(detail: &str) -> JournalError {
    JournalError::Unavailable {
        operation: "Query",
        detail: detail.to_owned(),
    }
}

impl ReachableJournal {
    /// One call, if the journal is reachable: counted, and made in a task of
    /// its own that holds its connection to moto until moto answers, even
    /// when the reader's timeout gave up on it (moto works on an abandoned
    /// request all the same; released early, its slot would let moto's
    /// backlog grow without bound, which DynamoDB's would not).
    async fn watched<T, F>(
        &self,
        call: impl FnOnce(Arc<dyn ChangeJournal>) -> F,
    ) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, JournalError>> + Send + 'static,
    {
        if self.cut.load(Ordering::SeqCst) {
            return Err(unreachable("cut off (simulated partition)"));
        }
        let mut watch = CallWatch {
            given_up: &self.given_up,
            stage: CallWatch::WAITING,
        };
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unreachable("closed"))?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.own_calls.fetch_add(1, Ordering::SeqCst);
        watch.stage = CallWatch::IN_MOTO;
        let answer = call(self.journal.clone());
        let result = tokio::spawn(async move {
            // Bounded all the same: the stack's SDK clients set no
            // operation timeout, and a request moto never answers would
            // hold its connection for good.
            let answer = tokio::time::timeout(2 * SIMULATED_READ_TIMEOUT, answer).await;
            drop(permit);
            answer.unwrap_or_else(|_| Err(unreachable("moto did not answer")))
        })
        .await
        .map_err(|e| unreachable(&e.to_string()))?;
        watch.stage = CallWatch::DONE;
        result
    }
}

/// Whether a reader is paused, and the tasks to wake when it resumes.
#[derive(Default)]
struct Pause {
    paused: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Pause {
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        let waiting = self
            .waiting
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for waker in waiting {
            waker.wake();
        }
    }
}

/// A task that is not polled while its reader is paused: a stopped process
/// (its socket buffers fill; nothing is lost or processed meanwhile).
struct Pausable<F> {
    inner: Pin<Box<F>>,
    pause: Arc<Pause>,
}

impl<F: Future<Output = ()>> Future for Pausable<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pause.paused.load(Ordering::SeqCst) {
            if let Ok(mut waiting) = self.pause.waiting.lock() {
                waiting.push(cx.waker().clone());
            }
            // Resumed between the check and the registration: go on.
            if self.pause.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Healthy,
    Paused,
    CutOff,
}

struct SimReader {
    reader: Arc<Reader>,
    catch_up: Arc<CatchUp>,
    drops: Drops,
    follower: Option<Arc<NoticeFollower<Drops>>>,
    fate: Fate,
    pause: Arc<Pause>,
    cut: Arc<AtomicBool>,
    /// Its journal calls.
    own_calls: Arc<AtomicUsize>,
    reading: Mutex<Option<tokio::task::JoinHandle<()>>>,
    following: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SimReader {
    /// When this reader first dropped each written change (or everything)
    /// at or after its write, in the order written: one pass over its drops
    /// (the harness asks of thousands of readers while they converge, on
    /// the cores they converge with).
    fn dropped(&self, written: &Written) -> Vec<Option<Instant>> {
        let mut first: Vec<Option<Instant>> = vec![None; written.writes.len()];
        let Ok(drops) = self.reader.drops.lock() else {
            return first;
        };
        let mut saw = |place: usize, when: Instant| {
            if when >= written.writes[place].1 {
                first[place] = Some(first[place].map_or(when, |earlier| earlier.min(when)));
            }
        };
        for (key, when) in drops.iter() {
            if key == "*" {
                (0..written.writes.len()).for_each(|place| saw(place, *when));
            } else if let Some(&place) = written.place.get(key.as_str()) {
                saw(place, *when);
            }
        }
        first
    }

    /// Whether this reader dropped every written change at or after its write.
    fn has_all(&self, written: &Written) -> bool {
        self.dropped(written).iter().all(Option::is_some)
    }

    fn stop(&self) {
        for task in [&self.reading, &self.following] {
            if let Some(task) = task.lock().ok().and_then(|mut t| t.take()) {
                task.abort();
            }
        }
    }
}

/// Everything one run (one design, one size) needs.
struct Fleet {
    readers: Vec<Arc<SimReader>>,
    feed: Option<(FeedSettings, TrustedKeys, Arc<dyn Connector>)>,
}

impl Fleet {
    fn spawn_pausable(
        reader: &SimReader,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Pausable {
            inner: Box::pin(task),
            pause: reader.pause.clone(),
        })
    }

    /// The reader's subscription (a new connection each time).
    fn subscribe(&self, reader: &Arc<SimReader>) {
        let (Some((settings, keys, connector)), Some(follower)) = (&self.feed, &reader.follower)
        else {
            return;
        };
        let task = Self::spawn_pausable(
            reader,
            follow(
                settings.clone(),
                connector.clone(),
                keys.clone(),
                Arc::clone(follower),
            ),
        );
        if let Ok(mut following) = reader.following.lock() {
            *following = Some(task);
        }
    }
}

/// Raises this process's open-file limit as far as allowed: every reader
/// holds a connection.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = libc::rlimit {
            rlim_cur: 65_536.max(limit.rlim_cur),
            rlim_max: 65_536.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return wanted.rlim_cur;
        }
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
        limit.rlim_cur
    }
}

/// What one run measured.
struct Outcome {
    readers: usize,
    quiet_calls_per_sec: f64,
    burst_calls_per_sec: f64,
    burst_window: Duration,
    healthy: Option<Summary>,
    healthy_misses: usize,
    healthy_pairs: usize,
    stale_after_heal: usize,
    /// From the heal until every troubled reader had every change (or
    /// [`HEAL_LIMIT`]), and the journal Queries made meanwhile.
    heal_took: Duration,
    heal_calls: usize,
    /// Of them, the cut-off ones (the rest were paused).
    stale_cut_off: usize,
    troubled: usize,
    value_loads: usize,
    /// Notices each reader received per change in the burst (heartbeats in
    /// the window included): what the feed's messages are priced from.
    notices_per_change: f64,
    /// Journal Queries per reader per change in the burst (gap reads).
    burst_calls_per_change: f64,
    /// Per change, the write → the first healthy reader dropping it (the
    /// change path up to one reader), and each healthy reader's drop after
    /// that first one (delivery across the fleet).
    first_reader: Option<Summary>,
    after_first: Option<Summary>,
    /// Journal calls of the burst and heal given up at the reader's timeout.
    given_up: usize,
    /// CPU from the first write until every healthy reader had every change
    /// (or [`SETTLE`]), and the notices the fleet checked meanwhile
    /// (heartbeats included; only healthy readers run then).
    burst_cpu: CpuUse,
    window_checks: u64,
    healthy_readers: usize,
}

/// A moment's CPU counters: this process's (the readers, the harness, and
/// the stack's in-process parts: the stream mapping, the schedules, the
/// burst's writer) and the machine's.
struct CpuMark {
    at: Instant,
    process: Duration,
    machine: Option<Jiffies>,
}

/// `/proc/stat`'s counters over every core.
#[derive(Clone, Copy)]
struct Jiffies {
    /// Every process's time (not idle, iowait or steal).
    busy: u64,
    /// Time the hypervisor gave to others.
    steal: u64,
    total: u64,
}

/// CPU used between two marks.
#[derive(Clone, Copy)]
struct CpuUse {
    window: Duration,
    /// Core-seconds this process used.
    process: f64,
    /// The shares of the machine's cores busy (every process) and stolen.
    machine: Option<(f64, f64)>,
}

impl CpuMark {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            process: process_cpu(),
            machine: machine_jiffies(),
        }
    }

    fn until_now(&self) -> CpuUse {
        let end = Self::now();
        // Counters that went backwards (some hypervisors' steal) give none.
        let machine = self.machine.zip(end.machine).and_then(|(from, to)| {
            let total = to.total.checked_sub(from.total).filter(|t| *t > 0)? as f64;
            let busy = to.busy.checked_sub(from.busy)? as f64;
            let steal = to.steal.checked_sub(from.steal)? as f64;
            Some((busy / total, steal / total))
        });
        CpuUse {
            window: end.at - self.at,
            process: (end.process.saturating_sub(self.process)).as_secs_f64(),
            machine,
        }
    }
}

/// This process's user and system CPU time so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The machine's counters (`/proc/stat`'s first line: user, nice, system,
/// idle, iowait, irq, softirq, steal; guest time is inside user already).
fn machine_jiffies() -> Option<Jiffies> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(Jiffies {
        busy: user + nice + system + irq + softirq,
        steal,
        total: user + nice + system + idle + iowait + irq + softirq + steal,
    })
}

/// What one reader's check of one notice costs: the real `verify` of a
/// signed notice naming one change, timed here before the fleet starts.
fn verify_cost(rounds: u32) -> Result<Duration, String> {
    use tenant_config_shared::notices::{notices_of, verify};
    use tenant_config_shared::refresh::signing::{RefreshKey, unix_ms_now};
    use tenant_config_testkit::values::update_of;
    let (key, _) = RefreshKey::generate("bench").map_err(|e| e.to_string())?;
    let keys = key.trusted();
    let change = update_of(&item("tenant_config_verify")?, StoreKind::DynamoDb);
    let now = unix_ms_now();
    let entry = JournalEntry::new(change, now).with_sequence(1);
    let payload = notices_of(&[entry], &key, now)
        .pop()
        .ok_or("no notice to verify")?;
    let started = Instant::now();
    for _ in 0..rounds {
        verify(&payload, &keys, now).map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed() / rounds.max(1))
}

fn item(key: &str) -> Result<ItemKey, String> {
    ItemKey::parse(TENANT, SERVICE, key).map_err(|e| e.to_string())
}

/// One design at one size: start the readers, count a quiet window, write a
/// burst (pausing and cutting some readers), heal them, and collect.
async fn run(
    stack: &LocalStack,
    journal: Arc<dyn ChangeJournal>,
    readers: usize,
    changes: usize,
    with_feed: bool,
    round: usize,
    smoke: bool,
) -> Result<Outcome, String> {
    let quiet = if smoke { QUIET_SMOKE } else { QUIET };
    let store = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let keys: Vec<String> = (0..changes)
        .map(|k| format!("tenant_config_scale_{round}_{k}"))
        .collect();
    for key in &keys {
        store.put(&item(key)?, plain(json!("before")));
    }
    let feed = if with_feed {
        let url = stack
            .setting("CHANGE_FEED_URL")
            .ok_or("no change feed in the stack")?;
        let settings = FeedSettings::parse(
            &url,
            stack.setting("CHANGE_FEED_TOPIC").as_deref(),
            stack.setting("CHANGE_FEED_CLIENT_PREFIX").as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let keys = TrustedKeys::parse(&stack.setting("REFRESH_PUBLIC_KEYS").unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let connector = Aws::from_config(stack.aws.clone()).feed_connector(&settings)?;
        Some((settings, keys, connector))
    } else {
        None
    };
    // A twentieth paused and a twentieth cut off (at least one each).
    let troubled_each = (readers / 20).max(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let given_up = Arc::new(GivenUp::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MOTO_CONNECTIONS));
    let mut fleet = Fleet {
        readers: Vec::with_capacity(readers),
        feed,
    };
    let cache_settings = CacheSettings {
        ttl: Duration::from_secs(3600),
        not_found_ttl: Duration::from_secs(3600),
        max_entries: 1000,
        stale: StaleIfError::DEFAULT,
    };
    for i in 0..readers {
        let fate = if i < troubled_each {
            Fate::Paused
        } else if i < 2 * troubled_each {
            Fate::CutOff
        } else {
            Fate::Healthy
        };
        let cut = Arc::new(AtomicBool::new(false));
        let own_calls = Arc::new(AtomicUsize::new(0));
        let reader = Arc::new(Reader {
            cache: CachedStore::new(store.clone(), cache_settings),
            drops: Mutex::new(Vec::new()),
        });
        let catch_up = Arc::new(CatchUp::new(
            Arc::new(ReachableJournal {
                journal: journal.clone(),
                cut: cut.clone(),
                calls: calls.clone(),
                own_calls: own_calls.clone(),
                in_flight: in_flight.clone(),
                given_up: given_up.clone(),
            }),
            CatchUpSettings {
                timeout: SIMULATED_READ_TIMEOUT,
                ..CatchUpSettings::AGENT
            },
        ));
        let follower = with_feed.then(|| {
            Arc::new(NoticeFollower::new(
                Drops(reader.clone()),
                catch_up.clone(),
                FollowerSettings::default(),
            ))
        });
        fleet.readers.push(Arc::new(SimReader {
            drops: Drops(reader.clone()),
            reader,
            catch_up,
            follower,
            fate,
            pause: Arc::new(Pause::default()),
            cut,
            own_calls,
            reading: Mutex::new(None),
            following: Mutex::new(None),
        }));
    }
    // Start: each reader reads every second (its first key warm), and with
    // the feed subscribes; staggered, as a fleet's tasks start over time.
    // At most STARTS_PER_SEC a second: each subscription reads the journal
    // once (as a fleet's deploy does, spread over its tasks' starts).
    let stagger = Duration::from_micros(1_000_000 / STARTS_PER_SEC);
    for (i, sim) in fleet.readers.iter().enumerate() {
        let first = item(&keys[i % keys.len()])?;
        let reader = sim.clone();
        let keys_read: Vec<ItemKey> = keys.iter().map(|k| item(k)).collect::<Result<_, _>>()?;
        let task = Fleet::spawn_pausable(sim, async move {
            let _ = reader.reader.cache.get(&first, ReadMode::Plain).await;
            let mut ticks = tokio::time::interval(READ_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = i;
            loop {
                ticks.tick().await;
                reader.catch_up.maybe_catch_up(&reader.drops).await;
                let _ = reader
                    .reader
                    .cache
                    .get(&keys_read[next % keys_read.len()], ReadMode::Plain)
                    .await;
                next += 1;
            }
        });
        if let Ok(mut reading) = sim.reading.lock() {
            *reading = Some(task);
        }
        fleet.subscribe(sim);
        tokio::time::sleep(stagger).await;
    }
    if with_feed {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let subscribed = fleet
                .readers
                .iter()
                .filter(|r| r.follower.as_ref().is_some_and(|f| f.subscribed()))
                .count();
            if subscribed == readers {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{subscribed} of {readers} readers subscribed within 120 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Settle the start's reads (each subscription's, retried until it is
    // made): until the fleet makes no journal call for two seconds.
    let queries = || -> usize { calls.load(Ordering::SeqCst) };
    let settle_deadline = Instant::now() + Duration::from_secs(180);
    let mut last = queries();
    let mut still_since = Instant::now();
    while Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = queries();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(2) {
            break;
        }
        // Polling readers never stop calling: only their first reads settle.
        if !with_feed && still_since.elapsed() < Duration::from_secs(2) && now > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            break;
        }
    }
    let before_quiet = queries();
    tokio::time::sleep(quiet).await;
    let quiet_calls_per_sec = (queries() - before_quiet) as f64 / quiet.as_secs_f64();

    // The burst: troubled readers paused or cut off first.
    for sim in &fleet.readers {
        match sim.fate {
            Fate::Paused => sim.pause.pause(),
            Fate::CutOff => {
                sim.cut.store(true, Ordering::SeqCst);
                // The connection is gone (the follow task's guard tells the
                // follower, as its keep-alive would within 40 s): the reader
                // polls a journal it cannot reach until the heal.
                if let Some(task) = sim.following.lock().ok().and_then(|mut t| t.take()) {
                    task.abort();
                }
            }
            Fate::Healthy => {}
        }
    }
    let notices = |fleet: &Fleet| -> u64 {
        fleet
            .readers
            .iter()
            .filter_map(|r| r.follower.as_ref())
            .map(|f| f.counters.notices.load(Ordering::Relaxed))
            .sum()
    };
    let notices_before = notices(&fleet);
    let given_up_total =
        || given_up.waiting.load(Ordering::Relaxed) + given_up.in_moto.load(Ordering::Relaxed);
    let given_up_before = given_up_total();
    let before_burst = queries();
    let cpu_at_burst = CpuMark::now();
    let burst_started = Instant::now();
    let mut writes: Vec<(String, Instant)> = Vec::with_capacity(changes);
    for key in &keys {
        let item = item(key)?;
        store.put(&item, plain(json!("after")));
        let at = Instant::now();
        put_item(&stack.aws, TABLE, &item, "after").await?;
        writes.push((key.clone(), at));
    }
    let written = Written::new(writes);
    // Healthy readers: until each has every change, or the settle time.
    let healthy: Vec<&Arc<SimReader>> = fleet
        .readers
        .iter()
        .filter(|r| r.fate == Fate::Healthy)
        .collect();
    let has_all = |sim: &SimReader| -> bool { sim.has_all(&written) };
    // Each reader is checked until it has everything, then no more.
    let mut converging = healthy.clone();
    let deadline = Instant::now() + SETTLE;
    loop {
        converging.retain(|r| !has_all(r));
        if converging.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy_window = burst_started.elapsed();
    let burst_cpu = cpu_at_burst.until_now();
    let window_checks = notices(&fleet) - notices_before;
    if let Some(rest) = TROUBLE_AT_LEAST.checked_sub(healthy_window) {
        tokio::time::sleep(rest).await;
    }
    // The burst's store cost: every call from the first write to the heal
    // (a gap's reads again 1, 2 and 4 s later included).
    let burst_calls = queries() - before_burst;
    let burst_window = burst_started.elapsed();
    let burst_notices = notices(&fleet) - notices_before;
    // Heal the troubled readers; every one must then have every change.
    let healed_at_ms = tenant_config_shared::refresh::signing::unix_ms_now();
    let healed_at = Instant::now();
    let troubled_calls = |fleet: &Fleet| -> usize {
        fleet
            .readers
            .iter()
            .filter(|r| r.fate != Fate::Healthy)
            .map(|r| r.own_calls.load(Ordering::SeqCst))
            .sum()
    };
    let before_heal = troubled_calls(&fleet);
    for sim in &fleet.readers {
        match sim.fate {
            Fate::Paused => sim.pause.resume(),
            Fate::CutOff => {
                sim.cut.store(false, Ordering::SeqCst);
                fleet.subscribe(sim);
            }
            Fate::Healthy => {}
        }
    }
    let troubled: Vec<&Arc<SimReader>> = fleet
        .readers
        .iter()
        .filter(|r| r.fate != Fate::Healthy)
        .collect();
    let deadline = Instant::now() + HEAL_LIMIT;
    while Instant::now() < deadline && !troubled.iter().all(|r| has_all(r)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let heal_took = healed_at.elapsed();
    let stale_after_heal = troubled.iter().filter(|r| !has_all(r)).count();
    let stale_cut_off = troubled
        .iter()
        .filter(|r| r.fate == Fate::CutOff && !has_all(r))
        .count();
    // The heal's store cost: the troubled readers' calls (each cut-off
    // reader's resubscription read, polling reads until its feed is back).
    let heal_calls = troubled_calls(&fleet) - before_heal;
    let burst_calls_per_sec = burst_calls as f64 / burst_window.as_secs_f64();
    let fed = fleet
        .readers
        .iter()
        .filter(|r| r.follower.is_some())
        .count()
        .max(1);
    let notices_per_change = burst_notices as f64 / (fed * changes.max(1)) as f64;
    let burst_calls_per_change = burst_calls as f64 / (readers.max(1) * changes.max(1)) as f64;
    // Per healthy reader and change: write → drop.
    let healthy_drops: Vec<Vec<Option<Instant>>> =
        healthy.iter().map(|sim| sim.dropped(&written)).collect();
    let mut samples = Vec::new();
    let mut misses = 0;
    let mut first_drops: Vec<Option<Instant>> = vec![None; written.writes.len()];
    for drops in &healthy_drops {
        for (((_, at), dropped), first) in written.writes.iter().zip(drops).zip(&mut first_drops) {
            match dropped {
                Some(when) => {
                    samples.push(*when - *at);
                    *first = Some(first.map_or(*when, |first| first.min(*when)));
                }
                None => misses += 1,
            }
        }
    }
    let first_reader: Vec<Duration> = written
        .writes
        .iter()
        .zip(&first_drops)
        .filter_map(|((_, at), first)| first.map(|first| first - *at))
        .collect();
    let after_first: Vec<Duration> = healthy_drops
        .iter()
        .flat_map(|drops| drops.iter().zip(&first_drops))
        .filter_map(|(dropped, first)| Some(dropped.as_ref()?.saturating_duration_since((*first)?)))
        .collect();
    let given_up_count = given_up_total() - given_up_before;
    // Why the troubled readers still stale are (working diagnostics).
    for fate in [Fate::Paused, Fate::CutOff] {
        let stale: Vec<&&Arc<SimReader>> = troubled
            .iter()
            .filter(|r| r.fate == fate && !has_all(r))
            .collect();
        if stale.is_empty() {
            continue;
        }
        let subscribed = stale
            .iter()
            .filter(|r| r.follower.as_ref().is_some_and(|f| f.subscribed()))
            .count();
        let read_since_heal = stale
            .iter()
            .filter(|r| r.catch_up.read_ms() >= healed_at_ms)
            .count();
        let missing: usize = stale
            .iter()
            .map(|r| r.dropped(&written).iter().filter(|d| d.is_none()).count())
            .sum();
        eprintln!(
            "scale: {} {} readers stale after the heal: {subscribed} subscribed, {read_since_heal} read the journal since, {missing} changes missing in all; calls given up {} waiting, {} in moto",
            stale.len(),
            if fate == Fate::Paused {
                "paused"
            } else {
                "cut-off"
            },
            given_up.waiting.load(Ordering::Relaxed),
            given_up.in_moto.load(Ordering::Relaxed),
        );
    }
    let value_loads = store.gets();
    for sim in &fleet.readers {
        sim.stop();
    }
    Ok(Outcome {
        readers,
        quiet_calls_per_sec,
        burst_calls_per_sec,
        burst_window,
        healthy: (!samples.is_empty()).then(|| Summary::of(samples)),
        healthy_misses: misses,
        healthy_pairs: healthy.len() * written.writes.len(),
        stale_after_heal,
        heal_took,
        heal_calls,
        stale_cut_off,
        troubled: troubled.len(),
        value_loads,
        notices_per_change,
        burst_calls_per_change,
        first_reader: (!first_reader.is_empty()).then(|| Summary::of(first_reader)),
        after_first: (!after_first.is_empty()).then(|| Summary::of(after_first)),
        given_up: given_up_count,
        burst_cpu,
        window_checks,
        healthy_readers: healthy.len(),
    })
}

/// The burst's writes (key, when its write returned) in the order made, and
/// each key's place among them.
struct Written {
    writes: Vec<(String, Instant)>,
    place: HashMap<String, usize>,
}

impl Written {
    fn new(writes: Vec<(String, Instant)>) -> Self {
        let place = writes
            .iter()
            .enumerate()
            .map(|(place, (key, _))| (key.clone(), place))
            .collect();
        Self { writes, place }
    }
}

impl Report {
    /// (19) Readers past one fleet: the change feed beside today's polling.
    /// In a full run each design and size after the first runs on a stack
    /// of its own, started with `options` once the previous one has
    /// stopped: a moto process that served one run's thousands of readers
    /// is not the next one's baseline. The smoke run's share `stack`.
    pub async fn scale(&mut self, stack: LocalStack, options: StackOptions) -> Result<(), String> {
        let open_files = raise_open_files();
        // Each reader holds one connection (the broker, a process of its
        // own, the other end), plus descriptors to spare for the rest.
        let (feed_readers, polling_sizes, changes): (usize, &[usize], usize) = if self.sizes.smoke {
            (40, &[40], 5)
        } else {
            (10_000, &[100, 1_000], 100)
        };
        let readers_override = std::env::var(READERS_VARIABLE).ok();
        let polling_override = std::env::var(POLLING_VARIABLE).ok();
        let overrides: Vec<String> = [
            (READERS_VARIABLE, &readers_override),
            (POLLING_VARIABLE, &polling_override),
        ]
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", value.as_ref()?)))
        .collect();
        let feed_readers = match &readers_override {
            Some(n) => n
                .trim()
                .parse()
                .map_err(|_| format!("{READERS_VARIABLE}: '{n}' is not a reader count"))?,
            None => feed_readers,
        };
        let polling_override: Option<Vec<usize>> = match polling_override {
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        n.parse()
                            .map_err(|_| format!("{POLLING_VARIABLE}: '{n}' is not a reader count"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let polling_sizes: &[usize] = polling_override.as_deref().unwrap_or(polling_sizes);
        let fits = open_files.saturating_sub(2048) as usize;
        let feed_readers = feed_readers.min(fits);
        let smoke = self.sizes.smoke;
        // Timed before any of this figure's readers start (in a smoke run
        // the other figures run meanwhile); a failure leaves the row's
        // check figures out, not the figure.
        let rounds = if smoke { 200 } else { 2_000 };
        let verify_each = tokio::task::spawn_blocking(move || verify_cost(rounds))
            .await
            .map_err(|e| e.to_string())
            .and_then(|timed| timed)
            .inspect_err(|error| eprintln!("scale: timing a notice's check: {error}"))
            .ok();
        // Today's polling first, then the feed: each on a fresh stack in a
        // full run.
        let plans: Vec<(usize, bool)> = polling_sizes
            .iter()
            .map(|size| (*size, false))
            .chain([(feed_readers, true)])
            .collect();
        let mut stack = stack;
        let mut polled = Vec::new();
        let mut fed = None;
        for (round, (size, with_feed)) in plans.into_iter().enumerate() {
            if round > 0 && !smoke {
                // The previous stack stops first.
                drop(stack);
                stack = LocalStack::start(options, &|_, _| {}).await?;
            }
            let here = &stack;
            let aws = Aws::from_config(here.aws.clone());
            let table = here
                .setting("JOURNAL_TABLE_NAME")
                .ok_or("no journal table")?;
            let journal: Arc<dyn ChangeJournal> = Arc::new(aws.change_journal(&table));
            let outcome = run(here, journal, size, changes, with_feed, round, smoke).await?;
            if with_feed {
                fed = Some(outcome);
            } else {
                polled.push(outcome);
            }
        }
        drop(stack);
        let fed = fed.ok_or("the change feed's run did not happen")?;
        let row = |design: &str, o: &Outcome| -> Vec<Row> {
            let convergence = o.healthy.map_or("no samples".to_owned(), |s| {
                format!("p50 {} / p99 {}", human(s.p50), human(s.p99))
            });
            vec![
                calls_row(
                    format!(
                        "{design}, {} readers: journal Queries/s, nothing changing",
                        o.readers
                    ),
                    o.quiet_calls_per_sec,
                ),
                calls_row(
                    format!(
                        "{design}, {} readers: journal Queries/s from the first of a burst of {changes} changes to the heal ({}: every healthy reader has them, the troubled ones at least {} s away)",
                        o.readers,
                        human(o.burst_window),
                        TROUBLE_AT_LEAST.as_secs()
                    ),
                    o.burst_calls_per_sec,
                ),
                Row {
                    figure: format!(
                        "{design}, {} readers: write → healthy reader drops it ({} pairs, {} missed after {} s)",
                        o.readers,
                        o.healthy_pairs,
                        o.healthy_misses,
                        SETTLE.as_secs()
                    ),
                    ours: convergence,
                    baseline: "—".into(),
                    target: format!("p50 ≤ {} / p99 ≤ {}", human(P50_TARGET), human(P99_TARGET)),
                    met: o.healthy.map(|s| {
                        s.p50 <= P50_TARGET && s.p99 <= P99_TARGET && o.healthy_misses == 0
                    }),
                },
                Row {
                    figure: format!(
                        "{design}, {} readers: of which write → the first reader drops it (per change: the change path) / the first → each other reader (delivery across the fleet)",
                        o.readers
                    ),
                    ours: format!(
                        "p50 {} / p99 {}; p50 {} / p99 {}",
                        o.first_reader.map_or("—".into(), |s| human(s.p50)),
                        o.first_reader.map_or("—".into(), |s| human(s.p99)),
                        o.after_first.map_or("—".into(), |s| human(s.p50)),
                        o.after_first.map_or("—".into(), |s| human(s.p99)),
                    ),
                    baseline: "—".into(),
                    target: "—".into(),
                    met: None,
                },
                Row {
                    figure: format!(
                        "{design}, {} readers: paused or cut off during the burst, still stale after the heal (waited for up to {} s), and the troubled readers' journal Queries from the heal",
                        o.readers,
                        HEAL_LIMIT.as_secs()
                    ),
                    ours: format!(
                        "{} of {} ({} cut off, {} paused); the last had every change {} after the heal; {} Queries ({:.1} per troubled reader); {} calls of the whole run given up at the reader's timeout",
                        o.stale_after_heal,
                        o.troubled,
                        o.stale_cut_off,
                        o.stale_after_heal - o.stale_cut_off,
                        if o.stale_after_heal == 0 {
                            human(o.heal_took)
                        } else {
                            "not".to_owned()
                        },
                        o.heal_calls,
                        o.heal_calls as f64 / o.troubled.max(1) as f64,
                        o.given_up
                    ),
                    baseline: "—".into(),
                    target: "0".into(),
                    met: Some(o.stale_after_heal == 0),
                },
            ]
        };
        let mut rows = row("change feed", &fed);
        rows.push(cpu_row(&fed, verify_each));
        for o in &polled {
            rows.extend(row("journal polling (today)", o));
        }
        if let Some(p99) = fed.healthy.map(|s| s.p99) {
            self.compare(Comparison {
                title: format!(
                    "19. {} readers: write → reader, p99 (change feed)",
                    fed.readers
                ),
                ours: p99.as_secs_f64(),
                ours_label: human(p99),
                baseline_name: "target".into(),
                baseline: P99_TARGET.as_secs_f64(),
                baseline_label: human(P99_TARGET),
            });
        }
        let mut notes = vec![
            format!(
                "Readers are tasks in this process, each the real reader code: a CachedStore, a CatchUp over the stack's journal table in moto (its Queries are what is counted), and with the feed a NoticeFollower on its own MQTT connection to the stack's rumqttd. Changes take the real path: DynamoDB writes in moto, the stream mapping, config-refresh under cargo lambda watch (journal with sequence numbers, one signed notice per invocation, retained), the broker. Each reader reads one key a second (what makes today's design poll: every 2 s); convergence is the time from a write to the reader dropping that entry (its next read loads the new value). A twentieth of the readers is paused (tasks not polled, as a stopped process) and a twentieth cut off (connection dropped, journal unreachable) from before the burst until every healthy reader has it, then healed. Open-file limit {open_files}. Value loads (an in-memory store, not counted as change detection): {}.",
                fed.value_loads
            ),
            "Store calls of config-refresh (one UpdateItem and one BatchWriteItem per invocation, one GetItem per heartbeat) are per change, not per reader, and the same in both designs; they are not in the counts.".to_owned(),
            format!("Where the convergence goes: every reader checks every notice's signature, and here {} readers do so on the cores moto, the broker (the feed's fan-out) and the functions use too. The CPU row gives the check's timed cost, the notices each healthy reader checked while the burst converged, the share of this process's CPU those checks make up, and how busy the whole machine was. Delivery across the fleet (the time after the first reader) waits for that CPU; the first reader's figure is the change path up to the fastest reader, and it waits too while the machine is busy (the burst's writes and the stream mapping's polls run in this process).", fed.readers),
            format!("Troubled readers stay paused or cut off at least {} s (past the catch-up's 10 s overlap). Paused readers keep their connection (shorter than the keep-alive: the broker holds their notices); cut-off readers lose it and reach the journal again at the heal, then resubscribe. Not simulated: a notice lost on a live connection (QoS 0); figure 19's heartbeat runs every 5 s as in the local stack (the template's every 5 minutes).", TROUBLE_AT_LEAST.as_secs()),
            format!("moto stands in for DynamoDB and is the simulation's ceiling: one process answers a few hundred empty Queries a second but a Query returning a burst's hundred entries in about half a second. The fleet's journal calls therefore go through {MOTO_CONNECTIONS} connections, each held until moto answers (a call the reader gave up on included), readers start at {STARTS_PER_SEC} a second, and a simulated journal read may wait {} s for its turn and the answer (the agents' 500 ms is for DynamoDB). The heal's Queries are what each troubled reader needs once, and the time they take is moto's pace. Journal polling at 1,000 readers asks for more than moto answers: its figures there show moto's limit, not DynamoDB's; the cost model takes polling's rate from the 100-reader run.", SIMULATED_READ_TIMEOUT.as_secs()),
        ];
        if !overrides.is_empty() {
            notes.push(format!(
                "Sizes overridden for this run: {}.",
                overrides.join(", ")
            ));
        }
        self.section(
            "19. Past one fleet: readers, store calls, convergence",
            rows,
            notes,
        );
        // The design's own rate: the smallest run (moto caps the largest).
        // Without a polling run (an override) there is nothing to price it by.
        if let Some(o) = polled.first() {
            let polled_rate = (o.quiet_calls_per_sec / o.readers.max(1) as f64, o.readers);
            let (rows, notes) = cost_model(&fed, polled_rate);
            self.section("19b. Cost model: a month of change detection", rows, notes);
        }
        Ok(())
    }
}

/// Where the CPU went while the burst converged: whether the delivery
/// across the fleet waited for this machine (every reader checks every
/// notice's signature, thousands of readers on these cores).
fn cpu_row(o: &Outcome, verify_each: Option<Duration>) -> Row {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = o.burst_cpu;
    let share = cpu.process / (cpu.window.as_secs_f64() * cores as f64).max(f64::EPSILON);
    let machine = cpu.machine.map_or("—".to_owned(), |(busy, steal)| {
        format!("{:.0} % busy, {:.0} % stolen", busy * 100.0, steal * 100.0)
    });
    let checks = verify_each.map_or("a check not timed".to_owned(), |each| {
        let checking = each.as_secs_f64() * o.window_checks as f64;
        format!(
            "{:.1} µs per check; {:.1} core-s checking, {:.0} % of this process's",
            each.as_secs_f64() * 1e6,
            checking,
            100.0 * checking / cpu.process.max(f64::EPSILON)
        )
    });
    let settled = if o.healthy_misses == 0 {
        "until every healthy reader had every change"
    } else {
        "until the settle time ran out"
    };
    Row {
        figure: format!(
            "change feed, {} readers: CPU from the first write {settled} ({}): this process (the readers, the harness, the stack's stream mapping and schedules, the writer), the machine (moto, the broker, the functions besides); notices the healthy readers checked meanwhile (heartbeats included), and one check (the real verify of a one-change notice: decode, Ed25519 signature, contents) timed before the readers started",
            o.readers,
            human(cpu.window)
        ),
        ours: format!(
            "this process {:.1} core-s, {:.0} % of {cores} cores; the machine {machine}; {:.1} notices per healthy reader; {checks}",
            cpu.process,
            share * 100.0,
            o.window_checks as f64 / o.healthy_readers.max(1) as f64,
        ),
        baseline: "—".into(),
        target: "—".into(),
        met: None,
    }
}

/// A row of journal Queries per second beside the bound.
fn calls_row(figure: String, per_sec: f64) -> Row {
    Row {
        figure,
        ours: format!("{per_sec:.1}/s"),
        baseline: "—".into(),
        target: format!("≤ {CALLS_TARGET}/s"),
        met: Some(per_sec <= CALLS_TARGET),
    }
}

/// List prices (us-east-1, on-demand) the cost model uses, from AWS's
/// pricing pages as published in 2025. Checked again in December 2026:
/// DynamoDB's on-demand request prices (after the November 2024 cut) and IoT
/// Core's connectivity and message prices against public summaries of the
/// price pages, IoT Core's metering (a retained publish, a client's PUBACK)
/// against its metering details page; AppConfig's are the issue's. Check
/// them before relying on the table.
mod prices {
    /// DynamoDB on-demand, per read / write request unit.
    pub const DYNAMODB_READ: f64 = 0.125 / 1e6;
    pub const DYNAMODB_WRITE: f64 = 0.625 / 1e6;
    /// An eventually consistent Query returning under 4 KB.
    pub const QUERY_UNITS: f64 = 0.5;
    /// IoT Core: per connection-minute; per message (5 KB each), tiered.
    pub const IOT_CONNECTION_MINUTE: f64 = 0.08 / 1e6;
    pub const IOT_MESSAGE_TIERS: [(f64, f64); 3] = [
        (1e9, 1.00 / 1e6),
        (4e9, 0.80 / 1e6),
        (f64::INFINITY, 0.70 / 1e6),
    ];
    /// AWS AppConfig (the figures): per configuration request, per
    /// configuration received; its agent polls every 45 s by default.
    pub const APPCONFIG_REQUEST: f64 = 0.000_000_2;
    pub const APPCONFIG_RECEIVED: f64 = 0.000_8;
    pub const APPCONFIG_POLL_SECS: f64 = 45.0;
}

const SECONDS_PER_MONTH: f64 = 30.0 * 86_400.0;
const MINUTES_PER_MONTH: f64 = 30.0 * 1_440.0;
/// The template's heartbeat rule: every 5 minutes.
const HEARTBEATS_PER_MONTH: f64 = MINUTES_PER_MONTH / 5.0;
/// The feed's safety read while subscribed: once an hour per reader.
const SAFETY_READS_PER_SEC: f64 = 1.0 / 3600.0;

fn iot_messages(count: f64) -> f64 {
    let mut left = count;
    let mut cost = 0.0;
    for (size, price) in prices::IOT_MESSAGE_TIERS {
        let here = left.min(size);
        cost += here * price;
        left -= here;
        if left <= 0.0 {
            break;
        }
    }
    cost
}

fn dollars(amount: f64) -> String {
    if amount >= 100.0 {
        format!("${amount:.0}")
    } else {
        format!("${amount:.2}")
    }
}

/// A month's cost of learning about changes at 100 to 10,000 readers and 1
/// to 100 changes a minute, from the rates figure 19 measured.
/// `polled` is polling's Queries per reader-second and the run it is from.
fn cost_model(fed: &Outcome, polled: (f64, usize)) -> (Vec<Row>, Vec<String>) {
    let (polled_rate, polled_readers) = polled;
    let mut rows = Vec::new();
    let fed_rate = fed.quiet_calls_per_sec / fed.readers.max(1) as f64 + SAFETY_READS_PER_SEC;
    for readers in [100.0, 1_000.0, 10_000.0] {
        for per_minute in [1.0, 10.0, 100.0] {
            let changes = per_minute * MINUTES_PER_MONTH;
            // Both designs journal each change (an item and the counter).
            let writes = changes * 2.0 * prices::DYNAMODB_WRITE;
            let query = prices::QUERY_UNITS * prices::DYNAMODB_READ;
            // The feed: connections, every notice and heartbeat published
            // once (retained: metered twice) and delivered to every reader
            // (QoS 0: no acknowledgement metered), gap and safety reads.
            let published = changes * fed.notices_per_change.min(1.0) + HEARTBEATS_PER_MONTH;
            let feed = readers * MINUTES_PER_MONTH * prices::IOT_CONNECTION_MINUTE
                + iot_messages(published * (2.0 + readers))
                + (readers * fed_rate * SECONDS_PER_MONTH
                    + changes * readers * fed.burst_calls_per_change)
                    * query
                + writes;
            let polling = readers * polled_rate * SECONDS_PER_MONTH * query + writes;
            let appconfig = readers * SECONDS_PER_MONTH / prices::APPCONFIG_POLL_SECS
                * prices::APPCONFIG_REQUEST
                + readers * changes * prices::APPCONFIG_RECEIVED;
            rows.push(Row {
                figure: format!("{readers:.0} readers, {per_minute:.0} changes a minute"),
                ours: format!("feed {} / polling {}", dollars(feed), dollars(polling)),
                baseline: format!("AppConfig {}", dollars(appconfig)),
                target: "—".into(),
                met: None,
            });
        }
    }
    let notes = vec![
        format!(
            "From figure 19's measured rates: polling {polled_rate:.3} journal Queries per reader-second (its {polled_readers}-reader run, the smallest: moto keeps up with it); the feed {:.4} per reader-second while quiet plus its hourly safety read ({SAFETY_READS_PER_SEC:.5}), {:.4} gap reads per reader and change, {:.2} notices per reader and change in the burst (at most 1 is priced: at 1 to 100 changes a minute a change is an invocation of its own more often than not).",
            fed.quiet_calls_per_sec / fed.readers.max(1) as f64,
            fed.burst_calls_per_change,
            fed.notices_per_change
        ),
        "Prices: us-east-1 list prices as published in 2025, checked again in December 2026 against AWS's IoT Core metering details and public summaries of both price pages (DynamoDB on demand $0.125 per million read and $0.625 per million write request units, a Query of under 4 KB 0.5 read units; IoT Core $0.08 per million connection-minutes, $1.00 per million messages of up to 5 KB for the first billion, $0.80 for the next four, $0.70 after; a retained publish is metered as a publish and a retained message). AppConfig: $0.0000002 per configuration request with its agent's 45 s poll, $0.0008 per configuration received, each change received by every reader. A 30-day month. The journal's writes (an item and the sequence counter per change) are in both of ours. Lambda (config-refresh's invocations, the same in both designs, plus 8,640 heartbeats a month) and data transfer are left out.".to_owned(),
        "What the feed buys is not a lower bill at every size: its messages grow with readers × changes, while polling's Queries grow with readers alone. It keeps the journal's load flat (polling 10,000 readers is 5,000 Queries a second on one partition, past DynamoDB's 3,000 read units per partition) and brings each reader a change in about a second (figure 19: its change path and its delivery across the fleet).".to_owned(),
    ];
    (rows, notes)
}
