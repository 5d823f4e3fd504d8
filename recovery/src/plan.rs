//! Which batches a restarted driver re-runs, and with which inputs.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::DriverEvent;
use crate::BatchTime;

/// What to do with the batch times the clock passed while the driver was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownTime {
    /// Run one batch per passed batch time, as Spark does.
    #[default]
    RunEach,
    /// Fold the whole down time into one batch at the latest passed batch time.
    Fold,
}

/// Which input a logged plan belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputRef {
    /// By its stable key (what this build writes).
    Key(String),
    /// By its position among the graph's inputs (logs of earlier builds).
    Position(usize),
}

/// One input's plan for a batch to replay, as the driver log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedInput {
    /// The input it belongs to.
    pub input: InputRef,
    /// Its encoded plan.
    pub plan: Vec<u8>,
}

/// The batches to re-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// The job's zero time.
    pub zero: BatchTime,
    /// Batches planned after the state snapshot, in time order, to re-run with exactly
    /// the inputs they were planned with (completed ones included: their effect on the
    /// state is not in the snapshot; an exactly-once sink turns their output into no-ops).
    pub replay: Vec<(BatchTime, Vec<LoggedInput>)>,
    /// Of those, the ones that had completed before the crash.
    pub replay_completed: Vec<BatchTime>,
    /// New batches for the time the driver was down, planned afresh, in order.
    pub catch_up: Vec<BatchTime>,
    /// The first batch time after `catch_up` that the scheduler waits for.
    pub next: BatchTime,
}

/// Decides what a restarted driver runs.
///
/// * `checkpoint`: the batch time of the checkpoint restored (its state includes
///   every batch up to it), or `None` without a checkpoint.
/// * `events`: the driver log, in order (events at or before the checkpoint are ignored).
/// * `zero`/`batch_ms`: from the checkpoint or the log's `Started`; `now_ms`: the clock.
pub fn plan_restart(
    checkpoint: Option<BatchTime>,
    events: &[DriverEvent],
    zero: BatchTime,
    batch_ms: u64,
    now_ms: u64,
    down: DownTime,
) -> RestartPlan {
    let zero_ms = zero.0;
    let after = checkpoint.unwrap_or(zero).0;
    let mut planned: BTreeMap<u64, Vec<LoggedInput>> = BTreeMap::new();
    let mut completed = BTreeSet::new();
    for e in events {
        match e {
            DriverEvent::BatchPlanned { time, inputs } if time.0 > after => {
                let logged = inputs.iter().map(|i| LoggedInput {
                    input: InputRef::Key(i.input.clone()),
                    plan: i.plan.clone(),
                });
                planned.insert(time.0, logged.collect());
            }
            DriverEvent::BatchPlannedByPosition { time, inputs } if time.0 > after => {
                let logged = inputs.iter().map(|i| LoggedInput {
                    input: InputRef::Position(i.input),
                    plan: i.plan.clone(),
                });
                planned.insert(time.0, logged.collect());
            }
            DriverEvent::BatchCompleted { time } if time.0 > after => {
                completed.insert(time.0);
            }
            _ => {}
        }
    }
    let last = planned
        .keys()
        .next_back()
        .copied()
        .unwrap_or(after)
        .max(after);
    let first_new = last + batch_ms;
    let batch = batch_ms.max(1);
    // The latest batch time the clock has passed.
    let passed = if now_ms >= zero_ms {
        zero_ms + (now_ms - zero_ms) / batch * batch
    } else {
        zero_ms
    };
    let catch_up: Vec<u64> = if passed < first_new {
        Vec::new()
    } else {
        match down {
            DownTime::RunEach => (first_new..=passed).step_by(batch as usize).collect(),
            DownTime::Fold => vec![passed],
        }
    };
    let next = BatchTime(catch_up.last().map_or(first_new, |t| t + batch));
    RestartPlan {
        zero,
        replay_completed: planned
            .keys()
            .filter(|t| completed.contains(t))
            .map(|t| BatchTime(*t))
            .collect(),
        replay: planned
            .into_iter()
            .map(|(t, inputs)| (BatchTime(t), inputs))
            .collect(),
        catch_up: catch_up.into_iter().map(BatchTime).collect(),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(t: u64) -> DriverEvent {
        DriverEvent::BatchPlanned {
            time: BatchTime(t),
            inputs: vec![crate::log::InputPlan {
                input: "input:generator:g".into(),
                plan: t.to_le_bytes().to_vec(),
            }],
        }
    }

    fn done(t: u64) -> DriverEvent {
        DriverEvent::BatchCompleted { time: BatchTime(t) }
    }

    #[test]
    fn replays_everything_planned_after_the_checkpoint_in_order() {
        let log = vec![
            planned(1000),
            done(1000),
            planned(2000),
            done(2000),
            planned(3000),
            done(3000),
            planned(4000),
        ];
        let p = plan_restart(
            Some(BatchTime(2000)),
            &log,
            BatchTime(0),
            1000,
            4500,
            DownTime::RunEach,
        );
        assert_eq!(
            p.replay.iter().map(|r| r.0 .0).collect::<Vec<_>>(),
            vec![3000, 4000]
        );
        assert_eq!(p.replay[1].1[0].plan, 4000u64.to_le_bytes().to_vec());
        assert_eq!(p.replay_completed, vec![BatchTime(3000)]);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next, BatchTime(5000));
    }

    #[test]
    fn down_time_runs_each_batch_or_folds_into_one() {
        let log = vec![planned(1000), done(1000)];
        let each = plan_restart(
            Some(BatchTime(1000)),
            &log,
            BatchTime(0),
            1000,
            4200,
            DownTime::RunEach,
        );
        assert!(each.replay.is_empty());
        assert_eq!(each.catch_up, [2000, 3000, 4000].map(BatchTime));
        assert_eq!(each.next, BatchTime(5000));
        let fold = plan_restart(
            Some(BatchTime(1000)),
            &log,
            BatchTime(0),
            1000,
            4200,
            DownTime::Fold,
        );
        assert_eq!(fold.catch_up, vec![BatchTime(4000)]);
        assert_eq!(fold.next, BatchTime(5000));
    }

    #[test]
    fn without_a_checkpoint_everything_in_the_log_is_replayed() {
        let log = vec![
            DriverEvent::Started {
                zero: BatchTime(500),
                batch_ms: 1000,
            },
            planned(1500),
            done(1500),
            planned(2500),
        ];
        let p = plan_restart(None, &log, BatchTime(500), 1000, 2600, DownTime::RunEach);
        assert_eq!(p.replay.len(), 2);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next, BatchTime(3500));
    }

    #[test]
    fn a_clock_behind_the_log_plans_nothing_new() {
        let log = vec![planned(1000), planned(2000)];
        let p = plan_restart(None, &log, BatchTime(0), 1000, 1500, DownTime::RunEach);
        assert_eq!(p.replay.len(), 2);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next, BatchTime(3000));
    }
}
