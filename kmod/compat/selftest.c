// SPDX-License-Identifier: GPL-2.0
/*
 * Uses every name compat.h provides, the way the module uses them: compiled
 * with W=1 and -Werror against each kernel by `make -C kmod compat-selftest`
 * (make build runs it), it proves compat.h on kernels that have the API and
 * on kernels that lack it.  Never linked into the module.
 */
#include <linux/module.h>
#include <linux/socket.h>

#include "compat.h"

struct kt_selftest_obj {
	int hits;
	struct timer_list timer;
};

void kt_selftest_timer_fn(struct timer_list *t);
void kt_selftest_timer_fn(struct timer_list *t)
{
	struct kt_selftest_obj *o = timer_container_of(o, t, timer);

	o->hits++;
}

int kt_selftest_timers(struct kt_selftest_obj *o);
int kt_selftest_timers(struct kt_selftest_obj *o)
{
	timer_setup(&o->timer, kt_selftest_timer_fn, 0);
	return timer_delete(&o->timer) + timer_delete_sync(&o->timer);
}

int kt_selftest_socket(struct socket *sock, struct sockaddr_storage *ss, int len);
int kt_selftest_socket(struct socket *sock, struct sockaddr_storage *ss, int len)
{
	int err = kernel_bind(sock, (struct sockaddr_unsized *)ss, len);

	return err ?: kernel_connect(sock, (struct sockaddr_unsized *)ss, len, O_NONBLOCK);
}

struct workqueue_struct *kt_selftest_wq(void);
struct workqueue_struct *kt_selftest_wq(void)
{
	return alloc_workqueue("kt_selftest", WQ_MEM_RECLAIM | WQ_PERCPU, 0);
}

int kt_selftest_send_page(struct socket *sock, struct page *page);
int kt_selftest_send_page(struct socket *sock, struct page *page)
{
	return kt_send_page(sock, page, 0, PAGE_SIZE,
			    MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE);
}
