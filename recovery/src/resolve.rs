//! The one restart decision: from what the engine read (the retained checkpoints, the
//! driver log), the rebuilt graph, the configuration and the clock, what a starting
//! driver does. Pure: the engine reads and writes, this decides.
//!
//! The engine calls [`resolve`] with every retained checkpoint whose metadata reads back
//! whole, newest first, and the ones that do not, with the reason. On
//! [`RestartDecision::Resume`] it loads what the decision names from that checkpoint
//! (state snapshots, window contents); if one of them cannot be read whole, it moves
//! that checkpoint to the unusable ones and calls [`resolve`] again, which falls back
//! to the next older checkpoint (replaying from the driver log). Only when no retained
//! checkpoint is usable is it an error.

use crate::graph::{compare, NodeInfo};
use crate::identity::{is_input, node_keys, same_node_other_readers};
use crate::log::DriverEvent;
use crate::plan::{plan_restart, DownTime, InputRef, RestartPlan};
use crate::BatchTime;

/// What the engine read of one metadata checkpoint (in terms of stable keys; see
/// [`crate::identity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointView {
    /// The batch the checkpoint follows (its id).
    pub time: BatchTime,
    /// The job's zero time.
    pub zero: BatchTime,
    /// The batch interval it was taken with.
    pub batch_ms: u64,
    /// The graph descriptor it was taken from.
    pub graph: Vec<NodeInfo>,
    /// Keys of the inputs it holds a position for.
    pub positions: Vec<String>,
    /// Names of the stateful operators it holds a snapshot for.
    pub states: Vec<String>,
    /// Keys of the nodes it holds window contents (remembered batches) for.
    pub memos: Vec<String>,
}

/// A checkpoint that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// Its batch time (id).
    pub time: BatchTime,
    /// What was wrong (names the file and what failed).
    pub reason: String,
}

/// Everything [`resolve`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct RestartInputs<'a> {
    /// Usable checkpoints (their metadata read back whole), newest first.
    pub checkpoints: &'a [CheckpointView],
    /// Retained checkpoints that cannot be used.
    pub unusable: &'a [Unusable],
    /// The driver log, in order.
    pub log: &'a [DriverEvent],
    /// The graph the user's build function made now.
    pub graph: &'a [NodeInfo],
    /// The configured batch interval.
    pub batch_ms: u64,
    /// Whether state an incompatible change makes unusable may be dropped.
    pub drop_incompatible_state: bool,
    /// What to do with the batch times passed while the driver was down.
    pub down_time: DownTime,
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
}

/// What a starting driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Nothing to restore: a first start.
    Fresh,
    /// Resume: restore what it names, replay, catch up.
    Resume(Box<Resume>),
    /// Do not start: each difference or problem, for the user.
    Refuse(Vec<String>),
}

/// A resume, in terms of the rebuilt graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint to restore (`None`: a driver log without a checkpoint yet).
    pub checkpoint: Option<BatchTime>,
    /// Newer checkpoints that were not used, and why (for the log and the UI).
    pub skipped: Vec<Unusable>,
    /// Compatible changes of the graph (to log).
    pub changes: Vec<String>,
    /// Incompatible changes whose state is dropped, as configured (to log).
    pub dropped: Vec<String>,
    /// Stateful operators to restore: `(name in the checkpoint, rebuilt node index)`.
    pub states: Vec<(String, usize)>,
    /// Window contents to restore: `(key in the checkpoint, rebuilt node index)`.
    pub memos: Vec<(String, usize)>,
    /// Input positions to restore: `(key in the checkpoint, index among the rebuilt
    /// graph's inputs)`.
    pub positions: Vec<(String, usize)>,
    /// The batches to re-run, with each logged input plan given to the rebuilt input
    /// (index among the inputs) that wrote it, and the batch times to catch up.
    pub replay: Vec<(BatchTime, Vec<(usize, Vec<u8>)>)>,
    /// Of the replayed batches, those that had completed.
    pub replay_completed: Vec<BatchTime>,
    /// New batch times for the time the driver was down.
    pub catch_up: Vec<BatchTime>,
    /// The first batch time after those.
    pub next: BatchTime,
    /// The job's zero time.
    pub zero: BatchTime,
    /// Logged plans of inputs the rebuilt graph no longer has, dropped as configured
    /// (`drop_incompatible_state`; otherwise they refuse the restart).
    pub orphan_plans: Vec<String>,
}

impl Resume {
    /// One line for people: what the restart does.
    pub fn summary(&self) -> String {
        let from = match self.checkpoint {
            Some(t) => format!("resume from the checkpoint of batch {}", t.0),
            None => "resume from the driver log (no checkpoint yet)".to_owned(),
        };
        let skipped = if self.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} newer skipped)", self.skipped.len())
        };
        format!(
            "{from}{skipped}: {} operator states, {} window contents, {} input positions; {} batches to replay, {} to catch up, then batch {}",
            self.states.len(),
            self.memos.len(),
            self.positions.len(),
            self.replay.len(),
            self.catch_up.len(),
            self.next.0
        )
    }
}

impl RestartDecision {
    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            RestartDecision::Fresh => {
                "start afresh: the location holds no checkpoint and no driver log".into()
            }
            RestartDecision::Resume(r) => r.summary(),
            RestartDecision::Refuse(why) => format!("refuse to start: {}", why.join("; ")),
        }
    }
}

/// The restart decision (see the module docs).
pub fn resolve(r: &RestartInputs<'_>) -> RestartDecision {
    let started = r.log.iter().find_map(|e| match e {
        DriverEvent::Started { zero, batch_ms } => Some((*zero, *batch_ms)),
        _ => None,
    });
    let Some(c) = r.checkpoints.first() else {
        if !r.unusable.is_empty() {
            return RestartDecision::Refuse(
                std::iter::once(
                    "no retained checkpoint is usable (the driver log alone cannot rebuild the state they held)".to_owned(),
                )
                .chain(
                    r.unusable
                        .iter()
                        .map(|u| format!("checkpoint of batch {}: {}", u.time.0, u.reason)),
                )
                .collect(),
            );
        }
        return match started {
            None => RestartDecision::Fresh,
            Some((zero, batch_ms)) => {
                if batch_ms != r.batch_ms {
                    return batch_changed(batch_ms, r.batch_ms);
                }
                resume(r, None, zero, &[], &[], &[], Vec::new(), Vec::new())
            }
        };
    };
    if c.batch_ms != r.batch_ms {
        return batch_changed(c.batch_ms, r.batch_ms);
    }
    let cmp = compare(&c.graph, r.graph);
    if !cmp.incompatible.is_empty() && !r.drop_incompatible_state {
        return RestartDecision::Refuse(cmp.incompatible);
    }
    let states: Vec<String> = c
        .states
        .iter()
        .filter(|s| !cmp.dropped_state.contains(s))
        .cloned()
        .collect();
    resume(
        r,
        Some(c),
        c.zero,
        &states,
        &c.memos,
        &c.positions,
        cmp.compatible,
        cmp.incompatible,
    )
}

fn batch_changed(stored: u64, now: u64) -> RestartDecision {
    RestartDecision::Refuse(vec![format!(
        "batch interval changed from {stored} ms to {now} ms"
    )])
}

#[allow(clippy::too_many_arguments)]
fn resume(
    r: &RestartInputs<'_>,
    c: Option<&CheckpointView>,
    zero: BatchTime,
    states: &[String],
    memos: &[String],
    positions: &[String],
    changes: Vec<String>,
    dropped: Vec<String>,
) -> RestartDecision {
    let keys = node_keys(r.graph);
    let input_keys: Vec<&String> = r
        .graph
        .iter()
        .zip(&keys)
        .filter(|(n, _)| is_input(n))
        .map(|(_, k)| k)
        .collect();
    let state_targets = states
        .iter()
        .filter_map(|name| {
            r.graph
                .iter()
                .position(|n| n.name.as_deref() == Some(name) && n.is_stateful())
                .map(|i| (name.clone(), i))
        })
        .collect();
    // A memo goes to the node with its key or, failing that, to the one node that is the
    // same definition with other readers (a window added beside the one it fed).
    let memo_targets = memos
        .iter()
        .filter_map(|k| {
            let exact = keys.iter().position(|x| x == k);
            let near = || {
                let mut m = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| same_node_other_readers(k, x))
                    .map(|(i, _)| i);
                match (m.next(), m.next()) {
                    (Some(i), None) => Some(i),
                    _ => None,
                }
            };
            exact.or_else(near).map(|i| (k.clone(), i))
        })
        .collect();
    let position_targets = positions
        .iter()
        .filter_map(|k| {
            input_keys
                .iter()
                .position(|x| *x == k)
                .map(|i| (k.clone(), i))
        })
        .collect();
    let plan: RestartPlan = plan_restart(
        c.map(|c| c.time),
        r.log,
        zero,
        r.batch_ms,
        r.now_ms,
        r.down_time,
    );
    let mut orphans = Vec::new();
    let replay = plan
        .replay
        .into_iter()
        .map(|(t, logged)| {
            let inputs = logged
                .into_iter()
                .filter_map(|l| {
                    let index = match &l.input {
                        InputRef::Key(k) => input_keys.iter().position(|x| *x == k),
                        // Logs of earlier builds: by position, as those builds did.
                        InputRef::Position(p) => (*p < input_keys.len()).then_some(*p),
                    };
                    if index.is_none() {
                        let input = match &l.input {
                            InputRef::Key(k) => k.clone(),
                            InputRef::Position(p) => format!("input #{p}"),
                        };
                        orphans.push(format!(
                            "batch {} was planned with {input}, which the rebuilt graph does not have (removed, renamed, or reading something else); what it read for that batch would be lost",
                            t.0
                        ));
                    }
                    index.map(|i| (i, l.plan))
                })
                .collect();
            (t, inputs)
        })
        .collect();
    if !orphans.is_empty() && !r.drop_incompatible_state {
        orphans.dedup();
        return RestartDecision::Refuse(orphans);
    }
    RestartDecision::Resume(Box::new(Resume {
        checkpoint: c.map(|c| c.time),
        skipped: r.unusable.to_vec(),
        changes,
        dropped,
        states: state_targets,
        memos: memo_targets,
        positions: position_targets,
        replay,
        replay_completed: plan.replay_completed,
        catch_up: plan.catch_up,
        next: plan.next,
        zero,
        orphan_plans: orphans,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{InputPlan, PositionalInputPlan};

    fn node(id: usize, kind: &str, parents: &[usize]) -> NodeInfo {
        NodeInfo {
            id,
            kind: kind.into(),
            name: None,
            parents: parents.to_vec(),
            type_name: "(String, u64)".into(),
            state_type: None,
            window_ms: None,
            slide_ms: 100,
        }
    }

    fn input(id: usize, identity: &str) -> NodeInfo {
        NodeInfo {
            name: Some(identity.into()),
            ..node(id, "input:socket", &[])
        }
    }

    fn stateful(id: usize, name: &str, parent: usize) -> NodeInfo {
        NodeInfo {
            name: Some(name.into()),
            state_type: Some("u64".into()),
            ..node(id, "update_state_by_key", &[parent])
        }
    }

    fn window(id: usize, parent: usize) -> NodeInfo {
        NodeInfo {
            window_ms: Some((400, 100)),
            ..node(id, "reduce_by_key_and_window_inv", &[parent])
        }
    }

    /// in(h:1) → map → state "counts"; in(h:1) … reduce_by_key → window.
    fn graph() -> Vec<NodeInfo> {
        vec![
            input(0, "h:1"),
            node(1, "map", &[0]),
            stateful(2, "counts", 1),
            node(3, "reduce_by_key", &[1]),
            window(4, 3),
        ]
    }

    fn view(time: u64, g: &[NodeInfo]) -> CheckpointView {
        let keys = node_keys(g);
        CheckpointView {
            time: BatchTime(time),
            zero: BatchTime(0),
            batch_ms: 100,
            graph: g.to_vec(),
            positions: vec![keys[0].clone()],
            states: vec!["counts".into()],
            memos: vec![keys[3].clone(), keys[4].clone()],
        }
    }

    fn planned(t: u64, input: &str) -> DriverEvent {
        DriverEvent::BatchPlanned {
            time: BatchTime(t),
            inputs: vec![InputPlan {
                input: input.into(),
                plan: vec![t as u8],
            }],
        }
    }

    fn inputs<'a>(
        checkpoints: &'a [CheckpointView],
        unusable: &'a [Unusable],
        log: &'a [DriverEvent],
        graph: &'a [NodeInfo],
    ) -> RestartInputs<'a> {
        RestartInputs {
            checkpoints,
            unusable,
            log,
            graph,
            batch_ms: 100,
            drop_incompatible_state: false,
            down_time: DownTime::RunEach,
            now_ms: 1050,
        }
    }

    fn resumed(d: RestartDecision) -> Resume {
        match d {
            RestartDecision::Resume(r) => *r,
            other => panic!("expected a resume, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_location_starts_fresh() {
        let g = graph();
        assert_eq!(resolve(&inputs(&[], &[], &[], &g)), RestartDecision::Fresh);
    }

    #[test]
    fn an_identical_graph_restores_everything_by_key() {
        let g = graph();
        let c = [view(500, &g)];
        let log = [
            planned(600, "input:socket:h:1"),
            planned(700, "input:socket:h:1"),
        ];
        let r = resumed(resolve(&inputs(&c, &[], &log, &g)));
        assert_eq!(r.checkpoint, Some(BatchTime(500)));
        assert_eq!(r.states, vec![("counts".into(), 2)]);
        assert_eq!(r.memos.iter().map(|m| m.1).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(r.positions, vec![("input:socket:h:1".into(), 0)]);
        assert_eq!(
            r.replay,
            vec![
                (BatchTime(600), vec![(0, vec![88])]),
                (BatchTime(700), vec![(0, vec![188])])
            ]
        );
        assert_eq!(
            r.catch_up,
            vec![BatchTime(800), BatchTime(900), BatchTime(1000)]
        );
        assert_eq!(r.next, BatchTime(1100));
        assert!(
            r.summary().contains("2 batches to replay"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_filter_inserted_upstream_of_the_window_restores_its_contents_into_the_moved_nodes() {
        let stored = graph();
        let rebuilt = vec![
            input(0, "h:1"),
            node(1, "filter", &[0]),
            node(2, "map", &[1]),
            stateful(3, "counts", 2),
            node(4, "reduce_by_key", &[2]),
            window(5, 4),
        ];
        let c = [view(500, &stored)];
        let r = resumed(resolve(&inputs(&c, &[], &[], &rebuilt)));
        assert_eq!(r.memos.iter().map(|m| m.1).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(r.states, vec![("counts".into(), 3)]);
        assert!(
            r.changes.iter().any(|c| c.contains("1 new")),
            "{:?}",
            r.changes
        );
    }

    #[test]
    fn swapped_inputs_are_refused_and_each_plan_goes_to_its_own_input() {
        let two = |a: &str, b: &str| {
            vec![
                input(0, a),
                input(1, b),
                stateful(2, "first", 0),
                stateful(3, "second", 1),
            ]
        };
        let stored = two("h:1", "h:2");
        let mut c = CheckpointView {
            time: BatchTime(500),
            zero: BatchTime(0),
            batch_ms: 100,
            graph: stored.clone(),
            positions: Vec::new(),
            states: vec!["first".into(), "second".into()],
            memos: Vec::new(),
        };
        let d = resolve(&inputs(&[c.clone()], &[], &[], &two("h:2", "h:1")));
        match d {
            RestartDecision::Refuse(why) => {
                assert_eq!(why.len(), 2, "{why:?}");
                assert!(why[0].contains("\"first\""), "{why:?}");
            }
            other => panic!("{other:?}"),
        }
        // Inputs defined in the other order but wired the same: positions and plans
        // follow the inputs' keys.
        let reordered = vec![
            input(0, "h:2"),
            input(1, "h:1"),
            stateful(2, "first", 1),
            stateful(3, "second", 0),
        ];
        c.positions = vec!["input:socket:h:1".into(), "input:socket:h:2".into()];
        let log = [planned(600, "input:socket:h:1")];
        let r = resumed(resolve(&inputs(&[c], &[], &log, &reordered)));
        assert_eq!(
            r.positions,
            vec![
                ("input:socket:h:1".into(), 1),
                ("input:socket:h:2".into(), 0)
            ]
        );
        assert_eq!(r.replay[0].1[0].0, 1);
    }

    #[test]
    fn an_unusable_newest_checkpoint_falls_back_to_the_next_and_says_why() {
        let g = graph();
        let c = [view(400, &g)];
        let bad = [Unusable {
            time: BatchTime(500),
            reason: "snapshot chunk missing: /x/counts/1".into(),
        }];
        let log = [planned(500, "input:socket:h:1")];
        let r = resumed(resolve(&inputs(&c, &bad, &log, &g)));
        assert_eq!(r.checkpoint, Some(BatchTime(400)));
        assert_eq!(r.skipped, bad.to_vec());
        assert_eq!(r.replay[0].0, BatchTime(500));
    }

    #[test]
    fn with_no_usable_checkpoint_it_refuses_naming_each() {
        let g = graph();
        let bad = [Unusable {
            time: BatchTime(500),
            reason: "manifest missing".into(),
        }];
        match resolve(&inputs(&[], &bad, &[], &g)) {
            RestartDecision::Refuse(why) => {
                assert!(why[1].contains("batch 500: manifest missing"), "{why:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incompatible_changes_refuse_unless_dropped() {
        let g = graph();
        let c = [view(500, &g)];
        let mut renamed = graph();
        renamed[2].name = Some("totals".into());
        assert!(matches!(
            resolve(&inputs(&c, &[], &[], &renamed)),
            RestartDecision::Refuse(_)
        ));
        let mut i = inputs(&c, &[], &[], &renamed);
        i.drop_incompatible_state = true;
        let r = resumed(resolve(&i));
        assert!(r.states.is_empty());
        assert_eq!(r.dropped.len(), 1);
        // The window contents are unaffected by the rename.
        assert_eq!(r.memos.len(), 2);
    }

    #[test]
    fn a_changed_batch_interval_refuses() {
        let g = graph();
        let c = [view(500, &g)];
        let mut i = inputs(&c, &[], &[], &g);
        i.batch_ms = 200;
        assert_eq!(
            resolve(&i),
            RestartDecision::Refuse(vec!["batch interval changed from 100 ms to 200 ms".into()])
        );
    }

    #[test]
    fn a_log_without_a_checkpoint_replays_from_the_start() {
        let g = graph();
        let log = [
            DriverEvent::Started {
                zero: BatchTime(0),
                batch_ms: 100,
            },
            planned(100, "input:socket:h:1"),
        ];
        let r = resumed(resolve(&inputs(&[], &[], &log, &g)));
        assert_eq!(r.checkpoint, None);
        assert_eq!(r.replay.len(), 1);
    }

    #[test]
    fn plans_of_earlier_builds_go_by_position_and_orphans_refuse_unless_dropped() {
        let g = graph();
        let log = [
            DriverEvent::Started {
                zero: BatchTime(0),
                batch_ms: 100,
            },
            DriverEvent::BatchPlannedByPosition {
                time: BatchTime(100),
                inputs: vec![PositionalInputPlan {
                    input: 0,
                    plan: vec![1],
                }],
            },
            planned(200, "input:socket:gone"),
        ];
        match resolve(&inputs(&[], &[], &log, &g)) {
            RestartDecision::Refuse(why) => {
                assert!(
                    why[0].contains("batch 200 was planned with input:socket:gone"),
                    "{why:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut i = inputs(&[], &[], &log, &g);
        i.drop_incompatible_state = true;
        let r = resumed(resolve(&i));
        assert_eq!(r.replay[0].1, vec![(0, vec![1])]);
        assert!(r.replay[1].1.is_empty());
        assert_eq!(r.orphan_plans.len(), 1, "{:?}", r.orphan_plans);
    }
}
