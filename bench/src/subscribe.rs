//! The subscription benchmark: many WebSocket subscribers to `catalogChanges`
//! while a writer beside the server commits changes at a fixed rate. Reports
//! delivery latency (commit returned to the writer → event read by the
//! subscriber, and as an upper bound from the write's start), events lost and
//! duplicated, subscribers the server ended, and the server's memory per idle
//! subscriber.
//!
//! The writer applies snapshots straight to the database through
//! `catalog_store`, as an ingestion process beside the server would: on
//! PostgreSQL the server learns of them by LISTEN/NOTIFY, on SQLite by its
//! twice-a-second look at the change log, so on SQLite the latency mostly
//! measures that poll.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use catalog_domain::Entity;
use catalog_store::{LocationStatus, Snapshot, SnapshotEntity, Store};
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The provider that owns the writer's entities: its snapshots never touch
/// the catalog's own.
const PROVIDER: &str = "bench-writer";
/// The namespace of the writer's entities, which is what subscribers select.
const NAMESPACE: &str = "bench";
/// Snapshots per second at most: each carries `rate / 10` changes, as an
/// ingestion run touching several entities at once would.
const SNAPSHOTS_PER_SECOND: u32 = 10;

/// The driver's read buffer per socket: events are about 100 bytes.
const READ_BUFFER_BYTES: usize = 8 * 1024;

const QUERY: &str = "subscription ($filter: ChangeFilter) { catalogChanges(filter: $filter) { cursor entityRef } }";

/// What the `subscribe` subcommand was asked to do.
pub struct Options {
    /// The GraphQL endpoint over HTTP; the WebSocket endpoint is derived.
    pub url: String,
    pub database_url: String,
    pub levels: Vec<usize>,
    pub rate: u32,
    pub seconds: u64,
    pub server_pid: Option<u32>,
    /// An API token for servers that refuse anonymous reads.
    pub token: Option<String>,
    /// Handshakes in flight at once while subscribers connect.
    pub connect_parallelism: usize,
    /// How long to wait after the window for events still on their way.
    pub drain: Duration,
}

/// The figures of one level of subscribers.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub scenario: &'static str,
    pub database: &'static str,
    pub subscribers: usize,
    /// Subscribers that connected and subscribed (the rest failed to).
    pub connected: usize,
    pub seconds: f64,
    pub target_rate: u32,
    pub achieved_rate: f64,
    /// Changes the writer committed in the window.
    pub changes: usize,
    /// Changes times subscribers that connected: every delivery owed.
    pub events_expected: u64,
    /// Distinct events delivered.
    pub events_delivered: u64,
    pub lost: u64,
    /// Of `lost`, those owed to subscribers the server did not end: a lost
    /// event there is a bug, where an ended subscriber was told to resume.
    pub lost_by_live_subscribers: u64,
    pub duplicated: u64,
    /// Events in the writer's namespace the writer did not commit in the
    /// window (should be 0: nothing else writes there).
    pub unexpected: u64,
    pub ended_with_error: usize,
    /// A few distinct reasons subscribers ended or failed to connect.
    pub errors: Vec<String>,
    /// From the writer's commit returning to the subscriber reading the event.
    pub latency_ms: Latency,
    /// From the writer starting the snapshot: an upper bound that holds even
    /// when the writer's thread wakes late after its commit.
    pub latency_from_write_start_ms: Latency,
    /// Deliveries read before the writer saw its commit return (its thread
    /// not yet scheduled, under CPU contention): counted as 0 ms in
    /// `latency_ms`. Many of them mean `latency_ms` is too low; trust the
    /// upper bound then.
    pub early_deliveries: u64,
    pub connect_seconds: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_subscriber_kib: Option<f64>,
    /// CPU over the window and the drain, in percent of one core.
    pub server_cpu_percent: Option<f64>,
    pub driver_cpu_percent: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Milliseconds from a histogram of microseconds.
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Runs every level in turn, printing a line per level.
pub async fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let ws_url = websocket_url(&options.url)?;
    let largest_snapshot = options.rate.div_ceil(SNAPSHOTS_PER_SECOND).max(1) as usize;
    let writer = Writer::spawn(options.database_url.clone(), largest_snapshot.max(100)).await?;
    let database = if options.database_url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    println!(
        "{:>6} {:>6} {:>7} {:>9} {:>6} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9}",
        "subs",
        "ended",
        "rate/s",
        "delivered",
        "lost",
        "dup",
        "early",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p99 start",
        "KiB/sub"
    );
    let mut measurements = Vec::new();
    for &level in &options.levels {
        let measurement = measure(options, &ws_url, &writer, database, level.max(1)).await?;
        println!(
            "{:>6} {:>6} {:>7.1} {:>9} {:>6} {:>5} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>9}",
            measurement.subscribers,
            measurement.ended_with_error + (measurement.subscribers - measurement.connected),
            measurement.achieved_rate,
            measurement.events_delivered,
            measurement.lost,
            measurement.duplicated,
            measurement.early_deliveries,
            measurement.latency_ms.p50,
            measurement.latency_ms.p90,
            measurement.latency_ms.p99,
            measurement.latency_ms.max,
            measurement.latency_from_write_start_ms.p99,
            measurement.rss_per_subscriber_kib.map_or("-".into(), |kib| format!("{kib:.1}")),
        );
        for error in &measurement.errors {
            println!("       ended: {error}");
        }
        measurements.push(measurement);
        // Let the server close the level's sockets before the next one reads its RSS.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    writer.stop();
    Ok(measurements)
}

async fn measure(
    options: &Options,
    ws_url: &str,
    writer: &Writer,
    database: &'static str,
    level: usize,
) -> anyhow::Result<Measurement> {
    let rss_before = options.server_pid.and_then(server_rss);
    let progress = Arc::new(Progress::new(level));
    let (stop, stopped) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(options.connect_parallelism.max(1)));
    let connecting = Instant::now();
    let tasks: Vec<_> = (0..level)
        .map(|index| {
            let subscriber = Subscriber { index, progress: progress.clone(), stop: stopped.clone() };
            tokio::spawn(subscriber.run(ws_url.to_owned(), options.token.clone(), handshakes.clone()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_millis(50 * level as u64);
    while progress.settled.load(Ordering::Acquire) < level {
        anyhow::ensure!(Instant::now() < deadline, "subscribers are still connecting after {:?}", connecting.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();

    // The server answers `subscribe` with nothing: a marker change that every
    // subscriber has seen proves each one live. A subscriber whose
    // subscription started after a marker committed never sees that marker,
    // hence a new marker per attempt.
    let mut synchronised = false;
    for _ in 0..10 {
        let marker = writer.marker().await?;
        if progress.wait_for(marker, Duration::from_secs(3)).await {
            synchronised = true;
            break;
        }
    }
    if !synchronised {
        let behind = progress.behind(writer.cursor().await?);
        anyhow::bail!("{behind} of {level} subscribers never saw a marker change");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = options.server_pid.and_then(server_rss);

    let cpu_before = (options.server_pid.and_then(cpu_ticks), cpu_ticks_of("self"));
    let started = Instant::now();
    let window = writer.window(options.rate, Duration::from_secs(options.seconds)).await?;
    if let Some(&last) = window.commits.keys().max() {
        progress.wait_for(last, options.drain).await;
    }
    let busy = started.elapsed();
    let cpu_after = (options.server_pid.and_then(cpu_ticks), cpu_ticks_of("self"));
    let _ = stop.send(true);
    let mut logs = Vec::with_capacity(level);
    for task in tasks {
        logs.push(task.await.context("a subscriber panicked")?);
    }

    let tally = tally(window.start_after, &window.commits, &logs)?;
    let connected = logs.iter().filter(|log| log.subscribed).count();
    let mut errors: Vec<String> = logs.iter().filter_map(|log| log.error.clone()).collect();
    errors.sort();
    errors.dedup();
    errors.truncate(5);
    let cpu_percent = |before: Option<u64>, after: Option<u64>| {
        Some(100.0 * (after? - before?) as f64 / clock_ticks_per_second() / busy.as_secs_f64())
    };
    Ok(Measurement {
        scenario: "subscribe",
        database,
        subscribers: level,
        connected,
        seconds: window.elapsed.as_secs_f64(),
        target_rate: options.rate,
        achieved_rate: window.commits.len() as f64 / window.elapsed.as_secs_f64(),
        changes: window.commits.len(),
        events_expected: tally.expected,
        events_delivered: tally.delivered,
        lost: tally.lost,
        lost_by_live_subscribers: tally.lost_by_live,
        duplicated: tally.duplicated,
        unexpected: tally.unexpected,
        ended_with_error: logs.iter().filter(|log| log.subscribed && log.error.is_some()).count(),
        errors,
        latency_ms: Latency::of(&tally.latency),
        latency_from_write_start_ms: Latency::of(&tally.latency_from_write_start),
        early_deliveries: tally.early,
        connect_seconds,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_subscriber_kib: match (rss_before, rss_after) {
            (Some(before), Some(after)) => Some((after as f64 - before as f64) / level as f64),
            _ => None,
        },
        server_cpu_percent: cpu_percent(cpu_before.0, cpu_after.0),
        driver_cpu_percent: cpu_percent(cpu_before.1, cpu_after.1),
    })
}

/// What the subscribers have seen so far, for waiting without messages.
struct Progress {
    /// The highest cursor each subscriber has read.
    last: Vec<AtomicI64>,
    /// Whether each subscriber has ended (or never connected): nobody waits for it.
    ended: Vec<AtomicBool>,
    /// Subscribers that subscribed or failed trying.
    settled: AtomicUsize,
}

impl Progress {
    fn new(level: usize) -> Self {
        Self {
            last: (0..level).map(|_| AtomicI64::new(0)).collect(),
            ended: (0..level).map(|_| AtomicBool::new(false)).collect(),
            settled: AtomicUsize::new(0),
        }
    }

    /// Live subscribers that have not yet read `cursor`.
    fn behind(&self, cursor: i64) -> usize {
        self.last
            .iter()
            .zip(&self.ended)
            .filter(|(last, ended)| !ended.load(Ordering::Acquire) && last.load(Ordering::Acquire) < cursor)
            .count()
    }

    /// Whether every live subscriber read `cursor` within `patience`.
    async fn wait_for(&self, cursor: i64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            if self.behind(cursor) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What one subscriber read.
#[derive(Debug, Default)]
pub struct SubscriberLog {
    pub subscribed: bool,
    /// Every event's cursor with the moment it was read, in arrival order.
    pub events: Vec<(i64, Instant)>,
    /// Why it ended before it was told to stop, or why it never subscribed.
    pub error: Option<String>,
}

struct Subscriber {
    index: usize,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The parts of a graphql-transport-ws server message the driver reads.
#[derive(Deserialize)]
struct ServerMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

impl Subscriber {
    async fn run(mut self, url: String, token: Option<String>, handshakes: Arc<Semaphore>) -> SubscriberLog {
        let mut log = SubscriberLog::default();
        let connected = {
            let _permit = handshakes.acquire().await;
            connect(&url, token.as_deref()).await
        };
        self.progress.settled.fetch_add(1, Ordering::AcqRel);
        let mut socket = match connected {
            Ok(socket) => socket,
            Err(error) => {
                self.progress.ended[self.index].store(true, Ordering::Release);
                log.error = Some(format!("connecting: {error:#}"));
                return log;
            }
        };
        log.subscribed = true;
        log.error = self.read(&mut socket, &mut log.events).await;
        self.progress.ended[self.index].store(log.error.is_some(), Ordering::Release);
        // Completing, then closing, is what a well-behaved client does; the
        // server's answer is not waited for.
        let _ = socket.send(Message::Text(json!({"id": "1", "type": "complete"}).to_string().into())).await;
        let _ = socket.close(None).await;
        log
    }

    /// Reads events until told to stop; the reason when the stream ended first.
    async fn read(&mut self, socket: &mut Socket, events: &mut Vec<(i64, Instant)>) -> Option<String> {
        loop {
            let frame = tokio::select! {
                biased;
                frame = socket.next() => frame,
                _ = self.stop.changed() => return None,
            };
            let at = Instant::now();
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => return Some(format!("closed by the server: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Some(format!("socket error: {error}")),
                None => return Some("the connection ended".into()),
            };
            let message: ServerMessage = match serde_json::from_str(&text) {
                Ok(message) => message,
                Err(error) => return Some(format!("unreadable message ({error}): {text}")),
            };
            match message.kind.as_str() {
                "next" => {
                    let payload = message.payload.unwrap_or_default();
                    if let Some(errors) = payload.get("errors") {
                        return Some(error_code(errors));
                    }
                    let cursor = payload["data"]["catalogChanges"]["cursor"].as_str().and_then(|c| c.parse().ok());
                    let Some(cursor) = cursor else { return Some(format!("an event without a cursor: {text}")) };
                    events.push((cursor, at));
                    self.progress.last[self.index].fetch_max(cursor, Ordering::AcqRel);
                }
                "ping" => {
                    let pong = Message::Text(json!({"type": "pong"}).to_string().into());
                    if let Err(error) = socket.send(pong).await {
                        return Some(format!("socket error: {error}"));
                    }
                }
                "pong" | "ka" => {}
                "error" => return Some(error_code(&message.payload.unwrap_or_default())),
                "complete" => return Some("completed by the server".into()),
                other => return Some(format!("unexpected message {other}: {text}")),
            }
        }
    }
}

/// Connects with graphql-transport-ws, waits for `connection_ack` and
/// subscribes to the writer's namespace.
async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    // tungstenite zero-fills its whole read buffer (128 KiB by default)
    // before every read: for a thousand sockets reading small events that is
    // the driver's main cost, taken from the server's two cores.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    let payload = match token {
        Some(token) => json!({"Authorization": format!("Bearer {token}")}),
        None => json!({}),
    };
    socket.send(Message::Text(json!({"type": "connection_init", "payload": payload}).to_string().into())).await?;
    let acknowledged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame? {
                let message: ServerMessage = serde_json::from_str(&text)?;
                match message.kind.as_str() {
                    "connection_ack" => return Ok(()),
                    "ka" | "ping" | "pong" => {}
                    _ => anyhow::bail!("expected connection_ack, got {text}"),
                }
            }
        }
        anyhow::bail!("the connection ended before connection_ack")
    })
    .await;
    acknowledged.context("no connection_ack within 30 s")??;
    let subscribe = json!({
        "id": "1",
        "type": "subscribe",
        "payload": {"query": QUERY, "variables": {"filter": {"namespaces": [NAMESPACE]}}},
    });
    socket.send(Message::Text(subscribe.to_string().into())).await?;
    Ok(socket)
}

/// The error codes of a GraphQL error list, or the list itself.
fn error_code(errors: &serde_json::Value) -> String {
    let codes: Vec<&str> = match errors.as_array() {
        Some(errors) => errors.iter().filter_map(|error| error["extensions"]["code"].as_str()).collect(),
        None => Vec::new(),
    };
    if codes.is_empty() { errors.to_string() } else { codes.join(", ") }
}

/// The WebSocket endpoint of a GraphQL endpoint given over HTTP.
pub fn websocket_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let url = if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if url.starts_with("ws://") {
        url.to_owned()
    } else {
        anyhow::bail!("--url must be http:// or ws:// (the driver speaks no TLS), got {url}");
    };
    Ok(if url.ends_with("/ws") { url } else { format!("{url}/ws") })
}

/// The subscribers' logs held against what the writer committed.
#[derive(Debug)]
pub struct Tally {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub lost_by_live: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub early: u64,
    /// Microseconds from the commit returning to the event being read.
    pub latency: Histogram<u64>,
    /// Microseconds from the write starting to the event being read.
    pub latency_from_write_start: Histogram<u64>,
}

/// When the writer started a snapshot and when its commit returned.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    pub started: Instant,
    pub returned: Instant,
}

/// Counts what each subscriber that subscribed got of the changes committed
/// in the window (cursors above `start_after`); earlier cursors (markers)
/// only count when duplicated.
pub fn tally(start_after: i64, commits: &HashMap<i64, Commit>, logs: &[SubscriberLog]) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        expected: 0,
        delivered: 0,
        lost: 0,
        lost_by_live: 0,
        duplicated: 0,
        unexpected: 0,
        early: 0,
        latency: Histogram::new(3).context("a histogram")?,
        latency_from_write_start: Histogram::new(3).context("a histogram")?,
    };
    for log in logs.iter().filter(|log| log.subscribed) {
        let mut seen = HashSet::with_capacity(log.events.len());
        let mut delivered = 0u64;
        for &(cursor, at) in &log.events {
            if !seen.insert(cursor) {
                tally.duplicated += 1;
                continue;
            }
            if cursor <= start_after {
                continue;
            }
            let Some(&committed) = commits.get(&cursor) else {
                tally.unexpected += 1;
                continue;
            };
            delivered += 1;
            let latency = match at.checked_duration_since(committed.returned) {
                Some(latency) => latency,
                None => {
                    tally.early += 1;
                    Duration::ZERO
                }
            };
            let from_start = at.saturating_duration_since(committed.started);
            tally.latency.record(latency.as_micros() as u64).context("a latency beyond the histogram")?;
            tally
                .latency_from_write_start
                .record(from_start.as_micros() as u64)
                .context("a latency beyond the histogram")?;
        }
        let owed = commits.len() as u64;
        tally.expected += owed;
        tally.delivered += delivered;
        tally.lost += owed - delivered;
        if log.error.is_none() {
            tally.lost_by_live += owed - delivered;
        }
    }
    Ok(tally)
}

/// The writer's commits in one measurement window.
struct Window {
    /// The last cursor before the window.
    start_after: i64,
    /// Each cursor the writer committed, with when its commit returned.
    commits: HashMap<i64, Commit>,
    elapsed: Duration,
}

enum Command {
    Marker(oneshot::Sender<anyhow::Result<i64>>),
    Cursor(oneshot::Sender<anyhow::Result<i64>>),
    Window { rate: u32, duration: Duration, reply: oneshot::Sender<anyhow::Result<Window>> },
}

/// The writer runs on a thread and runtime of its own so that a thousand
/// busy subscriber tasks cannot delay it noting when a commit returned,
/// which would shorten every measured latency.
struct Writer {
    commands: mpsc::UnboundedSender<Command>,
}

impl Writer {
    async fn spawn(database_url: String, entities: usize) -> anyhow::Result<Self> {
        let (commands, mut received) = mpsc::unbounded_channel();
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new().name("bench-writer".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(anyhow::Error::from(error)));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut state = match WriterState::start(&database_url, entities).await {
                    Ok(state) => {
                        let _ = ready.send(Ok(()));
                        state
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                while let Some(command) = received.recv().await {
                    match command {
                        Command::Marker(reply) => {
                            let _ = reply.send(state.marker().await);
                        }
                        Command::Cursor(reply) => {
                            let _ = reply.send(Ok(state.cursor));
                        }
                        Command::Window { rate, duration, reply } => {
                            let _ = reply.send(state.window(rate, duration).await);
                        }
                    }
                }
            });
        })?;
        started.await.context("the writer thread died")??;
        Ok(Self { commands })
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Command) -> anyhow::Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).ok().context("the writer thread stopped")?;
        answer.await.context("the writer thread stopped")?
    }

    /// Commits a change to the marker entity; its cursor.
    async fn marker(&self) -> anyhow::Result<i64> {
        self.ask(Command::Marker).await
    }

    async fn cursor(&self) -> anyhow::Result<i64> {
        self.ask(Command::Cursor).await
    }

    async fn window(&self, rate: u32, duration: Duration) -> anyhow::Result<Window> {
        self.ask(|reply| Command::Window { rate, duration, reply }).await
    }

    fn stop(self) {
        drop(self.commands);
    }
}

struct WriterState {
    store: Store,
    /// The marker first, then the measured entities.
    entities: Vec<Entity>,
    /// The next measured entity to change.
    next: usize,
    version: u64,
    /// The newest cursor read from the log.
    cursor: i64,
}

impl WriterState {
    async fn start(database_url: &str, entities: usize) -> anyhow::Result<Self> {
        let store = Store::connect(database_url).await.context("the writer cannot open --database-url")?;
        let mut all = vec![bench_entity("bench-sub-marker")?];
        for index in 0..entities {
            all.push(bench_entity(&format!("bench-sub-{index:03}"))?);
        }
        let mut state = Self { store, entities: all, next: 0, version: 0, cursor: 0 };
        // A previous run may have left these entities with other
        // descriptions: whatever this applies happens before anyone listens.
        state
            .store
            .snapshot_writer()
            .apply_snapshot(&state.snapshot())
            .await
            .context("the writer's entities cannot be written")?;
        state.cursor = state.store.change_feed().latest_sequence().await?;
        Ok(state)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            provider: PROVIDER.into(),
            entities: self
                .entities
                .iter()
                .map(|entity| SnapshotEntity::new(entity.clone(), Some(PROVIDER.into())))
                .collect(),
            invalid: Vec::new(),
            locations: vec![LocationStatus {
                target: PROVIDER.into(),
                n_entities: self.entities.len(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn touch(&mut self, index: usize) {
        self.version += 1;
        self.entities[index].metadata.description = Some(format!("change {}", self.version));
    }

    /// Applies the snapshot with `expected` entities changed; the cursors it
    /// committed in the writer's namespace, and when it started and returned.
    async fn commit(&mut self, expected: usize) -> anyhow::Result<(Vec<i64>, Commit)> {
        let snapshot = self.snapshot();
        let started = Instant::now();
        let summary = self.store.snapshot_writer().apply_snapshot(&snapshot).await?;
        let returned = Instant::now();
        anyhow::ensure!(summary.updated == expected, "a snapshot updated {} entities, not {expected}", summary.updated);
        let mut cursors = Vec::with_capacity(expected);
        loop {
            let batch = self.store.change_feed().changes_after(self.cursor, 500).await?;
            let Some(last) = batch.last() else { break };
            self.cursor = last.sequence;
            cursors.extend(
                batch
                    .iter()
                    .filter(|change| {
                        change.entity_ref.kind() == "component"
                            && change.entity_ref.namespace() == NAMESPACE
                            && change.provider == PROVIDER
                    })
                    .map(|change| change.sequence),
            );
        }
        anyhow::ensure!(cursors.len() == expected, "a snapshot logged {} changes, not {expected}", cursors.len());
        Ok((cursors, Commit { started, returned }))
    }

    async fn marker(&mut self) -> anyhow::Result<i64> {
        self.touch(0);
        let (cursors, _) = self.commit(1).await?;
        Ok(cursors[0])
    }

    /// Commits `rate` changes a second for `duration`, in up to ten snapshots
    /// a second. A tick the writer is too late for is skipped, not caught up
    /// with a burst: the achieved rate says so.
    async fn window(&mut self, rate: u32, duration: Duration) -> anyhow::Result<Window> {
        let ticks_per_second = SNAPSHOTS_PER_SECOND.min(rate.max(1));
        let period = Duration::from_secs(1) / ticks_per_second;
        let measured = self.entities.len() - 1;
        let start_after = self.cursor;
        let mut commits = HashMap::new();
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval_at(started, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let at = ticker.tick().await;
            if at >= started + duration {
                break;
            }
            let tick = ((at - started).as_nanos() / period.as_nanos()) as u64;
            let count = changes_in_tick(rate, ticks_per_second, tick).min(measured);
            if count == 0 {
                continue;
            }
            for _ in 0..count {
                self.touch(1 + self.next);
                self.next = (self.next + 1) % measured;
            }
            let (cursors, commit) = self.commit(count).await?;
            commits.extend(cursors.into_iter().map(|cursor| (cursor, commit)));
        }
        Ok(Window { start_after, commits, elapsed: started.elapsed() })
    }
}

/// How many changes tick `tick` carries so that every second carries `rate`
/// even when it does not divide evenly.
pub fn changes_in_tick(rate: u32, ticks_per_second: u32, tick: u64) -> usize {
    let due = |ticks: u64| ticks * u64::from(rate) / u64::from(ticks_per_second);
    (due(tick + 1) - due(tick)) as usize
}

fn bench_entity(name: &str) -> anyhow::Result<Entity> {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": NAMESPACE, "description": "created"},
        "spec": {"type": "service", "lifecycle": "experimental", "owner": "group:default/bench-writer"},
    }))
    .map_err(|errors| anyhow::anyhow!("the writer's entity {name} is invalid: {errors:?}"))
}

/// VmRSS of a process in KiB, from /proc/PID/status.
fn server_rss(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    cpu_ticks_of(&pid.to_string())
}

/// User plus system CPU of a process, in clock ticks.
fn cpu_ticks_of(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(events: &[(i64, Instant)], error: Option<&str>) -> SubscriberLog {
        SubscriberLog { subscribed: true, events: events.to_vec(), error: error.map(str::to_owned) }
    }

    #[test]
    fn tally_counts_lost_duplicated_and_unexpected_events_per_subscriber() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let at = |n: u64| Commit { started: t0, returned: ms(n) };
        let commits: HashMap<i64, Commit> = [(11, at(0)), (12, at(0)), (13, at(10))].into();
        let logs = [
            // Everything once, plus the marker (10) before the window.
            log(&[(10, ms(0)), (11, ms(2)), (12, ms(3)), (13, ms(14))], None),
            // 12 twice, 13 missing, 99 never committed.
            log(&[(11, ms(5)), (12, ms(6)), (12, ms(7)), (99, ms(8))], None),
            // Ended by the server after 11: its loss is not a live loss.
            log(&[(11, ms(1))], Some("SUBSCRIBER_TOO_SLOW")),
            // Never subscribed: owed nothing.
            SubscriberLog { subscribed: false, events: Vec::new(), error: Some("connecting".into()) },
        ];
        let tally = tally(10, &commits, &logs).unwrap();
        assert_eq!(tally.expected, 9);
        assert_eq!(tally.delivered, 6);
        assert_eq!(tally.lost, 3);
        assert_eq!(tally.lost_by_live, 1);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.unexpected, 1);
        assert_eq!(tally.latency.len(), 6);
        assert_eq!(tally.latency.max(), tally.latency.highest_equivalent(6_000));
        // From the write's start: 13 was read 14 ms after it began.
        assert_eq!(tally.latency_from_write_start.max(), tally.latency.highest_equivalent(14_000));
    }

    #[test]
    fn an_event_read_before_its_commit_returned_counts_as_early_and_zero() {
        let t0 = Instant::now();
        let commit = Commit { started: t0, returned: t0 + Duration::from_millis(3) };
        let tally = tally(4, &[(5, commit)].into(), &[log(&[(5, t0 + Duration::from_millis(1))], None)]).unwrap();
        assert_eq!((tally.early, tally.lost, tally.latency.max()), (1, 0, 0));
        assert_eq!(tally.latency_from_write_start.max(), tally.latency.highest_equivalent(1_000));
    }

    #[test]
    fn ticks_carry_the_rate_even_when_it_does_not_divide() {
        for (rate, ticks) in [(100, 10), (25, 10), (7, 7), (1_000, 10), (3, 3)] {
            let second: usize = (0..u64::from(ticks)).map(|tick| changes_in_tick(rate, ticks, tick)).sum();
            assert_eq!(second, rate as usize, "rate {rate}");
        }
        assert_eq!(changes_in_tick(100, 10, 7), 10);
    }

    #[test]
    fn websocket_urls_come_from_the_http_endpoint() {
        assert_eq!(websocket_url("http://127.0.0.1:7007/graphql").unwrap(), "ws://127.0.0.1:7007/graphql/ws");
        assert_eq!(websocket_url("http://h:1/graphql/").unwrap(), "ws://h:1/graphql/ws");
        assert_eq!(websocket_url("ws://h:1/graphql/ws").unwrap(), "ws://h:1/graphql/ws");
        assert!(websocket_url("https://h/graphql").is_err());
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tcatalog\nVmPeak:\t  900 kB\nVmRSS:\t   35120 kB\nRssAnon:\t 20000 kB\n";
        assert_eq!(parse_rss(status), Some(35_120));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }
}
