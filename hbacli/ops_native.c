/* The 15 ops of ops.py in C, for the CPU: a whole batch's two augmentation stages in one call.

   Each op function mirrors its torch twin in ops.py operation for operation (same float types,
   same order of operations, same rounding), so both give the same images; ops.py documents
   why each step is Pillow's arithmetic. Build flags must keep IEEE semantics: no -ffast-math,
   and -ffp-contract=off so that no multiply-add is fused where torch rounds twice.

   What an op is (its kernel family, how its magnitude becomes its argument) is declared once,
   in space.OPS: ops_native.py passes it with every call as a table of OpRow, one per op in
   space.OPS order, matching this file's op functions (OP_FUNCTIONS) and family kernels
   (FAMILY_KERNELS) by name (hba_op_name, hba_family_name). An op function turns one image and
   its argument into its family's parameters; the family kernel applies them.

   Images are uint8, contiguous N×C×H×W. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int c, h, w, fill;
} Shape;

/* One op of space.OPS, as ops_native.py passes it. */
typedef struct {
    int32_t function;  /* index into OP_FUNCTIONS */
    int32_t family;    /* index into FAMILY_KERNELS */
    int32_t rounded;   /* 1: the argument is rounded to a whole number, ties to even */
    int32_t unused;
    double scale;      /* argument = magnitude × scale (1, or the image's W, H or min(H, W)) */
} OpRow;

/* Scratch space for one image, allocated once per call. */
typedef struct {
    uint8_t *image;                   /* C×H×W bytes: the affine kernel's output */
    float *degenerate;                /* C×H×W floats: ImageEnhance's degenerate image */
    uint8_t smooth[13 * 255 + 1];     /* SMOOTH's rounded value for each 3×3 weighted sum */
    int smooth_ready;
} Work;

/* An op's family parameters for one image: the op function fills its family's part. */
typedef struct {
    double matrix[6];          /* affine: Pillow's AFFINE matrix, output → input pixel */
    uint8_t tables[3][256];    /* lut: a table per channel, or tables[0] for all (planes 1) */
    float *degenerate;         /* blend: planes of H×W floats (Work.degenerate) */
    int planes;                /* lut, blend: 1 (shared by every channel) or C */
    int64_t box[4];            /* fill: top, bottom, left, right (exclusive), unclipped */
} Params;

typedef void (*OpFunction)(const uint8_t *img, const Shape *s, double argument,
                           const int64_t centre[2], Params *p, Work *work);
typedef void (*FamilyKernel)(uint8_t *img, const Shape *s, double argument, const Params *p,
                             Work *work);

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* ---------------------------------------------------------------------------------- affine */

static void identity_matrix(double a[6]) {
    a[0] = 1.0; a[1] = 0.0; a[2] = 0.0; a[3] = 0.0; a[4] = 1.0; a[5] = 0.0;
}

static void shear_x(const uint8_t *img, const Shape *s, double shear, const int64_t centre[2],
                    Params *p, Work *work) {
    identity_matrix(p->matrix);
    p->matrix[1] = shear;
}

static void shear_y(const uint8_t *img, const Shape *s, double shear, const int64_t centre[2],
                    Params *p, Work *work) {
    identity_matrix(p->matrix);
    p->matrix[3] = shear;
}

static void translate_x(const uint8_t *img, const Shape *s, double pixels,
                        const int64_t centre[2], Params *p, Work *work) {
    identity_matrix(p->matrix);
    p->matrix[2] = pixels;
}

static void translate_y(const uint8_t *img, const Shape *s, double pixels,
                        const int64_t centre[2], Params *p, Work *work) {
    identity_matrix(p->matrix);
    p->matrix[5] = pixels;
}

/* Image.rotate about the centre: torch's rotate_matrix. */
static void rotate(const uint8_t *img, const Shape *s, double degrees, const int64_t centre[2],
                   Params *p, Work *work) {
    const double deg_to_rad = 0.017453292519943295769236907684886127134428718885417;
    double turned = fmod(degrees, 360.0);  /* torch.remainder: the sign of the divisor */
    if (turned < 0.0) turned += 360.0;
    double angle = -(turned * deg_to_rad);
    double cos_a = nearbyint(cos(angle) * 1e15) / 1e15;  /* torch.round(decimals=15) */
    double sin_a = nearbyint(sin(angle) * 1e15) / 1e15;
    double cx = s->w / 2.0, cy = s->h / 2.0;
    double *a = p->matrix;
    a[0] = cos_a; a[1] = sin_a; a[2] = cx - cos_a * cx - sin_a * cy;
    a[3] = -sin_a; a[4] = cos_a; a[5] = cy + sin_a * cx - cos_a * cy;
}

/* Nearest neighbour in 16.16 fixed point at pixel centres; exposed pixels get the fill.
   The family kernels copy the shape into locals: a byte store may alias any struct, and the
   compiler would reload every field after each one. */
static void affine(uint8_t *img, const Shape *s, double argument, const Params *p, Work *work) {
    const double *a = p->matrix;
    const uint8_t *src = img;
    uint8_t *dst = work->image;
    const int c = s->c, h = s->h, w = s->w;
    const uint8_t fill_value = (uint8_t)s->fill;
    int translation = a[1] == 0.0 && a[3] == 0.0;
    double start_round = translation ? 0.0 : 0.5;
    int32_t x0 = (int32_t)floor(((a[0] * 0.5 + a[1] * 0.5) + a[2]) * 65536.0 + start_round);
    int32_t y0 = (int32_t)floor(((a[3] * 0.5 + a[4] * 0.5) + a[5]) * 65536.0 + start_round);
    int32_t x_col = (int32_t)floor(a[0] * 65536.0 + 0.5), x_row = (int32_t)floor(a[1] * 65536.0 + 0.5);
    int32_t y_col = (int32_t)floor(a[3] * 65536.0 + 0.5), y_row = (int32_t)floor(a[4] * 65536.0 + 0.5);
    const ptrdiff_t plane = (ptrdiff_t)h * w;
    for (int r = 0; r < h; r++) {
        int32_t x = x0 + r * x_row, y = y0 + r * y_row;
        uint8_t *out = dst + (ptrdiff_t)r * w;
        for (int col = 0; col < w; col++, x += x_col, y += y_col) {
            int32_t x_in = x >> 16, y_in = y >> 16;  /* floor: arithmetic shift */
            int inside = x_in >= 0 && x_in < w && y_in >= 0 && y_in < h;
            const uint8_t *from = src + (inside ? (ptrdiff_t)y_in * w + x_in : 0);
            for (int ch = 0; ch < c; ch++)
                out[ch * plane + col] = inside ? from[ch * plane] : fill_value;
        }
    }
    memcpy(img, dst, (size_t)(c * plane));
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

static void invert(const uint8_t *img, const Shape *s, double argument, const int64_t centre[2],
                   Params *p, Work *work) {
    for (int l = 0; l < 256; l++) p->tables[0][l] = (uint8_t)(255 - l);
}

static void solarize(const uint8_t *img, const Shape *s, double m, const int64_t centre[2],
                     Params *p, Work *work) {
    double threshold = 256.0 - m;
    for (int l = 0; l < 256; l++)
        p->tables[0][l] = (uint8_t)((double)l >= threshold ? 255 - l : l);
}

static void posterize(const uint8_t *img, const Shape *s, double bits, const int64_t centre[2],
                      Params *p, Work *work) {
    int step = 1 << (int)(bits < 0.0 ? 0.0 : (bits > 8.0 ? 8.0 : bits));
    for (int l = 0; l < 256; l++) p->tables[0][l] = (uint8_t)(l & ~(step - 1));  /* ⌊l/step⌋·step */
}

static void brightness(const uint8_t *img, const Shape *s, double factor,
                       const int64_t centre[2], Params *p, Work *work) {
    blend_levels(0.0f, (float)factor, p->tables[0]);
}

/* ImageEnhance.Contrast: blend with the grey int(mean(L) + 0.5), in exact integers. */
static void contrast(const uint8_t *img, const Shape *s, double factor, const int64_t centre[2],
                     Params *p, Work *work) {
    int plane = s->h * s->w;
    int64_t total = 0;
    for (int i = 0; i < plane; i++) total += luma(img, s, i);
    float grey = (float)floor_div(2 * total + plane, 2 * (int64_t)plane);
    blend_levels(grey, (float)factor, p->tables[0]);
}

static void auto_contrast(const uint8_t *img, const Shape *s, double argument,
                          const int64_t centre[2], Params *p, Work *work) {
    int plane = s->h * s->w;
    for (int ch = 0; ch < s->c; ch++) {
        int low, high;
        lowest_highest(img + ch * plane, plane, &low, &high);
        double scale = 255.0 / (double)(high - low > 1 ? high - low : 1);
        double offset = -(double)low * scale;
        for (int l = 0; l < 256; l++) {
            double v = trunc((double)l * scale + offset);
            v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
            p->tables[ch][l] = (uint8_t)(high <= low ? l : (int)v);
        }
    }
    p->planes = s->c;
}

static void equalize(const uint8_t *img, const Shape *s, double argument,
                     const int64_t centre[2], Params *p, Work *work) {
    int plane = s->h * s->w;
    for (int ch = 0; ch < s->c; ch++) {
        const uint8_t *channel = img + ch * plane;
        int low, high;
        int64_t histogram[256] = {0};
        lowest_highest(channel, plane, &low, &high);
        for (int i = 0; i < plane; i++) histogram[channel[i]]++;
        int64_t step = (plane - histogram[high]) / 255, below = 0;
        for (int l = 0; l < 256; l++) {
            /* ⌊(step/2 + below) / step⌋ through a double division: exact at these sizes */
            double v = step > 0 ? floor((double)(step / 2 + below) / (double)step) : l;
            p->tables[ch][l] = (uint8_t)(high <= low || step == 0 ? l : (v > 255.0 ? 255 : (int)v));
            below += histogram[l];
        }
    }
    p->planes = s->c;
}

static void lut(uint8_t *img, const Shape *s, double argument, const Params *p, Work *work) {
    const int c = s->c, plane = s->h * s->w;
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *table = p->tables[p->planes == 1 ? 0 : ch];
        uint8_t *q = img + ch * plane;
        for (int i = 0; i < plane; i++) q[i] = table[q[i]];
    }
}

/* ----------------------------------------------------------------------------------- blend */

static void color(const uint8_t *img, const Shape *s, double factor, const int64_t centre[2],
                  Params *p, Work *work) {
    for (int i = 0; i < s->h * s->w; i++) p->degenerate[i] = (float)luma(img, s, i);
}

/* ImageFilter.SMOOTH (1s around a 5, /13, rounded) of each channel; the border is kept. */
static void sharpness(const uint8_t *img, const Shape *s, double factor,
                      const int64_t centre[2], Params *p, Work *work) {
    int plane = s->h * s->w, w = s->w;
    if (!work->smooth_ready) {  /* ⌊(S + 6.5) · (1/13)⌋ in float, as torch computes it */
        const float thirteenth = (float)(1.0 / 13.0);
        for (int sum = 0; sum <= 13 * 255; sum++)
            work->smooth[sum] = (uint8_t)floorf(((float)sum + 6.5f) * thirteenth);
        work->smooth_ready = 1;
    }
    for (int ch = 0; ch < s->c; ch++) {
        const uint8_t *q = img + ch * plane;
        float *d = p->degenerate + ch * plane;
        for (int i = 0; i < plane; i++) d[i] = (float)q[i];
        for (int r = 1; r < s->h - 1; r++) {
            const uint8_t *up = q + (r - 1) * w, *mid = q + r * w, *down = q + (r + 1) * w;
            for (int col = 1; col < w - 1; col++) {
                int sum = up[col - 1] + up[col] + up[col + 1] + mid[col - 1] + 5 * mid[col] +
                          mid[col + 1] + down[col - 1] + down[col] + down[col + 1];
                d[r * w + col] = (float)work->smooth[sum];
            }
        }
    }
    p->planes = s->c;
}

/* Image.blend(degenerate, image, factor) on one plane: float maths, clip, truncate. Branch-free
   so that the compiler vectorises it. */
static void blend_plane(uint8_t *q, const float *d, int size, float factor) {
    for (int i = 0; i < size; i++) {
        float v = ((float)q[i] - d[i]) * factor + d[i];
        v = v < 0.0f ? 0.0f : v;
        v = v > 255.0f ? 255.0f : v;
        q[i] = (uint8_t)(int)v;
    }
}

/* ImageEnhance on every channel: blend with its degenerate plane; the factor is the argument. */
static void blend(uint8_t *img, const Shape *s, double argument, const Params *p, Work *work) {
    const int c = s->c, plane = s->h * s->w;
    for (int ch = 0; ch < c; ch++)
        blend_plane(img + ch * plane, p->degenerate + (p->planes == 1 ? 0 : ch * plane), plane,
                    (float)argument);
}

/* ------------------------------------------------------------------------------------ fill */

static void cutout(const uint8_t *img, const Shape *s, double side, const int64_t centre[2],
                   Params *p, Work *work) {
    int64_t whole = (int64_t)side;
    p->box[0] = centre[0] - floor_div(whole, 2);
    p->box[1] = p->box[0] + whole;
    p->box[2] = centre[1] - floor_div(whole, 2);
    p->box[3] = p->box[2] + whole;
}

static void fill(uint8_t *img, const Shape *s, double argument, const Params *p, Work *work) {
    const int c = s->c, h = s->h, w = s->w;
    const uint8_t fill_value = (uint8_t)s->fill;
    int64_t r0 = p->box[0] < 0 ? 0 : p->box[0], r1 = p->box[1] > h ? h : p->box[1];
    int64_t c0 = p->box[2] < 0 ? 0 : p->box[2], c1 = p->box[3] > w ? w : p->box[3];
    for (int ch = 0; ch < c; ch++)
        for (int64_t r = r0; r < r1; r++)
            for (int64_t col = c0; col < c1; col++)
                img[(ch * h + r) * w + col] = fill_value;
}

/* --------------------------------------------------------------------------------- registry */

static const struct {
    const char *name;
    OpFunction run;
} OP_FUNCTIONS[] = {
    {"ShearX", shear_x}, {"ShearY", shear_y}, {"TranslateX", translate_x},
    {"TranslateY", translate_y}, {"Rotate", rotate}, {"AutoContrast", auto_contrast},
    {"Invert", invert}, {"Equalize", equalize}, {"Solarize", solarize},
    {"Posterize", posterize}, {"Contrast", contrast}, {"Color", color},
    {"Brightness", brightness}, {"Sharpness", sharpness}, {"Cutout", cutout},
};

static const struct {
    const char *name;
    FamilyKernel run;
} FAMILY_KERNELS[] = {
    {"affine", affine}, {"lut", lut}, {"blend", blend}, {"fill", fill},
};

#define COUNT(table) ((int)(sizeof(table) / sizeof((table)[0])))

/* The names ops_native.py matches space.OPS against; NULL past the end. */
const char *hba_op_name(int i) {
    return i >= 0 && i < COUNT(OP_FUNCTIONS) ? OP_FUNCTIONS[i].name : NULL;
}

const char *hba_family_name(int i) {
    return i >= 0 && i < COUNT(FAMILY_KERNELS) ? FAMILY_KERNELS[i].name : NULL;
}

/* ------------------------------------------------------------------------------------ entry */

/* One op on one image, in place. */
static void apply(const OpRow *row, float m, const int64_t centre[2], uint8_t *img,
                  const Shape *s, Work *work) {
    double argument = (double)m * row->scale;
    if (row->rounded) argument = nearbyint(argument);
    Params p;
    p.degenerate = work->degenerate;
    p.planes = 1;
    OP_FUNCTIONS[row->function].run(img, s, argument, centre, &p, work);
    FAMILY_KERNELS[row->family].run(img, s, argument, &p, work);
}

/* out[i] = the two stages applied to images[i]. ops (N, 2) int64, indices into table (−1:
   none); magnitudes (N, 2) float (physical, signed); centres (N, 2, 2) int64 (stage, row/column);
   table: the n_ops ops of space.OPS. Returns 0; −1 when scratch memory cannot be had; −2 for
   a table row naming no function or family kernel here, −3 for an op index past the table
   (both before anything is written). */
int hba_augment(const uint8_t *images, uint8_t *out, int64_t n, int c, int h, int w,
                const int64_t *ops, const float *magnitudes, const int64_t *centres, int fill,
                const OpRow *table, int64_t n_ops) {
    for (int64_t k = 0; k < n_ops; k++)
        if (table[k].function < 0 || table[k].function >= COUNT(OP_FUNCTIONS) ||
            table[k].family < 0 || table[k].family >= COUNT(FAMILY_KERNELS))
            return -2;
    for (int64_t i = 0; i < 2 * n; i++)
        if (ops[i] >= n_ops) return -3;
    Shape s = {c, h, w, fill};
    size_t bytes = (size_t)c * h * w;
    Work *work = calloc(1, sizeof(Work));
    if (work == NULL) return -1;
    work->image = malloc(bytes + 1);
    work->degenerate = malloc(sizeof(float) * (bytes + 1));
    int status = work->image != NULL && work->degenerate != NULL ? 0 : -1;
    if (status == 0) {
        memcpy(out, images, bytes * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            for (int stage = 0; stage < 2; stage++) {
                int64_t op = ops[2 * i + stage];
                if (op >= 0)
                    apply(&table[op], magnitudes[2 * i + stage], centres + 4 * i + 2 * stage,
                          out + bytes * i, &s, work);
            }
        }
    }
    free(work->image);
    free(work->degenerate);
    free(work);
    return status;
}
