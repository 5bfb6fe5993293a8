/* kv_qparams.json of a workspace (see kv_qparams.h): read, checked, written. */
#include "worker/kv_qparams.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/fileutil.h"

static const char *const tsr__qp_keys[4] = {"k_scale", "k_zp", "v_scale", "v_zp"};

tsr_status tsr_kv_qparams_load(const char *dir, tsr_kv_qparams *q, bool *found) {
    memset(q, 0, sizeof *q);
    *found = false;
    char *path = tsr_path_join(dir, TSR_KV_QPARAMS_FILE);
    if (!path) return tsr_errorf(TSR_ERR_OOM, "path");
    if (!tsr_path_exists(path)) {
        free(path);
        return TSR_OK;
    }
    char *text = NULL;
    size_t len = 0;
    tsr_status st = tsr_read_file(path, (size_t)64 << 20, &text, &len);
    cJSON *root = st == TSR_OK ? cJSON_ParseWithLength(text, len) : NULL;
    if (st == TSR_OK && !root) st = tsr_errorf(TSR_ERR_FORMAT, "%s: not JSON", path);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (st == TSR_OK && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "tessera-kv-qparams")))
        st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"format\" is not \"tessera-kv-qparams\"", path);
    const cJSON *bits = cJSON_GetObjectItemCaseSensitive(root, "bits"), *nl = cJSON_GetObjectItemCaseSensitive(root, "n_layer"),
                *nh = cJSON_GetObjectItemCaseSensitive(root, "n_kv_head");
    if (st == TSR_OK && (!cJSON_IsNumber(bits) || (bits->valueint != 8 && bits->valueint != 4) || !cJSON_IsNumber(nl) ||
                         !cJSON_IsNumber(nh) || nl->valueint < 1 || nh->valueint < 1 || nl->valueint > 100000 ||
                         nh->valueint > 100000))
        st = tsr_errorf(TSR_ERR_FORMAT, "%s: needs \"bits\" 8 or 4 and positive \"n_layer\", \"n_kv_head\"", path);
    if (st == TSR_OK) {
        q->bits = bits->valueint;
        q->symmetric = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "symmetric"));
        q->n_layer = nl->valueint;
        q->n_kv_head = nh->valueint;
        q->qp = malloc(sizeof(float) * 4 * (size_t)(q->n_layer * q->n_kv_head));
        if (!q->qp) st = tsr_errorf(TSR_ERR_OOM, "%s", path);
    }
    for (int k = 0; k < 4 && st == TSR_OK; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, tsr__qp_keys[k]);
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != q->n_layer) {
            st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"%s\" must be %lld lists (one per layer)", path, tsr__qp_keys[k],
                            (long long)q->n_layer);
            break;
        }
        for (int64_t l = 0; l < q->n_layer && st == TSR_OK; l++) {
            const cJSON *row = cJSON_GetArrayItem(a, (int)l);
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != q->n_kv_head) {
                st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"%s\"[%lld] must hold %lld numbers (one per KV head)", path,
                                tsr__qp_keys[k], (long long)l, (long long)q->n_kv_head);
                break;
            }
            for (int64_t h = 0; h < q->n_kv_head; h++) {
                const cJSON *v = cJSON_GetArrayItem(row, (int)h);
                if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (k % 2 == 0 && v->valuedouble < 0)) {
                    st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"%s\"[%lld][%lld] is not a valid number", path,
                                    tsr__qp_keys[k], (long long)l, (long long)h);
                    break;
                }
                q->qp[(l * q->n_kv_head + h) * 4 + k] = (float)v->valuedouble;
            }
        }
    }
    const cJSON *kc = cJSON_GetObjectItemCaseSensitive(root, "k_channel_zp"),
                *hdj = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (st == TSR_OK && kc) {
        if (!cJSON_IsNumber(hdj) || hdj->valueint < 1 || hdj->valueint > 65536 || !cJSON_IsArray(kc) ||
            cJSON_GetArraySize(kc) != q->n_layer)
            st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"k_channel_zp\" needs a positive \"head_dim\" and %lld lists", path,
                            (long long)q->n_layer);
        else if (!(q->k_chan = malloc(sizeof(float) * (size_t)(q->n_layer * q->n_kv_head * hdj->valueint))))
            st = tsr_errorf(TSR_ERR_OOM, "%s", path);
        else
            q->head_dim = hdj->valueint;
        const int64_t w = q->n_kv_head * q->head_dim;
        for (int64_t l = 0; l < q->n_layer && st == TSR_OK; l++) {
            const cJSON *row = cJSON_GetArrayItem(kc, (int)l);
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != w) {
                st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"k_channel_zp\"[%lld] must hold %lld numbers", path, (long long)l,
                                (long long)w);
                break;
            }
            int64_t c = 0;
            for (const cJSON *v = row->child; v; v = v->next, c++) {
                if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                    st = tsr_errorf(TSR_ERR_FORMAT, "%s: \"k_channel_zp\"[%lld][%lld] is not a number", path,
                                    (long long)l, (long long)c);
                    break;
                }
                q->k_chan[l * w + c] = (float)v->valuedouble;
            }
        }
    }
    cJSON_Delete(root);
    free(text);
    free(path);
    if (st != TSR_OK) {
        tsr_kv_qparams_free(q);
        return st;
    }
    *found = true;
    return TSR_OK;
}

tsr_status tsr_kv_qparams_save(const char *dir, const tsr_kv_qparams *q) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "tessera-kv-qparams");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddNumberToObject(root, "bits", (double)q->bits);
    cJSON_AddBoolToObject(root, "symmetric", q->symmetric);
    cJSON_AddNumberToObject(root, "n_layer", (double)q->n_layer);
    cJSON_AddNumberToObject(root, "n_kv_head", (double)q->n_kv_head);
    cJSON_AddStringToObject(root, "convention", "value = signed code * scale + zp (int8 codes -128..127, int4 -8..7)");
    for (int k = 0; k < 4; k++) {
        cJSON *a = cJSON_AddArrayToObject(root, tsr__qp_keys[k]);
        for (int64_t l = 0; l < q->n_layer; l++) {
            cJSON *row = cJSON_CreateArray();
            for (int64_t h = 0; h < q->n_kv_head; h++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)q->qp[(l * q->n_kv_head + h) * 4 + k]));
            cJSON_AddItemToArray(a, row);
        }
    }
    if (q->k_chan) {
        cJSON_AddNumberToObject(root, "head_dim", (double)q->head_dim);
        cJSON *a = cJSON_AddArrayToObject(root, "k_channel_zp");
        const int64_t w = q->n_kv_head * q->head_dim;
        for (int64_t l = 0; l < q->n_layer; l++) {
            cJSON *row = cJSON_CreateArray();
            for (int64_t c = 0; c < w; c++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)q->k_chan[l * w + c]));
            cJSON_AddItemToArray(a, row);
        }
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    char *path = tsr_path_join(dir, TSR_KV_QPARAMS_FILE);
    tsr_status st = s && path ? tsr_write_file(path, s, strlen(s)) : tsr_errorf(TSR_ERR_OOM, "kv_qparams");
    free(s);
    free(path);
    return st;
}

float *tsr_kv_qparams_local(const tsr_kv_qparams *q, int64_t head0, int64_t n) {
    if (head0 < 0 || head0 + n > q->n_kv_head) return NULL;
    float *out = malloc(sizeof(float) * 4 * (size_t)(q->n_layer * n));
    if (!out) return NULL;
    for (int64_t l = 0; l < q->n_layer; l++)
        memcpy(out + 4 * l * n, q->qp + 4 * (l * q->n_kv_head + head0), sizeof(float) * 4 * (size_t)n);
    return out;
}

float *tsr_kv_qparams_local_chan(const tsr_kv_qparams *q, int64_t head0, int64_t n) {
    if (!q->k_chan || head0 < 0 || head0 + n > q->n_kv_head) return NULL;
    const int64_t hd = q->head_dim;
    float *out = malloc(sizeof(float) * (size_t)(q->n_layer * n * hd));
    if (!out) return NULL;
    for (int64_t l = 0; l < q->n_layer; l++)
        memcpy(out + l * n * hd, q->k_chan + (l * q->n_kv_head + head0) * hd, sizeof(float) * (size_t)(n * hd));
    return out;
}

void tsr_kv_qparams_free(tsr_kv_qparams *q) {
    free(q->qp);
    free(q->k_chan);
    memset(q, 0, sizeof *q);
}
