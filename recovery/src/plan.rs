//! Which batches a restarted driver re-runs, and with which inputs.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::{DriverEvent, InputPlan};

/// What to do with the batch times the clock passed while the driver was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownTime {
    /// Run one batch per passed batch time, as Spark does.
    #[default]
    RunEach,
    /// Fold the whole down time into one batch at the latest passed batch time.
    Fold,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// The job's zero time.
    pub zero_ms: u64,
    /// Batches planned after the state snapshot, in time order, to re-run with exactly
    /// the inputs they were planned with (completed ones included: their effect on the
    /// state is not in the snapshot; an exactly-once sink turns their output into no-ops).
    pub replay: Vec<(u64, Vec<InputPlan>)>,
    /// Of those, the ones that had completed before the crash.
    pub replay_completed: Vec<u64>,
    /// New batches for the time the driver was down, planned afresh, in order.
    pub catch_up: Vec<u64>,
    /// The first batch time after `catch_up` that the scheduler waits for.
    pub next_ms: u64,
}

/// Decides what a restarted driver runs.
///
/// * `checkpoint_ms`: the batch time of the checkpoint restored (its state includes
///   every batch up to it), or `None` without a checkpoint.
/// * `events`: the driver log, in order (events at or before the checkpoint are ignored).
/// * `zero_ms`/`batch_ms`: from the checkpoint or the log's `Started`; `now_ms`: the clock.
pub fn plan_restart(
    checkpoint_ms: Option<u64>,
    events: &[DriverEvent],
    zero_ms: u64,
    batch_ms: u64,
    now_ms: u64,
    down: DownTime,
) -> RestartPlan {
    let after = checkpoint_ms.unwrap_or(zero_ms);
    let mut planned: BTreeMap<u64, Vec<InputPlan>> = BTreeMap::new();
    let mut completed = BTreeSet::new();
    for e in events {
        match e {
            DriverEvent::BatchPlanned { time_ms, inputs } if *time_ms > after => {
                planned.insert(*time_ms, inputs.clone());
            }
            DriverEvent::BatchCompleted { time_ms } if *time_ms > after => {
                completed.insert(*time_ms);
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
    let next_ms = catch_up.last().map_or(first_new, |t| t + batch);
    RestartPlan {
        zero_ms,
        replay_completed: planned
            .keys()
            .copied()
            .filter(|t| completed.contains(t))
            .collect(),
        replay: planned.into_iter().collect(),
        catch_up,
        next_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(t: u64) -> DriverEvent {
        DriverEvent::BatchPlanned {
            time_ms: t,
            inputs: vec![InputPlan {
                input: 0,
                plan: t.to_le_bytes().to_vec(),
            }],
        }
    }

    fn done(t: u64) -> DriverEvent {
        DriverEvent::BatchCompleted { time_ms: t }
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
        let p = plan_restart(Some(2000), &log, 0, 1000, 4500, DownTime::RunEach);
        assert_eq!(
            p.replay.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3000, 4000]
        );
        assert_eq!(p.replay[1].1[0].plan, 4000u64.to_le_bytes().to_vec());
        assert_eq!(p.replay_completed, vec![3000]);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next_ms, 5000);
    }

    #[test]
    fn down_time_runs_each_batch_or_folds_into_one() {
        let log = vec![planned(1000), done(1000)];
        let each = plan_restart(Some(1000), &log, 0, 1000, 4200, DownTime::RunEach);
        assert!(each.replay.is_empty());
        assert_eq!(each.catch_up, vec![2000, 3000, 4000]);
        assert_eq!(each.next_ms, 5000);
        let fold = plan_restart(Some(1000), &log, 0, 1000, 4200, DownTime::Fold);
        assert_eq!(fold.catch_up, vec![4000]);
        assert_eq!(fold.next_ms, 5000);
    }

    #[test]
    fn without_a_checkpoint_everything_in_the_log_is_replayed() {
        let log = vec![
            DriverEvent::Started {
                zero_ms: 500,
                batch_ms: 1000,
            },
            planned(1500),
            done(1500),
            planned(2500),
        ];
        let p = plan_restart(None, &log, 500, 1000, 2600, DownTime::RunEach);
        assert_eq!(p.replay.len(), 2);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next_ms, 3500);
    }

    #[test]
    fn a_clock_behind_the_log_plans_nothing_new() {
        let log = vec![planned(1000), planned(2000)];
        let p = plan_restart(None, &log, 0, 1000, 1500, DownTime::RunEach);
        assert_eq!(p.replay.len(), 2);
        assert!(p.catch_up.is_empty());
        assert_eq!(p.next_ms, 3000);
    }
}
