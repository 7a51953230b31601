//! `cirrus-bench`: an open-loop Kafka load generator on librdkafka (the `rdkafka` crate),
//! the reference client, with named workload profiles.
//!
//! Open loop: every record has an intended send time fixed by the schedule before the
//! run starts; produce latency is measured from that time, not from when the client got
//! round to sending, so a stalled broker shows up as latency instead of being hidden by
//! a slower send rate (coordinated omission). End-to-end latency is measured by
//! consumers from the same intended time, which travels in the first 8 bytes of every
//! value. With `--rate 0` the producer sends as fast as the client accepts (closed loop)
//! and latency is measured from the send call.
//!
//! Optionally the bench starts the broker itself (`--broker-bin`), so it can sample its
//! CPU time and peak RSS from /proc, scrape its `/metrics` before and after the run, and
//! restart it for cold-cache reads (`catch-up`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Profile {
    /// 1 KiB records over 12 partitions, as fast as the client goes, one live consumer.
    Throughput,
    /// ~800 B keyed JSON-like records over Zipf-skewed shipment keys: a baseline, a 10x
    /// burst, the baseline again; five live consumers and one started mid-burst from
    /// the earliest offset.
    ExceptionsBurst,
    /// Produce `--catch-up-mib`, restart the broker (cold caches), then one consumer
    /// reads everything from the earliest offset.
    CatchUp,
    /// Only the flags given.
    Custom,
}

#[derive(Parser, Debug, Clone, Serialize)]
#[command(
    name = "cirrus-bench",
    about = "Open-loop Kafka load generator (librdkafka) with workload profiles"
)]
struct Args {
    #[arg(long, value_enum, default_value = "throughput")]
    profile: Profile,
    /// Kafka bootstrap address (ignored with --broker-bin, which starts its own broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Start this cirrus binary for the run (temp data dir, free ports) and measure it.
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Extra argument for the started broker (repeat), e.g. --broker-arg=--durability=object.
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    broker_args: Vec<String>,
    /// Data directory for the started broker (default: a fresh temp dir).
    #[arg(long)]
    broker_data_dir: Option<PathBuf>,
    /// Broker HTTP address for /metrics (set automatically with --broker-bin).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Broker pid for CPU and RSS sampling (set automatically with --broker-bin).
    #[arg(long)]
    broker_pid: Option<u32>,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    partitions: Option<i32>,
    /// Record value size in bytes (the first 8 carry the intended send time).
    #[arg(long)]
    record_size: Option<usize>,
    /// Distinct keys.
    #[arg(long)]
    keys: Option<u64>,
    /// Zipf exponent of the key distribution; 0 = uniform.
    #[arg(long)]
    zipf: Option<f64>,
    /// Target rate in records/s (0 = as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Length of the (baseline) run.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Burst multiplier and length (exceptions-burst).
    #[arg(long)]
    burst_factor: Option<f64>,
    #[arg(long, value_parser = humantime::parse_duration)]
    burst_duration: Option<Duration>,
    #[arg(long)]
    acks: Option<String>,
    /// none, gzip, snappy, lz4, zstd
    #[arg(long)]
    compression: Option<String>,
    #[arg(long)]
    linger_ms: Option<u32>,
    #[arg(long)]
    batch_size: Option<u32>,
    /// Live consumers, each reading every partition from the end (a consumer per
    /// "group"; the group protocol itself is not used).
    #[arg(long)]
    consumer_groups: Option<usize>,
    /// Data to produce before the catch-up read.
    #[arg(long)]
    catch_up_mib: Option<u64>,
    /// Write the JSON report here too.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// The settings of one run after the profile's defaults are applied.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    profile: Profile,
    topic: String,
    partitions: i32,
    record_size: usize,
    keys: u64,
    zipf: f64,
    phases: Vec<Phase>,
    acks: String,
    compression: String,
    linger_ms: u32,
    batch_size: u32,
    consumer_groups: usize,
    /// Seconds into the run when one more consumer starts from the earliest offset.
    late_consumer_at: Option<f64>,
    catch_up_mib: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Phase {
    seconds: f64,
    /// records/s; 0 = as fast as possible
    rate: f64,
}

fn plan(a: &Args) -> Plan {
    let (partitions, size, keys, zipf, rate, dur, groups, linger) = match a.profile {
        Profile::Throughput => (12, 1024, 10_000, 0.0, 0.0, 30.0, 1, 5),
        Profile::ExceptionsBurst => (12, 800, 100_000, 1.1, 5_000.0, 20.0, 5, 5),
        Profile::CatchUp => (12, 1024, 10_000, 0.0, 0.0, 0.0, 0, 5),
        Profile::Custom => (6, 1024, 1_000, 0.0, 1_000.0, 10.0, 1, 5),
    };
    let rate = a.rate.unwrap_or(rate);
    let dur = a.duration.map_or(dur, |d| d.as_secs_f64());
    let phases = match a.profile {
        Profile::ExceptionsBurst => {
            let factor = a.burst_factor.unwrap_or(10.0);
            let burst = a.burst_duration.map_or(10.0, |d| d.as_secs_f64());
            vec![
                Phase {
                    seconds: dur / 2.0,
                    rate,
                },
                Phase {
                    seconds: burst,
                    rate: rate * factor,
                },
                Phase {
                    seconds: dur / 2.0,
                    rate,
                },
            ]
        }
        Profile::CatchUp => vec![],
        _ => vec![Phase { seconds: dur, rate }],
    };
    let late = (a.profile == Profile::ExceptionsBurst)
        .then(|| phases[0].seconds + phases[1].seconds / 2.0);
    Plan {
        profile: a.profile,
        topic: a
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{:?}", a.profile).to_lowercase()),
        partitions: a.partitions.unwrap_or(partitions),
        record_size: a.record_size.unwrap_or(size).max(16),
        keys: a.keys.unwrap_or(keys).max(1),
        zipf: a.zipf.unwrap_or(zipf),
        phases,
        acks: a.acks.clone().unwrap_or_else(|| "all".into()),
        compression: a.compression.clone().unwrap_or_else(|| "none".into()),
        linger_ms: a.linger_ms.unwrap_or(linger),
        batch_size: a.batch_size.unwrap_or(1 << 20),
        consumer_groups: a.consumer_groups.unwrap_or(groups),
        late_consumer_at: late,
        catch_up_mib: (a.profile == Profile::CatchUp).then(|| a.catch_up_mib.unwrap_or(1024)),
    }
}

/// Keys drawn uniformly or from a Zipf distribution (inverse CDF over precomputed weights).
struct KeyGen {
    cdf: Vec<f64>,
    keys: u64,
    rng: SmallRng,
}

impl KeyGen {
    fn new(keys: u64, zipf: f64, seed: u64) -> Self {
        let cdf = if zipf > 0.0 {
            let mut acc = 0.0;
            let mut v: Vec<f64> = (1..=keys)
                .map(|k| {
                    acc += 1.0 / (k as f64).powf(zipf);
                    acc
                })
                .collect();
            let total = acc;
            v.iter_mut().for_each(|x| *x /= total);
            v
        } else {
            Vec::new()
        };
        KeyGen {
            cdf,
            keys,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn next(&mut self) -> u64 {
        let u: f64 = self.rng.random();
        if self.cdf.is_empty() {
            return (u * self.keys as f64) as u64 % self.keys;
        }
        self.cdf.partition_point(|c| *c < u) as u64
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // microseconds, 1 µs .. 10 min, 3 significant digits
    Histogram::new_with_bounds(1, 600_000_000, 3).context("latency histogram")
}

#[derive(Default)]
struct ProduceStats {
    latency_us: Mutex<Option<Histogram<u64>>>,
    acked: AtomicU64,
    acked_bytes: AtomicU64,
    errors: AtomicU64,
}

struct BenchContext {
    stats: Arc<ProduceStats>,
    start: Instant,
}

impl ClientContext for BenchContext {}

impl ProducerContext for BenchContext {
    /// The intended send time, in microseconds since the run started.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended_us: usize) {
        match result {
            Ok(msg) => {
                let now_us = self.start.elapsed().as_micros() as u64;
                let lat = now_us.saturating_sub(intended_us as u64).max(1);
                if let Ok(mut h) = self.stats.latency_us.lock()
                    && let Some(h) = h.as_mut()
                {
                    let _ = h.record(lat);
                }
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .acked_bytes
                    .fetch_add(msg.payload_len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer_config(bootstrap: &str, p: &Plan) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", &p.acks)
        .set("compression.type", &p.compression)
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_size.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .set("enable.idempotence", "true");
    c
}

/// Runs the producer for the plan's phases; returns the records sent.
fn run_producer(
    bootstrap: &str,
    p: &Plan,
    stats: Arc<ProduceStats>,
    start: Instant,
    seed: u64,
    max_bytes: Option<u64>,
) -> anyhow::Result<(u64, f64)> {
    // ThreadedProducer serves delivery reports on its own thread, so an ack is timed when
    // it arrives, not when the sending loop next gets round to polling.
    let producer: ThreadedProducer<BenchContext> = producer_config(bootstrap, p)
        .create_with_context(BenchContext {
            stats: stats.clone(),
            start,
        })
        .context("creating the producer")?;
    let mut keys = KeyGen::new(p.keys, p.zipf, seed);
    let mut value = vec![b'x'; p.record_size];
    let filler = br#"{"shipment":"SHP-0000000","event":"exception","code":"DELAYED_CUSTOMS","site":"DE-HAM","eta_shift_min":240,"note":"#;
    let n = filler.len().min(value.len().saturating_sub(8));
    value[8..8 + n].copy_from_slice(&filler[..n]);
    let mut sent = 0u64;
    // Warm up before the schedule starts: connecting, metadata and the producer id take
    // a while, and records scheduled meanwhile would all show that wait as latency.
    producer
        .send(
            BaseRecord::with_opaque_to(&p.topic, start.elapsed().as_micros() as usize)
                .key("warm-up")
                .payload(&value[..]),
        )
        .map_err(|(e, _)| anyhow::anyhow!("warm-up produce failed: {e}"))?;
    producer
        .flush(Duration::from_secs(30))
        .context("warm-up flush")?;
    // The warm-up record timed the connection set-up; start the figures afresh.
    if let Ok(mut h) = stats.latency_us.lock()
        && let Some(h) = h.as_mut()
    {
        h.reset();
    }
    stats.acked.store(0, Ordering::Relaxed);
    stats.acked_bytes.store(0, Ordering::Relaxed);
    let warm = start.elapsed().as_secs_f64();
    let mut phase_start = warm;
    let phases: Vec<Phase> = if p.phases.is_empty() {
        vec![Phase {
            seconds: f64::MAX,
            rate: 0.0,
        }]
    } else {
        p.phases.clone()
    };
    let mut sent_bytes = 0u64;
    'phases: for phase in &phases {
        let mut i = 0u64;
        loop {
            let intended = if phase.rate > 0.0 {
                let t = phase_start + i as f64 / phase.rate;
                if t >= phase_start + phase.seconds {
                    break;
                }
                t
            } else {
                let t = start.elapsed().as_secs_f64();
                if t >= phase_start + phase.seconds {
                    break;
                }
                t
            };
            if let Some(max) = max_bytes
                && sent_bytes >= max
            {
                break 'phases;
            }
            let now = start.elapsed().as_secs_f64();
            if intended > now {
                // Sleep, never spin: a spinning client would take a core from the broker
                // on this 2-core machine. Records that fell due meanwhile go out at once,
                // still timed from their intended send time.
                std::thread::sleep(Duration::from_secs_f64(intended - now));
            }
            let intended_unix =
                unix_ns() - ((start.elapsed().as_secs_f64() - intended).max(0.0) * 1e9) as u64;
            value[..8].copy_from_slice(&intended_unix.to_be_bytes());
            let key = format!("SHP-{:07}", keys.next());
            let intended_us = (intended * 1e6) as usize;
            let mut record = BaseRecord::with_opaque_to(&p.topic, intended_us)
                .key(key.as_bytes())
                .payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("produce failed: {e}"),
                }
            }
            sent += 1;
            sent_bytes += value.len() as u64;
            i += 1;
        }
        phase_start += phase.seconds;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    Ok((sent, start.elapsed().as_secs_f64() - warm))
}

#[derive(Default)]
struct ConsumeStats {
    e2e_us: Mutex<Option<Histogram<u64>>>,
    records: AtomicU64,
    bytes: AtomicU64,
}

/// One consumer reading every partition from `offset` until `stop` (or until it has
/// read up to `until` per partition, if given).
fn run_consumer(
    bootstrap: &str,
    p: &Plan,
    offset: Offset,
    stats: Arc<ConsumeStats>,
    stop: Arc<AtomicBool>,
    until: Option<BTreeMap<i32, i64>>,
    group: usize,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-{group}"))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .create()
        .context("creating a consumer")?;
    let mut tpl = TopicPartitionList::new();
    for part in 0..p.partitions {
        tpl.add_partition_offset(&p.topic, part, offset)
            .context("assign")?;
    }
    consumer.assign(&tpl).context("assign")?;
    let mut done: BTreeMap<i32, bool> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                stats.records.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                if payload.len() >= 8 {
                    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                    let lat = unix_ns().saturating_sub(sent) / 1000;
                    if let Ok(mut h) = stats.e2e_us.lock()
                        && let Some(h) = h.as_mut()
                    {
                        let _ = h.record(lat.max(1));
                    }
                }
                if let Some(until) = &until
                    && until
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    done.insert(m.partition(), true);
                    if done.len() == until.values().filter(|e| **e > 0).count() {
                        return Ok(());
                    }
                }
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
    }
    Ok(())
}

/// A broker started and measured by the bench.
struct SpawnedBroker {
    child: Child,
    bin: PathBuf,
    args: Vec<String>,
    data_dir: PathBuf,
    kafka: String,
    http: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl SpawnedBroker {
    fn start(bin: &Path, extra: &[String], data_dir: PathBuf) -> anyhow::Result<SpawnedBroker> {
        let kafka = format!("127.0.0.1:{}", free_port()?);
        let http = format!("127.0.0.1:{}", free_port()?);
        let mut args = vec![
            "--kafka-listen".to_string(),
            kafka.clone(),
            "--metrics-listen".into(),
            http.clone(),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut b = SpawnedBroker {
            child: spawn(bin, &args, &data_dir)?,
            bin: bin.to_path_buf(),
            args,
            data_dir,
            kafka,
            http,
        };
        b.wait_ready()?;
        Ok(b)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("broker exited during start-up: {status}");
            }
            if http_get(&self.http, "/readyz").is_ok_and(|b| b.starts_with("ok")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("broker not ready after 60s")
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("broker did not stop within 60s")
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.child = spawn(&self.bin, &self.args, &self.data_dir)?;
        self.wait_ready()
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, args: &[String], data_dir: &Path) -> anyhow::Result<Child> {
    std::fs::create_dir_all(data_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("broker.log"))?;
    Command::new(bin)
        .args(args)
        .env("CIRRUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Minimal HTTP/1.0 GET on loopback (no client library needed for /metrics).
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}

/// Sums of Prometheus series by name (labels folded together unless `by_label` given).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        *out.entry(series.to_string()).or_insert(0.0) += v;
        let name = series.split('{').next().unwrap_or(series).to_string();
        if name != series {
            *out.entry(name).or_insert(0.0) += v;
        }
    }
    out
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ProcSample {
    cpu_seconds: f64,
    rss_peak_bytes: u64,
}

fn sample_proc(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux builds for every mainstream architecture.
    Some(ProcSample {
        cpu_seconds: ticks / 100.0,
        rss_peak_bytes: hwm_kb * 1024,
    })
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    count: u64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        count: h.len(),
    }
}

fn object_sizes(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "obj") {
                out.push(e.metadata().map_or(0, |m| m.len()));
            }
        }
    }
    out.sort_unstable();
    out
}

fn create_topic(bootstrap: &str, p: &Plan) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("admin client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topic = NewTopic::new(&p.topic, p.partitions, TopicReplication::Fixed(1));
    let res = rt.block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

fn end_offsets(bootstrap: &str, p: &Plan) -> anyhow::Result<BTreeMap<i32, i64>> {
    let c: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-watermarks")
        .create()?;
    let mut out = BTreeMap::new();
    for part in 0..p.partitions {
        let (_, hi) = c.fetch_watermarks(&p.topic, part, Duration::from_secs(10))?;
        out.insert(part, hi);
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = plan(&args);
    let mut broker = match &args.broker_bin {
        Some(bin) => {
            let dir = args.broker_data_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "cirrus-bench-{}-{}",
                    std::process::id(),
                    unix_ns()
                ))
            });
            Some(SpawnedBroker::start(bin, &args.broker_args, dir)?)
        }
        None => None,
    };
    let bootstrap = broker
        .as_ref()
        .map_or(args.bootstrap.clone(), |b| b.kafka.clone());
    let metrics_addr = broker
        .as_ref()
        .map(|b| b.http.clone())
        .or(args.metrics_addr.clone());
    let pid = broker.as_ref().map(|b| b.child.id()).or(args.broker_pid);
    create_topic(&bootstrap, &plan)?;

    let metrics_before = metrics_addr
        .as_deref()
        .and_then(|a| http_get(a, "/metrics").ok())
        .map(|t| parse_metrics(&t));
    let proc_before = pid.and_then(sample_proc);
    let client_before = sample_proc(std::process::id());
    let produce = Arc::new(ProduceStats {
        latency_us: Mutex::new(Some(histogram()?)),
        ..Default::default()
    });
    let consume = Arc::new(ConsumeStats {
        e2e_us: Mutex::new(Some(histogram()?)),
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();

    // Live consumers from the end of the log.
    let mut consumers = Vec::new();
    for g in 0..plan.consumer_groups {
        let (b, p, s, st) = (
            bootstrap.clone(),
            plan.clone(),
            consume.clone(),
            stop.clone(),
        );
        consumers.push(std::thread::spawn(move || {
            run_consumer(&b, &p, Offset::End, s, st, None, g)
        }));
    }
    // The late consumer replays history: its latencies are not end-to-end latencies of
    // live traffic, so it counts apart.
    let late_stats = Arc::new(ConsumeStats {
        e2e_us: Mutex::new(Some(histogram()?)),
        ..Default::default()
    });
    let late = plan.late_consumer_at.map(|at| {
        let (b, p, s, st) = (
            bootstrap.clone(),
            plan.clone(),
            late_stats.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(at));
            run_consumer(&b, &p, Offset::Beginning, s, st, None, 999)
        })
    });
    std::thread::sleep(Duration::from_millis(500)); // let consumers connect and position

    let max_bytes = plan.catch_up_mib.map(|m| m << 20);
    let (sent, produce_secs) = run_producer(
        &bootstrap,
        &plan,
        produce.clone(),
        start,
        args.seed,
        max_bytes,
    )?;
    // Let live consumers drain, bounded.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let expected = produce.acked.load(Ordering::Relaxed) * plan.consumer_groups as u64;
    while plan.consumer_groups > 0
        && consume.records.load(Ordering::Relaxed) < expected
        && Instant::now() < drain_deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        let _ = c.join();
    }
    if let Some(l) = late {
        let _ = l.join();
    }
    let proc_after_produce = pid.and_then(sample_proc);
    let client_after = sample_proc(std::process::id());
    let metrics_after = metrics_addr
        .as_deref()
        .and_then(|a| http_get(a, "/metrics").ok())
        .map(|t| parse_metrics(&t));

    // Catch-up: cold restart, then one consumer reads everything from the start.
    let mut catch_up = None;
    if plan.profile == Profile::CatchUp {
        let ends = end_offsets(&bootstrap, &plan)?;
        if let Some(b) = broker.as_mut() {
            b.restart()?;
        }
        let bootstrap = broker
            .as_ref()
            .map_or(bootstrap.clone(), |b| b.kafka.clone());
        let stats = Arc::new(ConsumeStats::default());
        let t = Instant::now();
        run_consumer(
            &bootstrap,
            &plan,
            Offset::Beginning,
            stats.clone(),
            Arc::new(AtomicBool::new(false)),
            Some(ends),
            0,
        )?;
        let secs = t.elapsed().as_secs_f64();
        let bytes = stats.bytes.load(Ordering::Relaxed);
        catch_up = Some(serde_json::json!({
            "records": stats.records.load(Ordering::Relaxed),
            "bytes": bytes,
            "seconds": secs,
            "mb_per_s": bytes as f64 / 1e6 / secs,
            "produce_mb_per_s": produce.acked_bytes.load(Ordering::Relaxed) as f64 / 1e6 / produce_secs,
        }));
    }

    let acked_bytes = produce.acked_bytes.load(Ordering::Relaxed);
    let gb = acked_bytes as f64 / 1e9;
    let produce_lat = produce
        .latency_us
        .lock()
        .ok()
        .and_then(|h| h.as_ref().map(percentiles));
    let e2e_lat = consume
        .e2e_us
        .lock()
        .ok()
        .and_then(|h| h.as_ref().map(percentiles));
    let cpu = match (proc_before, proc_after_produce) {
        (Some(a), Some(b)) => Some(serde_json::json!({
            "broker_cpu_seconds": b.cpu_seconds - a.cpu_seconds,
            "broker_cpu_seconds_per_gb": (b.cpu_seconds - a.cpu_seconds) / gb.max(1e-9),
            "broker_peak_rss_mib": b.rss_peak_bytes as f64 / (1 << 20) as f64,
        })),
        _ => None,
    };
    let delta = |name: &str| match (&metrics_before, &metrics_after) {
        (Some(a), Some(b)) => {
            Some(b.get(name).copied().unwrap_or(0.0) - a.get(name).copied().unwrap_or(0.0))
        }
        _ => None,
    };
    let s3 = metrics_after.as_ref().map(|_| {
        let puts = delta("cirrus_object_store_requests_total{kind=\"put\"}").unwrap_or(0.0)
            + delta("cirrus_object_store_requests_total{kind=\"multipart_part\"}").unwrap_or(0.0);
        let gets = delta("cirrus_object_store_requests_total{kind=\"get\"}").unwrap_or(0.0);
        let lists = delta("cirrus_object_store_requests_total{kind=\"list\"}").unwrap_or(0.0);
        let objects = delta("cirrus_objects_committed_total").unwrap_or(0.0);
        let object_bytes = delta("cirrus_object_committed_bytes_total").unwrap_or(0.0);
        serde_json::json!({
            "puts": puts, "gets": gets, "lists": lists,
            "puts_per_gb": puts / gb.max(1e-9), "gets_per_gb": gets / gb.max(1e-9),
            "cost_usd_per_gb": (puts * 0.005 + lists * 0.005 + gets * 0.0004) / 1000.0 / gb.max(1e-9),
            "objects_committed": objects,
            "avg_object_mib": if objects > 0.0 { object_bytes / objects / (1 << 20) as f64 } else { 0.0 },
            "puts_per_second": puts / produce_secs,
            "metadata_writes_per_second": delta("cirrus_metadata_writes_total").unwrap_or(0.0) / produce_secs,
            "wal_outstanding_bytes_at_end": metrics_after.as_ref().and_then(|m| m.get("cirrus_wal_outstanding_bytes").copied()),
        })
    });
    let sizes = broker
        .as_ref()
        .map(|b| object_sizes(&b.data_dir.join("objects")))
        .unwrap_or_default();
    let size_dist = (!sizes.is_empty()).then(|| {
        let q = |f: f64| sizes[((sizes.len() - 1) as f64 * f) as usize];
        serde_json::json!({"count": sizes.len(), "min": q(0.0), "p50": q(0.5), "p90": q(0.9), "max": q(1.0),
            "mean": sizes.iter().sum::<u64>() as f64 / sizes.len() as f64})
    });
    let report = serde_json::json!({
        "plan": plan,
        "sent": sent,
        "acked": produce.acked.load(Ordering::Relaxed),
        "errors": produce.errors.load(Ordering::Relaxed),
        "produce_seconds": produce_secs,
        "produce_mb_per_s": acked_bytes as f64 / 1e6 / produce_secs,
        "produce_records_per_s": produce.acked.load(Ordering::Relaxed) as f64 / produce_secs,
        "produce_latency": produce_lat,
        "consumed_records": consume.records.load(Ordering::Relaxed),
        "consume_mb_per_s": consume.bytes.load(Ordering::Relaxed) as f64 / 1e6 / produce_secs,
        "end_to_end_latency": e2e_lat,
        "late_consumer_records": late_stats.records.load(Ordering::Relaxed),
        "client_cpu_seconds": match (client_before, client_after) {
            (Some(a), Some(b)) => Some(b.cpu_seconds - a.cpu_seconds),
            _ => None,
        },
        "broker": cpu,
        "object_store": s3,
        "object_sizes_bytes": size_dist,
        "catch_up": catch_up,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = &args.output {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(mut b) = broker.take() {
        b.stop()?;
    }
    Ok(())
}
