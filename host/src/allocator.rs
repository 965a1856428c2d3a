//! The process allocator: the system allocator, except that very large requests are served by
//! address-space reservations the kernel does not commit up front.
//!
//! Why: the Kafka protocol crate pre-sizes every decoded array from the element count on the
//! wire (`Vec::with_capacity(count)`), before reading a single element. A 14-byte frame claiming
//! 2^31 topics asks for ~150 GB; the system allocator refuses and Rust aborts the whole broker.
//! Reserved here with `MAP_NORESERVE`, the same request succeeds without committing memory, the
//! decoder fails on the missing bytes a few elements later, and the reservation is returned —
//! the bad frame costs its own connection, never the node. Only touched pages ever use memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Requests at least this large are reserved with `mmap` instead of the system allocator.
/// Nothing the broker legitimately allocates comes close (requests are capped far lower).
pub const RESERVE_THRESHOLD: usize = 1 << 30;

const PAGE: usize = 4096;

/// The system allocator with large requests served by uncommitted reservations.
pub struct SluiceAllocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVE_THRESHOLD && layout.align() <= PAGE
}

// SAFETY: every pointer comes from `System` or from `mmap`, and `reserved(layout)` decides which;
// the `GlobalAlloc` contract passes the same layout to `dealloc`/`realloc` as to `alloc`, so each
// pointer is returned to the allocator that produced it.
unsafe impl GlobalAlloc for SluiceAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED { ptr::null_mut() } else { p.cast() }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // Fresh anonymous mappings are zero-filled.
            // SAFETY: same layout contract as `alloc`.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if reserved(&layout) {
            // SAFETY: `p` is a mapping of exactly `layout.size()` bytes made by `alloc`.
            unsafe { libc::munmap(p.cast(), layout.size()) };
        } else {
            // SAFETY: `p` came from `System` with this layout.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !reserved(&layout) && !reserved(&new_layout) {
            // SAFETY: both sizes belong to `System`.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        // Moving between the two allocators: allocate, copy the overlap, free the old block.
        // SAFETY: `new_layout` is valid (see above); `p` is live for `layout.size()` bytes.
        unsafe {
            let q = self.alloc(new_layout);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_requests_are_reserved_not_refused() {
        let a = SluiceAllocator;
        // Far beyond this machine's memory: the system allocator would refuse it.
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            // Only the touched pages are committed.
            *p = 7;
            *p.add(layout.size() - 1) = 9;
            assert_eq!(*p, 7);
            let q = a.realloc(p, layout, 1024);
            assert!(!q.is_null());
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(1024, 8).unwrap());
        }
    }

    #[test]
    fn ordinary_requests_use_the_system_allocator() {
        let a = SluiceAllocator;
        let layout = Layout::from_size_align(64, 16).unwrap();
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(*p, 0);
            let p = a.realloc(p, layout, RESERVE_THRESHOLD);
            assert!(!p.is_null());
            a.dealloc(p, Layout::from_size_align(RESERVE_THRESHOLD, 16).unwrap());
        }
    }
}
