//! Change notification for configuration files.
//!
//! Kubernetes mounts ConfigMaps and Secrets as symlinks into a `..data`
//! directory that is replaced by an atomic rename, so watching the file
//! itself misses updates. The parent directory is watched instead; events
//! only say "something may have changed" and callers compare content digests.
//! A slow poll backs the watch up in case an event is lost.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches the directories of some files and reports possible changes.
pub struct FileWatcher {
    _watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
    debounce: Duration,
    poll: Duration,
}

impl FileWatcher {
    /// Watches the parent directory of every path. `debounce` is the quiet
    /// time awaited after an event; `poll` the longest wait without one.
    pub fn new(
        paths: &[PathBuf],
        debounce: Duration,
        poll: Duration,
    ) -> Result<Self, notify::Error> {
        let names: BTreeSet<OsString> = paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect();
        // Capacity 1: a pending notification already means "check again".
        let (tx, events) = mpsc::channel(1);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            if let Ok(event) = event
                && is_relevant(&event, &names)
            {
                let _ = tx.try_send(());
            }
        })?;
        let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| parent_dir(p)).collect();
        for dir in dirs {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        Ok(Self {
            _watcher: watcher,
            events,
            debounce,
            poll,
        })
    }

    /// Waits until the files may have changed: an event followed by
    /// `debounce` of quiet, or the poll interval.
    pub async fn changed(&mut self) {
        let _ = tokio::time::timeout(self.poll, self.events.recv()).await;
        // Editors and kubelet write in several steps; wait for them to settle.
        while let Ok(Some(())) = tokio::time::timeout(self.debounce, self.events.recv()).await {}
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn is_relevant(event: &Event, names: &BTreeSet<OsString>) -> bool {
    // Our own reads must not wake us up again.
    if matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    ) {
        return false;
    }
    event.paths.iter().any(|path| {
        path.file_name()
            .is_some_and(|name| names.contains(name) || name.to_string_lossy().starts_with(".."))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_symlink_swap_in_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("policies.yml");
        std::fs::write(dir.path().join("v1.yml"), "a").unwrap();
        std::os::unix::fs::symlink("v1.yml", &target).unwrap();
        let mut watcher = FileWatcher::new(
            std::slice::from_ref(&target),
            Duration::from_millis(50),
            Duration::from_secs(30),
        )
        .unwrap();
        std::fs::write(dir.path().join("v2.yml"), "b").unwrap();
        std::os::unix::fs::symlink("v2.yml", dir.path().join("tmp-link")).unwrap();
        std::fs::rename(dir.path().join("tmp-link"), &target).unwrap();
        let started = std::time::Instant::now();
        watcher.changed().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the event, not the poll"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "b");
    }
}
