// SPDX-License-Identifier: GPL-2.0
/*
 * timer_delete_sync(): 6.2 (backported to 6.1.y stable); the old name
 * del_timer_sync() is gone in 6.15.
 */
#include <linux/timer.h>

int kt_probe(struct timer_list *t);
int kt_probe(struct timer_list *t)
{
	return timer_delete_sync(t);
}
