/* The word cache: a direct-mapped table of recent words (up to TSR__CACHE_KEY bytes) and
 * their ids, tried before BPE.  Prose repeats its words, so most words hit.  The table is
 * shared by concurrent encodes of one tokenizer under a try-lock: a busy table is skipped,
 * never waited on.  `tessera bench tokenizer` measures encoding with and without it. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

bool tsr__word_cache_init(tsr_tokenizer *t) {
    t->cache = calloc(TSR__CACHE_SIZE, sizeof(tsr__cache_entry));
    if (!t->cache) return false;
    pthread_mutex_init(&t->cache_lock, NULL);
    return true;
}

void tsr__word_cache_free(tsr_tokenizer *t) {
    if (t->cache) pthread_mutex_destroy(&t->cache_lock);
    free(t->cache);
}

void tsr_tokenizer_set_cache(tsr_tokenizer *t, bool enabled) {
    t->no_cache = !enabled;
    if (t->cache) memset(t->cache, 0, TSR__CACHE_SIZE * sizeof(tsr__cache_entry));
}
