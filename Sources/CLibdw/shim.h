#ifndef FUTURELOCK_CLIBDW_SHIM_H
#define FUTURELOCK_CLIBDW_SHIM_H
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <dwarf.h>
#endif
