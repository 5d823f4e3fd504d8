//! The conformance suite, run against every backend.

mod common;

use common::conformance;

#[test]
fn local_std_fs() {
    conformance(&common::local_std);
}

#[test]
fn local_sim_fs() {
    conformance(&common::local_sim);
}

#[test]
fn object_store_in_memory() {
    conformance(&common::in_memory);
}

#[test]
fn object_store_moto_s3() {
    conformance(&common::s3);
    // The objects really are on the S3 server, under the prefix, byte for byte.
    let b = common::s3();
    let id = sluice_checkpoint::CheckpointId(42);
    b.store.put_checkpoint(id, b"on the server").unwrap();
    let loc = b.store.location();
    let key = loc.strip_prefix("s3://").unwrap();
    let resp = common::moto()
        .request("GET", &format!("/{key}/{}", id.file_name()), &[], b"")
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body, b.raw(&id.file_name()));
    assert!(resp.body.ends_with(b"on the server"));
}

#[test]
fn rocksdb() {
    conformance(&common::rocks);
}
