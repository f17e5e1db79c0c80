// SPDX-License-Identifier: GPL-2.0
/*
 * kt_conn.c - a client connection's life: set up and published, driven by
 * its work item, timed out, closed and freed.  The life of a request and
 * the states: kt_conn.h.  Locking and contexts: kt.h.
 */

#include <linux/jhash.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* Both directions' message states, one object (struct kt_msg_state). */
struct kt_msgs {
	struct kt_msg_state up, down;
};

static struct kmem_cache *kt_conn_cache;
static struct kmem_cache *kt_msgs_cache;

int kt_conn_cache_init(void)
{
	kt_conn_cache = KMEM_CACHE(kt_conn, SLAB_ACCOUNT);
	if (!kt_conn_cache)
		return -ENOMEM;
	kt_msgs_cache = KMEM_CACHE(kt_msgs, SLAB_ACCOUNT);
	if (!kt_msgs_cache) {
		kmem_cache_destroy(kt_conn_cache);
		return -ENOMEM;
	}
	return 0;
}

void kt_conn_cache_exit(void)
{
	kmem_cache_destroy(kt_msgs_cache);
	kmem_cache_destroy(kt_conn_cache);
}

/*
 * A request begins: the message states of both directions, unless the
 * connection kept them from its last request.  Any context (kt_gfp).
 */
int kt_conn_msgs_get(struct kt_conn *c)
{
	struct kt_msgs *m;

	if (c->up.ms)
		return 0;
	m = kmem_cache_zalloc(kt_msgs_cache, kt_gfp());
	if (!m)
		return -ENOMEM;
	kt_alloc_inc();
	c->up.ms = &m->up;
	c->down.ms = &m->down;
	return 0;
}

/* The connection parks or closes: no request is under way. */
void kt_conn_msgs_put(struct kt_conn *c)
{
	if (!c->up.ms)
		return;
	kmem_cache_free(kt_msgs_cache,
			container_of(c->up.ms, struct kt_msgs, up));
	kt_alloc_dec();
	c->up.ms = NULL;
	c->down.ms = NULL;
}

/* ---- counters ----------------------------------------------------------------- */

void kt_conn_count_error(struct kt_conn *c, int kind)
{
	u8 end = kt_alog_end_of(kind);

	if (end != KT_ALOG_NO_HINT)
		c->alog_hint = end;	/* how the exchange ends, for its record */
	if (c->svc)
		kt_stat_inc(c->svc->st, errors[kind]);
	else if (c->svc_st)
		kt_stat_inc(c->svc_st, errors[kind]);
	if (c->srv)
		kt_stat_inc(c->srv->st, errors[kind]);
}

/* The current request is over (answered, failed or finished). */
void kt_conn_end_request(struct kt_conn *c)
{
	if (c->srv) {
		atomic_dec(&c->srv->st->active);
		c->srv = NULL;
	}
}

/* ---- the invariants of kt_conn.h ------------------------------------------------ */

static void kt_conn_check(const struct kt_conn *c)
{
	bool exchange = c->rq == KT_RQ_SEND || c->rq == KT_RQ_BODY ||
			c->rq == KT_RQ_TUNNEL || c->rs != KT_RS_IDLE;

	switch (c->cs) {
	case KT_CS_OPEN:
		WARN_ON_ONCE((c->rq == KT_RQ_HEAD) != (c->rs == KT_RS_IDLE));
		WARN_ON_ONCE(c->rs == KT_RS_IDLE &&
			     (c->srv || c->up.pipe.bytes || c->down.pipe.bytes ||
			      c->down.len));
		WARN_ON_ONCE(exchange && ((!c->b && c->rs != KT_RS_CONNECT) ||
					  !c->srv || !c->pool || !c->svc ||
					  !c->cfg));
		WARN_ON_ONCE(c->rq == KT_RQ_TUNNEL && c->rs != KT_RS_TUNNEL &&
			     c->rs != KT_RS_CONNECT);
		WARN_ON_ONCE(c->rs == KT_RS_TUNNEL && c->rq != KT_RQ_TUNNEL &&
			     c->rq != KT_RQ_DONE);
		WARN_ON_ONCE(c->up.pipe.bytes &&
			     ((c->rq != KT_RQ_BODY && c->rq != KT_RQ_TUNNEL) ||
			      c->hold));
		WARN_ON_ONCE(c->down.pipe.bytes && c->rs != KT_RS_BODY &&
			     c->rs != KT_RS_TUNNEL);
		WARN_ON_ONCE(c->hold && c->resp_started);
		/* a request under way has its message states, a tunnel none */
		if (c->rs == KT_RS_TUNNEL)
			WARN_ON_ONCE(c->up.ms);
		else
			WARN_ON_ONCE((exchange || c->parsing || c->up.len) &&
				     !c->up.ms);
		break;
	case KT_CS_ANSWER:
	case KT_CS_LINGER:
		WARN_ON_ONCE(c->b || c->srv || c->up.pipe.bytes ||
			     c->down.pipe.bytes || c->up.buf || c->down.buf);
		WARN_ON_ONCE(c->cs == KT_CS_ANSWER && !c->ebuf);
		WARN_ON_ONCE(c->cs == KT_CS_LINGER && c->up.ms);
		break;
	}
	WARN_ON_ONCE(!c->up.ms != !c->down.ms);
	WARN_ON_ONCE(c->up.fwd > c->up.len || c->up.sent > c->up.fwd ||
		     c->down.fwd > c->down.len || c->down.sent > c->down.fwd);
}

/* ---- closing ------------------------------------------------------------------ */

static void kt_conn_release(struct work_struct *w);

/* Context: softirq (RCU callback). */
static void kt_conn_release_rcu(struct rcu_head *rcu)
{
	struct kt_conn *c = container_of(rcu, struct kt_conn, rcu);

	/* the rcu_head is done with: the work takes its place */
	INIT_WORK(&c->release_work, kt_conn_release);
	queue_work(kt_wq, &c->release_work);
}

/*
 * Stop everything that could reach the connection -- its callbacks, its
 * backend connection, its timer -- and hand it to its release work after
 * an RCU grace period: a backend connection's callback that still saw it
 * as owner has queued its work or scheduled its tasklet by then, and the
 * release work waits for both.  Called from its own work or tasklet.
 */
void kt_conn_close(struct kt_conn *c)
{
	if (c->cs == KT_CS_CLOSED)
		return;
	kt_alog_done(c, kt_alog_end_or(c, KTCPVS_END_CLIENT_ABORT));
	c->cs = KT_CS_CLOSED;
	if (c->tls)
		kt_conn_unwatch(c);
	else
		kt_sk_restore(c->csk->sk, &c->csaved);
	kt_conn_drop_backend(c);
	timer_delete(&c->timer);	/* the release work waits for it */
	call_rcu(&c->rcu, kt_conn_release_rcu);
}

static void kt_conn_release(struct work_struct *w)
{
	struct kt_conn *c = container_of(w, struct kt_conn, release_work);
	struct kt_net *ktn = c->ktn;

	/* Unlinked, nothing can queue the work any more; then wait for it. */
	spin_lock_bh(&ktn->conns_lock);
	list_del(&c->node);
	spin_unlock_bh(&ktn->conns_lock);
	tasklet_kill(&c->tasklet);	/* it may queue the work: first */
	timer_delete_sync(&c->timer);	/* it queues the work too */
	cancel_work_sync(&c->work);
	kernel_sock_shutdown(c->csk, SHUT_RDWR);
	if (c->tls)
		fput(c->tls->file);	/* a handed-over socket is its file's */
	else
		sock_release(c->csk);
	kt_conn_end_request(c);
	if (c->cfg)
		kt_config_put(c->cfg);
	if (c->src)
		kt_src_detach(ktn, c->src);
	atomic_dec(&c->svc_st->active);
	kt_stats_put(c->svc_st);
	kt_buf_put(&c->up);
	kt_buf_put(&c->down);
	kt_conn_msgs_put(c);
	kt_pipe_purge(&c->up.pipe);
	kt_pipe_purge(&c->down.pipe);
	if (c->ebuf) {
		kfree(c->ebuf);
		kt_alloc_dec();
	}
	kt_alog_free(c);
	if (c->tls) {
		kfree(c->tls);
		kt_alloc_dec();
	}
	mem_cgroup_put(c->memcg);
	kmem_cache_free(kt_conn_cache, c);
	kt_alloc_dec();
	atomic_dec(&ktn->nconns);
	kt_listeners_kick(ktn);		/* room under the connection limit */
	kt_net_obj_put(ktn);		/* last: the namespace may go now */
}

/* Ask every connection of @ktn (or only those reaching @la) to close. */
void kt_conns_kill(struct kt_net *ktn, const union kt_addr *la)
{
	struct kt_conn *c;

	spin_lock_bh(&ktn->conns_lock);
	list_for_each_entry(c, &ktn->conns, node) {
		if (la && !kt_addr_equal(&c->laddr, la))
			continue;
		set_bit(KT_CF_KILL, &c->flags);
		queue_work(kt_wq, &c->work);
	}
	spin_unlock_bh(&ktn->conns_lock);
}

/* ---- timeouts ------------------------------------------------------------------- */

/* Context: softirq (timer). */
static void kt_conn_timer(struct timer_list *t)
{
	struct kt_conn *c = timer_container_of(c, t, timer);

	set_bit(KT_CF_TIMER, &c->flags);
	queue_work(kt_wq, &c->work);
}

/*
 * Arm the timer for the earliest of the deadline and the park time, only
 * when that moves it earlier: a later deadline is found when the timer
 * fires (kt_conn_work re-arms it then).
 */
static void kt_conn_arm_timer(struct kt_conn *c)
{
	unsigned long at = c->deadline;

	if (c->park_at && time_before(c->park_at, at))
		at = c->park_at;
	if (timer_pending(&c->timer) && !time_after(c->timer_at, at))
		return;
	c->timer_at = at;
	mod_timer(&c->timer, at);
}

static void kt_conn_timeout(struct kt_conn *c)
{
	switch (c->cs) {
	case KT_CS_ANSWER:
	case KT_CS_LINGER:
		kt_conn_close(c);
		return;
	}
	if (c->rs == KT_RS_CONNECT) {
		kt_backend_retry(c);
		return;
	}
	if (c->rq == KT_RQ_HEAD) {
		/*
		 * Bytes may wait in the socket because this work runs late (a
		 * loaded machine), not because the client is: read them once
		 * before judging.  Once per deadline, so a client that keeps
		 * dribbling gains one read, not a longer timeout.
		 */
		if (!c->late_read && kt_sk_readable(c->csk->sk)) {
			c->late_read = true;
			return;
		}
		if (!c->up.len && !c->first) {
			kt_conn_close(c);	/* idle keep-alive connection */
			return;
		}
		kt_conn_fail(c, KT_E_HEADER_TIMEOUT, 408,
			     "the request head did not arrive in time");
		return;
	}
	if (c->rs == KT_RS_HEAD && !c->resp_started) {
		kt_server_failed(c->srv);
		kt_conn_fail(c, KT_E_BACKEND_TIMEOUT, 504,
			     "the server did not answer in time");
		return;
	}
	kt_conn_count_error(c, KT_E_BACKEND_TIMEOUT);
	kt_conn_close(c);
}

/* ---- running the steps: the tasklet and the work ----------------------------------- */

static enum kt_step kt_conn_step(struct kt_conn *c)
{
	enum kt_step p;

	switch (c->cs) {
	case KT_CS_ANSWER:
		return kt_step_answer(c);
	case KT_CS_LINGER:
		return kt_step_linger(c);
	case KT_CS_CLOSED:
		return KT_BLOCKED;
	}
	p = kt_step_request(c);
	if (c->cs != KT_CS_OPEN)
		return KT_PROGRESS;
	if (c->rs != KT_RS_IDLE && kt_step_response(c) == KT_PROGRESS)
		p = KT_PROGRESS;
	return p;
}

/*
 * Run steps until none makes progress.  True if the work item should run:
 * the budget is spent (others get their turn), or -- in softirq -- a step
 * needed process context (kt_io_defer) and stopped before doing anything.
 */
static bool kt_conn_steps(struct kt_conn *c)
{
	bool atomic = !in_task(), work = false;
	int budget = atomic ? KT_BUDGET_SOFTIRQ : KT_BUDGET;
	enum kt_step p;

	if (atomic)
		this_cpu_write(kt_deferred, false);
	while (c->cs != KT_CS_CLOSED) {
		p = kt_conn_step(c);
		if (c->cs != KT_CS_CLOSED)
			kt_conn_check(c);
		if (atomic && this_cpu_read(kt_deferred)) {
			work = true;
			break;
		}
		if (p == KT_BLOCKED)
			break;
		if (!--budget) {
			work = true;
			break;
		}
	}
	if (c->cs == KT_CS_CLOSED)
		return false;
	if (c->park_at && (c->rq != KT_RQ_HEAD || c->up.len))
		c->park_at = 0;		/* a request came: the backend serves it */
	kt_conn_arm_timer(c);
	return work;
}

/*
 * Who runs a connection's steps.  A socket callback in softirq schedules
 * the connection's tasklet (kt_conn_kick), which runs the steps at once,
 * in softirq, with the socket calls of kt_io.c: a keep-alive request and
 * its answer are read, parsed, routed and sent without a context switch.
 * A step that needs process context -- a connect, a shutdown, a socket a
 * process owns, memory that needs reclaim -- defers (kt_io_defer) and the
 * tasklet queues the work, which runs the same steps with sleeping calls
 * and also handles timeouts and kills.  KT_CF_RUN makes the two
 * exclusive: the one that finds the other running leaves its RERUN bit,
 * and the runner queues the work when it lets go.
 */
static bool kt_conn_claim(struct kt_conn *c, int rerun)
{
	if (!test_and_set_bit_lock(KT_CF_RUN, &c->flags))
		return true;
	set_bit(rerun, &c->flags);
	smp_mb__after_atomic();		/* the bit, then the second look */
	if (test_and_set_bit_lock(KT_CF_RUN, &c->flags))
		return false;		/* the runner sees the bit when it lets go */
	clear_bit(rerun, &c->flags);
	return true;
}

/* Let go of the steps; true if the other runner came meanwhile. */
static bool kt_conn_unclaim(struct kt_conn *c)
{
	bool work, fast;

	clear_bit_unlock(KT_CF_RUN, &c->flags);
	smp_mb__after_atomic();		/* cleared, then look for a loser's bit */
	work = test_and_clear_bit(KT_CF_RERUN_WORK, &c->flags);
	fast = test_and_clear_bit(KT_CF_RERUN_FAST, &c->flags);
	return work || fast;
}

/*
 * An event on one of c's sockets.  Context: the socket's callback: softirq,
 * or process context from release_sock() of the socket's owner (the
 * connection's own work, which then runs again).
 */
void kt_conn_kick(struct kt_conn *c)
{
	if (READ_ONCE(kt_fastpath) && in_serving_softirq() && !c->tls)
		tasklet_schedule(&c->tasklet);
	else
		queue_work(kt_wq, &c->work);
}

/* Context: softirq (TASKLET_SOFTIRQ on the CPU the callback ran on). */
static void kt_conn_tasklet(struct tasklet_struct *t)
{
	struct kt_conn *c = from_tasklet(c, t, tasklet);
	struct mem_cgroup *old;
	bool work = false;

	if (!kt_conn_claim(c, KT_CF_RERUN_FAST))
		return;
	if (c->cs != KT_CS_CLOSED) {
		old = set_active_memcg(c->memcg);
		work = kt_conn_steps(c);
		set_active_memcg(old);
	}
	if (kt_conn_unclaim(c) || work)
		queue_work(kt_wq, &c->work);
}

static void kt_conn_work(struct work_struct *w)
{
	struct kt_conn *c = container_of(w, struct kt_conn, work);
	struct mem_cgroup *old;
	bool again = false;

	if (!kt_conn_claim(c, KT_CF_RERUN_WORK))
		return;		/* the tasklet runs: it queues this again */
	old = set_active_memcg(c->memcg);
	if (c->cs == KT_CS_CLOSED)
		goto out;
	if (test_and_clear_bit(KT_CF_KILL, &c->flags)) {
		/* the switch ends it: its service or namespace is going */
		c->alog_hint = kt_alog_end_or(c, KTCPVS_END_LOCAL);
		kt_conn_close(c);
		goto out;
	}
	if (test_and_clear_bit(KT_CF_TIMER, &c->flags)) {
		if (time_after_eq(jiffies, c->deadline))
			kt_conn_timeout(c);
		else
			kt_conn_park_idle(c);
	}
	again = kt_conn_steps(c);
out:
	set_active_memcg(old);
	if (kt_conn_unclaim(c) || again)
		queue_work(kt_wq, &c->work);
}

/* ---- a new connection ------------------------------------------------------------ */

static u32 kt_client_hash(const union kt_addr *peer)
{
	if (peer->sa.sa_family == AF_INET)
		return jhash_1word((__force u32)peer->in.sin_addr.s_addr, 0);
	return jhash(&peer->in6.sin6_addr, 16, 0);
}

/*
 * Hand the connection to its socket's callbacks and schedule its first run,
 * in one step under sk_callback_lock (the nvmet-tcp pattern): everything
 * is set up before, and nothing here touches it after.  The first run is
 * its tasklet, which runs as the lock's BHs come back on, still in the
 * accept work: a first request that came with the handshake is served
 * without a work item.  A client that reset meanwhile is seen by the run
 * (sk_err, or EOF), which closes.
 */
static void kt_conn_publish(struct kt_conn *c, struct kt_listener *l)
{
	struct sock *sk = c->csk->sk;

	write_lock_bh(&sk->sk_callback_lock);
	c->csaved.data_ready = l->saved_data_ready;	/* it inherited ours */
	c->csaved.write_space = sk->sk_write_space;
	c->csaved.state_change = sk->sk_state_change;
	sk->sk_user_data = c;
	sk->sk_data_ready = kt_sk_event;
	sk->sk_write_space = kt_sk_write_space;
	sk->sk_state_change = kt_sk_state_change;
	if (READ_ONCE(kt_fastpath))
		tasklet_schedule(&c->tasklet);
	else
		queue_work(kt_wq, &c->work);
	write_unlock_bh(&sk->sk_callback_lock);
}

/*
 * A connection of @svc (reached at @laddr) from @peer on @sock, set up
 * completely but not yet linked or published; NULL if memory or the
 * namespace is gone (nothing taken over then).
 */
static struct kt_conn *kt_conn_setup(struct kt_net *ktn,
				     const union kt_addr *laddr,
				     struct socket *sock,
				     const union kt_addr *peer,
				     struct kt_config *cfg,
				     struct kt_service *svc, struct kt_src *src)
{
	struct kt_conn *c;

	c = kmem_cache_zalloc(kt_conn_cache, KT_GFP);
	if (!c)
		return NULL;
	if (!kt_net_obj_get(ktn)) {	/* the namespace is going */
		kmem_cache_free(kt_conn_cache, c);
		return NULL;
	}
	kt_alloc_inc();
	c->ktn = ktn;
	c->csk = sock;
	c->first = true;
	kt_pipe_init(&c->up.pipe);
	kt_pipe_init(&c->down.pipe);
	INIT_WORK(&c->work, kt_conn_work);
	tasklet_setup(&c->tasklet, kt_conn_tasklet);
	timer_setup(&c->timer, kt_conn_timer, 0);
	memcpy(&c->laddr, laddr, sizeof(c->laddr));
	memcpy(&c->peer, peer, sizeof(c->peer));
	c->client_hash = kt_client_hash(&c->peer);
	c->memcg = cfg->memcg;
	if (c->memcg)
		css_get(&c->memcg->css);
	c->cfg = cfg;
	c->svc = svc;
	c->src = src;
	c->svc_st = svc->st;
	refcount_inc(&svc->st->ref);
	atomic_inc(&svc->st->active);
	kt_stat_inc(svc->st, conns);
	tcp_sock_set_nodelay(sock->sk);
	kt_conn_start_request(c);
	return c;
}

/* Where kills, namespace exit and unload find it. */
static void kt_conn_link(struct kt_conn *c)
{
	struct kt_net *ktn = c->ktn;

	spin_lock_bh(&ktn->conns_lock);
	list_add(&c->node, &ktn->conns);
	spin_unlock_bh(&ktn->conns_lock);
	atomic_inc(&ktn->nconns);
}

/*
 * A connection from @peer accepted on @l, the limits already checked
 * (kt_listen.c).  Takes over @sock, a reference on @cfg and the per-source
 * entry @src.
 * Context: the listener's accept work.
 */
void kt_conn_new(struct kt_listener *l, struct socket *sock,
		 const union kt_addr *peer, struct kt_config *cfg,
		 struct kt_service *svc, struct kt_src *src)
{
	struct kt_conn *c;

	c = kt_conn_setup(l->ktn, &l->addr, sock, peer, cfg, svc, src);
	if (!c) {
		if (src)
			kt_src_detach(l->ktn, src);
		kt_config_put(cfg);
		sock_release(sock);
		return;
	}
	kt_conn_link(c);
	kt_conn_publish(c, l);
}

/*
 * A TLS client socket's events: its wait queue is woken as for poll()
 * (TLS calls the socket's own data_ready when a whole record is ready,
 * sk_stream_write_space when there is room, the state change on FIN or
 * reset).  A state change (sock_def_wakeup: no event mask) that is only
 * the switch's own close going on queues nothing (kt_sk_own_close).  The
 * socket stays until kt_conn_unwatch has taken this entry off its queue.
 * Context: any, under the wait queue's lock with IRQs off.
 */
static int kt_conn_wake(struct wait_queue_entry *wait, unsigned int mode,
			int sync, void *key)
{
	struct kt_conn *c = wait->private;

	if (!key && kt_sk_own_close(c->csk->sk))
		return 0;
	queue_work(kt_wq, &c->work);
	return 0;
}

/* No wakeup reaches the connection after this. */
void kt_conn_unwatch(struct kt_conn *c)
{
	struct sock *sk = c->csk->sk;

	remove_wait_queue(sk_sleep(sk), &c->tls->wait);
	kt_tls_unclaim(sk);
}

/*
 * A TLS client connection handed over by its acceptor (kt_tls.c: checked,
 * the limits passed, the socket marked as ours).  Takes over @sock with
 * its file reference, a reference on @cfg and @src; on failure (-ENOMEM,
 * or the namespace going) takes nothing.  Its events come through the
 * socket's wait queue, its steps run in its work only (TLS sleeps).
 * Context: process (the acceptor's netlink request).
 */
int kt_conn_adopt(struct kt_net *ktn, struct kt_service *svc,
		  struct kt_config *cfg, struct socket *sock,
		  const union kt_addr *peer, struct kt_src *src,
		  struct kt_conn_tls *tls)
{
	struct kt_conn *c;

	c = kt_conn_setup(ktn, &svc->addr, sock, peer, cfg, svc, src);
	if (!c)
		return -ENOMEM;
	c->tls = tls;	/* the connection's from here on */
	tls->file = sock->file;
	init_waitqueue_func_entry(&tls->wait, kt_conn_wake);
	tls->wait.private = c;
	/* no run (a wakeup's, a kill's) until the watch is in place */
	set_bit(KT_CF_RUN, &c->flags);
	kt_conn_link(c);
	add_wait_queue(sk_sleep(sock->sk), &tls->wait);
	kt_conn_unclaim(c);
	queue_work(kt_wq, &c->work);	/* what came before the handover */
	return 0;
}
