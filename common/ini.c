/* INI parsing for workspace config.ini (see ini.h). */
#include "common/ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"

typedef struct {
    char *section, *key, *value;
} tsr__ini_entry;

struct tsr_ini {
    char *path;
    tsr__ini_entry *e;
    int64_t n, cap;
};

static char *tsr__trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = 0;
    return s;
}

void tsr_ini_free(tsr_ini *ini) {
    if (!ini) return;
    for (int64_t i = 0; i < ini->n; i++) {
        free(ini->e[i].section);
        free(ini->e[i].key);
        free(ini->e[i].value);
    }
    free(ini->e);
    free(ini->path);
    free(ini);
}

tsr_status tsr_ini_load(const char *path, tsr_ini **out) {
    *out = NULL;
    char *text;
    TSR_TRY(tsr_read_file(path, 1 << 20, &text, NULL));
    tsr_ini *ini = calloc(1, sizeof *ini);
    if (!ini) {
        free(text);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    ini->path = strdup(path);
    char section[128] = "";
    int lineno = 0;
    tsr_status st = TSR_OK;
    for (char *line = text, *next; line && st == TSR_OK; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        char *s = tsr__trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || end[1]) {
                st = tsr_errorf(TSR_ERR_FORMAT, "%s:%d: bad section header '%s'", path, lineno, s);
                break;
            }
            *end = 0;
            snprintf(section, sizeof section, "%s", tsr__trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            st = tsr_errorf(TSR_ERR_FORMAT, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            break;
        }
        *eq = 0;
        if (ini->n == ini->cap) {
            ini->cap = ini->cap ? 2 * ini->cap : 32;
            tsr__ini_entry *e = realloc(ini->e, sizeof *e * (size_t)ini->cap);
            if (!e) {
                st = tsr_errorf(TSR_ERR_OOM, "out of memory");
                break;
            }
            ini->e = e;
        }
        ini->e[ini->n++] = (tsr__ini_entry){strdup(section), strdup(tsr__trim(s)), strdup(tsr__trim(eq + 1))};
    }
    free(text);
    if (st != TSR_OK) {
        tsr_ini_free(ini);
        return st;
    }
    *out = ini;
    return TSR_OK;
}

const char *tsr_ini_get(const tsr_ini *ini, const char *section, const char *key) {
    for (int64_t i = ini->n - 1; i >= 0; i--) /* the last definition wins */
        if (!strcmp(ini->e[i].section, section) && !strcmp(ini->e[i].key, key)) return ini->e[i].value;
    return NULL;
}

tsr_status tsr_ini_get_i64(const tsr_ini *ini, const char *section, const char *key, int64_t *out) {
    const char *v = tsr_ini_get(ini, section, key);
    if (!v) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: [%s] has no '%s'", ini->path, section, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return tsr_errorf(TSR_ERR_FORMAT, "%s: %s = '%s' is not an integer", ini->path, key, v);
    *out = x;
    return TSR_OK;
}

tsr_status tsr_ini_get_f64(const tsr_ini *ini, const char *section, const char *key, double *out) {
    const char *v = tsr_ini_get(ini, section, key);
    if (!v) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: [%s] has no '%s'", ini->path, section, key);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) return tsr_errorf(TSR_ERR_FORMAT, "%s: %s = '%s' is not a number", ini->path, key, v);
    *out = x;
    return TSR_OK;
}
