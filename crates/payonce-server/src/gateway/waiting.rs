//! One way to wait. A request that must wait for another — the same `Idempotency-Key` still
//! being answered, another prepay or close of the same order in flight on this instance or on
//! another — waits here, through one mechanism and against one [`Deadline`] read from the
//! injected `Clock`:
//!
//! - [`Waits::until`] re-checks a condition whenever the key is signalled on this instance
//!   (whoever finishes something others may be waiting for says so with [`Waits::signal`]), and
//!   at least on a short backoff, because another instance cannot signal here;
//! - [`Waits::turn`] is `until` over "nobody else on this instance holds the key": the
//!   in-process queue that keeps a thundering herd of duplicates off the database.
//!
//! None of this decides anything: the database's constraints do. Waiting only spares it work
//! and lets a duplicate answer with what the first request stored.

use payonce_core::{Clock, Timestamp};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The moment a request stops waiting, on the server's `Clock` (a test's manual clock moves it).
#[derive(Clone)]
pub struct Deadline {
    until: Timestamp,
    clock: Arc<dyn Clock>,
}

impl Deadline {
    pub fn after(clock: &Arc<dyn Clock>, wait: Duration) -> Self {
        Deadline {
            until: clock.now() + wait,
            clock: clock.clone(),
        }
    }

    pub fn passed(&self) -> bool {
        self.clock.now() >= self.until
    }

    /// What is left of the wait (zero once passed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.until.0 - self.clock.now().0).unwrap_or(0))
    }
}

/// The deadline passed before what was waited for happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the wait's deadline passed")]
pub struct TimedOut;

/// How often a waiter re-checks without a signal: soon at first (a duplicate usually lands
/// right behind the first request), then every 200 ms at most.
const FIRST_RECHECK: Duration = Duration::from_millis(5);
const MAX_RECHECK: Duration = Duration::from_millis(200);

/// Per-key wake-ups and turns, for this instance.
#[derive(Default)]
pub struct Waits {
    keys: Mutex<HashMap<String, Weak<Key>>>,
}

#[derive(Default)]
struct Key {
    changed: Notify,
    /// Someone on this instance holds the key's turn.
    held: AtomicBool,
}

impl Waits {
    fn key(&self, key: &str) -> Arc<Key> {
        let mut keys = self.keys.lock().expect("not poisoned");
        if keys.len() > 4096 {
            keys.retain(|_, k| k.strong_count() > 0);
        }
        match keys.get(key).and_then(Weak::upgrade) {
            Some(k) => k,
            None => {
                let k = Arc::new(Key::default());
                keys.insert(key.to_owned(), Arc::downgrade(&k));
                k
            }
        }
    }

    /// Wakes everyone waiting on `key` here, to check again.
    pub fn signal(&self, key: &str) {
        let k = self
            .keys
            .lock()
            .expect("not poisoned")
            .get(key)
            .and_then(Weak::upgrade);
        if let Some(k) = k {
            k.changed.notify_waiters();
        }
    }

    /// Waits until `ready` answers `Some` (or an error), checking at once, then on every signal
    /// of `key` and at least on a backoff, until `deadline`. `Ok(None)`: the deadline passed.
    /// The second value says whether it had to wait at all.
    pub async fn until<T, E, F, Fut>(
        &self,
        key: &str,
        deadline: &Deadline,
        mut ready: F,
    ) -> Result<Option<(T, bool)>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let k = self.key(key);
        let mut recheck = FIRST_RECHECK;
        let mut waited = false;
        loop {
            // Listening starts before the check, so a signal between the two is not lost.
            let changed = k.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(t) = ready().await? {
                return Ok(Some((t, waited)));
            }
            if deadline.passed() {
                return Ok(None);
            }
            waited = true;
            let pause = recheck.min(deadline.remaining());
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(pause) => {}
            }
            recheck = (recheck * 2).min(MAX_RECHECK);
        }
    }

    /// This instance's turn on `key`: one holder at a time, the others wait (until `deadline`)
    /// and go in order of wake-up when it is released.
    pub async fn turn(&self, key: &str, deadline: &Deadline) -> Result<Turn<'_>, TimedOut> {
        let k = self.key(key);
        let taken = self
            .until(key, deadline, || {
                let free = k
                    .held
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                std::future::ready(Ok::<_, std::convert::Infallible>(free.then_some(())))
            })
            .await
            .unwrap_or_else(|never| match never {});
        match taken {
            Some(((), waited)) => Ok(Turn {
                waits: self,
                key: k,
                name: key.to_owned(),
                waited,
            }),
            None => Err(TimedOut),
        }
    }
}

/// A held turn; dropping it frees the key and wakes its waiters.
pub struct Turn<'a> {
    waits: &'a Waits,
    key: Arc<Key>,
    name: String,
    /// Another request held the key when this one came.
    pub waited: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.key.held.store(false, Ordering::Release);
        self.waits.signal(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payonce_core::ManualClock;

    fn clock() -> (ManualClock, Arc<dyn Clock>) {
        let c = ManualClock::at(1_000_000);
        (c.clone(), Arc::new(c))
    }

    #[tokio::test]
    async fn a_second_caller_waits_for_the_turn_until_the_clocks_deadline() {
        let (manual, clock) = clock();
        let waits = Waits::default();
        let first = waits
            .turn("o", &Deadline::after(&clock, Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(!first.waited);
        let deadline = Deadline::after(&clock, Duration::from_secs(1));
        let second = waits.turn("o", &deadline);
        tokio::pin!(second);
        // Real time passes, the clock does not: the second still waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut second)
                .await
                .is_err()
        );
        assert!(
            waits
                .turn("other", &Deadline::after(&clock, Duration::ZERO))
                .await
                .is_ok()
        );
        manual.advance_ms(1_000);
        assert_eq!(second.await.err(), Some(TimedOut));
        drop(first);
        let again = waits
            .turn("o", &Deadline::after(&clock, Duration::ZERO))
            .await
            .unwrap();
        assert!(!again.waited);
    }

    #[tokio::test]
    async fn a_released_turn_wakes_its_waiter_at_once() {
        let (_, clock) = clock();
        let waits = Arc::new(Waits::default());
        let first = waits
            .turn("o", &Deadline::after(&clock, Duration::from_secs(5)))
            .await
            .unwrap();
        let w = waits.clone();
        let c = clock.clone();
        let second = tokio::spawn(async move {
            let t = w
                .turn("o", &Deadline::after(&c, Duration::from_secs(5)))
                .await
                .unwrap();
            t.waited
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert!(
            second.await.unwrap(),
            "the second caller waited for the first"
        );
    }

    #[tokio::test]
    async fn until_rechecks_on_a_signal_and_answers_what_became_ready() {
        let (_, clock) = clock();
        let waits = Arc::new(Waits::default());
        let flag = Arc::new(AtomicBool::new(false));
        let (w, f, c) = (waits.clone(), flag.clone(), clock.clone());
        let waiter = tokio::spawn(async move {
            w.until("k", &Deadline::after(&c, Duration::from_secs(5)), || {
                let ready = f.load(Ordering::SeqCst);
                async move { Ok::<_, ()>(ready.then_some(7)) }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        flag.store(true, Ordering::SeqCst);
        waits.signal("k");
        assert_eq!(waiter.await.unwrap(), Ok(Some((7, true))));
    }
}
