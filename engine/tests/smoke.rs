//! End-to-end smoke tests of the core: lifecycle errors and a stateful word count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;

fn conf(name: &str) -> StreamingConf {
    StreamingConf::new(name, Duration::from_millis(20)).parallelism(2)
}

/// Contexts are one-per-process; tests that start one run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn lifecycle_errors_are_errors_not_panics() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ssc = StreamingContext::new(conf("lifecycle")).unwrap();
    let s = ssc.queue_stream(vec![vec![1u32]], true).unwrap();
    assert!(matches!(ssc.start(), Err(EngineError::NoOutputs)));
    assert!(matches!(
        s.window(Duration::from_millis(30), Duration::from_millis(20)),
        Err(EngineError::NotMultipleOfBatch { .. })
    ));
    s.foreach_batch(|_| Ok(())).unwrap();
    ssc.start().unwrap();
    assert!(matches!(ssc.start(), Err(EngineError::AlreadyStarted)));
    assert!(matches!(
        s.map(|x| x + 1),
        Err(EngineError::AfterStart { .. })
    ));
    let other = StreamingContext::new(conf("second")).unwrap();
    other
        .queue_stream(vec![vec![1u8]], true)
        .unwrap()
        .foreach_batch(|_| Ok(()))
        .unwrap();
    assert!(matches!(
        other.start(),
        Err(EngineError::AnotherContextActive { .. })
    ));
    ssc.stop(false).unwrap();
    assert!(matches!(ssc.start(), Err(EngineError::Stopped)));
    assert!(matches!(s.map(|x| x + 1), Err(EngineError::Stopped)));
    // The second context can run once the first stopped.
    other.start().unwrap();
    other.stop(true).unwrap();
}

#[test]
fn stateful_word_count_over_the_queue() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ssc = StreamingContext::new(conf("wordcount")).unwrap();
    let lines = ssc
        .queue_stream(
            vec![
                vec!["a b".to_string(), "a".to_string()],
                vec![],
                vec!["b c".to_string()],
            ],
            true,
        )
        .unwrap();
    let counts = lines
        .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap()
        .map(|w: &String| (w.clone(), 1u64))
        .unwrap()
        .update_state_by_key("counts", |vs: &[u64], s: Option<&u64>| {
            Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
        })
        .unwrap();
    let last = Arc::new(Mutex::new(Vec::new()));
    let l2 = last.clone();
    counts
        .foreach_batch(move |b| {
            let mut v = b.batch.to_vec();
            v.sort();
            *l2.lock().unwrap() = v;
            Ok(())
        })
        .unwrap();
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    assert_eq!(
        *last.lock().unwrap(),
        vec![
            ("a".to_string(), 2),
            ("b".to_string(), 2),
            ("c".to_string(), 1)
        ]
    );
}

/// A receiver that, asked to stop, keeps draining for a while (storing nothing more).
struct SlowToStop;

impl Receiver<u64> for SlowToStop {
    fn run(&mut self, ctx: &ReceiverContext<u64>) -> sluice::Result<()> {
        ctx.store(1);
        while !ctx.is_stopped() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }
}

/// Seen before: while a receiver was still draining after a graceful stop, the
/// scheduler ran empty batches back to back, their times racing far ahead of the clock.
#[test]
fn batch_times_stay_on_the_clock_while_a_graceful_stop_drains_a_receiver() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ssc = StreamingContext::new(conf("drain-pace")).unwrap();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t2 = times.clone();
    ssc.receiver_stream(SlowToStop)
        .unwrap()
        .foreach_batch(move |b| {
            t2.lock().unwrap().push(b.time.0);
            Ok(())
        })
        .unwrap();
    ssc.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ssc.stop(true).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let times = times.lock().unwrap();
    let last = *times.iter().max().expect("batches ran");
    // 1.5 s of draining at 20 ms batches: on the clock the last batch is at most a
    // batch or two ahead of it; racing, it was tens of seconds ahead.
    assert!(
        last <= now + 100,
        "the last batch time is {} ms ahead of the clock",
        last.saturating_sub(now)
    );
    assert!(
        times.len() >= 20,
        "{} batches ran while draining",
        times.len()
    );
}
