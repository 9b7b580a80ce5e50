/* Local response normalization on the CPU: one pass over memory each way.
 *
 *   forward:  out_i = x_i * s_i^-beta,   s_i = k + alpha * sum_{j in W(i)} x_j^2
 *   backward: dx_j  = g_j s_j^-beta + coef * x_j * sum_{i : j in W(i)} g_i x_i s_i^(-beta-1),
 *             coef = -2 alpha beta
 *
 * W(i) = [i - before, i + after], clipped to the channels of i's tower (channels split into `groups`
 * equal towers); the i whose window holds j are [j - after, j + before], the window mirrored.
 * The backward recomputes s from x (five multiply-adds per element) instead of reading a saved
 * copy: one tensor less to write, keep and read.
 *
 * `real` is float or double (compiled once for each, -Dreal=...). Tensors are dense (N, C, H, W),
 * NCHW or channels-last (NHWC); the caller passes the images [0, n) of its share of the batch.
 * Every inner loop runs over unit-stride memory so the compiler vectorizes it.
 *
 * lrn_forward_u8 and lrn_forward_bf16 are the forward on 8-bit quantized and on bfloat16 tensors
 * (inference): they compute what widen -> forward -> narrow computes, reading and writing the narrow
 * type once per element, the float work done on a tile held in cache.
 */
#include <tgmath.h> /* sqrt, pow of `real` */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef real
#define real float
#endif

#define TILE 64 /* NCHW: positions per tile; a tower's rows of a tile stay in cache */

static void inv_pow(const real *s, real *r, int64_t len, real beta)
{
    if (beta == (real)0.75) { /* s^-0.75 = rsqrt(s) * sqrt(rsqrt(s)): no transcendental pow */
        for (int64_t i = 0; i < len; i++) {
            real q = 1 / sqrt(s[i]);
            r[i] = q * sqrt(q);
        }
    } else {
        for (int64_t i = 0; i < len; i++)
            r[i] = pow(s[i], -beta);
    }
}

/* s[i] = k + alpha * sum_{d < size} q[i + d] for i < len; q is zero-padded around the tower. */
static void window(const real *q, real *s, int64_t len, int size, real alpha, real k)
{
    memcpy(s, q, sizeof(real) * len);
    for (int d = 1; d < size; d++)
        for (int64_t i = 0; i < len; i++)
            s[i] += q[i + d];
    for (int64_t i = 0; i < len; i++)
        s[i] = k + alpha * s[i];
}

/* One tower of one channels-last position: x, out (and g, dx) point at its cg channels. */
static void nhwc_forward(const real *x, real *out, int64_t cg, int before, int size, real alpha, real beta,
                         real k, real *q, real *s)
{
    for (int64_t i = 0; i < cg; i++)
        q[before + i] = x[i] * x[i];
    window(q, s, cg, size, alpha, k);
    inv_pow(s, s, cg, beta);
    for (int64_t i = 0; i < cg; i++)
        out[i] = x[i] * s[i];
}

static void nhwc_backward(const real *g, const real *x, real *dx, int64_t cg, int before, int after, int size,
                          real alpha, real beta, real k, real *q, real *s, real *r, real *t)
{
    real coef = -2 * alpha * beta;
    for (int64_t i = 0; i < cg; i++)
        q[before + i] = x[i] * x[i];
    window(q, s, cg, size, alpha, k);
    inv_pow(s, r, cg, beta);
    for (int64_t i = 0; i < cg; i++)
        t[after + i] = g[i] * x[i] * r[i] / s[i]; /* g_i x_i s_i^(-beta-1), padded by the mirror */
    window(t, s, cg, size, 1, 0);                  /* s now holds the mirrored window sums of t */
    for (int64_t i = 0; i < cg; i++)
        dx[i] = g[i] * r[i] + coef * x[i] * s[i];
}

/* s[p] = k + alpha * sum_{j = lo..hi} q[j][p]: the window sums of one channel over a tile of NCHW
 * positions, from the tower's squares q (rows of TILE). */
static void tile_window(const real *q, real *s, int64_t lo, int64_t hi, int64_t len, real alpha, real k)
{
    memcpy(s, q + lo * TILE, sizeof(real) * len);
    for (int64_t j = lo + 1; j <= hi; j++) {
        const real *qj = q + j * TILE;
        for (int64_t p = 0; p < len; p++)
            s[p] += qj[p];
    }
    for (int64_t p = 0; p < len; p++)
        s[p] = k + alpha * s[p];
}

static int64_t clip(int64_t channel, int64_t cg) /* to the tower's channels [0, cg) */
{
    return channel < 0 ? 0 : channel >= cg ? cg - 1 : channel;
}

static void tile_squares(const real *x, real *q, int64_t hw, int64_t len, int64_t cg)
{
    for (int64_t j = 0; j < cg; j++) {
        const real *xj = x + j * hw;
        real *qj = q + j * TILE;
        for (int64_t p = 0; p < len; p++)
            qj[p] = xj[p] * xj[p];
    }
}

/* One tower of a tile of NCHW positions: rows of `len` positions, `hw` apart, starting at x;
 * q, r, t hold cg rows of TILE (squares, s^-beta, g x s^(-beta-1)), s one row. */
static void nchw_forward(const real *x, real *out, int64_t hw, int64_t len, int64_t cg, int before, int after,
                         real alpha, real beta, real k, real *q, real *s)
{
    tile_squares(x, q, hw, len, cg);
    for (int64_t i = 0; i < cg; i++) {
        tile_window(q, s, clip(i - before, cg), clip(i + after, cg), len, alpha, k);
        inv_pow(s, s, len, beta);
        const real *xi = x + i * hw;
        real *oi = out + i * hw;
        for (int64_t p = 0; p < len; p++)
            oi[p] = xi[p] * s[p];
    }
}

static void nchw_backward(const real *g, const real *x, real *dx, int64_t hw, int64_t len, int64_t cg,
                          int before, int after, real alpha, real beta, real k, real *q, real *s, real *r,
                          real *t)
{
    real coef = -2 * alpha * beta;
    tile_squares(x, q, hw, len, cg);
    for (int64_t i = 0; i < cg; i++) {
        tile_window(q, s, clip(i - before, cg), clip(i + after, cg), len, alpha, k);
        real *ri = r + i * TILE, *ti = t + i * TILE;
        inv_pow(s, ri, len, beta);
        const real *xi = x + i * hw, *gi = g + i * hw;
        for (int64_t p = 0; p < len; p++)
            ti[p] = gi[p] * xi[p] * ri[p] / s[p];
    }
    for (int64_t j = 0; j < cg; j++) {  /* the mirrored window [j - after, j + before] of t */
        tile_window(t, s, clip(j - after, cg), clip(j + before, cg), len, 1, 0);
        const real *xj = x + j * hw, *gj = g + j * hw, *rj = r + j * TILE;
        real *dj = dx + j * hw;
        for (int64_t p = 0; p < len; p++)
            dj[p] = gj[p] * rj[p] + coef * xj[p] * s[p];
    }
}

/* Scratch for one call: q, s, r, t as the helpers above need them in either layout. */
static real *scratch(int64_t cg, int size, int channels_last, real **q, real **s, real **r, real **t)
{
    int64_t rows = channels_last ? cg + size : cg * TILE; /* NCHW keeps a tile of the whole tower */
    real *buf = calloc((size_t)(4 * rows + TILE), sizeof(real));
    *q = buf, *r = buf + rows, *t = buf + 2 * rows, *s = buf + 3 * rows;
    return buf;
}

/* The forward (g == NULL: y = out) or the backward (y = dx) over images [0, n).
 * Returns 0, or -1 when scratch memory could not be allocated. */
static int lrn(const real *g, const real *x, real *y, int64_t n, int64_t c, int64_t hw, int channels_last,
               int64_t groups, int before, int after, real alpha, real beta, real k)
{
    real *q, *s, *r, *t;
    int64_t cg = c / groups;
    int size = before + after + 1;
    real *buf = scratch(cg, size, channels_last, &q, &s, &r, &t);
    if (!buf)
        return -1;
    if (channels_last) {
        for (int64_t row = 0; row < n * hw; row++)
            for (int64_t gr = 0; gr < groups; gr++) {
                int64_t at = row * c + gr * cg;
                if (g)
                    nhwc_backward(g + at, x + at, y + at, cg, before, after, size, alpha, beta, k, q, s, r,
                                  t);
                else
                    nhwc_forward(x + at, y + at, cg, before, size, alpha, beta, k, q, s);
            }
    } else {
        for (int64_t img = 0; img < n; img++)
            for (int64_t p0 = 0; p0 < hw; p0 += TILE)
                for (int64_t gr = 0; gr < groups; gr++) {
                    int64_t at = (img * c + gr * cg) * hw + p0, len = hw - p0 < TILE ? hw - p0 : TILE;
                    if (g)
                        nchw_backward(g + at, x + at, y + at, hw, len, cg, before, after, alpha, beta, k,
                                      q, s, r, t);
                    else
                        nchw_forward(x + at, y + at, hw, len, cg, before, after, alpha, beta, k, q, s);
                }
    }
    free(buf);
    return 0;
}

int lrn_forward(const real *x, real *out, int64_t n, int64_t c, int64_t hw, int channels_last, int64_t groups,
                int before, int after, double alpha, double beta, double k)
{
    return lrn(NULL, x, out, n, c, hw, channels_last, groups, before, after, (real)alpha, (real)beta,
               (real)k);
}

int lrn_backward(const real *g, const real *x, real *dx, int64_t n, int64_t c, int64_t hw, int channels_last,
                 int64_t groups, int before, int after, double alpha, double beta, double k)
{
    return lrn(g, x, dx, n, c, hw, channels_last, groups, before, after, (real)alpha, (real)beta,
               (real)k);
}

/* Forwards on tensors stored in fewer bits (inference): 8-bit quantized codes (quint8, per-tensor
 * affine) and bfloat16. Each row is widened into a float buffer, normalized as above, and narrowed
 * again as it is written: one read and one write of the narrow type per element. */
struct narrow {
    int bf16;               /* 1: bfloat16 storage; 0: quint8 codes */
    real value[256];        /* quint8: each code's value, as torch's dequantize computes it in float */
    float inv_scale;        /* quint8: 1 / the output's scale */
    float zero;             /* quint8: the output's zero point */
};

static void widen(const void *x, int64_t at, real *dst, int64_t len, const struct narrow *nw)
{
    if (nw->bf16) {
        const uint16_t *b = (const uint16_t *)x + at;
        for (int64_t i = 0; i < len; i++) {
            uint32_t u = (uint32_t)b[i] << 16; /* bfloat16 is a float's high half */
            float f;
            memcpy(&f, &u, sizeof f);
            dst[i] = (real)f;
        }
    } else {
        const uint8_t *q = (const uint8_t *)x + at;
        for (int64_t i = 0; i < len; i++)
            dst[i] = nw->value[q[i]];
    }
}

/* quint8: round to the nearest code (ties to even, as torch.quantize_per_tensor), clamped to [0, 255],
 * rintf and the clamp in float so that the loop vectorizes. bfloat16: round to nearest even, as
 * c10::BFloat16 rounds a float, a NaN to the quiet NaN 0x7fc0. */
static void narrow_to(const real *y, void *out, int64_t at, int64_t len, const struct narrow *nw)
{
    if (nw->bf16) {
        uint16_t *b = (uint16_t *)out + at;
        for (int64_t i = 0; i < len; i++) {
            float f = (float)y[i];
            uint32_t u;
            memcpy(&u, &f, sizeof u);
            b[i] = f != f ? 0x7fc0 : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
    } else {
        uint8_t *q = (uint8_t *)out + at;
        for (int64_t i = 0; i < len; i++) {
            float v = rintf((float)y[i] * nw->inv_scale) + nw->zero;
            q[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* The forward over images [0, n) of a narrow tensor. Returns 0, or -1 when scratch memory could not be
 * had. */
static int narrow_forward(const void *x, void *out, int64_t n, int64_t c, int64_t hw, int channels_last,
                          int64_t groups, int before, int after, real alpha, real beta, real k,
                          const struct narrow *nw)
{
    real *q, *s, *r, *t;
    int64_t cg = c / groups, rows = channels_last ? 1 : TILE; /* positions of a tile */
    int size = before + after + 1;
    real *buf = scratch(cg, size, channels_last, &q, &s, &r, &t);
    real *xf = malloc(sizeof(real) * (size_t)(2 * c * rows)), *yf = xf ? xf + c * rows : NULL;
    if (!buf || !xf) {
        free(buf), free(xf);
        return -1;
    }
    for (int64_t img = 0; img < n; img++)
        for (int64_t p0 = 0; p0 < hw; p0 += rows) {
            int64_t len = hw - p0 < rows ? hw - p0 : rows;
            if (channels_last) { /* one position: its c channels are contiguous */
                widen(x, (img * hw + p0) * c, xf, c, nw);
                for (int64_t gr = 0; gr < groups; gr++)
                    nhwc_forward(xf + gr * cg, yf + gr * cg, cg, before, size, alpha, beta, k, q, s);
                narrow_to(yf, out, (img * hw + p0) * c, c, nw);
            } else { /* a tile of `len` positions of each channel, rows TILE apart in xf and yf */
                for (int64_t j = 0; j < c; j++)
                    widen(x, (img * c + j) * hw + p0, xf + j * TILE, len, nw);
                for (int64_t gr = 0; gr < groups; gr++)
                    nchw_forward(xf + gr * cg * TILE, yf + gr * cg * TILE, TILE, len, cg, before, after, alpha,
                                 beta, k, q, s);
                for (int64_t j = 0; j < c; j++)
                    narrow_to(yf + j * TILE, out, (img * c + j) * hw + p0, len, nw);
            }
        }
    free(buf), free(xf);
    return 0;
}

/* The forward on quint8 tensors: x holds codes q, the values a = in_scale * (q - in_zero); the output
 * codes are round(b / out_scale) + out_zero. */
int lrn_forward_u8(const uint8_t *x, uint8_t *out, int64_t n, int64_t c, int64_t hw, int channels_last,
                   int64_t groups, int before, int after, double alpha, double beta, double k, double in_scale,
                   int64_t in_zero, double out_scale, int64_t out_zero)
{
    struct narrow nw = {.bf16 = 0, .inv_scale = 1.0f / (float)out_scale, .zero = (float)out_zero};
    for (int v = 0; v < 256; v++)
        nw.value[v] = (real)((float)((double)(v - in_zero) * in_scale)); /* torch's dequantize, in float */
    return narrow_forward(x, out, n, c, hw, channels_last, groups, before, after, (real)alpha, (real)beta,
                          (real)k, &nw);
}

/* The forward on bfloat16 tensors (raw 16-bit words), computed in `real`, rounded once. */
int lrn_forward_bf16(const uint16_t *x, uint16_t *out, int64_t n, int64_t c, int64_t hw, int channels_last,
                     int64_t groups, int before, int after, double alpha, double beta, double k)
{
    struct narrow nw = {.bf16 = 1};
    return narrow_forward(x, out, n, c, hw, channels_last, groups, before, after, (real)alpha, (real)beta,
                          (real)k, &nw);
}
