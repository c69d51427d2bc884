//! Crash points for the fault suite (`crates/torture`), compiled in only with the cargo feature
//! `failpoints` (tikv's `fail` crate). Without the feature the `failpoint!` macro (defined at
//! the crate root, so that it exists either way) expands to nothing, so production builds
//! carry no trace of them.
//!
//! Points are armed per process through the `FAILPOINTS` environment variable, read once at the
//! first point reached: `name=actions` pairs separated by `;`, with the `fail` crate's actions
//! (`1*return`, `25%return`, `panic`, `sleep(100)`, `off`...). `return` is this module's crash:
//! the process exits at once with [`EXIT_CODE`] (no destructor, no sync, no shutdown; what the
//! kernel already holds stays, as after a SIGKILL), so a suite can tell a fired point from any
//! other exit.
//!
//! | point | where |
//! |---|---|
//! | `log-sync-before` | the sync ticket, before the log's fdatasync |
//! | `log-sync-after` | the sync ticket, after the fdatasync, before the ticket's other file work and before anyone learns the entries are durable |
//! | `log-before-hard-state` | `Storage::set_hard_state`: the entries before it are written to the file (not synced), the hard state is not |
//!
//! The server adds points of its own through the same macro (`snapshot-chunk-written`,
//! `snapshot-sealed-before-step`, `kv-put-applied-before-reply`).

use std::sync::Once;

/// The exit code of a process that a `return` action crashed.
pub const EXIT_CODE: i32 = 86;

/// The environment variable that arms points.
pub const ENV: &str = "FAILPOINTS";

fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let Ok(spec) = std::env::var(ENV) else { return };
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, actions)) = part.split_once('=') else {
                eprintln!("failpoints: ignoring {part:?} (expected NAME=ACTIONS)");
                continue;
            };
            match fail::cfg(name.trim(), actions.trim()) {
                Ok(()) => eprintln!("failpoints: armed {}={}", name.trim(), actions.trim()),
                Err(e) => eprintln!("failpoints: cannot arm {part:?}: {e}"),
            }
        }
    });
}

/// Evaluates point `name`: with a `return` action, runs `before_crash` and exits with
/// [`EXIT_CODE`]; other actions do what the `fail` crate says (panic, sleep...).
pub fn hit(name: &str, before_crash: impl FnOnce()) {
    setup();
    fail::fail_point!(name, |_| {
        before_crash();
        eprintln!("failpoint {name}: crashing (exit {EXIT_CODE})");
        std::process::exit(EXIT_CODE)
    });
}
