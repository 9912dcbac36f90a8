/*
 * One pass from decoded frames to normalised model input: crop, resize, mirror and normalise
 * uint8 RGB frames into float32 channels-last frames.
 *
 * The resize is torch's antialiased bilinear filter (F.interpolate(..., mode="bilinear",
 * antialias=True, align_corners=False)), computed in float instead of torch's 8-bit fixed
 * point, so results agree with the torch path to within one grey level. The normalisation
 * (x / 255 - mean) / std is folded into the horizontal weights and a per-channel bias, and the
 * mirror into the order of the horizontal taps, so each output value is written once.
 *
 * Per frame: a vertical pass over the crop's rows (contiguous) into one float row, then a
 * horizontal pass. On x86-64 processors with AVX2 and FMA both passes are written with AVX2
 * intrinsics, and the horizontal one makes 8 output floats at a time: the taps' inputs for each
 * 8-float block lie within a 16-float window of the filtered row (one window for all taps of a block
 * when the crop is enlarged or mildly shrunk, one per tap otherwise), and a lane permutation and
 * lane weights planned once per call gather and weigh them. A crop of the output's size that is not
 * mirrored skips both passes there (each value is x * scale + bias), and calls that write more than
 * the caches hold store past them. Elsewhere (and for crops shrunk so far that a window would not
 * do) the portable passes run: the vertical one vectorised by the compiler, the horizontal one a
 * pixel (a 4-float vector) at a time. Both compute the same sums in the same order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_PATH 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#endif

typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p) { v4f v; memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, v4f v) { memcpy(p, &v, sizeof v); }

#define MAX_TAPS 256

/* Calls that write at least this much (a 16-frame clip at 224 writes 9.6 MB) store their output past the
   caches on the AVX2 path: a batch of such clips is far larger than the caches, and a store that goes
   through them first reads the line it writes. Smaller outputs may still be in cache when they are read. */
#define STREAM_BYTES ((Py_ssize_t)8 << 20)

/* The filter taps of one output sample: source samples start .. start + size - 1 of the crop. */
typedef struct {
    int start, size;
} Span;

/* torch's antialiased bilinear weights for `in` crop samples -> `out` samples; zero weights at
   either end are dropped. Writes out spans and out * max_taps weights. Returns -1 if a sample
   needs more than max_taps taps. */
static int filter_taps(int in, int out, Span *span, float *weights, int max_taps) {
    double scale = (double)in / out;
    double support = scale >= 1.0 ? scale : 1.0;
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    double w[MAX_TAPS];
    for (int i = 0; i < out; i++) {
        double center = scale * (i + 0.5), total = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > MAX_TAPS) return -1;
        for (int j = 0; j < hi - lo; j++) {
            double v = 1.0 - fabs((j + lo - center + 0.5) * invscale);
            w[j] = v > 0.0 ? v : 0.0;
            total += w[j];
        }
        int a = 0, b = hi - lo;
        while (a < b && w[a] == 0.0) a++;
        while (b > a && w[b - 1] == 0.0) b--;
        if (b == a || b - a > max_taps) return -1;
        span[i].start = lo + a;
        span[i].size = b - a;
        for (int j = a; j < b; j++) weights[(size_t)i * max_taps + j - a] = (float)(w[j] / total);
    }
    return 0;
}

typedef struct {
    int size, crop_width, hmax, vmax;
    const int *hoffset, *htaps; /* per output column, mirrored if asked: float offset into the row, taps */
    const v4f *hweight;         /* hmax per column: weight times the channels' scale */
    const Span *vspan;          /* per output row */
    const float *vweight;       /* vmax per row */
    v4f bias;
    float *row;                 /* scratch: one vertically filtered crop row, 3 * crop_width + 20 floats */
} Plan;

/* Output row y's vertical filter over the crop, from column `from` (a float index) to the row's end:
   `src` points at the crop's top-left pixel, `stride` is the frame's row length in bytes; writes
   floats from .. 3 * crop_width - 1 of pl->row. */
static inline __attribute__((always_inline)) void vertical(const Plan *pl, const uint8_t *restrict src,
                                                           Py_ssize_t stride, int y, int from) {
    const int n = 3 * pl->crop_width;
    const Span *t = &pl->vspan[y];
    const float *vw = pl->vweight + (size_t)y * pl->vmax;
    const uint8_t *s0 = src + (Py_ssize_t)t->start * stride;
    float *restrict row = pl->row;
    if (t->size == 1) {
        for (int j = from; j < n; j++) row[j] = (float)s0[j];
    } else if (t->size == 2) {
        const uint8_t *s1 = s0 + stride;
        const float w0 = vw[0], w1 = vw[1];
        for (int j = from; j < n; j++) row[j] = w0 * (float)s0[j] + w1 * (float)s1[j];
    } else {
        const float w0 = vw[0];
        for (int j = from; j < n; j++) row[j] = w0 * (float)s0[j];
        for (int k = 1; k < t->size; k++) {
            const uint8_t *sk = s0 + k * stride;
            const float wk = vw[k];
            for (int j = from; j < n; j++) row[j] += wk * (float)sk[j];
        }
    }
}

/* One frame, any processor. */
MULTIVERSION
static void frame_into(const Plan *pl, const uint8_t *restrict src, Py_ssize_t stride, float *restrict out) {
    /* locals, so that stores to out need not reload the plan */
    const int S = pl->size, hmax = pl->hmax;
    const int *restrict hoffset = pl->hoffset, *restrict htaps = pl->htaps;
    const v4f *restrict hweight = pl->hweight;
    const v4f bias = pl->bias;
    const float *restrict row = pl->row;
    for (int y = 0; y < S; y++) {
        vertical(pl, src, stride, y, 0);
        /* A pixel is stored as 4 floats whose last spills into the next pixel, which is written
           after it; the row's last pixel is stored as exactly 3 floats. */
        float *o = out + (size_t)y * 3 * S;
        for (int p = 0; p < S; p++) {
            const float *q = row + hoffset[p];
            const v4f *w = hweight + (size_t)p * hmax;
            v4f acc = bias + load4(q) * w[0];
            if (htaps[p] == 2) {
                acc += load4(q + 3) * w[1];
            } else {
                for (int k = 1; k < htaps[p]; k++) acc += load4(q + 3 * k) * w[k];
            }
            if (p + 1 < S) store4(o + 3 * p, acc);
            else memcpy(o + 3 * p, &acc, 3 * sizeof(float));
        }
    }
}

#ifdef HAVE_AVX2_PATH
/* The horizontal pass by 8-float blocks of the output row. For block b and tap k, the inputs
   of its 8 lanes lie in the 16 floats from row + base[b * taps + k]; lanes[that] holds the 8
   lane picks in that window (as int32: bits 0-2 the float within a half, the sign bit set for the
   second half, so that it is the blend's mask as it is) and then the 8 lane weights (zero where a
   pixel has fewer taps). Where every block's taps fit in one window together (enlargements and
   mild shrinking), all taps of a block share its window (`shared`): two loads a block, not two a tap. */
typedef struct {
    int blocks, taps, shared;
    const int *base;
    const float *lanes; /* 32-byte aligned, 16 floats per block and tap */
    float bias[24];     /* the per-channel bias over 3 blocks (8 pixels) */
} Blocks;

/* The float index into the filtered row of lane l's input for tap k of block b. */
static inline int lane_input(int b, int l, int k, int n, const int *hoffset, const int *htaps) {
    const int f = 8 * b + l < n ? 8 * b + l : n - 1, p = f / 3; /* lanes past the row's end repeat its last value */
    return hoffset[p] + 3 * (k < htaps[p] ? k : 0) + f % 3;
}

/* The lowest and highest of block b's inputs over all its taps. */
static void block_range(int b, int taps, int n, const int *hoffset, const int *htaps, int *lo, int *hi) {
    *lo = *hi = lane_input(b, 0, 0, n, hoffset, htaps);
    for (int k = 0; k < taps; k++) {
        for (int l = 0; l < 8; l++) {
            const int i = lane_input(b, l, k, n, hoffset, htaps);
            *lo = i < *lo ? i : *lo;
            *hi = i > *hi ? i : *hi;
        }
    }
}

/* Plans the blocks into `base` (blocks * taps ints) and `lanes` (blocks * taps * 16 floats, 32-byte
   aligned); returns -1 where some block's inputs for a tap span more than 16 floats. */
static int plan_blocks(Blocks *bl, int S, const int *hoffset, const int *htaps, const v4f *hweight, int hmax,
                       const float bias[3], int taps, int *base, float *lanes) {
    const int n = 3 * S, blocks = (n + 7) / 8;
    int shared = 1, block_lo, block_hi;
    for (int b = 0; b < blocks && shared; b++) {
        block_range(b, taps, n, hoffset, htaps, &block_lo, &block_hi);
        shared = block_hi - block_lo < 16;
    }
    for (int b = 0; b < blocks; b++) {
        if (shared) block_range(b, taps, n, hoffset, htaps, &block_lo, &block_hi);
        for (int k = 0; k < taps; k++) {
            int index[8];
            for (int l = 0; l < 8; l++) index[l] = lane_input(b, l, k, n, hoffset, htaps);
            int lo = index[0], hi = index[0];
            for (int l = 1; l < 8; l++) {
                if (index[l] < lo) lo = index[l];
                if (index[l] > hi) hi = index[l];
            }
            if (hi - lo >= 16) return -1;
            if (shared) lo = block_lo; /* one window for all the block's taps */
            const int j = b * taps + k;
            base[j] = lo;
            int32_t *lane = (int32_t *)(lanes + 16 * (size_t)j);
            float *weight = lanes + 16 * (size_t)j + 8;
            for (int l = 0; l < 8; l++) {
                const int f = 8 * b + l, p = f / 3, pick = index[l] - lo;
                lane[l] = (int32_t)((uint32_t)(pick & 7) | (pick & 8 ? 0x80000000u : 0u));
                weight[l] = f < n && k < htaps[p] ? hweight[(size_t)p * hmax + k][f % 3] : 0.0f;
            }
        }
    }
    bl->blocks = blocks;
    bl->taps = taps;
    bl->shared = shared;
    bl->base = base;
    bl->lanes = lanes;
    for (int i = 0; i < 24; i++) bl->bias[i] = bias[i % 3];
    return 0;
}

AVX2 static inline __attribute__((always_inline)) __m256 block(const float *row, const int *base,
                                                               const float *lanes, __m256 acc, const int taps,
                                                               const int shared) {
    __m256 first = _mm256_setzero_ps(), second = first;
    if (shared) {
        first = _mm256_loadu_ps(row + base[0]);
        second = _mm256_loadu_ps(row + base[0] + 8);
    }
    for (int k = 0; k < taps; k++) {
        if (!shared) {
            first = _mm256_loadu_ps(row + base[k]);
            second = _mm256_loadu_ps(row + base[k] + 8);
        }
        const __m256i lane = _mm256_load_si256((const __m256i *)(lanes + 16 * k));
        const __m256 x = _mm256_blendv_ps(_mm256_permutevar8x32_ps(first, lane),
                                          _mm256_permutevar8x32_ps(second, lane), _mm256_castsi256_ps(lane));
        acc = _mm256_fmadd_ps(x, _mm256_load_ps(lanes + 16 * k + 8), acc);
    }
    return acc;
}

/* Stores 8 floats at p; with `stream`, past the caches (non-temporal stores, 16 bytes each: p must be
   16-byte aligned), which spares reading in the cache lines of an output far larger than the caches. */
AVX2 static inline __attribute__((always_inline)) void store8(float *p, __m256 x, const int stream) {
    if (stream) {
        _mm_stream_ps(p, _mm256_castps256_ps128(x));
        _mm_stream_ps(p + 4, _mm256_extractf128_ps(x, 1));
    } else {
        _mm256_storeu_ps(p, x);
    }
}

/* taps and shared are constants in each call below, so that the tap loop unrolls and the window loads
   are placed */
AVX2 static inline __attribute__((always_inline)) void horizontal(const Blocks *bl, const float *restrict row,
                                                                  float *restrict o, int n, const int taps,
                                                                  const int shared, const int stream) {
    const __m256 bias[3] = {_mm256_loadu_ps(bl->bias), _mm256_loadu_ps(bl->bias + 8), _mm256_loadu_ps(bl->bias + 16)};
    const int *base = bl->base;
    const float *lanes = bl->lanes;
    int b = 0;
    for (; 8 * (b + 3) <= n; b += 3) { /* three blocks: 8 whole pixels, the bias lanes in step */
        const __m256 x0 = block(row, base + b * taps, lanes + 16 * b * taps, bias[0], taps, shared);
        const __m256 x1 = block(row, base + (b + 1) * taps, lanes + 16 * (b + 1) * taps, bias[1], taps, shared);
        const __m256 x2 = block(row, base + (b + 2) * taps, lanes + 16 * (b + 2) * taps, bias[2], taps, shared);
        store8(o + 8 * b, x0, stream);
        store8(o + 8 * b + 8, x1, stream);
        store8(o + 8 * b + 16, x2, stream);
    }
    for (; b < bl->blocks; b++) {
        const __m256 x = block(row, base + b * taps, lanes + 16 * b * taps, bias[b % 3], taps, shared);
        if (8 * (b + 1) <= n) {
            store8(o + 8 * b, x, stream);
        } else {
            float last[8];
            _mm256_storeu_ps(last, x);
            memcpy(o + 8 * b, last, sizeof(float) * (size_t)(n - 8 * b));
        }
    }
}

/* vertical(), with each 8 bytes widened straight to 8 int32 (the compiler's own vectorisation goes
   through 16-bit lanes and spends twice the shuffles); the same sums in the same order. */
AVX2 static inline __attribute__((always_inline)) __m256 widen8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 static void vertical_avx2(const Plan *pl, const uint8_t *restrict src, Py_ssize_t stride, int y) {
    const int n = 3 * pl->crop_width, whole = n - n % 8;
    const Span *t = &pl->vspan[y];
    const float *vw = pl->vweight + (size_t)y * pl->vmax;
    const uint8_t *s0 = src + (Py_ssize_t)t->start * stride;
    float *restrict row = pl->row;
    if (t->size == 1) {
        for (int j = 0; j < whole; j += 8) _mm256_storeu_ps(row + j, widen8(s0 + j));
    } else if (t->size == 2) {
        const uint8_t *s1 = s0 + stride;
        const __m256 w0 = _mm256_set1_ps(vw[0]), w1 = _mm256_set1_ps(vw[1]);
        for (int j = 0; j < whole; j += 8)
            _mm256_storeu_ps(row + j, _mm256_fmadd_ps(w0, widen8(s0 + j), _mm256_mul_ps(w1, widen8(s1 + j))));
    } else {
        for (int j = 0; j < whole; j += 8) {
            __m256 acc = _mm256_mul_ps(_mm256_set1_ps(vw[0]), widen8(s0 + j));
            for (int k = 1; k < t->size; k++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(vw[k]), widen8(s0 + k * stride + j), acc);
            _mm256_storeu_ps(row + j, acc);
        }
    }
    vertical(pl, src, stride, y, whole); /* the last n % 8 floats */
}

/* Whether a frame's rows at `out` can take non-temporal stores, asked for by `stream`: every row 16-byte aligned. */
static inline int rows_aligned(const float *out, int S, int stream) {
    return stream && ((uintptr_t)out & 15) == 0 && S % 4 == 0;
}

/* One frame, AVX2 and FMA. */
AVX2 static void frame_into_avx2(const Plan *pl, const Blocks *bl, const uint8_t *restrict src, Py_ssize_t stride,
                                 float *restrict out, int stream) {
    const int S = pl->size, n = 3 * S;
    stream = rows_aligned(out, S, stream);
    for (int y = 0; y < S; y++) {
        vertical_avx2(pl, src, stride, y);
        float *o = out + (size_t)y * n;
        if (bl->shared) {
            switch (bl->taps) {
            case 1: horizontal(bl, pl->row, o, n, 1, 1, stream); break;
            case 2: horizontal(bl, pl->row, o, n, 2, 1, stream); break;
            case 3: horizontal(bl, pl->row, o, n, 3, 1, stream); break;
            default: horizontal(bl, pl->row, o, n, bl->taps, 1, stream); break;
            }
        } else {
            switch (bl->taps) {
            case 2: horizontal(bl, pl->row, o, n, 2, 0, stream); break;
            case 3: horizontal(bl, pl->row, o, n, 3, 0, stream); break;
            case 4: horizontal(bl, pl->row, o, n, 4, 0, stream); break;
            default: horizontal(bl, pl->row, o, n, bl->taps, 0, stream); break;
            }
        }
    }
}

/* One frame whose crop has the output's size and is not mirrored: each value is x * scale + bias of its
   channel, 8 bytes widened to 8 floats at a time, three blocks (8 pixels) per step so that the channel
   lanes stay in step. The same values as the blocks' pass, whose single tap weighs by the scale alone. */
AVX2 static void frame_copy_avx2(const Plan *pl, const Blocks *bl, const uint8_t *restrict src, Py_ssize_t stride,
                                 float *restrict out, int stream) {
    const int S = pl->size, n = 3 * S;
    stream = rows_aligned(out, S, stream);
    float scale[24];
    for (int i = 0; i < 24; i++) scale[i] = pl->hweight[0][i % 3];
    const __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8), s2 = _mm256_loadu_ps(scale + 16);
    const __m256 b0 = _mm256_loadu_ps(bl->bias), b1 = _mm256_loadu_ps(bl->bias + 8),
                 b2 = _mm256_loadu_ps(bl->bias + 16);
    for (int y = 0; y < S; y++) {
        const uint8_t *row = src + (Py_ssize_t)y * stride;
        float *o = out + (size_t)y * n;
        int j = 0;
        for (; j + 24 <= n; j += 24) {
            store8(o + j, _mm256_fmadd_ps(widen8(row + j), s0, b0), stream);
            store8(o + j + 8, _mm256_fmadd_ps(widen8(row + j + 8), s1, b1), stream);
            store8(o + j + 16, _mm256_fmadd_ps(widen8(row + j + 16), s2, b2), stream);
        }
        for (; j < n; j++) o[j] = fmaf((float)row[j], scale[j % 3], bl->bias[j % 3]);
    }
}

/* -1: not asked yet; else whether the AVX2 path runs (the processor has it, and simd() allows it) */
static int use_avx2 = -1;

static int avx2_enabled(void) {
    if (use_avx2 < 0) {
        __builtin_cpu_init();
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return use_avx2;
}
#endif

static int taps_bound(int in, int out) {
    double ratio = in > out ? (double)in / out : 1.0;
    return (int)ceil(2.0 * ratio) + 2;
}

PyDoc_STRVAR(crop_resize_normalise_doc,
"crop_resize_normalise(frames, shape, indices, box, flip, size, scale, bias, out)\n\n"
"frames: C-contiguous uint8 buffer of shape (N, H, W, 3); shape: (N, H, W).\n"
"indices: the frames to use, one per output frame. box: (x0, y0, x1, y1) crop in pixels.\n"
"flip: mirror left-right. size: output side S. scale, bias: 3 floats each;\n"
"out = resized * scale + bias per channel. out: writable C-contiguous float32 buffer of\n"
"(len(indices), S, S, 3). Releases the GIL while it computes.");

static PyObject *crop_resize_normalise(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    PyObject *indices_obj, *seq = NULL, *result = NULL;
    Py_ssize_t n, h, w;
    int x0, y0, x1, y1, flip, S;
    float scale[3], bias[3];
    long *index = NULL;
    char *memory = NULL;
    void *block_memory = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*(nnn)O(iiii)pi(fff)(fff)w*", &src, &n, &h, &w, &indices_obj, &x0, &y0, &x1,
                          &y1, &flip, &S, &scale[0], &scale[1], &scale[2], &bias[0], &bias[1], &bias[2], &dst))
        return NULL;
    if (n < 0 || h < 1 || w < 1 || src.len != n * h * w * 3) {
        PyErr_Format(PyExc_ValueError, "frames: %zd bytes do not make (%zd, %zd, %zd, 3) uint8", src.len, n, h, w);
        goto done;
    }
    if (S < 1 || x0 < 0 || y0 < 0 || x1 > w || y1 > h || x1 <= x0 || y1 <= y0) {
        PyErr_Format(PyExc_ValueError, "box (%d, %d, %d, %d) is empty or outside %zdx%zd frames, or size %d < 1",
                     x0, y0, x1, y1, h, w, S);
        goto done;
    }
    seq = PySequence_Fast(indices_obj, "indices must be a sequence of ints");
    if (seq == NULL) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (dst.len != count * S * S * 3 * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "out: %zd bytes, but %zd frames of %dx%dx3 float32 need %zd", dst.len, count,
                     S, S, count * S * S * 3 * (Py_ssize_t)sizeof(float));
        goto done;
    }
    index = PyMem_Malloc(sizeof(long) * (count > 0 ? count : 1));
    if (index == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < count; i++) {
        index[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (index[i] == -1 && PyErr_Occurred()) goto done;
        if (index[i] < 0 || index[i] >= n) {
            PyErr_Format(PyExc_IndexError, "frame index %ld out of range for %zd frames", index[i], n);
            goto done;
        }
    }
    const int cw = x1 - x0, ch = y1 - y0, hmax = taps_bound(cw, S), vmax = taps_bound(ch, S);
    /* one block: hweight (v4f, first for alignment), then floats, then ints and spans */
    size_t bytes = sizeof(v4f) * (size_t)S * hmax + sizeof(float) * ((size_t)S * hmax + (size_t)S * vmax
                   + 3 * (size_t)cw + 20) + sizeof(int) * 2 * (size_t)S + sizeof(Span) * 2 * (size_t)S + 16;
    memory = PyMem_Calloc(1, bytes);
    if (memory == NULL) { PyErr_NoMemory(); goto done; }
    v4f *hweight = (v4f *)(((uintptr_t)memory + 15) & ~(uintptr_t)15);
    float *hw = (float *)(hweight + (size_t)S * hmax);
    float *vweight = hw + (size_t)S * hmax;
    float *row = vweight + (size_t)S * vmax;
    int *hoffset = (int *)(row + 3 * (size_t)cw + 20), *htaps = hoffset + S;
    Span *hspan = (Span *)(htaps + S), *vspan = hspan + S;
    if (filter_taps(cw, S, hspan, hw, hmax) || filter_taps(ch, S, vspan, vweight, vmax)) {
        PyErr_Format(PyExc_ValueError, "box (%d, %d, %d, %d) to %d pixels needs too many filter taps", x0, y0, x1,
                     y1, S);
        goto done;
    }
    const v4f channel_scale = {scale[0], scale[1], scale[2], 0.0f};
    for (int p = 0; p < S; p++) {
        const int x = flip ? S - 1 - p : p;
        hoffset[p] = 3 * hspan[x].start;
        htaps[p] = hspan[x].size;
        for (int k = 0; k < htaps[p]; k++) hweight[(size_t)p * hmax + k] = channel_scale * hw[(size_t)x * hmax + k];
    }
    const Plan plan = {S, cw, hmax, vmax, hoffset, htaps, hweight, vspan, vweight,
                       {bias[0], bias[1], bias[2], 0.0f}, row};
    const uint8_t *base = (const uint8_t *)src.buf + ((Py_ssize_t)y0 * w + x0) * 3;
    float *out = (float *)dst.buf;
#ifdef HAVE_AVX2_PATH
    Blocks blocks;
    int by_blocks = 0;
    const int copy = cw == S && ch == S && !flip;
    const int stream = dst.len >= STREAM_BYTES;
    if (avx2_enabled()) {
        int taps = 1;
        for (int p = 0; p < S; p++) taps = htaps[p] > taps ? htaps[p] : taps;
        const size_t slots = (size_t)(3 * S + 7) / 8 * taps;
        block_memory = PyMem_Malloc(slots * (sizeof(int) + 16 * sizeof(float)) + 32);
        if (block_memory == NULL) { PyErr_NoMemory(); goto done; }
        float *lanes = (float *)(((uintptr_t)block_memory + 31) & ~(uintptr_t)31);
        by_blocks = plan_blocks(&blocks, S, hoffset, htaps, hweight, hmax, bias, taps,
                                (int *)(lanes + 16 * slots), lanes) == 0;
    }
#endif
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *frame = base + (Py_ssize_t)index[i] * h * w * 3;
        float *frame_out = out + (size_t)i * S * S * 3;
#ifdef HAVE_AVX2_PATH
        if (by_blocks && copy) {
            frame_copy_avx2(&plan, &blocks, frame, w * 3, frame_out, stream);
            continue;
        }
        if (by_blocks) {
            frame_into_avx2(&plan, &blocks, frame, w * 3, frame_out, stream);
            continue;
        }
#endif
        frame_into(&plan, frame, w * 3, frame_out);
    }
#ifdef HAVE_AVX2_PATH
    if (by_blocks && stream) _mm_sfence(); /* the streamed stores are visible before the caller reads */
#endif
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(block_memory);
    PyMem_Free(memory);
    PyMem_Free(index);
    Py_XDECREF(seq);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(simd_doc,
"simd(enabled=None) -> bool\n\n"
"Whether the AVX2 passes run (x86-64 processors with AVX2 and FMA). simd(False) makes\n"
"every call take the portable passes, simd(True) restores them where the processor has them;\n"
"either way the result is the state now. For tests and benchmarks.");

static PyObject *simd(PyObject *self, PyObject *args) {
    PyObject *enabled = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "|O", &enabled)) return NULL;
#ifdef HAVE_AVX2_PATH
    if (enabled != Py_None) {
        const int want = PyObject_IsTrue(enabled);
        if (want < 0) return NULL;
        use_avx2 = -1;
        if (want) avx2_enabled();
        else use_avx2 = 0;
    }
    return PyBool_FromLong(avx2_enabled());
#else
    (void)enabled;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"crop_resize_normalise", crop_resize_normalise, METH_VARARGS, crop_resize_normalise_doc},
    {"simd", simd, METH_VARARGS, simd_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ckernel", "Fused crop, resize, flip and normalise of uint8 frames (see ckernel.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_ckernel(void) { return PyModule_Create(&module); }
