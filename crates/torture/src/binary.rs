//! Finding the server binary a run starts: `tenure` from this workspace's `target/`, built if
//! asked and missing, or a path given on the command line (a build with other features, or
//! etcd itself).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why no server binary could be found or built.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The path given does not name an executable file.
    #[error("{path}: not an executable file")]
    NotExecutable {
        /// The path given.
        path: PathBuf,
    },
    /// No `tenure` under `target/{debug,release}` and building was not asked for.
    #[error(
        "no tenure binary under {target}/debug or {target}/release; build one with \
         `cargo build -p tenure-server --bin tenure` or pass --tenure PATH"
    )]
    NotBuilt {
        /// The target directory searched.
        target: PathBuf,
    },
    /// The binary has no failpoints compiled in.
    #[error(
        "{path} has no failpoints (build one with `cargo build -p tenure-server --bin tenure \
         --features failpoints`)"
    )]
    NoFailpoints {
        /// The binary.
        path: PathBuf,
    },
    /// `cargo build` failed.
    #[error("`cargo build -p tenure-server --bin tenure` failed ({status})")]
    BuildFailed {
        /// How cargo exited.
        status: String,
    },
}

/// The workspace root: two levels above this crate's manifest.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| {
        // The source tree moved since the build: fall back to the working directory.
        PathBuf::from(".")
    })
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `target/` at the root.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Checks that `path` is an executable file.
pub fn check_executable(path: &Path) -> Result<PathBuf, BinaryError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path.to_path_buf()),
        _ => Err(BinaryError::NotExecutable { path: path.to_path_buf() }),
    }
}

/// The environment variable that names the tenure binary to run, over `target/`.
pub const TENURE_BIN_ENV: &str = "TENURE_BIN";

/// The environment variable that names a tenure binary built with failpoints, over
/// `target/`.
pub const TENURE_FAILPOINTS_BIN_ENV: &str = "TENURE_FAILPOINTS_BIN";

/// The name, under `target/{debug,release}/`, of the copy of a `tenure` built with the
/// `failpoints` feature.
pub const FAILPOINTS_BINARY_NAME: &str = "tenure-failpoints";

/// Whether the binary at `path` has failpoints compiled in: it holds the message the
/// failpoints module prints when it arms one (a build without the feature has no such text).
pub fn has_failpoints(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    let needle = b"failpoints: armed ";
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// A tenure binary built with the `failpoints` feature: the one `TENURE_FAILPOINTS_BIN`
/// names if set, else the newest of `target/{debug,release}/tenure-failpoints` and of the
/// `target/{debug,release}/tenure` that have failpoints (`cargo test --workspace` builds
/// `target/debug/tenure` with them: this crate's dev-dependency turns the feature on). With
/// `build`, when there is none, runs `cargo build -p tenure-server --bin tenure --features failpoints`
/// and copies the result to `target/debug/tenure-failpoints` (the build shares the target
/// directory: only the storage, replica and server crates are compiled again, and the
/// `tenure` it leaves behind behaves as any other until `FAILPOINTS` arms a point). Checked
/// with [`has_failpoints`].
pub fn locate_tenure_failpoints(build: bool) -> Result<PathBuf, BinaryError> {
    let checked = |p: PathBuf| {
        let p = check_executable(&p)?;
        if has_failpoints(&p) { Ok(p) } else { Err(BinaryError::NoFailpoints { path: p }) }
    };
    if let Some(path) = std::env::var_os(TENURE_FAILPOINTS_BIN_ENV) {
        return checked(PathBuf::from(path));
    }
    let target = target_dir();
    let newest = || {
        ["debug", "release"]
            .iter()
            .flat_map(|profile| {
                [FAILPOINTS_BINARY_NAME, "tenure"].map(|name| target.join(profile).join(name))
            })
            .filter_map(|p| {
                let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
                Some((modified, p))
            })
            .filter(|(_, p)| check_executable(p).is_ok() && has_failpoints(p))
            .max()
            .map(|(_, p)| p)
    };
    if let Some(p) = newest() {
        // Checked by `newest`.
        return Ok(p);
    }
    if !build {
        return Err(BinaryError::NotBuilt { target });
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "-p", "tenure-server", "--bin", "tenure", "--features", "failpoints"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| BinaryError::BuildFailed { status: e.to_string() })?;
    if !status.success() {
        return Err(BinaryError::BuildFailed { status: status.to_string() });
    }
    let built = target.join("debug").join("tenure");
    let copy = target.join("debug").join(FAILPOINTS_BINARY_NAME);
    // Copied to a temporary name first, so that a half-written copy is never found.
    let tmp = target.join("debug").join(format!("{FAILPOINTS_BINARY_NAME}.{}", std::process::id()));
    std::fs::copy(&built, &tmp).and_then(|_| std::fs::rename(&tmp, &copy)).map_err(|e| {
        BinaryError::BuildFailed { status: format!("copying {}: {e}", built.display()) }
    })?;
    checked(copy)
}

/// The tenure binary: the one `TENURE_BIN` names if set, else the newest of
/// `target/debug/tenure` and `target/release/tenure`. With `build`, runs `cargo build -p
/// tenure-server --bin tenure` first when neither exists.
pub fn locate_tenure(build: bool) -> Result<PathBuf, BinaryError> {
    if let Some(path) = std::env::var_os(TENURE_BIN_ENV) {
        return check_executable(Path::new(&path));
    }
    let target = target_dir();
    let newest = || {
        ["debug", "release"]
            .iter()
            .map(|profile| target.join(profile).join("tenure"))
            .filter_map(|p| {
                let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
                Some((modified, p))
            })
            .max()
            .map(|(_, p)| p)
    };
    if let Some(p) = newest() {
        return check_executable(&p);
    }
    if !build {
        return Err(BinaryError::NotBuilt { target });
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "-p", "tenure-server", "--bin", "tenure"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| BinaryError::BuildFailed { status: e.to_string() })?;
    if !status.success() {
        return Err(BinaryError::BuildFailed { status: status.to_string() });
    }
    newest().ok_or(BinaryError::NotBuilt { target })
}
