#ifndef FUTURELOCK_CLIBDW_SHIM_H
#define FUTURELOCK_CLIBDW_SHIM_H
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <dwarf.h>
#include <sys/prctl.h>
#include <execinfo.h> /* backtrace(3), which the Glibc module does not export */

/* prctl(2) is variadic, which Swift cannot call; these fix its arguments for the one use we have:
   letting another process ptrace this one under Yama (PR_SET_PTRACER). */
static inline int futurelock_set_ptracer(unsigned long tracer_pid) {
    return prctl(PR_SET_PTRACER, tracer_pid, 0UL, 0UL, 0UL);
}

/* PR_SET_PTRACER_ANY is a cast expression, which Swift does not import as a constant. */
static inline int futurelock_set_ptracer_any(void) {
    return prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0UL, 0UL, 0UL);
}
#endif
