//! Checkpoint locations named by a URL.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{CheckpointError, Result};
use crate::local::LocalStore;
use crate::object::ObjectCheckpointStore;
use crate::rocks::RocksStore;
use crate::store::CheckpointStore;

/// A parsed checkpoint location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A local directory (a plain path or `file://PATH`).
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: String, prefix: String },
    /// `rocksdb://PATH`.
    Rocks(PathBuf),
}

const HELP: &str = "use a path, file://PATH, s3://BUCKET/PREFIX or rocksdb://PATH";

impl Location {
    /// Parses a location URL (no I/O).
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |reason: String| CheckpointError::InvalidLocation {
            url: url.to_owned(),
            reason,
        };
        if url.trim().is_empty() {
            return Err(bad(format!("empty location; {HELP}")));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    "an s3:// URL needs a bucket, as in s3://bucket/prefix".into()
                ));
            }
            let valid_bucket = bucket.len() >= 3
                && bucket.len() <= 63
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !valid_bucket {
                return Err(bad(format!(
                    "{bucket:?} is not a valid S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(bad(format!("{prefix:?} is not a valid object prefix")));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad(format!("file:// needs a path; {HELP}")));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some(path) = url.strip_prefix("rocksdb://") {
            if path.is_empty() {
                return Err(bad(format!("rocksdb:// needs a path; {HELP}")));
            }
            return Ok(Location::Rocks(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(format!("unsupported scheme {scheme:?}; {HELP}")));
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

/// Opens the checkpoint store a URL names: a path or `file://PATH` (local directory),
/// `s3://BUCKET/PREFIX` (endpoint, region and credentials from the standard `AWS_*`
/// environment variables, e.g. `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`; plain HTTP is allowed when the endpoint is `http://`), or
/// `rocksdb://PATH`.
pub fn open_location(url: &str) -> Result<Arc<dyn CheckpointStore>> {
    open_location_with(url, &[])
}

/// [`open_location`] with S3 settings that take precedence over the environment, as
/// `(AWS_* variable name, value)` pairs (e.g. from `sluice_testkit::s3_env`).
pub fn open_location_with(
    url: &str,
    s3_overrides: &[(String, String)],
) -> Result<Arc<dyn CheckpointStore>> {
    open_location_on(url, s3_overrides, None)
}

/// [`open_location_with`] with the file system a local directory uses (`None`: the
/// process's default, `sluice_wal::fs::default_fs`).
pub fn open_location_on(
    url: &str,
    s3_overrides: &[(String, String)],
    fs: Option<Arc<dyn sluice_wal::fs::FileSystem>>,
) -> Result<Arc<dyn CheckpointStore>> {
    match Location::parse(url)? {
        Location::Local(dir) => Ok(Arc::new(match fs {
            Some(fs) => LocalStore::open_with(fs, dir)?,
            None => LocalStore::open(dir)?,
        })),
        Location::Rocks(path) => Ok(Arc::new(RocksStore::open(path)?)),
        Location::S3 { bucket, prefix } => {
            let bad = |reason: String| CheckpointError::InvalidLocation {
                url: url.to_owned(),
                reason,
            };
            let mut b = object_store::aws::AmazonS3Builder::from_env();
            let lookup = |name: &str| {
                s3_overrides
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var(name).ok())
            };
            for (k, v) in s3_overrides {
                if k == "AWS_DEFAULT_REGION" || k == "AWS_BUCKET" {
                    continue;
                }
                let key = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| bad(format!("setting {k}: {e}")))?;
                b = b.with_config(key, v);
            }
            if let Some(region) = lookup("AWS_REGION").or_else(|| lookup("AWS_DEFAULT_REGION")) {
                b = b.with_region(region);
            }
            if let Some(endpoint) = lookup("AWS_ENDPOINT_URL").or_else(|| lookup("AWS_ENDPOINT")) {
                if endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                b = b.with_endpoint(endpoint);
            }
            let store = b
                .with_bucket_name(&bucket)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let display = format!("s3://{bucket}/{prefix}");
            Ok(Arc::new(ObjectCheckpointStore::new(
                Arc::new(store),
                &prefix,
                display.trim_end_matches('/'),
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            Location::parse("/var/ckpt").unwrap(),
            Location::Local("/var/ckpt".into())
        );
        assert_eq!(
            Location::parse("file:///var/ckpt").unwrap(),
            Location::Local("/var/ckpt".into())
        );
        assert_eq!(
            Location::parse("rocksdb:///db").unwrap(),
            Location::Rocks("/db".into())
        );
        assert_eq!(
            Location::parse("s3://my-bucket/jobs/a/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "jobs/a".into()
            }
        );
        assert_eq!(
            Location::parse("s3://my-bucket").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, needle) in [
            ("", "empty location"),
            ("s3://", "needs a bucket"),
            ("s3:///x", "needs a bucket"),
            ("s3://Bad_Bucket/x", "not a valid S3 bucket"),
            ("s3://bucket/a/../b", "not a valid object prefix"),
            ("gs://bucket/x", "unsupported scheme \"gs\""),
            ("file://", "needs a path"),
            ("rocksdb://", "needs a path"),
        ] {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url:?}: {err}");
            assert!(err.contains(&format!("{url:?}")), "{url:?}: {err}");
        }
    }

    #[test]
    fn open_location_opens_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("ck").display());
        let store = open_location(&url).unwrap();
        store.put_checkpoint(crate::CheckpointId(1), b"x").unwrap();
        assert!(dir
            .path()
            .join("ck/checkpoint-00000000000000000001")
            .exists());
    }
}
