//! The model registry: a folder of versions, one marked current.
//!
//! ```text
//! <root>/                  (default ./pmi-data/models)
//!   CURRENT                the current version's name, e.g. `v0003`
//!   v0001/ model.json      the model (format in `crate::ensemble`)
//!          metrics.json    the evaluation on held-out rows
//!          report.txt      the same, for people; plots as *.svg; training.json, …
//!   v0002/ …
//! ```
//!
//! Publishing is crash-safe: a version is written under a temporary name and renamed into
//! place whole (a reader never sees half a version), and `CURRENT` is replaced by rename
//! too. Two trainers publishing at once get different versions (creating the folder is the
//! claim). Scorers watch `CURRENT` to pick up a new model without restarting.

use std::path::{Path, PathBuf};

use crate::ensemble::Ensemble;
use crate::ModelError;

/// Name of the file holding the current version.
pub const CURRENT: &str = "CURRENT";
/// Name of the model file in a version folder.
pub const MODEL_FILE: &str = "model.json";

/// A registry folder.
#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
}

fn is_version(name: &str) -> bool {
    name.len() > 1 && name.starts_with('v') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

impl Registry {
    /// The registry at `root` (created on first publish).
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a version.
    pub fn path_of(&self, version: &str) -> PathBuf {
        self.root.join(version)
    }

    /// Published versions, oldest first.
    pub fn versions(&self) -> Result<Vec<String>, ModelError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModelError::io(self.root.display(), e)),
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(MODEL_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_version(n))
            .collect();
        out.sort_by_key(|v| v[1..].parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    /// The current version, if one is marked.
    pub fn current(&self) -> Result<Option<String>, ModelError> {
        let path = self.root.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let v = s.trim().to_owned();
                if !is_version(&v) {
                    return Err(ModelError::Format {
                        path: path.display().to_string(),
                        message: format!("`{v}` is not a version name like v0001"),
                    });
                }
                Ok(Some(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModelError::io(path.display(), e)),
        }
    }

    /// Marks `version` current (atomically).
    pub fn set_current(&self, version: &str) -> Result<(), ModelError> {
        if !self.path_of(version).join(MODEL_FILE).is_file() {
            return Err(ModelError::data(
                "version",
                format!("{version} is not in the registry {}", self.root.display()),
            ));
        }
        let tmp = self.root.join(format!(".{CURRENT}.{}", std::process::id()));
        std::fs::write(&tmp, format!("{version}\n"))
            .map_err(|e| ModelError::io(tmp.display(), e))?;
        let path = self.root.join(CURRENT);
        std::fs::rename(&tmp, &path).map_err(|e| ModelError::io(path.display(), e))
    }

    /// Loads a version's model. The folder's name is its version (a model file copied into
    /// a new version folder takes that folder's version).
    pub fn load(&self, version: &str) -> Result<Ensemble, ModelError> {
        let mut model = Ensemble::load(&self.path_of(version).join(MODEL_FILE))?;
        model.set_version(version.to_owned());
        Ok(model)
    }

    /// Loads the current model, if one is marked.
    pub fn load_current(&self) -> Result<Option<Ensemble>, ModelError> {
        match self.current()? {
            Some(v) => self.load(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Claims the next version name by creating its (empty) folder, so that files written
    /// before publishing (metrics, report) can already name it. An empty folder is not a
    /// version ([`Registry::versions`] lists folders with a model); two trainers never get
    /// the same name.
    pub fn reserve(&self) -> Result<String, ModelError> {
        std::fs::create_dir_all(&self.root).map_err(|e| ModelError::io(self.root.display(), e))?;
        loop {
            let highest = std::fs::read_dir(&self.root)
                .map_err(|e| ModelError::io(self.root.display(), e))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| is_version(n))
                .filter_map(|n| n[1..].parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            let version = format!("v{:04}", highest + 1);
            match std::fs::create_dir(self.path_of(&version)) {
                Ok(()) => return Ok(version),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ModelError::io(self.path_of(&version).display(), e)),
            }
        }
    }

    /// Publishes `model` with `files` (name, bytes) beside it as the next version, marks it
    /// current when `make_current`, and returns the version. Sets the model's version.
    pub fn publish(
        &self,
        model: &mut Ensemble,
        files: &[(String, Vec<u8>)],
        make_current: bool,
    ) -> Result<String, ModelError> {
        let version = self.reserve()?;
        self.publish_as(&version, model, files, make_current)?;
        Ok(version)
    }

    /// Publishes `model` and `files` as `version`, a name from [`Registry::reserve`]: they
    /// are written under a temporary name and renamed onto the reserved (empty) folder
    /// whole, so a reader never sees half a version.
    pub fn publish_as(
        &self,
        version: &str,
        model: &mut Ensemble,
        files: &[(String, Vec<u8>)],
        make_current: bool,
    ) -> Result<(), ModelError> {
        let dest = self.path_of(version);
        let empty = std::fs::read_dir(&dest)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(ModelError::data(
                "version",
                format!("{version} is not a reserved, empty version folder"),
            ));
        }
        model.set_version(version.to_owned());
        let tmp = self
            .root
            .join(format!(".publishing-{version}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(tmp.display(), e))?;
        let model_path = tmp.join(MODEL_FILE);
        std::fs::write(&model_path, model.to_json()?)
            .map_err(|e| ModelError::io(model_path.display(), e))?;
        for (name, bytes) in files {
            if name.contains('/') || name.contains('\\') || name == MODEL_FILE {
                return Err(ModelError::data("files", format!("bad file name `{name}`")));
            }
            let p = tmp.join(name);
            std::fs::write(&p, bytes).map_err(|e| ModelError::io(p.display(), e))?;
        }
        // Renaming a folder onto an empty one replaces it (POSIX).
        std::fs::rename(&tmp, &dest).map_err(|e| ModelError::io(dest.display(), e))?;
        if make_current {
            self.set_current(version)?;
        }
        Ok(())
    }
}
