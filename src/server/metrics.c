/* metrics.c - histogram buckets and quantiles. */
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
