// SPDX-License-Identifier: GPL-2.0
/*
 * kt_listen.c - listening sockets and the accept path: the namespace's
 * connection limit (listeners wait for room, connections stay in the
 * backlog), the service's and the source's limits (refused before anything
 * is allocated for the connection), then kt_conn_new().
 */

#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <net/inet_connection_sock.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/request_sock.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* Context: softirq, or process context from release_sock(). */
static void kt_listen_data_ready(struct sock *sk)
{
	struct kt_listener *l;

	read_lock_bh(&sk->sk_callback_lock);
	l = sk->sk_user_data;
	/* Accepted children inherit this callback until they get their own. */
	if (l && sk->sk_state == TCP_LISTEN)
		queue_work(kt_wq, &l->accept_work);
	read_unlock_bh(&sk->sk_callback_lock);
}

static bool kt_over_limit(struct kt_net *ktn)
{
	u32 max = READ_ONCE(ktn->max_conns);

	return max && (u32)atomic_read(&ktn->nconns) >= max;
}

/*
 * The namespace is at its connection limit: wait on its list until a
 * connection goes (kt_listeners_kick).  False if there is room after all.
 * Both sides decide under listen_lock, so no release is missed.
 */
static bool kt_listener_wait(struct kt_listener *l)
{
	struct kt_net *ktn = l->ktn;
	bool wait;

	if (!kt_over_limit(ktn))
		return false;
	spin_lock_bh(&ktn->listen_lock);
	wait = kt_over_limit(ktn) && !l->closing;
	if (wait && list_empty(&l->wait_node))
		list_add_tail(&l->wait_node, &ktn->listen_wait);
	spin_unlock_bh(&ktn->listen_lock);
	return wait;
}

/* Room under the namespace's limit, or a new limit: waiting listeners go on. */
void kt_listeners_kick(struct kt_net *ktn)
{
	struct kt_listener *l, *tmp;

	if (!READ_ONCE(ktn->max_conns) && list_empty_careful(&ktn->listen_wait))
		return;
	spin_lock_bh(&ktn->listen_lock);
	if (!kt_over_limit(ktn)) {
		list_for_each_entry_safe(l, tmp, &ktn->listen_wait, wait_node) {
			list_del_init(&l->wait_node);
			queue_work(kt_wq, &l->accept_work);
		}
	}
	spin_unlock_bh(&ktn->listen_lock);
}

/* One accepted connection: the service's and the source's limits, then set up. */
static void kt_accept(struct kt_listener *l, struct socket *sock,
		      struct kt_config *cfg, struct kt_service *svc)
{
	union kt_addr peer;
	struct kt_src *src;
	int status;

	if (kernel_getpeername(sock, &peer.sa) < 0) {
		sock_release(sock);
		return;
	}
	status = kt_conn_admit(l->ktn, svc, &peer, &src);
	if (status) {
		kt_refuse(sock, status);
		return;
	}
	percpu_ref_get(&cfg->ref);
	kt_conn_new(l, sock, &peer, cfg, svc, src);
}

/*
 * Accept what the listen queue holds, a budget at a time.  Only while the
 * running configuration has the listener's service (a listener opened by a
 * commit waits for its publication, which kicks it), only with room under
 * the namespace's limit, and never one accept more than the queue holds.
 */
static void kt_accept_work(struct work_struct *w)
{
	struct kt_listener *l = container_of(w, struct kt_listener, accept_work);
	struct request_sock_queue *queue =
		&inet_csk(l->sock->sk)->icsk_accept_queue;
	struct mem_cgroup *old;
	struct kt_service *svc;
	struct kt_config *cfg;
	struct socket *sock;
	int budget = KT_BUDGET;

	cfg = kt_config_tryget(l->ktn);
	svc = cfg ? kt_config_service(cfg, &l->addr) : NULL;
	if (!svc)
		goto out;
	old = set_active_memcg(cfg->memcg);
	while (budget--) {
		if (kt_listener_wait(l) || reqsk_queue_empty(queue) ||
		    kernel_accept(l->sock, &sock, O_NONBLOCK))
			break;
		kt_accept(l, sock, cfg, svc);
	}
	if (budget < 0)
		queue_work(kt_wq, &l->accept_work);	/* let others run */
	set_active_memcg(old);
out:
	if (cfg)
		kt_config_put(cfg);
}

int kt_listener_open(struct kt_net *ktn, struct kt_service *svc,
		     struct netlink_ext_ack *extack)
{
	struct kt_listener *l;
	struct socket *sock;
	struct sock *sk;
	int err;

	l = kzalloc(sizeof(*l), KT_GFP);
	if (!l)
		return -ENOMEM;
	err = sock_create_kern(ktn->net, svc->addr.sa.sa_family, SOCK_STREAM,
			       IPPROTO_TCP, &sock);
	if (err)
		goto err_free;
	sk = sock->sk;
	sock_set_reuseaddr(sk);
	ip_sock_set_freebind(sk);	/* a virtual IP may arrive later */
	if (svc->addr.sa.sa_family == AF_INET6)
		ip6_sock_set_v6only(sk);
	err = kernel_bind(sock, (struct sockaddr_unsized *)&svc->addr,
			  svc->addrlen);
	if (err) {
		NL_SET_ERR_MSG(extack, "cannot bind the service's listen address");
		goto err_sock;
	}
	err = kernel_listen(sock, svc->backlog);
	if (err)
		goto err_sock;

	l->ktn = ktn;
	l->sock = sock;
	l->addr = svc->addr;
	l->addrlen = svc->addrlen;
	l->backlog = svc->backlog;
	INIT_LIST_HEAD(&l->wait_node);
	INIT_WORK(&l->accept_work, kt_accept_work);
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = l;
	l->saved_data_ready = sk->sk_data_ready;
	sk->sk_data_ready = kt_listen_data_ready;
	write_unlock_bh(&sk->sk_callback_lock);
	list_add_tail(&l->node, &ktn->listeners);
	svc->listener = l;
	return 0;

err_sock:
	sock_release(sock);
err_free:
	kfree(l);
	return err;
}

/* A kept listener takes a new backlog. */
void kt_listener_update(struct kt_listener *l, const struct kt_service *svc)
{
	if (l->backlog != svc->backlog && !kernel_listen(l->sock, svc->backlog))
		l->backlog = svc->backlog;
}

/* Context: process, under ktn->lock. */
void kt_listener_close(struct kt_listener *l)
{
	struct kt_net *ktn = l->ktn;
	struct sock *sk = l->sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = NULL;
	sk->sk_data_ready = l->saved_data_ready;
	write_unlock_bh(&sk->sk_callback_lock);
	spin_lock_bh(&ktn->listen_lock);
	l->closing = true;
	list_del_init(&l->wait_node);
	spin_unlock_bh(&ktn->listen_lock);
	cancel_work_sync(&l->accept_work);
	list_del(&l->node);
	kernel_sock_shutdown(l->sock, SHUT_RDWR);
	sock_release(l->sock);
	kt_conns_kill(ktn, &l->addr);
	kfree(l);
}

/* Accept what waits on every listener (after a commit published them). */
void kt_listeners_start(struct kt_net *ktn)
{
	struct kt_listener *l;

	lockdep_assert_held(&ktn->lock);
	list_for_each_entry(l, &ktn->listeners, node)
		queue_work(kt_wq, &l->accept_work);
}
