// SPDX-License-Identifier: GPL-2.0
/*
 * Must compile against every kernel: if it does not, the headers are missing
 * or broken and no other probe's failure means anything.
 */
#include <linux/module.h>
#include <linux/timer.h>

int kt_probe_baseline(struct timer_list *t);
int kt_probe_baseline(struct timer_list *t)
{
	return timer_pending(t);
}
