/* A tiny line-plot writer for benchmark sweeps: series of (x, y) points on a left or right
 * y axis, drawn with axes, ticks and 5x7 bitmap-font labels into an RGB PNG (libpng). */
#ifndef TSR_PLOT_PNG_H
#define TSR_PLOT_PNG_H

#include <stdint.h>

typedef struct {
    const char *label;    /* legend text */
    const double *x, *y;  /* n points, drawn in order */
    int n;
    int right_axis;       /* 0: left y axis, 1: right y axis */
    uint8_t rgb[3];
} tsr_plot_series;

typedef struct {
    const char *title, *xlabel, *ylabel_left, *ylabel_right;  /* ylabel_right NULL: no right axis */
    const tsr_plot_series *series;
    int n_series;
} tsr_plot;

/* Writes the plot to path; TSR_OK or TSR_ERR_IO (tsr_last_error says why). */
#include "common/status.h"
tsr_status tsr_plot_png(const tsr_plot *p, const char *path);

#endif
