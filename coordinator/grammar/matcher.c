/* The matcher: a deterministic pushdown automaton over bytes.  The state is a stack of frames,
 * one per value being written (the document, then objects/arrays and the value inside); each
 * byte goes to the top frame, which consumes it, finishes, or -- a number or literal that is
 * complete and does not continue with this byte -- passes it to the frame below.  A container
 * expecting a value pushes the value's node (an alternative resolved by this very byte) and
 * hands it the byte.  No backtracking: schema.c refuses grammars that would need it.  No dead
 * ends either: every prefix accepted can still be completed (a space is taken only where a
 * closing bracket may follow it, a number byte only where the cap leaves room for the rest), so
 * a token mask is never empty.
 *
 * Frame phases (internal.h's fields):
 *   DOC     0 before the value (whitespace), 1 inside it, 2 after it (whitespace)
 *   OBJECT  0 '{'  1 after '{'  2 in a key  3 after a key  4 after ':'  5 in a value
 *           6 after a value  7 after ','
 *   ARRAY   0 '['  1 after '['  2 in an item  3 after an item  4 after ','
 *   STRING  0 '"'  1 in the body  2 after '\'  3 in \uXXXX  4 in a UTF-8 sequence
 *   NUMBER  0 start  1 after '-'  2 after a leading 0  3 integer digits  4 after '.'
 *           5 fraction digits  6 after e/E  7 after the exponent's sign  8 exponent digits */
#include <stdlib.h>
#include <string.h>

#include "coordinator/grammar/internal.h"

enum { TSR__R_REJECT, TSR__R_OK, TSR__R_WS, TSR__R_DONE, TSR__R_PASS, TSR__R_PUSHED };

static bool tsr__is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

void tsr__g_state_init(const tsr_grammar *g, tsr__g_state *s) {
    memset(s, 0, sizeof *s);
    s->depth = 1;
    s->f[0].node = g->doc;
}

/* Pushes the node of a value that starts with byte c (alternatives resolved by c). */
static int tsr__push(const tsr_grammar *g, tsr__g_state *s, int32_t id, uint8_t c) {
    while (id >= 0 && g->nodes[id].kind == TSR__G_ALT) id = g->nodes[id].by_byte[c];
    if (id < 0 || s->depth >= TSR_GRAMMAR_MAX_DEPTH) return TSR__R_REJECT;
    tsr__g_frame *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->node = id;
    if (g->nodes[id].kind == TSR__G_LIT) f->b = g->nodes[id].n_lits;
    return TSR__R_PUSHED;
}

/* The frame above f finished as child: f moves past it. */
static void tsr__child_done(const tsr_grammar *g, tsr__g_frame *f, const tsr__g_frame *child) {
    const tsr__g_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case TSR__G_DOC: f->phase = 2; break;
    case TSR__G_OBJECT:
        if (f->phase == 2) {   /* a key */
            if (n->n_props) {
                f->b = g->nodes[child->node].map[child->a];
                f->a = f->b + 1;
            }
            f->phase = 3;
        } else {               /* a value */
            if (n->tag_values && f->b == 0) f->c = g->nodes[child->node].map[child->a];
            f->phase = 6;
        }
        break;
    case TSR__G_ARRAY:
        f->a++;
        f->phase = 3;
        break;
    default: break;
    }
}

static int tsr__lit(const tsr__g_node *n, tsr__g_frame *f, uint8_t c) {
    int32_t lo = f->b, hi = f->a, p = f->pos;
    for (int32_t k = f->a; k < f->b; k++) {
        if (n->lens[k] > (uint32_t)p && (uint8_t)n->lits[k][p] == c) {
            if (k < lo) lo = k;
            hi = k + 1;
        }
    }
    if (lo < hi) {
        f->a = lo, f->b = hi, f->pos++;
        return n->lens[lo] == f->pos && hi - lo == 1 ? TSR__R_DONE : TSR__R_OK;
    }
    return n->lens[f->a] == (uint32_t)p ? TSR__R_PASS : TSR__R_REJECT;
}

static bool tsr__hex(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static int tsr__string(const tsr__g_node *n, tsr__g_frame *f, uint8_t c) {
    switch (f->phase) {
    case 0: return c == '"' ? (f->phase = 1, TSR__R_OK) : TSR__R_REJECT;
    case 1:
        if (c == '"') return f->a >= n->min_len ? TSR__R_DONE : TSR__R_REJECT;
        if (n->max_len >= 0 && f->a >= n->max_len) return TSR__R_REJECT;
        if (c == '\\') {
            f->a++;
            f->phase = 2;
            return TSR__R_OK;
        }
        if (c < 0x20) return TSR__R_REJECT;
        if (c < 0x80) {
            f->a++;
            return TSR__R_OK;
        }
        if (c >= 0xC2 && c <= 0xDF) f->sub = 1;
        else if (c >= 0xE0 && c <= 0xEF) f->sub = 2;
        else if (c >= 0xF0 && c <= 0xF4) f->sub = 3;
        else return TSR__R_REJECT;
        f->a++;
        f->pos = c;   /* the lead byte narrows the first continuation byte (RFC 3629) */
        f->phase = 4;
        return TSR__R_OK;
    case 2:
        if (c == 'u') {
            f->phase = 3;
            f->sub = 4;
            return TSR__R_OK;
        }
        return strchr("\"\\/bfnrt", c) && c ? (f->phase = 1, TSR__R_OK) : TSR__R_REJECT;
    case 3:
        if (!tsr__hex(c)) return TSR__R_REJECT;
        if (--f->sub == 0) f->phase = 1;
        return TSR__R_OK;
    default: {
        uint8_t lo = 0x80, hi = 0xBF;
        if (f->pos == 0xE0) lo = 0xA0;
        else if (f->pos == 0xED) hi = 0x9F;
        else if (f->pos == 0xF0) lo = 0x90;
        else if (f->pos == 0xF4) hi = 0x8F;
        if (c < lo || c > hi) return TSR__R_REJECT;
        f->pos = 0;
        if (--f->sub == 0) f->phase = 1;
        return TSR__R_OK;
    }
    }
}

static bool tsr__number_complete(uint8_t phase) { return phase == 2 || phase == 3 || phase == 5 || phase == 8; }

static int tsr__number(const tsr__g_node *n, tsr__g_frame *f, uint8_t c) {
    /* room: for one more byte; room2: for a byte that needs a digit after it (no dead ends) */
    const bool digit = c >= '0' && c <= '9', room = f->pos < TSR_GRAMMAR_MAX_NUMBER;
    const bool room2 = f->pos + 2 <= TSR_GRAMMAR_MAX_NUMBER, frac = !n->integer && room2;
    uint8_t next = 255;
    switch (f->phase) {
    case 0: next = c == '-' ? 1 : c == '0' ? 2 : digit ? 3 : 255; break;
    case 1: next = c == '0' ? 2 : digit ? 3 : 255; break;
    case 2: next = c == '.' && frac ? 4 : (c == 'e' || c == 'E') && frac ? 6 : 255; break;
    case 3: next = digit && room ? 3 : c == '.' && frac ? 4 : (c == 'e' || c == 'E') && frac ? 6 : 255; break;
    case 4: next = digit && room ? 5 : 255; break;
    case 5: next = digit && room ? 5 : (c == 'e' || c == 'E') && frac ? 6 : 255; break;
    case 6: next = (c == '+' || c == '-') && room2 ? 7 : digit && room ? 8 : 255; break;
    case 7: next = digit && room ? 8 : 255; break;
    case 8: next = digit && room ? 8 : 255; break;
    }
    if (next != 255) {
        f->phase = next;
        f->pos++;
        return TSR__R_OK;
    }
    return tsr__number_complete(f->phase) ? TSR__R_PASS : TSR__R_REJECT;
}

static int tsr__object(const tsr_grammar *g, tsr__g_state *s, tsr__g_frame *f, const tsr__g_node *n, uint8_t c) {
    const bool ws = tsr__is_ws(c);
    const bool can_close = n->n_props ? n->next_required[f->a] == n->n_props : true;
    const bool can_key = n->n_props ? f->a < n->n_props : n->additional >= 0;
    switch (f->phase) {
    case 0: return c == '{' ? (f->phase = 1, TSR__R_OK) : TSR__R_REJECT;
    case 1:
    case 7:
        if (ws) return TSR__R_WS;
        if (c == '}' && f->phase == 1 && can_close) return TSR__R_DONE;
        if (c != '"' || !can_key) return TSR__R_REJECT;
        f->phase = 2;
        return tsr__push(g, s, n->n_props ? n->key_lit[f->a] : g->key_string, c);
    case 3: return c == ':' ? (f->phase = 4, TSR__R_OK) : TSR__R_REJECT;   /* no space before ':' */
    case 4: {
        if (ws) return c == ' ' && s->ws == 0 ? TSR__R_WS : TSR__R_REJECT;   /* one space after it */
        int32_t v = !n->n_props ? n->additional : n->tag_values && f->b == 1 ? n->tag_values[f->c] : n->prop_value[f->b];
        f->phase = 5;
        int r = tsr__push(g, s, v, c);
        if (r == TSR__R_REJECT) f->phase = 4;
        return r;
    }
    case 6:
        if (ws) return can_close ? TSR__R_WS : TSR__R_REJECT;   /* only '}' may follow a space here */
        if (c == ',' && can_key && s->ws == 0) return f->phase = 7, TSR__R_OK;   /* no space before ',' */
        if (c == '}' && can_close) return TSR__R_DONE;
        return TSR__R_REJECT;
    default: return TSR__R_REJECT;
    }
}

static int tsr__array(const tsr_grammar *g, tsr__g_state *s, tsr__g_frame *f, const tsr__g_node *n, uint8_t c) {
    const bool ws = tsr__is_ws(c);
    const bool more = n->max_items < 0 || f->a < n->max_items;
    switch (f->phase) {
    case 0: return c == '[' ? (f->phase = 1, TSR__R_OK) : TSR__R_REJECT;
    case 1:
    case 4: {
        if (ws) return TSR__R_WS;
        if (c == ']' && f->phase == 1 && n->min_items == 0) return TSR__R_DONE;
        if (!more) return TSR__R_REJECT;
        uint8_t was = f->phase;
        f->phase = 2;
        int r = tsr__push(g, s, n->items, c);
        if (r == TSR__R_REJECT) f->phase = was;
        return r;
    }
    case 3:
        if (ws) return f->a >= n->min_items ? TSR__R_WS : TSR__R_REJECT;   /* only ']' may follow */
        if (c == ',' && more && s->ws == 0) return f->phase = 4, TSR__R_OK;
        if (c == ']' && f->a >= n->min_items) return TSR__R_DONE;
        return TSR__R_REJECT;
    default: return TSR__R_REJECT;
    }
}

static int tsr__step(const tsr_grammar *g, tsr__g_state *s, uint8_t c) {
    tsr__g_frame *f = &s->f[s->depth - 1];
    const tsr__g_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case TSR__G_DOC:
        if (tsr__is_ws(c)) return f->phase == 1 ? TSR__R_REJECT : TSR__R_WS;
        if (f->phase != 0) return TSR__R_REJECT;
        f->phase = 1;
        return tsr__push(g, s, n->root, c);
    case TSR__G_LIT: return tsr__lit(n, f, c);
    case TSR__G_STRING: return tsr__string(n, f, c);
    case TSR__G_NUMBER: return tsr__number(n, f, c);
    case TSR__G_OBJECT: return tsr__object(g, s, f, n, c);
    case TSR__G_ARRAY: return tsr__array(g, s, f, n, c);
    default: return TSR__R_REJECT;
    }
}

static void tsr__pop(const tsr_grammar *g, tsr__g_state *s) {
    s->depth--;
    tsr__child_done(g, &s->f[s->depth - 1], &s->f[s->depth]);
}

bool tsr__g_feed_byte(const tsr_grammar *g, tsr__g_state *s, uint8_t c) {
    if (s->ended) return false;
    for (;;) {
        int r = tsr__step(g, s, c);
        switch (r) {
        case TSR__R_OK: s->ws = 0; return true;
        case TSR__R_WS:
            /* a run is one space, or a newline and indentation: the layouts JSON writers use */
            if (s->ws == 0) {
                if (c != ' ' && c != '\n') return false;
                s->ws_first = c;
            } else if (s->ws_first != '\n' || (c != ' ' && c != '\t')) {
                return false;
            }
            return ++s->ws <= TSR_GRAMMAR_MAX_WS;
        case TSR__R_DONE:
            s->ws = 0;
            tsr__pop(g, s);
            return true;
        case TSR__R_PASS: tsr__pop(g, s); continue;
        case TSR__R_PUSHED: continue;
        default: return false;
        }
    }
}

bool tsr__g_can_end(const tsr_grammar *g, const tsr__g_state *s0) {
    if (s0->ended) return false;
    tsr__g_state s;
    tsr__g_state_copy(&s, s0);
    while (s.depth > 1) {
        const tsr__g_frame *f = &s.f[s.depth - 1];
        const tsr__g_node *n = &g->nodes[f->node];
        bool complete = (n->kind == TSR__G_NUMBER && tsr__number_complete(f->phase)) ||
                        (n->kind == TSR__G_LIT && f->a < f->b && n->lens[f->a] == f->pos);
        if (!complete) return false;
        tsr__pop(g, &s);
    }
    return s.f[0].phase == 2;
}

tsr_status tsr_grammar_matcher_new(const tsr_grammar *g, tsr_grammar_matcher **out) {
    tsr_grammar_matcher *m = calloc(1, sizeof *m);
    if (!m) return tsr_errorf(TSR_ERR_OOM, "out of memory for a grammar matcher");
    m->g = g;
    tsr__g_state_init(g, &m->st);
    *out = m;
    return TSR_OK;
}

void tsr_grammar_matcher_free(tsr_grammar_matcher *m) {
    if (!m) return;
    free(m->scratch);
    free(m);
}

bool tsr_grammar_matcher_feed(tsr_grammar_matcher *m, const char *bytes, size_t n) {
    tsr__g_state s;
    tsr__g_state_copy(&s, &m->st);
    for (size_t i = 0; i < n; i++)
        if (!tsr__g_feed_byte(m->g, &s, (uint8_t)bytes[i])) return false;
    tsr__g_state_copy(&m->st, &s);
    return true;
}

bool tsr_grammar_matcher_can_end(const tsr_grammar_matcher *m) { return tsr__g_can_end(m->g, &m->st); }

bool tsr_grammar_matcher_ended(const tsr_grammar_matcher *m) { return m->st.ended; }
