// SPDX-License-Identifier: GPL-2.0
/*
 * kt_idle.c - idle backend connections, shared by all client connections.
 *
 * A healthy keep-alive backend connection that its client connection no
 * longer needs is parked on its server's list (at most KT_IDLE_MAX), where
 * any client connection scheduled to that server takes it instead of
 * connecting.  A parked connection is closed on any event (the server
 * closing it, or sending something unasked) and after KT_IDLE_TIMEOUT.
 *
 * Ownership: whoever takes an entry off its server's list (under
 * idle_lock, clearing parked) owns it -- the idle work on an event or
 * timeout, a client connection reusing it, or the retirement of its
 * configuration -- and the owner cancels the work before freeing it.
 * idle_lock is a leaf: sk_callback_lock is never taken under it.
 *
 * Each entry counts as an object of its namespace (kt_net_obj_get) from
 * parking until its socket is released, so a namespace's exit waits for
 * entries that their own work is closing.
 */

#include <linux/slab.h>
#include <net/tcp.h>

#include "kt_conn.h"

#define KT_IDLE_MAX	64		/* per server */
#define KT_IDLE_TIMEOUT	(15 * HZ)

struct kt_idle {
	struct list_head node;		/* srv->idle */
	struct socket *sock;
	struct kt_server *srv;
	struct kt_net *ktn;
	struct delayed_work work;	/* an event or the timeout: close */
	bool parked;			/* on srv->idle, under idle_lock */
	struct kt_sk_saved saved;	/* the socket's own callbacks */
};

/* Context: softirq, or process context from release_sock(). */
static void kt_idle_event(struct sock *sk)
{
	struct kt_idle *idle;

	read_lock_bh(&sk->sk_callback_lock);
	idle = sk->sk_user_data;
	if (idle)	/* data or a close on an idle connection: end it */
		mod_delayed_work(kt_wq, &idle->work, 0);
	read_unlock_bh(&sk->sk_callback_lock);
}

/*
 * Close an idle connection its owner took.  First its events stop reaching
 * the entry, then the work is cancelled -- from the work itself only a
 * pending re-queue can exist, which a plain cancel removes.
 */
static void kt_idle_destroy(struct kt_idle *idle, bool from_work)
{
	struct kt_net *ktn = idle->ktn;

	kt_sk_restore(idle->sock->sk, &idle->saved);
	if (from_work)
		cancel_delayed_work(&idle->work);
	else
		cancel_delayed_work_sync(&idle->work);
	kernel_sock_shutdown(idle->sock, SHUT_RDWR);
	sock_release(idle->sock);
	kfree(idle);
	kt_alloc_dec();
	kt_net_obj_put(ktn);
}

/* Take @idle off its server's list; true if it was still there. */
static bool kt_idle_take(struct kt_idle *idle)
{
	struct kt_server *srv = idle->srv;
	bool was;

	spin_lock_bh(&srv->idle_lock);
	was = idle->parked;
	if (was) {
		list_del(&idle->node);
		srv->nidle--;
		idle->parked = false;
	}
	spin_unlock_bh(&srv->idle_lock);
	return was;
}

static void kt_idle_work(struct work_struct *w)
{
	struct kt_idle *idle = container_of(to_delayed_work(w), struct kt_idle,
					    work);

	if (kt_idle_take(idle))
		kt_idle_destroy(idle, true);	/* else its new owner frees it */
}

/* Park c's healthy backend connection for any client; or close it. */
void kt_idle_park(struct kt_conn *c)
{
	struct kt_server *srv = c->bsrv;
	struct kt_idle *idle;
	bool parked = false;

	idle = kzalloc(sizeof(*idle), KT_GFP);
	if (!idle) {
		kt_conn_release_backend(c);
		return;
	}
	if (!kt_net_obj_get(c->ktn)) {	/* the namespace is going */
		kfree(idle);
		kt_conn_release_backend(c);
		return;
	}
	kt_alloc_inc();
	idle->sock = c->bsk;
	idle->srv = srv;
	idle->ktn = c->ktn;
	idle->saved = c->bsaved;
	INIT_DELAYED_WORK(&idle->work, kt_idle_work);
	c->bsk = NULL;
	c->bsrv = NULL;
	kt_buf_put(&c->down);

	/* From now on the socket's events go to the idle entry. */
	kt_sk_set(idle->sock->sk, idle, kt_idle_event, idle->saved.write_space,
		  kt_idle_event);
	spin_lock_bh(&srv->idle_lock);
	if (!srv->idle_closed && srv->nidle < KT_IDLE_MAX) {
		list_add(&idle->node, &srv->idle);
		srv->nidle++;
		idle->parked = true;
		/* queued under the lock: nobody can own it and free it yet */
		queue_delayed_work(kt_wq, &idle->work, KT_IDLE_TIMEOUT);
		parked = true;
	}
	spin_unlock_bh(&srv->idle_lock);
	if (!parked)
		kt_idle_destroy(idle, false);
}

/* Give c an idle connection to @srv, if one is healthy. */
bool kt_idle_pop(struct kt_conn *c, struct kt_server *srv)
{
	struct kt_idle *idle;
	struct sock *sk;

	for (;;) {
		spin_lock_bh(&srv->idle_lock);
		idle = list_first_entry_or_null(&srv->idle, struct kt_idle, node);
		if (idle) {
			list_del(&idle->node);
			srv->nidle--;
			idle->parked = false;
		}
		spin_unlock_bh(&srv->idle_lock);
		if (!idle)
			return false;
		/* Events go to c before the entry's work is cancelled. */
		sk = idle->sock->sk;
		kt_sk_set(sk, c, kt_sk_event, kt_sk_write_space, kt_sk_event);
		cancel_delayed_work_sync(&idle->work);
		if (sk->sk_state != TCP_ESTABLISHED || sk->sk_err ||
		    (sk->sk_shutdown & RCV_SHUTDOWN) ||
		    !skb_queue_empty_lockless(&sk->sk_receive_queue)) {
			kt_idle_destroy(idle, false);
			continue;
		}
		c->bsk = idle->sock;
		c->bsrv = srv;
		c->bsaved = idle->saved;
		kfree(idle);
		kt_alloc_dec();
		kt_net_obj_put(c->ktn);	/* the connection holds the socket now */
		return true;
	}
}

/* Close every idle connection of @cfg's servers, and park no more there. */
void kt_idle_retire(struct kt_config *cfg)
{
	struct kt_idle *idle, *tmp;
	LIST_HEAD(list);
	u32 i;

	for (i = 0; i < cfg->nservers; i++) {
		struct kt_server *s = &cfg->servers[i];

		spin_lock_bh(&s->idle_lock);
		s->idle_closed = true;
		list_for_each_entry(idle, &s->idle, node)
			idle->parked = false;
		list_splice_init(&s->idle, &list);
		s->nidle = 0;
		spin_unlock_bh(&s->idle_lock);
		cond_resched();
	}
	list_for_each_entry_safe(idle, tmp, &list, node)
		kt_idle_destroy(idle, false);
}
