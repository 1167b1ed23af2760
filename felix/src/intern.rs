//! Reference-counted interning of the few distinct values a million routes share.
//!
//! A ToR's million routes go through a handful of next hops: the route maps hold a 4-byte
//! [`Id`] per route instead of a 32-byte [`crate::route::RouteSpec`] or a heap-allocated hop
//! list, and each distinct value is stored once. Counts are exact, so a value no route uses
//! any more is freed (nodes come and go for years; their hops must not pile up).

use std::hash::Hash;
use std::num::NonZeroU32;

use crate::fasthash::FastMap;

/// The handle of an interned value; valid in the [`Interner`] that issued it while counted.
/// Slot index + 1, so that an `Option<Id>` is 4 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(NonZeroU32);

impl Id {
    fn new(slot: usize) -> Id {
        // More than 4 billion distinct values cannot come from one table's routes (each
        // holds at most one), so the index fits.
        Id(NonZeroU32::MIN.saturating_add(u32::try_from(slot).unwrap_or(u32::MAX)))
    }

    fn slot(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// Distinct values with a use count each.
#[derive(Debug, Clone)]
pub struct Interner<T> {
    /// Slot per id: the value and its count (`None` once freed, then on `free`).
    slots: Vec<Option<(T, u32)>>,
    index: FastMap<T, Id>,
    free: Vec<u32>,
}

// Not derived: that would ask `T: Default`.
impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            slots: Vec::new(),
            index: FastMap::default(),
            free: Vec::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Interner<T> {
    /// Counts one more use of `v`, returning its id.
    pub fn intern(&mut self, v: T) -> Id {
        if let Some(&id) = self.index.get(&v) {
            self.retain(id);
            return id;
        }
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some((v.clone(), 1));
                Id::new(i as usize)
            }
            None => {
                self.slots.push(Some((v.clone(), 1)));
                Id::new(self.slots.len() - 1)
            }
        };
        self.index.insert(v, id);
        id
    }

    /// [`Self::intern`] by a borrowed form of the value (a slice for a boxed slice, say):
    /// `make` builds the owned value only when it is new, so a known value costs no
    /// allocation.
    pub fn intern_by<Q>(&mut self, q: &Q, make: impl FnOnce(&Q) -> T) -> Id
    where
        T: std::borrow::Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        match self.index.get(q) {
            Some(&id) => {
                self.retain(id);
                id
            }
            None => self.intern(make(q)),
        }
    }

    /// Counts one more use of an id that is in use.
    pub fn retain(&mut self, id: Id) {
        if let Some(Some((_, n))) = self.slots.get_mut(id.slot()) {
            *n += 1;
        }
    }

    /// Counts one use of `id` less, freeing the value at zero.
    pub fn release(&mut self, id: Id) {
        let Some(slot) = self.slots.get_mut(id.slot()) else {
            return;
        };
        let Some((_, n)) = slot.as_mut() else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            if let Some((v, _)) = slot.take() {
                self.index.remove(&v);
            }
            self.free.push(id.slot() as u32);
        }
    }

    /// The value of `id`. Ids come only from this interner and are released by their
    /// holder, so a miss is a bug in the caller: it panics in debug builds and reads as
    /// `None` (an absent route, rewritten at the next pass) in release builds.
    pub fn get(&self, id: Id) -> Option<&T> {
        let v = self
            .slots
            .get(id.slot())
            .and_then(|s| s.as_ref())
            .map(|(v, _)| v);
        debug_assert!(v.is_some(), "interned id {id:?} not in use");
        v
    }

    /// Distinct values in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no value is in use.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_share_and_free() {
        let mut i: Interner<String> = Interner::default();
        let a = i.intern("a".into());
        let b = i.intern("b".into());
        assert_eq!(i.intern("a".into()), a);
        assert_ne!(a, b);
        assert_eq!(i.len(), 2);
        i.release(a);
        assert_eq!(i.get(a).map(String::as_str), Some("a"), "one use left");
        i.release(a);
        assert_eq!(i.len(), 1);
        assert!(!i.index.contains_key("a"));
        // The freed slot is reused.
        let c = i.intern("c".into());
        assert_eq!(c, a);
        i.retain(b);
        i.release(b);
        assert_eq!(i.get(b).map(String::as_str), Some("b"));
        i.release(b);
        i.release(c);
        assert_eq!(i.len(), 0);
        assert_eq!(std::mem::size_of::<Option<Id>>(), 4);
    }
}
