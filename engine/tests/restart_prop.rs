//! Property tests of recovery by stable identity: random jobs (windows, stateful
//! operators and plain outputs over two named generators) are stopped abruptly and
//! rebuilt with `get_or_create` in the same process, with random **compatible** edits
//! between the runs — the outputs defined in another order, identity `filter`/`map`
//! steps added or removed upstream of windows and stateful operators, the inputs defined
//! in another order, an output added. Every batch any run produced must equal an oracle
//! computed from the generators alone. Random **incompatible** edits (a stateful
//! operator renamed or reading another input, a window's length changed, an input
//! renamed) must be refused with the difference named, and refusing must lose nothing:
//! the unedited job then resumes and is checked against the oracle too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proptest::prelude::*;
use sluice::prelude::*;

/// The batch interval (ms).
const B: u64 = 100;
/// Generator rates (offsets per second) and key spaces of the two inputs.
const RATE: [u64; 2] = [50, 40];
const KEYS: [u64; 2] = [3, 5];

/// One output of the job, in the spec's order (its slot is its index there).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Per key, the sum over the last `len` batches, every batch.
    Window { input: usize, len: u64, inv: bool },
    /// Per key, the running total since the start (`update_state_by_key`).
    State { input: usize, name: String },
    /// Per key, the sum over this batch.
    Plain { input: usize },
}

impl Op {
    fn input(&self) -> usize {
        match self {
            Op::Window { input, .. } | Op::State { input, .. } | Op::Plain { input } => *input,
        }
    }
}

/// How one run builds the job: which ops, in which order, with which identity steps.
#[derive(Debug, Clone)]
struct Build {
    ops: Vec<Op>,
    /// Definition order of the ops (a permutation of their slots).
    order: Vec<usize>,
    /// Per slot: identity `filter` and `map` steps inserted upstream of the op.
    wrap: Vec<bool>,
    /// Names of the two inputs; defined in reverse order when `inputs_reversed`.
    inputs: [String; 2],
    inputs_reversed: bool,
    /// An extra plain output over input 0 (slot `EXTRA`), added between runs.
    extra: bool,
}

const EXTRA: usize = 99;

/// Everything the outputs saw: `(slot, batch time, sorted (key, value))`, every time an
/// output ran (a replayed batch may run an output twice: each run must be right).
type Out = Arc<Mutex<Vec<(usize, u64, Vec<(u64, u64)>)>>>;

fn record(s: &DStream<(u64, u64)>, slot: usize, out: &Out) -> sluice::Result<()> {
    let o = out.clone();
    s.foreach_batch(move |b| {
        let mut v = b.batch.to_vec();
        v.sort();
        o.lock().unwrap().push((slot, b.time.0, v));
        Ok(())
    })
}

fn build(ssc: &StreamingContext, b: &Build, out: &Out) -> sluice::Result<()> {
    let make = |i: usize| {
        let keys = KEYS[i];
        let base = 10 * i as u64;
        ssc.generator_stream(&b.inputs[i], RATE[i], move |n| (base + n % keys, 1u64))
    };
    let inputs = if b.inputs_reversed {
        let second = make(1)?;
        [make(0)?, second]
    } else {
        [make(0)?, make(1)?]
    };
    for &slot in &b.order {
        let op = &b.ops[slot];
        let mut s = inputs[op.input()].clone();
        if b.wrap[slot] {
            s = s.filter(|_| true)?.map(|x: &(u64, u64)| *x)?;
        }
        let result = match op {
            Op::Window { len, inv: true, .. } => s.reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                Duration::from_millis(len * B),
                Duration::from_millis(B),
                Some(|_, v| *v > 0),
            )?,
            Op::Window {
                len, inv: false, ..
            } => s.reduce_by_key_and_window(
                |a, b| a + b,
                Duration::from_millis(len * B),
                Duration::from_millis(B),
            )?,
            Op::State { name, .. } => {
                s.update_state_by_key(name, |vs: &[u64], st: Option<&u64>| {
                    Some(st.copied().unwrap_or(0) + vs.iter().sum::<u64>())
                })?
            }
            Op::Plain { .. } => s.reduce_by_key(|a, b| a + b)?,
        };
        record(&result, slot, out)?;
    }
    if b.extra {
        record(&inputs[0].reduce_by_key(|a, b| a + b)?, EXTRA, out)?;
    }
    Ok(())
}

fn conf(dir: &Path) -> StreamingConf {
    StreamingConf::new("restart-prop", Duration::from_millis(B))
        .checkpoint(dir.to_str().unwrap())
        .checkpoint_interval(Duration::from_millis(2 * B))
}

/// Contexts are one-per-process; the tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts the checkpoints written (not those that failed).
#[derive(Default)]
struct Checkpoints(std::sync::atomic::AtomicUsize);

impl sluice::StreamingListener for Checkpoints {
    fn on_checkpoint(&self, info: &sluice::CheckpointInfo) {
        if info.error.is_none() {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Runs `b` on the checkpoint in `dir` for about `batches` batch intervals, and at
/// least until it wrote a checkpoint, and stops it abruptly (`graceful` for the last
/// run, which then finishes what it planned). Without a checkpoint a restart has no
/// stored graph to check an edit against (the driver log alone holds no window
/// contents or state): on a loaded machine the first batches of a debug build can
/// take the whole interval.
fn run(dir: &Path, b: &Build, out: &Out, batches: u64, graceful: bool) {
    let ssc = StreamingContext::get_or_create(conf(dir), |s| build(s, b, out))
        .unwrap_or_else(|e| panic!("restart refused for {b:?}: {e}"));
    let written = Arc::new(Checkpoints::default());
    ssc.add_listener(written.clone());
    ssc.start().unwrap();
    std::thread::sleep(Duration::from_millis(batches * B));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while written.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint written in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ssc.stop(graceful).unwrap();
}

/// Checks every recorded output against the generators. `ops` holds every slot's op (the
/// slots are stable across the runs' edits).
fn check(ops: &[Op], out: &Out) {
    let seen = out.lock().unwrap();
    let zero = seen.iter().map(|r| r.1).min().expect("no batch ran") - B;
    let offset = |i: usize, t: u64| (t - zero) * RATE[i] / 1000;
    let sums = |i: usize, from_t: u64, to_t: u64| {
        let mut m: BTreeMap<u64, u64> = BTreeMap::new();
        for n in offset(i, from_t)..offset(i, to_t) {
            *m.entry(10 * i as u64 + n % KEYS[i]).or_default() += 1;
        }
        m.into_iter().collect::<Vec<_>>()
    };
    for (slot, t, got) in seen.iter() {
        let op = if *slot == EXTRA {
            Op::Plain { input: 0 }
        } else {
            ops[*slot].clone()
        };
        let want = match &op {
            Op::Window { input, len, .. } => sums(*input, t.saturating_sub(len * B).max(zero), *t),
            Op::State { input, .. } => sums(*input, zero, *t),
            Op::Plain { input } => sums(*input, t - B, *t),
        };
        assert_eq!(
            got,
            &want,
            "slot {slot} ({op:?}) at batch {}",
            (t - zero) / B
        );
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 2..5u64, any::<bool>()).prop_map(|(input, len, inv)| Op::Window {
            input,
            len,
            inv
        }),
        (0..2usize).prop_map(|input| Op::State {
            input,
            name: String::new()
        }),
        (0..2usize).prop_map(|input| Op::Plain { input }),
    ]
}

/// A job: 2 to 5 ops; stateful operators get unique names.
fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 2..6).prop_map(|mut ops| {
        for (i, op) in ops.iter_mut().enumerate() {
            if let Op::State { name, .. } = op {
                *name = format!("totals-{i}");
            }
        }
        ops
    })
}

/// A compatible way to build `ops`: any order, any identity steps, inputs either way
/// round, the extra output or not.
fn build_strategy(ops: Vec<Op>) -> impl Strategy<Value = Build> {
    let n = ops.len();
    (
        Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        prop::collection::vec(any::<bool>(), n),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(order, wrap, inputs_reversed, extra)| Build {
            ops: ops.clone(),
            order,
            wrap,
            inputs: ["g0".into(), "g1".into()],
            inputs_reversed,
            extra,
        })
}

/// A job and three compatible ways to build it (one per run).
fn runs_strategy() -> impl Strategy<Value = (Build, Build, Build)> {
    ops_strategy().prop_flat_map(|ops| {
        (
            build_strategy(ops.clone()),
            build_strategy(ops.clone()),
            build_strategy(ops),
        )
    })
}

/// An incompatible edit of a job; `None` when the job has nothing it applies to.
#[derive(Debug, Clone, Copy)]
enum Breaking {
    RenameState,
    StateReadsOtherInput,
    WindowLength,
    RenameInput,
}

fn apply(b: &Build, edit: Breaking) -> Option<(Build, String)> {
    let mut e = b.clone();
    let mut what = String::new();
    match edit {
        Breaking::RenameState | Breaking::StateReadsOtherInput => {
            let Op::State { input, name } =
                e.ops.iter_mut().find(|o| matches!(o, Op::State { .. }))?
            else {
                return None;
            };
            what = name.clone();
            if matches!(edit, Breaking::RenameState) {
                *name = format!("{name}-renamed");
            } else {
                *input = 1 - *input;
            }
        }
        Breaking::WindowLength => {
            let Op::Window { len, .. } =
                e.ops.iter_mut().find(|o| matches!(o, Op::Window { .. }))?
            else {
                return None;
            };
            *len += 1;
            what = "window".into();
        }
        Breaking::RenameInput => {
            e.inputs[0] = "g0-renamed".into();
            what.push_str("g0");
        }
    }
    Some((e, what))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn compatible_edits_between_restarts_resume_with_correct_state(
        (first, second, third) in runs_strategy()
    ) {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let out: Out = Arc::default();
        run(dir.path(), &first, &out, 6, false);
        run(dir.path(), &second, &out, 5, false);
        run(dir.path(), &third, &out, 5, true);
        check(&first.ops, &out);
    }

    #[test]
    fn incompatible_edits_are_refused_naming_the_difference_and_lose_nothing(
        first in ops_strategy().prop_flat_map(build_strategy),
        edit in prop_oneof![
            Just(Breaking::RenameState),
            Just(Breaking::StateReadsOtherInput),
            Just(Breaking::WindowLength),
            Just(Breaking::RenameInput),
        ],
    ) {
        let Some((edited, what)) = apply(&first, edit) else {
            // The job has no operator this edit applies to: nothing to refuse.
            return Ok(());
        };
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let out: Out = Arc::default();
        run(dir.path(), &first, &out, 6, false);
        let refused: Out = Arc::default();
        let err = match StreamingContext::get_or_create(conf(dir.path()), |s| build(s, &edited, &refused)) {
            Ok(_) => panic!("{edit:?} ({edited:?}) was not refused"),
            Err(e) => e.to_string(),
        };
        prop_assert!(err.contains(&what), "{edit:?}: the refusal does not name {what:?}: {err}");
        // Refusing loses nothing: the unedited job resumes with correct state.
        run(dir.path(), &first, &out, 5, true);
        check(&first.ops, &out);
    }
}
