#ifndef PNG_SHIM_H
#define PNG_SHIM_H
// Decodes PNG through libpng with the setjmp owned here: libpng's errors longjmp, which must never cross Swift frames.
#endif
