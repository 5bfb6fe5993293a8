// CUDA graphs of the CUDA backend (the op table's graph_begin / graph_end / graph_replay): a
// few recorded steps keyed by the caller, the least recently made replaced; attention.cu drops
// them all when a buffer they baked in is replaced.
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

static tsr_cuda_graph_slot *tsr__graph_find(tsr_cuda_ctx *c, int64_t key) {
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) return &c->graphs[i];
    return NULL;
}

void tsr__cuda_graphs_invalidate(tsr_cuda_ctx *c) {
    TSR_ASSERT(!c->capturing);
    for (int i = 0; i < c->n_graphs; i++) CUDA_CHECK(cudaGraphExecDestroy(c->graphs[i].exec));
    c->n_graphs = 0;
    c->n_seen = 0;
}

// The first step of a key runs eagerly (it grows scratch buffers, sets RoPE tables and lets
// cuBLAS pick its kernels, none of which may happen while recording); the second records.
bool tsr__cuda_graph_begin(tsr_backend *be, int64_t key) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    if (c->capturing || c->knobs.no_graphs) return false;
    bool seen = false;
    for (int i = 0; i < c->n_seen; i++) seen |= c->seen[i] == key;
    if (!seen) {
        c->n_graph_eager++;
        if (c->n_seen == 2 * TSR_CUDA_GRAPH_SLOTS) {
            memmove(&c->seen[0], &c->seen[1], sizeof c->seen[0] * (c->n_seen - 1));
            c->n_seen--;
        }
        c->seen[c->n_seen++] = key;
        return false;
    }
    CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = true;
    return true;
}

void tsr__cuda_graph_end(tsr_backend *be, int64_t key) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_ASSERT(c->capturing);
    cudaGraph_t g;
    CUDA_CHECK(cudaStreamEndCapture(c->stream, &g));
    c->capturing = false;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    CUDA_CHECK(cudaGraphDestroy(g));
    tsr_cuda_graph_slot *s = tsr__graph_find(c, key);
    if (s) {
        CUDA_CHECK(cudaGraphExecDestroy(s->exec));
    } else if (c->n_graphs < TSR_CUDA_GRAPH_SLOTS) {
        s = &c->graphs[c->n_graphs++];
    } else {
        CUDA_CHECK(cudaGraphExecDestroy(c->graphs[0].exec));
        memmove(&c->graphs[0], &c->graphs[1], sizeof c->graphs[0] * (TSR_CUDA_GRAPH_SLOTS - 1));
        s = &c->graphs[TSR_CUDA_GRAPH_SLOTS - 1];
    }
    s->key = key;
    s->exec = exec;
    c->n_graph_recorded++;
    CUDA_CHECK(cudaGraphLaunch(exec, c->stream));
}

bool tsr__cuda_graph_replay(tsr_backend *be, int64_t key) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    tsr_cuda_graph_slot *s = tsr__graph_find(c, key);
    if (!s || c->knobs.no_graphs) return false;
    c->n_graph_replayed++;
    CUDA_CHECK(cudaGraphLaunch(s->exec, c->stream));
    return true;
}
