//! The input the harness produces, and the checks of every output against it.
//!
//! The oracle is the input alone: the total count of every word the harness wrote
//! into files and the broker. Which batch a record lands in depends on timing, so the
//! per-batch outputs are checked for consistency with each other instead, through the
//! per-batch counts in PostgreSQL (`delta(b, w)`):
//!
//! - totals: `Σ_b delta(b, w) = oracle(w)` for every word (else lost or duplicated);
//! - state: at every batch `t` the cumulative counts written are `Σ_{b≤t} delta(b, w)`,
//!   for exactly the words of batch `t`, and every batch time has its output;
//! - windows: at every slide `t` the window counts are `Σ_{t-W<b≤t} delta(b, w)`;
//! - Kafka (with `--kafka`): what a `read_committed` reader of the output topic sees is
//!   exactly the per-batch counts in PostgreSQL, each once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::rng::Rng;

/// The words of the input.
pub const VOCABULARY: [&str; 32] = [
    "river", "stream", "sluice", "gate", "water", "flow", "batch", "block", "log", "state",
    "crash", "restart", "window", "key", "count", "spark", "rust", "disk", "fsync", "epoch",
    "offset", "record", "sink", "replay", "broker", "fault", "torn", "pause", "kill", "oracle",
    "seed", "chaos",
];

/// One input line: 1 to 8 words.
pub fn line(rng: &mut Rng) -> String {
    let n = rng.range(1, 8) as usize;
    (0..n)
        .map(|_| VOCABULARY[rng.range(0, VOCABULARY.len() as u64 - 1) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Word counts.
pub type Counts = BTreeMap<String, u64>;

/// Adds the words of `line` to `counts`; returns how many there were.
pub fn count_line(counts: &mut Counts, line: &str) -> u64 {
    let mut n = 0;
    for w in line.split_whitespace() {
        *counts.entry(w.to_owned()).or_default() += 1;
        n += 1;
    }
    n
}

/// What the job wrote.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Per-batch counts from PostgreSQL.
    pub deltas: BTreeMap<u64, Counts>,
    /// Rows PostgreSQL holds more than once for one (batch, word).
    pub repeated_rows: Vec<(u64, String)>,
    /// Cumulative counts per batch (file sink).
    pub state: BTreeMap<u64, Counts>,
    /// Window counts per slide (file sink).
    pub window: BTreeMap<u64, Counts>,
    /// The per-batch counts in the Kafka output topic, with `--kafka`.
    pub kafka: Option<KafkaOut>,
}

/// What a `read_committed` reader of the Kafka output topic saw.
#[derive(Debug, Default)]
pub struct KafkaOut {
    /// Per-batch counts (key: the word, value: `BATCH_MS COUNT`).
    pub deltas: BTreeMap<u64, Counts>,
    /// `(batch, word, count)` of every record seen a second time for one (batch, word).
    pub repeated: Vec<(u64, String, u64)>,
}

impl KafkaOut {
    /// Adds one output record; `Err` names a record that does not parse.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let parsed = std::str::from_utf8(key).ok().and_then(|w| {
            let (t, n) = std::str::from_utf8(value).ok()?.split_once(' ')?;
            Some((w, t.parse::<u64>().ok()?, n.parse::<u64>().ok()?))
        });
        let Some((w, t, n)) = parsed else {
            return Err(format!(
                "malformed Kafka output record: key {:?} value {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ));
        };
        if self
            .deltas
            .entry(t)
            .or_default()
            .insert(w.to_owned(), n)
            .is_some()
        {
            self.repeated.push((t, w.to_owned(), n));
        }
        Ok(())
    }

    /// The words counted in the topic (each record once, repeats included).
    pub fn total(&self) -> u64 {
        let once: u64 = self.deltas.values().flat_map(|d| d.values()).sum();
        once + self.repeated.iter().map(|r| r.2).sum::<u64>()
    }
}

/// Reads every published `PREFIX-<ms>/part-*` directory of a file sink.
pub fn read_file_sink(dir: &Path, prefix: &str) -> Result<BTreeMap<u64, Counts>, String> {
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(t) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue; // temporary directories of an interrupted publish
        };
        let mut counts = Counts::new();
        for part in std::fs::read_dir(e.path()).map_err(|e| format!("{name}: {e}"))? {
            let path = part.map_err(|e| format!("{name}: {e}"))?.path();
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for l in text.lines() {
                let (w, n) = l
                    .split_once(' ')
                    .and_then(|(w, n)| Some((w, n.parse::<u64>().ok()?)))
                    .ok_or_else(|| format!("{}: malformed line {l:?}", path.display()))?;
                if counts.insert(w.to_owned(), n).is_some() {
                    return Err(format!("{}: word {w} twice", path.display()));
                }
            }
        }
        out.insert(t, counts);
    }
    Ok(out)
}

/// The comparison's result.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Words in the input.
    pub records_in: u64,
    /// Words counted in the per-batch output (PostgreSQL).
    pub records_out: u64,
    /// Input words never counted.
    pub lost: u64,
    /// Words counted more than once.
    pub duplicated: u64,
    /// Output values that disagree with the input or with each other.
    pub wrong: u64,
    /// Words counted in the Kafka output topic, with `--kafka`.
    pub records_out_kafka: Option<u64>,
    /// Batches with output.
    pub batches: u64,
    /// The first problems found, for the report.
    pub problems: Vec<String>,
}

impl Verdict {
    fn problem(&mut self, p: String) {
        self.wrong += 1;
        self.note(p);
    }

    /// Keeps `p` for the report, if fewer than 20 are kept.
    fn note(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    /// No loss, no duplicate, nothing wrong.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.wrong == 0
    }
}

/// Checks `out` against `oracle`; `batch_ms` and the window in batches as the job ran.
pub fn check(oracle: &Counts, out: &Outputs, batch_ms: u64, window_batches: u64) -> Verdict {
    let mut v = Verdict {
        records_in: oracle.values().sum(),
        ..Verdict::default()
    };
    let mut totals = Counts::new();
    for d in out.deltas.values() {
        for (w, n) in d {
            *totals.entry(w.clone()).or_default() += n;
        }
    }
    v.records_out = totals.values().sum();
    let mut lost = 0;
    let mut dup = 0;
    let mut all: Vec<&String> = oracle.keys().chain(totals.keys()).collect();
    all.sort();
    all.dedup();
    for w in all {
        let (want, got) = (
            oracle.get(w).copied().unwrap_or(0),
            totals.get(w).copied().unwrap_or(0),
        );
        if got < want {
            lost += want - got;
        } else {
            dup += got - want;
        }
    }
    v.lost = lost;
    v.duplicated = dup;
    for (t, w) in &out.repeated_rows {
        v.problem(format!(
            "PostgreSQL holds batch {t} word {w} more than once"
        ));
    }

    // State: cumulative counts agree with the per-batch counts, batch by batch.
    let empty = Counts::new();
    let mut cumulative = Counts::new();
    let mut deltas = out.deltas.iter().peekable();
    let mut last_t: Option<u64> = None;
    for (t, state) in &out.state {
        if let Some(prev) = last_t {
            if t - prev != batch_ms {
                v.problem(format!(
                    "no state output for the batches between {prev} and {t}"
                ));
            }
        }
        last_t = Some(*t);
        while let Some((b, d)) = deltas.next_if(|(b, _)| *b <= t) {
            for (w, n) in d {
                *cumulative.entry(w.clone()).or_default() += n;
            }
            if b < t && !out.state.contains_key(b) {
                v.problem(format!(
                    "batch {b} has counts in PostgreSQL but no state output"
                ));
            }
        }
        let delta = out.deltas.get(t).unwrap_or(&empty);
        for w in delta.keys() {
            if !state.contains_key(w) {
                v.problem(format!(
                    "batch {t}: word {w} was counted but its state not written"
                ));
            }
        }
        for (w, n) in state {
            if !delta.contains_key(w) {
                v.problem(format!(
                    "batch {t}: state of {w} written but the word not counted"
                ));
            }
            let want = cumulative.get(w).copied().unwrap_or(0);
            if *n != want {
                v.problem(format!(
                    "batch {t}: state {w}={n}, the counts so far say {want}"
                ));
            }
        }
    }
    v.batches = out.state.len() as u64;
    // The final state: each word's last written count is its count in the input.
    let mut last = Counts::new();
    for state in out.state.values() {
        last.extend(state.iter().map(|(w, n)| (w.clone(), *n)));
    }
    for (w, want) in oracle {
        if last.get(w) != Some(want) {
            v.problem(format!(
                "final state of {w} is {:?}, the input holds {want}",
                last.get(w)
            ));
        }
    }
    if let Some((t, _)) = out.deltas.iter().next_back() {
        if last_t.is_none_or(|l| l < *t) {
            v.problem(format!(
                "batch {t} has counts in PostgreSQL but no state output"
            ));
        }
    }

    // Kafka: the topic holds exactly the per-batch counts PostgreSQL holds, once each.
    if let Some(k) = &out.kafka {
        v.records_out_kafka = Some(k.total());
        for (t, w, n) in &k.repeated {
            v.duplicated += n;
            v.note(format!(
                "the Kafka output holds batch {t} word {w} more than once"
            ));
        }
        let batches: std::collections::BTreeSet<&u64> =
            out.deltas.keys().chain(k.deltas.keys()).collect();
        for t in batches {
            let (pg, kafka) = (
                out.deltas.get(t).unwrap_or(&empty),
                k.deltas.get(t).unwrap_or(&empty),
            );
            let words: std::collections::BTreeSet<&String> =
                pg.keys().chain(kafka.keys()).collect();
            for w in words {
                match (pg.get(w), kafka.get(w)) {
                    (Some(a), Some(b)) if a == b => {}
                    (Some(a), None) => {
                        v.lost += a;
                        v.note(format!(
                            "batch {t}: word {w} counted {a} in PostgreSQL, missing in Kafka"
                        ));
                    }
                    (a, b) => v.problem(format!(
                        "batch {t}: word {w} is {a:?} in PostgreSQL but {b:?} in Kafka"
                    )),
                }
            }
        }
    }

    // Windows: each slide's counts are the sum of the batches in its window.
    let span = window_batches * batch_ms;
    for (t, win) in &out.window {
        let mut want = Counts::new();
        for (_, d) in out.deltas.range(t.saturating_sub(span) + 1..=*t) {
            for (w, n) in d {
                *want.entry(w.clone()).or_default() += n;
            }
        }
        if &want != win {
            let diff: Vec<String> = want
                .keys()
                .chain(win.keys())
                .filter(|w| want.get(*w) != win.get(*w))
                .take(3)
                .map(|w| format!("{w}: {:?} vs {:?}", win.get(w), want.get(w)))
                .collect();
            v.problem(format!(
                "window at {t} disagrees with its batches ({})",
                diff.join(", ")
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> Counts {
        pairs.iter().map(|(w, n)| (w.to_string(), *n)).collect()
    }

    fn outputs() -> (Counts, Outputs) {
        let oracle = counts(&[("a", 3), ("b", 1)]);
        let mut out = Outputs::default();
        out.deltas.insert(100, counts(&[("a", 2)]));
        out.deltas.insert(200, counts(&[("a", 1), ("b", 1)]));
        out.state.insert(100, counts(&[("a", 2)]));
        out.state.insert(200, counts(&[("a", 3), ("b", 1)]));
        out.state.insert(300, Counts::new());
        out.window.insert(200, counts(&[("a", 3), ("b", 1)]));
        (oracle, out)
    }

    #[test]
    fn consistent_outputs_pass() {
        let (oracle, out) = outputs();
        let v = check(&oracle, &out, 100, 4);
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.records_in, v.records_out, v.batches), (4, 4, 3));
    }

    #[test]
    fn a_lost_batch_a_repeat_and_a_wrong_value_are_each_caught() {
        let (oracle, mut out) = outputs();
        out.deltas.remove(&100);
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.lost, 2, "{v:?}");
        assert!(v.wrong > 0);

        let (oracle, mut out) = outputs();
        out.deltas.insert(300, counts(&[("b", 1)]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.duplicated, 1, "{v:?}");

        let (oracle, mut out) = outputs();
        out.state.insert(200, counts(&[("a", 4), ("b", 1)]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!((v.lost, v.duplicated), (0, 0));
        // Wrong at batch 200, and a's last written count (its final state) is wrong.
        assert_eq!(v.wrong, 2, "{v:?}");

        let (mut oracle, out) = outputs();
        oracle.insert("c".into(), 1);
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.lost, 1, "{v:?}");
        assert_eq!(v.wrong, 1, "the final state misses c: {v:?}");

        let (oracle, mut out) = outputs();
        out.state.remove(&200);
        let v = check(&oracle, &out, 100, 4);
        assert!(v.wrong > 0, "{v:?}");

        let (oracle, mut out) = outputs();
        out.window.insert(200, counts(&[("a", 2), ("b", 1)]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.wrong, 1, "{v:?}");
    }

    fn kafka(records: &[(&str, &str)]) -> KafkaOut {
        let mut k = KafkaOut::default();
        for (w, v) in records {
            k.add(w.as_bytes(), v.as_bytes()).unwrap();
        }
        k
    }

    #[test]
    fn the_kafka_output_must_equal_the_per_batch_counts_once_each() {
        let (oracle, mut out) = outputs();
        out.kafka = Some(kafka(&[("a", "100 2"), ("a", "200 1"), ("b", "200 1")]));
        let v = check(&oracle, &out, 100, 4);
        assert!(v.clean(), "{v:?}");
        assert_eq!(v.records_out_kafka, Some(4));

        out.kafka = Some(kafka(&[
            ("a", "100 2"),
            ("a", "200 1"),
            ("b", "200 1"),
            ("b", "200 1"),
        ]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!((v.duplicated, v.records_out_kafka), (1, Some(5)), "{v:?}");

        out.kafka = Some(kafka(&[("a", "100 2"), ("b", "200 1")]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.lost, 1, "{v:?}");

        out.kafka = Some(kafka(&[("a", "100 2"), ("a", "200 1"), ("b", "200 2")]));
        let v = check(&oracle, &out, 100, 4);
        assert_eq!(v.wrong, 1, "{v:?}");

        assert!(KafkaOut::default().add(b"a", b"x 1").is_err());
    }
}
