/* File helpers (see fileutil.h). */
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

tsr_status tsr_mmap_open(const char *path, tsr_mmap *m) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tsr_errorf(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return tsr_errorf(TSR_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tsr_errorf(TSR_ERR_IO, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return tsr_errorf(TSR_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    m->path = strdup(path);
    return TSR_OK;
}

void tsr_mmap_close(tsr_mmap *m) {
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

tsr_status tsr_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return tsr_errorf(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return tsr_errorf(TSR_ERR_IO, "%s: cannot seek", path); }
    long sz = ftell(f);
    if (sz < 0) { fclose(f); return tsr_errorf(TSR_ERR_IO, "%s: cannot tell size", path); }
    if ((size_t)sz > max_bytes) {
        fclose(f);
        return tsr_errorf(TSR_ERR_FORMAT, "%s: file is %ld bytes, more than the %zu accepted", path, sz, max_bytes);
    }
    rewind(f);
    char *buf = malloc((size_t)sz + 1);
    if (!buf) { fclose(f); return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path); }
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) { free(buf); return tsr_errorf(TSR_ERR_IO, "%s: short read", path); }
    buf[sz] = 0;
    *out = buf;
    if (len) *len = (size_t)sz;
    return TSR_OK;
}

tsr_status tsr_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return tsr_errorf(TSR_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t put = fwrite(data, 1, len, f);
    int rc = fclose(f);
    if (put != len || rc != 0) return tsr_errorf(TSR_ERR_IO, "%s: write failed", path);
    return TSR_OK;
}

bool tsr_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool tsr_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *tsr_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    TSR_ASSERT(s);
    memcpy(s, a, la);
    size_t n = la;
    if (n && s[n - 1] != '/') s[n++] = '/';
    memcpy(s + n, b, lb + 1);
    return s;
}

char *tsr_home_dir(void) {
    const char *e = getenv("TESSERA_HOME");
    if (e && *e) return strdup(e);
    const char *home = getenv("HOME");
    return tsr_path_join(home && *home ? home : "/tmp", ".cache/tessera");
}

char *tsr_default_model_path(void) {
    char *h = tsr_home_dir();
    char *p = tsr_path_join(h, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    free(h);
    return p;
}
