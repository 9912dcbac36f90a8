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
 * Per frame: a vertical pass over the crop's rows (contiguous, vectorised by the compiler) into
 * one float row, then a horizontal pass that treats a pixel as a 4-float vector.
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

typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p) { v4f v; memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, v4f v) { memcpy(p, &v, sizeof v); }

#define MAX_TAPS 256

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
    float *row;                 /* scratch: one vertically filtered crop row, 3 * crop_width + 4 floats */
} Plan;

/* One frame. `src` points at the crop's top-left pixel; `stride` is the frame's row length in bytes. */
MULTIVERSION
static void frame_into(const Plan *pl, const uint8_t *restrict src, Py_ssize_t stride, float *restrict out) {
    /* locals, so that stores to row and out need not reload the plan */
    const int S = pl->size, n = 3 * pl->crop_width, hmax = pl->hmax, vmax = pl->vmax;
    const int *restrict hoffset = pl->hoffset, *restrict htaps = pl->htaps;
    const v4f *restrict hweight = pl->hweight;
    const Span *restrict vspan = pl->vspan;
    const float *restrict vweight = pl->vweight;
    const v4f bias = pl->bias;
    float *restrict row = pl->row;
    for (int y = 0; y < S; y++) {
        const Span *t = &vspan[y];
        const float *vw = vweight + (size_t)y * vmax;
        const uint8_t *s0 = src + (Py_ssize_t)t->start * stride;
        if (t->size == 1) {
            for (int j = 0; j < n; j++) row[j] = (float)s0[j];
        } else if (t->size == 2) {
            const uint8_t *s1 = s0 + stride;
            const float w0 = vw[0], w1 = vw[1];
            for (int j = 0; j < n; j++) row[j] = w0 * (float)s0[j] + w1 * (float)s1[j];
        } else {
            const float w0 = vw[0];
            for (int j = 0; j < n; j++) row[j] = w0 * (float)s0[j];
            for (int k = 1; k < t->size; k++) {
                const uint8_t *sk = s0 + k * stride;
                const float wk = vw[k];
                for (int j = 0; j < n; j++) row[j] += wk * (float)sk[j];
            }
        }
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
                   + 3 * (size_t)cw + 4) + sizeof(int) * 2 * (size_t)S + sizeof(Span) * 2 * (size_t)S + 16;
    memory = PyMem_Calloc(1, bytes);
    if (memory == NULL) { PyErr_NoMemory(); goto done; }
    v4f *hweight = (v4f *)(((uintptr_t)memory + 15) & ~(uintptr_t)15);
    float *hw = (float *)(hweight + (size_t)S * hmax);
    float *vweight = hw + (size_t)S * hmax;
    float *row = vweight + (size_t)S * vmax;
    int *hoffset = (int *)(row + 3 * (size_t)cw + 4), *htaps = hoffset + S;
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
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        frame_into(&plan, base + (Py_ssize_t)index[i] * h * w * 3, w * 3, out + (size_t)i * S * S * 3);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(memory);
    PyMem_Free(index);
    Py_XDECREF(seq);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"crop_resize_normalise", crop_resize_normalise, METH_VARARGS, crop_resize_normalise_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fused", "Fused crop, resize, flip and normalise of uint8 frames (see _fused.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
