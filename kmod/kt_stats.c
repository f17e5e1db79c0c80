// SPDX-License-Identifier: GPL-2.0
/*
 * kt_stats.c - counters of services, pools and servers: per CPU, summed
 * when read; refcounted so that an object that keeps its identity across
 * a configuration swap keeps its counters.
 */

#include <linux/percpu.h>
#include <linux/slab.h>

#include "kt.h"

struct kt_stats *kt_stats_new(void)
{
	struct kt_stats *st = kzalloc(sizeof(*st), KT_GFP);

	if (!st)
		return NULL;
	st->pc = alloc_percpu_gfp(struct kt_pcpu_stats, KT_GFP);
	if (!st->pc) {
		kfree(st);
		return NULL;
	}
	refcount_set(&st->ref, 1);
	kt_alloc_inc();
	return st;
}

/* Context: any (configurations are freed from RCU callbacks). */
void kt_stats_put(struct kt_stats *st)
{
	if (st && refcount_dec_and_test(&st->ref)) {
		free_percpu(st->pc);
		kfree(st);
		kt_alloc_dec();
	}
}

/* Take over the counters of the same object in the old configuration. */
struct kt_stats *kt_stats_carry(struct kt_stats *old)
{
	refcount_inc(&old->ref);
	return old;
}

void kt_stats_sum(const struct kt_stats *st, struct kt_pcpu_stats *sum)
{
	int cpu, k;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		const struct kt_pcpu_stats *p = per_cpu_ptr(st->pc, cpu);

		sum->conns += READ_ONCE(p->conns);
		sum->requests += READ_ONCE(p->requests);
		sum->bytes_in += READ_ONCE(p->bytes_in);
		sum->bytes_out += READ_ONCE(p->bytes_out);
		sum->spliced += READ_ONCE(p->spliced);
		for (k = 0; k < KT_E_MAX; k++)
			sum->errors[k] += READ_ONCE(p->errors[k]);
	}
}
