//! `raw-limits`: this machine's raw limits, the denominators of every figure in
//! BENCHMARKS.md.
//!
//! * sequential write + fdatasync on the data disk: 1 MiB appends each followed by
//!   `fdatasync` (bandwidth), and 4 KiB appends each followed by `fdatasync` (latency
//!   p50/p99: the WAL's best case for one durable append);
//! * loopback TCP bandwidth: one sender and one receiver thread over 127.0.0.1,
//!   1 MiB buffers;
//! * one-core memcpy bandwidth (64 MiB buffers), a CPU reference;
//! * the number of cores and the disk holding `--dir` (from /proc/mounts).
//!
//! Each measurement runs for `--seconds` (default 3). Prints JSON on stdout (and to
//! `--json` if given) and a human summary on stderr. Files go to a fresh
//! subdirectory of `--dir`, removed at the end. No network beyond loopback.
//!
//! Units: bandwidths are given in bytes/s and in MiB/s (2^20 bytes), the unit
//! criterion reports throughput in, so ratios can be taken directly.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

const MIB: usize = 1 << 20;
/// Roll the bandwidth test's file at this size, so the test never needs more disk.
const ROLL_BYTES: u64 = 512 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "raw-limits",
    about = "Measure this machine's raw limits (disk, loopback, memcpy)"
)]
struct Args {
    /// Directory on the disk to measure (a temporary subdirectory is made and removed).
    /// Default: the cargo target directory this binary lives in, else /tmp.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    unix_time: u64,
    seconds_per_measurement: f64,
    machine: Machine,
    disk: Disk,
    seq_write_fdatasync_1mib: Bandwidth,
    write_fdatasync_4kib: Latency,
    loopback_tcp: Bandwidth,
    memcpy_one_core: Bandwidth,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu_model: Option<String>,
    mem_total_bytes: Option<u64>,
    kernel: Option<String>,
}

#[derive(Debug, Serialize)]
struct Disk {
    dir: String,
    device: Option<String>,
    mount_point: Option<String>,
    fstype: Option<String>,
    mount_options: Option<String>,
    rotational: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Bandwidth {
    /// Size of each write / send / copy.
    unit_bytes: u64,
    operations: u64,
    bytes: u64,
    seconds: f64,
    bytes_per_sec: f64,
    mib_per_sec: f64,
}

impl Bandwidth {
    fn new(unit_bytes: usize, operations: u64, bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let bytes_per_sec = bytes as f64 / seconds;
        Bandwidth {
            unit_bytes: unit_bytes as u64,
            operations,
            bytes,
            seconds,
            bytes_per_sec,
            mib_per_sec: bytes_per_sec / MIB as f64,
        }
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    unit_bytes: u64,
    operations: u64,
    seconds: f64,
    ops_per_sec: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Removes the scratch directory however we leave.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let dir = match args.dir {
        Some(d) => d,
        None => default_dir(),
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--dir {}", dir.display()))?;
    let scratch = Scratch(dir.join(format!("raw-limits-{}", std::process::id())));
    fs::create_dir(&scratch.0).with_context(|| format!("create {}", scratch.0.display()))?;

    eprintln!(
        "raw-limits: {} s per measurement, disk dir {}",
        args.seconds,
        dir.display()
    );
    let seq = seq_write_bandwidth(&scratch.0, budget)?;
    eprintln!(
        "  seq write+fdatasync 1 MiB : {:>9.1} MiB/s",
        seq.mib_per_sec
    );
    let lat = sync_latency(&scratch.0, budget)?;
    eprintln!(
        "  write+fdatasync 4 KiB     : p50 {:.0} us, p99 {:.0} us ({:.0} syncs/s)",
        lat.p50_us, lat.p99_us, lat.ops_per_sec
    );
    drop(scratch);
    let tcp = loopback_tcp(budget)?;
    eprintln!(
        "  loopback TCP 1 MiB bufs   : {:>9.1} MiB/s",
        tcp.mib_per_sec
    );
    let mem = memcpy(budget);
    eprintln!(
        "  memcpy one core 64 MiB    : {:>9.1} MiB/s",
        mem.mib_per_sec
    );

    let report = Report {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        seconds_per_measurement: args.seconds,
        machine: machine(),
        disk: disk(&dir),
        seq_write_fdatasync_1mib: seq,
        write_fdatasync_4kib: lat,
        loopback_tcp: tcp,
        memcpy_one_core: mem,
    };
    eprintln!(
        "  cores {}, cpu {}, disk {} ({}) on {}",
        report.machine.cores,
        report.machine.cpu_model.as_deref().unwrap_or("?"),
        report.disk.device.as_deref().unwrap_or("?"),
        report.disk.fstype.as_deref().unwrap_or("?"),
        report.disk.mount_point.as_deref().unwrap_or("?"),
    );
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = args.json {
        fs::write(&path, format!("{json}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The `target` directory holding this executable, else /tmp.
fn default_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "target"))
    {
        return target.to_path_buf();
    }
    std::env::temp_dir()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

fn new_file(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))
}

/// 1 MiB appends, each followed by fdatasync, for `budget`.
fn seq_write_bandwidth(dir: &Path, budget: Duration) -> Result<Bandwidth> {
    let buf = pattern(MIB);
    let mut file_no = 0u32;
    let mut file = new_file(dir, "seq-0")?;
    let mut in_file = 0u64;
    let mut ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        if in_file >= ROLL_BYTES {
            drop(file);
            fs::remove_file(dir.join(format!("seq-{file_no}")))?;
            file_no += 1;
            file = new_file(dir, &format!("seq-{file_no}"))?;
            in_file = 0;
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        in_file += buf.len() as u64;
        ops += 1;
    }
    let elapsed = start.elapsed();
    Ok(Bandwidth::new(MIB, ops, ops * MIB as u64, elapsed))
}

/// 4 KiB appends, each followed by fdatasync, for `budget`: per-operation latency.
fn sync_latency(dir: &Path, budget: Duration) -> Result<Latency> {
    let buf = pattern(4096);
    let mut file = new_file(dir, "lat")?;
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while start.elapsed() < budget {
        let t = Instant::now();
        file.write_all(&buf)?;
        file.sync_data()?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    samples.sort_unstable();
    let n = samples.len().max(1);
    let pct = |p: f64| -> f64 {
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        samples.get(i).copied().unwrap_or(0) as f64 / 1e3
    };
    let mean = samples.iter().sum::<u64>() as f64 / n as f64 / 1e3;
    Ok(Latency {
        unit_bytes: buf.len() as u64,
        operations: samples.len() as u64,
        seconds: elapsed.as_secs_f64(),
        ops_per_sec: samples.len() as f64 / elapsed.as_secs_f64(),
        mean_us: mean,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: samples.last().copied().unwrap_or(0) as f64 / 1e3,
    })
}

/// One sender thread writing 1 MiB buffers for `budget`, one receiver thread reading
/// into a 1 MiB buffer; bandwidth as seen by the receiver.
fn loopback_tcp(budget: Duration) -> Result<Bandwidth> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> Result<(u64, Duration)> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; MIB];
        let mut total = 0u64;
        let mut start = None;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            start.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, start.map(|s| s.elapsed()).unwrap_or_default()))
    });
    let sender = std::thread::spawn(move || -> Result<u64> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        let buf = pattern(MIB);
        let mut sends = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget {
            conn.write_all(&buf)?;
            sends += 1;
        }
        conn.shutdown(Shutdown::Write)?;
        Ok(sends)
    });
    let sends = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let (bytes, elapsed) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    if bytes != sends * MIB as u64 {
        bail!(
            "loopback: sent {} bytes, received {bytes}",
            sends * MIB as u64
        );
    }
    Ok(Bandwidth::new(MIB, sends, bytes, elapsed))
}

/// Copies a 64 MiB buffer into another on this thread for `budget`. Counts the bytes
/// copied once (each copy reads and writes them).
fn memcpy(budget: Duration) -> Bandwidth {
    const LEN: usize = 64 * MIB;
    let src = pattern(LEN);
    let mut dst = vec![0u8; LEN];
    // Fault every page in before timing.
    dst.copy_from_slice(&src);
    let mut copies = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies += 1;
    }
    let elapsed = start.elapsed();
    Bandwidth::new(LEN, copies, copies * LEN as u64, elapsed)
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total_bytes,
        kernel,
    }
}

/// The mount holding `dir` (longest matching mount point in /proc/mounts), best effort.
fn disk(dir: &Path) -> Disk {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let mnt = mnt.replace("\\040", " ");
            dir.starts_with(&mnt).then_some((dev, mnt, fstype, opts))
        })
        // Later entries shadow earlier ones at the same mount point.
        .fold(None::<(&str, String, &str, &str)>, |best, m| match &best {
            Some(b) if b.1.len() > m.1.len() => best,
            _ => Some(m),
        });
    let rotational = best.as_ref().and_then(|(dev, _, _, _)| {
        let name = dev.strip_prefix("/dev/")?;
        // Partitions (vda1, nvme0n1p2) sit under their disk in /sys/class/block.
        let path = fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
        let queue = [
            path.join("queue/rotational"),
            path.join("../queue/rotational"),
        ];
        queue
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .map(|s| s.trim() == "1")
    });
    Disk {
        dir: dir.display().to_string(),
        device: best.as_ref().map(|b| b.0.to_owned()),
        mount_point: best.as_ref().map(|b| b.1.clone()),
        fstype: best.as_ref().map(|b| b.2.to_owned()),
        mount_options: best.as_ref().map(|b| b.3.to_owned()),
        rotational,
    }
}
