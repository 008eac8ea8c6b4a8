//! Where datasets live: a local folder or an S3-compatible object store, chosen by one URL.
//!
//! - a path (`./pmi-data`, `/data/pmi`) or `file:///data/pmi`: a local folder (created if
//!   missing);
//! - `s3://bucket/prefix`: S3, MinIO or any S3-compatible server. Endpoint, region and
//!   credentials come from the standard `AWS_*` environment variables (`AWS_ENDPOINT_URL`,
//!   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a
//!   plain-HTTP endpoint on loopback), as every other S3 tool reads them.
//!
//! Both go through `object_store`, so the Parquet readers have one code path, and so do the
//! writers but for one step: the Parquet sink writes the files of a local store itself, to
//! write them around the page cache ([`Store::local_file`] names them).
//! Its calls are async; the readers and writers that use a [`Store`] run on their own
//! threads (never on a timely worker's) and wait on [`Store::block_on`], which drives them
//! on one small shared tokio runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// Errors of the object store, naming the URL or object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL cannot be used.
    #[error("store url `{url}`: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A call to the store failed.
    #[error("{location}: {source}")]
    Object {
        /// The URL of the object or prefix.
        location: String,
        /// The error.
        source: object_store::Error,
    },
}

impl StoreError {
    /// A bad URL is the user's to fix; the store itself is external.
    pub fn class(&self) -> pmi_core::ErrorClass {
        match self {
            StoreError::Url { .. } => pmi_core::ErrorClass::User,
            StoreError::Object { .. } => pmi_core::ErrorClass::External,
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Object {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}

/// A folder in a local file system or an object store: the store and a prefix in it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// For display: `s3://bucket/prefix` or the local folder.
    base: String,
    /// The root folder of a local store (objects are relative to it).
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

/// The tokio runtime that drives object store calls for [`Store::block_on`].
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pmi-store")
            .enable_all()
            .build()
            .expect("the object store runtime starts")
    })
}

impl Store {
    /// Opens the store a URL or path names (see the module docs).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |message: String| StoreError::Url {
            url: url.to_owned(),
            message,
        };
        if let Some(rest) = url.strip_prefix("s3://").or(url.strip_prefix("s3a://")) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            // A region is required by the signer; S3-compatible servers accept any.
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                builder = builder.with_region("us-east-1");
            }
            let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
            let prefix = ObjectPath::parse(prefix.trim_end_matches('/'))
                .map_err(|e| bad(format!("prefix: {e}")))?;
            return Ok(Store {
                inner: Arc::new(s3),
                base: format!("s3://{bucket}"),
                prefix,
                local: None,
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(bad(
                "expected a folder, file:///folder or s3://bucket/prefix".into(),
            ));
        }
        let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        Store::local(&path)
    }

    /// A local folder (created if missing).
    pub fn local(path: &Path) -> Result<Store, StoreError> {
        let url = path.display().to_string();
        std::fs::create_dir_all(path).map_err(|e| StoreError::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let root = std::fs::canonicalize(path).map_err(|e| StoreError::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| StoreError::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Ok(Store {
            inner: Arc::new(fs),
            prefix: ObjectPath::default(),
            base: root.display().to_string(),
            local: Some(root),
        })
    }

    /// Whether `text` names an object store rather than a local path.
    pub fn is_remote(text: &str) -> bool {
        text.starts_with("s3://") || text.starts_with("s3a://")
    }

    /// The folder `name` (one or more `/`-separated parts) inside this one.
    pub fn child(&self, name: &str) -> Store {
        let mut prefix = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            prefix = prefix.clone().join(part);
        }
        Store {
            inner: self.inner.clone(),
            prefix,
            base: self.base.clone(),
            local: self.local.clone(),
        }
    }

    /// The object `name` inside this folder.
    pub fn object(&self, name: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// The underlying store (paths from [`Store::object`]).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The folder in the local file system, for a local store.
    pub fn local_path(&self) -> Option<PathBuf> {
        self.local
            .as_ref()
            .map(|root| root.join(self.prefix.as_ref()))
    }

    /// The file of object `object` (a path from [`Store::object`]), for a local store.
    pub fn local_file(&self, object: &ObjectPath) -> Option<PathBuf> {
        self.local.as_ref().map(|root| root.join(object.as_ref()))
    }

    /// The folder as a URL or path, for messages.
    pub fn url(&self) -> String {
        if let Some(l) = self.local_path() {
            return l.display().to_string();
        }
        if self.prefix.as_ref().is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, self.prefix)
        }
    }

    /// The URL of an object, for messages.
    pub fn describe(&self, object: &ObjectPath) -> String {
        match self.local_file(object) {
            Some(file) => file.display().to_string(),
            None => format!("{}/{}", self.base, object),
        }
    }

    fn err(&self, object: &ObjectPath) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let location = self.describe(object);
        move |source| StoreError::Object { location, source }
    }

    /// Runs an object store future to completion from a thread outside the runtime.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        runtime().block_on(future)
    }

    /// Every object under this folder (recursively), sorted by path.
    pub fn list(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = self.prefix.clone();
        let mut all: Vec<ObjectMeta> =
            Store::block_on(self.inner.list(Some(&prefix)).try_collect())
                .map_err(self.err(&prefix))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// Metadata of one object.
    pub fn head(&self, object: &ObjectPath) -> Result<ObjectMeta, StoreError> {
        Store::block_on(self.inner.head(object)).map_err(self.err(object))
    }

    /// The whole object.
    pub fn get(&self, object: &ObjectPath) -> Result<bytes::Bytes, StoreError> {
        Store::block_on(async { self.inner.get(object).await?.bytes().await })
            .map_err(self.err(object))
    }

    /// Writes a whole object atomically (readers see the old object or the new one).
    pub fn put(&self, object: &ObjectPath, data: bytes::Bytes) -> Result<(), StoreError> {
        Store::block_on(self.inner.put(object, data.into()))
            .map(|_| ())
            .map_err(self.err(object))
    }

    /// Moves an object (a rename in a file system; copy and delete in S3).
    pub fn rename(&self, from: &ObjectPath, to: &ObjectPath) -> Result<(), StoreError> {
        Store::block_on(self.inner.rename(from, to)).map_err(self.err(to))
    }

    /// Deletes an object; a missing one is not an error.
    pub fn delete(&self, object: &ObjectPath) -> Result<(), StoreError> {
        match Store::block_on(self.inner.delete(object)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(object)(e)),
        }
    }
}

/// Every `*.parquet` object a URL names, whole, in name order: the object itself when the
/// URL ends in `.parquet`, else every one under the prefix (names with a part starting
/// with `_` or `.` skipped). For small datasets read whole (ground truth, training
/// tables); telemetry is read by row group instead (`parquet_in`).
pub fn fetch_parquet(url: &str) -> Result<Vec<(String, bytes::Bytes)>, StoreError> {
    if url.ends_with(".parquet") {
        let cut = url.rfind('/').unwrap_or(0);
        let folder = Store::open(&url[..cut])?;
        let object = folder.object(&url[cut + 1..]);
        let bytes = folder.get(&object)?;
        return Ok(vec![(url.to_owned(), bytes)]);
    }
    let store = Store::open(url)?;
    let mut out = Vec::new();
    for meta in store.list()? {
        let name = meta.location.as_ref();
        let hidden = name
            .split('/')
            .any(|p| p.starts_with('_') || p.starts_with('.'));
        if !hidden && name.ends_with(".parquet") {
            out.push((store.describe(&meta.location), store.get(&meta.location)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_puts_lists_renames_and_names_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("out").to_str().unwrap()).unwrap();
        let features = store.child("features");
        let staged = features.object("_staging/a.tmp");
        features
            .put(&staged, bytes::Bytes::from_static(b"x"))
            .unwrap();
        let fin = features.object("date=2026-01-01/a.parquet");
        features.rename(&staged, &fin).unwrap();
        let listed: Vec<String> = features
            .list()
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(listed, vec!["features/date=2026-01-01/a.parquet"]);
        assert!(dir
            .path()
            .join("out/features/date=2026-01-01/a.parquet")
            .exists());
        assert!(features
            .describe(&fin)
            .ends_with("out/features/date=2026-01-01/a.parquet"));
        assert!(features.head(&staged).unwrap_err().is_not_found());
        features.delete(&staged).unwrap();
    }

    #[test]
    fn bad_urls_are_named() {
        let e = Store::open("ftp://x/y").unwrap_err();
        assert!(e.to_string().contains("ftp://x/y"), "{e}");
        let e = Store::open("s3:///prefix").unwrap_err();
        assert!(e.to_string().contains("no bucket"), "{e}");
    }
}
