//! The forward pass allocates nothing after the first classification: a counting global
//! allocator sees zero allocations across further forward passes, in f32, f16 and int8.
//!
//! The passes run inside a rayon pool (`install`), as a serving loop should: a parallel
//! section started from a thread outside the pool goes through rayon's shared job queue,
//! which allocates a small block every 63 jobs.
//!
//! Only allocations made on the pool's threads count: the test harness's own thread allocates
//! meanwhile (e.g. to report a test running over 60 seconds, as this one does under qemu).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the rayon pool's threads, where every forward pass runs.
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts an allocation if this thread is one of the pool's.
fn count() {
    if IN_POOL.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_allocates_nothing_after_the_first_call() {
    let f16 = common::convert(&common::shared().join("models/vit-tiny-imagenet"), edgevit::config::WeightDType::F16);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| IN_POOL.with(|c| c.set(true)))
        .build()
        .unwrap();
    for path in [common::tiny_f32(), common::tiny_int8(), f16.as_path()] {
        let model = edgevit::Model::open(path).unwrap();
        let pixels = vec![0.1f32; 3 * 224 * 224];
        let allocations = pool.install(|| {
            let mut session = model.session();
            model.forward(&pixels, &mut session).unwrap();
            model.forward(&pixels, &mut session).unwrap();
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..5 {
                model.forward(&pixels, &mut session).unwrap();
            }
            ALLOCATIONS.load(Ordering::SeqCst) - before
        });
        assert_eq!(allocations, 0, "{}: {allocations} allocations in 5 forward passes", path.display());
    }
}
