//! A subject's lifecycle: how it was made, whether it was removed, how long it has idled.
//!
//! Subjects come in two classes, each with a room of its own in the registry:
//! *configured* ones (by the configuration, `configure/2` or `attach_ledger/3`: an
//! operator named them) and *dynamic* ones (created by the first call that writes,
//! whatever name a caller passes). A flood of dynamic subjects fills only the dynamic
//! room, so a configured subject always finds room.
//!
//! A subject is *closed* when the registry removes it: from then on its spool accepts
//! nothing ([`crate::subject::Subject::prepare_removal`] sets the flag under the spool's
//! lock, and every path that stores an event checks it under the same lock), so an
//! event can never land in a subject that is gone; the caller looks the name up again.
//!
//! Idleness is measured by the timer, never on the hot paths: each sweep compares the
//! subject's activity fingerprint (its counters, spool counts, depth and state word;
//! [`crate::subject::Subject::activity`]) with the one it saw last, and notes when it
//! last changed. A subject that is only read (`check_backpressure/1`) writes nothing,
//! so it counts as idle; it is at rest, and reads of a subject that is gone answer as
//! for a subject at rest.
//!
//! Memory ordering: every field is `Relaxed`. `configured` changes under the registry's
//! lock; `closed` is set and read under the spool's lock, which orders it; the idle
//! fields are written only by the sweep, which runs on one thread at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Which room of the registry a subject takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Created by the first call that writes.
    Dynamic,
    /// Named by an operator (configuration, `configure/2`, `attach_ledger/3`).
    Configured,
}

/// A subject's lifecycle state.
#[derive(Debug, Default)]
pub struct Lifecycle {
    configured: AtomicBool,
    closed: AtomicBool,
    fingerprint: AtomicU64,
    quiet_since_ms: AtomicU64,
}

impl Lifecycle {
    /// The subject's class.
    pub fn class(&self) -> Class {
        if self.configured.load(Ordering::Relaxed) {
            Class::Configured
        } else {
            Class::Dynamic
        }
    }

    /// Sets the class (the registry does, under its lock, with its room counts).
    pub fn set_class(&self, class: Class) {
        self.configured
            .store(class == Class::Configured, Ordering::Relaxed);
    }

    /// True once the registry has removed the subject.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Marks the subject removed; the caller holds the spool's lock.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Starts the idle clock at `now_ms` (creation).
    pub fn start(&self, now_ms: u64) {
        self.quiet_since_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Notes the activity `fingerprint` seen at `now_ms` and returns for how long it has
    /// not changed (0 when it just did).
    pub fn observe(&self, fingerprint: u64, now_ms: u64) -> u64 {
        if self.fingerprint.swap(fingerprint, Ordering::Relaxed) != fingerprint {
            self.quiet_since_ms.store(now_ms, Ordering::Relaxed);
            return 0;
        }
        now_ms.saturating_sub(self.quiet_since_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_restarts_when_the_fingerprint_changes() {
        let l = Lifecycle::default();
        l.start(100);
        assert_eq!(
            l.observe(0, 150),
            50,
            "an unchanged fingerprint: idle since creation"
        );
        assert_eq!(l.observe(7, 200), 0);
        assert_eq!(l.observe(7, 900), 700);
        assert_eq!(l.observe(8, 950), 0);
    }

    #[test]
    fn class_and_closing() {
        let l = Lifecycle::default();
        assert_eq!(l.class(), Class::Dynamic);
        l.set_class(Class::Configured);
        assert_eq!(l.class(), Class::Configured);
        assert!(!l.is_closed());
        l.close();
        assert!(l.is_closed());
    }
}
