//! A global allocator wrapper that counts the bytes the process holds allocated, so that an
//! operator (and the soak) can tell memory the program still uses from memory its allocator
//! keeps mapped after the program freed it: resident size alone cannot.
//!
//! Each thread adds to one of a few cache-line-sized counters picked once per thread, so
//! threads that allocate at the same time do not contend on one line; the reader sums them.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Counters the threads spread over (a power of two).
const SHARDS: usize = 16;

#[repr(align(128))]
struct Shard(AtomicIsize);

static SHARD_BYTES: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// This thread's shard; `SHARDS` until the thread first allocates. A const initialiser
    /// and no destructor: the allocator may not allocate to reach it.
    static MY_SHARD: Cell<usize> = const { Cell::new(SHARDS) };
}

fn shard() -> &'static AtomicIsize {
    let index = MY_SHARD
        .try_with(|mine| {
            if mine.get() == SHARDS {
                mine.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            mine.get()
        })
        // A thread's last frees run after its locals are gone.
        .unwrap_or(0);
    &SHARD_BYTES[index].0
}

/// Wraps the allocator `A` and counts the bytes allocated through it and not yet freed.
#[derive(Debug)]
pub struct CountingAllocator<A> {
    inner: A,
}

impl<A> CountingAllocator<A> {
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

/// Bytes allocated through a [`CountingAllocator`] and not yet freed, by requested size (the
/// allocator's own rounding and bookkeeping not included). Zero when none is installed.
pub fn live_heap_bytes() -> u64 {
    let sum: isize = SHARD_BYTES.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged, so `A`'s
// guarantees hold; the counting touches only atomics and a const-initialised thread local.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            shard().fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            shard().fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, with its layout.
        unsafe { self.inner.dealloc(ptr, layout) };
        shard().fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shard().fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_count_until_freed_on_any_thread() {
        let counting = CountingAllocator::new(std::alloc::System);
        let layout = Layout::from_size_align(1 << 20, 8).expect("a layout");
        let before = live_heap_bytes() as i64;
        // SAFETY: a non-zero layout; the block is freed below with the same layout.
        let block = unsafe { counting.alloc(layout) };
        assert!(!block.is_null());
        let during = live_heap_bytes() as i64;
        // SAFETY: grown in place or moved by `System`, then freed with the new layout.
        let block = unsafe { counting.realloc(block, layout, 3 << 20) } as usize;
        let grown = live_heap_bytes() as i64;
        std::thread::spawn(move || {
            let layout = Layout::from_size_align(3 << 20, 8).expect("a layout");
            // SAFETY: the block `realloc` returned, freed once, with its layout.
            unsafe { counting.dealloc(block as *mut u8, layout) };
        })
        .join()
        .expect("the freeing thread");
        let after = live_heap_bytes() as i64;
        // Other tests of this binary do not allocate through `counting`, so the counts move by
        // exactly what this test did.
        assert_eq!(during - before, 1 << 20);
        assert_eq!(grown - before, 3 << 20);
        assert_eq!(after, before);
    }
}
