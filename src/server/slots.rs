//! Upload slots, shared fairly: the server runs at most `--max-concurrent-puts` uploads at once,
//! and one caller at most `--max-puts-per-caller` of them, so that one caller (trickling
//! uploads, or just many) cannot take every slot while others wait. A put that finds no slot
//! waits a moment ([`UPLOAD_SLOT_WAIT`](crate::server::config::UPLOAD_SLOT_WAIT)) in line
//! (first come, first served) before it is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Who an upload slot is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SlotHolder {
    /// A user, on a server with users.
    User(String),
    /// A peer address, on a server without users (or a caller with no name): an IPv4
    /// address, or an IPv6 address's /64 network (one host usually holds a whole /64).
    Address(IpAddr),
    /// A caller with neither (a server embedded without a network peer).
    Unknown,
}

/// The upload slots of a server.
#[derive(Debug)]
pub struct UploadSlots {
    all: Arc<Semaphore>,
    total: usize,
    per_caller: usize,
    wait: Duration,
    /// Each caller's slots, while it holds or waits for one.
    callers: Mutex<HashMap<SlotHolder, Arc<Semaphore>>>,
}

/// A slot held by an upload; given back when dropped.
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    holder: SlotHolder,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl UploadSlots {
    /// `total` slots, at most `per_caller` of them to one caller (at least one); a put waits
    /// up to `wait`.
    pub fn new(total: usize, per_caller: usize, wait: Duration) -> Self {
        let per_caller = per_caller.max(1);
        Self {
            all: Arc::new(Semaphore::new(total)),
            total,
            per_caller,
            wait,
            callers: Mutex::default(),
        }
    }

    /// A slot for `holder`, once its own and the server's have room.
    ///
    /// # Errors
    /// [`Error::TooManyUploadsFromCaller`] if the caller's uploads left no room within the
    /// wait; [`Error::TooManyUploads`] if the server's did.
    pub async fn acquire(self: &Arc<Self>, holder: SlotHolder) -> Result<UploadSlot> {
        let own = Arc::clone(
            self.lock()
                .entry(holder.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_caller))),
        );
        // Made now, so that the caller's entry is forgotten however this ends.
        let mut slot = UploadSlot {
            slots: Arc::clone(self),
            holder,
            permits: None,
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        // Neither semaphore is ever closed. `own` goes before `slot` whatever happens, so
        // that the slot's drop sees whether anyone else holds the caller's entry.
        let mine = tokio::time::timeout_at(deadline, Arc::clone(&own).acquire_owned()).await;
        drop(own);
        let Ok(Ok(mine)) = mine else {
            return Err(Error::TooManyUploadsFromCaller {
                limit: self.per_caller,
            });
        };
        let Ok(Ok(server)) =
            tokio::time::timeout_at(deadline, Arc::clone(&self.all).acquire_owned()).await
        else {
            return Err(Error::TooManyUploads { limit: self.total });
        };
        slot.permits = Some((mine, server));
        Ok(slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SlotHolder, Arc<Semaphore>>> {
        // Nothing panics while it is held: consistent even if poisoned.
        self.callers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.permits.take();
        let mut callers = self.slots.lock();
        // Only the map holds it: nobody holds or waits for one of this caller's slots.
        if callers
            .get(&self.holder)
            .is_some_and(|own| Arc::strong_count(own) == 1)
        {
            callers.remove(&self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> SlotHolder {
        SlotHolder::User(name.into())
    }

    #[tokio::test(start_paused = true)]
    async fn one_caller_takes_at_most_its_share_and_others_still_find_slots() {
        let slots = Arc::new(UploadSlots::new(4, 2, Duration::from_secs(2)));
        let mallory: Vec<_> = [
            slots.acquire(user("mallory")).await,
            slots.acquire(user("mallory")).await,
        ]
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let start = tokio::time::Instant::now();
        let third = slots.acquire(user("mallory")).await.unwrap_err();
        assert!(
            matches!(third, Error::TooManyUploadsFromCaller { limit: 2 }),
            "{third}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2), "waited its moment");
        let alice = slots.acquire(user("alice")).await.unwrap();
        let bob = slots.acquire(user("bob")).await.unwrap();
        // The server is full: a fourth caller waits, and gets the first slot given back.
        let carol = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire(user("carol")).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!carol.is_finished());
        drop(alice);
        carol.await.unwrap().unwrap();
        let full = slots.acquire(user("dave")).await;
        assert!(full.is_ok(), "carol's slot came back");
        drop((mallory, bob, full));
        assert!(
            slots.lock().is_empty(),
            "nothing kept for callers without slots"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_server_refuses_after_the_wait() {
        let slots = Arc::new(UploadSlots::new(1, 1, Duration::from_secs(2)));
        let held = slots.acquire(user("a")).await.unwrap();
        let err = slots.acquire(user("b")).await.unwrap_err();
        assert!(matches!(err, Error::TooManyUploads { limit: 1 }), "{err}");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        drop(held);
        assert!(slots.lock().is_empty());
    }
}
