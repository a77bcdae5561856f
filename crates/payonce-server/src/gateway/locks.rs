//! Per-order in-process queues. Duplicate requests for one order on one instance wait here for
//! the first to finish, then find its result in the database (coalescing). This is only an
//! accelerator: across instances the database's constraints decide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct OrderLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl OrderLocks {
    /// Waits up to `wait` for the order's turn. Returns the guard and whether it had to wait
    /// (another request for the same order was running), or `None` on timeout.
    pub async fn lock(
        &self,
        order_id: &str,
        wait: Duration,
    ) -> Option<(OwnedMutexGuard<()>, bool)> {
        let m = {
            let mut map = self.map.lock().unwrap();
            if map.len() > 4096 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(order_id).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(order_id.to_owned(), Arc::downgrade(&m));
                    m
                }
            }
        };
        if let Ok(g) = m.clone().try_lock_owned() {
            return Some((g, false));
        }
        tokio::time::timeout(wait, m.lock_owned())
            .await
            .ok()
            .map(|g| (g, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_caller_waits_then_times_out() {
        let locks = OrderLocks::default();
        let (g, waited) = locks.lock("o", Duration::from_millis(10)).await.unwrap();
        assert!(!waited);
        assert!(locks.lock("o", Duration::from_millis(20)).await.is_none());
        assert!(
            locks
                .lock("other", Duration::from_millis(20))
                .await
                .is_some()
        );
        drop(g);
        let (_, waited) = locks.lock("o", Duration::from_millis(20)).await.unwrap();
        assert!(!waited);
    }
}
