//! Property tests: every operator, run by the engine over random sequences of batches
//! (a `queue_stream` fast-forwarded by a graceful stop), against a reference computed
//! directly over the input. Batches are compared as multisets (sorted).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proptest::prelude::*;
use sluice::prelude::*;

/// The batch interval: one hour, so no batch falls due in real time while a test runs
/// and the batches that run are exactly those the graceful stop fast-forwards through,
/// one per queued batch.
const B: u64 = 3_600_000;

/// Contexts are one-per-process; tests that start one run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn batches(k: usize) -> Duration {
    Duration::from_millis(k as u64 * B)
}

fn context(name: &str) -> StreamingContext {
    StreamingContext::new(StreamingConf::new(name, Duration::from_millis(B)).parallelism(3))
        .unwrap()
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    }
}

/// What an output saw: `(batch time, elements)` for every batch it ran on.
type Seen<U> = Arc<Mutex<Vec<(u64, Vec<U>)>>>;

fn record<U: Data>(s: &DStream<U>) -> Seen<U> {
    let seen: Seen<U> = Arc::default();
    let out = seen.clone();
    s.foreach_batch(move |b| {
        out.lock().unwrap().push((b.time.0, b.batch.to_vec()));
        Ok(())
    })
    .unwrap();
    seen
}

/// Starts the context and stops it gracefully (which runs every queued batch); returns
/// the time of the first batch, read from `input`'s output, and the number of batches.
fn run<T>(ssc: &StreamingContext, input: &Seen<T>) -> (u64, usize) {
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    let seen = input.lock().unwrap();
    let t0 = seen.iter().map(|(t, _)| *t).min().expect("no batch ran");
    (t0, seen.len())
}

/// The batches an output saw, by batch index (0 is the first batch), each sorted.
fn got<U: Ord + Clone>(seen: &Seen<U>, t0: u64) -> BTreeMap<usize, Vec<U>> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(t, v)| {
            let mut v = v.clone();
            v.sort();
            (((t - t0) / B) as usize, v)
        })
        .collect()
}

/// The expected batches of a stream producing every `slide` batches, over `n`
/// batches: batch `i` is produced when `(i + 1) % slide == 0`; each sorted.
fn expect<U: Ord>(n: usize, slide: usize, f: impl Fn(usize) -> Vec<U>) -> BTreeMap<usize, Vec<U>> {
    (0..n)
        .filter(|i| (i + 1) % slide == 0)
        .map(|i| {
            let mut v = f(i);
            v.sort();
            (i, v)
        })
        .collect()
}

/// The input batches in the window of `w` batches ending at batch `i`.
fn window_of<T: Clone>(input: &[Vec<T>], i: usize, w: usize) -> Vec<T> {
    ((i + 1).saturating_sub(w)..=i)
        .filter_map(|j| input.get(j))
        .flatten()
        .cloned()
        .collect()
}

fn at<T: Clone>(input: &[Vec<T>], i: usize) -> Vec<T> {
    input.get(i).cloned().unwrap_or_default()
}

/// Values per key, in input order.
fn groups(b: &[(u8, u64)]) -> BTreeMap<u8, Vec<u64>> {
    let mut g: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for (k, v) in b {
        g.entry(*k).or_default().push(*v);
    }
    g
}

fn sums(b: &[(u8, u64)]) -> Vec<(u8, u64)> {
    groups(b)
        .into_iter()
        .map(|(k, vs)| (k, vs.iter().sum()))
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn values() -> impl Strategy<Value = Vec<Vec<u64>>> {
    prop::collection::vec(prop::collection::vec(0u64..10, 0..6), 1..9)
}

fn pairs() -> impl Strategy<Value = Vec<Vec<(u8, u64)>>> {
    prop::collection::vec(prop::collection::vec((0u8..5, 0u64..10), 0..6), 1..9)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn element_and_batch_operators_match_the_reference(input in values()) {
        let _g = serial();
        let ssc = context("prop-stateless");
        let s = ssc.queue_stream(input.clone(), true).unwrap();
        let seen_in = record(&s);
        let map = record(&s.map(|x| x * 3 + 1).unwrap());
        let filter = record(&s.filter(|x| x % 2 == 0).unwrap());
        let flat = record(&s.flat_map(|x: &u64| vec![*x; (*x % 3) as usize]).unwrap());
        let count = record(&s.count().unwrap());
        let reduce = record(&s.reduce(|a, b| a + b).unwrap());
        let by_value = record(&s.count_by_value().unwrap());
        let union = record(&s.union(&s.map(|x| x + 100).unwrap()).unwrap());
        let repart = record(&s.repartition(2).unwrap());
        let parts = record(&s.map_partitions(|p: &[u64]| vec![p.iter().sum::<u64>()]).unwrap().reduce(|a, b| a + b).unwrap());
        let transform = record(&s.transform(|b, _t| Ok(vec![b.len() as u64])).unwrap());
        let (t0, n) = run(&ssc, &seen_in);
        prop_assert_eq!(n, input.len());
        prop_assert_eq!(got(&map, t0), expect(n, 1, |i| at(&input, i).iter().map(|x| x * 3 + 1).collect()));
        prop_assert_eq!(got(&filter, t0), expect(n, 1, |i| at(&input, i).into_iter().filter(|x| x % 2 == 0).collect()));
        prop_assert_eq!(got(&flat, t0), expect(n, 1, |i| at(&input, i).iter().flat_map(|x| vec![*x; (*x % 3) as usize]).collect()));
        prop_assert_eq!(got(&count, t0), expect(n, 1, |i| vec![at(&input, i).len() as u64]));
        let sum_or_none = |v: Vec<u64>| -> Vec<u64> { if v.is_empty() { vec![] } else { vec![v.iter().sum()] } };
        prop_assert_eq!(got(&reduce, t0), expect(n, 1, |i| sum_or_none(at(&input, i))));
        // A queued batch is one partition (an empty one too): one partial sum per batch.
        prop_assert_eq!(got(&parts, t0), expect(n, 1, |i| vec![at(&input, i).iter().sum::<u64>()]));
        prop_assert_eq!(got(&by_value, t0), expect(n, 1, |i| {
            let mut c: BTreeMap<u64, u64> = BTreeMap::new();
            for x in at(&input, i) { *c.entry(x).or_default() += 1; }
            c.into_iter().collect()
        }));
        prop_assert_eq!(got(&union, t0), expect(n, 1, |i| {
            let b = at(&input, i);
            b.iter().copied().chain(b.iter().map(|x| x + 100)).collect()
        }));
        prop_assert_eq!(got(&repart, t0), expect(n, 1, |i| at(&input, i)));
        prop_assert_eq!(got(&transform, t0), expect(n, 1, |i| vec![at(&input, i).len() as u64]));
    }

    #[test]
    fn keyed_operators_and_joins_match_the_reference(
        left in pairs(),
        right in pairs(),
        parts in 1usize..4,
    ) {
        let _g = serial();
        let ssc = context("prop-keyed");
        let a = ssc.queue_stream(left.clone(), true).unwrap();
        let seen_in = record(&a);
        // Several input partitions, as receiver blocks give.
        let a = a.repartition(parts).unwrap();
        let b = ssc.queue_stream(right.clone(), true).unwrap();
        let reduced = record(&a.reduce_by_key(|x, y| x + y).unwrap());
        let grouped = record(&a.group_by_key().unwrap().map(|(k, vs)| (*k, sorted(vs.clone()))).unwrap());
        let values = record(&a.map_values(|v| v * 2).unwrap());
        let join = record(&a.join(&b).unwrap());
        let left_join = record(&a.left_outer_join(&b).unwrap());
        let right_join = record(&a.right_outer_join(&b).unwrap());
        let full_join = record(&a.full_outer_join(&b).unwrap());
        let cogroup = record(&a.cogroup(&b).unwrap().map(|(k, (vs, ws))| (*k, (sorted(vs.clone()), sorted(ws.clone())))).unwrap());
        let both_sizes = record(&a.transform_with(&b, |x, y, _t| Ok(vec![(x.len() as u64, y.len() as u64)])).unwrap());
        let all = record(&DStream::union_all(&[a.clone(), b.clone(), a.clone()]).unwrap());
        let (t0, n) = run(&ssc, &seen_in);
        // Both queues are consumed one batch per time; the shorter one then gives empty batches.
        prop_assert_eq!(n, left.len().max(right.len()));
        prop_assert_eq!(got(&reduced, t0), expect(n, 1, |i| sums(&at(&left, i))));
        prop_assert_eq!(got(&grouped, t0), expect(n, 1, |i| {
            groups(&at(&left, i)).into_iter().map(|(k, vs)| (k, sorted(vs))).collect()
        }));
        prop_assert_eq!(got(&values, t0), expect(n, 1, |i| at(&left, i).iter().map(|(k, v)| (*k, v * 2)).collect()));
        let both = |i: usize| (groups(&at(&left, i)), groups(&at(&right, i)));
        prop_assert_eq!(got(&join, t0), expect(n, 1, |i| {
            let (l, r) = both(i);
            let mut out = Vec::new();
            for (k, vs) in &l {
                for w in r.get(k).into_iter().flatten() {
                    out.extend(vs.iter().map(|v| (*k, (*v, *w))));
                }
            }
            out
        }));
        prop_assert_eq!(got(&left_join, t0), expect(n, 1, |i| {
            let (l, r) = both(i);
            let mut out = Vec::new();
            for (k, vs) in &l {
                for v in vs {
                    match r.get(k) {
                        Some(ws) => out.extend(ws.iter().map(|w| (*k, (*v, Some(*w))))),
                        None => out.push((*k, (*v, None))),
                    }
                }
            }
            out
        }));
        prop_assert_eq!(got(&right_join, t0), expect(n, 1, |i| {
            let (l, r) = both(i);
            let mut out = Vec::new();
            for (k, ws) in &r {
                for w in ws {
                    match l.get(k) {
                        Some(vs) => out.extend(vs.iter().map(|v| (*k, (Some(*v), *w)))),
                        None => out.push((*k, (None, *w))),
                    }
                }
            }
            out
        }));
        prop_assert_eq!(got(&full_join, t0), expect(n, 1, |i| {
            let (l, r) = both(i);
            let keys: BTreeSet<u8> = l.keys().chain(r.keys()).copied().collect();
            let mut out = Vec::new();
            for k in keys {
                match (l.get(&k), r.get(&k)) {
                    (Some(vs), Some(ws)) => {
                        for v in vs {
                            out.extend(ws.iter().map(|w| (k, (Some(*v), Some(*w)))));
                        }
                    }
                    (Some(vs), None) => out.extend(vs.iter().map(|v| (k, (Some(*v), None)))),
                    (None, Some(ws)) => out.extend(ws.iter().map(|w| (k, (None, Some(*w))))),
                    (None, None) => {}
                }
            }
            out
        }));
        prop_assert_eq!(got(&both_sizes, t0), expect(n, 1, |i| vec![(at(&left, i).len() as u64, at(&right, i).len() as u64)]));
        prop_assert_eq!(got(&all, t0), expect(n, 1, |i| [at(&left, i), at(&right, i), at(&left, i)].concat()));
        prop_assert_eq!(got(&cogroup, t0), expect(n, 1, |i| {
            let (l, r) = both(i);
            let keys: BTreeSet<u8> = l.keys().chain(r.keys()).copied().collect();
            keys.into_iter()
                .map(|k| (k, (sorted(l.get(&k).cloned().unwrap_or_default()), sorted(r.get(&k).cloned().unwrap_or_default()))))
                .collect()
        }));
    }

    #[test]
    fn stateful_operators_match_a_model(
        input in pairs(),
        initial in prop::collection::btree_map(0u8..5, 0u64..10, 0..3),
        timeout in 1usize..4,
        parts in 1usize..4,
    ) {
        let _g = serial();
        let ssc = context("prop-stateful");
        let s = ssc.queue_stream(input.clone(), true).unwrap();
        let seen_in = record(&s);
        let s = s.repartition(parts).unwrap();
        // Running sums per key; a key whose sum passes 25 is removed.
        let usbk = record(&s.update_state_by_key("sums", |vs: &[u64], st: Option<&u64>| {
            let n = st.copied().unwrap_or(0) + vs.iter().sum::<u64>();
            (n <= 25).then_some(n)
        }).unwrap());
        // With an initial state: the same sums, starting from it.
        let usbk_init = record(&s.update_state_by_key_with_initial("sums-init", |vs: &[u64], st: Option<&u64>| {
            let n = st.copied().unwrap_or(0) + vs.iter().sum::<u64>();
            (n <= 25).then_some(n)
        }, initial.clone().into_iter().collect()).unwrap());
        let spec = StateSpec::function(|k: &u8, v: Option<&u64>, st: &mut State<u64>| {
            if st.is_timing_out() {
                return Some((*k, *st.get()?, true));
            }
            let n = st.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
            if n > 25 { st.remove() } else { st.update(n) }
            Some((*k, n, false))
        })
        .initial_state(initial.clone().into_iter().collect())
        .timeout(batches(timeout));
        let mws = s.map_with_state("mws", spec).unwrap();
        let mapped = record(&mws);
        let snapshots = record(&mws.state_snapshots());
        let (t0, n) = run(&ssc, &seen_in);

        // update_state_by_key: the state after each batch.
        let model = |mut state: BTreeMap<u8, u64>| {
            let mut want = BTreeMap::new();
            for i in 0..n {
                let g = groups(&at(&input, i));
                let keys: BTreeSet<u8> = state.keys().chain(g.keys()).copied().collect();
                for k in keys {
                    let sum = state.get(&k).copied().unwrap_or(0) + g.get(&k).map_or(0, |vs| vs.iter().sum());
                    if sum <= 25 { state.insert(k, sum); } else { state.remove(&k); }
                }
                want.insert(i, state.clone().into_iter().collect::<Vec<_>>());
            }
            want
        };
        prop_assert_eq!(got(&usbk, t0), model(BTreeMap::new()));
        prop_assert_eq!(got(&usbk_init, t0), model(initial.clone()));

        // map_with_state: record by record, then keys idle for `timeout` batches time out.
        let mut state: BTreeMap<u8, (u64, usize)> = initial.iter().map(|(k, s)| (*k, (*s, 0))).collect();
        let (mut want_mapped, mut want_snap) = (BTreeMap::new(), BTreeMap::new());
        for i in 0..n {
            let mut out = Vec::new();
            // Records reach the function partition by partition: `repartition` put
            // record `j` in partition `j % parts`.
            let mut batch: Vec<(usize, (u8, u64))> = at(&input, i).into_iter().enumerate().collect();
            batch.sort_by_key(|(j, _)| (j % parts, *j));
            for (_, (k, v)) in batch {
                let n = state.get(&k).map_or(0, |s| s.0) + v;
                if n > 25 { state.remove(&k); } else { state.insert(k, (n, i)); }
                out.push((k, n, false));
            }
            // Idle since before batch `i - timeout` (in time: last seen < t - timeout).
            let timed_out: Vec<u8> = state.iter().filter(|(_, (_, last))| last + timeout < i).map(|(k, _)| *k).collect();
            for k in timed_out {
                let (s, _) = state.remove(&k).unwrap();
                out.push((k, s, true));
            }
            want_mapped.insert(i, sorted(out));
            want_snap.insert(i, state.iter().map(|(k, (s, _))| (*k, *s)).collect::<Vec<_>>());
        }
        prop_assert_eq!(got(&mapped, t0), want_mapped);
        prop_assert_eq!(got(&snapshots, t0), want_snap);
    }

    #[test]
    fn window_operators_match_the_reference(
        input in pairs(),
        w in 1usize..5,
        sl in 1usize..4,
        parts in 1usize..4,
    ) {
        let _g = serial();
        let ssc = context("prop-window");
        let s = ssc.queue_stream(input.clone(), true).unwrap();
        let seen_in = record(&s);
        let s = s.repartition(parts).unwrap();
        let vals = s.map(|(_, v)| *v).unwrap();
        let (wd, sd) = (batches(w), batches(sl));
        let window = record(&s.window(wd, sd).unwrap());
        let count = record(&s.count_by_window(wd, sd).unwrap());
        let reduce = record(&vals.reduce_by_window(|a, b| a + b, wd, sd).unwrap());
        let reduce_inv = record(&vals.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, wd, sd).unwrap());
        let rbkw = record(&s.reduce_by_key_and_window(|a, b| a + b, wd, sd).unwrap());
        let inv_filtered = record(&s.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, wd, sd, Some(|_, v| *v > 0)).unwrap());
        // Values + 1 so a key's sum is 0 exactly when it has no value in the window.
        let inv_kept = record(&s.map_values(|v| v + 1).unwrap().reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, wd, sd, None).unwrap());
        let by_value = record(&s.count_by_value_and_window(wd, sd).unwrap());
        let grouped = record(&s.group_by_key_and_window(wd, sd).unwrap().map(|(k, vs)| (*k, sorted(vs.clone()))).unwrap());
        let (t0, n) = run(&ssc, &seen_in);
        prop_assert_eq!(n, input.len());
        let win = |i: usize| window_of(&input, i, w);
        prop_assert_eq!(got(&window, t0), expect(n, sl, win));
        prop_assert_eq!(got(&count, t0), expect(n, sl, |i| vec![win(i).len() as u64]));
        let total = |i: usize| -> Vec<u64> {
            let v = win(i);
            if v.is_empty() { vec![] } else { vec![v.iter().map(|(_, x)| x).sum()] }
        };
        prop_assert_eq!(got(&reduce, t0), expect(n, sl, total));
        prop_assert_eq!(got(&reduce_inv, t0), expect(n, sl, total));
        prop_assert_eq!(got(&rbkw, t0), expect(n, sl, |i| sums(&win(i))));
        // The incremental form agrees with the plain one, once keys that left the window
        // (filtered, or kept at 0) are set aside; zero sums are real values in the plain
        // form, so compare on non-zero sums for the filtered one.
        let nonzero = |v: Vec<(u8, u64)>| v.into_iter().filter(|(_, x)| *x > 0).collect::<Vec<_>>();
        prop_assert_eq!(got(&inv_filtered, t0), expect(n, sl, |i| nonzero(sums(&win(i)))));
        let plus_one: Vec<Vec<(u8, u64)>> = input.iter().map(|b| b.iter().map(|(k, v)| (*k, v + 1)).collect()).collect();
        let kept: BTreeMap<usize, Vec<(u8, u64)>> = got(&inv_kept, t0).into_iter().map(|(i, v)| (i, nonzero(v))).collect();
        prop_assert_eq!(kept, expect(n, sl, |i| sums(&window_of(&plus_one, i, w))));
        prop_assert_eq!(got(&by_value, t0), expect(n, sl, |i| {
            let mut c: BTreeMap<(u8, u64), u64> = BTreeMap::new();
            for x in win(i) { *c.entry(x).or_default() += 1; }
            c.into_iter().collect()
        }));
        prop_assert_eq!(got(&grouped, t0), expect(n, sl, |i| {
            groups(&win(i)).into_iter().map(|(k, vs)| (k, sorted(vs))).collect()
        }));
    }

    #[test]
    fn operators_over_a_stream_that_slides_slower_than_the_batch_interval(
        input in pairs(),
        sl in 1usize..4,
        m in 1usize..4,
    ) {
        let _g = serial();
        let ssc = context("prop-slow");
        let s = ssc.queue_stream(input.clone(), true).unwrap();
        let seen_in = record(&s);
        // Tumbling windows of `sl` batches: a stream with one batch every `sl` batches.
        let slow = s.window(batches(sl), batches(sl)).unwrap();
        let inv = record(&slow.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, batches(m * sl), batches(sl), Some(|_, v| *v > 0)).unwrap());
        let plain = record(&slow.reduce_by_key_and_window(|a, b| a + b, batches(m * sl), batches(sl)).unwrap());
        let totals = record(&slow.update_state_by_key("totals", |vs: &[u64], st: Option<&u64>| {
            Some(st.copied().unwrap_or(0) + vs.iter().sum::<u64>())
        }).unwrap());
        let spec = StateSpec::function(|_k: &u8, v: Option<&u64>, st: &mut State<u64>| {
            let n = st.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
            st.update(n);
            None::<u8>
        });
        let mws = record(&slow.map_with_state("totals-mws", spec).unwrap().state_snapshots());
        let (t0, n) = run(&ssc, &seen_in);
        let nonzero = |v: Vec<(u8, u64)>| v.into_iter().filter(|(_, x)| *x > 0).collect::<Vec<_>>();
        prop_assert_eq!(got(&inv, t0), expect(n, sl, |i| nonzero(sums(&window_of(&input, i, m * sl)))));
        prop_assert_eq!(got(&plain, t0), expect(n, sl, |i| sums(&window_of(&input, i, m * sl))));
        let upto = |i: usize| sums(&window_of(&input, i, i + 1));
        prop_assert_eq!(got(&totals, t0), expect(n, sl, upto));
        prop_assert_eq!(got(&mws, t0), expect(n, sl, upto));
    }

    #[test]
    fn fused_flat_map_reduce_by_key_matches_flat_map_then_reduce_by_key(
        input in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(0u8..6, 0..5), 0..6), 1..7),
        parts in 1usize..4,
    ) {
        let _g = serial();
        // Lines of words from a small vocabulary ("w0".."w5"), separated by one or two
        // spaces.
        let lines: Vec<Vec<String>> = input
            .iter()
            .map(|b| b.iter().map(|ws| {
                ws.iter().enumerate().map(|(i, w)| format!("{}w{w}", if i % 2 == 0 { " " } else { "  " })).collect()
            }).collect())
            .collect();
        let ssc = context("prop-fused");
        let s = ssc.queue_stream(lines.clone(), true).unwrap();
        let seen_in = record(&s);
        let s = s.repartition(parts).unwrap();
        let fused = record(&s.flat_map_reduce_by_key(
            |l: &String, emit: &mut dyn FnMut(&str, u64)| {
                for w in l.split_whitespace() {
                    emit(w, 1);
                }
            },
            |a, b| a + b,
        ).unwrap());
        let plain = record(&s
            .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).unwrap()
            .map(|w: &String| (w.clone(), 1u64)).unwrap()
            .reduce_by_key(|a, b| a + b).unwrap());
        let (t0, n) = run(&ssc, &seen_in);
        let counts = |i: usize| {
            let mut c: BTreeMap<String, u64> = BTreeMap::new();
            for ws in at(&input, i) {
                for w in ws {
                    *c.entry(format!("w{w}")).or_default() += 1;
                }
            }
            c.into_iter().collect::<Vec<_>>()
        };
        prop_assert_eq!(got(&fused, t0), expect(n, 1, counts));
        prop_assert_eq!(got(&fused, t0), got(&plain, t0));
    }
}
