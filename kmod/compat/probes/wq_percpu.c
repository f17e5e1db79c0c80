// SPDX-License-Identifier: GPL-2.0
/*
 * WQ_PERCPU: 6.17 (backported to 6.12.y stable), the explicit name of a
 * per-CPU workqueue, which alloc_workqueue() gives today without WQ_UNBOUND;
 * upstream is making unbound the default, after which a workqueue that wants
 * to be per-CPU must say WQ_PERCPU.
 */
#include <linux/workqueue.h>

unsigned int kt_probe(void);
unsigned int kt_probe(void)
{
	return WQ_PERCPU | WQ_MEM_RECLAIM;
}
