//! Windowed and stateful operators: fixed examples, streams that slide slower than the
//! batch interval, the graph descriptor, and definition errors.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice::prelude::*;

/// One hour: the graceful stop fast-forwards through the queue, no batch runs in real time.
const B: u64 = 3_600_000;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn batches(k: u64) -> Duration {
    Duration::from_millis(k * B)
}

fn context(name: &str) -> StreamingContext {
    StreamingContext::new(StreamingConf::new(name, Duration::from_millis(B)).parallelism(2))
        .unwrap()
}

/// Every batch an output saw, sorted, in time order.
type Seen<U> = Arc<Mutex<Vec<Vec<U>>>>;

fn record<U: Data + Ord>(s: &DStream<U>) -> Seen<U> {
    let seen: Seen<U> = Arc::default();
    let out = seen.clone();
    s.foreach_batch(move |b| {
        let mut v = b.batch.to_vec();
        v.sort();
        out.lock().unwrap().push(v);
        Ok(())
    })
    .unwrap();
    seen
}

fn take<U: Clone>(s: &Seen<U>) -> Vec<Vec<U>> {
    s.lock().unwrap().clone()
}

fn ones(n: usize) -> Vec<Vec<(String, u64)>> {
    (0..n).map(|_| vec![("a".to_string(), 1)]).collect()
}

#[test]
fn incremental_window_counts_by_hand() {
    let _g = serial();
    let ssc = context("inv-by-hand");
    let words = [vec!["a", "b"], vec!["a"], vec![], vec!["b"], vec![]];
    let input: Vec<Vec<(String, i64)>> = words
        .iter()
        .map(|b| b.iter().map(|w| (w.to_string(), 1)).collect())
        .collect();
    let s = ssc.queue_stream(input, true).unwrap();
    let counts = s
        .reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            batches(2),
            batches(1),
            Some(|_, c| *c != 0),
        )
        .unwrap();
    let seen = record(&counts);
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    let s = |w: &str, c| (w.to_string(), c);
    assert_eq!(
        take(&seen),
        vec![
            vec![s("a", 1), s("b", 1)],
            vec![s("a", 2), s("b", 1)],
            vec![s("a", 1)],
            vec![s("b", 1)],
            vec![s("b", 1)],
        ]
    );
}

#[test]
fn stateful_operators_over_a_stream_that_slides_every_two_batches() {
    // The operators read their own batch of one slide ago, which is two batch
    // intervals old: it must not have been forgotten in between.
    let _g = serial();
    let ssc = context("slow-slide");
    let s = ssc.queue_stream(ones(6), true).unwrap();
    let w = s.window(batches(2), batches(2)).unwrap();
    let totals = w
        .update_state_by_key("totals", |vs: &[u64], st: Option<&u64>| {
            Some(st.copied().unwrap_or(0) + vs.iter().sum::<u64>())
        })
        .unwrap();
    let spec = StateSpec::function(|_k: &String, v: Option<&u64>, st: &mut State<u64>| {
        let n = st.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
        st.update(n);
        Some(n)
    });
    let mws = w.map_with_state("totals-mws", spec).unwrap();
    let inv = w
        .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, batches(4), batches(2), None)
        .unwrap();
    let (a, b, c, d) = (
        record(&totals),
        record(&mws.state_snapshots()),
        record(&inv),
        record(&*mws),
    );
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    let a_ = |n| vec![("a".to_string(), n)];
    assert_eq!(take(&a), vec![a_(2), a_(4), a_(6)]);
    assert_eq!(take(&b), vec![a_(2), a_(4), a_(6)]);
    assert_eq!(take(&c), vec![a_(2), a_(4), a_(4)]);
    assert_eq!(take(&d), vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
}

#[test]
fn map_with_state_timeout_initial_state_and_removal() {
    let _g = serial();
    let ssc = context("mws-timeout");
    let k = |s: &str, v: u64| (s.to_string(), v);
    let input = vec![
        vec![k("a", 1)],
        vec![k("b", 5)],
        vec![],
        vec![],
        vec![k("a", 1)],
    ];
    let s = ssc.queue_stream(input, true).unwrap();
    let spec = StateSpec::function(|key: &String, v: Option<&u64>, st: &mut State<u64>| {
        if st.is_timing_out() {
            // Updates of a timing-out key are ignored; it goes anyway.
            st.update(1000);
            return Some(format!("{key} timed out at {}", st.get()?));
        }
        let n = st.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
        if n >= 5 {
            st.remove();
            return Some(format!("{key} removed at {n}"));
        }
        st.update(n);
        None
    })
    .initial_state(vec![k("a", 10), k("z", 1)])
    .timeout(batches(2));
    let mws = s.map_with_state("mws", spec).unwrap();
    let (out, snap) = (record(&*mws), record(&mws.state_snapshots()));
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        take(&out),
        vec![
            strs(&["a removed at 11"]),
            strs(&["b removed at 5"]),
            // "z" was last seen at the first batch: idle for more than 2 batches at the fourth.
            strs(&[]),
            strs(&["z timed out at 1"]),
            strs(&[]),
        ]
    );
    assert_eq!(
        take(&snap),
        vec![
            vec![k("z", 1)],
            vec![k("z", 1)],
            vec![k("z", 1)],
            vec![],
            vec![k("a", 1)],
        ]
    );
}

#[test]
fn graph_descriptor_names_stateful_and_windowed_operators() {
    let ssc = context("descriptor");
    let s = ssc.queue_stream(ones(1), true).unwrap();
    let spec = StateSpec::function(|_k: &String, _v: Option<&u64>, _s: &mut State<u32>| None::<u8>);
    let mws = s.map_with_state("sessions", spec).unwrap();
    let inv = s
        .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, batches(3), batches(1), None)
        .unwrap();
    let grouped = s.group_by_key_and_window(batches(2), batches(2)).unwrap();
    let g = ssc.graph();
    let stateful = g.iter().find(|n| n.kind == "map_with_state").unwrap();
    assert_eq!(stateful.name.as_deref(), Some("sessions"));
    assert_eq!(stateful.state_type.as_deref(), Some("u32"));
    assert!(g[mws.info().id].kind.starts_with("map_with_state"));
    assert_eq!(inv.info().kind, "reduce_by_key_and_window_inv");
    assert_eq!(inv.info().window_ms, Some((3 * B, B)));
    assert_eq!(grouped.info().window_ms, Some((2 * B, 2 * B)));
    assert_eq!(grouped.slide(), batches(2));
}

#[test]
fn definition_errors() {
    let ssc = context("errors");
    let s = ssc.queue_stream(ones(1), true).unwrap();
    let f = || StateSpec::function(|_k: &String, _v: Option<&u64>, _s: &mut State<u64>| None::<u8>);
    s.map_with_state("same", f()).unwrap();
    assert!(matches!(
        s.map_with_state("same", f()),
        Err(EngineError::OperatorName { .. })
    ));
    assert!(matches!(
        s.map_with_state(" ", f()),
        Err(EngineError::OperatorName { .. })
    ));
    assert!(matches!(
        s.reduce_by_key_and_window(|a, b| a + b, Duration::from_millis(B + 1), batches(1)),
        Err(EngineError::NotMultipleOfBatch { .. })
    ));
    // A window over a stream that slides every 2 batches must be a multiple of 2 batches.
    let slow = s.window(batches(2), batches(2)).unwrap();
    assert!(matches!(
        slow.group_by_key_and_window(batches(3), batches(2)),
        Err(EngineError::Config { .. })
    ));
    assert!(matches!(
        slow.count_by_value_and_window(batches(4), batches(1)),
        Err(EngineError::Config { .. })
    ));
    assert!(matches!(
        slow.window(batches(2), batches(1)),
        Err(EngineError::Config { .. })
    ));
    assert!(slow.window(batches(4), batches(2)).is_ok());
}
