//! Opening an `ObjectStore` from a URL.
//!
//! | URL                    | store                                                        |
//! |------------------------|--------------------------------------------------------------|
//! | `file:///abs/path`     | `LocalFileSystem` rooted at the path (created if missing)    |
//! | `memory://`            | `InMemory` (one fresh store per call)                        |
//! | `s3://bucket[/prefix]` | `AmazonS3`, wrapped in a `PrefixStore` when a prefix is given |
//!
//! For S3 the builder starts from the environment (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...), then
//! applies every `Some` field of [`S3Options`] over it. Requests use path-style
//! addressing unless `virtual_hosted_style` (or `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`) says
//! otherwise, since local S3-compatible servers need path style. The S3 client retries
//! throttling, server errors and connection failures itself: up to [`S3_MAX_RETRIES`]
//! times with exponential backoff from 100 ms, for at most [`S3_RETRY_TIMEOUT`] per request.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use url::Url;

use crate::StorageError;

/// Retries the S3 client makes of one request on throttling, 5xx and connection errors.
pub const S3_MAX_RETRIES: usize = 3;
/// Upper bound on the time the S3 client spends retrying one request.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Explicit S3 settings; each `Some` overrides the matching `AWS_*` environment variable.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` for a local server.
    pub endpoint: Option<String>,
    /// Region; the S3 client defaults to `us-east-1`.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`); default false = path style.
    pub virtual_hosted_style: Option<bool>,
}

fn invalid(url: &str, reason: impl Into<String>) -> StorageError {
    StorageError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// Opens an object store from a URL (see the module docs for the schemes).
///
/// Unknown schemes or malformed URLs give [`StorageError::InvalidUrl`] naming the URL.
pub fn open_object_store(url: &str, s3: &S3Options) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let parsed = Url::parse(url).map_err(|e| invalid(url, e.to_string()))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            url,
            "query strings and fragments are not supported",
        ));
    }
    match parsed.scheme() {
        "file" => open_file(url, &parsed),
        "memory" => {
            let host_empty = parsed.host_str().is_none_or(str::is_empty);
            let path_empty = parsed.path().is_empty() || parsed.path() == "/";
            if !host_empty || !path_empty {
                return Err(invalid(url, "memory:// takes no host or path"));
            }
            Ok(Arc::new(InMemory::new()))
        }
        "s3" => open_s3(url, &parsed, s3),
        other => Err(invalid(
            url,
            format!(
                "unsupported scheme {other:?}; expected file:///abs/path, memory:// or s3://bucket[/prefix]"
            ),
        )),
    }
}

fn open_file(url: &str, parsed: &Url) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match parsed.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(invalid(
                url,
                format!("file URLs need an absolute path (file:///abs/path), not host {host:?}"),
            ));
        }
    }
    let dir = parsed
        .to_file_path()
        .map_err(|()| invalid(url, "not a local absolute path"))?;
    std::fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDir {
        path: dir.display().to_string(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|source| StorageError::Backend {
            op: "open",
            key: url.to_owned(),
            source,
        })?
        .with_automatic_cleanup(true);
    Ok(Arc::new(store))
}

fn open_s3(url: &str, parsed: &Url, s3: &S3Options) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let bucket = match parsed.host_str() {
        Some(b) if !b.is_empty() => b,
        _ => return Err(invalid(url, "missing bucket name (s3://bucket[/prefix])")),
    };
    let prefix =
        Path::from_url_path(parsed.path()).map_err(|e| invalid(url, format!("bad prefix: {e}")))?;

    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: S3_MAX_RETRIES,
            retry_timeout: S3_RETRY_TIMEOUT,
        });
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(id) = &s3.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(allow) = s3.allow_http {
        builder = builder.with_allow_http(allow);
    }
    if let Some(vhost) = s3.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(vhost);
    }
    let store = builder
        .build()
        .map_err(|e| invalid(url, format!("cannot configure S3: {e}")))?;
    if prefix.as_ref().is_empty() {
        Ok(Arc::new(store))
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match open_object_store(url, &S3Options::default()) {
            Ok(_) => panic!("{url} opened"),
            Err(e) => {
                assert!(matches!(e, StorageError::InvalidUrl { .. }), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn bad_urls_name_the_url() {
        assert!(err("ftp://x/y").contains("ftp://x/y"));
        assert!(err("ftp://x/y").contains("unsupported scheme"));
        assert!(err("not a url").contains("not a url"));
        assert!(err("s3://").contains("bucket"));
        assert!(err("memory://foo").contains("memory://"));
        assert!(err("file://relative/dir").contains("absolute"));
        assert!(err("s3://b/p?x=1").contains("query"));
    }

    #[test]
    fn opens_memory_file_and_s3() {
        open_object_store("memory://", &S3Options::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nested/root");
        let url = format!("file://{}", root.display());
        open_object_store(&url, &S3Options::default()).unwrap();
        assert!(root.is_dir());
        // Building an S3 client makes no request.
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("a".into()),
            secret_access_key: Some("b".into()),
            allow_http: Some(true),
            virtual_hosted_style: None,
        };
        let s = open_object_store("s3://bucket/some/prefix", &opts).unwrap();
        assert!(format!("{s:?}").contains("PrefixStore"), "{s:?}");
        let s = open_object_store("s3://bucket", &opts).unwrap();
        assert!(!format!("{s:?}").contains("PrefixStore"), "{s:?}");
    }
}
