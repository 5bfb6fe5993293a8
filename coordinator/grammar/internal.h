/* What the grammar's files share (private to coordinator/grammar/): the node graph schema.c
 * builds and matcher.c walks, and the matcher's frames (vocab.c copies whole states while it
 * walks the token trie).  grammar.h says what the automaton accepts. */
#ifndef TSR_GRAMMAR_INTERNAL_H
#define TSR_GRAMMAR_INTERNAL_H

#include "coordinator/grammar/grammar.h"

typedef enum {
    TSR__G_ALT = 1,   /* a value that is one of several, told apart by its first byte */
    TSR__G_LIT,       /* one of a set of byte strings (enum, const, true/false/null, keys) */
    TSR__G_STRING,
    TSR__G_NUMBER,
    TSR__G_OBJECT,
    TSR__G_ARRAY,
    TSR__G_DOC,       /* the whole output: whitespace, the root value, whitespace */
} tsr__g_kind;

typedef struct tsr__g_node {
    tsr__g_kind kind;
    /* ALT: alternatives (node ids) and, once resolved, the concrete node for each first byte */
    int32_t *alts;
    int n_alts;
    int32_t *by_byte;            /* [256], -1: no alternative starts with that byte */
    bool resolving;
    /* LIT: sorted, distinct; map[k] is the sorted k-th literal's index as given */
    char **lits;
    uint32_t *lens;
    int32_t *map;
    int32_t n_lits;
    /* STRING: characters (code points, an escape counts one) */
    int64_t min_len, max_len;    /* max < 0: none */
    /* NUMBER */
    bool integer;
    /* OBJECT: listed properties (in order), or with n_props == 0 any keys whose values are
     * `additional` (-1: no keys at all) */
    int32_t n_props;
    char **prop_names;
    int32_t *prop_value;         /* [n_props] node ids */
    bool *prop_required;
    int32_t *next_required;      /* [n_props + 1]: first required index >= i, n_props if none */
    int32_t *key_lit;            /* [n_props]: LIT node of the keys that may come at position i */
    int32_t additional;
    int32_t *tag_values;         /* tool calls: property 1's node picked by property 0's literal */
    /* ARRAY */
    int32_t items;
    int64_t min_items, max_items;   /* max < 0: none */
    /* DOC */
    int32_t root;
} tsr__g_node;

struct tsr_grammar {
    tsr__g_node *nodes;
    int32_t n_nodes, cap_nodes;
    int32_t doc;                 /* the DOC node */
    int32_t any, key_string;     /* shared nodes: any JSON value, a plain string (-1 until made) */
};

typedef struct tsr__g_frame {
    int32_t node;
    uint8_t phase;
    uint8_t sub;                 /* STRING: continuation / hex digits left */
    uint16_t pos;                /* LIT: bytes matched; NUMBER: bytes; STRING: a UTF-8 lead byte */
    int32_t a, b, c;             /* LIT: [a, b) candidates; STRING: characters; ARRAY: items;
                                    OBJECT: a next property, b current one, c tag */
} tsr__g_frame;

typedef struct tsr__g_state {
    int32_t depth;
    int32_t ws;                  /* whitespace bytes in a row */
    uint8_t ws_first;            /* and the first of them */
    bool ended;                  /* the end token was taken */
    tsr__g_frame f[TSR_GRAMMAR_MAX_DEPTH];
} tsr__g_state;

struct tsr_grammar_matcher {
    const tsr_grammar *g;
    tsr__g_state st;
    tsr__g_state *scratch;       /* fill_mask: one state per trie depth */
    int64_t n_scratch;
};

/* matcher.c */
void tsr__g_state_init(const tsr_grammar *g, tsr__g_state *s);
bool tsr__g_feed_byte(const tsr_grammar *g, tsr__g_state *s, uint8_t c);
bool tsr__g_can_end(const tsr_grammar *g, const tsr__g_state *s);
static inline void tsr__g_state_copy(tsr__g_state *dst, const tsr__g_state *src) {
    dst->depth = src->depth;
    dst->ws = src->ws;
    dst->ws_first = src->ws_first;
    dst->ended = src->ended;
    for (int32_t i = 0; i < src->depth; i++) dst->f[i] = src->f[i];
}

#endif
