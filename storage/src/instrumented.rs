//! [`InstrumentedStore`]: counts every request made to the store it wraps.
//!
//! This module owns request accounting: how many requests of each kind reached the
//! wrapped store, how many bytes went up and down, how many failed (and how many of those
//! look like S3 throttling), the summed latency per kind, and what the requests would cost
//! on S3 Standard ([`RequestCounts::estimated_cost_usd`]). The broker exports these as
//! metrics; benchmarks report requests and dollars per GB produced.
//!
//! # Stacking
//!
//! The wrapper is an `ObjectStore` around an `Arc<dyn ObjectStore>`, so it stacks with the
//! other wrappers of this crate. The broker uses `Instrumented(Latency(S3))`: the
//! instrumentation is outermost, so it sees every request the broker makes, and failures
//! injected by [`crate::LatencyStore`] are counted as errors (and as throttled, since they
//! read "503 SlowDown") exactly as real S3 failures would be. Latency sums include the
//! injected delays. The S3 client's own retries happen below this layer and are not seen:
//! one counted request may be several HTTP attempts.
//!
//! # What counts as one request
//!
//! Requests are counted when they are issued, as S3 bills them:
//!
//! - `put_opts` is one PUT; its bytes are added to `bytes_put` when it succeeds.
//! - `get_opts`, `get`, `get_range` are one GET each (a ranged GET is one GET); the bytes
//!   of the response body are added to `bytes_got` as the body is read. `get_ranges` is
//!   one GET per coalesced range (object_store's default, which is what S3 does). A
//!   `get_opts` with `head: true`, and `head`, are one HEAD.
//! - `list`, `list_with_offset` and `list_with_delimiter` count one LIST per page of up to
//!   1,000 entries (S3's page size), at least one per call. A listing stream counts its
//!   first request when it is first polled, so an unpolled stream costs nothing.
//! - `delete` is one DELETE; `delete_stream` counts one DELETE per key (S3 deletes in
//!   bulk, up to 1,000 keys per request, but DELETEs are free, so cost is unaffected).
//! - `copy` and `copy_if_not_exists` are one COPY; `rename*` is one COPY and one DELETE
//!   (what S3 does).
//! - Multipart: creating the upload is one `multipart_create`; each `put_part` call is one
//!   `multipart_part`, counted when called, its bytes added to `bytes_put` when it
//!   succeeds; `complete` and `abort` are one `multipart_complete` / `multipart_abort`.
//!
//! Every request that returns an error adds one to `errors` (including `NotFound`; each
//! failed item of a listing or bulk delete counts once), and to `throttled` when the error
//! looks like throttling (`503 Service Unavailable`, `SlowDown`, `429 Too Many Requests`).
//!
//! Latency (`*_us`, summed microseconds per kind, measured on the tokio clock so paused
//! tests see virtual time) runs from the call to the result; for a streamed GET body or a
//! listing, until the stream ends or is dropped.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use tokio::time::Instant;

/// S3's page size for LIST requests.
const LIST_PAGE: u64 = 1000;

/// Request counts of an [`InstrumentedStore`], since it was created.
///
/// All fields are running totals; subtract two snapshots with
/// [`RequestCounts::saturating_sub`] to get the counts of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Single-request PUTs (`put`, `put_opts`).
    pub put: u64,
    /// GETs, ranged or not.
    pub get: u64,
    /// HEADs.
    pub head: u64,
    /// LIST requests (pages of up to 1,000 entries).
    pub list: u64,
    /// Deleted keys.
    pub delete: u64,
    /// Server-side copies (`copy`, `copy_if_not_exists`, and the copy half of `rename`).
    pub copy: u64,
    /// Multipart uploads started (CreateMultipartUpload).
    pub multipart_create: u64,
    /// Multipart parts sent (UploadPart), counted when sent.
    pub multipart_part: u64,
    /// Multipart uploads completed (CompleteMultipartUpload).
    pub multipart_complete: u64,
    /// Multipart uploads aborted (AbortMultipartUpload).
    pub multipart_abort: u64,
    /// Bytes of successful PUTs and multipart parts.
    pub bytes_put: u64,
    /// Bytes of GET response bodies read.
    pub bytes_got: u64,
    /// Requests that failed, whatever the kind (injected failures included).
    pub errors: u64,
    /// Failed requests whose error looks like throttling (503 SlowDown, 429).
    pub throttled: u64,
    /// Summed latency of PUTs, in microseconds.
    pub put_us: u64,
    /// Summed latency of GETs, in microseconds (until the body was read or dropped).
    pub get_us: u64,
    /// Summed latency of HEADs, in microseconds.
    pub head_us: u64,
    /// Summed latency of listings, in microseconds (until the listing ended or was dropped).
    pub list_us: u64,
    /// Summed latency of deletes, in microseconds.
    pub delete_us: u64,
    /// Summed latency of copies, in microseconds.
    pub copy_us: u64,
    /// Summed latency of multipart creates, in microseconds.
    pub multipart_create_us: u64,
    /// Summed latency of multipart parts, in microseconds.
    pub multipart_part_us: u64,
    /// Summed latency of multipart completes, in microseconds.
    pub multipart_complete_us: u64,
    /// Summed latency of multipart aborts, in microseconds.
    pub multipart_abort_us: u64,
}

/// Applies `$m!(field)` to every field of [`RequestCounts`].
macro_rules! for_each_field {
    ($m:ident) => {
        $m!(
            put,
            get,
            head,
            list,
            delete,
            copy,
            multipart_create,
            multipart_part,
            multipart_complete,
            multipart_abort,
            bytes_put,
            bytes_got,
            errors,
            throttled,
            put_us,
            get_us,
            head_us,
            list_us,
            delete_us,
            copy_us,
            multipart_create_us,
            multipart_part_us,
            multipart_complete_us,
            multipart_abort_us
        )
    };
}

/// Price of a PUT-class request (PUT, COPY, POST, LIST), in tenths of a micro-dollar:
/// $0.005 per 1,000 requests.
const PUT_CLASS_PRICE: u128 = 50;
/// Price of a GET-class request (GET, HEAD and all other requests), in tenths of a
/// micro-dollar: $0.0004 per 1,000 requests.
const GET_CLASS_PRICE: u128 = 4;
/// Tenths of a micro-dollar per dollar.
const PRICE_UNITS_PER_USD: f64 = 10_000_000.0;

impl RequestCounts {
    /// Request cost of these counts on S3 Standard, US East (N. Virginia), in dollars.
    ///
    /// Prices from <https://aws.amazon.com/s3/pricing/> (Requests & data retrievals tab),
    /// as listed in 2025: PUT, COPY, POST and LIST requests $0.005 per 1,000; GET, SELECT
    /// and all other requests $0.0004 per 1,000; DELETE and CANCEL requests free.
    ///
    /// PUT class here: `put`, `copy`, `list`, `multipart_create` (a POST),
    /// `multipart_part` (a PUT) and `multipart_complete` (a POST). GET class: `get` and
    /// `head`. Free: `delete` and `multipart_abort`. Storage, transfer and retried HTTP
    /// attempts (invisible at this layer) are not included.
    pub fn estimated_cost_usd(&self) -> f64 {
        let put_class = u128::from(self.put)
            + u128::from(self.copy)
            + u128::from(self.list)
            + u128::from(self.multipart_create)
            + u128::from(self.multipart_part)
            + u128::from(self.multipart_complete);
        let get_class = u128::from(self.get) + u128::from(self.head);
        // Integer arithmetic, one rounding at the end: 1,000,000 PUTs cost exactly $5.00.
        let units = put_class * PUT_CLASS_PRICE + get_class * GET_CLASS_PRICE;
        units as f64 / PRICE_UNITS_PER_USD
    }

    /// The counts accumulated since `earlier` (a previous snapshot of the same store),
    /// field by field, saturating at zero.
    pub fn saturating_sub(&self, earlier: &RequestCounts) -> RequestCounts {
        macro_rules! sub {
            ($($f:ident),*) => {
                RequestCounts { $($f: self.$f.saturating_sub(earlier.$f)),* }
            };
        }
        for_each_field!(sub)
    }
}

/// Request kinds with a count and a latency sum.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Put,
    Get,
    Head,
    List,
    Delete,
    Copy,
    MultipartCreate,
    MultipartPart,
    MultipartComplete,
    MultipartAbort,
}

const KINDS: usize = 10;

/// The shared counters.
#[derive(Debug, Default)]
struct Stats {
    requests: [AtomicU64; KINDS],
    latency_us: [AtomicU64; KINDS],
    bytes_put: AtomicU64,
    bytes_got: AtomicU64,
    errors: AtomicU64,
    throttled: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// Counts `n` requests of `kind`.
    fn count(&self, kind: Kind, n: u64) {
        add(&self.requests[kind as usize], n);
    }

    /// Counts one request of `kind` and returns its start time.
    fn start(&self, kind: Kind) -> Instant {
        self.count(kind, 1);
        Instant::now()
    }

    fn elapsed(&self, kind: Kind, start: Instant) {
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        add(&self.latency_us[kind as usize], us);
    }

    fn error(&self, e: &object_store::Error) {
        add(&self.errors, 1);
        if looks_throttled(e) {
            add(&self.throttled, 1);
        }
    }

    /// Records the latency and the outcome of a request started at `start`.
    fn finish<T>(&self, kind: Kind, start: Instant, result: &Result<T>) {
        self.elapsed(kind, start);
        if let Err(e) = result {
            self.error(e);
        }
    }

    fn snapshot(&self) -> RequestCounts {
        let n = |k: Kind| self.requests[k as usize].load(Ordering::Relaxed);
        let us = |k: Kind| self.latency_us[k as usize].load(Ordering::Relaxed);
        RequestCounts {
            put: n(Kind::Put),
            get: n(Kind::Get),
            head: n(Kind::Head),
            list: n(Kind::List),
            delete: n(Kind::Delete),
            copy: n(Kind::Copy),
            multipart_create: n(Kind::MultipartCreate),
            multipart_part: n(Kind::MultipartPart),
            multipart_complete: n(Kind::MultipartComplete),
            multipart_abort: n(Kind::MultipartAbort),
            bytes_put: self.bytes_put.load(Ordering::Relaxed),
            bytes_got: self.bytes_got.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            put_us: us(Kind::Put),
            get_us: us(Kind::Get),
            head_us: us(Kind::Head),
            list_us: us(Kind::List),
            delete_us: us(Kind::Delete),
            copy_us: us(Kind::Copy),
            multipart_create_us: us(Kind::MultipartCreate),
            multipart_part_us: us(Kind::MultipartPart),
            multipart_complete_us: us(Kind::MultipartComplete),
            multipart_abort_us: us(Kind::MultipartAbort),
        }
    }
}

/// Whether an error looks like S3 throttling: 503 Service Unavailable / SlowDown, or
/// 429 Too Many Requests, anywhere in its message or source chain.
fn looks_throttled(e: &object_store::Error) -> bool {
    const MARKERS: [&str; 4] = [
        "SlowDown",
        "503 Service Unavailable",
        "429 Too Many Requests",
        "TooManyRequests",
    ];
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if MARKERS.iter().any(|m| text.contains(m)) {
            return true;
        }
        current = err.source();
    }
    false
}

/// Number of LIST pages S3 needs for `entries` entries (at least one).
fn list_pages(entries: u64) -> u64 {
    entries.div_ceil(LIST_PAGE).max(1)
}

/// A cheap, clonable handle on the counts of an [`InstrumentedStore`], usable after the
/// store has been moved into an `Arc<dyn ObjectStore>`.
#[derive(Debug, Clone)]
pub struct RequestCounter {
    stats: Arc<Stats>,
}

impl RequestCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        self.stats.snapshot()
    }
}

/// An `ObjectStore` that counts the requests made to the store it wraps (see the module
/// docs for what counts as one request). Behaviour is otherwise unchanged: every call is
/// delegated to the inner store.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<Stats>,
}

impl InstrumentedStore {
    /// Wraps `inner`, with all counts at zero.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RequestCounts {
        self.stats.snapshot()
    }

    /// A handle to read the counts later.
    pub fn counter(&self) -> RequestCounter {
        RequestCounter {
            stats: Arc::clone(&self.stats),
        }
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstrumentedStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let len = payload.content_length() as u64;
        let start = self.stats.start(Kind::Put);
        let result = self.inner.put_opts(location, payload, opts).await;
        self.stats.finish(Kind::Put, start, &result);
        if result.is_ok() {
            add(&self.stats.bytes_put, len);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let start = self.stats.start(Kind::MultipartCreate);
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.stats.finish(Kind::MultipartCreate, start, &result);
        let upload = result?;
        Ok(Box::new(CountedUpload {
            inner: upload,
            stats: Arc::clone(&self.stats),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = if options.head { Kind::Head } else { Kind::Get };
        let start = self.stats.start(kind);
        let result = match self.inner.get_opts(location, options).await {
            Ok(r) => r,
            Err(e) => {
                self.stats.elapsed(kind, start);
                self.stats.error(&e);
                return Err(e);
            }
        };
        match result.payload {
            GetResultPayload::Stream(body) => Ok(GetResult {
                payload: GetResultPayload::Stream(
                    CountedBody {
                        inner: body,
                        stats: Arc::clone(&self.stats),
                        kind,
                        start,
                        done: false,
                    }
                    .boxed(),
                ),
                ..result
            }),
            // A local file is read by the caller, outside this store: count its range.
            payload @ GetResultPayload::File(..) => {
                self.stats.elapsed(kind, start);
                if matches!(kind, Kind::Get) {
                    add(&self.stats.bytes_got, result.range.end - result.range.start);
                }
                Ok(GetResult { payload, ..result })
            }
        }
    }

    async fn get_range(&self, location: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        let start = self.stats.start(Kind::Get);
        let result = self.inner.get_range(location, range).await;
        self.stats.finish(Kind::Get, start, &result);
        if let Ok(bytes) = &result {
            add(&self.stats.bytes_got, bytes.len() as u64);
        }
        result
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        let start = self.stats.start(Kind::Head);
        let result = self.inner.head(location).await;
        self.stats.finish(Kind::Head, start, &result);
        result
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        let start = self.stats.start(Kind::Delete);
        let result = self.inner.delete(location).await;
        self.stats.finish(Kind::Delete, start, &result);
        result
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, Result<Path>>,
    ) -> BoxStream<'a, Result<Path>> {
        // Delegated whole so S3 keeps its bulk delete; latency is not attributed per key.
        let stats = &self.stats;
        self.inner
            .delete_stream(locations)
            .inspect(move |r| {
                stats.count(Kind::Delete, 1);
                if let Err(e) = r {
                    stats.error(e);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        CountedList::new(self.inner.list(prefix), Arc::clone(&self.stats)).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        CountedList::new(
            self.inner.list_with_offset(prefix, offset),
            Arc::clone(&self.stats),
        )
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let start = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        self.stats.finish(Kind::List, start, &result);
        let pages = match &result {
            Ok(list) => list_pages((list.objects.len() + list.common_prefixes.len()) as u64),
            Err(_) => 1,
        };
        self.stats.count(Kind::List, pages);
        result
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let start = self.stats.start(Kind::Copy);
        let result = self.inner.copy(from, to).await;
        self.stats.finish(Kind::Copy, start, &result);
        result
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        let start = self.stats.start(Kind::Copy);
        let result = self.inner.copy_if_not_exists(from, to).await;
        self.stats.finish(Kind::Copy, start, &result);
        result
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.stats.count(Kind::Delete, 1);
        let start = self.stats.start(Kind::Copy);
        let result = self.inner.rename(from, to).await;
        self.stats.finish(Kind::Copy, start, &result);
        result
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.stats.count(Kind::Delete, 1);
        let start = self.stats.start(Kind::Copy);
        let result = self.inner.rename_if_not_exists(from, to).await;
        self.stats.finish(Kind::Copy, start, &result);
        result
    }
}

/// A multipart upload whose requests are counted.
#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    stats: Arc<Stats>,
}

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let len = data.content_length() as u64;
        let start = self.stats.start(Kind::MultipartPart);
        let part = self.inner.put_part(data);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let result = part.await;
            stats.finish(Kind::MultipartPart, start, &result);
            if result.is_ok() {
                add(&stats.bytes_put, len);
            }
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let start = self.stats.start(Kind::MultipartComplete);
        let result = self.inner.complete().await;
        self.stats.finish(Kind::MultipartComplete, start, &result);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        let start = self.stats.start(Kind::MultipartAbort);
        let result = self.inner.abort().await;
        self.stats.finish(Kind::MultipartAbort, start, &result);
        result
    }
}

/// A GET (or HEAD) response body that counts its bytes and records the request latency
/// when it ends or is dropped.
struct CountedBody {
    inner: BoxStream<'static, Result<Bytes>>,
    stats: Arc<Stats>,
    kind: Kind,
    start: Instant,
    done: bool,
}

impl CountedBody {
    fn end(&mut self) {
        if !self.done {
            self.done = true;
            self.stats.elapsed(self.kind, self.start);
        }
    }
}

impl Stream for CountedBody {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = this.inner.poll_next_unpin(cx);
        match &item {
            Poll::Ready(Some(Ok(bytes))) => add(&this.stats.bytes_got, bytes.len() as u64),
            Poll::Ready(Some(Err(e))) => this.stats.error(e),
            Poll::Ready(None) => this.end(),
            Poll::Pending => {}
        }
        item
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.end();
    }
}

/// A listing that counts one LIST per page of entries (from its first poll) and records
/// its latency when it ends or is dropped.
struct CountedList {
    inner: BoxStream<'static, Result<ObjectMeta>>,
    stats: Arc<Stats>,
    start: Option<Instant>,
    entries: u64,
    done: bool,
}

impl CountedList {
    fn new(inner: BoxStream<'static, Result<ObjectMeta>>, stats: Arc<Stats>) -> Self {
        Self {
            inner,
            stats,
            start: None,
            entries: 0,
            done: false,
        }
    }

    fn end(&mut self) {
        if let (Some(start), false) = (self.start, self.done) {
            self.done = true;
            self.stats.elapsed(Kind::List, start);
        }
    }
}

impl Stream for CountedList {
    type Item = Result<ObjectMeta>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.start.is_none() {
            this.start = Some(this.stats.start(Kind::List));
        }
        let item = this.inner.poll_next_unpin(cx);
        match &item {
            Poll::Ready(Some(Ok(_))) => {
                // Entry number LIST_PAGE + 1, 2 * LIST_PAGE + 1, ... needs another page.
                if this.entries > 0 && this.entries.is_multiple_of(LIST_PAGE) {
                    this.stats.count(Kind::List, 1);
                }
                this.entries += 1;
            }
            Poll::Ready(Some(Err(e))) => this.stats.error(e),
            Poll::Ready(None) => this.end(),
            Poll::Pending => {}
        }
        item
    }
}

impl Drop for CountedList {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;

    use super::*;

    fn store() -> (Arc<dyn ObjectStore>, RequestCounter) {
        let s = InstrumentedStore::new(Arc::new(InMemory::new()));
        let counter = s.counter();
        (Arc::new(s), counter)
    }

    #[tokio::test(start_paused = true)]
    async fn counts_a_known_sequence_exactly() {
        let (s, counter) = store();
        let a = Path::from("a");
        s.put(&a, PutPayload::from(vec![7u8; 1000])).await.unwrap();
        s.put(&Path::from("dir/b"), PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(s.get_range(&a, 10..110).await.unwrap().len(), 100);
        // get_opts with a range: one GET, bytes counted as the body is read.
        let r = s
            .get_opts(
                &a,
                GetOptions {
                    range: Some((0..50).into()),
                    ..GetOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 50);
        assert_eq!(s.get(&a).await.unwrap().bytes().await.unwrap().len(), 1000);
        assert_eq!(s.head(&a).await.unwrap().size, 1000);
        // Two ranges less than 1 MiB apart are coalesced into one GET of 0..1000.
        let parts = s.get_ranges(&a, &[0..1, 999..1000]).await.unwrap();
        assert_eq!(parts.len(), 2);
        let listed: Vec<_> = s.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
        let unpolled = s.list(None); // never polled: no request
        drop(unpolled);
        let delimited = s.list_with_delimiter(None).await.unwrap();
        assert_eq!(delimited.common_prefixes.len(), 1);

        let mut up = s.put_multipart(&Path::from("mp")).await.unwrap();
        up.put_part(PutPayload::from(vec![1u8; 300])).await.unwrap();
        up.put_part(PutPayload::from(vec![2u8; 200])).await.unwrap();
        up.complete().await.unwrap();
        let mut aborted = s.put_multipart(&Path::from("gone")).await.unwrap();
        aborted.abort().await.unwrap();

        s.delete(&a).await.unwrap();
        assert!(matches!(
            s.get(&a).await,
            Err(object_store::Error::NotFound { .. })
        ));
        s.copy(&Path::from("dir/b"), &Path::from("c"))
            .await
            .unwrap();

        let expected = RequestCounts {
            put: 2,
            get: 5, // get_range, get_opts, get, get_ranges, the failed get
            head: 1,
            list: 2,
            delete: 1,
            copy: 1,
            multipart_create: 2,
            multipart_part: 2,
            multipart_complete: 1,
            multipart_abort: 1,
            bytes_put: 1000 + 5 + 300 + 200,
            bytes_got: 100 + 50 + 1000 + 1000,
            errors: 1,
            throttled: 0,
            ..RequestCounts::default() // InMemory takes no virtual time
        };
        assert_eq!(counter.snapshot(), expected);
        assert!(expected.estimated_cost_usd() > 0.0);
    }

    #[tokio::test]
    async fn listing_counts_pages_of_a_thousand() {
        let (s, counter) = store();
        for i in 0..2001 {
            s.put(
                &Path::from(format!("k/{i:05}")),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        }
        let before = counter.snapshot();
        let n = s.list(Some(&Path::from("k"))).try_collect::<Vec<_>>().await;
        assert_eq!(n.unwrap().len(), 2001);
        let empty = s.list(Some(&Path::from("none"))).try_collect::<Vec<_>>();
        assert!(empty.await.unwrap().is_empty());
        let d = counter.snapshot().saturating_sub(&before);
        assert_eq!(d.list, 3 + 1);
        assert_eq!(d.put, 0);
    }

    #[test]
    fn cost_matches_the_price_list() {
        let puts = RequestCounts {
            put: 1_000_000,
            ..RequestCounts::default()
        };
        assert_eq!(puts.estimated_cost_usd(), 5.0);
        let gets = RequestCounts {
            get: 1_000_000,
            ..RequestCounts::default()
        };
        assert_eq!(gets.estimated_cost_usd(), 0.4);
        let parts = RequestCounts {
            multipart_part: 1_000_000,
            delete: 1_000_000,
            ..RequestCounts::default()
        };
        assert_eq!(parts.estimated_cost_usd(), 5.0);
        assert_eq!(RequestCounts::default().estimated_cost_usd(), 0.0);
    }

    #[test]
    fn saturating_sub_is_per_field() {
        let later = RequestCounts {
            put: 10,
            get: 3,
            bytes_put: 100,
            ..RequestCounts::default()
        };
        let earlier = RequestCounts {
            put: 4,
            get: 5,
            bytes_put: 40,
            ..RequestCounts::default()
        };
        let d = later.saturating_sub(&earlier);
        assert_eq!((d.put, d.get, d.bytes_put), (6, 0, 60));
    }

    #[test]
    fn throttling_is_recognised() {
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_owned().into(),
        };
        assert!(looks_throttled(&generic("injected fault (503 SlowDown)")));
        assert!(looks_throttled(&generic(
            "Error performing PUT in 1s - Server returned non-2xx status code: 429 Too Many Requests: "
        )));
        assert!(looks_throttled(&generic(
            "status code: 503 Service Unavailable: <Error/>"
        )));
        assert!(!looks_throttled(&generic("connection reset")));
        assert!(!looks_throttled(&object_store::Error::NotFound {
            path: "data/1503/x".into(),
            source: "missing".into(),
        }));
    }
}
