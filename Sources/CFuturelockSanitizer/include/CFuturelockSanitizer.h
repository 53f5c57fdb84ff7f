// Happens-before annotations for ThreadSanitizer, free in builds without it.
//
// `Synchronization.Mutex` on Linux hands contended lock and unlock to the kernel (a futex), so
// ThreadSanitizer never sees those acquisitions and reports the state a mutex guards as racing.
// `Lock` (Sources/Futurelock/Support/Lock.swift) calls `fl_tsan_acquire` right after taking its
// mutex and `fl_tsan_release` right before giving it up, keyed by the mutex's address, which tells
// ThreadSanitizer exactly what the kernel did.
//
// Why weak symbols and not only a compile-time test: these bodies are inlined into Swift code, and
// Swift compiles an imported header with its own Clang instance, which is not told about
// `-sanitize=thread` (SwiftPM passes `-fsanitize=thread` to C files of a C target, but not to the
// headers Swift imports). So the header cannot know at compile time whether it is in a TSan build.
// Instead the two runtime entry points are declared weak: in a TSan build the runtime is linked in
// and defines them; in any other build they resolve to null, and each annotation is one compare of a
// GOT slot against zero and a never-taken branch — no call, no store. When a C file is compiled with
// the sanitizer itself the test is known at compile time and the call is made directly.
#ifndef CFUTURELOCK_SANITIZER_H
#define CFUTURELOCK_SANITIZER_H

#if defined(__SANITIZE_THREAD__)
#  define FL_TSAN_COMPILED_IN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define FL_TSAN_COMPILED_IN 1
#  endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Provided by the ThreadSanitizer runtime when it is linked in; null otherwise.
void __tsan_acquire(void *addr) __attribute__((weak));
void __tsan_release(void *addr) __attribute__((weak));

/// Tells ThreadSanitizer that this thread has just acquired the synchronisation object at `addr`:
/// everything another thread did before its `fl_tsan_release(addr)` happens before what this one does next.
static inline __attribute__((always_inline)) void fl_tsan_acquire(void *addr) {
#ifdef FL_TSAN_COMPILED_IN
    __tsan_acquire(addr);
#else
    if (__tsan_acquire) __tsan_acquire(addr);
#endif
}

/// Tells ThreadSanitizer that this thread is about to release the synchronisation object at `addr`.
static inline __attribute__((always_inline)) void fl_tsan_release(void *addr) {
#ifdef FL_TSAN_COMPILED_IN
    __tsan_release(addr);
#else
    if (__tsan_release) __tsan_release(addr);
#endif
}

/// Whether the ThreadSanitizer runtime is linked into this process.
static inline __attribute__((always_inline)) int fl_tsan_is_linked(void) {
#ifdef FL_TSAN_COMPILED_IN
    return 1;
#else
    return __tsan_acquire != 0;
#endif
}

#ifdef __cplusplus
}
#endif

#endif
