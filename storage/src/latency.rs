//! [`LatencyStore`]: latency and fault injection in front of another store, for
//! benchmarks and tests.
//!
//! This module owns the simulated request latency and the injected failures: a
//! [`LatencyProfile`] (first-byte latency drawn from a [`Distribution`], a size-proportional
//! part, and an error rate), how it is parsed from a setting ([`LatencyProfile::parse`]),
//! and the seeded random source that makes every run with the same seed and the same
//! request sequence draw the same delays and failures.
//!
//! # Stacking
//!
//! The broker uses `Instrumented(Latency(S3))` (or `Instrumented(Latency(InMemory))` in
//! benchmarks): [`crate::InstrumentedStore`] sits outside, so the injected delays are part
//! of the latency it measures and the injected failures are counted as errors, and as
//! throttled, just like real S3 503s.
//!
//! # What each request does
//!
//! Every request draws, in this order, whether it fails (probability
//! [`LatencyProfile::error_rate`]) and a first-byte delay from
//! [`LatencyProfile::first_byte`]. Then:
//!
//! - An injected failure sleeps the first-byte delay and returns
//!   `object_store::Error::Generic` with the message [`INJECTED_FAULT`]. The request never
//!   reaches the inner store.
//! - PUTs and multipart parts sleep the first-byte delay plus [`LatencyProfile::per_mib`]
//!   for each MiB of the body, *before* the request is delegated (a part is handed to the
//!   inner upload when `put_part` is called, to keep part order, and awaited after the
//!   sleep).
//! - GETs (`get_opts`, `get_range`) are delegated first, then sleep the first-byte delay
//!   plus `per_mib` for each MiB of the response before returning it. `get_ranges` is one
//!   GET per coalesced range.
//! - HEAD, DELETE, COPY, RENAME, multipart create/complete/abort and each LIST page (of
//!   1,000 entries, S3's page size) sleep the first-byte delay before being delegated.
//!   Only the first page of a listing may fail.
//!
//! Sleeps use `tokio::time::sleep`, so tests with a paused clock see exact virtual time.

use std::fmt;
use std::future::ready;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

use crate::StorageError;

/// Message of every injected failure (an `object_store::Error::Generic`).
pub const INJECTED_FAULT: &str = "injected fault (503 SlowDown)";

const MIB: u128 = 1024 * 1024;
/// Entries per LIST page on S3.
const LIST_PAGE: u64 = 1000;
/// The 0.99 quantile of the standard normal distribution.
const Z_99: f64 = 2.326_347_874_040_841;

/// A distribution of delays.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Always the same delay.
    Fixed(Duration),
    /// Log-normal fitted to a median and a 99th percentile: `ln(delay)` is normal with mean
    /// `ln(p50)` and standard deviation `ln(p99 / p50) / 2.326`. A zero `p50` gives zero
    /// delays; a `p99` below `p50` is treated as equal to it (a fixed `p50`).
    LogNormal {
        /// Median delay.
        p50: Duration,
        /// 99th-percentile delay.
        p99: Duration,
    },
}

impl Distribution {
    /// Draws one delay.
    fn sample(&self, rng: &mut Rng) -> Duration {
        match *self {
            Distribution::Fixed(d) => d,
            Distribution::LogNormal { p50, p99 } => {
                let median = p50.as_secs_f64();
                if median <= 0.0 {
                    return Duration::ZERO;
                }
                let sigma = (p99.as_secs_f64() / median).ln().max(0.0) / Z_99;
                let secs = median * (sigma * rng.standard_normal()).exp();
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
            }
        }
    }
}

/// Simulated latency and failures of an object store (see the module docs for how each
/// request uses it).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyProfile {
    /// Delay before the first byte of each request (each LIST page).
    pub first_byte: Distribution,
    /// Extra delay per MiB of PUT or part body and of GET response, proportionally.
    pub per_mib: Duration,
    /// Fraction of requests (0..=1) that fail with [`INJECTED_FAULT`] without reaching
    /// the inner store.
    pub error_rate: f64,
}

impl LatencyProfile {
    /// A profile shaped like S3 Standard seen from a client in the same region: first byte
    /// log-normal with p50 30 ms and p99 150 ms, 10 ms per MiB on top, no failures.
    ///
    /// These are assumptions, not measurements of ours: AWS's S3 performance guidelines
    /// quote 100–200 ms first-byte latency for small objects, which we take as the tail
    /// (p99 150 ms) while typical same-region small PUTs complete in tens of milliseconds
    /// (p50 30 ms); 10 ms per MiB is about 100 MiB/s on one connection, the commonly
    /// reported single-stream S3 throughput. Calibrate against a real bucket before
    /// drawing conclusions from absolute numbers.
    pub fn s3_standard() -> Self {
        Self {
            first_byte: Distribution::LogNormal {
                p50: Duration::from_millis(30),
                p99: Duration::from_millis(150),
            },
            per_mib: Duration::from_millis(10),
            error_rate: 0.0,
        }
    }

    /// Parses a setting: `none`, `s3-standard`, `fixed:20ms` or `lognormal:30ms:150ms`,
    /// optionally followed by `,per-mib:10ms` and/or `,errors:0.01` (which override the
    /// defaults of the base profile: 0 per MiB and no errors, except as `s3-standard`
    /// says). Durations are a decimal number and a unit (`ns`, `us`, `ms`, `s`); a bare
    /// `0` is allowed. `none` gives `Ok(None)`: no latency store at all.
    ///
    /// Errors are [`StorageError::InvalidLatencyProfile`], naming the bad part.
    pub fn parse(s: &str) -> Result<Option<Self>, StorageError> {
        let err = |part: &str, reason: String| StorageError::InvalidLatencyProfile {
            setting: s.to_owned(),
            part: part.to_owned(),
            reason,
        };
        let mut parts = s.split(',').map(str::trim);
        let base = parts.next().unwrap_or_default();
        let (kind, arg) = match base.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (base, None),
        };
        let mut profile = match (kind, arg) {
            ("none", None) => {
                return match parts.next() {
                    None => Ok(None),
                    Some(extra) => Err(err(
                        extra,
                        "cannot follow none; use e.g. fixed:0ms,errors:0.01 for failures \
                         without latency"
                            .into(),
                    )),
                };
            }
            ("s3-standard", None) => Self::s3_standard(),
            ("none" | "s3-standard", Some(_)) => {
                return Err(err(base, format!("{kind} takes no argument")));
            }
            ("fixed", Some(a)) => Self::with(Distribution::Fixed(
                parse_duration(a).map_err(|r| err(base, r))?,
            )),
            ("lognormal", Some(a)) => {
                let Some((p50, p99)) = a.split_once(':') else {
                    return Err(err(
                        base,
                        "needs two durations, lognormal:<p50>:<p99>".into(),
                    ));
                };
                let p50 = parse_duration(p50).map_err(|r| err(base, r))?;
                let p99 = parse_duration(p99).map_err(|r| err(base, r))?;
                if p50.is_zero() {
                    return Err(err(base, "has a zero p50".into()));
                }
                if p99 < p50 {
                    return Err(err(base, "has a p99 below its p50".into()));
                }
                Self::with(Distribution::LogNormal { p50, p99 })
            }
            ("fixed", None) => return Err(err(base, "needs a duration, e.g. fixed:20ms".into())),
            ("lognormal", None) => {
                return Err(err(
                    base,
                    "needs two durations, e.g. lognormal:30ms:150ms".into(),
                ));
            }
            ("", _) => return Err(err(base, "is empty".into())),
            _ => return Err(err(base, "is not a known profile".into())),
        };

        let (mut per_mib_seen, mut errors_seen) = (false, false);
        for part in parts {
            let (key, value) = part.split_once(':').unwrap_or((part, ""));
            let (key, value) = (key.trim(), value.trim());
            match key {
                "per-mib" if per_mib_seen => return Err(err(part, "is given twice".into())),
                "errors" if errors_seen => return Err(err(part, "is given twice".into())),
                "per-mib" => {
                    per_mib_seen = true;
                    profile.per_mib = parse_duration(value).map_err(|r| err(part, r))?;
                }
                "errors" => {
                    errors_seen = true;
                    profile.error_rate = match value.parse::<f64>() {
                        Ok(v) if (0.0..=1.0).contains(&v) => v,
                        _ => {
                            return Err(err(
                                part,
                                format!("has {value:?}, not a fraction between 0 and 1"),
                            ));
                        }
                    };
                }
                "" => return Err(err(part, "is empty".into())),
                _ => {
                    return Err(err(
                        part,
                        "is not a known option (per-mib:<duration> or errors:<fraction>)".into(),
                    ));
                }
            }
        }
        Ok(Some(profile))
    }

    fn with(first_byte: Distribution) -> Self {
        Self {
            first_byte,
            per_mib: Duration::ZERO,
            error_rate: 0.0,
        }
    }
}

/// Parses `20ms`, `1.5s`, `500us`, `0`: a decimal number and a unit, exactly (no float
/// rounding), to the nanosecond.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("has an empty duration".into());
    }
    let split = s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit_nanos: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "" if !number.is_empty() && number.chars().all(|c| c == '0' || c == '.') => 0,
        "" => return Err(format!("has duration {s:?} without a unit (ns, us, ms, s)")),
        other => {
            return Err(format!(
                "has duration {s:?} with unknown unit {other:?} (ns, us, ms, s)"
            ));
        }
    };
    let bad = || format!("has bad duration {s:?}: expected a number and a unit, like 20ms");
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        || int.len() > 20
    {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac = &frac[..frac.len().min(18)];
    let frac_nanos = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        digits * unit_nanos / 10u128.pow(frac.len() as u32)
    };
    let nanos = int * unit_nanos + frac_nanos;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// SplitMix64: a tiny, fast, seedable generator; plenty for simulated delays.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal, by Box–Muller.
    fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// What one request will do.
struct Plan {
    fail: bool,
    first_byte: Duration,
}

/// The profile and the random source, shared with multipart uploads.
#[derive(Debug)]
struct Injector {
    profile: LatencyProfile,
    rng: Mutex<Rng>,
}

impl Injector {
    fn plan(&self) -> Plan {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let fail = rng.uniform() < self.profile.error_rate;
        let first_byte = self.profile.first_byte.sample(&mut rng);
        Plan { fail, first_byte }
    }

    fn first_byte(&self) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        self.profile.first_byte.sample(&mut rng)
    }

    /// The size-proportional delay of `bytes`.
    fn size_delay(&self, bytes: u64) -> Duration {
        let nanos = self.profile.per_mib.as_nanos() * u128::from(bytes) / MIB;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// For requests without a body: sleeps the first-byte delay, then fails or not.
    async fn simple(&self) -> Result<()> {
        let plan = self.plan();
        sleep(plan.first_byte).await;
        if plan.fail { Err(injected()) } else { Ok(()) }
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "LatencyStore",
        source: INJECTED_FAULT.into(),
    }
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// An `ObjectStore` that delays requests to, and fails some before they reach, the store
/// it wraps, following a [`LatencyProfile`] (see the module docs).
#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    inj: Arc<Injector>,
}

impl LatencyStore {
    /// Wraps `inner`. The same `seed` and the same sequence of requests give the same
    /// delays and failures.
    pub fn new(inner: Arc<dyn ObjectStore>, profile: LatencyProfile, seed: u64) -> Self {
        Self {
            inner,
            inj: Arc::new(Injector {
                profile,
                rng: Mutex::new(Rng::new(seed)),
            }),
        }
    }

    /// Delays and possibly fails a listing, whose stream `make` opens after the delay;
    /// every further page of 1,000 entries waits another first-byte delay.
    fn list_stream(
        &self,
        make: impl FnOnce() -> BoxStream<'static, Result<ObjectMeta>> + Send + 'static,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inj = Arc::clone(&self.inj);
        stream::once(async move {
            let plan = inj.plan();
            sleep(plan.first_byte).await;
            if plan.fail {
                return stream::once(ready(Err(injected()))).boxed();
            }
            let mut entries = 0u64;
            make()
                .then(move |item| {
                    let delay = if entries > 0 && entries.is_multiple_of(LIST_PAGE) {
                        inj.first_byte()
                    } else {
                        Duration::ZERO
                    };
                    entries += 1;
                    async move {
                        sleep(delay).await;
                        item
                    }
                })
                .boxed()
        })
        .flatten()
        .boxed()
    }
}

impl fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatencyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let plan = self.inj.plan();
        if plan.fail {
            sleep(plan.first_byte).await;
            return Err(injected());
        }
        let size = self.inj.size_delay(payload.content_length() as u64);
        sleep(plan.first_byte.saturating_add(size)).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inj.simple().await?;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DelayedUpload {
            inner: upload,
            inj: Arc::clone(&self.inj),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let plan = self.inj.plan();
        if plan.fail {
            sleep(plan.first_byte).await;
            return Err(injected());
        }
        let head = options.head;
        let result = self.inner.get_opts(location, options).await;
        let size = match &result {
            Ok(r) if !head => self.inj.size_delay(r.range.end - r.range.start),
            _ => Duration::ZERO,
        };
        sleep(plan.first_byte.saturating_add(size)).await;
        result
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        let plan = self.inj.plan();
        if plan.fail {
            sleep(plan.first_byte).await;
            return Err(injected());
        }
        let result = self.inner.get_range(location, range).await;
        let size = match &result {
            Ok(bytes) => self.inj.size_delay(bytes.len() as u64),
            Err(_) => Duration::ZERO,
        };
        sleep(plan.first_byte.saturating_add(size)).await;
        result
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.inj.simple().await?;
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.inj.simple().await?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.cloned();
        self.list_stream(move || inner.list(prefix.as_ref()))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.cloned();
        let offset = offset.clone();
        self.list_stream(move || inner.list_with_offset(prefix.as_ref(), &offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inj.simple().await?;
        let result = self.inner.list_with_delimiter(prefix).await?;
        let entries = (result.objects.len() + result.common_prefixes.len()) as u64;
        for _ in 1..entries.div_ceil(LIST_PAGE) {
            sleep(self.inj.first_byte()).await;
        }
        Ok(result)
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.inj.simple().await?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inj.simple().await?;
        self.inner.copy_if_not_exists(from, to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inj.simple().await?;
        self.inner.rename(from, to).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inj.simple().await?;
        self.inner.rename_if_not_exists(from, to).await
    }
}

/// A multipart upload whose requests are delayed and may fail.
#[derive(Debug)]
struct DelayedUpload {
    inner: Box<dyn MultipartUpload>,
    inj: Arc<Injector>,
}

#[async_trait]
impl MultipartUpload for DelayedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let plan = self.inj.plan();
        if plan.fail {
            return Box::pin(async move {
                sleep(plan.first_byte).await;
                Err(injected())
            });
        }
        let delay = plan
            .first_byte
            .saturating_add(self.inj.size_delay(data.content_length() as u64));
        // Handed over now, so parts keep the order of the put_part calls.
        let part = self.inner.put_part(data);
        Box::pin(async move {
            sleep(delay).await;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.inj.simple().await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inj.simple().await?;
        self.inner.abort().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use tokio::time::Instant;

    use super::*;
    use crate::{InstrumentedStore, RequestCounts};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn fixed(ms: u64) -> LatencyProfile {
        LatencyProfile {
            first_byte: Distribution::Fixed(MS(ms)),
            per_mib: Duration::ZERO,
            error_rate: 0.0,
        }
    }

    fn parse_err(s: &str) -> String {
        match LatencyProfile::parse(s) {
            Err(e @ StorageError::InvalidLatencyProfile { .. }) => e.to_string(),
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(LatencyProfile::parse("none").unwrap(), None);
        assert_eq!(LatencyProfile::parse(" none ").unwrap(), None);
        assert_eq!(
            LatencyProfile::parse("s3-standard").unwrap(),
            Some(LatencyProfile::s3_standard())
        );
        assert_eq!(
            LatencyProfile::parse("fixed:20ms").unwrap(),
            Some(fixed(20))
        );
        assert_eq!(LatencyProfile::parse("fixed:0").unwrap(), Some(fixed(0)));
        assert_eq!(
            LatencyProfile::parse("lognormal:30ms:150ms").unwrap(),
            Some(LatencyProfile {
                first_byte: Distribution::LogNormal {
                    p50: MS(30),
                    p99: MS(150)
                },
                per_mib: Duration::ZERO,
                error_rate: 0.0,
            })
        );
        assert_eq!(
            LatencyProfile::parse("fixed:1.5s, per-mib:10ms, errors:0.01").unwrap(),
            Some(LatencyProfile {
                first_byte: Distribution::Fixed(MS(1500)),
                per_mib: MS(10),
                error_rate: 0.01,
            })
        );
        assert_eq!(
            LatencyProfile::parse("s3-standard,errors:1").unwrap(),
            Some(LatencyProfile {
                error_rate: 1.0,
                ..LatencyProfile::s3_standard()
            })
        );
        assert_eq!(
            LatencyProfile::parse("fixed:250us,per-mib:0.5ms")
                .unwrap()
                .unwrap()
                .per_mib,
            Duration::from_micros(500)
        );
        assert_eq!(parse_duration("20ms").unwrap(), MS(20));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration(".25s").unwrap(), MS(250));
        assert_eq!(
            parse_duration("0.000000001s").unwrap(),
            Duration::from_nanos(1)
        );
    }

    #[test]
    fn bad_settings_name_the_part() {
        let cases = [
            ("", "\"\" is empty"),
            ("fast", "\"fast\" is not a known profile"),
            ("fixed", "\"fixed\" needs a duration"),
            ("fixed:20", "without a unit"),
            ("fixed:20xs", "unknown unit \"xs\""),
            ("fixed:-1ms", "\"fixed:-1ms\" has bad duration"),
            ("fixed:1.2.3ms", "\"fixed:1.2.3ms\" has bad duration"),
            ("lognormal:30ms", "\"lognormal:30ms\" needs two durations"),
            ("lognormal:150ms:30ms", "p99 below its p50"),
            ("lognormal:0ms:30ms", "zero p50"),
            ("none:1", "none takes no argument"),
            ("none,errors:0.1", "\"errors:0.1\" cannot follow none"),
            (
                "fixed:1ms,errors:2",
                "\"errors:2\" has \"2\", not a fraction",
            ),
            ("fixed:1ms,errors:NaN", "\"errors:NaN\" has"),
            ("fixed:1ms,per-mib:x", "\"per-mib:x\""),
            ("fixed:1ms,color:red", "\"color:red\" is not a known option"),
            ("fixed:1ms,", "\"\" is empty"),
            (
                "fixed:1ms,errors:0.1,errors:0.2",
                "\"errors:0.2\" is given twice",
            ),
        ];
        for (setting, needle) in cases {
            let msg = parse_err(setting);
            assert!(msg.contains(needle), "{setting:?}: {msg}");
            assert!(msg.contains(&format!("{setting:?}")), "{setting:?}: {msg}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_latency_takes_exact_virtual_time() {
        let profile = LatencyProfile {
            per_mib: MS(10),
            ..fixed(20)
        };
        let s = LatencyStore::new(Arc::new(InMemory::new()), profile, 1);
        let small = Path::from("small");
        let big = Path::from("big");

        // An empty body: exactly the first-byte delay. (A 1-byte body would add 9.5 ns,
        // which the 1 ms timer wheel rounds up to a whole millisecond.)
        let t = Instant::now();
        s.put(&small, PutPayload::default()).await.unwrap();
        assert_eq!(t.elapsed(), MS(20));

        let t = Instant::now();
        s.put(&big, PutPayload::from(vec![0u8; 2 * 1024 * 1024]))
            .await
            .unwrap();
        assert_eq!(t.elapsed(), MS(20 + 20));

        let t = Instant::now();
        let body = s.get(&big).await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len(), 2 * 1024 * 1024);
        assert_eq!(t.elapsed(), MS(20 + 20));

        let t = Instant::now();
        s.get_range(&big, 0..1024 * 1024).await.unwrap();
        assert_eq!(t.elapsed(), MS(20 + 10));

        let t = Instant::now();
        s.head(&big).await.unwrap();
        let listed: Vec<_> = s.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
        s.delete(&small).await.unwrap();
        assert_eq!(t.elapsed(), MS(3 * 20));

        // Multipart: create, two 1 MiB parts, complete.
        let t = Instant::now();
        let mut up = s.put_multipart(&Path::from("mp")).await.unwrap();
        up.put_part(PutPayload::from(vec![1u8; 1024 * 1024]))
            .await
            .unwrap();
        up.put_part(PutPayload::from(vec![2u8; 1024 * 1024]))
            .await
            .unwrap();
        up.complete().await.unwrap();
        assert_eq!(t.elapsed(), MS(20 + 30 + 30 + 20));
    }

    #[test]
    fn lognormal_matches_its_quantiles() {
        let (p50, p99) = (MS(30), MS(150));
        let d = Distribution::LogNormal { p50, p99 };
        let mut rng = Rng::new(42);
        let mut draws: Vec<Duration> = (0..10_000).map(|_| d.sample(&mut rng)).collect();
        draws.sort();
        let within = |got: Duration, want: Duration| {
            let ratio = got.as_secs_f64() / want.as_secs_f64();
            assert!((0.9..=1.1).contains(&ratio), "got {got:?}, want {want:?}");
        };
        within(draws[5_000], p50);
        within(draws[9_900], p99);

        // Seeded: the same seed gives the same draws.
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(d.sample(&mut a), d.sample(&mut b));
        }
        // Degenerate parameters do not panic.
        let zero = Distribution::LogNormal {
            p50: Duration::ZERO,
            p99: MS(1),
        };
        assert_eq!(zero.sample(&mut a), Duration::ZERO);
        let flat = Distribution::LogNormal {
            p50: MS(5),
            p99: MS(1),
        };
        assert_eq!(flat.sample(&mut a), MS(5));
    }

    /// `LatencyStore(InstrumentedStore(InMemory))`: the counter shows what reached the
    /// inner store.
    fn over_counted(profile: LatencyProfile, seed: u64) -> (LatencyStore, crate::RequestCounter) {
        let inner = InstrumentedStore::new(Arc::new(InMemory::new()));
        let counter = inner.counter();
        (LatencyStore::new(Arc::new(inner), profile, seed), counter)
    }

    fn is_injected<T: fmt::Debug>(r: Result<T>) {
        match r {
            Err(e @ object_store::Error::Generic { .. }) => {
                assert!(e.to_string().contains(INJECTED_FAULT), "{e}")
            }
            other => panic!("expected the injected fault, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_one_fails_everything_before_the_inner_store() {
        let profile = LatencyProfile {
            error_rate: 1.0,
            ..fixed(5)
        };
        let (s, counter) = over_counted(profile, 3);
        let k = Path::from("k");
        let t = Instant::now();
        for _ in 0..20 {
            is_injected(s.put(&k, PutPayload::from_static(b"x")).await);
        }
        // A failure still costs the first-byte delay.
        assert_eq!(t.elapsed(), MS(20 * 5));
        is_injected(s.get(&k).await);
        is_injected(s.get_range(&k, 0..1).await);
        is_injected(s.head(&k).await);
        is_injected(s.delete(&k).await);
        is_injected(s.list(None).try_collect::<Vec<_>>().await);
        is_injected(s.list_with_offset(None, &k).try_collect::<Vec<_>>().await);
        is_injected(s.list_with_delimiter(None).await);
        is_injected(s.copy(&k, &Path::from("c")).await);
        is_injected(s.rename(&k, &Path::from("c")).await);
        is_injected(s.put_multipart(&k).await);
        assert_eq!(counter.snapshot(), RequestCounts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_zero_never_fails_and_fractions_are_seeded() {
        let (s, counter) = over_counted(fixed(1), 3);
        let k = Path::from("k");
        for _ in 0..500 {
            s.put(&k, PutPayload::from_static(b"x")).await.unwrap();
            s.get(&k).await.unwrap();
        }
        let c = counter.snapshot();
        assert_eq!((c.put, c.get, c.errors), (500, 500, 0));

        // Half the requests fail; exactly the others reach the inner store, and the same
        // seed fails the same requests.
        let half = LatencyProfile {
            error_rate: 0.5,
            ..fixed(0)
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (s, counter) = over_counted(half.clone(), 99);
            let mut failed = Vec::new();
            for i in 0..1000 {
                if s.put(&k, PutPayload::from_static(b"x")).await.is_err() {
                    failed.push(i);
                }
            }
            assert!((400..=600).contains(&failed.len()), "{}", failed.len());
            assert_eq!(counter.snapshot().put, 1000 - failed.len() as u64);
            runs.push(failed);
        }
        assert_eq!(runs[0], runs[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn multipart_parts_can_fail_without_reaching_the_inner_store() {
        let (s, counter) = over_counted(
            LatencyProfile {
                error_rate: 0.5,
                ..fixed(0)
            },
            5,
        );
        let mut sent = 0u64;
        let mut failed = 0u64;
        for i in 0..200 {
            let Ok(mut up) = s.put_multipart(&Path::from(format!("m{i}"))).await else {
                continue;
            };
            match up.put_part(PutPayload::from_static(b"part")).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    assert!(e.to_string().contains(INJECTED_FAULT));
                }
            }
        }
        assert!(sent > 0 && failed > 0);
        let c = counter.snapshot();
        assert_eq!(c.multipart_part, sent);
        assert_eq!(c.bytes_put, 4 * sent);
    }

    /// Both wrappers stacked as the broker stacks them: `Instrumented(Latency(InMemory))`.
    #[tokio::test(start_paused = true)]
    async fn stacked_round_trip() {
        let latency = LatencyStore::new(Arc::new(InMemory::new()), fixed(7), 11);
        let instrumented = InstrumentedStore::new(Arc::new(latency));
        let counter = instrumented.counter();
        let s: Arc<dyn ObjectStore> = Arc::new(instrumented);

        let t = Instant::now();
        let a = Path::from("dir/a");
        s.put(&a, PutPayload::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(
            s.get(&a).await.unwrap().bytes().await.unwrap().as_ref(),
            b"hello world"
        );
        assert_eq!(s.get_range(&a, 6..11).await.unwrap().as_ref(), b"world");
        assert_eq!(s.head(&a).await.unwrap().size, 11);
        let mut up = s.put_multipart(&Path::from("dir/m")).await.unwrap();
        up.put_part(PutPayload::from_static(b"ab")).await.unwrap();
        up.put_part(PutPayload::from_static(b"cd")).await.unwrap();
        up.complete().await.unwrap();
        let m = s.get(&Path::from("dir/m")).await.unwrap();
        assert_eq!(m.bytes().await.unwrap().as_ref(), b"abcd");
        let mut listed: Vec<String> = s
            .list(Some(&Path::from("dir")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        assert_eq!(listed, ["dir/a", "dir/m"]);
        s.delete(&a).await.unwrap();
        assert!(matches!(
            s.get(&a).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let elapsed = t.elapsed();

        let c = counter.snapshot();
        let requests = c.put
            + c.get
            + c.head
            + c.list
            + c.delete
            + c.multipart_create
            + c.multipart_part
            + c.multipart_complete;
        assert_eq!(
            (c.put, c.get, c.head, c.list, c.delete),
            (1, 4, 1, 1, 1),
            "{c:?}"
        );
        assert_eq!((c.multipart_create, c.multipart_part), (1, 2));
        assert_eq!(c.multipart_complete, 1);
        assert_eq!((c.bytes_put, c.bytes_got), (11 + 4, 11 + 5 + 4));
        assert_eq!((c.errors, c.throttled), (1, 0)); // the NotFound
        // Every request waited exactly 7 ms, one after the other.
        assert_eq!(elapsed, MS(7) * requests as u32);
        let latency_us = c.put_us
            + c.get_us
            + c.head_us
            + c.list_us
            + c.delete_us
            + c.multipart_create_us
            + c.multipart_part_us
            + c.multipart_complete_us;
        assert_eq!(u128::from(latency_us), elapsed.as_micros());
    }

    /// Injected failures are counted by an outer `InstrumentedStore` as errors and as
    /// throttled.
    #[tokio::test(start_paused = true)]
    async fn injected_failures_count_as_throttled_errors() {
        let profile = LatencyProfile::parse("s3-standard,errors:1")
            .unwrap()
            .unwrap();
        let latency = LatencyStore::new(Arc::new(InMemory::new()), profile, 0);
        let s = InstrumentedStore::new(Arc::new(latency));
        for _ in 0..3 {
            assert!(s.put(&Path::from("x"), "x".into()).await.is_err());
            assert!(s.get(&Path::from("x")).await.is_err());
        }
        let c = s.counts();
        assert_eq!((c.put, c.get, c.errors, c.throttled), (3, 3, 6, 6));
        assert_eq!(c.bytes_put, 0);
        assert!(c.put_us > 0 && c.get_us > 0);
    }
}
