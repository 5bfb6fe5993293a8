/* Streaming a chat choice that may answer with tool calls (tools.c decides what a reply is).
 * A forced call's text is held whole and goes out at the end as one delta.tool_calls chunk; with
 * tool_choice "auto" the text is held only while the reply may still start with <tool_call>:
 * once it cannot, what was held goes out as content and the rest streams as usual.  Logprobs of
 * held tokens are not streamed. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/http.h"

static tsr__fe_chunk_info tsr__ci(const tsr__call *c) {
    tsr__fe_chunk_info ci = {c->id, c->srv->model, c->created, true, c->p.include_usage};
    return ci;
}

bool tsr__http_tool_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    if (c->api != 0 || !c->p.stream || c->p.tool_mode == TSR__FE_TOOLS_NONE || ch->tool_plain) return false;
    tsr__choice_text_append(ch, ev->text, ev->text_len);
    if (c->p.tool_mode == TSR__FE_TOOLS_FORCED || tsr__fe_tool_may_start(ch->text)) return true;
    ch->tool_plain = true;   /* not a tool call: what was held goes out now */
    tsr__fe_chunk_info ci = tsr__ci(c);
    tsr__http_sse(c->owner, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, ch->text ? ch->text : "", NULL, NULL));
    ch->sent_first = true;
    return true;
}

bool tsr__http_tool_done(tsr__call *c, tsr__choice *ch) {
    if (c->api != 0 || !c->p.stream || c->p.tool_mode == TSR__FE_TOOLS_NONE || ch->tool_plain) return false;
    tsr__fe_chunk_info ci = tsr__ci(c);
    const char *finish = tsr__srv_finish_str(ch->finish);
    cJSON *calls = tsr__fe_tool_calls(&c->p, ch->text, true);
    if (calls) {
        cJSON *j = tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, NULL);
        cJSON *d = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "delta");
        cJSON_AddNullToObject(d, "content");
        cJSON_AddItemToObject(d, "tool_calls", calls);
        tsr__http_sse(c->owner, j);
        if (!strcmp(finish, "stop")) finish = "tool_calls";
    } else if (ch->text_len) {
        tsr__http_sse(c->owner, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, ch->text, NULL, NULL));
    } else {
        tsr__http_sse(c->owner, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, NULL));
    }
    ch->sent_first = true;
    tsr__http_sse(c->owner, tsr__fe_stream_chunk(&ci, ch->index, false, NULL, NULL, finish));
    return true;
}
