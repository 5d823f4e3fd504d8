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
