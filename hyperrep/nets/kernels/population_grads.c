/* Loss gradients of a population of small CNNs, each model on its own batch of images.
 *
 * hyperrep.native compiles this file on first use (cc -O3 -march=native -fno-trapping-math, which
 * lets the activation loops vectorise) and calls it through
 * ctypes on disjoint ranges of models from several threads, so it keeps no global state.
 * A model is one flat float vector in the public zoos' order (per layer: weight, then bias);
 * a layer is a convolution (no padding, stride 1, optional 2x2 max-pool) or a linear layer, and
 * every layer but the last is followed by the activation. The order inside a conv layer is
 * conv -> pool -> activation, as hyperrep.cnn.forward.
 *
 * Why: PyTorch runs these tiny layers at a few GFLOP/s, whatever way the models are stacked
 * (docs/benchmarks.md). Here one image's activations stay in L1 cache, the conv inner loops
 * vectorise over an output row, and backward through a max-pool touches only the window's
 * winner, which skips three quarters of the dense gradient's multiply-adds.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_CONV = 0, KIND_FC = 1 };
enum { ACT_TANH = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_LEAKYRELU = 3 };
#define MAX_LAYERS 16

/* Built once per architecture: ARCH_SPEC (5 ints per layer: kind, in, out, kernel, pool), IN_C
 * and SIDE are compile-time constants, so the compiler unrolls and vectorises every loop for the
 * exact layer sizes (measured: several times faster than the same code with run-time sizes). */
#ifndef ARCH_SPEC
#error "compile with -DARCH_SPEC=... -DIN_C=... -DSIDE=..."
#endif
static const int32_t SPEC[] = {ARCH_SPEC};
enum { N_LAYERS = sizeof(SPEC) / (5 * sizeof(int32_t)) };
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    int kind, cin, cout, k, pool;
    int h, w;        /* input side (conv) */
    int ho, wo;      /* conv output side before pooling */
    int oh, ow;      /* output side after pooling (= ho, wo without) */
    int n_in, n_out; /* input and output sizes of one image */
    int w_off, b_off;
} Layer;

/* exp and tanh as Cephes computes them (within 2 ulp of libm), written without branches so the
 * activation loops vectorise; libm's scalar tanhf took 40 % of the kernel's time. */
INLINE float fast_expf(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : (x < -87.3365447504f ? -87.3365447504f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    x = x - n * 0.693359375f + n * 2.12194440e-4f;
    const float z = x * x;
    const float y = (((((1.9875691500E-4f * x + 1.3981999507E-3f) * x + 8.3334519073E-3f) * x
                     + 4.1665795894E-2f) * x + 1.6666665459E-1f) * x + 5.0000001201E-1f) * z + x + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

INLINE float fast_tanhf(float x) {
    const float a = fabsf(x), z = x * x;
    const float small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z
                          + 1.33314422036E-1f) * z - 3.33332819422E-1f) * z * x + x;
    const float large = copysignf(1.0f - 2.0f / (fast_expf(2.0f * (a < 44.0f ? a : 44.0f)) + 1.0f), x);
    return a < 0.625f ? small : large;
}

/* out[j] = act(out[j]); the switch sits outside the loops so each loop vectorises */
INLINE void activate(int act, float *restrict out, int n) {
    switch (act) {
    case ACT_TANH: for (int j = 0; j < n; j++) out[j] = fast_tanhf(out[j]); break;
    case ACT_RELU: for (int j = 0; j < n; j++) out[j] = out[j] > 0.f ? out[j] : 0.f; break;
    case ACT_SIGMOID: for (int j = 0; j < n; j++) out[j] = 1.f / (1.f + fast_expf(-out[j])); break;
    default: for (int j = 0; j < n; j++) out[j] = out[j] > 0.f ? out[j] : 0.01f * out[j];
    }
}

/* d act / d z written with the activation's output a */
INLINE float activation_slope(int act, float a) {
    switch (act) {
    case ACT_TANH: return 1.f - a * a;
    case ACT_RELU: return a > 0.f ? 1.f : 0.f;
    case ACT_SIGMOID: return a * (1.f - a);
    default: return a > 0.f ? 1.f : 0.01f;
    }
}

INLINE int describe(int n_layers, const int32_t *spec, int in_c, int side, Layer *layers) {
    int h = side, w = side, c = in_c, offset = 0, flat = in_c * side * side;
#pragma GCC unroll 16
    for (int i = 0; i < n_layers; i++) {
        Layer *L = &layers[i];
        L->kind = spec[5 * i]; L->cin = spec[5 * i + 1]; L->cout = spec[5 * i + 2];
        L->k = spec[5 * i + 3]; L->pool = spec[5 * i + 4];
        if (L->kind == KIND_CONV) {
            if (L->cin != c) return -1;
            L->h = h; L->w = w; L->ho = h - L->k + 1; L->wo = w - L->k + 1;
            L->oh = L->pool ? L->ho / 2 : L->ho; L->ow = L->pool ? L->wo / 2 : L->wo;
            L->n_in = c * h * w; L->n_out = L->cout * L->oh * L->ow;
            L->w_off = offset; offset += L->cout * L->cin * L->k * L->k;
            h = L->oh; w = L->ow; c = L->cout;
        } else {
            if (L->cin != flat) return -1;
            L->n_in = L->cin; L->n_out = L->cout;
            L->w_off = offset; offset += L->cout * L->cin;
        }
        L->b_off = offset; offset += L->cout;
        flat = L->n_out;
    }
    return offset;
}

/* full conv output [cout][ho][wo] (bias included) of input [cin][h][w]; one output row of all
 * channels is accumulated at a time, so each loaded input row feeds cout multiply-adds */
#define MAX_ROW 1024
INLINE void conv_forward(const Layer *L, const float *restrict wt, const float *restrict bias,
                         const float *restrict in, float *restrict out) {
    const int ho = L->ho, wo = L->wo, k = L->k, h = L->h, w = L->w, cin = L->cin, cout = L->cout;
    for (int y = 0; y < ho; y++) {
        float acc[MAX_ROW];
        for (int co = 0; co < cout; co++)
            for (int x = 0; x < wo; x++) acc[co * wo + x] = bias[co];
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const float *restrict r = in + (ci * h + y + ky) * w + kx;
                    for (int co = 0; co < cout; co++) {
                        const float wv = wt[((co * cin + ci) * k + ky) * k + kx];
                        for (int x = 0; x < wo; x++) acc[co * wo + x] += wv * r[x];
                    }
                }
        for (int co = 0; co < cout; co++)
            for (int x = 0; x < wo; x++) out[(co * ho + y) * wo + x] = acc[co * wo + x];
    }
}

/* 2x2 max-pool (floor) of [c][ho][wo]; keeps the flat index of each window's first maximum */
INLINE void pool_forward(const Layer *L, const float *restrict full, float *restrict out, int32_t *restrict arg) {
    const int ho = L->ho, wo = L->wo, oh = L->oh, ow = L->ow;
    for (int c = 0; c < L->cout; c++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int best = (c * ho + 2 * y) * wo + 2 * x;
                const int cand[3] = {best + 1, best + wo, best + wo + 1};
                float v = full[best];
                for (int j = 0; j < 3; j++)
                    if (full[cand[j]] > v) { v = full[cand[j]]; best = cand[j]; }
                out[(c * oh + y) * ow + x] = v;
                arg[(c * oh + y) * ow + x] = best;
            }
}

/* A conv layer's gradients from dz [cout][ho][wo], the loss gradient at its (pre-pool) output:
 * dW += correlation of the input with dz, db += sum of dz, d_in += dz convolved with the kernels.
 * Dense loops over output rows vectorise; through a max-pool dz is zero but at the winners. */
INLINE void conv_backward(const Layer *L, const float *restrict wt, const float *restrict in,
                          const float *restrict dz, float *restrict gw, float *restrict gb, float *restrict d_in) {
    const int ho = L->ho, wo = L->wo, k = L->k, h = L->h, w = L->w, cin = L->cin, cout = L->cout;
    for (int co = 0; co < cout; co++) {
        const float *restrict d = dz + co * ho * wo;
        float acc[MAX_ROW];
        for (int x = 0; x < wo; x++) acc[x] = 0.f;
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) acc[x] += d[y * wo + x];
        float sum = 0.f;
        for (int x = 0; x < wo; x++) sum += acc[x];
        gb[co] += sum;
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    for (int x = 0; x < wo; x++) acc[x] = 0.f;
                    for (int y = 0; y < ho; y++) {
                        const float *restrict r = in + (ci * h + y + ky) * w + kx;
                        for (int x = 0; x < wo; x++) acc[x] += d[y * wo + x] * r[x];
                    }
                    float s = 0.f;
                    for (int x = 0; x < wo; x++) s += acc[x];
                    gw[((co * cin + ci) * k + ky) * k + kx] += s;
                }
    }
    if (!d_in) return;
    for (int ci = 0; ci < cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++)
                for (int co = 0; co < cout; co++) {
                    const float wv = wt[((co * cin + ci) * k + ky) * k + kx];
                    const float *restrict d = dz + co * ho * wo;
                    for (int y = 0; y < ho; y++) {
                        float *restrict r = d_in + (ci * h + y + ky) * w + kx;
                        for (int x = 0; x < wo; x++) r[x] += wv * d[y * wo + x];
                    }
                }
}

/* The same through a max-pool with narrow output rows, winner by winner: only the winning
 * positions have a gradient. The input and the kernels are laid out channels-last first, so each
 * kernel row (kx, ci) is one contiguous run of k * cin floats and the updates vectorise. */
typedef struct { float *in, *wt, *gw, *d_in; } ChannelsLast;

INLINE void conv_backward_winners(const Layer *L, const float *restrict wt, const float *restrict in,
                                  const float *restrict g_out, const int32_t *restrict arg, const ChannelsLast *t,
                                  float *restrict gw, float *restrict gb, float *restrict d_in) {
    const int k = L->k, h = L->h, w = L->w, cin = L->cin, cout = L->cout, row = k * cin;
    const int plane = L->ho * L->wo, pooled = L->oh * L->ow;
    float *restrict in_t = t->in, *restrict wt_t = t->wt, *restrict gw_t = t->gw, *restrict d_t = t->d_in;
    for (int ci = 0; ci < cin; ci++)
        for (int p = 0; p < h * w; p++) in_t[p * cin + ci] = in[ci * h * w + p];
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int q = 0; q < k * k; q++) wt_t[(co * k * k + q) * cin + ci] = wt[(co * cin + ci) * k * k + q];
    memset(gw_t, 0, sizeof(float) * cout * k * row);
    if (d_in) memset(d_t, 0, sizeof(float) * h * w * cin);
    for (int j = 0; j < L->n_out; j++) {
        const float g = g_out[j];
        if (g == 0.f) continue;
        const int co = j / pooled, pos = arg[j] - co * plane, y = pos / L->wo, x = pos % L->wo;
        gb[co] += g;
        for (int ky = 0; ky < k; ky++) {
            const float *restrict src = in_t + ((y + ky) * w + x) * cin;
            float *restrict dst = gw_t + (co * k + ky) * row;
            for (int f = 0; f < row; f++) dst[f] += g * src[f];
            if (d_in) {
                const float *restrict kern = wt_t + (co * k + ky) * row;
                float *restrict back = d_t + ((y + ky) * w + x) * cin;
                for (int f = 0; f < row; f++) back[f] += g * kern[f];
            }
        }
    }
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int q = 0; q < k * k; q++) gw[(co * cin + ci) * k * k + q] += gw_t[(co * k * k + q) * cin + ci];
    if (d_in)
        for (int ci = 0; ci < cin; ci++)
            for (int p = 0; p < h * w; p++) d_in[ci * h * w + p] = d_t[p * cin + ci];
}

/* The first layer's weight gradients through a max-pool, winner by winner (it needs no input
 * gradient): for each output channel the k x k kernel's gradient is held in k * cin vectors of 8
 * lanes (lanes 0..k-1 used), and each winner adds g times the k input rows under its window.
 * This skips the three quarters of the dense correlation that multiply zeros, with one load
 * per multiply-add. `in` must have 8 readable floats past the image (a padded copy). */
typedef float v8f __attribute__((vector_size(32)));
enum { FIRST_ROWS = 16 };
INLINE v8f load8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }

INLINE int first_layer_winners_fits(const Layer *L) {
    return L->kind == KIND_CONV && L->pool && L->k <= 8 && L->cin * L->k <= FIRST_ROWS;
}

INLINE void first_conv_weight_grads(const Layer *L, const float *restrict in, const float *restrict g_out,
                                    const int32_t *restrict arg, float *restrict gw, float *restrict gb) {
    const int k = L->k, h = L->h, w = L->w, cin = L->cin, wo = L->wo;
    const int plane = L->ho * wo, pooled = L->oh * L->ow;
    for (int co = 0; co < L->cout; co++) {
        v8f acc[FIRST_ROWS];
        for (int r = 0; r < cin * k; r++) acc[r] = (v8f){0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        float bias_sum = 0.f;
        for (int j = co * pooled; j < (co + 1) * pooled; j++) {
            const float g = g_out[j];
            const int pos = arg[j] - co * plane, y = pos / wo, x = pos % wo;
            bias_sum += g;
            for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < k; ky++)
                    acc[ci * k + ky] += g * load8(in + (ci * h + y + ky) * w + x);
        }
        gb[co] += bias_sum;
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) gw[((co * cin + ci) * k + ky) * k + kx] += acc[ci * k + ky][kx];
    }
}

/* The optimiser step of one model, in torch.optim.Adam's / SGD's float32 arithmetic and order
 * (weight decay added to the gradient; SGD with momentum, no dampening). */
typedef struct {
    int kind;                  /* OPT_NONE, OPT_ADAM or OPT_SGD */
    const float *lr;           /* [M] learning rates */
    float weight_decay, beta1, beta2, eps, momentum;
    double bias_correction1, bias_correction2_sqrt;
    int first_step;            /* SGD: the momentum buffer starts as the gradient */
    float *first, *second;     /* [M, P] Adam's exp_avg and exp_avg_sq, or SGD's momentum buffer */
} Optimizer;
enum { OPT_NONE = 0, OPT_ADAM = 1, OPT_SGD = 2 };

static void optimizer_step(const Optimizer *opt, int m, int n, float *restrict p, float *restrict g) {
    float *restrict first = opt->first + (size_t)m * n;
    if (opt->weight_decay != 0.f)
        for (int j = 0; j < n; j++) g[j] = g[j] + opt->weight_decay * p[j];
    if (opt->kind == OPT_SGD) {
        const float rate = -opt->lr[m];
        for (int j = 0; j < n; j++) {
            first[j] = opt->first_step ? g[j] : first[j] * opt->momentum + g[j];
            p[j] = p[j] + rate * first[j];
        }
        return;
    }
    float *restrict second = opt->second + (size_t)m * n;
    const float weight = 1.f - opt->beta1, keep = opt->beta2, add = 1.f - opt->beta2;
    const float step = (float)-((double)opt->lr[m] / opt->bias_correction1);
    const float root = (float)opt->bias_correction2_sqrt;
    for (int j = 0; j < n; j++) {
        first[j] = first[j] + weight * (g[j] - first[j]);
        second[j] = second[j] * keep + add * g[j] * g[j];
        p[j] = p[j] + step * (first[j] / (sqrtf(second[j]) / root + opt->eps));
    }
}

/*
 * For models [m0, m1): grad[m] = d mean_b CE(model_m(images[index[m, b]]), labels[index[m, b]]) / d w[m],
 * loss[m] = that mean, correct[m] = number of right argmax predictions in the batch; then, unless
 * opt->kind is OPT_NONE, the optimiser step on weights[m] in place. Returns 0, -1 on a bad size.
 */
int population_grads(int act, int n_params,
                     float *weights, const float *images, const int64_t *labels,
                     const int64_t *index, int batch, int m0, int m1,
                     float *grad, float *loss, int64_t *correct, const Optimizer *opt) {
    enum { n_layers = N_LAYERS };
    const int in_c = IN_C, side = SIDE;
    Layer layers[MAX_LAYERS];
    if (describe(n_layers, SPEC, in_c, side, layers) != n_params) return -1;
    for (int i = 0; i < n_layers; i++)
        if (layers[i].kind == KIND_CONV && layers[i].cout * layers[i].wo > MAX_ROW) return -1;
    if (layers[n_layers - 1].kind != KIND_FC) return -1;
    const int image_size = in_c * side * side;
    const int classes = layers[n_layers - 1].cout;

    /* per-image buffers: each layer's output (post-activation), pre-pool maps, argmax, gradients */
    size_t total = 0, pre = 0, biggest = image_size;
    for (int i = 0; i < n_layers; i++) {
        total += layers[i].n_out;
        if (layers[i].kind == KIND_CONV) {
            size_t full = (size_t)layers[i].cout * layers[i].ho * layers[i].wo;
            if (full > pre) pre = full;
        }
        if ((size_t)layers[i].n_out > biggest) biggest = layers[i].n_out;
    }
    float *outs = malloc(sizeof(float) * total);
    int32_t *args = malloc(sizeof(int32_t) * total);
    float *full = malloc(sizeof(float) * (pre ? pre : 1));
    float *g_a = malloc(sizeof(float) * biggest), *g_b = malloc(sizeof(float) * biggest);
    const int first_winners = first_layer_winners_fits(&layers[0]);
    float *padded = malloc(sizeof(float) * (image_size + 8));
    size_t kernel_size = 1;
    for (int i = 0; i < n_layers; i++)
        if (layers[i].kind == KIND_CONV && (size_t)(layers[i].b_off - layers[i].w_off) > kernel_size)
            kernel_size = layers[i].b_off - layers[i].w_off;
    ChannelsLast cl = {malloc(sizeof(float) * biggest), malloc(sizeof(float) * kernel_size),
                       malloc(sizeof(float) * kernel_size), malloc(sizeof(float) * biggest)};
    if (!outs || !args || !full || !g_a || !g_b || !padded || !cl.in || !cl.wt || !cl.gw || !cl.d_in) {
        free(outs); free(args); free(full); free(g_a); free(g_b); free(padded);
        free(cl.in); free(cl.wt); free(cl.gw); free(cl.d_in);
        return -2;
    }
    size_t out_off[MAX_LAYERS];
    for (int i = 0, o = 0; i < n_layers; o += layers[i].n_out, i++) out_off[i] = o;

    for (int m = m0; m < m1; m++) {
        const float *wm = weights + (size_t)m * n_params;  /* read before this model's step */
        float *gm = grad + (size_t)m * n_params;
        memset(gm, 0, sizeof(float) * n_params);
        double loss_sum = 0.0;
        int64_t right = 0;
        for (int b = 0; b < batch; b++) {
            const int64_t item = index[(size_t)m * batch + b];
            const float *x = images + (size_t)item * image_size;
            /* forward */
            const float *in = x;
#pragma GCC unroll 16
            for (int i = 0; i < n_layers; i++) {
                const Layer *L = &layers[i];
                float *out = outs + out_off[i];
                if (L->kind == KIND_CONV) {
                    if (L->pool) {
                        conv_forward(L, wm + L->w_off, wm + L->b_off, in, full);
                        pool_forward(L, full, out, args + out_off[i]);
                    } else {
                        conv_forward(L, wm + L->w_off, wm + L->b_off, in, out);
                    }
                } else {
                    const float *wt = wm + L->w_off;
                    for (int o = 0; o < L->cout; o++) {
                        float s = wm[L->b_off + o];
                        const float *row = wt + (size_t)o * L->cin;
                        for (int j = 0; j < L->cin; j++) s += row[j] * in[j];
                        out[o] = s;
                    }
                }
                if (i < n_layers - 1) activate(act, out, L->n_out);
                in = out;
            }
            /* softmax cross-entropy; g_a = d loss_mean / d logits */
            const float *logits = outs + out_off[n_layers - 1];
            const int label = (int)labels[item];
            float peak = logits[0];
            int arg_max = 0;
            for (int c = 1; c < classes; c++)
                if (logits[c] > peak) { peak = logits[c]; arg_max = c; }
            double z = 0.0;
            for (int c = 0; c < classes; c++) z += exp((double)(logits[c] - peak));
            loss_sum += log(z) - (double)(logits[label] - peak);
            right += arg_max == label;
            for (int c = 0; c < classes; c++)
                g_a[c] = (float)(exp((double)(logits[c] - peak)) / z) / batch;
            g_a[label] -= 1.f / batch;
            /* backward: g_a holds d loss / d (pre-activation output) of layer i */
#pragma GCC unroll 16
            for (int i = n_layers - 1; i >= 0; i--) {
                const Layer *L = &layers[i];
                const float *wt = wm + L->w_off;
                float *gw = gm + L->w_off, *gb = gm + L->b_off;
                const float *lin = i ? outs + out_off[i - 1] : x;
                float *d_in = i ? g_b : NULL;
                if (d_in) memset(d_in, 0, sizeof(float) * L->n_in);
                if (!i && first_winners) {
                    memcpy(padded, x, sizeof(float) * image_size);
                    memset(padded + image_size, 0, sizeof(float) * 8);
                    first_conv_weight_grads(L, padded, g_a, args + out_off[0], gw, gb);
                } else if (L->kind == KIND_FC) {
                    for (int o = 0; o < L->cout; o++) {
                        const float g = g_a[o];
                        gb[o] += g;
                        float *gr = gw + (size_t)o * L->cin;
                        for (int j = 0; j < L->cin; j++) gr[j] += g * lin[j];
                        if (d_in) {
                            const float *row = wt + (size_t)o * L->cin;
                            for (int j = 0; j < L->cin; j++) d_in[j] += g * row[j];
                        }
                    }
                } else if (L->pool && L->wo < 16) { /* narrow rows: measured faster winner by winner */
                    conv_backward_winners(L, wt, lin, g_a, args + out_off[i], &cl, gw, gb, d_in);
                } else if (L->pool) {
                    const int32_t *arg = args + out_off[i];
                    memset(full, 0, sizeof(float) * L->cout * L->ho * L->wo);
                    for (int j = 0; j < L->n_out; j++) full[arg[j]] = g_a[j];
                    conv_backward(L, wt, lin, full, gw, gb, d_in);
                } else {
                    conv_backward(L, wt, lin, g_a, gw, gb, d_in);
                }
                if (!i) break;
                /* through the previous layer's activation */
                const float *prev = outs + out_off[i - 1];
                for (int j = 0; j < L->n_in; j++) g_a[j] = d_in[j] * activation_slope(act, prev[j]);
            }
        }
        loss[m] = (float)(loss_sum / batch);
        correct[m] = right;
        if (opt->kind != OPT_NONE) optimizer_step(opt, m, n_params, weights + (size_t)m * n_params, gm);
    }
    free(outs); free(args); free(full); free(g_a); free(g_b); free(padded);
    free(cl.in); free(cl.wt); free(cl.gw); free(cl.d_in);
    return 0;
}
