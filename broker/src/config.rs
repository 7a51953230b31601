//! Broker settings: what they are, their defaults and bounds, and how they are loaded.
//!
//! Precedence, highest first: command-line flag, `CIRRUS_*` environment variable, the
//! TOML file given by `--config`, the built-in default. Settings are validated once at
//! start-up ([`Settings::validate`]); an illegal value or combination stops the broker
//! with a message that names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

/// When a produce request is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    /// After the local WAL has fsynced the batch (an object upload follows within
    /// `flush_interval`). Losing the broker's volume loses the unflushed tail.
    Local,
    /// After the object holding the batch is in the bucket and committed: nothing
    /// acknowledged depends on this machine, at the cost of `flush_interval` + one PUT
    /// of produce latency.
    Object,
}

impl Durability {
    /// The value as written in configs (`local` or `object`).
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Object => "object",
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Durability::Local),
            "object" => Ok(Durability::Object),
            other => Err(format!(
                "'{other}' is not a durability (expected local or object)"
            )),
        }
    }
}

/// A byte size given as an integer or with a unit (`8MiB`, `512KiB`, `1GB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ByteSizeRepr", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum ByteSizeRepr {
    Int(u64),
    Text(String),
}

impl TryFrom<ByteSizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: ByteSizeRepr) -> Result<Self, String> {
        match r {
            ByteSizeRepr::Int(n) => Ok(ByteSize(n)),
            ByteSizeRepr::Text(s) => s.parse(),
        }
    }
}

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> u64 {
        b.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a byte size (examples: 1048576, 512KiB, 8MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "'{other}' is not a byte unit in '{s}' (use B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{s}' is too large"))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration (examples: 250ms, 2s): {e}"))
}

/// Settings of the `cirrus` broker. Every field is a flag, a `CIRRUS_*` variable and a
/// key of the `--config` TOML file (snake_case).
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsArgs {
    /// Address the Kafka listener binds. [default: 127.0.0.1:9092]
    #[arg(long, env = "CIRRUS_KAFKA_LISTEN")]
    pub kafka_listen: Option<SocketAddr>,
    /// host:port that clients are told to connect to (Metadata). [default: the listen address]
    #[arg(long, env = "CIRRUS_ADVERTISED_ADDRESS")]
    pub advertised_address: Option<String>,
    /// Directory of the WAL, the embedded metadata store and the default object store. [default: ./cirrus-data]
    #[arg(long, env = "CIRRUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where data objects go: file:///abs/path, s3://bucket/prefix, memory://. S3 endpoint and
    /// credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ALLOW_HTTP or the --s3-* flags. [default: file://<data-dir>/objects]
    #[arg(long, env = "CIRRUS_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// S3 endpoint URL (overrides AWS_ENDPOINT_URL), for MinIO, SeaweedFS and other S3-compatible servers.
    #[arg(long, env = "CIRRUS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (overrides AWS_REGION). [default: us-east-1]
    #[arg(long, env = "CIRRUS_S3_REGION")]
    pub s3_region: Option<String>,
    /// Allow plain-http S3 endpoints (overrides AWS_ALLOW_HTTP).
    #[arg(long, env = "CIRRUS_S3_ALLOW_HTTP")]
    pub s3_allow_http: Option<bool>,
    /// Default acknowledgement point for new topics (topic config `cirrus.durability`). [default: local]
    #[arg(long, env = "CIRRUS_DURABILITY")]
    pub durability: Option<Durability>,
    /// Longest time received data waits before it is sealed into an object and uploaded.
    /// Shorter: lower durability=object latency, more PUTs (one per interval per broker at low load). [default: 250ms]
    #[arg(long, env = "CIRRUS_FLUSH_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// An object is sealed once it holds this many bytes. Larger: fewer PUTs, more memory. Minimum 64KiB. [default: 8MiB]
    #[arg(long, env = "CIRRUS_OBJECT_TARGET_BYTES")]
    pub object_target_bytes: Option<ByteSize>,
    /// HTTP listener for /livez and /readyz. [default: 127.0.0.1:9644]
    #[arg(long, env = "CIRRUS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Create unknown topics on Metadata and Produce requests, as Kafka's auto.create.topics.enable. [default: true]
    #[arg(long, env = "CIRRUS_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics requests that give -1. [default: 1]
    #[arg(long, env = "CIRRUS_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// Largest record batch accepted (Kafka's message.max.bytes; topic config max.message.bytes). [default: 1048588]
    #[arg(long, env = "CIRRUS_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<ByteSize>,
    /// Id of this broker, unique in the cluster (Kafka's node.id / broker.id). [default: 0]
    #[arg(long, visible_alias = "broker-id", env = "CIRRUS_NODE_ID")]
    #[serde(alias = "broker_id")]
    pub node_id: Option<i32>,
    /// etcd endpoints (comma-separated URLs): run as a member of a cluster. Without them the
    /// node runs alone with the embedded metadata store in the data directory.
    #[arg(long, env = "CIRRUS_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Address of the admin gRPC API (`cirrus admin --bootstrap-server`). [default: 127.0.0.1:9095]
    #[arg(long, env = "CIRRUS_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Session (lease) TTL in a cluster: a broker silent this long loses its partitions.
    /// Shorter: faster failover; longer: more tolerance of pauses. [default: 9s]
    #[arg(long, env = "CIRRUS_SESSION_TTL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// Fail over durability=local partitions of a dead broker at once, losing what it had
    /// acknowledged but not uploaded (Kafka's unclean.leader.election.enable; also a topic
    /// config). Off: they wait until the broker restarts on its volume. [default: false]
    #[arg(long, env = "CIRRUS_UNCLEAN_FAILOVER")]
    pub unclean_failover: Option<bool>,
    /// Move partitions onto brokers that join, and even out partition counts. [default: true]
    #[arg(long, env = "CIRRUS_AUTO_REBALANCE")]
    pub auto_rebalance: Option<bool>,
    /// Autoscaling: produce bytes per second one broker should take. [default: 64MiB]
    #[arg(long, env = "CIRRUS_AUTOSCALE_TARGET_BYTES_IN")]
    pub autoscale_target_bytes_in: Option<ByteSize>,
    /// Autoscaling: fetch bytes per second one broker should serve. [default: 128MiB]
    #[arg(long, env = "CIRRUS_AUTOSCALE_TARGET_BYTES_OUT")]
    pub autoscale_target_bytes_out: Option<ByteSize>,
    /// Autoscaling: CPU cores one broker should use. [default: 1.5]
    #[arg(long, env = "CIRRUS_AUTOSCALE_TARGET_CPU")]
    pub autoscale_target_cpu: Option<f64>,
    /// Autoscaling: fewest brokers ever recommended. [default: 1]
    #[arg(long, env = "CIRRUS_AUTOSCALE_MIN_BROKERS")]
    pub autoscale_min_brokers: Option<u32>,
    /// Autoscaling: most brokers ever recommended. [default: 64]
    #[arg(long, env = "CIRRUS_AUTOSCALE_MAX_BROKERS")]
    pub autoscale_max_brokers: Option<u32>,
    /// Produce waits (backpressure) when the WAL holds this many bytes not yet in the bucket. [default: 1GiB]
    #[arg(long, env = "CIRRUS_WAL_MAX_BYTES")]
    pub wal_max_bytes: Option<ByteSize>,
    /// Bytes of recent data kept in memory per broker so consumers at the head never touch the bucket. [default: 256MiB]
    #[arg(long, env = "CIRRUS_TAIL_CACHE_BYTES")]
    pub tail_cache_bytes: Option<ByteSize>,
    /// Bytes of object runs cached in memory for reads behind the tail; 0 = no cache. [default: 256MiB]
    #[arg(long, env = "CIRRUS_READ_CACHE_BYTES")]
    pub read_cache_bytes: Option<ByteSize>,
    /// Bytes of local disk for the read cache's second tier (what memory evicts); 0 = memory only. [default: 0]
    #[arg(long, env = "CIRRUS_READ_CACHE_DISK_BYTES")]
    pub read_cache_disk_bytes: Option<ByteSize>,
    /// Directory of the read cache's disk tier. [default: <data-dir>/read-cache]
    #[arg(long, env = "CIRRUS_READ_CACHE_DIR")]
    pub read_cache_dir: Option<PathBuf>,
    /// Most simultaneous client connections. [default: 10000]
    #[arg(long, env = "CIRRUS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request frame accepted; larger frames close the connection. [default: 100MiB]
    #[arg(long, env = "CIRRUS_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<ByteSize>,
    /// How long a graceful shutdown may take to upload what the WAL holds. [default: 30s]
    #[arg(long, env = "CIRRUS_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// Inject object store latency and faults, for benchmarks and tests: none, s3-standard,
    /// fixed:20ms, lognormal:30ms:150ms, optionally with ,per-mib:10ms and ,errors:0.01. [default: none]
    #[arg(long, env = "CIRRUS_OBJECT_STORE_LATENCY")]
    pub object_store_latency: Option<String>,
    /// Log format: text or json. [default: text]
    #[arg(long, env = "CIRRUS_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Committed offsets of an empty consumer group expire this long after their commit
    /// (Kafka's offsets.retention.minutes). [default: 7d]
    #[arg(long, env = "CIRRUS_OFFSETS_RETENTION", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub offsets_retention: Option<Duration>,
    /// How long the first rebalance of an empty consumer group waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms; 0 = no wait). [default: 3s]
    #[arg(long, env = "CIRRUS_GROUP_INITIAL_REBALANCE_DELAY", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_initial_rebalance_delay: Option<Duration>,
    /// How often each broker computes consumer lag (records and seconds behind) for the
    /// partitions it owns, for the cirrus_consumer_group_lag_* metrics (0 = off). [default: 15s]
    #[arg(long, env = "CIRRUS_CONSUMER_LAG_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub consumer_lag_interval: Option<Duration>,
    /// A member of a consumer-protocol group (KIP-848) that does not heartbeat this long is
    /// removed (Kafka's group.consumer.session.timeout.ms; 1s..30m). [default: 45s]
    #[arg(long, env = "CIRRUS_GROUP_CONSUMER_SESSION_TIMEOUT", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_consumer_session_timeout: Option<Duration>,
    /// How often members of a consumer-protocol group (KIP-848) heartbeat (Kafka's
    /// group.consumer.heartbeat.interval.ms; below the session timeout). [default: 5s]
    #[arg(long, env = "CIRRUS_GROUP_CONSUMER_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_consumer_heartbeat_interval: Option<Duration>,
    /// How often each broker applies retention (retention.ms, retention.bytes) to the
    /// partitions it owns and deletes objects nothing references any more (Kafka's
    /// log.retention.check.interval.ms). [default: 30s]
    #[arg(long, env = "CIRRUS_RETENTION_CHECK_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Option<Duration>,
    /// An object whose data is all deleted is removed from the bucket this long after,
    /// so reads already under way finish (Kafka's file.delete.delay.ms). [default: 1m]
    #[arg(long, env = "CIRRUS_OBJECT_DELETE_GRACE", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub object_delete_grace: Option<Duration>,
    /// How often the controller (or a single node) lists the bucket for orphan objects:
    /// uploaded but never committed (a crash, a fenced broker); 0 = never. [default: 10m]
    #[arg(long, env = "CIRRUS_ORPHAN_GC_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub orphan_gc_interval: Option<Duration>,
    /// An unreferenced object is an orphan only once it is this old (uploads waiting for
    /// their commit are re-uploaded well before). At least 3 × object_delete_grace. [default: 1h]
    #[arg(long, env = "CIRRUS_ORPHAN_GRACE", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Option<Duration>,
    /// How often each broker merges the small runs of its partitions into larger
    /// per-partition objects (object compaction) and cleans its compacted topics (log
    /// compaction); 0 = never. [default: 1m]
    #[arg(long, env = "CIRRUS_COMPACTION_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Option<Duration>,
    /// Only runs committed at least this long ago are merged, so fresh data is read
    /// from the objects it was written to while consumers are likely at the head. [default: 10m]
    #[arg(long, env = "CIRRUS_COMPACTION_MIN_AGE", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub compaction_min_age: Option<Duration>,
    /// Size of the objects compaction writes; runs at least half this size are left
    /// alone. At least object_target_bytes. [default: 2 × object_target_bytes]
    #[arg(long, env = "CIRRUS_COMPACTION_TARGET_BYTES")]
    pub compaction_target_bytes: Option<ByteSize>,
}

/// Validated, complete settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kafka_listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    pub object_store: String,
    pub s3: cirrus_storage::S3Options,
    pub durability: Durability,
    pub flush_interval: Duration,
    pub object_target_bytes: u64,
    pub metrics_listen: SocketAddr,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub message_max_bytes: u64,
    pub node_id: i32,
    /// Cluster mode when set.
    pub etcd_endpoints: Option<Vec<String>>,
    pub admin_listen: SocketAddr,
    pub session_ttl: Duration,
    pub unclean_failover: bool,
    pub auto_rebalance: bool,
    pub autoscale: cirrus_controller::AutoscaleTargets,
    pub wal_max_bytes: u64,
    pub tail_cache_bytes: u64,
    pub read_cache_bytes: u64,
    pub read_cache_disk_bytes: u64,
    pub read_cache_dir: PathBuf,
    pub max_connections: usize,
    pub max_request_bytes: u64,
    pub shutdown_timeout: Duration,
    pub object_store_latency: Option<cirrus_storage::LatencyProfile>,
    pub log_json: bool,
    pub offsets_retention: Duration,
    pub group_initial_rebalance_delay: Duration,
    /// Zero when the lag monitor is off.
    pub consumer_lag_interval: Duration,
    pub group_consumer_session_timeout: Duration,
    pub group_consumer_heartbeat_interval: Duration,
    pub retention_check_interval: Duration,
    pub object_delete_grace: Duration,
    /// Zero when the orphan sweep is off.
    pub orphan_gc_interval: Duration,
    pub orphan_grace: Duration,
    pub compaction_interval: Duration,
    pub compaction_min_age: Duration,
    pub compaction_target_bytes: u64,
}

/// A setting that is missing, malformed or out of bounds.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

impl SettingsArgs {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Fills every unset field of `self` from `lower`.
    pub fn or(self, lower: SettingsArgs) -> SettingsArgs {
        macro_rules! pick {
            ($($f:ident),*) => { SettingsArgs { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            kafka_listen,
            advertised_address,
            data_dir,
            object_store,
            s3_endpoint,
            s3_region,
            s3_allow_http,
            durability,
            flush_interval,
            object_target_bytes,
            metrics_listen,
            auto_create_topics,
            default_partitions,
            message_max_bytes,
            node_id,
            etcd_endpoints,
            admin_listen,
            session_ttl,
            unclean_failover,
            auto_rebalance,
            autoscale_target_bytes_in,
            autoscale_target_bytes_out,
            autoscale_target_cpu,
            autoscale_min_brokers,
            autoscale_max_brokers,
            wal_max_bytes,
            tail_cache_bytes,
            read_cache_bytes,
            read_cache_disk_bytes,
            read_cache_dir,
            max_connections,
            max_request_bytes,
            shutdown_timeout,
            object_store_latency,
            log_format,
            offsets_retention,
            group_initial_rebalance_delay,
            consumer_lag_interval,
            group_consumer_session_timeout,
            group_consumer_heartbeat_interval,
            retention_check_interval,
            object_delete_grace,
            orphan_gc_interval,
            orphan_grace,
            compaction_interval,
            compaction_min_age,
            compaction_target_bytes
        )
    }

    /// Applies defaults and checks bounds.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let kafka_listen = self
            .kafka_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let advertised = self
            .advertised_address
            .unwrap_or_else(|| kafka_listen.to_string());
        let (host, port) = advertised.rsplit_once(':').ok_or_else(|| {
            invalid(
                "advertised_address",
                format!("'{advertised}' is not host:port"),
            )
        })?;
        let advertised_port: i32 = port
            .parse()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                invalid(
                    "advertised_address",
                    format!("'{port}' is not a port in '{advertised}'"),
                )
            })?;
        let advertised_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if advertised_host.is_empty() || advertised_host == "0.0.0.0" || advertised_host == "::" {
            return Err(invalid(
                "advertised_address",
                format!(
                    "'{advertised}' is not an address clients can connect to; set --advertised-address"
                ),
            ));
        }
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("cirrus-data"));
        let object_store = match self.object_store {
            Some(url) => url,
            None => {
                let abs = std::path::absolute(data_dir.join("objects"))
                    .map_err(|e| invalid("data_dir", format!("{}: {e}", data_dir.display())))?;
                format!("file://{}", abs.display())
            }
        };
        let flush_interval = self.flush_interval.unwrap_or(Duration::from_millis(250));
        if flush_interval < Duration::from_millis(1) || flush_interval > Duration::from_secs(600) {
            return Err(invalid("flush_interval", "must be between 1ms and 10m"));
        }
        let object_target_bytes = self.object_target_bytes.map_or(8 << 20, |b| b.0);
        if !(64 << 10..=5 << 30).contains(&object_target_bytes) {
            return Err(invalid(
                "object_target_bytes",
                "must be between 64KiB and 5GiB",
            ));
        }
        let default_partitions = self.default_partitions.unwrap_or(1);
        if !(1..=100_000).contains(&default_partitions) {
            return Err(invalid(
                "default_partitions",
                "must be between 1 and 100000",
            ));
        }
        let message_max_bytes = self.message_max_bytes.map_or(1_048_588, |b| b.0);
        if !(1024..=1 << 30).contains(&message_max_bytes) {
            return Err(invalid(
                "message_max_bytes",
                "must be between 1KiB and 1GiB",
            ));
        }
        let max_request_bytes = self.max_request_bytes.map_or(100 << 20, |b| b.0);
        if max_request_bytes < message_max_bytes + 1024 || max_request_bytes > i32::MAX as u64 {
            return Err(invalid(
                "max_request_bytes",
                "must exceed message_max_bytes and stay below 2GiB",
            ));
        }
        let wal_max_bytes = self.wal_max_bytes.map_or(1 << 30, |b| b.0);
        if wal_max_bytes < 2 * object_target_bytes {
            return Err(invalid(
                "wal_max_bytes",
                "must be at least twice object_target_bytes",
            ));
        }
        let node_id = self.node_id.unwrap_or(0);
        if node_id < 0 {
            return Err(invalid("node_id", "must not be negative"));
        }
        let etcd_endpoints = match self.etcd_endpoints {
            Some(list) if list.iter().all(|e| e.trim().is_empty()) => None,
            Some(list) => {
                for e in &list {
                    url::Url::parse(e.trim()).map_err(|err| {
                        invalid(
                            "etcd_endpoints",
                            format!("'{e}' is not a URL like http://127.0.0.1:2379: {err}"),
                        )
                    })?;
                }
                Some(list.into_iter().map(|e| e.trim().to_string()).collect())
            }
            None => None,
        };
        let session_ttl = self.session_ttl.unwrap_or(Duration::from_secs(9));
        if session_ttl < Duration::from_secs(2) || session_ttl > Duration::from_secs(300) {
            return Err(invalid(
                "session_ttl",
                format!("{session_ttl:?} is outside 2s..300s"),
            ));
        }
        let autoscale = cirrus_controller::AutoscaleTargets {
            bytes_in_per_sec: self.autoscale_target_bytes_in.map_or(64 << 20, |b| b.0) as f64,
            bytes_out_per_sec: self.autoscale_target_bytes_out.map_or(128 << 20, |b| b.0) as f64,
            cpu_cores: self.autoscale_target_cpu.unwrap_or(1.5),
            min_brokers: self.autoscale_min_brokers.unwrap_or(1),
            max_brokers: self.autoscale_max_brokers.unwrap_or(64),
        };
        if autoscale.bytes_in_per_sec < 1.0 || autoscale.bytes_out_per_sec < 1.0 {
            return Err(invalid(
                "autoscale_target_bytes_in",
                "autoscale byte targets must be at least 1 byte per second",
            ));
        }
        if !(autoscale.cpu_cores.is_finite() && autoscale.cpu_cores > 0.0) {
            return Err(invalid(
                "autoscale_target_cpu",
                format!("{} is not a positive number of cores", autoscale.cpu_cores),
            ));
        }
        if autoscale.min_brokers == 0 || autoscale.max_brokers < autoscale.min_brokers {
            return Err(invalid(
                "autoscale_min_brokers",
                format!(
                    "need 1 <= min ({}) <= max ({})",
                    autoscale.min_brokers, autoscale.max_brokers
                ),
            ));
        }
        let log_json = match self.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("'{other}' is not text or json"),
                ));
            }
        };
        let max_connections = self.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let offsets_retention = self
            .offsets_retention
            .unwrap_or(Duration::from_secs(7 * 24 * 3600));
        if offsets_retention < Duration::from_secs(1)
            || offsets_retention > Duration::from_secs(3650 * 24 * 3600)
        {
            return Err(invalid("offsets_retention", "must be between 1s and 3650d"));
        }
        let group_initial_rebalance_delay = self
            .group_initial_rebalance_delay
            .unwrap_or(Duration::from_secs(3));
        if group_initial_rebalance_delay > Duration::from_secs(300) {
            return Err(invalid(
                "group_initial_rebalance_delay",
                "must be at most 5m",
            ));
        }
        let consumer_lag_interval = self
            .consumer_lag_interval
            .unwrap_or(Duration::from_secs(15));
        if !consumer_lag_interval.is_zero() && consumer_lag_interval < Duration::from_secs(1) {
            return Err(invalid(
                "consumer_lag_interval",
                "must be 0 (off) or at least 1s",
            ));
        }
        let group_consumer_session_timeout = self
            .group_consumer_session_timeout
            .unwrap_or(Duration::from_secs(45));
        if group_consumer_session_timeout < Duration::from_secs(1)
            || group_consumer_session_timeout > Duration::from_secs(1800)
        {
            return Err(invalid(
                "group_consumer_session_timeout",
                "must be between 1s and 30m",
            ));
        }
        let group_consumer_heartbeat_interval = self
            .group_consumer_heartbeat_interval
            .unwrap_or(Duration::from_secs(5));
        if group_consumer_heartbeat_interval < Duration::from_millis(100)
            || group_consumer_heartbeat_interval >= group_consumer_session_timeout
        {
            return Err(invalid(
                "group_consumer_heartbeat_interval",
                "must be at least 100ms and shorter than group_consumer_session_timeout",
            ));
        }
        let retention_check_interval = self
            .retention_check_interval
            .unwrap_or(Duration::from_secs(30));
        if retention_check_interval < Duration::from_millis(100) {
            return Err(invalid(
                "retention_check_interval",
                "must be at least 100ms",
            ));
        }
        let object_delete_grace = self.object_delete_grace.unwrap_or(Duration::from_secs(60));
        let orphan_gc_interval = self.orphan_gc_interval.unwrap_or(Duration::from_secs(600));
        if !orphan_gc_interval.is_zero() && orphan_gc_interval < object_delete_grace {
            // An orphan is deleted at its second sighting, a sweep interval later: that
            // must outlast the delete grace of objects another writer just dropped.
            return Err(invalid(
                "orphan_gc_interval",
                "must be 0 (never) or at least object_delete_grace",
            ));
        }
        let orphan_grace = self.orphan_grace.unwrap_or(Duration::from_secs(3600));
        if orphan_grace < object_delete_grace * 3 || orphan_grace < Duration::from_secs(1) {
            return Err(invalid(
                "orphan_grace",
                "must be at least 1s and at least 3 × object_delete_grace",
            ));
        }
        let read_cache_disk_bytes = self.read_cache_disk_bytes.map_or(0, |b| b.0);
        let read_cache_dir = self
            .read_cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("read-cache"));
        let compaction_interval = self.compaction_interval.unwrap_or(Duration::from_secs(60));
        let compaction_min_age = self.compaction_min_age.unwrap_or(Duration::from_secs(600));
        // Twice an object by default: merged runs stay small enough to read whole.
        let compaction_target_bytes = self
            .compaction_target_bytes
            .map_or(2 * object_target_bytes, |b| b.0);
        if !(object_target_bytes..=5 << 30).contains(&compaction_target_bytes) {
            return Err(invalid(
                "compaction_target_bytes",
                "must be at least object_target_bytes and at most 5GiB",
            ));
        }
        let object_store_latency = match self.object_store_latency.as_deref() {
            None => None,
            Some(spec) => cirrus_storage::LatencyProfile::parse(spec)
                .map_err(|e| invalid("object_store_latency", e.to_string()))?,
        };
        Ok(Settings {
            object_store_latency,
            kafka_listen,
            advertised_host,
            advertised_port,
            data_dir,
            object_store,
            s3: cirrus_storage::S3Options {
                endpoint: self.s3_endpoint,
                region: self.s3_region,
                allow_http: self.s3_allow_http,
                ..Default::default()
            },
            durability: self.durability.unwrap_or(Durability::Local),
            flush_interval,
            object_target_bytes,
            metrics_listen: self
                .metrics_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9644))),
            auto_create_topics: self.auto_create_topics.unwrap_or(true),
            default_partitions,
            message_max_bytes,
            node_id,
            etcd_endpoints,
            admin_listen: self
                .admin_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9095))),
            session_ttl,
            unclean_failover: self.unclean_failover.unwrap_or(false),
            auto_rebalance: self.auto_rebalance.unwrap_or(true),
            autoscale,
            wal_max_bytes,
            tail_cache_bytes: self.tail_cache_bytes.map_or(256 << 20, |b| b.0),
            read_cache_bytes: self.read_cache_bytes.map_or(256 << 20, |b| b.0),
            read_cache_disk_bytes,
            read_cache_dir,
            max_connections,
            max_request_bytes,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            log_json,
            offsets_retention,
            group_initial_rebalance_delay,
            consumer_lag_interval,
            group_consumer_session_timeout,
            group_consumer_heartbeat_interval,
            retention_check_interval,
            object_delete_grace,
            orphan_gc_interval,
            orphan_grace,
            compaction_interval,
            compaction_min_age,
            compaction_target_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!("8MiB".parse::<ByteSize>().unwrap().0, 8 << 20);
        assert_eq!("1048576".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2_000_000_000);
        assert!("8 parsecs".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
    }

    #[test]
    fn defaults_validate() {
        let s = SettingsArgs::default().validate().unwrap();
        assert_eq!(s.kafka_listen.to_string(), "127.0.0.1:9092");
        assert_eq!(s.advertised_port, 9092);
        assert_eq!(s.flush_interval, Duration::from_millis(250));
        assert_eq!(s.object_target_bytes, 8 << 20);
        assert!(s.object_store.starts_with("file://"));
        assert_eq!(s.durability, Durability::Local);
        assert_eq!(s.offsets_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.group_initial_rebalance_delay, Duration::from_secs(3));
        let file: SettingsArgs = toml::from_str("offsets_retention = \"2h\"\n").unwrap();
        let s = file.validate().unwrap();
        assert_eq!(s.offsets_retention, Duration::from_secs(7200));
        assert_eq!(
            SettingsArgs::default()
                .validate()
                .unwrap()
                .consumer_lag_interval,
            Duration::from_secs(15)
        );
        let off: SettingsArgs = toml::from_str("consumer_lag_interval = \"0s\"\n").unwrap();
        assert!(off.validate().unwrap().consumer_lag_interval.is_zero());
        let fast: SettingsArgs = toml::from_str("consumer_lag_interval = \"500ms\"\n").unwrap();
        assert!(fast.validate().is_err());
        let s = SettingsArgs::default().validate().unwrap();
        assert_eq!(s.group_consumer_session_timeout, Duration::from_secs(45));
        assert_eq!(s.group_consumer_heartbeat_interval, Duration::from_secs(5));
        let slow: SettingsArgs = toml::from_str(
            "group_consumer_session_timeout = \"6s\"\ngroup_consumer_heartbeat_interval = \"6s\"\n",
        )
        .unwrap();
        assert!(
            slow.validate().is_err(),
            "the heartbeat must be shorter than the session"
        );
        let s = SettingsArgs::default().validate().unwrap();
        assert_eq!(
            (s.object_delete_grace, s.orphan_grace),
            (Duration::from_secs(60), Duration::from_secs(3600))
        );
        let short: SettingsArgs =
            toml::from_str("object_delete_grace = \"1m\"\norphan_grace = \"2m\"\n").unwrap();
        assert!(
            short.validate().is_err(),
            "orphans must wait longer than dead objects"
        );
        let hasty: SettingsArgs =
            toml::from_str("object_delete_grace = \"1m\"\norphan_gc_interval = \"30s\"\n").unwrap();
        assert!(
            hasty.validate().is_err(),
            "a second sighting must come after the delete grace"
        );
    }

    #[test]
    fn file_values_lose_to_flags() {
        let file: SettingsArgs = toml::from_str(
            "flush_interval = \"1s\"\nobject_target_bytes = \"1MiB\"\ndurability = \"object\"\n",
        )
        .unwrap();
        let flags = SettingsArgs {
            flush_interval: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let s = flags.or(file).validate().unwrap();
        assert_eq!(s.flush_interval, Duration::from_millis(50));
        assert_eq!(s.object_target_bytes, 1 << 20);
        assert_eq!(s.durability, Durability::Object);
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let err = SettingsArgs {
            object_target_bytes: Some(ByteSize(10)),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("object_target_bytes"), "{err}");
        let err = toml::from_str::<SettingsArgs>("no_such_setting = 1").unwrap_err();
        assert!(err.to_string().contains("no_such_setting"), "{err}");
        let err = SettingsArgs {
            advertised_address: Some("0.0.0.0:9092".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("advertised_address"), "{err}");
    }
}
