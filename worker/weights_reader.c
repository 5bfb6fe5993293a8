/* Opening a weight source for a path, and reading a rank's slices through it (see
 * weights_reader.h). */
#include "worker/weights_reader.h"

#include <stdlib.h>

#include "common/fileutil.h"
#include "worker/weights_gguf.h"
#include "worker/weights_hf.h"
#include "worker/weights_workspace.h"
#include "worker/workspace.h"

tsr_status tsr__reader_open_source(const char *path, tsr_model_config *cfg, tsr__src **out) {
    *out = NULL;
    if (!tsr_path_exists(path)) return tsr_errorf(TSR_ERR_NOT_FOUND, "model '%s' does not exist", path);
    if (tsr_workspace_is(path)) return tsr__ws_source_open(path, cfg, out);
    if (!tsr_path_is_dir(path) && tsr__gguf_source_is(path)) return tsr__gguf_source_open(path, cfg, out);
    return tsr__hf_source_open(path, cfg, out);
}

tsr_status tsr__reader_stage(tsr__slice_reader *L, size_t n_floats) {
    if (n_floats <= L->stage_cap) return TSR_OK;
    float *p = realloc(L->stage, sizeof(float) * n_floats);
    if (!p) return tsr_errorf(TSR_ERR_OOM, "out of host memory staging %zu weights", n_floats);
    L->stage = p, L->stage_cap = n_floats;
    return TSR_OK;
}

tsr_status tsr__reader_check(tsr__slice_reader *L, tsr_wkind k, int layer, bool *present) {
    const tsr_shard_rule *r = tsr_shard_rule_of(k);
    int64_t rows, cols, wr, wc;
    tsr_status st = L->src->shape(L->src, k, layer, &rows, &cols);
    *present = st == TSR_OK;
    if (st == TSR_ERR_NOT_FOUND && r->optional) {
        tsr_clear_error();
        return TSR_OK;
    }
    TSR_TRY(st);
    tsr__shard_global_shape(&L->m->cfg, k, &wr, &wc);
    char lbuf[16];
    snprintf(lbuf, sizeof lbuf, "%d", layer);
    if (rows != wr || cols != wc)
        return tsr_errorf(TSR_ERR_FORMAT, "%s%s%s: shape [%lld, %lld] does not match the config's [%lld, %lld]",
                          r->what, r->per_layer ? " of layer " : "", r->per_layer ? lbuf : "", (long long)rows,
                          (long long)cols, (long long)wr, (long long)wc);
    return TSR_OK;
}

tsr_status tsr__reader_read_local(tsr__slice_reader *L, tsr_wkind k, int layer, float *dst, int64_t *n_out) {
    int64_t r0, nr, c0, nc;
    tsr__shard_local_slice(&L->m->cfg, &L->m->shard, k, &r0, &nr, &c0, &nc);
    if ((size_t)nr > L->rows_cap) {
        int64_t *p = realloc(L->rows, sizeof(int64_t) * (size_t)nr);
        if (!p) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        L->rows = p, L->rows_cap = (size_t)nr;
    }
    for (int64_t i = 0; i < nr; i++) L->rows[i] = r0 + i;
    if (n_out) *n_out = nr * nc;
    tsr_status st = L->src->read(L->src, k, layer, L->rows, nr, c0, nc, dst);
    if (st != TSR_OK && tsr_shard_rule_of(k)->per_layer)
        return tsr_error_wrap(st, "%s of layer %d", tsr_shard_rule_of(k)->what, layer);
    return st;
}

void tsr__reader_free(tsr__slice_reader *L) {
    free(L->stage);
    free(L->rows);
}
