//! `sluice inspect LOCATION [--json]`: the report of `sluice::durable::inspect`, for
//! people or as JSON; exits 2 when something is damaged or the location cannot be read.

use sluice::durable::inspect::{inspect, Report};

/// Runs the command.
pub(crate) fn run(location: &str, json: bool) -> u8 {
    match inspect(location) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print(&r);
            }
            if r.damaged {
                2
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("sluice inspect: {e}");
            2
        }
    }
}

/// Prints the report for people.
fn print(r: &Report) {
    println!("location: {}", r.location);
    println!("a restart now would: {}", r.decision);
    println!("checkpoints ({}), newest first:", r.checkpoints.len());
    for c in &r.checkpoints {
        match &c.problem {
            None => println!(
                "  checkpoint-{:020}  {} bytes  ok",
                c.time_ms,
                c.bytes.unwrap_or(0)
            ),
            Some(p) => println!("  checkpoint-{:020}  DAMAGED: {p}", c.time_ms),
        }
        for s in &c.states {
            match &s.problem {
                None => println!(
                    "      state {:?} snapshot {} ({} layers, {} keys) ok",
                    s.operator,
                    s.snapshot_id,
                    s.layers,
                    s.keys.unwrap_or(0)
                ),
                Some(p) => println!(
                    "      state {:?} snapshot {} DAMAGED: {p}",
                    s.operator, s.snapshot_id
                ),
            }
        }
    }
    match &r.driver_log {
        None => println!("driver log: none"),
        Some(l) => {
            println!(
                "driver log: {} ({} records, {} batches planned, {} completed)",
                l.location, l.records, l.planned, l.completed
            );
            for s in &l.segments {
                let state = match (&s.problem, s.torn_tail) {
                    (None, _) => "ok".to_string(),
                    (Some(p), true) => format!("torn tail (recovery cuts it): {p}"),
                    (Some(p), false) => format!("DAMAGED: {p}"),
                };
                println!(
                    "  {}  first LSN {}  {} records  {} bytes  {state}",
                    s.path.display(),
                    s.first_lsn.map_or("-".into(), |l| l.to_string()),
                    s.records,
                    s.bytes
                );
            }
            println!(
                "  pending batches (planned, not completed): {:?}",
                l.pending_batches
            );
            if let Some(p) = &l.problem {
                println!("  problem: {p}");
            }
        }
    }
    if !r.graph.is_empty() {
        println!("graph (newest readable checkpoint):");
        for n in &r.graph {
            println!(
                "  {:>3} {:<24} {:<20} parents {:?}  {}{}",
                n.id,
                n.kind,
                n.name.as_deref().unwrap_or(""),
                n.parents,
                n.type_name,
                n.state_type
                    .as_deref()
                    .map(|s| format!("  state {s}"))
                    .unwrap_or_default()
            );
        }
    }
    println!(
        "{}",
        if r.damaged {
            "DAMAGED"
        } else {
            "all checks passed"
        }
    );
}
