//! `sluice bench sql`: one batch of N rows through the exactly-once PostgreSQL and
//! MySQL/MariaDB sinks, one statement per row beside many rows per statement, in one
//! run. Each measurement writes into a fresh table and is one transaction (marker
//! included), timed from the sink call to its commit.

use std::time::Instant;

use sluice::sinks::{BatchOutcome, MySqlSink, PostgresSink, SqlValue};
use sluice::{Batch, BatchContext, BatchTime};

/// The bench's settings.
pub struct SqlBenchOptions {
    pub postgres: Option<String>,
    pub mysql: Option<String>,
    pub rows: u64,
    pub runs: u32,
    pub json: bool,
}

fn row(x: &(String, u64)) -> Vec<SqlValue> {
    vec![x.0.as_str().into(), x.1.into()]
}

fn report(o: &SqlBenchOptions, db: &str, mode: &str, run: u32, secs: f64) {
    let rate = o.rows as f64 / secs;
    if o.json {
        println!(
            "{}",
            serde_json::json!({"bench": "sql", "db": db, "mode": mode, "run": run,
                "rows": o.rows, "seconds": secs, "rows_per_s": rate})
        );
    } else {
        println!(
            "{db:<9} {mode:<22} run {run}: {} rows in {secs:.3} s = {:.0} rows/s",
            o.rows, rate
        );
    }
}

/// Runs the bench on the databases given (`--postgres`, `--mysql`, or the
/// `SLUICE_TEST_POSTGRES_URL` / `SLUICE_TEST_MYSQL_URL` that `scripts/dev-servers.sh
/// env` prints).
pub fn run(o: SqlBenchOptions) -> Result<(), String> {
    let pg = o
        .postgres
        .clone()
        .or_else(|| std::env::var("SLUICE_TEST_POSTGRES_URL").ok());
    let my = o
        .mysql
        .clone()
        .or_else(|| std::env::var("SLUICE_TEST_MYSQL_URL").ok());
    if pg.is_none() && my.is_none() {
        return Err("give --postgres URL and/or --mysql URL (or start the servers with \
                    scripts/dev-servers.sh start postgres mysql and eval \"$(scripts/dev-servers.sh env)\")"
            .into());
    }
    let batch = Batch::from_vec((0..o.rows).map(|i| (format!("key-{i}"), i)).collect());
    let c = BatchContext::new(BatchTime(1), &batch);
    let modes = [
        ("one row per statement", 1usize),
        ("many rows per statement", 500),
    ];
    if let Some(url) = &pg {
        let mut admin = postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| format!("PostgreSQL at {}: {e}", sluice::sinks::redact(url)))?;
        for (mode, per) in modes {
            for run in 1..=o.runs {
                let table = format!("sluice_bench_{}_{per}_{run}", std::process::id());
                admin
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS {table}, {table}_m; \
                         CREATE TABLE {table} (k TEXT PRIMARY KEY, n BIGINT NOT NULL)"
                    ))
                    .map_err(|e| format!("PostgreSQL: creating {table}: {e}"))?;
                let sink = PostgresSink::new(url.clone(), "bench")
                    .marker_table(format!("{table}_m"))
                    .rows_per_statement(per)
                    .statement(format!(
                        "INSERT INTO {table} (k, n) VALUES ($1, $2) \
                         ON CONFLICT (k) DO UPDATE SET n = {table}.n + EXCLUDED.n"
                    ));
                sink.check().map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let out = sink.write_rows(&c, row).map_err(|e| e.to_string())?;
                let secs = t0.elapsed().as_secs_f64();
                if out != (BatchOutcome::Committed { elements: o.rows }) {
                    return Err(format!("PostgreSQL: unexpected outcome {out:?}"));
                }
                report(&o, "postgres", mode, run, secs);
                admin
                    .batch_execute(&format!("DROP TABLE {table}, {table}_m"))
                    .map_err(|e| format!("PostgreSQL: dropping {table}: {e}"))?;
            }
        }
    }
    if let Some(url) = &my {
        use mysql::prelude::Queryable;
        let opts = mysql::Opts::from_url(url)
            .map_err(|e| format!("{}: {e}", sluice::sinks::redact(url)))?;
        let mut admin = mysql::Conn::new(opts)
            .map_err(|e| format!("MySQL at {}: {e}", sluice::sinks::redact(url)))?;
        for (mode, per) in modes {
            for run in 1..=o.runs {
                let table = format!("sluice_bench_{}_{per}_{run}", std::process::id());
                admin
                    .query_drop(format!(
                        "CREATE TABLE {table} (k VARCHAR(64) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB"
                    ))
                    .map_err(|e| format!("MySQL: creating {table}: {e}"))?;
                let sink = MySqlSink::new(url.clone(), "bench")
                    .marker_table(format!("{table}_m"))
                    .rows_per_statement(per)
                    .statement(format!(
                        "INSERT INTO {table} (k, n) VALUES (?, ?) \
                         ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
                    ));
                sink.check().map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let out = sink.write_rows(&c, row).map_err(|e| e.to_string())?;
                let secs = t0.elapsed().as_secs_f64();
                if out != (BatchOutcome::Committed { elements: o.rows }) {
                    return Err(format!("MySQL: unexpected outcome {out:?}"));
                }
                report(&o, "mysql", mode, run, secs);
                admin
                    .query_drop(format!("DROP TABLE {table}, {table}_m"))
                    .map_err(|e| format!("MySQL: dropping {table}: {e}"))?;
            }
        }
    }
    Ok(())
}
