//! Kafka word count: the words of a topic's values counted across restarts (Spark's
//! `DirectKafkaWordCount`, with the offsets in the checkpoint instead of a consumer
//! group), each batch's offset ranges printed, and with an output topic every updated
//! total written exactly once.
//!
//! ```sh
//! eval "$(scripts/dev-servers.sh env)"   # a Kafka broker: SLUICE_TEST_KAFKA_BROKERS
//! cargo run -p sluice --features kafka --example kafka_wordcount -- \
//!     "$SLUICE_TEST_KAFKA_BROKERS" words /tmp/kafka-wc-checkpoint [totals]
//! ```
//!
//! Kill it (kill -9 too) and run it again: it goes on from the checkpointed offsets,
//! re-reading exactly the ranges of the batches it had not finished.

use std::time::Duration;

use sluice::prelude::*;
use sluice::sinks::KafkaSink;
use sluice::{KafkaRecord, KafkaSource};

fn main() -> sluice::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, checkpoint, rest @ ..] = args.as_slice() else {
        eprintln!("usage: kafka_wordcount BROKERS TOPIC CHECKPOINT [OUTPUT_TOPIC]");
        std::process::exit(2);
    };
    let output = rest.first().cloned();
    let conf = StreamingConf::new("kafka-wordcount", Duration::from_secs(1))
        .checkpoint(checkpoint.clone())
        .with_env()?;
    let (b2, t2) = (brokers.clone(), topic.clone());
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let source = KafkaSource::new(b2.clone()).topics([t2]);
        let ranges = source.clone();
        let records = ssc.kafka_direct_stream(source)?;
        records.foreach_batch(move |b| {
            for r in ranges.offset_ranges(b.time) {
                if r.count() > 0 {
                    println!("batch {}: read {r}", b.batch_id());
                }
            }
            Ok(())
        })?;
        let totals = records
            .flat_map(|r: &KafkaRecord| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                    .split_whitespace()
                    .map(|w| (w.to_owned(), 1u64))
                    .collect::<Vec<_>>()
            })?
            .update_state_by_key("word-totals", |vs: &[u64], s: Option<&(u64, bool)>| {
                Some((
                    s.map_or(0, |s| s.0) + vs.iter().sum::<u64>(),
                    !vs.is_empty(),
                ))
            })?
            .filter(|(_, (_, updated))| *updated)?;
        totals.print(10)?;
        if let Some(out) = output {
            totals.save_to_kafka(
                KafkaSink::new(b2, out.clone(), format!("kafka-wordcount-{out}")),
                |(w, (n, _)): &(String, (u64, bool))| (w.clone(), n.to_string()),
            )?;
        }
        Ok(())
    })?;
    ssc.start()?;
    ssc.await_termination()
}
