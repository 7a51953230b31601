//! Random append / trim / reopen sequences against a simple model.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::WalStats;
use crate::format::parse_segment_file_name;

#[derive(Debug, Clone)]
enum Op {
    /// One append of `len` payload bytes.
    Append { kind: u8, len: usize },
    /// `n` appends in flight at once (group commit path).
    Burst { n: usize, len: usize },
    /// Trim through `last_lsn - back` (may be below the current trim point,
    /// or above the last lsn when `back` is negative).
    Trim { back: i64 },
    /// close() and open again.
    Reopen,
    /// Drop every handle without close() and open again.
    DropReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0usize..120).prop_map(|(kind, len)| Op::Append { kind, len }),
        2 => (1usize..12, 0usize..60).prop_map(|(n, len)| Op::Burst { n, len }),
        3 => (-2i64..12).prop_map(|back| Op::Trim { back }),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropReopen),
    ]
}

/// What the WAL should hold.
#[derive(Debug, Default)]
struct Model {
    /// Every record ever appended, in lsn order (lsns are 1, 2, ...).
    records: Vec<WalRecord>,
    trimmed: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.records.len() as u64
    }

    fn live(&self) -> Vec<WalRecord> {
        self.records[self.trimmed as usize..].to_vec()
    }

    fn outstanding(&self) -> u64 {
        self.records[self.trimmed as usize..]
            .iter()
            .map(|r| frame_len(&r.payload))
            .sum()
    }
}

fn payload_for(lsn: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (lsn as u8) ^ (i as u8).wrapping_mul(13))
            .collect::<Vec<u8>>(),
    )
}

fn check_invariants(wal: &Wal, model: &Model, dir: &Path) -> Result<(), TestCaseError> {
    let st: WalStats = wal.stats();
    prop_assert_eq!(st.last_lsn, Lsn(model.last()));
    prop_assert_eq!(st.trimmed_through, Lsn(model.trimmed));
    prop_assert_eq!(st.outstanding_bytes, model.outstanding());
    // Dead segments are unlinked by the reaper thread, after `trim` returns: give it a
    // moment before comparing the directory with the stats.
    let mut files = segment_files(dir);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while files.len() != st.segments && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        files = segment_files(dir);
    }
    prop_assert_eq!(st.segments, files.len());
    let firsts: Vec<u64> = files
        .iter()
        .map(|p| parse_segment_file_name(p.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect();
    // Every sealed segment still holds an untrimmed record; no live record
    // was deleted.
    for pair in firsts.windows(2) {
        prop_assert!(
            pair[1] - 1 > model.trimmed,
            "fully trimmed sealed segment left: {:?}",
            firsts
        );
    }
    if let Some(first) = firsts.first() {
        prop_assert!(
            *first <= model.trimmed + 1,
            "live records deleted: {:?}",
            firsts
        );
    }
    Ok(())
}

async fn run(ops: Vec<Op>, target: u64, dir: &Path) -> Result<(), TestCaseError> {
    let options = small_segments(dir, target);
    let (mut wal, rec) = Wal::open(options.clone()).await.unwrap();
    prop_assert!(rec.records.is_empty());
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { kind, len } => {
                let p = payload_for(model.last() + 1, len);
                let lsn = wal.append(kind, parts(&p)).await.unwrap();
                prop_assert_eq!(lsn, Lsn(model.last() + 1));
                model.records.push(WalRecord {
                    lsn,
                    kind,
                    payload: p,
                });
            }
            Op::Burst { n, len } => {
                let mut tasks = Vec::new();
                for i in 0..n {
                    let w = wal.clone();
                    let p = payload_for(i as u64, len + i);
                    tasks.push(tokio::spawn(async move {
                        let lsn = w.append(i as u8, vec![p.clone()]).await.unwrap();
                        WalRecord {
                            lsn,
                            kind: i as u8,
                            payload: p,
                        }
                    }));
                }
                let mut got = Vec::new();
                for t in tasks {
                    got.push(t.await.unwrap());
                }
                got.sort_by_key(|r| r.lsn);
                let lsns: Vec<u64> = got.iter().map(|r| r.lsn.0).collect();
                let want: Vec<u64> = (model.last() + 1..=model.last() + n as u64).collect();
                prop_assert_eq!(lsns, want);
                model.records.extend(got);
            }
            Op::Trim { back } => {
                let through = (model.last() as i64 - back).max(0) as u64;
                wal.trim(Lsn(through)).unwrap();
                model.trimmed = model.trimmed.max(through.min(model.last()));
            }
            Op::Reopen | Op::DropReopen => {
                if matches!(op, Op::Reopen) {
                    wal.close().await.unwrap();
                }
                drop(wal);
                let (w, rec) = Wal::open(options.clone()).await.unwrap();
                wal = w;
                prop_assert!(rec.torn_tail.is_none());
                prop_assert_eq!(rec.records, model.live());
            }
        }
        check_invariants(&wal, &model, dir)?;
    }
    wal.close().await.unwrap();
    let (wal, rec) = Wal::open(options).await.unwrap();
    prop_assert!(rec.torn_tail.is_none());
    prop_assert_eq!(rec.records, model.live());
    check_invariants(&wal, &model, dir)?;
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_append_trim_reopen_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        target in prop_oneof![Just(1u64), 40u64..400, Just(64u64 << 20)],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, target, tmp.path()))?;
    }
}
