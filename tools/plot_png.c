/* tools/plot_png.h: rasterises a small line plot (frame, ticks, grid, series with point
 * markers, legend, 5x7 bitmap-font text drawn at 2x) into an RGB buffer and writes it as PNG
 * with libpng.  The font covers the digits and the few letters benchmark labels use; other
 * characters are drawn blank. */
#include "tools/plot_png.h"

#include <math.h>
#ifdef TSR_HAVE_PNG
#include <png.h>
#endif
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TSR_HAVE_PNG
/* Built where libpng's headers were missing (e.g. a GPU host without libpng-dev): --plot is
 * refused with a clear message; the table and --json still work. */
tsr_status tsr_plot_png(const tsr_plot *p, const char *path) {
    (void)p;
    return tsr_errorf(TSR_ERR_UNSUPPORTED, "cannot write %s: this tessera was built without libpng "
                      "(install libpng-dev and rebuild)", path);
}
#else

enum { TSR__W = 720, TSR__H = 440, TSR__ML = 96, TSR__MR = 96, TSR__MT = 56, TSR__MB = 64, TSR__SC = 2 };

/* 5x7 glyphs: 7 rows, bit 4 of each row is the leftmost pixel. */
static const struct { char c; uint8_t rows[7]; } tsr__font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1E, 0x01, 0x01, 0x0E, 0x01, 0x01, 0x1E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}}, {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}},
    {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}}, {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}},
    {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}}, {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}}, {'g', {0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}}, {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}}, {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}}, {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}}, {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}},
    {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}}, {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
};

typedef struct {
    uint8_t *px;   /* TSR__W * TSR__H * 3 */
} tsr__canvas;

static void tsr__put(tsr__canvas *cv, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= TSR__W || y >= TSR__H) return;
    memcpy(cv->px + ((size_t)y * TSR__W + (size_t)x) * 3, rgb, 3);
}

static void tsr__rect(tsr__canvas *cv, int x0, int y0, int w, int h, const uint8_t rgb[3]) {
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++) tsr__put(cv, x, y, rgb);
}

/* A line 2 px thick (Bresenham, each point stamped as a 2x2 block). */
static void tsr__line(tsr__canvas *cv, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        tsr__rect(cv, x0, y0, 2, 2, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

static int tsr__text_w(const char *s) { return (int)strlen(s) * 6 * TSR__SC; }

static void tsr__text(tsr__canvas *cv, int x, int y, const char *s, const uint8_t rgb[3]) {
    for (; *s; s++, x += 6 * TSR__SC) {
        const uint8_t *rows = NULL;
        for (size_t g = 0; g < sizeof tsr__font / sizeof tsr__font[0]; g++)
            if (tsr__font[g].c == *s) rows = tsr__font[g].rows;
        if (!rows) continue;
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++)
                if (rows[r] & (0x10 >> c)) tsr__rect(cv, x + c * TSR__SC, y + r * TSR__SC, TSR__SC, TSR__SC, rgb);
    }
}

/* A "nice" axis top (1, 2 or 5 times a power of ten) at or above v. */
static double tsr__nice_top(double v) {
    if (!(v > 0)) return 1;
    double p = pow(10, floor(log10(v)));
    for (int i = 0; i < 3; i++) {
        double m = (double[]){1, 2, 5}[i] * p;
        if (m >= v) return m;
    }
    return 10 * p;
}

static void tsr__fmt(char *buf, size_t n, double v) {
    if (fabs(v - round(v)) < 1e-9 || fabs(v) >= 100) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.1f", v);
}

static tsr_status tsr__write(const tsr__canvas *cv, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return tsr_errorf(TSR_ERR_IO, "%s: cannot create the plot", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return tsr_errorf(TSR_ERR_IO, "%s: writing the PNG failed", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, TSR__W, TSR__H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < TSR__H; y++) png_write_row(png, cv->px + (size_t)y * TSR__W * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) return tsr_errorf(TSR_ERR_IO, "%s: writing the PNG failed", path);
    return TSR_OK;
}

tsr_status tsr_plot_png(const tsr_plot *p, const char *path) {
    static const uint8_t black[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, grey[3] = {90, 90, 90};
    tsr__canvas cv = {malloc((size_t)TSR__W * TSR__H * 3)};
    if (!cv.px) return tsr_errorf(TSR_ERR_IO, "%s: out of memory", path);
    memset(cv.px, 255, (size_t)TSR__W * TSR__H * 3);
    const int px0 = TSR__ML, px1 = TSR__W - TSR__MR, py0 = TSR__MT, py1 = TSR__H - TSR__MB;

    /* ranges: x over every point; each y axis from 0 to a nice top over its series */
    double xmin = INFINITY, xmax = -INFINITY, ytop[2] = {0, 0};
    for (int s = 0; s < p->n_series; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (x < xmin) xmin = x;
            if (x > xmax) xmax = x;
            if (y > ytop[p->series[s].right_axis != 0]) ytop[p->series[s].right_axis != 0] = y;
        }
    if (!(xmin < xmax)) xmin = isfinite(xmin) ? xmin - 1 : 0, xmax = isfinite(xmax) ? xmax + 1 : 1;
    for (int a = 0; a < 2; a++) ytop[a] = tsr__nice_top(ytop[a] * 1.05);
    double xpad = 0.06 * (xmax - xmin);
    xmin -= xpad, xmax += xpad;
#define TSR__SX(x) (px0 + (int)lround(((x) - xmin) / (xmax - xmin) * (px1 - px0)))
#define TSR__SY(y, a) (py1 - (int)lround((y) / ytop[a] * (py1 - py0)))

    /* grid and y ticks: 5 steps on each axis */
    char buf[32];
    for (int k = 0; k <= 5; k++) {
        int y = py1 - k * (py1 - py0) / 5;
        tsr__line(&cv, px0, y, px1, y, grid);
        tsr__fmt(buf, sizeof buf, ytop[0] * k / 5);
        tsr__text(&cv, px0 - 8 - tsr__text_w(buf), y - 7, buf, black);
        if (p->ylabel_right) {
            tsr__fmt(buf, sizeof buf, ytop[1] * k / 5);
            tsr__text(&cv, px1 + 8, y - 7, buf, black);
        }
    }
    /* x ticks at the points of the first series (the sweep's sizes) */
    if (p->n_series > 0)
        for (int i = 0; i < p->series[0].n; i++) {
            int x = TSR__SX(p->series[0].x[i]);
            tsr__line(&cv, x, py1, x, py1 + 6, black);
            tsr__fmt(buf, sizeof buf, p->series[0].x[i]);
            tsr__text(&cv, x - tsr__text_w(buf) / 2, py1 + 12, buf, black);
        }
    /* frame */
    tsr__line(&cv, px0, py0, px1, py0, black);
    tsr__line(&cv, px0, py1, px1, py1, black);
    tsr__line(&cv, px0, py0, px0, py1, black);
    tsr__line(&cv, px1, py0, px1, py1, black);

    /* series: lines, then a square marker at each point */
    for (int s = 0; s < p->n_series; s++) {
        const tsr_plot_series *se = &p->series[s];
        int a = se->right_axis != 0;
        for (int i = 0; i < se->n; i++) {
            int x = TSR__SX(se->x[i]), y = TSR__SY(se->y[i], a);
            if (i > 0) tsr__line(&cv, TSR__SX(se->x[i - 1]), TSR__SY(se->y[i - 1], a), x, y, se->rgb);
            tsr__rect(&cv, x - 4, y - 4, 9, 9, se->rgb);
        }
    }
#undef TSR__SX
#undef TSR__SY

    /* labels and legend */
    if (p->title) tsr__text(&cv, (TSR__W - tsr__text_w(p->title)) / 2, 12, p->title, black);
    if (p->xlabel) tsr__text(&cv, (px0 + px1 - tsr__text_w(p->xlabel)) / 2, TSR__H - 24, p->xlabel, black);
    if (p->ylabel_left) tsr__text(&cv, 8, py0 - 24, p->ylabel_left, grey);
    if (p->ylabel_right) tsr__text(&cv, TSR__W - 8 - tsr__text_w(p->ylabel_right), py0 - 24, p->ylabel_right, grey);
    for (int s = 0; s < p->n_series; s++) {
        int y = py0 + 10 + s * 20;
        tsr__rect(&cv, px0 + 10, y + 3, 16, 8, p->series[s].rgb);
        tsr__text(&cv, px0 + 32, y, p->series[s].label ? p->series[s].label : "", black);
    }
    tsr_status st = tsr__write(&cv, path);
    free(cv.px);
    return st;
}

#endif /* TSR_HAVE_PNG */
