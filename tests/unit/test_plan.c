/* worker/executor: a step plan survives encode -> decode exactly, and corrupt plans are
 * rejected instead of being replayed. */
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "worker/executor.h"

int main(void) {
    int32_t t0[] = {5, 6, 7}, t1[] = {42}, b0[] = {3, 9}, b1[] = {0, 1, 2, 4};
    tsr_seq_step seqs[2] = {
        {.tokens = t0, .n_new = 3, .n_past = 61, .block_table = b0, .n_blocks = 2},
        {.tokens = t1, .n_new = 1, .n_past = 200, .block_table = b1, .n_blocks = 4},
    };
    tsr_step step = {.seqs = seqs, .n_seq = 2, .all_logits = true};
    uint8_t *buf = NULL;
    size_t cap = 0;
    size_t len = tsr_plan_encode(&step, true, &buf, &cap);
    CHECK(len > 0 && cap >= len);

    tsr_step out;
    bool wl = false;
    tsr_seq_step *dseqs = NULL;
    CHECK(tsr_plan_decode(buf, len, &out, &wl, &dseqs) == TSR_OK);
    CHECK(out.n_seq == 2 && out.all_logits && wl);
    for (int i = 0; i < 2; i++) {
        CHECK(out.seqs[i].n_new == seqs[i].n_new);
        CHECK(out.seqs[i].n_past == seqs[i].n_past);
        CHECK(out.seqs[i].n_blocks == seqs[i].n_blocks);
        CHECK(!memcmp(out.seqs[i].tokens, seqs[i].tokens, sizeof(int32_t) * (size_t)seqs[i].n_new));
        CHECK(!memcmp(out.seqs[i].block_table, seqs[i].block_table, sizeof(int32_t) * (size_t)seqs[i].n_blocks));
    }

    /* truncated, and a header whose counts disagree with the body */
    CHECK(tsr_plan_decode(buf, len - 1, &out, &wl, &dseqs) != TSR_OK);
    CHECK(tsr_plan_decode(buf, 8, &out, &wl, &dseqs) != TSR_OK);
    uint8_t *bad = malloc(len);
    memcpy(bad, buf, len);
    bad[0] ^= 0xff; /* magic */
    CHECK(tsr_plan_decode(bad, len, &out, &wl, &dseqs) != TSR_OK);
    memcpy(bad, buf, len);
    int64_t huge = -5;
    memcpy(bad + 8, &huge, sizeof huge); /* n_seq */
    CHECK(tsr_plan_decode(bad, len, &out, &wl, &dseqs) != TSR_OK);

    /* an empty step (no sequences) is legal */
    tsr_step empty = {.seqs = NULL, .n_seq = 0};
    len = tsr_plan_encode(&empty, false, &buf, &cap);
    CHECK(tsr_plan_decode(buf, len, &out, &wl, &dseqs) == TSR_OK && out.n_seq == 0 && !wl);

    free(bad);
    free(buf);
    free(dseqs);
    return tsr_test_finish();
}
