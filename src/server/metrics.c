/* metrics.c - histogram buckets and quantiles, slot occupancy. */
#include <stdlib.h>

#include "metrics.h"

const double gq_hist_bounds[GQ_HBUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1,     2.5,    10,    60,   600,   1e300,
};

void
gq_hist_add(struct gq_hist *h, double v)
{
    int i = 0;
    while (i < GQ_HBUCKETS - 1 && v > gq_hist_bounds[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

double
gq_hist_quantile(const struct gq_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i < GQ_HBUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want)
            return gq_hist_bounds[i];
    }
    return gq_hist_bounds[GQ_HBUCKETS - 1];
}

void
gq_metrics_slot_freed(struct gq_metrics *m, int slot, int64_t from_us,
                      int64_t now_us)
{
    if (slot < 0 || slot >= GQ_MAX_SLOTS || now_us < from_us || from_us <= 0)
        return;
    m->slot_busy_us[slot] += now_us - from_us;
}

void
gq_ring_add(struct gq_ring *r, double v)
{
    r->v[r->n % GQ_RING] = (float)v;
    r->n++;
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

double
gq_ring_quantile(const struct gq_ring *r, double q)
{
    float tmp[GQ_RING];
    uint32_t n = r->n < GQ_RING ? r->n : GQ_RING;
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        tmp[i] = r->v[i];
    qsort(tmp, n, sizeof tmp[0], cmp_float);
    uint32_t k = (uint32_t)(q * (double)(n - 1) + 0.5);
    return tmp[k < n ? k : n - 1];
}
