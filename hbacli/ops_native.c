/* The 15 ops of ops.py in C, for the CPU: a whole batch's two augmentation stages in one call.

   Each function mirrors its torch twin in ops.py operation for operation (same float types,
   same order of operations, same rounding), so both give the same images; ops.py documents
   why each step is Pillow's arithmetic. Build flags must keep IEEE semantics: no -ffast-math,
   and -ffp-contract=off so that no multiply-add is fused where torch rounds twice.

   Images are uint8, contiguous N×C×H×W. Op codes are indices into space.OPS (see
   hba_op_names, checked by ops_native.py when it loads the library). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *hba_op_names(void) {
    return "ShearX,ShearY,TranslateX,TranslateY,Rotate,AutoContrast,Invert,Equalize,Solarize,"
           "Posterize,Contrast,Color,Brightness,Sharpness,Cutout";
}

enum {
    SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, AUTO_CONTRAST, INVERT, EQUALIZE,
    SOLARIZE, POSTERIZE, CONTRAST, COLOR, BRIGHTNESS, SHARPNESS, CUTOUT
};

typedef struct {
    int c, h, w, fill;
} Shape;

/* Scratch space for one image, allocated once per call. */
typedef struct {
    uint8_t *image;                   /* C×H×W bytes */
    float *degenerate;                /* H×W floats: one plane of ImageEnhance's degenerate */
    uint8_t smooth[13 * 255 + 1];     /* SMOOTH's rounded value for each 3×3 weighted sum */
    int smooth_ready;
} Work;

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* ---------------------------------------------------------------------------------- affine */

/* Pillow's AFFINE matrix (output → input) of a geometric op; torch's rotate_matrix. */
static void affine_matrix(int op, double m, const Shape *s, double a[6]) {
    a[0] = 1.0; a[1] = 0.0; a[2] = 0.0; a[3] = 0.0; a[4] = 1.0; a[5] = 0.0;
    if (op == SHEAR_X) {
        a[1] = m;
    } else if (op == SHEAR_Y) {
        a[3] = m;
    } else if (op == TRANSLATE_X) {
        a[2] = m * s->w;
    } else if (op == TRANSLATE_Y) {
        a[5] = m * s->h;
    } else {
        const double deg_to_rad = 0.017453292519943295769236907684886127134428718885417;
        double turned = fmod(m, 360.0);  /* torch.remainder: the sign of the divisor */
        if (turned < 0.0) turned += 360.0;
        double angle = -(turned * deg_to_rad);
        double cos_a = nearbyint(cos(angle) * 1e15) / 1e15;  /* torch.round(decimals=15) */
        double sin_a = nearbyint(sin(angle) * 1e15) / 1e15;
        double cx = s->w / 2.0, cy = s->h / 2.0;
        a[0] = cos_a; a[1] = sin_a; a[2] = cx - cos_a * cx - sin_a * cy;
        a[3] = -sin_a; a[4] = cos_a; a[5] = cy + sin_a * cx - cos_a * cy;
    }
}

/* Nearest neighbour in 16.16 fixed point at pixel centres; exposed pixels get the fill. */
static void affine(const uint8_t *src, uint8_t *dst, const Shape *s, const double a[6]) {
    int translation = a[1] == 0.0 && a[3] == 0.0;
    double start_round = translation ? 0.0 : 0.5;
    int32_t x0 = (int32_t)floor(((a[0] * 0.5 + a[1] * 0.5) + a[2]) * 65536.0 + start_round);
    int32_t y0 = (int32_t)floor(((a[3] * 0.5 + a[4] * 0.5) + a[5]) * 65536.0 + start_round);
    int32_t x_col = (int32_t)floor(a[0] * 65536.0 + 0.5), x_row = (int32_t)floor(a[1] * 65536.0 + 0.5);
    int32_t y_col = (int32_t)floor(a[3] * 65536.0 + 0.5), y_row = (int32_t)floor(a[4] * 65536.0 + 0.5);
    int plane = s->h * s->w;
    for (int r = 0; r < s->h; r++) {
        for (int col = 0; col < s->w; col++) {
            int32_t x_in = (x0 + r * x_row + col * x_col) >> 16;  /* floor: arithmetic shift */
            int32_t y_in = (y0 + r * y_row + col * y_col) >> 16;
            int inside = x_in >= 0 && x_in < s->w && y_in >= 0 && y_in < s->h;
            int from = y_in * s->w + x_in, to = r * s->w + col;
            for (int ch = 0; ch < s->c; ch++)
                dst[ch * plane + to] = inside ? src[ch * plane + from] : (uint8_t)s->fill;
        }
    }
}

/* ------------------------------------------------------------------------------------- lut */

static void lowest_highest(const uint8_t *plane, int size, int *low, int *high) {
    uint8_t lo = 255, hi = 0;
    for (int i = 0; i < size; i++) {  /* branch-free, so that it vectorises */
        lo = plane[i] < lo ? plane[i] : lo;
        hi = plane[i] > hi ? plane[i] : hi;
    }
    *low = lo;
    *high = hi;
}

/* Image.blend(degenerate, image, factor) for every level: float maths, clip, truncate. */
static void blend_levels(float degenerate, float factor, uint8_t table[256]) {
    for (int l = 0; l < 256; l++) {
        float v = degenerate + factor * ((float)l - degenerate);
        v = v < 0.0f ? 0.0f : v;
        v = v > 255.0f ? 255.0f : v;
        table[l] = (uint8_t)(int)v;
    }
}

static int64_t luma(const uint8_t *img, const Shape *s, int i) {
    int plane = s->h * s->w;
    if (s->c == 1) return img[i];
    return (19595 * (int64_t)img[i] + 38470 * (int64_t)img[plane + i] +
            7471 * (int64_t)img[2 * plane + i] + 32768) >> 16;
}

static void channel_table(int op, float m, const uint8_t *plane, int size, float contrast_grey,
                          uint8_t table[256]) {
    int low, high;
    int64_t histogram[256] = {0};
    if (op == AUTO_CONTRAST || op == EQUALIZE)
        lowest_highest(plane, size, &low, &high);
    if (op == EQUALIZE)
        for (int i = 0; i < size; i++) histogram[plane[i]]++;
    switch (op) {
    case INVERT:
        for (int l = 0; l < 256; l++) table[l] = (uint8_t)(255 - l);
        break;
    case SOLARIZE: {
        double threshold = 256.0 - (double)m;
        for (int l = 0; l < 256; l++) table[l] = (uint8_t)((double)l >= threshold ? 255 - l : l);
        break;
    }
    case POSTERIZE: {
        float bits = nearbyintf(m);
        int step = 1 << (int)(bits < 0.0f ? 0.0f : (bits > 8.0f ? 8.0f : bits));
        for (int l = 0; l < 256; l++) table[l] = (uint8_t)(l & ~(step - 1));  /* ⌊l/step⌋·step */
        break;
    }
    case BRIGHTNESS:
        blend_levels(0.0f, m, table);
        break;
    case CONTRAST:
        blend_levels(contrast_grey, m, table);
        break;
    case AUTO_CONTRAST: {
        double scale = 255.0 / (double)(high - low > 1 ? high - low : 1);
        double offset = -(double)low * scale;
        for (int l = 0; l < 256; l++) {
            double v = trunc((double)l * scale + offset);
            v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
            table[l] = (uint8_t)(high <= low ? l : (int)v);
        }
        break;
    }
    case EQUALIZE: {
        int64_t step = (size - histogram[high]) / 255, below = 0;
        for (int l = 0; l < 256; l++) {
            /* ⌊(step/2 + below) / step⌋ through a double division: exact at these sizes */
            double v = step > 0 ? floor((double)(step / 2 + below) / (double)step) : l;
            table[l] = (uint8_t)(high <= low || step == 0 ? l : (v > 255.0 ? 255 : (int)v));
            below += histogram[l];
        }
        break;
    }
    }
}

static void lut(uint8_t *img, const Shape *s, int op, float m) {
    int plane = s->h * s->w;
    float grey = 0.0f;
    if (op == CONTRAST) {  /* int(mean(L) + 0.5) in exact integers */
        int64_t total = 0;
        for (int i = 0; i < plane; i++) total += luma(img, s, i);
        grey = (float)floor_div(2 * total + plane, 2 * (int64_t)plane);
    }
    uint8_t table[256];
    for (int ch = 0; ch < s->c; ch++) {
        uint8_t *p = img + ch * plane;
        if (ch == 0 || op == AUTO_CONTRAST || op == EQUALIZE)  /* the others: one table */
            channel_table(op, m, p, plane, grey, table);
        for (int i = 0; i < plane; i++) p[i] = table[p[i]];
    }
}

/* ----------------------------------------------------------------------------------- blend */

/* ImageEnhance on every channel: blend with a degenerate plane (float), clip, truncate. Written
   branch-free over whole planes so that the compiler vectorises it. */
static void blend_planes(uint8_t *img, const Shape *s, const float *degenerate, float factor) {
    int plane = s->h * s->w;
    for (int ch = 0; ch < s->c; ch++) {
        uint8_t *p = img + ch * plane;
        for (int i = 0; i < plane; i++) {
            float v = ((float)p[i] - degenerate[i]) * factor + degenerate[i];
            v = v < 0.0f ? 0.0f : v;
            v = v > 255.0f ? 255.0f : v;
            p[i] = (uint8_t)(int)v;
        }
    }
}

static void color(uint8_t *img, const Shape *s, float m, Work *work) {
    for (int i = 0; i < s->h * s->w; i++) work->degenerate[i] = (float)luma(img, s, i);
    blend_planes(img, s, work->degenerate, m);
}

/* ImageFilter.SMOOTH (1s around a 5, /13, rounded) as the degenerate; the border is kept.
   Sharpness blends each channel with its own smoothed plane. */
static void sharpness(uint8_t *img, const Shape *s, float m, Work *work) {
    int plane = s->h * s->w, w = s->w;
    if (!work->smooth_ready) {  /* ⌊(S + 6.5) · (1/13)⌋ in float, as torch computes it */
        const float thirteenth = (float)(1.0 / 13.0);
        for (int sum = 0; sum <= 13 * 255; sum++)
            work->smooth[sum] = (uint8_t)floorf(((float)sum + 6.5f) * thirteenth);
        work->smooth_ready = 1;
    }
    for (int ch = 0; ch < s->c; ch++) {
        uint8_t *p = img + ch * plane;
        float *d = work->degenerate;
        for (int i = 0; i < plane; i++) d[i] = (float)p[i];
        for (int r = 1; r < s->h - 1; r++) {
            const uint8_t *up = p + (r - 1) * w, *mid = p + r * w, *down = p + (r + 1) * w;
            for (int col = 1; col < w - 1; col++) {
                int sum = up[col - 1] + up[col] + up[col + 1] + mid[col - 1] + 5 * mid[col] +
                          mid[col + 1] + down[col - 1] + down[col] + down[col + 1];
                d[r * w + col] = (float)work->smooth[sum];
            }
        }
        Shape one = {1, s->h, s->w, s->fill};
        blend_planes(p, &one, d, m);
    }
}

/* ------------------------------------------------------------------------------------ fill */

static void cutout(uint8_t *img, const Shape *s, float m, const int64_t centre[2]) {
    int64_t side = (int64_t)nearbyint((double)m * (s->h < s->w ? s->h : s->w));
    int64_t top = centre[0] - floor_div(side, 2), left = centre[1] - floor_div(side, 2);
    int64_t r0 = top < 0 ? 0 : top, r1 = top + side > s->h ? s->h : top + side;
    int64_t c0 = left < 0 ? 0 : left, c1 = left + side > s->w ? s->w : left + side;
    for (int ch = 0; ch < s->c; ch++)
        for (int64_t r = r0; r < r1; r++)
            for (int64_t col = c0; col < c1; col++)
                img[(ch * s->h + r) * s->w + col] = (uint8_t)s->fill;
}

/* ------------------------------------------------------------------------------------ entry */

/* One op on one image, in place. */
static void apply(int op, float m, const int64_t centre[2], uint8_t *img, const Shape *s,
                  Work *work) {
    if (op <= ROTATE) {
        double a[6];
        affine_matrix(op, (double)m, s, a);
        affine(img, work->image, s, a);
        memcpy(img, work->image, (size_t)s->c * s->h * s->w);
    } else if (op == COLOR) {
        color(img, s, m, work);
    } else if (op == SHARPNESS) {
        sharpness(img, s, m, work);
    } else if (op == CUTOUT) {
        cutout(img, s, m, centre);
    } else {
        lut(img, s, op, m);
    }
}

/* out[i] = the two stages applied to images[i]. ops (N, 2) int64 (−1: none), magnitudes
   (N, 2) float (physical, signed), centres (N, 2, 2) int64 (stage, row/column). Returns 0, or
   −1 when scratch memory cannot be had. */
int hba_augment(const uint8_t *images, uint8_t *out, int64_t n, int c, int h, int w,
                const int64_t *ops, const float *magnitudes, const int64_t *centres, int fill) {
    Shape s = {c, h, w, fill};
    size_t bytes = (size_t)c * h * w;
    Work *work = calloc(1, sizeof(Work));
    if (work == NULL) return -1;
    work->image = malloc(bytes + 1);
    work->degenerate = malloc(sizeof(float) * ((size_t)h * w + 1));
    int status = work->image != NULL && work->degenerate != NULL ? 0 : -1;
    if (status == 0) {
        memcpy(out, images, bytes * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            for (int stage = 0; stage < 2; stage++) {
                int64_t op = ops[2 * i + stage];
                if (op >= 0)
                    apply((int)op, magnitudes[2 * i + stage], centres + 4 * i + 2 * stage,
                          out + bytes * i, &s, work);
            }
        }
    }
    free(work->image);
    free(work->degenerate);
    free(work);
    return status;
}
