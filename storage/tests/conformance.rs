//! One conformance suite, `exercise_store`, run against every backend: in-memory, local
//! filesystem, and a real S3-compatible server when `CIRRUS_TEST_S3_URL` is set (with the
//! usual `AWS_*` variables). Plus backend-independent checks of multipart, abort and
//! timeout behaviour through wrapping stores.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use cirrus_storage::{
    Distribution, EncodedObject, InstrumentedStore, LatencyProfile, LatencyStore, ObjectBuilder,
    ObjectStorage, S3Options, StorageError, StorageOptions, open_object_store,
};

const MIB: u64 = 1024 * 1024;

fn test_options() -> StorageOptions {
    StorageOptions {
        multipart_threshold: 5 * MIB,
        // S3 needs parts of at least 5 MiB (except the last).
        multipart_part_size: 5 * MIB,
        ..StorageOptions::default()
    }
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Chunk bytes derived from (stream, chunk number), so every chunk differs.
fn chunk_bytes(stream: u64, n: u64, len: usize) -> Bytes {
    let seed = stream.wrapping_mul(31).wrapping_add(n.wrapping_mul(7));
    Bytes::from(
        (0..len)
            .map(|i| (seed.wrapping_add(i as u64 * 13) % 251) as u8)
            .collect::<Vec<_>>(),
    )
}

/// Builds an object by pushing `rounds` chunks of `chunk_len` bytes into each of
/// `streams` streams, interleaved; returns it with each stream's expected run bytes.
fn build(streams: u64, rounds: u64, chunk_len: usize) -> (EncodedObject, BTreeMap<u64, Vec<u8>>) {
    let mut b = ObjectBuilder::new();
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for round in 0..rounds {
        for s in 0..streams {
            let id = 1000 + s * 17;
            let data = chunk_bytes(id, round, chunk_len);
            let first = round as i64 * 10;
            b.push(id, first, first + 9, round as i64, data.clone())
                .unwrap();
            expected.entry(id).or_default().extend_from_slice(&data);
        }
    }
    (b.finish(), expected)
}

async fn check_object(
    storage: &ObjectStorage,
    key: &Path,
    obj: &EncodedObject,
    expected: &BTreeMap<u64, Vec<u8>>,
) {
    let index = storage.read_index(key).await.unwrap();
    assert_eq!(index, obj.index, "index of {key}");
    assert_eq!(index.len(), expected.len());
    for e in &index {
        let run = storage.read_range(key, e.position, e.length).await.unwrap();
        assert_eq!(
            run.as_ref(),
            expected[&e.stream_id].as_slice(),
            "run of stream {}",
            e.stream_id
        );
    }
    let whole = storage.get_bytes(key).await.unwrap();
    assert_eq!(whole.len() as u64, obj.size);
    assert_eq!(whole, obj.to_bytes());
}

/// The conformance suite. `storage` must use `test_options()`-like multipart settings
/// (threshold at most 5 MiB) so that the large object takes the multipart path.
async fn exercise_store(storage: &ObjectStorage) {
    let run = unique("conf");
    let root = Path::from(run.clone());
    let writer = run.clone();

    // Small object, many interleaved streams: single PUT.
    let (small, small_expected) = build(5, 4, 300);
    assert!(small.size < storage.options().multipart_threshold);
    let small_key = ObjectStorage::data_object_key(&writer, 1);
    storage.put_object(&small_key, &small).await.unwrap();
    check_object(storage, &small_key, &small, &small_expected).await;

    // Object above the multipart threshold.
    let (large, large_expected) = build(3, 12, 200 * 1024);
    assert!(large.size >= storage.options().multipart_threshold);
    let large_key = ObjectStorage::data_object_key(&writer, 2);
    storage.put_object(&large_key, &large).await.unwrap();
    check_object(storage, &large_key, &large, &large_expected).await;

    // Footer larger than the first suffix read: the reader needs a second request.
    let (wide, wide_expected) = build(300, 1, 3);
    let wide_key = ObjectStorage::data_object_key(&writer, 3);
    storage.put_object(&wide_key, &wide).await.unwrap();
    check_object(storage, &wide_key, &wide, &wide_expected).await;

    // A partial range inside a run.
    let e = &large.index[1];
    let part = storage
        .read_range(&large_key, e.position + 5, 1000)
        .await
        .unwrap();
    assert_eq!(part.as_ref(), &large_expected[&e.stream_id][5..1005]);
    assert!(
        storage
            .read_range(&large_key, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .read_range(&small_key, small.size - 2, 10)
            .await
            .is_err()
    );

    // Side objects.
    let side_key = root.child("checkpoints").child("c-1");
    storage
        .put_bytes(&side_key, Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert_eq!(
        storage.get_bytes(&side_key).await.unwrap().as_ref(),
        b"first"
    );
    storage
        .put_bytes(&side_key, Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert_eq!(
        storage.get_bytes(&side_key).await.unwrap().as_ref(),
        b"second"
    );
    let other_side = root.child("checkpoints").child("c-2");
    storage
        .put_bytes(&other_side, Bytes::from_static(b"x"))
        .await
        .unwrap();

    // A side object is not a data object.
    match storage.read_index(&side_key).await {
        Err(StorageError::Corrupt { key: Some(k), .. }) => assert_eq!(k, side_key.to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Listing.
    let mut listed: Vec<(String, u64)> = storage
        .list(&root)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![(side_key.to_string(), 6), (other_side.to_string(), 1)]
    );
    let data_listed: Vec<ObjectMeta> = storage.list(&Path::from("data")).await.unwrap();
    for (key, obj) in [
        (&small_key, &small),
        (&large_key, &large),
        (&wide_key, &wide),
    ] {
        let m = data_listed
            .iter()
            .find(|m| &m.location == key)
            .unwrap_or_else(|| panic!("{key} not listed"));
        assert_eq!(m.size, obj.size);
    }
    assert!(
        storage
            .list(&root.child("nothing-here"))
            .await
            .unwrap()
            .is_empty()
    );

    // Delete, then NotFound everywhere.
    for key in [&small_key, &large_key, &wide_key, &side_key, &other_side] {
        storage.delete(key).await.unwrap();
    }
    assert!(matches!(
        storage.get_bytes(&small_key).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        storage.read_index(&large_key).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        storage.read_range(&wide_key, 0, 1).await,
        Err(StorageError::NotFound { .. })
    ));
    match storage.get_bytes(&side_key).await {
        Err(e @ StorageError::NotFound { .. }) => {
            assert!(e.to_string().contains(side_key.as_ref()))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Deleting a missing object succeeds.
    storage.delete(&side_key).await.unwrap();
    assert!(storage.list(&root).await.unwrap().is_empty());
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = open_object_store("memory://", &S3Options::default()).unwrap();
    exercise_store(&ObjectStorage::new(store, test_options())).await;
}

#[tokio::test]
async fn conformance_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());
    let store = open_object_store(&url, &S3Options::default()).unwrap();
    exercise_store(&ObjectStorage::new(store, test_options())).await;
}

#[tokio::test]
async fn conformance_through_instrumented_and_latency_wrappers() {
    let latency = LatencyStore::new(
        Arc::new(InMemory::new()),
        LatencyProfile {
            first_byte: Distribution::Fixed(Duration::ZERO),
            per_mib: Duration::ZERO,
            error_rate: 0.0,
        },
        1,
    );
    let instrumented = InstrumentedStore::new(Arc::new(latency));
    let counter = instrumented.counter();
    exercise_store(&ObjectStorage::new(Arc::new(instrumented), test_options())).await;
    let c = counter.snapshot();
    assert!(
        c.put > 0 && c.get > 0 && c.list > 0 && c.delete > 0,
        "{c:?}"
    );
    assert!(c.multipart_create >= 1 && c.multipart_part >= 2, "{c:?}");
    assert_eq!(c.multipart_complete, c.multipart_create, "{c:?}");
    assert!(c.bytes_put >= 5 * MIB && c.bytes_got >= 5 * MIB, "{c:?}");
    // The NotFound reads at the end of the suite are errors, not throttling.
    assert!(c.errors >= 4 && c.throttled == 0, "{c:?}");
}

#[tokio::test]
async fn conformance_s3() {
    let Ok(url) = std::env::var("CIRRUS_TEST_S3_URL") else {
        println!("conformance_s3 skipped: CIRRUS_TEST_S3_URL is not set");
        return;
    };
    let store = open_object_store(&url, &S3Options::default()).unwrap();
    exercise_store(&ObjectStorage::new(store, test_options())).await;
}

/// Wraps a store, counting PUTs, multipart uploads and aborts; can fail every part.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    puts: AtomicUsize,
    multiparts: AtomicUsize,
    parts: Arc<AtomicUsize>,
    aborts: Arc<AtomicUsize>,
    fail_parts: bool,
}

impl Recording {
    fn new(fail_parts: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(InMemory::new()),
            puts: AtomicUsize::new(0),
            multiparts: AtomicUsize::new(0),
            parts: Arc::new(AtomicUsize::new(0)),
            aborts: Arc::new(AtomicUsize::new(0)),
            fail_parts,
        })
    }
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[derive(Debug)]
struct RecordingUpload {
    inner: Box<dyn MultipartUpload>,
    parts: Arc<AtomicUsize>,
    aborts: Arc<AtomicUsize>,
    fail: bool,
}

#[async_trait]
impl MultipartUpload for RecordingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            Box::pin(async {
                Err(object_store::Error::Generic {
                    store: "Recording",
                    source: "injected part failure".into(),
                })
            })
        } else {
            self.inner.put_part(data)
        }
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.multiparts.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RecordingUpload {
            inner,
            parts: self.parts.clone(),
            aborts: self.aborts.clone(),
            fail: self.fail_parts,
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn small_objects_use_one_put_and_large_ones_multipart() {
    let rec = Recording::new(false);
    let storage = ObjectStorage::new(
        rec.clone(),
        StorageOptions {
            multipart_threshold: 64 * 1024,
            multipart_part_size: 16 * 1024,
            ..StorageOptions::default()
        },
    );
    let (small, _) = build(2, 2, 1000);
    storage.put_object(&Path::from("s"), &small).await.unwrap();
    assert_eq!(rec.puts.load(Ordering::SeqCst), 1);
    assert_eq!(rec.multiparts.load(Ordering::SeqCst), 0);

    let (large, expected) = build(3, 10, 3000); // 90 000 bytes of data
    storage.put_object(&Path::from("l"), &large).await.unwrap();
    assert_eq!(rec.puts.load(Ordering::SeqCst), 1);
    assert_eq!(rec.multiparts.load(Ordering::SeqCst), 1);
    let expected_parts = large.size.div_ceil(16 * 1024) as usize;
    assert_eq!(rec.parts.load(Ordering::SeqCst), expected_parts);
    assert_eq!(rec.aborts.load(Ordering::SeqCst), 0);
    check_object(&storage, &Path::from("l"), &large, &expected).await;
}

#[tokio::test]
async fn failed_multipart_upload_is_aborted() {
    let rec = Recording::new(true);
    let storage = ObjectStorage::new(
        rec.clone(),
        StorageOptions {
            multipart_threshold: 1024,
            multipart_part_size: 1024,
            ..StorageOptions::default()
        },
    );
    let (obj, _) = build(2, 3, 1000);
    let key = Path::from("doomed");
    let err = storage.put_object(&key, &obj).await.unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("doomed"), "{err}");
    assert_eq!(rec.aborts.load(Ordering::SeqCst), 1);
    assert!(matches!(
        storage.get_bytes(&key).await,
        Err(StorageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn timed_out_requests_are_retried_then_reported() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let key = Path::from("slow");
    inner
        .put(&key, PutPayload::from_static(b"data"))
        .await
        .unwrap();
    let slow = ThrottledStore::new(
        inner,
        ThrottleConfig {
            wait_get_per_call: Duration::from_secs(3600),
            ..ThrottleConfig::default()
        },
    );
    let storage = ObjectStorage::new(
        Arc::new(slow),
        StorageOptions {
            request_timeout: Duration::from_millis(20),
            retries: 2,
            ..StorageOptions::default()
        },
    );
    match storage.get_bytes(&key).await {
        Err(e @ StorageError::Timeout { attempts: 3, .. }) => {
            assert!(e.to_string().contains("slow"), "{e}")
        }
        other => panic!("expected Timeout after 3 attempts, got {other:?}"),
    }
    // Writes are not throttled, so they go through.
    storage
        .put_bytes(&key, Bytes::from_static(b"new"))
        .await
        .unwrap();
}
