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

#[test]
fn open_location_s3_url_reaches_the_server() {
    let moto = common::moto();
    let env = sluice_testkit::s3_env(moto, common::BUCKET);
    let url = format!("s3://{}/via-url/job-{}", common::BUCKET, std::process::id());
    let store = sluice_checkpoint::open_location_with(&url, &env).unwrap();
    assert_eq!(store.location(), url);
    let id = sluice_checkpoint::CheckpointId(9);
    assert_eq!(
        store.put_checkpoint(id, b"url").unwrap(),
        sluice_checkpoint::PutOutcome::Published
    );
    let key = url.strip_prefix("s3://").unwrap();
    let resp = moto
        .request("GET", &format!("/{key}/{}", id.file_name()), &[], b"")
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(resp.body.ends_with(b"url"));
    // A bucket that does not exist: an error that names the object, not a panic.
    let err = sluice_checkpoint::open_location_with("s3://no-such-bucket/x", &env)
        .unwrap()
        .put_checkpoint(id, b"x")
        .unwrap_err();
    assert!(err.to_string().contains("s3://no-such-bucket/x"), "{err}");
}

#[test]
fn open_location_rocksdb_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rocksdb://{}", dir.path().join("db").display());
    let store = sluice_checkpoint::open_location(&url).unwrap();
    store
        .put_checkpoint(sluice_checkpoint::CheckpointId(1), b"r")
        .unwrap();
    drop(store);
    let store = sluice_checkpoint::open_location(&url).unwrap();
    let r = store
        .read_newest(sluice_checkpoint::StartMode::RequireCheckpoint)
        .unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"r");
}
