/* gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflection, proto/reflection.proto)
 * so that grpcurl and other clients list and describe the services without the .proto files.
 * The descriptors are not written here: the build runs protoc-c --descriptor_set_out on each
 * proto/ file and embeds the FileDescriptorSet (proto/CMakeLists.txt); this file only reads the
 * few fields it needs to answer (a file's name and package, its messages, enums and services)
 * from the protobuf wire format, and hands the serialized FileDescriptorProto back untouched. */
#include <stdio.h>
#include <string.h>

#include "coordinator/frontend/grpc.h"
#include "reflection.pb-c.h"

extern const unsigned char tsr__desc_tessera[], tsr__desc_health[], tsr__desc_reflection[];
extern const size_t tsr__desc_tessera_len, tsr__desc_health_len, tsr__desc_reflection_len;

#define TSR__REFL_V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define TSR__REFL_V1A "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

bool tsr__grpc_reflection_path(const char *path) { return !strcmp(path, TSR__REFL_V1) || !strcmp(path, TSR__REFL_V1A); }

/* ---- just enough of the wire format: varints and length-delimited fields ---- */

typedef struct tsr__pb {
    const uint8_t *p, *end;
} tsr__pb;

static bool tsr__pb_varint(tsr__pb *b, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
        uint8_t c = *b->p++;
        *v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) return true;
    }
    return false;
}

/* The next field: its number, and for length-delimited ones (wire type 2) the bytes; other
 * wire types are skipped over.  False at the end or on malformed input. */
static bool tsr__pb_next(tsr__pb *b, uint32_t *field, const uint8_t **data, size_t *len) {
    while (b->p < b->end) {
        uint64_t key, v;
        if (!tsr__pb_varint(b, &key)) return false;
        *field = (uint32_t)(key >> 3);
        switch (key & 7) {
        case 0: if (!tsr__pb_varint(b, &v)) return false; break;
        case 1: if (b->end - b->p < 8) return false; b->p += 8; break;
        case 5: if (b->end - b->p < 4) return false; b->p += 4; break;
        case 2:
            if (!tsr__pb_varint(b, &v) || v > (uint64_t)(b->end - b->p)) return false;
            *data = b->p;
            *len = (size_t)v;
            b->p += v;
            return true;
        default: return false;
        }
    }
    return false;
}

/* ---- the embedded files ---- */

typedef struct tsr__pfile {
    const uint8_t *fd;       /* serialized FileDescriptorProto */
    size_t n;
} tsr__pfile;

/* The first (only) file of an embedded FileDescriptorSet (field 1: file). */
static tsr__pfile tsr__set_file(const unsigned char *set, size_t len) {
    tsr__pb b = {set, set + len};
    uint32_t f;
    const uint8_t *d;
    size_t n;
    while (tsr__pb_next(&b, &f, &d, &n))
        if (f == 1) return (tsr__pfile){d, n};
    return (tsr__pfile){NULL, 0};
}

static int tsr__files(tsr__pfile out[3]) {
    out[0] = tsr__set_file(tsr__desc_tessera, tsr__desc_tessera_len);
    out[1] = tsr__set_file(tsr__desc_health, tsr__desc_health_len);
    out[2] = tsr__set_file(tsr__desc_reflection, tsr__desc_reflection_len);
    return 3;
}

/* A string field of a message (the first with that number), copied into out. */
static void tsr__pb_string(const uint8_t *m, size_t n, uint32_t want, char *out, size_t cap) {
    tsr__pb b = {m, m + n};
    uint32_t f;
    const uint8_t *d;
    size_t l;
    out[0] = 0;
    while (tsr__pb_next(&b, &f, &d, &l))
        if (f == want) {
            snprintf(out, cap, "%.*s", (int)l, (const char *)d);
            return;
        }
}

/* Whether a message (DescriptorProto: name 1, nested_type 3, enum_type 4) or enum (name 1) or
 * service (ServiceDescriptorProto: name 1, method 2) named by `rest` (relative to its scope) is
 * declared in m.  kind: 0 message, 1 enum, 2 service. */
static bool tsr__decl_has(const uint8_t *m, size_t n, int kind, const char *rest) {
    char name[256];
    tsr__pb_string(m, n, 1, name, sizeof name);
    size_t nl = strlen(name);
    if (strncmp(rest, name, nl) || (rest[nl] && rest[nl] != '.')) return false;
    if (!rest[nl]) return true;
    const char *sub = rest + nl + 1;
    tsr__pb b = {m, m + n};
    uint32_t f;
    const uint8_t *d;
    size_t l;
    while (tsr__pb_next(&b, &f, &d, &l)) {
        if (kind == 0 && f == 3 && tsr__decl_has(d, l, 0, sub)) return true;
        if (kind == 0 && f == 4 && tsr__decl_has(d, l, 1, sub)) return true;
        if (kind == 2 && f == 2) {   /* a method: a leaf */
            char mn[256];
            tsr__pb_string(d, l, 1, mn, sizeof mn);
            if (!strcmp(mn, sub)) return true;
        }
    }
    return false;
}

/* Whether the file (package 2, message_type 4, enum_type 5, service 6) declares symbol. */
static bool tsr__file_has_symbol(const tsr__pfile *pf, const char *symbol) {
    char pkg[256];
    tsr__pb_string(pf->fd, pf->n, 2, pkg, sizeof pkg);
    size_t pl = strlen(pkg);
    const char *rest = symbol;
    if (pl) {
        if (strncmp(symbol, pkg, pl) || symbol[pl] != '.') return false;
        rest = symbol + pl + 1;
    }
    tsr__pb b = {pf->fd, pf->fd + pf->n};
    uint32_t f;
    const uint8_t *d;
    size_t l;
    while (tsr__pb_next(&b, &f, &d, &l))
        if ((f == 4 && tsr__decl_has(d, l, 0, rest)) || (f == 5 && tsr__decl_has(d, l, 1, rest)) ||
            (f == 6 && tsr__decl_has(d, l, 2, rest)))
            return true;
    return false;
}

/* ---- the answers ---- */

static void tsr__refl_error(Grpc__Reflection__V1__ServerReflectionResponse *r, Grpc__Reflection__V1__ErrorResponse *e,
                            int code, const char *msg) {
    e->error_code = code;
    e->error_message = (char *)msg;
    r->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    r->error_response = e;
}

void tsr__grpc_reflection_message(tsr__gstream *s, const uint8_t *msg, size_t n) {
    Grpc__Reflection__V1__ServerReflectionRequest *q = grpc__reflection__v1__server_reflection_request__unpack(NULL, n, msg);
    if (!q) return tsr__grpc_reject(s, TSR__GRPC_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
    Grpc__Reflection__V1__ServerReflectionResponse r = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse ls = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    r.valid_host = q->host;
    r.original_request = q;
    tsr__pfile files[3];
    int nf = tsr__files(files);
    /* services: every file's, with its package; both reflection versions are served */
    char names[8][128];
    Grpc__Reflection__V1__ServiceResponse sv[8], *svp[8];
    ProtobufCBinaryData fd[1];
    const tsr__pfile *hit = NULL;
    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
        int k = 0;
        for (int i = 0; i < nf && k < 7; i++) {
            char pkg[64];
            tsr__pb_string(files[i].fd, files[i].n, 2, pkg, sizeof pkg);
            tsr__pb b = {files[i].fd, files[i].fd + files[i].n};
            uint32_t f;
            const uint8_t *d;
            size_t l;
            while (k < 7 && tsr__pb_next(&b, &f, &d, &l)) {
                if (f != 6) continue;
                char sn[64];
                tsr__pb_string(d, l, 1, sn, sizeof sn);
                snprintf(names[k++], sizeof names[0], "%s%s%s", pkg, pkg[0] ? "." : "", sn);
            }
        }
        snprintf(names[k++], sizeof names[0], "grpc.reflection.v1alpha.ServerReflection");
        for (int i = 0; i < k; i++) {
            grpc__reflection__v1__service_response__init(&sv[i]);
            sv[i].name = names[i];
            svp[i] = &sv[i];
        }
        ls.n_service = (size_t)k;
        ls.service = svp;
        r.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        r.list_services_response = &ls;
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        for (int i = 0; i < nf && !hit; i++) {
            char fn[128];
            tsr__pb_string(files[i].fd, files[i].n, 1, fn, sizeof fn);
            if (!strcmp(fn, q->file_by_filename)) hit = &files[i];
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        for (int i = 0; i < nf && !hit; i++)
            if (tsr__file_has_symbol(&files[i], q->file_containing_symbol)) hit = &files[i];
        break;
    default:
        tsr__refl_error(&r, &er, TSR__GRPC_UNIMPLEMENTED, "only list_services, file_by_filename and file_containing_symbol");
        break;
    }
    if (q->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME ||
        q->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL) {
        if (hit) {
            fd[0].data = (uint8_t *)hit->fd;
            fd[0].len = hit->n;
            fr.n_file_descriptor_proto = 1;
            fr.file_descriptor_proto = fd;
            r.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            r.file_descriptor_response = &fr;
        } else {
            tsr__refl_error(&r, &er, TSR__GRPC_NOT_FOUND, "not found");
        }
    }
    tsr__grpc_send(s, &r.base);
    grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
}
