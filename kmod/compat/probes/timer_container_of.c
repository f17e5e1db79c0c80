// SPDX-License-Identifier: GPL-2.0
/* timer_container_of(): 6.16, replacing from_timer(), which is gone. */
#include <linux/timer.h>

struct kt_probe_obj {
	int x;
	struct timer_list timer;
};

int kt_probe(struct timer_list *t);
int kt_probe(struct timer_list *t)
{
	struct kt_probe_obj *o = timer_container_of(o, t, timer);

	return o->x;
}
