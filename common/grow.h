/* Growing a malloc'd array to hold at least `need` elements (doubling, from 16): the one helper
 * the coordinator's lists (scheduler sequences and plans, engine sessions) share. */
#ifndef TSR_GROW_H
#define TSR_GROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* false (and *buf untouched) when out of memory */
static inline bool tsr_grow(void **buf, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *b = realloc(*buf, (size_t)c * elem);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

#endif
