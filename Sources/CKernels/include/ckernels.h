#ifndef CKERNELS_H
#define CKERNELS_H
// Hot loops that need wider vectors than Swift's baseline x86-64 target gives (SSE2): compiled with
// function multiversioning so the best variant the CPU supports is picked at load time.
#include <stddef.h>
#endif
