// SPDX-License-Identifier: GPL-2.0
/*
 * kt_bconn.c - backend connections: one socket to one server, owned by one
 * client connection at a time or parked in its server's idle pool, where
 * any client connection scheduled to that server takes it instead of
 * connecting.
 *
 * A backend connection's socket points at its struct kt_bconn for the
 * socket's whole life: its callbacks are installed once, when it is
 * created, and removed once, when it is closed.  Moving it between client
 * connections and the pool changes b->owner (RCU) and a list under
 * idle_lock -- no allocation, no callback swap.  A callback reads the owner
 * under rcu_read_lock() and queues its work; a client connection is freed
 * only after an RCU grace period that follows its giving up its backend
 * connection (kt_conn_close), and its release work cancels c->work after
 * that, so a callback that saw it as owner cannot queue work on freed
 * memory.
 *
 * Parked connections: at most KT_IDLE_MAX per server, closed on any event
 * (the server closing it, or sending something unasked) and after
 * KT_IDLE_TIMEOUT.  Whoever takes one off its server's list (under
 * idle_lock, clearing parked) owns it: a client connection, its idle work,
 * or the retirement of its configuration.  idle_lock is a leaf.
 *
 * Each backend connection counts as an object of its namespace
 * (kt_net_obj_get) from its creation until its socket is released, so a
 * namespace's exit waits for the ones their idle work is closing.
 */

#include <linux/slab.h>
#include <net/tcp.h>

#include "kt_conn.h"

#define KT_IDLE_MAX	64		/* per server */
#define KT_IDLE_TIMEOUT	(15 * HZ)

/*
 * The socket's callback.  Context: softirq, or process context from
 * release_sock() of its owner.  sk_user_data stays the same for the
 * socket's life; sk_callback_lock keeps it from being freed under us.
 */
static void kt_bconn_event(struct sock *sk)
{
	struct kt_bconn *b;
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	b = sk->sk_user_data;
	if (b) {
		rcu_read_lock();
		c = rcu_dereference(b->owner);
		if (c)
			kt_conn_kick(c);
		else if (READ_ONCE(b->parked))	/* an event on an idle one: end it */
			mod_delayed_work(kt_wq, &b->idle_work, 0);
		rcu_read_unlock();
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void kt_bconn_write_space(struct sock *sk)
{
	if (sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		kt_bconn_event(sk);
	}
}

/*
 * Close a backend connection that nobody else can reach: its callbacks go
 * first (no event reaches it after that), then its idle work, then its
 * socket.  @from_work: called by its own idle work, which can only find a
 * pending re-queue of itself to cancel.  In softirq (a connection's
 * tasklet) only the callbacks go at once: the socket is released by the
 * idle work, which finds it dying.
 */
static void kt_bconn_destroy(struct kt_bconn *b, bool from_work)
{
	struct kt_net *ktn = b->ktn;

	kt_sk_restore(b->sock->sk, &b->saved);
	if (!in_task()) {
		WRITE_ONCE(b->dying, true);
		mod_delayed_work(kt_wq, &b->idle_work, 0);
		return;
	}
	if (from_work)
		cancel_delayed_work(&b->idle_work);
	else
		cancel_delayed_work_sync(&b->idle_work);
	kernel_sock_shutdown(b->sock, SHUT_RDWR);
	sock_release(b->sock);
	kfree(b);
	kt_alloc_dec();
	kt_net_obj_put(ktn);
}

/* Take @b off its server's list; true if it was still there. */
static bool kt_bconn_take(struct kt_bconn *b)
{
	struct kt_server *srv = b->srv;
	bool was;

	spin_lock_bh(&srv->idle_lock);
	was = b->parked;
	if (was) {
		list_del(&b->node);
		srv->nidle--;
		WRITE_ONCE(b->parked, false);
	}
	spin_unlock_bh(&srv->idle_lock);
	return was;
}

static void kt_bconn_idle_work(struct work_struct *w)
{
	struct kt_bconn *b = container_of(to_delayed_work(w), struct kt_bconn,
					  idle_work);

	/* dying: given up in softirq; else taken here, or its new owner has it */
	if (READ_ONCE(b->dying) || kt_bconn_take(b))
		kt_bconn_destroy(b, true);
}

static void kt_bconn_own(struct kt_conn *c, struct kt_bconn *b)
{
	rcu_assign_pointer(b->owner, c);
	c->b = b;
}

/*
 * A new backend connection of @c to @srv: a socket of the namespace with
 * our callbacks, not connected yet.  0 or -errno.  Context: c's work.
 */
int kt_bconn_new(struct kt_conn *c, struct kt_server *srv)
{
	struct kt_bconn *b;
	struct socket *sock;
	struct sock *sk;
	int err;

	b = kzalloc(sizeof(*b), KT_GFP);	/* process context: a connect */
	if (!b)
		return -ENOMEM;
	if (!kt_net_obj_get(c->ktn)) {	/* the namespace is going */
		kfree(b);
		return -ENOMEM;
	}
	err = sock_create_kern(c->ktn->net, srv->addr.sa.sa_family, SOCK_STREAM,
			       IPPROTO_TCP, &sock);
	if (err) {
		kfree(b);
		kt_net_obj_put(c->ktn);
		return err;
	}
	kt_alloc_inc();
	b->sock = sock;
	b->srv = srv;
	b->ktn = c->ktn;
	INIT_DELAYED_WORK(&b->idle_work, kt_bconn_idle_work);
	sk = sock->sk;
	tcp_sock_set_nodelay(sk);
	kt_bconn_own(c, b);
	kt_sk_save(sk, &b->saved);
	kt_sk_set(sk, b, kt_bconn_event, kt_bconn_write_space, kt_bconn_event);
	return 0;
}

/* Close c's backend connection. */
void kt_bconn_close(struct kt_conn *c)
{
	struct kt_bconn *b = c->b;

	rcu_assign_pointer(b->owner, NULL);
	c->b = NULL;
	kt_bconn_destroy(b, false);
}

/* Park c's healthy backend connection for any client; or close it. */
void kt_bconn_park(struct kt_conn *c)
{
	struct kt_bconn *b = c->b;
	struct kt_server *srv = b->srv;
	bool parked = false;

	rcu_assign_pointer(b->owner, NULL);
	c->b = NULL;
	spin_lock_bh(&srv->idle_lock);
	if (!srv->idle_closed && srv->nidle < KT_IDLE_MAX) {
		list_add(&b->node, &srv->idle);
		srv->nidle++;
		WRITE_ONCE(b->parked, true);
		/* queued under the lock: nobody can own it and free it yet */
		mod_delayed_work(kt_wq, &b->idle_work, KT_IDLE_TIMEOUT);
		parked = true;
	}
	spin_unlock_bh(&srv->idle_lock);
	if (!parked)
		kt_bconn_destroy(b, false);
}

/* Give c an idle connection to @srv, if one is healthy. */
bool kt_bconn_pop(struct kt_conn *c, struct kt_server *srv)
{
	struct kt_bconn *b;
	struct sock *sk;

	for (;;) {
		spin_lock_bh(&srv->idle_lock);
		b = list_first_entry_or_null(&srv->idle, struct kt_bconn, node);
		if (b) {
			list_del(&b->node);
			srv->nidle--;
			WRITE_ONCE(b->parked, false);
		}
		spin_unlock_bh(&srv->idle_lock);
		if (!b)
			return false;
		/*
		 * Events go to c from here on, before its health is looked
		 * at: none is lost in between.  Its idle work, if it runs now,
		 * finds it no longer parked.
		 */
		kt_bconn_own(c, b);
		cancel_delayed_work(&b->idle_work);
		sk = b->sock->sk;
		if (sk->sk_state != TCP_ESTABLISHED || sk->sk_err ||
		    (sk->sk_shutdown & RCV_SHUTDOWN) ||
		    !skb_queue_empty_lockless(&sk->sk_receive_queue)) {
			kt_bconn_close(c);
			continue;
		}
		return true;
	}
}

/* Close every idle connection of @cfg's servers, and park no more there. */
void kt_idle_retire(struct kt_config *cfg)
{
	struct kt_bconn *b, *tmp;
	LIST_HEAD(list);
	u32 i;

	for (i = 0; i < cfg->nservers; i++) {
		struct kt_server *s = &cfg->servers[i];

		spin_lock_bh(&s->idle_lock);
		s->idle_closed = true;
		list_for_each_entry(b, &s->idle, node)
			WRITE_ONCE(b->parked, false);
		list_splice_init(&s->idle, &list);
		s->nidle = 0;
		spin_unlock_bh(&s->idle_lock);
		cond_resched();
	}
	list_for_each_entry_safe(b, tmp, &list, node)
		kt_bconn_destroy(b, false);
}
