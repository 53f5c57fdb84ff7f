// Everything lives in the header (static inline, so that it inlines into Swift callers); a C target
// needs one source file.
#include "CFuturelockSanitizer.h"
