//! Power loss, end to end: a real job — a reliable receiver with the receiver WAL, a
//! stateful operator and a window, checkpointed — runs on a simulated disk whose power
//! is cut at seeded random instants (unsynced bytes and directory entries vanish, and
//! the dead machine writes nothing more). Each time the job is started again on what
//! the disk kept. Every record the receiver's source had acknowledged, and every record
//! after it, must be counted exactly once in the final state; every window the final
//! life saw whole must equal the sum of its batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;
use sluice_testkit::eventually;
use sluice_wal::fs::SimFs;

const BATCH_MS: u64 = 50;
const RECORDS: usize = 6000;
const KEYS: u64 = 13;

/// The source: records `0..RECORDS`, key `i % KEYS`; acknowledged up to `acked`.
struct Source {
    acked: AtomicUsize,
}

/// A reliable receiver: stores blocks with their source position, acknowledges only
/// what is stored, and resumes from the stored position (exactly once).
struct Reliable(Arc<Source>);

impl Receiver<u64> for Reliable {
    fn describe(&self) -> String {
        "reliable-source".into()
    }

    fn run(&mut self, ctx: &ReceiverContext<u64>) -> sluice::Result<()> {
        let mut next = ctx
            .stored_position()
            .map(|p| u64::from_le_bytes(p.try_into().expect("8 bytes")) as usize)
            .unwrap_or(0);
        while next < RECORDS && !ctx.is_stopped() {
            let end = (next + 20).min(RECORDS);
            let block: Vec<u64> = (next..end).map(|i| i as u64 % KEYS).collect();
            ctx.store_block_at(block, (end as u64).to_le_bytes().to_vec())?;
            // Durable: now the source may forget it.
            self.0.acked.fetch_max(end, Ordering::SeqCst);
            next = end;
            std::thread::sleep(Duration::from_millis(10));
        }
        while !ctx.is_stopped() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

type Seen = Arc<Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>>;

struct Life {
    ssc: StreamingContext,
    /// Per batch time: the counts of that batch.
    batches: Seen,
    /// Per batch time: the window (3 batches) ending there.
    windows: Seen,
    /// The newest state seen: (batch time, counts).
    state: Arc<Mutex<(u64, BTreeMap<u64, u64>)>>,
}

fn record_into(seen: &Seen) -> impl Fn(&BatchContext<'_, (u64, u64)>) -> sluice::Result<()> {
    let seen = seen.clone();
    move |b| {
        seen.lock()
            .unwrap()
            .insert(b.batch_id(), b.batch.iter().copied().collect());
        Ok(())
    }
}

fn life(fs: &SimFs, source: &Arc<Source>) -> sluice::Result<Life> {
    let conf = StreamingConf::new("power-loss", Duration::from_millis(BATCH_MS))
        .parallelism(2)
        .block_interval(Duration::from_millis(20))
        .checkpoint("/ckpt")
        .checkpoint_interval(Duration::from_millis(4 * BATCH_MS))
        .receiver_wal(true)
        .receiver_restart_delay(Duration::from_millis(20))
        .file_system(Arc::new(fs.clone()));
    let batches: Seen = Arc::default();
    let windows: Seen = Arc::default();
    let state: Arc<Mutex<(u64, BTreeMap<u64, u64>)>> = Arc::default();
    let (b2, w2, s2) = (batches.clone(), windows.clone(), state.clone());
    let source = source.clone();
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let pairs = ssc
            .receiver_stream(Reliable(source))?
            .map(|k: &u64| (*k, 1u64))?;
        let counts = pairs.reduce_by_key(|a, b| a + b)?;
        counts.foreach_batch(record_into(&b2))?;
        pairs
            .reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                Duration::from_millis(3 * BATCH_MS),
                Duration::from_millis(BATCH_MS),
                None,
            )?
            .filter(|(_, n)| *n > 0)?
            .foreach_batch(record_into(&w2))?;
        pairs
            .update_state_by_key("totals", |vs: &[u64], s: Option<&u64>| {
                Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
            })?
            .foreach_batch(move |b| {
                let mut st = s2.lock().unwrap();
                if b.batch_id() >= st.0 {
                    *st = (b.batch_id(), b.batch.iter().copied().collect());
                }
                Ok(())
            })?;
        Ok(())
    })?;
    Ok(Life {
        ssc,
        batches,
        windows,
        state,
    })
}

#[test]
fn power_cuts_at_random_instants_lose_and_repeat_nothing_acknowledged() {
    let mut fs = SimFs::new();
    let source = Arc::new(Source {
        acked: AtomicUsize::new(0),
    });
    let mut seed = 0x9e37_79b9_u64 ^ u64::from(std::process::id());
    for cut in 0..5 {
        let l = life(&fs, &source).unwrap_or_else(|e| panic!("start {cut}: {e}"));
        l.ssc.start().unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(150 + (seed >> 33) % 500));
        // The power goes: the running job's writes go nowhere from now on.
        let back = fs.power_cut();
        let _ = l.ssc.stop(false);
        drop(l);
        fs = back;
    }
    let acked_before_last = source.acked.load(Ordering::SeqCst);
    assert!(
        acked_before_last > 0,
        "the job made progress before the cuts"
    );

    // The last life runs until every record is in.
    let l = life(&fs, &source).unwrap();
    l.ssc.start().unwrap();
    let want: BTreeMap<u64, u64> = (0..KEYS)
        .map(|k| {
            (
                k,
                (0..RECORDS as u64).filter(|i| i % KEYS == k).count() as u64,
            )
        })
        .collect();
    let done = eventually(60, || l.state.lock().unwrap().1 == want);
    l.ssc.stop(true).unwrap();
    let got = l.state.lock().unwrap().1.clone();
    assert!(done, "final state {got:?}, want {want:?}");
    assert_eq!(source.acked.load(Ordering::SeqCst), RECORDS);

    // Windows the final life saw whole: each equals the sum of its three batches.
    let batches = l.batches.lock().unwrap();
    let windows = l.windows.lock().unwrap();
    let mut checked = 0;
    for (&t, w) in windows.iter() {
        let span: Vec<u64> = (0..3).map(|i| t - i * BATCH_MS).collect();
        if !span.iter().all(|s| batches.contains_key(s)) {
            continue;
        }
        let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
        for s in &span {
            for (k, n) in &batches[s] {
                *sum.entry(*k).or_default() += n;
            }
        }
        assert_eq!(w, &sum, "window ending at {t}");
        checked += 1;
    }
    assert!(checked > 0, "no window of the final life was checked");
}
