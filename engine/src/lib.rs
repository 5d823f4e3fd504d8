//! sluice: a micro-batch stream processor with a crash-safe write-ahead log.
