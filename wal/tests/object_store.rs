//! The object-store backend: the conformance suite on the in-memory store and on a real
//! S3-compatible server (moto on loopback), one object per commit, and two writers.

mod common;

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;
use sluice_testkit::MotoServer;
use sluice_wal::{Lsn, Wal, WalError, WalOptions};

fn s3(server: &MotoServer, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_bucket_name(bucket)
            .build()
            .unwrap(),
    )
}

fn count_objects(store: &Arc<dyn ObjectStore>, prefix: &str) -> usize {
    let store = store.clone();
    let prefix = ObjPath::from(prefix);
    futures::executor::block_on(async move {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
    })
    .unwrap()
    .len()
}

#[test]
fn conformance_on_the_in_memory_store() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    common::conformance(&|| {
        Wal::open_object_store(store.clone(), "jobs/a/wal", WalOptions::default()).unwrap()
    });
}

#[test]
fn conformance_on_a_real_s3_server() {
    let server = MotoServer::start().unwrap();
    server.create_bucket("wal").unwrap();
    let store = s3(&server, "wal");
    common::conformance(&|| {
        Wal::open_object_store(store.clone(), "prefix/wal", WalOptions::default()).unwrap()
    });
}

#[test]
fn one_object_per_commit_never_one_per_record() {
    let server = MotoServer::start().unwrap();
    server.create_bucket("wal").unwrap();
    let store = s3(&server, "wal");
    let wal = Wal::open_object_store(store.clone(), "w", WalOptions::default()).unwrap();
    let records: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_le_bytes().to_vec()).collect();
    wal.append_batch(&records).unwrap();
    assert_eq!(count_objects(&store, "w"), 1);
    // Pipelined submits share one commit too.
    let subs: Vec<_> = (0..100u8).map(|i| wal.submit(&[i]).unwrap()).collect();
    wal.wait(subs.last().unwrap().lsn).unwrap();
    assert_eq!(count_objects(&store, "w"), 2);
    drop(wal);
    let wal = Wal::open_object_store(store.clone(), "w", WalOptions::default()).unwrap();
    assert_eq!(wal.next_lsn(), Lsn(600));
}

#[test]
fn a_second_writer_on_the_same_prefix_is_refused_not_silently_merged() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = Wal::open_object_store(store.clone(), "p", WalOptions::default()).unwrap();
    a.append(b"from a").unwrap();
    // b opens while a is live: both think segment 2 is next.
    let b = Wal::open_object_store(store.clone(), "p", WalOptions::default()).unwrap();
    a.append(b"a again").unwrap();
    let err = b.append(b"from b").unwrap_err();
    assert!(err.to_string().contains("another writer"), "{err}");
    assert!(matches!(b.append(b"x"), Err(WalError::Poisoned { .. })));
    let all: Vec<_> = a.iter_from(Lsn(0)).unwrap().map(|r| r.unwrap().1).collect();
    assert_eq!(all, vec![b"from a".to_vec(), b"a again".to_vec()]);
}

#[test]
fn a_dead_endpoint_is_an_error_naming_the_object() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_bucket_name("nobody")
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                retry_timeout: std::time::Duration::from_secs(1),
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let err = Wal::open_object_store(store, "x/wal", WalOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WalError::ObjectStore { .. }), "{err:?}");
    assert!(msg.contains("x/wal"), "{msg}");
}

#[test]
fn urls_are_parsed_with_clear_errors() {
    let err = Wal::open_url("s3:///nobucket", WalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("needs a bucket"), "{err}");
    let err = Wal::open_url("ftp://host/x", WalOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("unsupported WAL location"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let wal = Wal::open_url(&url, WalOptions::default()).unwrap();
    wal.append(b"x").unwrap();
}
