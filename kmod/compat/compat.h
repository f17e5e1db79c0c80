/* SPDX-License-Identifier: GPL-2.0 */
/*
 * compat.h - the newest kernel API on older kernels.
 *
 * The module is written against current mainline's names.  For each kernel
 * API that changed since 6.1, a probe (compat/probes/NAME.c) is compiled
 * against the target kernel's headers before the build, and kt_have.h,
 * generated per kernel, defines KT_HAVE_NAME when it compiled.  What a
 * kernel lacks is provided here from what it has.  No version checks:
 * stable and distribution kernels backport APIs (Debian's 6.1 has
 * timer_delete_sync, its 6.12 has WQ_PERCPU), and only a compile says what
 * a given kernel has.  docs/kernels.md lists every difference.
 *
 * Include it after any pr_fmt() definition: it includes kernel headers.
 */
#ifndef KT_COMPAT_H
#define KT_COMPAT_H

#include <linux/bvec.h>
#include <linux/container_of.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/uio.h>
#include <linux/timer.h>
#include <linux/workqueue.h>

#include "kt_have.h"

/* 6.2: del_timer_sync() and del_timer() renamed; the old names gone in 6.15. */
#ifndef KT_HAVE_TIMER_DELETE_SYNC
static inline int timer_delete_sync(struct timer_list *timer)
{
	return del_timer_sync(timer);
}
#endif
#ifndef KT_HAVE_TIMER_DELETE
static inline int timer_delete(struct timer_list *timer)
{
	return del_timer(timer);
}
#endif

/* 6.16: from_timer() renamed timer_container_of(). */
#ifndef KT_HAVE_TIMER_CONTAINER_OF
#define timer_container_of(var, callback_timer, timer_fieldname) \
	container_of(callback_timer, typeof(*var), timer_fieldname)
#endif

/*
 * 6.19: kernel_bind(), kernel_connect() (and proto_ops bind and connect)
 * take a struct sockaddr_unsized *.  Before, they take a struct sockaddr *:
 * the module casts its sockaddr_storage to struct sockaddr_unsized *, which
 * names struct sockaddr there.
 */
#ifndef KT_HAVE_SOCKADDR_UNSIZED
#define sockaddr_unsized sockaddr
#endif

/*
 * 6.17: WQ_PERCPU names the per-CPU workqueue that is the default without
 * WQ_UNBOUND; the default is to become unbound.  Without the flag, per-CPU is
 * what alloc_workqueue() gives, so it is 0.
 */
#ifndef KT_HAVE_WQ_PERCPU
#define WQ_PERCPU 0
#endif

/*
 * 6.5: sendmsg() with MSG_SPLICE_PAGES (a page by reference, in a bvec
 * iterator) replaced ->sendpage() and kernel_sendpage().  kt_send_page()
 * sends @len bytes of @page at @off by reference either way; @flags are
 * sendmsg()'s (MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE).  Probed by
 * kernel_sendpage(), not by the flag: Debian's 6.1 defines the flag, but
 * its sendmsg() implementations ignore or refuse it.  With sendpage, "more
 * follows" is also MSG_SENDPAGE_NOTLAST, which TLS reads to keep its record
 * open.  The page must be one sendpage_ok() accepts.  Process context: the
 * protocol may take its socket lock and sleep on its own locks.
 */
static inline int kt_send_page(struct socket *sock, struct page *page,
			       size_t off, size_t len, int flags)
{
#ifdef KT_HAVE_KERNEL_SENDPAGE
	if (flags & MSG_MORE)
		flags |= MSG_SENDPAGE_NOTLAST;
	return kernel_sendpage(sock, page, off, len, flags);
#else
	struct bio_vec bvec;
	struct msghdr msg = { .msg_flags = flags | MSG_SPLICE_PAGES };

	bvec_set_page(&bvec, page, len, off);
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, &bvec, 1, len);
	return sock_sendmsg(sock, &msg);
#endif
}

#endif /* KT_COMPAT_H */
