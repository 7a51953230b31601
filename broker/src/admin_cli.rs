//! `cirrus admin`: the command-line client of the Admin gRPC API (`cirrus.admin.v1.Admin`,
//! see `proto/`), which any broker serves on `--admin-listen`.
//!
//! Owns the parsing of the admin subcommands, the connection to the admin server and the
//! rendering of the answers. Output contract:
//! - the answer of a command (tables, final summaries) is returned by [`execute`] as one
//!   `String` ending in a newline, and [`run`] prints it to stdout;
//! - progress of a long operation (move, drain, rebalance with waiting) goes line by line
//!   to a callback, which [`run`] points at stderr, in the fixed form
//!   `moved D/T partitions (R remaining) in S.Ss`;
//! - failures are [`AdminCliError`]s whose messages are meant for people (never the Debug
//!   form of a gRPC status); the binary prints `error: {e:#}` and exits 1.
//!
//! Rendering is pure (`render_*` functions over the generated messages), so it is tested
//! without a server. Every call is bounded: 5 s to connect, [`CALL_TIMEOUT`] per unary call,
//! and `--timeout` for the whole of a waited-for long operation (a client-side deadline, also
//! sent to the server as the gRPC timeout).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use cirrus_proto::admin::v1 as pb;
use cirrus_proto::admin::v1::admin_client::AdminClient;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

/// Bound on establishing the connection to the admin server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of each unary call (everything but the waited-for long operations).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of `cirrus admin storage`, which lists the whole bucket (the server gives up
/// after 120 s with a readable error).
pub const STORAGE_CALL_TIMEOUT: Duration = Duration::from_secs(150);

/// `cirrus admin`: administer a cluster through any broker's admin API.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct AdminArgs {
    /// Admin API address of any broker (its --admin-listen), e.g. 127.0.0.1:9095.
    #[arg(long, env = "CIRRUS_ADMIN_SERVER")]
    pub bootstrap_server: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The `cirrus admin` subcommands.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Show the brokers (address, live, draining, partitions, bytes in/out per second) and the controller.
    Cluster,
    /// List, describe, create or delete topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Move one partition to another broker (its current owner hands it over).
    Move {
        /// Topic of the partition.
        #[arg(long)]
        topic: String,
        /// Partition index.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        partition: i32,
        /// Destination broker id (live, not draining).
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        to: i32,
        /// Return once the move is recorded instead of waiting for it to finish.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (e.g. 90s, 5m); the move goes on in the cluster.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Move every partition off a broker and place no new ones on it.
    Drain {
        /// Id of the broker to drain.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        broker: i32,
        /// Return once the broker is marked instead of waiting for it to be empty.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (e.g. 90s, 5m); the drain goes on in the cluster.
        #[arg(long, default_value = "300s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Make a drained broker eligible for partitions again.
    Undrain {
        /// Id of the broker.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        broker: i32,
    },
    /// Move partitions from the most to the least loaded brokers.
    Rebalance {
        /// Return once the moves are recorded instead of waiting for them to finish.
        #[arg(long)]
        no_wait: bool,
        /// At most this many partition moves (default: the server's bound).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_moves: Option<u32>,
        /// Give up waiting after this long (e.g. 90s, 5m); the moves go on in the cluster.
        #[arg(long, default_value = "300s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Show the autoscaling recommendation (brokers needed) and the load behind it.
    Autoscale,
    /// List consumer groups, describe one with its lag, or reset its offsets.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Show bucket usage: live bytes by topic, deleted data still held by objects, orphans.
    Storage,
}

/// `cirrus admin groups ...`, in the vocabulary of Kafka's kafka-consumer-groups.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum GroupsCommand {
    /// List the consumer groups with their state and coordinator.
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, ...); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Show a group's state, members, committed offsets and lag (records and time).
    Describe {
        /// Group id.
        group: String,
    },
    /// Set the committed offsets of an inactive group (no members). A dry run unless
    /// --execute is given.
    ResetOffsets {
        /// Group id.
        group: String,
        /// TOPIC or TOPIC:P,P,... (repeatable); all partitions when none are listed.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", value_parser = parse_topic_partitions)]
        topics: Vec<(String, Vec<i32>)>,
        /// Every topic the group has committed offsets for.
        #[arg(long, conflicts_with = "topics")]
        all_topics: bool,
        #[command(flatten)]
        target: ResetTarget,
        /// Commit the new offsets (without it, only show them).
        #[arg(long)]
        execute: bool,
    },
}

/// Where `groups reset-offsets` moves the offsets: exactly one.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end offset (skip everything not consumed).
    #[arg(long)]
    pub to_latest: bool,
    /// The first offset at or after this time (RFC 3339, e.g. 2026-11-23T18:00:00Z).
    #[arg(long, value_parser = parse_datetime_ms)]
    pub to_datetime: Option<i64>,
    /// This offset (clamped into the partition's range).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// The committed offset moved by N (negative goes back; clamped).
    #[arg(long, allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
}

impl ResetTarget {
    fn to_proto(&self) -> Option<pb::reset_offsets_request::Target> {
        use pb::reset_offsets_request::Target;
        if self.to_earliest {
            Some(Target::ToEarliest(true))
        } else if self.to_latest {
            Some(Target::ToLatest(true))
        } else if let Some(ms) = self.to_datetime {
            Some(Target::ToDatetimeMs(ms))
        } else if let Some(o) = self.to_offset {
            Some(Target::ToOffset(o))
        } else {
            self.shift_by.map(Target::ShiftBy)
        }
    }
}

/// `TOPIC` or `TOPIC:0,1,2`.
fn parse_topic_partitions(s: &str) -> Result<(String, Vec<i32>), String> {
    let (topic, list) = match s.split_once(':') {
        None => (s, None),
        Some((topic, list)) => (topic, Some(list)),
    };
    if topic.is_empty() {
        return Err("the topic name is empty".to_string());
    }
    let partitions = match list {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| format!("{p:?} is not a partition index"))
            })
            .collect::<Result<Vec<i32>, String>>()?,
    };
    Ok((topic.to_string(), partitions))
}

/// An RFC 3339 time (`Z` or no zone = UTC) as milliseconds since the Unix epoch.
fn parse_datetime_ms(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .map_err(|e| format!("{e} (e.g. 2026-11-23T18:00:00Z)"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| "times before 1970 are not supported".to_string())
}

/// `cirrus admin topics ...`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TopicsCommand {
    /// List the topics with their partition counts, ids and config overrides.
    List,
    /// Show a topic's partitions: owner, epoch, moves, offsets.
    Describe {
        /// Topic name.
        topic: String,
    },
    /// Create a topic.
    Create {
        /// Topic name.
        topic: String,
        /// Number of partitions.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Topic config override KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        topic: String,
    },
}

/// Why an admin command failed. Display is the readable message printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum AdminCliError {
    /// The --bootstrap-server value is not a usable address.
    #[error("invalid --bootstrap-server {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    /// No connection to the admin server.
    #[error("cannot connect to the admin API at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Arguments that parse but make no sense together.
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error status.
    #[error("{what}: {}", describe_status(.status))]
    Status { what: String, status: Status },
    /// The client-side deadline passed.
    #[error(
        "{what}: not finished within {}; it goes on in the cluster (check with `cirrus admin cluster`)",
        humantime::format_duration(*.after)
    )]
    Timeout { what: String, after: Duration },
    /// A waited-for operation's progress stream ended without a finished message.
    #[error("{what}: the server ended the progress stream before the operation finished")]
    Incomplete { what: String },
}

/// Readable text for an error status: its message (with the causes of a client-side
/// transport failure appended), prefixed by what the code adds.
pub fn describe_status(status: &Status) -> String {
    const NOT_ADMIN_API: &str = "is --bootstrap-server the admin API address (--admin-listen) of a cirrus broker of this version?";
    let code = status.code();
    let mut message = status.message().trim().to_string();
    if message.is_empty() {
        message = code.description().to_string();
    }
    if let Some(source) = std::error::Error::source(status) {
        let causes = error_chain(source);
        if causes.starts_with(&message) {
            message = causes;
        } else if !message.ends_with(&causes) {
            message = format!("{message}: {causes}");
        }
    }
    match code {
        // The server's messages for these already say what is wrong ("unknown topic x",
        // "broker 3 is not live", ...).
        Code::NotFound
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::Aborted
        | Code::OutOfRange => message,
        Code::Unavailable => format!("unavailable: {message}"),
        Code::DeadlineExceeded => format!("timed out: {message}"),
        Code::Unimplemented => {
            format!("not implemented by the server: {message} ({NOT_ADMIN_API})")
        }
        Code::Unknown => format!("failed: {message} ({NOT_ADMIN_API})"),
        Code::PermissionDenied | Code::Unauthenticated => format!("refused: {message}"),
        Code::Cancelled => format!("cancelled: {message}"),
        _ => format!("server error ({}): {message}", code.description()),
    }
}

/// Clap parser of `--timeout`: a humantime duration ("90s", "5m", "1m30s") or plain seconds.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let duration = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 90s, 5m)"))?,
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(duration)
}

/// Clap parser of `--config KEY=VALUE` (split at the first `=`; the value may be empty or
/// contain `=`).
pub fn parse_config(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty config key in {s:?}"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The URI to dial for a --bootstrap-server value: `http://` is added when no scheme is
/// given; only plain `http` is supported; a port is required.
pub fn endpoint_uri(bootstrap_server: &str) -> Result<String, AdminCliError> {
    let addr = bootstrap_server.trim();
    let invalid = |reason: &str| AdminCliError::Address {
        addr: bootstrap_server.to_string(),
        reason: reason.to_string(),
    };
    if addr.is_empty() {
        return Err(invalid("empty address"));
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let parsed: Uri = uri
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if parsed.scheme_str() != Some("http") {
        return Err(invalid("only plain http:// is supported"));
    }
    let authority = parsed.authority().ok_or_else(|| invalid("missing host"))?;
    if authority.port_u16().is_none() {
        return Err(invalid(
            "missing port (the admin API listens on --admin-listen, default 127.0.0.1:9095)",
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid("expected HOST:PORT without a path"));
    }
    Ok(uri)
}

/// Connects to the admin server, bounded by [`CONNECT_TIMEOUT`].
pub async fn connect(bootstrap_server: &str) -> Result<AdminClient<Channel>, AdminCliError> {
    let uri = endpoint_uri(bootstrap_server)?;
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| AdminCliError::Address {
            addr: bootstrap_server.to_string(),
            reason: error_chain(&e),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(AdminClient::new(channel)),
        Ok(Err(e)) => Err(AdminCliError::Connect {
            addr: uri,
            reason: error_chain(&e),
        }),
        Err(_) => Err(AdminCliError::Connect {
            addr: uri,
            reason: format!(
                "no connection within {}",
                humantime::format_duration(CONNECT_TIMEOUT)
            ),
        }),
    }
}

/// Runs one `cirrus admin` invocation: prints the answer to stdout and progress to stderr.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.bootstrap_server).await?;
    let output = execute(&mut client, args.command, &mut |line| eprintln!("{line}")).await?;
    // Not print!: that panics when stdout is a closed pipe (`cirrus admin ... | head`).
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, output.as_bytes())?;
    std::io::Write::flush(&mut stdout)?;
    Ok(())
}

/// Executes `command` and returns its rendered answer (ends in a newline). Progress lines of
/// waited-for long operations are passed to `progress` as they arrive.
pub async fn execute(
    client: &mut AdminClient<Channel>,
    command: AdminCommand,
    progress: &mut dyn FnMut(&str),
) -> Result<String, AdminCliError> {
    match command {
        AdminCommand::Cluster => {
            let answer = unary(
                "describe the cluster",
                |r| client.describe_cluster(r),
                pb::DescribeClusterRequest {},
            )
            .await?;
            Ok(render_cluster(&answer))
        }
        AdminCommand::Topics(TopicsCommand::List) => {
            let answer = unary(
                "list topics",
                |r| client.list_topics(r),
                pb::ListTopicsRequest {},
            )
            .await?;
            Ok(render_topics(&answer))
        }
        AdminCommand::Topics(TopicsCommand::Describe { topic }) => {
            let what = format!("describe topic {topic}");
            let answer = unary(
                &what,
                |r| client.describe_topic(r),
                pb::DescribeTopicRequest { name: topic },
            )
            .await?;
            Ok(render_topic(&answer))
        }
        AdminCommand::Topics(TopicsCommand::Create {
            topic,
            partitions,
            configs,
        }) => {
            let what = format!("create topic {topic}");
            let configs =
                config_map(configs).map_err(|e| AdminCliError::Usage(format!("{what}: {e}")))?;
            let answer = unary(
                &what,
                |r| client.create_topic(r),
                pb::CreateTopicRequest {
                    name: topic.clone(),
                    partitions,
                    configs,
                },
            )
            .await?;
            Ok(format!(
                "created topic {topic} ({}, id {})\n",
                count(u64::try_from(partitions).unwrap_or(0), "partition"),
                answer.topic_id
            ))
        }
        AdminCommand::Topics(TopicsCommand::Delete { topic }) => {
            let what = format!("delete topic {topic}");
            unary(
                &what,
                |r| client.delete_topic(r),
                pb::DeleteTopicRequest {
                    name: topic.clone(),
                },
            )
            .await?;
            Ok(format!("deleted topic {topic}\n"))
        }
        AdminCommand::Move {
            topic,
            partition,
            to,
            no_wait,
            timeout,
        } => {
            let op = Operation::Move {
                topic: topic.clone(),
                partition,
                to,
            };
            let wait = !no_wait;
            let request = pb::MovePartitionsRequest {
                moves: vec![pb::PartitionMove {
                    topic,
                    partition,
                    to_broker: to,
                }],
                wait,
            };
            let last = follow(
                &op.what(),
                |r| client.move_partitions(r),
                request,
                wait,
                timeout,
                progress,
            )
            .await?;
            render_outcome(&op, wait, last.as_ref())
        }
        AdminCommand::Drain {
            broker,
            no_wait,
            timeout,
        } => {
            let op = Operation::Drain { broker };
            let wait = !no_wait;
            let request = pb::DrainBrokerRequest {
                broker_id: broker,
                wait,
            };
            let last = follow(
                &op.what(),
                |r| client.drain_broker(r),
                request,
                wait,
                timeout,
                progress,
            )
            .await?;
            render_outcome(&op, wait, last.as_ref())
        }
        AdminCommand::Undrain { broker } => {
            unary(
                &format!("undrain broker {broker}"),
                |r| client.undrain_broker(r),
                pb::UndrainBrokerRequest { broker_id: broker },
            )
            .await?;
            Ok(format!(
                "broker {broker} is no longer draining: it can take partitions again\n"
            ))
        }
        AdminCommand::Rebalance {
            no_wait,
            max_moves,
            timeout,
        } => {
            let op = Operation::Rebalance;
            let wait = !no_wait;
            let request = pb::RebalanceRequest {
                wait,
                max_moves: max_moves.unwrap_or(0),
            };
            let last = follow(
                &op.what(),
                |r| client.rebalance(r),
                request,
                wait,
                timeout,
                progress,
            )
            .await?;
            render_outcome(&op, wait, last.as_ref())
        }
        AdminCommand::Autoscale => {
            let answer = unary(
                "read the autoscaling recommendation",
                |r| client.get_autoscale(r),
                pb::GetAutoscaleRequest {},
            )
            .await?;
            Ok(render_autoscale(&answer))
        }
        AdminCommand::Groups(GroupsCommand::List { states }) => {
            let answer = unary(
                "list consumer groups",
                |r| client.list_groups(r),
                pb::ListGroupsRequest {
                    states,
                    forwarded: false,
                },
            )
            .await?;
            Ok(render_groups(&answer))
        }
        AdminCommand::Groups(GroupsCommand::Describe { group }) => {
            let answer = unary(
                &format!("describe group {group}"),
                |r| client.describe_group(r),
                pb::DescribeGroupRequest {
                    group,
                    forwarded: false,
                },
            )
            .await?;
            Ok(render_group(&answer))
        }
        AdminCommand::Groups(GroupsCommand::ResetOffsets {
            group,
            topics,
            all_topics,
            target,
            execute,
        }) => {
            if topics.is_empty() && !all_topics {
                return Err(AdminCliError::Usage(
                    "name the partitions to reset with --topic, or use --all-topics".to_string(),
                ));
            }
            let answer = unary(
                &format!("reset the offsets of group {group}"),
                |r| client.reset_offsets(r),
                pb::ResetOffsetsRequest {
                    group: group.clone(),
                    topics: topics
                        .into_iter()
                        .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
                        .collect(),
                    all_topics,
                    target: target.to_proto(),
                    execute,
                    forwarded: false,
                },
            )
            .await?;
            Ok(render_reset(&group, &answer))
        }
        AdminCommand::Storage => {
            let answer = unary_within(
                "survey the bucket",
                |r| client.get_storage(r),
                pb::GetStorageRequest {},
                STORAGE_CALL_TIMEOUT,
            )
            .await?;
            Ok(render_storage(&answer))
        }
    }
}

/// `cirrus admin storage`.
pub fn render_storage(s: &pb::GetStorageResponse) -> String {
    let mut out = if s.topics.is_empty() {
        "no topic has data in the bucket\n".to_string()
    } else {
        let rows: Vec<Vec<String>> = s
            .topics
            .iter()
            .map(|t| {
                vec![
                    t.topic.clone(),
                    t.partitions.to_string(),
                    format_bytes(t.live_bytes as f64),
                ]
            })
            .collect();
        render_table(
            &[
                ("TOPIC", Align::Left),
                ("PARTITIONS", Align::Right),
                ("LIVE", Align::Right),
            ],
            &rows,
        )
    };
    let b = |n: u64| format_bytes(n as f64);
    out.push_str(&format!(
        "bucket: {} data objects ({}), {} index blobs ({})\n\
         deleted records still held by objects: {}\n\
         orphans (unreferenced, older than {}): {} objects ({})\n\
         unreferenced, younger (uploads in flight, deletions in grace): {} objects ({})\n",
        s.data_objects,
        b(s.data_bytes),
        s.index_blobs,
        b(s.index_bytes),
        b(s.deleted_record_bytes),
        humantime::format_duration(Duration::from_millis(s.orphan_grace_ms)),
        s.orphan_objects,
        b(s.orphan_bytes),
        s.unreferenced_young_objects,
        b(s.unreferenced_young_bytes),
    ));
    out
}

/// `cirrus admin groups list`.
pub fn render_groups(g: &pb::ListGroupsResponse) -> String {
    if g.groups.is_empty() {
        return "no consumer groups\n".to_string();
    }
    let rows: Vec<Vec<String>> = g
        .groups
        .iter()
        .map(|l| {
            vec![
                l.group.clone(),
                l.state.clone(),
                dash_if_empty(&l.protocol_type),
                l.coordinator.to_string(),
            ]
        })
        .collect();
    render_table(
        &[
            ("GROUP", Align::Left),
            ("STATE", Align::Left),
            ("PROTOCOL-TYPE", Align::Left),
            ("COORDINATOR", Align::Right),
        ],
        &rows,
    )
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_string()
}

fn number_or_dash(n: i64) -> String {
    if n < 0 {
        "-".to_string()
    } else {
        n.to_string()
    }
}

/// A lag in milliseconds as `0s`, `850ms`, `12.3s`, `4m05s`, `2h03m`; "-" if unknown.
pub fn format_lag_time(ms: i64) -> String {
    match ms {
        ..0 => "-".to_string(),
        0 => "0s".to_string(),
        1..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `cirrus admin groups describe`: a summary line, the offsets with their lag (Kafka's
/// columns plus LAG-TIME), then the members.
pub fn render_group(g: &pb::DescribeGroupResponse) -> String {
    let mut out = String::new();
    let protocol = if g.protocol.is_empty() {
        String::new()
    } else {
        format!(", assignor {}", g.protocol)
    };
    let _ = writeln!(
        out,
        "group {}: state {}{protocol}, coordinator broker {}, {}",
        g.group,
        g.state,
        g.coordinator,
        count(g.members.len() as u64, "member")
    );
    let total: i64 = g.offsets.iter().filter(|o| o.lag > 0).map(|o| o.lag).sum();
    let max_ms = g.offsets.iter().map(|o| o.lag_ms).max().unwrap_or(-1);
    let _ = writeln!(
        out,
        "total lag: {total} records, oldest unconsumed: {}",
        format_lag_time(max_ms)
    );
    out.push('\n');
    if g.offsets.is_empty() {
        out.push_str("no committed offsets\n");
    } else {
        let hosts: BTreeMap<&str, (&str, &str)> = g
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str(),
                    (m.client_host.as_str(), m.client_id.as_str()),
                )
            })
            .collect();
        let rows: Vec<Vec<String>> = g
            .offsets
            .iter()
            .map(|o| {
                let (host, client) = hosts.get(o.member_id.as_str()).copied().unwrap_or(("", ""));
                vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    number_or_dash(o.committed),
                    number_or_dash(o.log_end),
                    number_or_dash(o.lag),
                    format_lag_time(o.lag_ms),
                    dash_if_empty(&o.member_id),
                    dash_if_empty(host),
                    dash_if_empty(client),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &[
                ("TOPIC", Align::Left),
                ("PARTITION", Align::Right),
                ("CURRENT-OFFSET", Align::Right),
                ("LOG-END-OFFSET", Align::Right),
                ("LAG", Align::Right),
                ("LAG-TIME", Align::Right),
                ("CONSUMER-ID", Align::Left),
                ("HOST", Align::Left),
                ("CLIENT-ID", Align::Left),
            ],
            &rows,
        ));
    }
    if !g.members.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = g
            .members
            .iter()
            .map(|m| {
                let assignment = m
                    .assignment
                    .iter()
                    .map(|t| {
                        let ps: Vec<String> = t.partitions.iter().map(i32::to_string).collect();
                        format!("{}({})", t.topic, ps.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    m.member_id.clone(),
                    dash_if_empty(&m.instance_id),
                    dash_if_empty(&m.client_host),
                    dash_if_empty(&m.client_id),
                    dash_if_empty(&assignment),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &[
                ("CONSUMER-ID", Align::Left),
                ("INSTANCE-ID", Align::Left),
                ("HOST", Align::Left),
                ("CLIENT-ID", Align::Left),
                ("ASSIGNMENT", Align::Left),
            ],
            &rows,
        ));
    }
    out
}

/// `cirrus admin groups reset-offsets`: old and new offset per partition, then whether
/// they were committed.
pub fn render_reset(group: &str, r: &pb::ResetOffsetsResponse) -> String {
    if r.offsets.is_empty() {
        return format!("group {group}: no partitions to reset\n");
    }
    let rows: Vec<Vec<String>> = r
        .offsets
        .iter()
        .map(|o| {
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                number_or_dash(o.previous),
                o.new_offset.to_string(),
            ]
        })
        .collect();
    let mut out = render_table(
        &[
            ("TOPIC", Align::Left),
            ("PARTITION", Align::Right),
            ("PREVIOUS-OFFSET", Align::Right),
            ("NEW-OFFSET", Align::Right),
        ],
        &rows,
    );
    if r.executed {
        let _ = writeln!(out, "committed the new offsets of group {group}");
    } else {
        out.push_str("dry run: nothing committed (add --execute to commit)\n");
    }
    out
}

/// `cirrus admin autoscale`: the recommendation first, then what it is based on.
fn render_autoscale(a: &pb::GetAutoscaleResponse) -> String {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    format!(
        "recommended brokers: {} (now {} live; limited by {})\n\
         measured over {} brokers: in {:.2} MiB/s, out {:.2} MiB/s, cpu {:.2} cores\n\
         brokers needed by: in {:.2}, out {:.2}, cpu {:.2}\n\
         per-broker targets: in {:.1} MiB/s, out {:.1} MiB/s, cpu {:.2} cores; bounds {}..={}\n",
        a.recommended_brokers,
        a.current_brokers,
        a.limited_by,
        a.measured_brokers,
        mib(a.bytes_in_per_sec),
        mib(a.bytes_out_per_sec),
        a.cpu_cores_used,
        a.need_by_bytes_in,
        a.need_by_bytes_out,
        a.need_by_cpu,
        mib(a.target_bytes_in_per_sec),
        mib(a.target_bytes_out_per_sec),
        a.target_cpu_cores,
        a.min_brokers,
        a.max_brokers,
    )
}

/// One unary call with the [`CALL_TIMEOUT`] deadline (sent to the server and enforced here).
async fn unary<Req, Resp, F, Fut>(what: &str, call: F, message: Req) -> Result<Resp, AdminCliError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    unary_within(what, call, message, CALL_TIMEOUT).await
}

/// One unary call with the given deadline (sent to the server and enforced here).
async fn unary_within<Req, Resp, F, Fut>(
    what: &str,
    call: F,
    message: Req,
    deadline: Duration,
) -> Result<Resp, AdminCliError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    match tokio::time::timeout(deadline, call(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(AdminCliError::Status {
            what: what.to_string(),
            status,
        }),
        Err(_) => Err(AdminCliError::Timeout {
            what: what.to_string(),
            after: CALL_TIMEOUT,
        }),
    }
}

/// Calls a long operation and reads its progress stream until a finished message, the end
/// of the stream, or the `timeout` deadline (which covers the call and the whole stream).
/// Each message is rendered to `progress` when `wait` is true. Returns the last message.
async fn follow<Req, F, Fut>(
    what: &str,
    call: F,
    message: Req,
    wait: bool,
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<pb::Progress>, AdminCliError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<pb::Progress>>, Status>>,
{
    let status_error = |status| AdminCliError::Status {
        what: what.to_string(),
        status,
    };
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    let read = async {
        let mut stream = call(request).await.map_err(status_error)?.into_inner();
        let mut last = None;
        while let Some(p) = stream.message().await.map_err(status_error)? {
            if wait {
                progress(&progress_line(&p));
            }
            let finished = p.finished;
            last = Some(p);
            if finished {
                break;
            }
        }
        Ok(last)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(AdminCliError::Timeout {
                what: what.to_string(),
                after: timeout,
            })
        })
}

/// The repeated `--config` pairs as a map; a key given twice is an error.
fn config_map(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.contains_key(&key) {
            return Err(format!("--config {key} is given more than once"));
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// `error.to_string()` followed by its sources, joined by ": " (tonic's transport errors say
/// little at the top level; the cause, such as "Connection refused", is in the chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A long operation, for its summary lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `cirrus admin move`.
    Move {
        topic: String,
        partition: i32,
        to: i32,
    },
    /// `cirrus admin drain`.
    Drain { broker: i32 },
    /// `cirrus admin rebalance`.
    Rebalance,
}

impl Operation {
    /// What the operation is, as error messages name it.
    pub fn what(&self) -> String {
        match self {
            Operation::Move {
                topic,
                partition,
                to,
            } => format!("move {topic}-{partition} to broker {to}"),
            Operation::Drain { broker } => format!("drain broker {broker}"),
            Operation::Rebalance => "rebalance".to_string(),
        }
    }
}

/// `moved D/T partitions (R remaining) in S.Ss`: one progress line (stderr).
pub fn progress_line(p: &pb::Progress) -> String {
    format!(
        "moved {}/{} partitions ({} remaining) in {:.1}s",
        p.done, p.total, p.remaining, p.elapsed_seconds
    )
}

/// The final summary (stdout) of a long operation from its last progress message, or the
/// error if a waited-for operation did not report completion.
pub fn render_outcome(
    op: &Operation,
    wait: bool,
    last: Option<&pb::Progress>,
) -> Result<String, AdminCliError> {
    let headline = match (op, wait) {
        (
            Operation::Move {
                topic,
                partition,
                to,
            },
            true,
        ) => {
            format!("moved {topic}-{partition} to broker {to}")
        }
        (
            Operation::Move {
                topic,
                partition,
                to,
            },
            false,
        ) => {
            format!("move of {topic}-{partition} to broker {to} requested")
        }
        (Operation::Drain { broker }, true) => format!("broker {broker} drained"),
        (Operation::Drain { broker }, false) => format!("broker {broker} marked as draining"),
        (Operation::Rebalance, true) => "rebalance finished".to_string(),
        (Operation::Rebalance, false) => "rebalance requested".to_string(),
    };
    let Some(p) = last else {
        if wait {
            return Err(AdminCliError::Incomplete { what: op.what() });
        }
        return Ok(format!("{headline}\n"));
    };
    if wait && !p.finished {
        return Err(AdminCliError::Incomplete { what: op.what() });
    }
    let detail = if p.total == 0 || (!wait && p.finished) {
        let mut detail = "nothing to move".to_string();
        if !p.message.is_empty() {
            let _ = write!(detail, " ({})", p.message);
        }
        detail
    } else if wait {
        format!(
            "{}/{} partitions moved in {:.1}s",
            p.done, p.total, p.elapsed_seconds
        )
    } else {
        format!(
            "{} to move; not waiting (follow with `cirrus admin cluster`)",
            count(u64::from(p.remaining), "partition")
        )
    };
    Ok(format!("{headline}: {detail}\n"))
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Column alignment in [`render_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// Aligned columns separated by two spaces, a header line first, no trailing spaces.
/// Widths count characters, not bytes. Rows shorter than the header are padded with "".
pub fn render_table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    fn cell(row: &[String], i: usize) -> &str {
        row.get(i).map(String::as_str).unwrap_or("")
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            rows.iter()
                .map(|r| cell(r, i).chars().count())
                .chain(std::iter::once(name.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|(name, _)| name.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (_, align)) in columns.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let text = cell(row, i);
            let pad = widths[i].saturating_sub(text.chars().count());
            match align {
                Align::Left => {
                    line.push_str(text);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(text);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes per second in binary units: `0 B/s`, `512 B/s`, `1.5 KiB/s`, `12.0 MiB/s`.
pub fn format_rate(bytes_per_sec: f64) -> String {
    format!("{}/s", format_bytes(bytes_per_sec))
}

/// Bytes in binary units: `0 B`, `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if !bytes.is_finite() || bytes <= 0.0 {
        return "0 B".to_string();
    }
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A broker id, or "-" for -1 (none).
fn broker_or_dash(id: i32) -> String {
    if id < 0 {
        "-".to_string()
    } else {
        id.to_string()
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn host_port(host: &str, port: i32) -> String {
    if host.is_empty() {
        // A broker known only from owner records: not registered, address unknown.
        "-".to_string()
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `k=v, k=v`, or `-` when empty.
fn render_configs(configs: &BTreeMap<String, String>) -> String {
    if configs.is_empty() {
        return "-".to_string();
    }
    configs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cirrus admin cluster`: summary lines, then one row per broker.
pub fn render_cluster(c: &pb::DescribeClusterResponse) -> String {
    let mut out = String::new();
    let controller = if c.controller_id < 0 {
        "none".to_string()
    } else {
        format!("broker {}", c.controller_id)
    };
    let _ = writeln!(out, "controller: {controller}");
    let _ = writeln!(
        out,
        "topics: {}  partitions: {}  offline partitions: {}",
        c.topics, c.partitions, c.offline_partitions
    );
    out.push('\n');
    if c.brokers.is_empty() {
        out.push_str("no brokers registered\n");
        return out;
    }
    let mut brokers: Vec<&pb::BrokerInfo> = c.brokers.iter().collect();
    brokers.sort_by_key(|b| b.id);
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                host_port(&b.host, b.port),
                if b.admin_addr.is_empty() {
                    "-".to_string()
                } else {
                    b.admin_addr.clone()
                },
                yes_no(b.live),
                yes_no(b.draining),
                b.partitions.to_string(),
                b.moving_in.to_string(),
                b.moving_out.to_string(),
                format_rate(b.bytes_in_per_sec),
                format_rate(b.bytes_out_per_sec),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            ("ID", Align::Right),
            ("ADDRESS", Align::Left),
            ("ADMIN", Align::Left),
            ("LIVE", Align::Left),
            ("DRAINING", Align::Left),
            ("PARTITIONS", Align::Right),
            ("MOVING IN", Align::Right),
            ("MOVING OUT", Align::Right),
            ("BYTES IN", Align::Right),
            ("BYTES OUT", Align::Right),
        ],
        &rows,
    ));
    out
}

/// `cirrus admin topics list`: one row per topic.
pub fn render_topics(t: &pb::ListTopicsResponse) -> String {
    if t.topics.is_empty() {
        return "no topics\n".to_string();
    }
    let mut topics: Vec<&pb::TopicInfo> = t.topics.iter().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.topic_id.clone(),
                render_configs(&t.configs),
            ]
        })
        .collect();
    render_table(
        &[
            ("NAME", Align::Left),
            ("PARTITIONS", Align::Right),
            ("TOPIC ID", Align::Left),
            ("CONFIGS", Align::Left),
        ],
        &rows,
    )
}

/// `cirrus admin topics describe T`: the topic's id and configs, then one row per partition.
pub fn render_topic(t: &pb::DescribeTopicResponse) -> String {
    let mut out = String::new();
    let offline = t.partitions.iter().filter(|p| !p.online).count();
    let _ = writeln!(out, "topic: {}", t.name);
    let _ = writeln!(out, "id: {}", t.topic_id);
    let _ = writeln!(out, "configs: {}", render_configs(&t.configs));
    let _ = writeln!(
        out,
        "partitions: {} ({offline} offline)",
        t.partitions.len()
    );
    out.push('\n');
    let mut partitions: Vec<&pb::PartitionInfo> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.index);
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|p| {
            vec![
                p.index.to_string(),
                p.stream_id.to_string(),
                broker_or_dash(p.owner),
                p.epoch.to_string(),
                broker_or_dash(p.moving_to),
                yes_no(p.online),
                p.log_start_offset.to_string(),
                if p.high_watermark < 0 {
                    "unknown".to_string()
                } else {
                    p.high_watermark.to_string()
                },
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            ("PARTITION", Align::Right),
            ("STREAM ID", Align::Right),
            ("OWNER", Align::Right),
            ("EPOCH", Align::Right),
            ("MOVING TO", Align::Right),
            ("ONLINE", Align::Left),
            ("LOG START", Align::Right),
            ("HIGH WATERMARK", Align::Right),
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let argv = ["cirrus-admin", "--bootstrap-server", "h:1"]
            .iter()
            .chain(args)
            .copied();
        Cli::try_parse_from(argv).map(|c| c.admin)
    }

    fn command(args: &[&str]) -> AdminCommand {
        parse(args).unwrap().command
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(command(&["cluster"]), AdminCommand::Cluster);
        assert_eq!(command(&["autoscale"]), AdminCommand::Autoscale);
        assert_eq!(
            command(&["topics", "list"]),
            AdminCommand::Topics(TopicsCommand::List)
        );
        assert_eq!(
            command(&["topics", "describe", "orders"]),
            AdminCommand::Topics(TopicsCommand::Describe {
                topic: "orders".into()
            })
        );
        assert_eq!(
            command(&["topics", "delete", "orders"]),
            AdminCommand::Topics(TopicsCommand::Delete {
                topic: "orders".into()
            })
        );
        assert_eq!(
            command(&["undrain", "--broker", "2"]),
            AdminCommand::Undrain { broker: 2 }
        );
        assert_eq!(parse(&["cluster"]).unwrap().bootstrap_server, "h:1");
    }

    #[test]
    fn parses_topic_create_with_repeated_configs() {
        assert_eq!(
            command(&[
                "topics",
                "create",
                "orders",
                "--partitions",
                "3",
                "--config",
                "retention.ms=1000",
                "--config",
                "x=a=b",
                "--config",
                "empty=",
            ]),
            AdminCommand::Topics(TopicsCommand::Create {
                topic: "orders".into(),
                partitions: 3,
                configs: vec![
                    ("retention.ms".into(), "1000".into()),
                    ("x".into(), "a=b".into()),
                    ("empty".into(), String::new()),
                ],
            })
        );
        assert_eq!(
            command(&["topics", "create", "t", "--partitions", "1"]),
            AdminCommand::Topics(TopicsCommand::Create {
                topic: "t".into(),
                partitions: 1,
                configs: vec![],
            })
        );
    }

    #[test]
    fn long_operations_default_to_waiting_with_the_spec_timeouts() {
        assert_eq!(
            command(&["move", "--topic", "t", "--partition", "0", "--to", "3"]),
            AdminCommand::Move {
                topic: "t".into(),
                partition: 0,
                to: 3,
                no_wait: false,
                timeout: Duration::from_secs(60),
            }
        );
        assert_eq!(
            command(&["drain", "--broker", "1"]),
            AdminCommand::Drain {
                broker: 1,
                no_wait: false,
                timeout: Duration::from_secs(300),
            }
        );
        assert_eq!(
            command(&["drain", "--broker", "1", "--no-wait", "--timeout", "2m"]),
            AdminCommand::Drain {
                broker: 1,
                no_wait: true,
                timeout: Duration::from_secs(120),
            }
        );
        assert_eq!(
            command(&["rebalance"]),
            AdminCommand::Rebalance {
                no_wait: false,
                max_moves: None,
                timeout: Duration::from_secs(300),
            }
        );
        assert_eq!(
            command(&["rebalance", "--no-wait", "--max-moves", "4"]),
            AdminCommand::Rebalance {
                no_wait: true,
                max_moves: Some(4),
                timeout: Duration::from_secs(300),
            }
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        for args in [
            &["topics", "create", "t"][..], // --partitions is required
            &["topics", "create", "t", "--partitions", "0"], // at least 1
            &[
                "topics",
                "create",
                "t",
                "--partitions",
                "1",
                "--config",
                "novalue",
            ],
            &[
                "topics",
                "create",
                "t",
                "--partitions",
                "1",
                "--config",
                "=v",
            ],
            &["move", "--topic", "t", "--partition", "0"], // --to is required
            &["move", "--topic", "t", "--partition", "-1", "--to", "1"],
            &["drain", "--broker", "-1"],
            &["drain", "--broker", "1", "--timeout", "soon"],
            &["drain", "--broker", "1", "--timeout", "0s"],
            &["rebalance", "--max-moves", "0"],
            &["frobnicate"],
            &[],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} should not parse"));
            // clap exits with 2 for usage errors, as the spec asks.
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let missing_server = Cli::try_parse_from(["cirrus-admin", "cluster"]);
        if std::env::var_os("CIRRUS_ADMIN_SERVER").is_none() {
            assert!(missing_server.is_err());
        }
    }

    #[test]
    fn timeouts_and_configs_parse() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("").is_err());
        assert_eq!(
            parse_config(" a = b"),
            Ok(("a".to_string(), " b".to_string()))
        );
        assert!(parse_config("ab").is_err());
        assert!(
            config_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())])
                .unwrap_err()
                .contains("more than once")
        );
    }

    #[test]
    fn endpoint_uris() {
        assert_eq!(
            endpoint_uri("127.0.0.1:9095").unwrap(),
            "http://127.0.0.1:9095"
        );
        assert_eq!(endpoint_uri(" host:1 ").unwrap(), "http://host:1");
        assert_eq!(endpoint_uri("http://host:1").unwrap(), "http://host:1");
        assert_eq!(endpoint_uri("[::1]:9095").unwrap(), "http://[::1]:9095");
        for bad in ["", "host", "https://host:1", "host:1/path", "ho st:1"] {
            let err = endpoint_uri(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid --bootstrap-server"), "{err}");
        }
        assert!(
            endpoint_uri("https://h:1")
                .unwrap_err()
                .to_string()
                .contains("only plain http://")
        );
    }

    #[test]
    fn statuses_become_readable_messages() {
        let e = AdminCliError::Status {
            what: "describe topic x".into(),
            status: Status::not_found("unknown topic x"),
        };
        assert_eq!(e.to_string(), "describe topic x: unknown topic x");
        assert_eq!(
            describe_status(&Status::unavailable("metadata store: timed out")),
            "unavailable: metadata store: timed out"
        );
        assert_eq!(
            describe_status(&Status::failed_precondition("broker 3 is not live")),
            "broker 3 is not live"
        );
        assert_eq!(
            describe_status(&Status::deadline_exceeded("")),
            "timed out: Deadline expired before operation could complete"
        );
        assert_eq!(
            describe_status(&Status::internal("boom")),
            "server error (Internal error): boom"
        );
        assert!(describe_status(&Status::unimplemented("x")).contains("--admin-listen"));
        let e = AdminCliError::Timeout {
            what: "drain broker 1".into(),
            after: Duration::from_secs(300),
        };
        assert_eq!(
            e.to_string(),
            "drain broker 1: not finished within 5m; it goes on in the cluster (check with `cirrus admin cluster`)"
        );
    }

    #[test]
    fn table_columns_align() {
        let table = render_table(
            &[
                ("NAME", Align::Left),
                ("N", Align::Right),
                ("NOTE", Align::Left),
            ],
            &[
                vec!["a".into(), "1".into(), "x".into()],
                vec!["longer-name".into(), "12345".into(), String::new()],
                vec!["ü".into(), "7".into()],
            ],
        );
        assert_eq!(
            table,
            "NAME             N  NOTE\n\
             a                1  x\n\
             longer-name  12345\n\
             ü                7\n"
        );
    }

    #[test]
    fn rates_use_binary_units() {
        assert_eq!(format_rate(0.0), "0 B/s");
        assert_eq!(format_rate(-1.0), "0 B/s");
        assert_eq!(format_rate(f64::NAN), "0 B/s");
        assert_eq!(format_rate(512.4), "512 B/s");
        assert_eq!(format_rate(1536.0), "1.5 KiB/s");
        assert_eq!(format_rate(12.0 * 1024.0 * 1024.0), "12.0 MiB/s");
        assert_eq!(format_rate(3.0 * 1024f64.powi(5)), "3072.0 TiB/s");
    }

    fn broker(id: i32, live: bool, draining: bool, partitions: u32) -> pb::BrokerInfo {
        pb::BrokerInfo {
            id,
            host: "10.0.0.".to_string() + &id.to_string(),
            port: 9092,
            admin_addr: format!("10.0.0.{id}:9095"),
            live,
            draining,
            partitions,
            moving_in: 0,
            moving_out: 0,
            bytes_in_per_sec: 0.0,
            bytes_out_per_sec: 0.0,
        }
    }

    fn sample_cluster() -> pb::DescribeClusterResponse {
        let mut b2 = broker(2, true, true, 3);
        b2.moving_out = 3;
        b2.bytes_in_per_sec = 2048.0;
        b2.bytes_out_per_sec = 3.5 * 1024.0 * 1024.0;
        let mut b10 = broker(10, false, false, 0);
        b10.moving_in = 1;
        b10.host = "::1".into();
        pb::DescribeClusterResponse {
            brokers: vec![b10, broker(1, true, false, 12), b2],
            controller_id: 1,
            topics: 2,
            partitions: 15,
            offline_partitions: 0,
        }
    }

    const CLUSTER_TEXT: &str = "\
controller: broker 1
topics: 2  partitions: 15  offline partitions: 0

ID  ADDRESS        ADMIN           LIVE  DRAINING  PARTITIONS  MOVING IN  MOVING OUT   BYTES IN  BYTES OUT
 1  10.0.0.1:9092  10.0.0.1:9095   yes   no                12          0           0      0 B/s      0 B/s
 2  10.0.0.2:9092  10.0.0.2:9095   yes   yes                3          0           3  2.0 KiB/s  3.5 MiB/s
10  [::1]:9092     10.0.0.10:9095  no    no                 0          1           0      0 B/s      0 B/s
";

    #[test]
    fn cluster_table() {
        let text = render_cluster(&sample_cluster());
        assert_eq!(text, CLUSTER_TEXT);
        let empty = pb::DescribeClusterResponse {
            controller_id: -1,
            ..Default::default()
        };
        assert_eq!(
            render_cluster(&empty),
            "controller: none\ntopics: 0  partitions: 0  offline partitions: 0\n\nno brokers registered\n"
        );
    }

    fn sample_topic() -> pb::DescribeTopicResponse {
        pb::DescribeTopicResponse {
            name: "orders".into(),
            topic_id: "7c1e6a8e-0000-4000-8000-000000000001".into(),
            configs: [
                ("retention.ms".to_string(), "1000".to_string()),
                ("cleanup.policy".to_string(), "compact".to_string()),
            ]
            .into(),
            partitions: vec![
                pb::PartitionInfo {
                    index: 1,
                    stream_id: 18,
                    owner: 2,
                    epoch: 4,
                    moving_to: 1,
                    online: true,
                    log_start_offset: 0,
                    high_watermark: 123_456,
                },
                pb::PartitionInfo {
                    index: 0,
                    stream_id: 17,
                    owner: -1,
                    epoch: 0,
                    moving_to: -1,
                    online: false,
                    log_start_offset: 10,
                    high_watermark: -1,
                },
            ],
        }
    }

    const TOPIC_TEXT: &str = "\
topic: orders
id: 7c1e6a8e-0000-4000-8000-000000000001
configs: cleanup.policy=compact, retention.ms=1000
partitions: 2 (1 offline)

PARTITION  STREAM ID  OWNER  EPOCH  MOVING TO  ONLINE  LOG START  HIGH WATERMARK
        0         17      -      0          -  no             10         unknown
        1         18      2      4          1  yes             0          123456
";

    #[test]
    fn topic_tables() {
        assert_eq!(render_topic(&sample_topic()), TOPIC_TEXT);
        let list = pb::ListTopicsResponse {
            topics: vec![
                pb::TopicInfo {
                    name: "zeta".into(),
                    partitions: 12,
                    topic_id: "id-z".into(),
                    configs: BTreeMap::new(),
                },
                pb::TopicInfo {
                    name: "alpha".into(),
                    partitions: 1,
                    topic_id: "id-a".into(),
                    configs: [("k".to_string(), "v".to_string())].into(),
                },
            ],
        };
        assert_eq!(
            render_topics(&list),
            "NAME   PARTITIONS  TOPIC ID  CONFIGS\n\
             alpha           1  id-a      k=v\n\
             zeta           12  id-z      -\n"
        );
        assert_eq!(
            render_topics(&pb::ListTopicsResponse::default()),
            "no topics\n"
        );
    }

    fn progress(done: u32, total: u32, finished: bool) -> pb::Progress {
        pb::Progress {
            total,
            done,
            remaining: total - done,
            elapsed_seconds: f64::from(done) * 1.25,
            message: String::new(),
            finished,
        }
    }

    #[test]
    fn progress_and_outcomes() {
        assert_eq!(
            progress_line(&progress(1, 3, false)),
            "moved 1/3 partitions (2 remaining) in 1.2s"
        );
        let drain = Operation::Drain { broker: 2 };
        assert_eq!(
            render_outcome(&drain, true, Some(&progress(3, 3, true))).unwrap(),
            "broker 2 drained: 3/3 partitions moved in 3.8s\n"
        );
        assert_eq!(
            render_outcome(&drain, false, Some(&progress(0, 3, false))).unwrap(),
            "broker 2 marked as draining: 3 partitions to move; not waiting (follow with `cirrus admin cluster`)\n"
        );
        let mut nothing = progress(0, 0, true);
        nothing.message = "already balanced".into();
        assert_eq!(
            render_outcome(&Operation::Rebalance, true, Some(&nothing)).unwrap(),
            "rebalance finished: nothing to move (already balanced)\n"
        );
        let mv = Operation::Move {
            topic: "t".into(),
            partition: 0,
            to: 1,
        };
        assert_eq!(
            render_outcome(&mv, false, Some(&progress(0, 1, false))).unwrap(),
            "move of t-0 to broker 1 requested: 1 partition to move; not waiting (follow with `cirrus admin cluster`)\n"
        );
        assert_eq!(
            render_outcome(&mv, true, Some(&progress(0, 1, false)))
                .unwrap_err()
                .to_string(),
            "move t-0 to broker 1: the server ended the progress stream before the operation finished"
        );
        assert!(render_outcome(&mv, true, None).is_err());
        assert_eq!(
            render_outcome(&mv, false, None).unwrap(),
            "move of t-0 to broker 1 requested\n"
        );
    }

    /// A fake Admin server (tests the client only, not the broker's implementation).
    mod fake {
        use std::pin::Pin;
        use std::sync::{Arc, Mutex};

        use cirrus_proto::admin::v1 as pb;
        use cirrus_proto::admin::v1::admin_server::{Admin, AdminServer};
        use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
        use tonic::{Request, Response, Status};

        type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::Progress, Status>> + Send>>;

        /// Requests the fake received, for assertions.
        #[derive(Debug, Default)]
        pub(super) struct Seen {
            pub(super) drains: Vec<pb::DrainBrokerRequest>,
            pub(super) creates: Vec<pb::CreateTopicRequest>,
            pub(super) resets: Vec<pb::ResetOffsetsRequest>,
        }

        pub(super) struct Fake {
            pub(super) cluster: pb::DescribeClusterResponse,
            pub(super) topic: pb::DescribeTopicResponse,
            pub(super) seen: Arc<Mutex<Seen>>,
        }

        fn never_finishes() -> ProgressStream {
            Box::pin(
                tokio_stream::iter(vec![Ok(super::progress(0, 1, false))])
                    .chain(tokio_stream::pending()),
            )
        }

        #[tonic::async_trait]
        impl Admin for Fake {
            async fn describe_cluster(
                &self,
                _: Request<pb::DescribeClusterRequest>,
            ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
                Ok(Response::new(self.cluster.clone()))
            }
            async fn list_topics(
                &self,
                _: Request<pb::ListTopicsRequest>,
            ) -> Result<Response<pb::ListTopicsResponse>, Status> {
                Err(Status::unavailable("metadata store: connection refused"))
            }
            async fn describe_topic(
                &self,
                request: Request<pb::DescribeTopicRequest>,
            ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
                let name = request.into_inner().name;
                if name == self.topic.name {
                    Ok(Response::new(self.topic.clone()))
                } else {
                    Err(Status::not_found(format!("unknown topic {name}")))
                }
            }
            async fn create_topic(
                &self,
                request: Request<pb::CreateTopicRequest>,
            ) -> Result<Response<pb::CreateTopicResponse>, Status> {
                self.seen.lock().unwrap().creates.push(request.into_inner());
                Ok(Response::new(pb::CreateTopicResponse {
                    topic_id: "new-id".into(),
                }))
            }
            async fn delete_topic(
                &self,
                _: Request<pb::DeleteTopicRequest>,
            ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
                Ok(Response::new(pb::DeleteTopicResponse {}))
            }
            type MovePartitionsStream = ProgressStream;
            async fn move_partitions(
                &self,
                request: Request<pb::MovePartitionsRequest>,
            ) -> Result<Response<ProgressStream>, Status> {
                let to = request.into_inner().moves[0].to_broker;
                if to == 9 {
                    return Err(Status::failed_precondition("broker 9 is not live"));
                }
                Ok(Response::new(never_finishes()))
            }
            type DrainBrokerStream = ProgressStream;
            async fn drain_broker(
                &self,
                request: Request<pb::DrainBrokerRequest>,
            ) -> Result<Response<ProgressStream>, Status> {
                let request = request.into_inner();
                let wait = request.wait;
                self.seen.lock().unwrap().drains.push(request);
                let items = if wait {
                    vec![
                        super::progress(0, 3, false),
                        super::progress(1, 3, false),
                        super::progress(3, 3, true),
                    ]
                } else {
                    vec![super::progress(0, 3, false)]
                };
                Ok(Response::new(Box::pin(tokio_stream::iter(
                    items.into_iter().map(Ok),
                ))))
            }
            async fn undrain_broker(
                &self,
                _: Request<pb::UndrainBrokerRequest>,
            ) -> Result<Response<pb::UndrainBrokerResponse>, Status> {
                Ok(Response::new(pb::UndrainBrokerResponse {}))
            }
            async fn get_autoscale(
                &self,
                _: Request<pb::GetAutoscaleRequest>,
            ) -> Result<Response<pb::GetAutoscaleResponse>, Status> {
                Ok(Response::new(pb::GetAutoscaleResponse {
                    recommended_brokers: 4,
                    current_brokers: 3,
                    limited_by: "bytes_in".into(),
                    bytes_in_per_sec: 3.5 * 1024.0 * 1024.0,
                    need_by_bytes_in: 3.5,
                    target_bytes_in_per_sec: 1024.0 * 1024.0,
                    target_bytes_out_per_sec: 2.0 * 1024.0 * 1024.0,
                    target_cpu_cores: 1.5,
                    min_brokers: 1,
                    max_brokers: 64,
                    measured_brokers: 3,
                    ..Default::default()
                }))
            }
            type RebalanceStream = ProgressStream;
            async fn rebalance(
                &self,
                _: Request<pb::RebalanceRequest>,
            ) -> Result<Response<ProgressStream>, Status> {
                // Ends without a finished message.
                Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(
                    super::progress(0, 2, false),
                )]))))
            }
            async fn list_offsets(
                &self,
                _: Request<pb::ListOffsetsRequest>,
            ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
                Err(Status::unimplemented("not used by the CLI"))
            }
            async fn list_groups(
                &self,
                _: Request<pb::ListGroupsRequest>,
            ) -> Result<Response<pb::ListGroupsResponse>, Status> {
                Ok(Response::new(pb::ListGroupsResponse {
                    groups: vec![pb::GroupListing {
                        group: "billing".into(),
                        protocol_type: "consumer".into(),
                        state: "Stable".into(),
                        coordinator: 2,
                    }],
                }))
            }
            async fn describe_group(
                &self,
                request: Request<pb::DescribeGroupRequest>,
            ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
                match request.into_inner().group.as_str() {
                    "billing" => Ok(Response::new(super::sample_group())),
                    other => Ok(Response::new(pb::DescribeGroupResponse {
                        group: other.into(),
                        state: "Dead".into(),
                        coordinator: 1,
                        ..Default::default()
                    })),
                }
            }
            async fn reset_offsets(
                &self,
                request: Request<pb::ResetOffsetsRequest>,
            ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
                let request = request.into_inner();
                if request.group == "billing" {
                    return Err(Status::failed_precondition(
                        "group \"billing\" has 2 active members (state Stable)",
                    ));
                }
                let executed = request.execute;
                self.seen.lock().unwrap().resets.push(request);
                Ok(Response::new(pb::ResetOffsetsResponse {
                    offsets: vec![pb::OffsetReset {
                        topic: "orders".into(),
                        partition: 0,
                        previous: 7,
                        new_offset: 0,
                    }],
                    executed,
                }))
            }
            async fn get_storage(
                &self,
                _: Request<pb::GetStorageRequest>,
            ) -> Result<Response<pb::GetStorageResponse>, Status> {
                Ok(Response::new(super::sample_storage()))
            }
        }

        /// Serves a fake on 127.0.0.1:0; returns its address.
        pub(super) async fn start(fake: Fake) -> std::net::SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(AdminServer::new(fake))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            addr
        }
    }

    fn sample_group() -> pb::DescribeGroupResponse {
        pb::DescribeGroupResponse {
            group: "billing".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            coordinator: 2,
            members: vec![pb::GroupMember {
                member_id: "m-1".into(),
                instance_id: String::new(),
                client_id: "app".into(),
                client_host: "/10.0.0.9".into(),
                assignment: vec![pb::TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![0, 1],
                }],
            }],
            offsets: vec![
                pb::GroupOffset {
                    topic: "orders".into(),
                    partition: 0,
                    committed: 90,
                    log_end: 100,
                    lag: 10,
                    lag_ms: 125_000,
                    member_id: "m-1".into(),
                    metadata: String::new(),
                },
                pb::GroupOffset {
                    topic: "orders".into(),
                    partition: 1,
                    committed: -1,
                    log_end: -1,
                    lag: -1,
                    lag_ms: -1,
                    member_id: "m-1".into(),
                    metadata: String::new(),
                },
            ],
        }
    }

    #[test]
    fn group_rendering() {
        assert_eq!(
            render_group(&sample_group()),
            "group billing: state Stable, assignor range, coordinator broker 2, 1 member\n\
             total lag: 10 records, oldest unconsumed: 2m05s\n\
             \n\
             TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  LAG-TIME  CONSUMER-ID  HOST       CLIENT-ID\n\
             orders          0              90             100   10     2m05s  m-1          /10.0.0.9  app\n\
             orders          1               -               -    -         -  m-1          /10.0.0.9  app\n\
             \n\
             CONSUMER-ID  INSTANCE-ID  HOST       CLIENT-ID  ASSIGNMENT\n\
             m-1          -            /10.0.0.9  app        orders(0,1)\n"
        );
        for (ms, text) in [
            (-1, "-"),
            (0, "0s"),
            (850, "850ms"),
            (12_345, "12.3s"),
            (245_000, "4m05s"),
            (7_380_000, "2h03m"),
        ] {
            assert_eq!(format_lag_time(ms), text);
        }
        assert_eq!(
            parse_topic_partitions("orders:0, 2").unwrap(),
            ("orders".to_string(), vec![0, 2])
        );
        assert_eq!(
            parse_topic_partitions("orders").unwrap(),
            ("orders".to_string(), vec![])
        );
        assert!(parse_topic_partitions("orders:x").is_err());
        assert!(parse_topic_partitions("orders:-1").is_err());
        assert!(parse_topic_partitions(":1").is_err());
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(
            parse_datetime_ms("2026-11-23T18:00:00").unwrap(),
            1_795_456_800_000
        );
        assert!(parse_datetime_ms("yesterday").is_err());
    }

    #[tokio::test]
    async fn group_commands_against_a_fake_server() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(fake::Seen::default()));
        let addr = fake::start(fake::Fake {
            cluster: sample_cluster(),
            topic: sample_topic(),
            seen: seen.clone(),
        })
        .await;
        let mut client = connect(&addr.to_string()).await.unwrap();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            admin: AdminArgs,
        }
        let mut exec = async |args: &[&str]| {
            let parsed = <Cli as clap::Parser>::try_parse_from(
                ["admin", "--bootstrap-server", "x"].iter().chain(args),
            )
            .map_err(|e| e.to_string())?;
            execute(&mut client, parsed.admin.command, &mut |_| {})
                .await
                .map_err(|e| e.to_string())
        };
        let listed = exec(&["groups", "list"]).await.unwrap();
        assert_eq!(
            listed,
            "GROUP    STATE   PROTOCOL-TYPE  COORDINATOR\nbilling  Stable  consumer                 2\n"
        );
        let described = exec(&["groups", "describe", "billing"]).await.unwrap();
        assert_eq!(described, render_group(&sample_group()));
        let dead = exec(&["groups", "describe", "gone"]).await.unwrap();
        assert!(
            dead.starts_with("group gone: state Dead, coordinator broker 1, 0 members\n"),
            "{dead}"
        );
        assert!(dead.ends_with("no committed offsets\n"), "{dead}");

        // The target is required and exclusive; partitions or --all-topics are required.
        let err = exec(&["groups", "reset-offsets", "g", "--topic", "orders"])
            .await
            .unwrap_err();
        assert!(err.contains("required"), "{err}");
        let err = exec(&[
            "groups",
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-earliest",
            "--to-latest",
        ])
        .await
        .unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        let err = exec(&["groups", "reset-offsets", "g", "--to-earliest"])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "name the partitions to reset with --topic, or use --all-topics"
        );

        let dry = exec(&[
            "groups",
            "reset-offsets",
            "g",
            "--topic",
            "orders:0",
            "--shift-by",
            "-7",
        ])
        .await
        .unwrap();
        assert_eq!(
            dry,
            "TOPIC   PARTITION  PREVIOUS-OFFSET  NEW-OFFSET\n\
             orders          0                7           0\n\
             dry run: nothing committed (add --execute to commit)\n"
        );
        let done = exec(&[
            "groups",
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-datetime",
            "1970-01-01T00:00:02Z",
            "--execute",
        ])
        .await
        .unwrap();
        assert!(
            done.ends_with("committed the new offsets of group g\n"),
            "{done}"
        );
        let err = exec(&[
            "groups",
            "reset-offsets",
            "billing",
            "--all-topics",
            "--to-latest",
        ])
        .await
        .unwrap_err();
        assert!(err.contains("has 2 active members"), "{err}");

        let resets = std::mem::take(&mut seen.lock().unwrap().resets);
        use pb::reset_offsets_request::Target;
        assert_eq!(resets.len(), 2);
        assert_eq!(resets[0].target, Some(Target::ShiftBy(-7)));
        assert_eq!(
            resets[0].topics,
            vec![pb::TopicPartitions {
                topic: "orders".into(),
                partitions: vec![0]
            }]
        );
        assert!(!resets[0].execute && !resets[0].all_topics);
        assert_eq!(resets[1].target, Some(Target::ToDatetimeMs(2000)));
        assert!(resets[1].execute && resets[1].all_topics);
    }

    #[tokio::test]
    async fn commands_against_a_fake_server() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(fake::Seen::default()));
        let addr = fake::start(fake::Fake {
            cluster: sample_cluster(),
            topic: sample_topic(),
            seen: seen.clone(),
        })
        .await;
        // No scheme: http:// is added.
        let mut client = connect(&addr.to_string()).await.unwrap();
        let mut lines = Vec::new();
        let mut exec = async |command: AdminCommand| {
            let mut progress = Vec::new();
            let result = execute(&mut client, command, &mut |l| progress.push(l.to_string())).await;
            lines.push(progress);
            result
        };

        let storage = exec(AdminCommand::Storage).await.unwrap();
        assert_eq!(storage, STORAGE_TEXT);

        let autoscale = exec(AdminCommand::Autoscale).await.unwrap();
        assert!(
            autoscale.starts_with("recommended brokers: 4 (now 3 live; limited by bytes_in)\n"),
            "{autoscale}"
        );
        assert!(autoscale.contains("in 3.50 MiB/s"), "{autoscale}");

        let cluster = exec(AdminCommand::Cluster).await.unwrap();
        assert_eq!(cluster, render_cluster(&sample_cluster()));
        assert!(cluster.contains("controller: broker 1\n"), "{cluster}");

        let topic = exec(AdminCommand::Topics(TopicsCommand::Describe {
            topic: "orders".into(),
        }))
        .await
        .unwrap();
        assert_eq!(topic, TOPIC_TEXT);

        let err = exec(AdminCommand::Topics(TopicsCommand::Describe {
            topic: "nope".into(),
        }))
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "describe topic nope: unknown topic nope");

        let err = exec(AdminCommand::Topics(TopicsCommand::List))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "list topics: unavailable: metadata store: connection refused"
        );

        let created = exec(AdminCommand::Topics(TopicsCommand::Create {
            topic: "t".into(),
            partitions: 2,
            configs: vec![("a".into(), "1".into())],
        }))
        .await
        .unwrap();
        assert_eq!(created, "created topic t (2 partitions, id new-id)\n");

        let drained = exec(AdminCommand::Drain {
            broker: 2,
            no_wait: false,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        assert_eq!(drained, "broker 2 drained: 3/3 partitions moved in 3.8s\n");

        let marked = exec(AdminCommand::Drain {
            broker: 2,
            no_wait: true,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        assert!(marked.starts_with("broker 2 marked as draining: 3 partitions to move"));

        let err = exec(AdminCommand::Move {
            topic: "t".into(),
            partition: 0,
            to: 9,
            no_wait: false,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "move t-0 to broker 9: broker 9 is not live"
        );

        let started = std::time::Instant::now();
        let err = exec(AdminCommand::Move {
            topic: "t".into(),
            partition: 0,
            to: 1,
            no_wait: false,
            timeout: Duration::from_millis(300),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AdminCliError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let err = exec(AdminCommand::Rebalance {
            no_wait: false,
            max_moves: None,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AdminCliError::Incomplete { .. }), "{err}");

        assert_eq!(
            lines,
            vec![
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![
                    "moved 0/3 partitions (3 remaining) in 0.0s".to_string(),
                    "moved 1/3 partitions (2 remaining) in 1.2s".to_string(),
                    "moved 3/3 partitions (0 remaining) in 3.8s".to_string(),
                ],
                vec![], // --no-wait prints no progress
                vec![],
                vec!["moved 0/1 partitions (1 remaining) in 0.0s".to_string()],
                vec!["moved 0/2 partitions (2 remaining) in 0.0s".to_string()],
            ]
        );
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.drains,
            vec![
                pb::DrainBrokerRequest {
                    broker_id: 2,
                    wait: true
                },
                pb::DrainBrokerRequest {
                    broker_id: 2,
                    wait: false
                }
            ]
        );
        assert_eq!(
            seen.creates[0].configs,
            [("a".to_string(), "1".to_string())].into()
        );
    }

    fn sample_storage() -> pb::GetStorageResponse {
        pb::GetStorageResponse {
            topics: vec![
                pb::TopicStorage {
                    topic: "clicks".into(),
                    live_bytes: 3 * 1024 * 1024 / 2,
                    partitions: 12,
                },
                pb::TopicStorage {
                    topic: "orders".into(),
                    live_bytes: 900,
                    partitions: 1,
                },
            ],
            data_objects: 40,
            data_bytes: 2 * 1024 * 1024,
            index_blobs: 3,
            index_bytes: 4096,
            deleted_record_bytes: 10 * 1024,
            orphan_objects: 2,
            orphan_bytes: 2048,
            unreferenced_young_objects: 1,
            unreferenced_young_bytes: 100,
            orphan_grace_ms: 3_600_000,
        }
    }

    const STORAGE_TEXT: &str = "\
TOPIC   PARTITIONS     LIVE
clicks          12  1.5 MiB
orders           1    900 B
bucket: 40 data objects (2.0 MiB), 3 index blobs (4.0 KiB)
deleted records still held by objects: 10.0 KiB
orphans (unreferenced, older than 1h): 2 objects (2.0 KiB)
unreferenced, younger (uploads in flight, deletions in grace): 1 objects (100 B)
";

    #[test]
    fn empty_storage_says_so() {
        let text = render_storage(&pb::GetStorageResponse::default());
        assert!(
            text.starts_with("no topic has data in the bucket\nbucket: 0 data objects (0 B)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn connect_failures_are_readable() {
        // A port with nothing listening: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect(&format!("127.0.0.1:{port}")).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot connect to the admin API at http://127.0.0.1:{port}: "
            )),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
        let err = connect("localhost").await.unwrap_err();
        assert!(matches!(err, AdminCliError::Address { .. }), "{err}");
    }
}
