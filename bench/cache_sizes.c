/* cache_sizes: the sizes of kp-switch's flow cache structures, as the compiler lays
 * them out (built against switch/csrc by bench/run.py).  Prints one JSON line. */
#include <stdio.h>

#include "flow_cache.h"
#include "megaflow.h"

int main(void)
{
    struct flow_cache *c = NULL;

    printf("{\"bucket\": %zu, \"ways\": %d, \"entry\": %zu, \"key\": %zu, \"prog_slot\": %zu,"
           " \"prog_pool\": %d, \"max_flow_ids\": %u, \"flow_cache\": %zu,"
           " \"addr_slot\": %zu, \"addr_pool\": %d, \"flow_inval\": %zu,"
           " \"megaflows\": %zu, \"mf_bytes_per_flow\": %zu, \"mf_entries\": %d}\n",
           sizeof(struct cache_bucket), WAYS, sizeof(struct cache_entry),
           sizeof(struct cache_key), sizeof(struct prog_slot), PROG_POOL,
           (unsigned)MAX_FLOW_IDS, sizeof(struct flow_cache), sizeof(struct addr_slot),
           ADDR_POOL, sizeof c->flow_inval[0], sizeof(struct megaflows),
           (size_t)MF_BYTES_PER_FLOW, MF_BUCKETS * MF_WAYS);
    return 0;
}
