//! Online ETL, Kafka to Kafka, exactly once: raw log records whose fields are separated
//! by `<<<!>>>` (user id, time, client ip:port, server host:port, URL, status,
//! referer; some empty) are cleaned to `user \t time \t client \t server \t url`; a
//! malformed record (not 7 fields, or no user id) goes to a counted side output. Each
//! batch's cleaned records are one Kafka transaction, so a `read_committed` reader of
//! the output sees every input record's result once, whatever crashes in between.
//!
//! ```sh
//! eval "$(scripts/dev-servers.sh env)"
//! cargo run -p sluice --features kafka --example kafka_etl -- \
//!     "$SLUICE_TEST_KAFKA_BROKERS" raw-logs clean-logs /tmp/kafka-etl-checkpoint
//! ```

use std::time::Duration;

use sluice::prelude::*;
use sluice::sinks::KafkaSink;
use sluice::{KafkaRecord, KafkaSource};

const DELIM: &str = "<<<!>>>";

/// The cleaned record, or why the record is malformed.
fn clean(r: &KafkaRecord) -> Result<String, String> {
    let v = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
        .map_err(|_| "not UTF-8".to_owned())?;
    let f: Vec<&str> = v.split(DELIM).collect();
    match f.as_slice() {
        [user, time, client, server, url, _status, _referer] if !user.is_empty() => {
            Ok([*user, *time, *client, *server, *url].join("\t"))
        }
        [user, ..] if f.len() == 7 && user.is_empty() => Err("no user id".into()),
        _ => Err(format!("{} fields, not 7", f.len())),
    }
}

fn main() -> sluice::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, checkpoint] = args.as_slice() else {
        eprintln!("usage: kafka_etl BROKERS IN_TOPIC OUT_TOPIC CHECKPOINT");
        std::process::exit(2);
    };
    let conf = StreamingConf::new("kafka-etl", Duration::from_secs(1))
        .checkpoint(checkpoint.clone())
        .with_env()?;
    let (b, i, o) = (brokers.clone(), input.clone(), output.clone());
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let parsed = ssc
            .kafka_direct_stream(KafkaSource::new(b.clone()).topics([i]))?
            .map(clean)?;
        // The side output: malformed records, counted per batch.
        parsed.filter(|r| r.is_err())?.foreach_batch(|b| {
            if !b.batch.is_empty() {
                println!(
                    "batch {}: {} malformed records dropped",
                    b.batch_id(),
                    b.batch.len()
                );
            }
            Ok(())
        })?;
        parsed
            .flat_map(|r: &Result<String, String>| r.clone().ok())?
            .save_to_kafka(
                KafkaSink::new(b, o.clone(), format!("kafka-etl-{o}")),
                |line: &String| ((), line.clone()),
            )
    })?;
    ssc.start()?;
    ssc.await_termination()
}
