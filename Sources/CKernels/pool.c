// The engine's thread pool (`Parallel.run`, `Parallel.forEach`): persistent workers that poll for the next
// parallel region for a while before they sleep on a futex.
//
// libdispatch's `concurrentPerform` parks its workers as soon as a region ends and wakes one with a futex when the
// next begins; on a 2-vCPU Zen 5 host that wake-up took ~30 us, so a region of two ~30 us tasks ran no faster than
// the same work on one thread, and the training step of a small CNN (W9, ~35 regions per step by strace's count of
// futex calls) got little from the second core. Here a worker that finishes a region polls for the next one for
// `spin_ns` (500 us) before it sleeps, and the caller polls for the workers' completion the same way. Pollers yield
// the core every microsecond or so: with more threads than cores, a poller that kept its core held up the very
// task it waited for (W9 with `--threads 4` on 2 vCPUs fell from ~3300 clips/s with libdispatch to ~2700; with the
// yields ~4200). A product large enough for OpenBLAS to split over its own threads first parks the polling workers
// (`ck_pool_park`, from BLAS.sgemm), so the two pools do not fight over the cores.
//
// One caller at a time: a region started while another runs (another thread, or a nested call from inside a
// task) runs its tasks inline on the calling thread, in index order. Which thread runs a task never changes what
// it computes: tasks are whole, independent index ranges chosen by the caller.
#define _GNU_SOURCE
#include "ckernels.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 255

static _Atomic uint32_t epoch;     // bumped once per region; workers wait on it
static _Atomic uint64_t cursor;    // region generation (high 32 bits) and next task index (low 32 bits)
static _Atomic uint32_t finished;  // tasks of the current region done
static _Atomic uint32_t sleepers;  // workers asleep on `epoch`
static _Atomic uint32_t caller_asleep;
static _Atomic int busy;           // a caller owns the pool
static const int64_t spin_ns = 500000;
static _Atomic uint32_t parked;    // bumped by ck_pool_park: spinning workers sleep at once

// The current region, written by the caller before it publishes `cursor` and `epoch`.
static _Atomic(ck_task_fn) task_fn;
static _Atomic(void *) task_ctx;
static _Atomic uint32_t task_count;
static _Atomic int task_workers;  // workers 0..<task_workers may take tasks (the caller's thread count - 1)

static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static int workers;  // started so far (only grows)
static _Thread_local int in_pool;  // this thread is running a task (nested regions run inline)

static void futex_wait(_Atomic uint32_t *word, uint32_t value) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// One polling iteration: 1 to poll on, 0 to go to sleep. Every 64 iterations (about a microsecond) it reads the
// clock and yields the core, so that a thread sharing it (the worker holding the task a caller waits for, when
// there are more threads than cores, or another process) runs instead of waiting behind the poll.
static inline int keep_polling(unsigned i, int64_t until) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) != 63) return 1;
    if (now_ns() > until) return 0;
    sched_yield();
    return 1;
}

// Runs tasks of generation `gen` until none is left.
static void run_tasks(uint32_t gen) {
    in_pool = 1;
    for (;;) {
        uint64_t c = atomic_load_explicit(&cursor, memory_order_acquire);
        if ((uint32_t)(c >> 32) != gen) break;
        // The descriptor is read after the generation was seen (acquire) and used only if the claim below succeeds
        // for that same generation, which cannot happen once the caller has moved on.
        ck_task_fn fn = atomic_load_explicit(&task_fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&task_ctx, memory_order_relaxed);
        uint32_t count = atomic_load_explicit(&task_count, memory_order_relaxed);
        uint32_t index = (uint32_t)c;
        if (index >= count) break;
        if (!atomic_compare_exchange_weak_explicit(&cursor, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        fn(ctx, (long)index);
        if (atomic_fetch_add(&finished, 1) + 1 == count && atomic_load(&caller_asleep)) futex_wake(&finished);
    }
    in_pool = 0;
}

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    uint32_t seen = atomic_load(&epoch);
    for (;;) {
        uint32_t e = atomic_load_explicit(&epoch, memory_order_acquire);
        if (e == seen) {
            int64_t until = now_ns() + spin_ns;
            uint32_t park = atomic_load_explicit(&parked, memory_order_relaxed);
            for (unsigned i = 0; (e = atomic_load_explicit(&epoch, memory_order_acquire)) == seen; i++) {
                if (!keep_polling(i, until) || atomic_load_explicit(&parked, memory_order_relaxed) != park) {
                    atomic_fetch_add(&sleepers, 1);
                    if (atomic_load(&epoch) == seen) futex_wait(&epoch, seen);
                    atomic_fetch_sub(&sleepers, 1);
                    until = now_ns() + spin_ns;
                    park = atomic_load_explicit(&parked, memory_order_relaxed);
                }
            }
        }
        seen = e;
        if (id >= atomic_load_explicit(&task_workers, memory_order_relaxed)) continue;  // a region with fewer threads
        run_tasks((uint32_t)(atomic_load_explicit(&cursor, memory_order_acquire) >> 32));
    }
    return NULL;
}

static void ensure_workers(int wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    pthread_mutex_lock(&grow_lock);
    while (workers < wanted) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;  // fewer workers: the caller runs what they would have
        workers++;
    }
    pthread_mutex_unlock(&grow_lock);
}

void ck_pool_park(void) {
    if (!in_pool) atomic_fetch_add_explicit(&parked, 1, memory_order_relaxed);
}

void ck_pool_run(long count, int threads, ck_task_fn fn, void *ctx) {
    if (count <= 0) return;
    int expected = 0;
    if (count == 1 || threads <= 1 || in_pool || count > UINT32_MAX ||
        !atomic_compare_exchange_strong(&busy, &expected, 1)) {
        for (long i = 0; i < count; i++) fn(ctx, i);
        return;
    }
    int helpers = (int)(count < threads ? count : threads) - 1;
    ensure_workers(helpers);
    atomic_store_explicit(&task_fn, fn, memory_order_relaxed);
    atomic_store_explicit(&task_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&task_count, (uint32_t)count, memory_order_relaxed);
    atomic_store_explicit(&task_workers, helpers, memory_order_relaxed);
    atomic_store(&finished, 0);
    uint32_t gen = (uint32_t)(atomic_load(&cursor) >> 32) + 1;
    atomic_store_explicit(&cursor, (uint64_t)gen << 32, memory_order_release);
    atomic_fetch_add(&epoch, 1);
    if (atomic_load(&sleepers)) futex_wake(&epoch);
    run_tasks(gen);
    // Wait for the tasks the workers took, polling, then asleep on `finished`.
    uint32_t done;
    int64_t until = now_ns() + spin_ns;
    for (unsigned i = 0; (done = atomic_load_explicit(&finished, memory_order_acquire)) != (uint32_t)count; i++) {
        if (!keep_polling(i, until)) {
            atomic_store(&caller_asleep, 1);
            done = atomic_load(&finished);
            if (done != (uint32_t)count) futex_wait(&finished, done);
            atomic_store(&caller_asleep, 0);
        }
    }
    atomic_store_explicit(&busy, 0, memory_order_release);
}
