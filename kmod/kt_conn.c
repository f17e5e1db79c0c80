// SPDX-License-Identifier: GPL-2.0
/*
 * kt_conn.c - the data path: one client connection, from accept to close.
 * Included by ktcpvs.c (one translation unit).
 *
 * Event-driven: socket callbacks (softirq) only queue the connection's work
 * item; the work item does nonblocking I/O with a budget and re-queues
 * itself when the budget runs out.  A work item never runs concurrently
 * with itself, so a connection's state is touched by its own work only; no
 * lock protects it.  The timer callback sets a bit and queues the work.
 *
 * Per request (c->rq) and per response (c->rs):
 *
 *   RQ_HEAD  read and parse the head (limits, header timeout -> 408)
 *            route (matcher), schedule, connect or reuse the backend
 *   RQ_SEND  forward the head (X-Forwarded-For added when asked)
 *   RQ_BODY  forward the body by its framing (the body machine says which
 *            bytes belong to this request; pipelined bytes wait)
 *   RQ_DONE  request forwarded; the response decides what happens next
 *
 *   RS_CONNECT  nonblocking connect; refused or timed out: next server
 *   RS_HEAD     read and parse the response head (1xx forwarded, 101 and
 *               2xx to CONNECT become a tunnel)
 *   RS_BODY     forward the body by its framing; at its end, on keep-alive,
 *               the next request is routed afresh -- possibly to another
 *               pool -- and the backend connection is kept for reuse
 *
 * Requests on one connection are served one after another, so responses
 * go out in request order; a pipelined request waits in the buffer.
 *
 * Errors the switch answers itself go out with Connection: close; then the
 * write side is shut down and the read side drained for a moment
 * (lingering close) so the client reads the answer instead of a reset.
 *
 * Teardown: kt_conn_close() restores the sockets' callbacks (after that no
 * callback can queue the work), stops the timer and hands the connection to
 * its release work, which waits for the I/O work and frees everything.
 */

#define KT_BUF_SIZE		16384	/* heads, framing, copied bodies */
#define KT_PIPE_BYTES		(256 * 1024)	/* zero-copy relay, per direction */
#define KT_PIPE_SKBS		64
#define KT_FRAMING_READ		128	/* chunk lines: read little, splice data */
#define KT_BUDGET		64	/* I/O steps per work run */
#define KT_MAX_TRIES		3	/* servers tried per request */
#define KT_LINGER		(2 * HZ)
#define KT_PARK_DELAY		HZ	/* idle client: its backend goes to the pool */

enum { KT_RQ_HEAD, KT_RQ_SEND, KT_RQ_BODY, KT_RQ_DONE, KT_RQ_TUNNEL };
enum { KT_RS_IDLE, KT_RS_CONNECT, KT_RS_HEAD, KT_RS_BODY, KT_RS_TUNNEL };
enum { KT_CS_OPEN, KT_CS_ERROR, KT_CS_LINGER, KT_CS_CLOSED };

/* c->flags bits, set from other contexts */
#define KT_CF_KILL	0
#define KT_CF_TIMER	1

/*
 * Zero-copy relay of one direction: skbs cloned off the source socket's
 * receive queue (tcp_read_sock), sent on the destination from their pages
 * (skb_send_sock_locked: frags by sendpage, only a linear part is copied).
 * Bounded by KT_PIPE_BYTES and KT_PIPE_SKBS; refilled only once empty.
 */
struct kt_pipe {
	struct sk_buff_head q;		/* private: __skb_* helpers only */
	u32 bytes;
};

struct kt_pipe_cb {
	u32 off, len;			/* the part of the skb still to send */
};

#define KT_PIPE_CB(skb)	((struct kt_pipe_cb *)(skb)->cb)

/* What routing needs while a head is parsed; freed once it is routed. */
struct kt_parse_ctx {
	u32 nfields;
	u32 out_cap;
	struct kt_match_header *mh;	/* nfields */
	u8 *out;			/* out_cap */
	struct kt_http_field fields[];	/* nfields */
};

struct kt_conn {
	struct list_head node;		/* ktn->conns, under conns_lock */
	struct kt_net *ktn;
	struct socket *csk, *bsk;
	struct work_struct work;
	struct work_struct release_work;
	struct timer_list timer;
	unsigned long deadline;
	unsigned long park_at;		/* 0, or when to park the idle backend */
	unsigned long flags;		/* KT_CF_* */

	struct sockaddr_storage laddr;	/* the address the client reached */
	struct sockaddr_storage peer;	/* the client */
	u32 client_hash;
	struct kt_stats *svc_st;	/* the service's, for active conns */

	u8 cs, rq, rs;
	bool first;			/* first request of the connection */
	bool client_ka;			/* the request allows keep-alive */
	bool resp_started;		/* response bytes went to the client */
	bool rbody_done, sbody_done;
	bool rbig, sbig;		/* the last splice was large: chunked */
	u8 req_method;

	/* the current request */
	struct kt_config *cfg;		/* referenced */
	struct kt_service *svc;
	struct kt_pool *pool;
	struct kt_server *srv;		/* its st->active counts this request */
	struct kt_server *bsrv;		/* server bsk is connected to */
	u32 tried[KT_MAX_TRIES];
	u32 ntried;
	u32 dest_hash;

	/* client -> backend: rbuf[0, rlen) received, [rsent, rfwd) to send */
	u8 *rbuf;
	u32 rcap, rlen, rfwd, rsent;
	struct kt_http_msg req;
	struct kt_parse_ctx *pctx;
	struct kt_http_body rbody;
	struct kt_pipe up;		/* client -> backend, zero-copy */

	/* backend -> client */
	u8 *sbuf;
	u32 scap, slen, sfwd, ssent;
	struct kt_http_msg resp;
	struct kt_http_body sbody;
	struct kt_pipe down;		/* backend -> client, zero-copy */

	/* an answer of the switch itself */
	char *ebuf;
	u32 elen, esent;

	void (*c_data_ready)(struct sock *sk);
	void (*c_write_space)(struct sock *sk);
	void (*c_state_change)(struct sock *sk);
	void (*b_data_ready)(struct sock *sk);
	void (*b_write_space)(struct sock *sk);
	void (*b_state_change)(struct sock *sk);
};

static struct workqueue_struct *kt_wq;
static struct kmem_cache *kt_conn_cache;
static struct kmem_cache *kt_buf_cache;
/*
 * Outstanding allocations of the module -- connections, buffers, counters,
 * configurations -- for the leak checks (KTCPVS_A_ALLOCS, and at unload).
 */
static atomic_t kt_allocs = ATOMIC_INIT(0);

static void *kt_alloc(size_t size)
{
	void *p = kvzalloc(size, GFP_KERNEL);

	if (p)
		atomic_inc(&kt_allocs);
	return p;
}

static void kt_free(void *p)
{
	if (p) {
		kvfree(p);
		atomic_dec(&kt_allocs);
	}
}

static struct kt_conn *kt_conn_alloc(void)
{
	struct kt_conn *c = kmem_cache_zalloc(kt_conn_cache, GFP_KERNEL);

	if (c)
		atomic_inc(&kt_allocs);
	return c;
}

static void kt_conn_free(struct kt_conn *c)
{
	kmem_cache_free(kt_conn_cache, c);
	atomic_dec(&kt_allocs);
}

/* ---- socket callbacks: softirq context, they only queue work ---------- */

static void kt_sk_event(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c)
		queue_work(kt_wq, &c->work);
	read_unlock_bh(&sk->sk_callback_lock);
}

static void kt_sk_write_space(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c && sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		queue_work(kt_wq, &c->work);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

/* Set a socket's user data and callbacks, as one change for the callbacks. */
static void kt_sk_set(struct sock *sk, void *user, void (*dr)(struct sock *),
		      void (*ws)(struct sock *), void (*sc)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = user;
	sk->sk_data_ready = dr;
	sk->sk_write_space = ws;
	sk->sk_state_change = sc;
	write_unlock_bh(&sk->sk_callback_lock);
}

/* Route a socket's events to c, saving its own callbacks (*dr if unset). */
static void kt_sk_hook(struct sock *sk, struct kt_conn *c,
		       void (**dr)(struct sock *), void (**ws)(struct sock *),
		       void (**sc)(struct sock *))
{
	if (!*dr)
		*dr = sk->sk_data_ready;
	*ws = sk->sk_write_space;
	*sc = sk->sk_state_change;
	kt_sk_set(sk, c, kt_sk_event, kt_sk_write_space, kt_sk_event);
}

static void kt_sk_unhook(struct sock *sk, void (*dr)(struct sock *),
			 void (*ws)(struct sock *), void (*sc)(struct sock *))
{
	kt_sk_set(sk, NULL, dr, ws, sc);
}

static void kt_conn_timer(struct timer_list *t)
{
	struct kt_conn *c = from_timer(c, t, timer);

	set_bit(KT_CF_TIMER, &c->flags);
	queue_work(kt_wq, &c->work);
}

/* ---- nonblocking I/O ------------------------------------------------- */

/* Bytes read (> 0), 0 on EOF, -EAGAIN, or another -errno. */
static int kt_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec iov = { .iov_base = buf, .iov_len = len };

	return kernel_recvmsg(sock, &msg, &iov, 1, len, MSG_DONTWAIT);
}

/* Bytes sent (> 0), -EAGAIN, or another -errno. */
static int kt_send(struct socket *sock, const void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };

	return kernel_sendmsg(sock, &msg, &iov, 1, len);
}

static int kt_buf_get(u8 **buf, u32 *cap)
{
	if (*buf)
		return 0;
	*buf = kmem_cache_alloc(kt_buf_cache, GFP_KERNEL);
	if (!*buf)
		return -ENOMEM;
	atomic_inc(&kt_allocs);
	*cap = KT_BUF_SIZE;
	return 0;
}

static void kt_buf_put(u8 **buf, u32 *cap)
{
	if (!*buf)
		return;
	if (*cap == KT_BUF_SIZE) {
		kmem_cache_free(kt_buf_cache, *buf);
		atomic_dec(&kt_allocs);
	} else {
		kt_free(*buf);
	}
	*buf = NULL;
	*cap = 0;
}

/* Grow a buffer holding len bytes to at least want bytes (large heads). */
static int kt_buf_grow(u8 **buf, u32 *cap, u32 len, u32 want)
{
	u8 *n;

	if (want <= *cap)
		return 0;
	n = kt_alloc(want);
	if (!n)
		return -ENOMEM;
	memcpy(n, *buf, len);
	kt_buf_put(buf, cap);
	*buf = n;
	*cap = want;
	return 0;
}

/* Drop the first n bytes of a buffer of *len bytes. */
static void kt_buf_consume(u8 *buf, u32 *len, u32 n)
{
	memmove(buf, buf + n, *len - n);
	*len -= n;
}

/* ---- zero-copy relay -------------------------------------------------- */

static void kt_pipe_init(struct kt_pipe *p)
{
	__skb_queue_head_init(&p->q);
	p->bytes = 0;
}

static void kt_pipe_purge(struct kt_pipe *p)
{
	struct sk_buff *skb;

	while ((skb = __skb_dequeue(&p->q))) {
		consume_skb(skb);
		atomic_dec(&kt_allocs);
	}
	p->bytes = 0;
}

/* tcp_read_sock() actor: clone, don't copy; desc->count bounds the bytes. */
static int kt_pipe_actor(read_descriptor_t *desc, struct sk_buff *skb,
			 unsigned int off, size_t len)
{
	struct kt_pipe *p = desc->arg.data;
	struct sk_buff *clone;

	len = min_t(size_t, len, desc->count);
	if (!len || skb_queue_len(&p->q) >= KT_PIPE_SKBS)
		return 0;
	clone = skb_clone(skb, GFP_KERNEL);
	if (!clone) {
		desc->error = -ENOMEM;
		return 0;
	}
	atomic_inc(&kt_allocs);
	KT_PIPE_CB(clone)->off = off;
	KT_PIPE_CB(clone)->len = len;
	__skb_queue_tail(&p->q, clone);
	p->bytes += len;
	desc->count -= len;
	return len;
}

/*
 * Take up to @max bytes off @from's receive queue into @p, without copying.
 * Bytes taken (> 0), 0 at the end of the stream, -EAGAIN, or -errno.  The
 * socket lock of @from only: never two socket locks at once.
 */
static int kt_pipe_fill(struct kt_pipe *p, struct socket *from, u64 max)
{
	read_descriptor_t desc = { .arg.data = p };
	struct sock *sk = from->sk;
	int n;

	desc.count = min_t(u64, max, KT_PIPE_BYTES - p->bytes);
	lock_sock(sk);
	n = tcp_read_sock(sk, &desc, kt_pipe_actor);
	if (!n) {
		if (desc.error)
			n = desc.error;
		else if (sk->sk_err)
			n = sock_error(sk);
		else if (!(sk->sk_shutdown & RCV_SHUTDOWN) ||
			 !skb_queue_empty(&sk->sk_receive_queue))
			n = -EAGAIN;
	}
	release_sock(sk);
	return n;
}

/* Send what @p holds on @to.  Bytes sent (> 0), -EAGAIN, or -errno. */
static int kt_pipe_flush(struct kt_pipe *p, struct socket *to)
{
	struct sock *sk = to->sk;
	struct sk_buff *skb;
	int sent = 0, n = -EAGAIN;

	lock_sock(sk);
	while ((skb = skb_peek(&p->q))) {
		struct kt_pipe_cb *cb = KT_PIPE_CB(skb);

		n = skb_send_sock_locked(sk, skb, cb->off, cb->len);
		if (n <= 0)
			break;
		sent += n;
		cb->off += n;
		cb->len -= n;
		p->bytes -= n;
		if (!cb->len) {
			__skb_unlink(skb, &p->q);
			consume_skb(skb);
			atomic_dec(&kt_allocs);
		}
	}
	release_sock(sk);
	if (sent)
		return sent;
	return n < 0 ? n : -EAGAIN;
}

/* ---- configuration lookups ------------------------------------------- */

static bool kt_addr_equal(const struct sockaddr_storage *a,
			  const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       ipv6_addr_equal(&x->sin6_addr, &y->sin6_addr);
	}
	return false;
}

static struct kt_service *kt_config_service(struct kt_config *cfg,
					    const struct sockaddr_storage *la)
{
	u32 i;

	for (i = 0; i < cfg->nservices; i++)
		if (kt_addr_equal(&cfg->svc[i].addr, la))
			return &cfg->svc[i];
	return NULL;
}

static struct kt_config *kt_config_get(struct kt_net *ktn)
{
	struct kt_config *cfg;

	rcu_read_lock();
	cfg = rcu_dereference(ktn->cfg);
	if (cfg && !refcount_inc_not_zero(&cfg->ref))
		cfg = NULL;
	rcu_read_unlock();
	return cfg;
}

static void kt_config_put(struct kt_config *cfg);

/* ---- closing ---------------------------------------------------------- */

static void kt_conn_release_backend(struct kt_conn *c)
{
	if (!c->bsk)
		return;
	kt_sk_unhook(c->bsk->sk, c->b_data_ready, c->b_write_space,
		     c->b_state_change);
	kernel_sock_shutdown(c->bsk, SHUT_RDWR);
	sock_release(c->bsk);
	c->bsk = NULL;
	c->bsrv = NULL;
	c->b_data_ready = NULL;
	c->slen = c->sfwd = c->ssent = 0;
}

/* ---- idle backend connections, shared by all client connections ------ */

#define KT_IDLE_MAX	64		/* per server */
#define KT_IDLE_TIMEOUT	(15 * HZ)

/*
 * A parked backend connection.  Ownership: whoever takes it off its
 * server's list (under idle_lock, clearing parked) owns it -- the idle
 * work on an event or timeout, a client connection reusing it, or the
 * retirement of its configuration -- and the owner cancels the work
 * before freeing it.  Lock order: idle_lock is a leaf; sk_callback_lock
 * is never taken under it.
 */
struct kt_idle {
	struct list_head node;		/* srv->idle */
	struct socket *sock;
	struct kt_server *srv;
	struct delayed_work work;	/* an event or the timeout: close */
	bool parked;			/* on srv->idle, under idle_lock */
	void (*data_ready)(struct sock *sk);	/* the socket's own */
	void (*write_space)(struct sock *sk);
	void (*state_change)(struct sock *sk);
};

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
	kt_sk_unhook(idle->sock->sk, idle->data_ready, idle->write_space,
		     idle->state_change);
	if (from_work)
		cancel_delayed_work(&idle->work);
	else
		cancel_delayed_work_sync(&idle->work);
	kernel_sock_shutdown(idle->sock, SHUT_RDWR);
	sock_release(idle->sock);
	kfree(idle);
	atomic_dec(&kt_allocs);
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
static void kt_idle_park(struct kt_conn *c)
{
	struct kt_server *srv = c->bsrv;
	struct socket *sock = c->bsk;
	struct kt_idle *idle;
	bool parked = false;

	idle = kzalloc(sizeof(*idle), GFP_KERNEL);
	if (!idle) {
		kt_conn_release_backend(c);
		return;
	}
	atomic_inc(&kt_allocs);
	idle->sock = sock;
	idle->srv = srv;
	idle->data_ready = c->b_data_ready;
	idle->write_space = c->b_write_space;
	idle->state_change = c->b_state_change;
	INIT_DELAYED_WORK(&idle->work, kt_idle_work);
	c->bsk = NULL;
	c->bsrv = NULL;
	c->b_data_ready = NULL;
	c->slen = c->sfwd = c->ssent = 0;

	/* From now on the socket's events go to the idle entry. */
	kt_sk_set(sock->sk, idle, kt_idle_event, idle->write_space,
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
static bool kt_idle_pop(struct kt_conn *c, struct kt_server *srv)
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
		c->b_data_ready = idle->data_ready;
		c->b_write_space = idle->write_space;
		c->b_state_change = idle->state_change;
		kfree(idle);
		atomic_dec(&kt_allocs);
		return true;
	}
}

/* Close every idle connection of @cfg's servers, and park no more there. */
static void kt_config_retire(struct kt_config *cfg)
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
	}
	list_for_each_entry_safe(idle, tmp, &list, node)
		kt_idle_destroy(idle, false);
}

static bool kt_backend_reusable(struct kt_conn *c, struct kt_server *srv);

/* Between requests: keep c's backend connection for reuse; else close it. */
static void kt_conn_drop_backend(struct kt_conn *c)
{
	if (c->bsk && c->rs == KT_RS_IDLE && c->bsrv &&
	    kt_backend_reusable(c, c->bsrv))
		kt_idle_park(c);
	else
		kt_conn_release_backend(c);
}

/* The current request is over (answered, failed or finished). */
static void kt_conn_end_request(struct kt_conn *c)
{
	if (c->srv) {
		atomic_dec(&c->srv->st->active);
		c->srv = NULL;
	}
	kfree(c->pctx);
	c->pctx = NULL;
}

static void kt_conn_close(struct kt_conn *c)
{
	if (c->cs == KT_CS_CLOSED)
		return;
	c->cs = KT_CS_CLOSED;
	kt_sk_unhook(c->csk->sk, c->c_data_ready, c->c_write_space,
		     c->c_state_change);
	kt_conn_drop_backend(c);
	del_timer_sync(&c->timer);
	queue_work(kt_wq, &c->release_work);
}

static void kt_conn_release(struct work_struct *w)
{
	struct kt_conn *c = container_of(w, struct kt_conn, release_work);
	struct kt_net *ktn = c->ktn;

	/* Unlinked, nothing can queue the work any more; then wait for it. */
	spin_lock_bh(&ktn->conns_lock);
	list_del(&c->node);
	spin_unlock_bh(&ktn->conns_lock);
	cancel_work_sync(&c->work);
	kernel_sock_shutdown(c->csk, SHUT_RDWR);
	sock_release(c->csk);
	kt_conn_end_request(c);
	if (c->cfg)
		kt_config_put(c->cfg);
	if (c->svc_st) {
		atomic_dec(&c->svc_st->active);
		kt_stats_put(c->svc_st);
	}
	kt_buf_put(&c->rbuf, &c->rcap);
	kt_buf_put(&c->sbuf, &c->scap);
	kt_pipe_purge(&c->up);
	kt_pipe_purge(&c->down);
	kfree(c->ebuf);
	kt_conn_free(c);
	if (atomic_dec_and_test(&ktn->nconns))
		wake_up(&ktn->conns_wait);
}

static void kt_conn_count_error(struct kt_conn *c, int kind)
{
	if (c->svc)
		kt_stat_inc(c->svc->st, errors[kind]);
	else if (c->svc_st)
		kt_stat_inc(c->svc_st, errors[kind]);
	if (c->srv)
		kt_stat_inc(c->srv->st, errors[kind]);
}

static const char *kt_status_text(unsigned int status)
{
	switch (status) {
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status < 400 ? "Redirect" : "Error";
	}
}

/*
 * Answer the client ourselves and close: a small well-formed response with
 * Connection: close.  Once response bytes of a backend went out, the only
 * honest thing left is to cut the connection.
 */
static void kt_conn_answer(struct kt_conn *c, unsigned int status,
			   const char *reason, const u8 *location,
			   u32 location_len)
{
	const char *text = kt_status_text(status);
	size_t cap;
	int n;

	kt_conn_release_backend(c);
	kt_conn_end_request(c);
	if (c->resp_started) {
		kt_conn_close(c);
		return;
	}
	cap = 256 + strlen(text) + 2 * strlen(reason) + location_len;
	c->ebuf = kmalloc(cap, GFP_KERNEL);
	if (!c->ebuf) {
		kt_conn_close(c);
		return;
	}
	n = scnprintf(c->ebuf, cap,
		      "HTTP/1.1 %u %s\r\nServer: ktcpvs\r\n"
		      "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
		      "%s%.*s%sConnection: close\r\n\r\n%s\n",
		      status, text, strlen(reason) + 1,
		      location ? "Location: " : "", (int)location_len,
		      location ? (const char *)location : "",
		      location ? "\r\n" : "", reason);
	c->elen = n;
	c->esent = 0;
	c->cs = KT_CS_ERROR;
	c->deadline = jiffies + KT_LINGER;
}

static void kt_conn_fail(struct kt_conn *c, int kind, unsigned int status,
			 const char *reason)
{
	kt_conn_count_error(c, kind);
	kt_conn_answer(c, status, reason, NULL, 0);
}

/* Close the client connection after the last response: half-close, drain. */
static void kt_conn_linger(struct kt_conn *c)
{
	kt_conn_drop_backend(c);
	kt_conn_end_request(c);
	kernel_sock_shutdown(c->csk, SHUT_WR);
	c->cs = KT_CS_LINGER;
	c->deadline = jiffies + KT_LINGER;
}

static int kt_step_error(struct kt_conn *c)
{
	int n = kt_send(c->csk, c->ebuf + c->esent, c->elen - c->esent);

	if (n == -EAGAIN)
		return 0;
	if (n < 0) {
		kt_conn_close(c);
		return 1;
	}
	kt_stat_add(c->svc_st, bytes_out, n);
	c->esent += n;
	if (c->esent == c->elen)
		kt_conn_linger(c);
	return 1;
}

static int kt_step_linger(struct kt_conn *c)
{
	u8 sink[256];
	int n = kt_recv(c->csk, sink, sizeof(sink));

	if (n == -EAGAIN)
		return 0;
	if (n <= 0)
		kt_conn_close(c);
	return 1;
}

/* ---- backends ------------------------------------------------------- */

static bool kt_backend_reusable(struct kt_conn *c, struct kt_server *srv)
{
	struct sock *sk;

	if (!c->bsk || c->bsrv != srv)
		return false;
	sk = c->bsk->sk;
	return sk->sk_state == TCP_ESTABLISHED && !sk->sk_err &&
	       !(sk->sk_shutdown & RCV_SHUTDOWN) &&
	       skb_queue_empty_lockless(&sk->sk_receive_queue);
}

static int kt_backend_connect(struct kt_conn *c, struct kt_server *srv)
{
	struct socket *sock;
	int err;

	err = sock_create_kern(c->ktn->net, srv->addr.ss_family, SOCK_STREAM,
			       IPPROTO_TCP, &sock);
	if (err)
		return err;
	tcp_sock_set_nodelay(sock->sk);
	c->b_data_ready = NULL;
	kt_sk_hook(sock->sk, c, &c->b_data_ready, &c->b_write_space,
		   &c->b_state_change);
	c->bsk = sock;
	c->bsrv = srv;
	err = kernel_connect(sock, (struct sockaddr *)&srv->addr, srv->addrlen,
			     O_NONBLOCK);
	if (err && err != -EINPROGRESS) {
		kt_conn_release_backend(c);
		return err;
	}
	kt_stat_inc(srv->st, conns);
	kt_stat_inc(c->pool->st, conns);
	return 0;
}

/* Schedule a server of c->pool not tried yet and start talking to it. */
static void kt_backend_pick(struct kt_conn *c)
{
	struct kt_sched_in in = {
		.client_hash = c->client_hash,
		.dest_hash = c->dest_hash,
		.tried = c->tried,
		.ntried = c->ntried,
	};
	struct kt_server *srv;
	int i;

	for (;;) {
		i = kt_schedule(c->pool, &in);
		if (i < 0) {
			if (c->ntried)
				kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
					     "no server of the pool is reachable");
			else
				kt_conn_fail(c, KT_E_UNAVAILABLE, 503,
					     "no server of the pool is available");
			return;
		}
		srv = &c->pool->servers[i];
		if (c->srv != srv) {
			if (c->srv)
				atomic_dec(&c->srv->st->active);
			c->srv = srv;
			atomic_inc(&srv->st->active);
		}
		if (c->ntried < KT_MAX_TRIES)
			c->tried[c->ntried++] = i;
		in.ntried = c->ntried;

		kt_http_resp_init(&c->resp, NULL, NULL, 0, c->req_method);
		c->slen = c->sfwd = c->ssent = 0;
		if (kt_backend_reusable(c, srv) ||
		    (kt_conn_drop_backend(c), kt_idle_pop(c, srv))) {
			c->rs = KT_RS_HEAD;
			c->deadline = jiffies + c->svc->t_backend;
			return;
		}
		if (!kt_backend_connect(c, srv)) {
			c->rs = KT_RS_CONNECT;
			c->deadline = jiffies + c->svc->t_connect;
			return;
		}
		kt_stat_inc(srv->st, errors[KT_E_CONNECT]);
		kt_server_failed(srv);
		if (c->ntried >= KT_MAX_TRIES) {
			kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
				     "no server of the pool is reachable");
			return;
		}
	}
}

/* The connect to c->srv failed or timed out: try another server. */
static void kt_backend_retry(struct kt_conn *c)
{
	kt_stat_inc(c->srv->st, errors[KT_E_CONNECT]);
	kt_server_failed(c->srv);
	kt_conn_release_backend(c);
	if (c->ntried >= KT_MAX_TRIES) {
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "no server of the pool is reachable");
		return;
	}
	kt_backend_pick(c);
}

/* ---- requests ---------------------------------------------------------- */

static void kt_conn_start_request(struct kt_conn *c)
{
	c->rq = KT_RQ_HEAD;
	c->rs = KT_RS_IDLE;
	c->resp_started = false;
	c->rbody_done = c->sbody_done = false;
	c->ntried = 0;
	c->rfwd = c->rsent = 0;
	c->deadline = jiffies + (c->first || c->rlen ? c->svc->t_header :
				 c->svc->t_idle);
}

static int kt_parse_ctx_alloc(struct kt_conn *c)
{
	const struct kt_http_limits *lim = &c->svc->lim;
	u32 nf = lim->fields;
	u32 out_cap = lim->request_line + KT_HTTP_HOST_MAX + 1;
	struct kt_parse_ctx *p;

	p = kmalloc(struct_size(p, fields, nf) + nf * sizeof(*p->mh) + out_cap,
		    GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	p->nfields = nf;
	p->out_cap = out_cap;
	p->mh = (struct kt_match_header *)&p->fields[nf];
	p->out = (u8 *)&p->mh[nf];
	c->pctx = p;
	kt_http_req_init(&c->req, lim, p->fields, nf, p->out, out_cap);
	return 0;
}

/* Use the newest configuration for the next request. */
static int kt_conn_refresh_config(struct kt_conn *c)
{
	struct kt_config *cfg = kt_config_get(c->ktn);

	/*
	 * A kept backend connection belongs to a server of the old
	 * configuration: servers are matched by pointer, and a freed
	 * configuration's memory may come back as another one's, so it is
	 * never carried across.
	 */
	if (cfg != c->cfg)
		kt_conn_release_backend(c);
	if (c->cfg)
		kt_config_put(c->cfg);
	c->cfg = cfg;
	c->svc = cfg ? kt_config_service(cfg, &c->laddr) : NULL;
	if (!c->svc) {
		kt_conn_close(c);	/* the service is gone */
		return -ENOENT;
	}
	return 0;
}

static void kt_slice(struct kt_match_slice *s, const u8 *base, u32 off, u32 len)
{
	s->ptr = base + off;
	s->len = len;
}

/*
 * The client closes after this request; the server need not.  Drop a lone
 * "Connection: close" from an HTTP/1.1 request head so that the backend
 * connection stays open for other clients (idle pool); the client's answer
 * gets "Connection: close" from the switch instead (kt_close_response).
 * Under the parse context (the head's fields).
 */
static void kt_strip_close(struct kt_conn *c)
{
	struct kt_http_msg *m = &c->req;
	const struct kt_http_field *f;
	u32 start, end;
	int i;

	if (m->version != 11 || !(m->flags & KT_HTTP_CONN_CLOSE) ||
	    (m->flags & (KT_HTTP_CONN_KA | KT_HTTP_CONN_UPGRADE)))
		return;
	i = kt_http_find_field(m, c->rbuf, "connection", 10, 0);
	if (i < 0 || kt_http_find_field(m, c->rbuf, "connection", 10, i + 1) >= 0)
		return;
	f = &m->fields[i];
	if (f->value_len != 5 ||
	    strncasecmp((const char *)c->rbuf + f->value_off, "close", 5))
		return;
	start = f->name_off;
	end = f->value_off + f->value_len;
	while (end < m->head_len && c->rbuf[end] != '\n')
		end++;
	if (++end > m->head_len - 2)	/* the final CRLF stays */
		return;
	memmove(c->rbuf + start, c->rbuf + end, c->rlen - end);
	c->rlen -= end - start;
	m->head_len -= end - start;
}

static void kt_route(struct kt_conn *c)
{
	struct kt_parse_ctx *p = c->pctx;
	struct kt_http_msg *m = &c->req;
	struct kt_match_result res;
	struct kt_match_req mr = { };
	u32 i, *scratch;

	kt_slice(&mr.method, c->rbuf, m->method_off, m->method_len);
	kt_slice(&mr.host, p->out, m->host_off, m->host_len);
	kt_slice(&mr.path, p->out, m->path_off, m->path_len);
	if (m->flags & KT_HTTP_HAS_QUERY)
		kt_slice(&mr.query, c->rbuf, m->query_off, m->query_len);
	for (i = 0; i < m->nfields; i++) {
		const struct kt_http_field *f = &p->fields[i];

		kt_slice(&p->mh[i].name, c->rbuf, f->name_off, f->name_len);
		kt_slice(&p->mh[i].value, c->rbuf, f->value_off, f->value_len);
	}
	mr.headers = p->mh;
	mr.nheaders = m->nfields;
	if (c->peer.ss_family == AF_INET) {
		mr.family = KT_MATCH_AF_INET;
		memcpy(mr.addr, &((struct sockaddr_in *)&c->peer)->sin_addr, 4);
	} else {
		mr.family = KT_MATCH_AF_INET6;
		memcpy(mr.addr, &((struct sockaddr_in6 *)&c->peer)->sin6_addr, 16);
	}

	scratch = c->cfg->scratch[get_cpu()];	/* preemption off while matching */
	kt_match(&c->cfg->rules, c->svc->idx, &mr, scratch, &res);
	put_cpu();

	kt_stat_inc(c->svc->st, requests);
	c->req_method = m->method;
	c->client_ka = m->flags & KT_HTTP_KEEP_ALIVE;
	c->dest_hash = jhash(mr.path.ptr, mr.path.len,
			     jhash(mr.host.ptr, mr.host.len, 0));

	switch (res.action) {
	case KT_ACTION_ROUTE:
		c->pool = &c->cfg->pools[res.pool];
		break;
	case KT_ACTION_BLOCK:
		kt_conn_fail(c, KT_E_BLOCKED, res.status, "blocked");
		return;
	case KT_ACTION_REDIRECT:
		kt_conn_count_error(c, KT_E_REDIRECT);
		kt_conn_answer(c, res.status, "redirected", res.location.ptr,
			       res.location.len);
		return;
	default:
		kt_conn_fail(c, KT_E_NO_ROUTE, 404, "no rule matches");
		return;
	}
	kt_strip_close(c);
	kfree(c->pctx);
	c->pctx = NULL;
	c->rq = KT_RQ_SEND;
	c->rfwd = c->req.head_len;
	c->rsent = 0;
	kt_http_body_init(&c->rbody, &c->req);
	c->rbig = false;
	c->rbody_done = c->req.framing == KT_HTTP_FR_NONE;
	kt_backend_pick(c);
}

/* Insert "X-Forwarded-For: client" before the head's final CRLF. */
static int kt_add_xff(struct kt_conn *c)
{
	char line[64];
	u32 at = c->req.head_len - 2;
	int n;

	if (c->peer.ss_family == AF_INET)
		n = scnprintf(line, sizeof(line), "X-Forwarded-For: %pI4\r\n",
			      &((struct sockaddr_in *)&c->peer)->sin_addr);
	else
		n = scnprintf(line, sizeof(line), "X-Forwarded-For: %pI6c\r\n",
			      &((struct sockaddr_in6 *)&c->peer)->sin6_addr);
	if (c->rlen + n > c->rcap &&
	    kt_buf_grow(&c->rbuf, &c->rcap, c->rlen, c->rlen + n))
		return -ENOMEM;
	memmove(c->rbuf + at + n, c->rbuf + at, c->rlen - at);
	memcpy(c->rbuf + at, line, n);
	c->rlen += n;
	c->req.head_len += n;
	c->rfwd += n;
	return 0;
}

/* Bytes, an error or the end of the stream wait to be read on @sk. */
static bool kt_sk_readable(const struct sock *sk)
{
	return !skb_queue_empty_lockless(&sk->sk_receive_queue) ||
	       READ_ONCE(sk->sk_err) ||
	       (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN);
}

static int kt_step_rq_head(struct kt_conn *c)
{
	int r, n;

	if (!c->pctx) {
		/*
		 * Nothing arrived yet: an idle connection holds no buffer and
		 * no parse context (its data_ready queues the work again).
		 */
		if (!c->rlen && !kt_sk_readable(c->csk->sk))
			return 0;
		if (kt_conn_refresh_config(c))
			return 1;
		if (kt_parse_ctx_alloc(c) || kt_buf_get(&c->rbuf, &c->rcap)) {
			kt_conn_close(c);
			return 1;
		}
	}
	r = kt_http_parse(&c->req, c->rbuf, c->rlen);
	if (r == KT_HTTP_ERROR) {
		kt_conn_fail(c, KT_E_PARSE, c->req.status, c->req.reason);
		return 1;
	}
	if (r == KT_HTTP_DONE) {
		kt_route(c);
		if (c->cs == KT_CS_OPEN && c->rq == KT_RQ_SEND &&
		    (c->svc->flags & KT_SERVICE_XFF) && kt_add_xff(c))
			kt_conn_close(c);
		return 1;
	}
	/* KT_HTTP_AGAIN: read more, up to the head limit (the parser says 431) */
	if (c->rlen == c->rcap) {
		u32 want = min_t(u32, c->rcap * 4, c->svc->lim.head + 64);

		if (want <= c->rcap || kt_buf_grow(&c->rbuf, &c->rcap, c->rlen, want)) {
			kt_conn_fail(c, KT_E_PARSE, 431, "request head too large");
			return 1;
		}
	}
	n = kt_recv(c->csk, c->rbuf + c->rlen, c->rcap - c->rlen);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		if (c->rlen && !kt_http_idle(&c->req))
			kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return 1;
	}
	if (!c->rlen && !c->first)	/* a new request starts: header timeout */
		c->deadline = jiffies + c->svc->t_header;
	c->rlen += n;
	kt_stat_add(c->svc->st, bytes_in, n);
	return 1;
}

/*
 * Account a send of @n bytes to the backend: 1 if bytes went, 0 if it
 * would block, -1 if it failed (answered or closed).
 */
static int kt_sent_up(struct kt_conn *c, int n)
{
	if (n == -EAGAIN)
		return 0;
	if (n < 0) {
		kt_conn_count_error(c, KT_E_BACKEND_RESET);
		if (!c->resp_started)
			kt_conn_answer(c, 502, "the server closed the connection",
				       NULL, 0);
		else
			kt_conn_close(c);
		return -1;
	}
	kt_stat_add(c->srv->st, bytes_in, n);
	kt_stat_add(c->pool->st, bytes_in, n);
	return 1;
}

/* Send rbuf[rsent, rfwd) to the backend; on completion drop those bytes. */
static int kt_flush_request(struct kt_conn *c)
{
	int n = kt_send(c->bsk, c->rbuf + c->rsent, c->rfwd - c->rsent);
	int r = kt_sent_up(c, n);

	if (r <= 0)
		return -r;
	c->rsent += n;
	if (c->rsent == c->rfwd) {
		kt_buf_consume(c->rbuf, &c->rlen, c->rfwd);
		c->rfwd = c->rsent = 0;
		if (c->rq == KT_RQ_SEND) {	/* the head went out: a request */
			kt_stat_inc(c->srv->st, requests);
			kt_stat_inc(c->pool->st, requests);
			c->rq = KT_RQ_BODY;
		}
	}
	return 1;
}

/* Send the up pipe's skbs to the backend. */
static int kt_splice_up(struct kt_conn *c)
{
	int n = kt_pipe_flush(&c->up, c->bsk);
	int r = kt_sent_up(c, n);

	if (r <= 0)
		return -r;
	kt_stat_add(c->svc->st, spliced, n);
	kt_stat_add(c->srv->st, spliced, n);
	kt_stat_add(c->pool->st, spliced, n);
	return 1;
}

/*
 * Read from @sock what comes next of a body: opaque bytes (@op of them may
 * pass unseen) into the pipe, framing bytes into the buffer -- a little at
 * a time while chunks are large (@big), so that their data is spliced.
 */
static int kt_read_body(struct socket *sock, struct kt_pipe *p, u64 op,
			u8 *buf, u32 cap, bool *big)
{
	int n;

	if (op) {
		n = kt_pipe_fill(p, sock, op);
		if (n > 0)
			*big = n >= 16 * KT_FRAMING_READ;
		return n;
	}
	return kt_recv(sock, buf, *big ? min_t(u32, cap, KT_FRAMING_READ) : cap);
}

static int kt_step_rq_body(struct kt_conn *c)
{
	size_t used;
	u64 op;
	int r, n;

	if (c->rfwd > c->rsent)
		return kt_flush_request(c);
	if (c->up.bytes)
		return kt_splice_up(c);
	if (c->rbody_done) {
		c->rq = KT_RQ_DONE;
		return 1;
	}
	if (c->rlen) {
		r = kt_http_body_feed(&c->rbody, c->rbuf, c->rlen, &used);
		if (r == KT_HTTP_ERROR) {
			kt_conn_fail(c, KT_E_PARSE, c->rbody.status,
				     c->rbody.reason);
			return 1;
		}
		c->rbody_done = r == KT_HTTP_DONE;
		c->rfwd = used;
		return 1;
	}
	op = kt_http_body_opaque(&c->rbody);
	n = kt_read_body(c->csk, &c->up, op, c->rbuf, c->rcap, &c->rbig);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return 1;
	}
	if (op)
		c->rbody_done = kt_http_body_skip(&c->rbody, n) == KT_HTTP_DONE;
	else
		c->rlen = n;
	kt_stat_add(c->svc->st, bytes_in, n);
	c->deadline = jiffies + c->svc->t_backend;
	return 1;
}

/* Client -> backend after a 101: plain relay until either side closes. */
static int kt_step_tunnel_up(struct kt_conn *c)
{
	int n;

	if (c->rfwd > c->rsent)
		return kt_flush_request(c);
	if (c->up.bytes)
		return kt_splice_up(c);
	if (c->rlen) {
		c->rfwd = c->rlen;
		return 1;
	}
	n = kt_pipe_fill(&c->up, c->csk, KT_HTTP_OPAQUE_ALL);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		kernel_sock_shutdown(c->bsk, SHUT_WR);
		c->rq = KT_RQ_DONE;
		return 1;
	}
	kt_stat_add(c->svc->st, bytes_in, n);
	c->deadline = jiffies + c->svc->t_idle;
	return 1;
}

static int kt_step_request(struct kt_conn *c)
{
	switch (c->rq) {
	case KT_RQ_HEAD:
		return kt_step_rq_head(c);
	case KT_RQ_SEND:
		if (c->rs == KT_RS_CONNECT)
			return 0;
		return kt_flush_request(c);
	case KT_RQ_BODY:
		return kt_step_rq_body(c);
	case KT_RQ_TUNNEL:
		return kt_step_tunnel_up(c);
	default:
		return 0;
	}
}

/* ---- responses -------------------------------------------------------- */

/* The response is complete and forwarded: next request, or close. */
static void kt_exchange_done(struct kt_conn *c)
{
	bool backend_ka = (c->resp.flags & KT_HTTP_KEEP_ALIVE) &&
			  c->rq == KT_RQ_DONE && !c->slen;

	if (c->srv)
		kt_server_ok(c->srv);
	kt_conn_end_request(c);
	if (!backend_ka)
		kt_conn_release_backend(c);
	c->rs = KT_RS_IDLE;	/* the exchange is over: the backend may be parked */
	if (!c->client_ka || c->rq != KT_RQ_DONE ||
	    !(c->resp.flags & KT_HTTP_KEEP_ALIVE)) {
		kt_conn_linger(c);
		return;
	}
	c->first = false;
	kt_buf_put(&c->sbuf, &c->scap);
	if (!c->rlen)
		kt_buf_put(&c->rbuf, &c->rcap);
	kt_conn_start_request(c);
	/* a client that stays idle gives its backend connection back */
	c->park_at = c->bsk && !c->rlen ? jiffies + KT_PARK_DELAY : 0;
}

/*
 * The client has sent nothing since its last response for KT_PARK_DELAY:
 * its backend connection goes to the server's idle pool (or is closed when
 * the pool is full), where any client connection can use it.
 */
static void kt_conn_park_idle(struct kt_conn *c)
{
	if (!c->park_at || time_before(jiffies, c->park_at))
		return;
	c->park_at = 0;
	if (c->cs == KT_CS_OPEN && c->rq == KT_RQ_HEAD && !c->rlen &&
	    c->rs == KT_RS_IDLE && c->bsk)
		kt_conn_drop_backend(c);
}

/*
 * Account a send of @n bytes to the client: 1 if bytes went, 0 if it would
 * block, -1 if it failed (closed).
 */
static int kt_sent_down(struct kt_conn *c, int n)
{
	if (n == -EAGAIN)
		return 0;
	if (n < 0) {
		kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return -1;
	}
	c->resp_started = true;
	kt_stat_add(c->svc->st, bytes_out, n);
	if (c->srv) {
		kt_stat_add(c->srv->st, bytes_out, n);
		kt_stat_add(c->pool->st, bytes_out, n);
	}
	return 1;
}

/* Send sbuf[ssent, sfwd) to the client; on completion drop those bytes. */
static int kt_flush_response(struct kt_conn *c)
{
	int n = kt_send(c->csk, c->sbuf + c->ssent, c->sfwd - c->ssent);
	int r = kt_sent_down(c, n);

	if (r <= 0)
		return -r;
	c->ssent += n;
	if (c->ssent == c->sfwd) {
		kt_buf_consume(c->sbuf, &c->slen, c->sfwd);
		c->sfwd = c->ssent = 0;
	}
	return 1;
}

/* Send the down pipe's skbs to the client. */
static int kt_splice_down(struct kt_conn *c)
{
	int n = kt_pipe_flush(&c->down, c->csk);
	int r = kt_sent_down(c, n);

	if (r <= 0)
		return -r;
	kt_stat_add(c->svc->st, spliced, n);
	if (c->srv) {
		kt_stat_add(c->srv->st, spliced, n);
		kt_stat_add(c->pool->st, spliced, n);
	}
	return 1;
}

static int kt_step_rs_connect(struct kt_conn *c)
{
	struct sock *sk = c->bsk->sk;

	if (sk->sk_state == TCP_ESTABLISHED) {
		c->rs = KT_RS_HEAD;
		c->deadline = jiffies + c->svc->t_backend;
		return 1;
	}
	if (sk->sk_state == TCP_CLOSE || sk->sk_err) {
		kt_backend_retry(c);
		return 1;
	}
	return 0;
}

/* True if b[0, n) is "keep-alive" with optional whitespace around it. */
static bool kt_is_keep_alive(const u8 *b, u32 n)
{
	while (n && (b[0] == ' ' || b[0] == '\t')) {
		b++;
		n--;
	}
	while (n && (b[n - 1] == ' ' || b[n - 1] == '\t'))
		n--;
	return n == 10 && !strncasecmp((const char *)b, "keep-alive", 10);
}

/*
 * The client's connection ends with this response but the server's does
 * not (kt_strip_close): say so in the head.  Lines "Connection: keep-alive"
 * go (the parser has checked the head: CRLF line ends), and
 * "Connection: close" is added before the final CRLF.
 */
static int kt_close_response(struct kt_conn *c)
{
	static const char line[] = "Connection: close\r\n";
	u32 n = sizeof(line) - 1, at, i = 0, start, gone;
	u8 *b = c->sbuf;

	while (i < c->resp.head_len && b[i] != '\n')	/* the status line */
		i++;
	for (i++; i + 2 < c->resp.head_len;) {
		start = i;
		while (b[i] != '\n')
			i++;
		i++;
		if (i - start < 13 ||
		    strncasecmp((const char *)b + start, "connection:", 11) ||
		    !kt_is_keep_alive(b + start + 11, i - start - 13))
			continue;
		gone = i - start;
		memmove(b + start, b + i, c->slen - i);
		c->slen -= gone;
		c->resp.head_len -= gone;
		i = start;
	}
	at = c->resp.head_len - 2;

	if (c->slen + n > c->scap &&
	    kt_buf_grow(&c->sbuf, &c->scap, c->slen, c->slen + n))
		return -ENOMEM;
	memmove(c->sbuf + at + n, c->sbuf + at, c->slen - at);
	memcpy(c->sbuf + at, line, n);
	c->slen += n;
	c->resp.head_len += n;
	return 0;
}

static void kt_response_head_done(struct kt_conn *c)
{
	unsigned int st = c->resp.status;

	c->sfwd = c->resp.head_len;
	c->ssent = 0;
	if (st >= 100 && st < 200 && st != 101) {
		/* interim response: forward it, then expect the final one */
		kt_http_resp_init(&c->resp, NULL, NULL, 0, c->req_method);
		return;
	}
	if (c->resp.framing == KT_HTTP_FR_TUNNEL) {
		c->rs = KT_RS_TUNNEL;
		c->rq = KT_RQ_TUNNEL;
		c->client_ka = false;
		return;
	}
	if (!c->client_ka && (c->resp.flags & KT_HTTP_KEEP_ALIVE)) {
		if (kt_close_response(c)) {
			kt_conn_close(c);
			return;
		}
		c->sfwd = c->resp.head_len;
	}
	kt_http_body_init(&c->sbody, &c->resp);
	c->sbig = false;
	c->sbody_done = c->resp.framing == KT_HTTP_FR_NONE;
	c->rs = KT_RS_BODY;
}

static int kt_step_rs_head(struct kt_conn *c)
{
	int r, n;

	if (c->sfwd > c->ssent)		/* an interim response goes out first */
		return kt_flush_response(c);
	if (kt_buf_get(&c->sbuf, &c->scap)) {
		kt_conn_close(c);
		return 1;
	}
	r = kt_http_parse(&c->resp, c->sbuf, c->slen);
	if (r == KT_HTTP_DONE) {
		kt_response_head_done(c);
		return 1;
	}
	if (r == KT_HTTP_ERROR) {
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "the server sent an invalid response");
		return 1;
	}
	if (c->slen == c->scap) {
		u32 want = min_t(u32, c->scap * 4, KT_HTTP_DEF_HEAD + 64);

		if (want <= c->scap ||
		    kt_buf_grow(&c->sbuf, &c->scap, c->slen, want)) {
			kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
				     "the server's response head is too large");
			return 1;
		}
	}
	n = kt_recv(c->bsk, c->sbuf + c->slen, c->scap - c->slen);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		kt_conn_fail(c, KT_E_BACKEND_RESET, 502,
			     "the server closed the connection");
		return 1;
	}
	c->slen += n;
	c->deadline = jiffies + c->svc->t_backend;
	return 1;
}

static int kt_step_rs_body(struct kt_conn *c)
{
	size_t used;
	u64 op;
	int r, n;

	if (c->sfwd > c->ssent)
		return kt_flush_response(c);
	if (c->down.bytes)
		return kt_splice_down(c);
	if (c->sbody_done) {
		kt_exchange_done(c);
		return 1;
	}
	if (c->slen) {
		r = kt_http_body_feed(&c->sbody, c->sbuf, c->slen, &used);
		if (r == KT_HTTP_ERROR) {
			kt_conn_count_error(c, KT_E_BAD_GATEWAY);
			kt_conn_close(c);
			return 1;
		}
		c->sbody_done = r == KT_HTTP_DONE;
		c->sfwd = used;
		return 1;
	}
	op = kt_http_body_opaque(&c->sbody);
	n = kt_read_body(c->bsk, &c->down, op, c->sbuf, c->scap, &c->sbig);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		if (!n && kt_http_body_eof(&c->sbody) == KT_HTTP_DONE) {
			/* close-delimited: the end of the body ends the client's */
			c->client_ka = false;
			c->sbody_done = true;
			kt_conn_release_backend(c);
			return 1;
		}
		kt_conn_count_error(c, KT_E_BACKEND_RESET);
		kt_conn_close(c);
		return 1;
	}
	if (op)
		c->sbody_done = kt_http_body_skip(&c->sbody, n) == KT_HTTP_DONE;
	else
		c->slen = n;
	c->deadline = jiffies + c->svc->t_backend;
	return 1;
}

static int kt_step_tunnel_down(struct kt_conn *c)
{
	int n;

	if (c->sfwd > c->ssent)
		return kt_flush_response(c);
	if (c->down.bytes)
		return kt_splice_down(c);
	if (c->slen) {
		c->sfwd = c->slen;
		return 1;
	}
	n = kt_pipe_fill(&c->down, c->bsk, KT_HTTP_OPAQUE_ALL);
	if (n == -EAGAIN)
		return 0;
	if (n <= 0) {
		kt_conn_linger(c);
		return 1;
	}
	c->deadline = jiffies + c->svc->t_idle;
	return 1;
}

static int kt_step_response(struct kt_conn *c)
{
	switch (c->rs) {
	case KT_RS_CONNECT:
		return kt_step_rs_connect(c);
	case KT_RS_HEAD:
		return kt_step_rs_head(c);
	case KT_RS_BODY:
		return kt_step_rs_body(c);
	case KT_RS_TUNNEL:
		return kt_step_tunnel_down(c);
	default:
		return 0;
	}
}

/* ---- timeouts and the work item -------------------------------------- */

static void kt_conn_timeout(struct kt_conn *c)
{
	switch (c->cs) {
	case KT_CS_ERROR:
	case KT_CS_LINGER:
		kt_conn_close(c);
		return;
	}
	if (c->rs == KT_RS_CONNECT) {
		kt_backend_retry(c);
		return;
	}
	if (c->rq == KT_RQ_HEAD) {
		if (!c->rlen && !c->first) {
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

static int kt_conn_step(struct kt_conn *c)
{
	int p;

	switch (c->cs) {
	case KT_CS_ERROR:
		return kt_step_error(c);
	case KT_CS_LINGER:
		return kt_step_linger(c);
	case KT_CS_CLOSED:
		return 0;
	}
	p = kt_step_request(c);
	if (c->cs != KT_CS_OPEN)
		return 1;
	if (c->rs != KT_RS_IDLE)
		p |= kt_step_response(c);
	return p;
}

static void kt_conn_work(struct work_struct *w)
{
	struct kt_conn *c = container_of(w, struct kt_conn, work);
	int budget = KT_BUDGET;

	if (c->cs == KT_CS_CLOSED)
		return;
	if (test_and_clear_bit(KT_CF_KILL, &c->flags)) {
		kt_conn_close(c);
		return;
	}
	if (test_and_clear_bit(KT_CF_TIMER, &c->flags)) {
		if (time_after_eq(jiffies, c->deadline))
			kt_conn_timeout(c);
		else
			kt_conn_park_idle(c);
	}

	while (c->cs != KT_CS_CLOSED && kt_conn_step(c)) {
		if (!--budget) {
			queue_work(kt_wq, &c->work);	/* let others run */
			break;
		}
	}
	if (c->cs == KT_CS_CLOSED)
		return;
	if (c->park_at && (c->rq != KT_RQ_HEAD || c->rlen))
		c->park_at = 0;		/* a request came: the backend serves it */
	mod_timer(&c->timer, c->park_at && time_before(c->park_at, c->deadline) ?
		  c->park_at : c->deadline);
}

/* ---- accept ----------------------------------------------------------- */

static void kt_conn_new(struct kt_listener *l, struct socket *sock)
{
	struct kt_net *ktn = l->ktn;
	struct kt_config *cfg;
	struct kt_service *svc;
	struct kt_conn *c;

	c = kt_conn_alloc();
	if (!c) {
		sock_release(sock);
		return;
	}
	c->ktn = ktn;
	c->csk = sock;
	c->first = true;
	kt_pipe_init(&c->up);
	kt_pipe_init(&c->down);
	INIT_WORK(&c->work, kt_conn_work);
	INIT_WORK(&c->release_work, kt_conn_release);
	timer_setup(&c->timer, kt_conn_timer, 0);
	memcpy(&c->laddr, &l->addr, sizeof(c->laddr));
	if (kernel_getpeername(sock, (struct sockaddr *)&c->peer) < 0) {
		kt_conn_free(c);
		sock_release(sock);
		return;
	}
	c->client_hash = c->peer.ss_family == AF_INET ?
		jhash_1word((__force u32)((struct sockaddr_in *)&c->peer)->sin_addr.s_addr, 0) :
		jhash(&((struct sockaddr_in6 *)&c->peer)->sin6_addr, 16, 0);

	cfg = kt_config_get(ktn);
	svc = cfg ? kt_config_service(cfg, &c->laddr) : NULL;
	if (!svc) {
		if (cfg)
			kt_config_put(cfg);
		kt_conn_free(c);
		sock_release(sock);
		return;
	}
	c->cfg = cfg;
	c->svc = svc;
	c->svc_st = svc->st;
	refcount_inc(&svc->st->ref);
	atomic_inc(&svc->st->active);
	kt_stat_inc(svc->st, conns);

	spin_lock_bh(&ktn->conns_lock);
	if (ktn->dying) {
		spin_unlock_bh(&ktn->conns_lock);
		atomic_dec(&svc->st->active);
		kt_stats_put(svc->st);
		kt_config_put(cfg);
		kt_conn_free(c);
		sock_release(sock);
		return;
	}
	list_add(&c->node, &ktn->conns);
	atomic_inc(&ktn->nconns);
	spin_unlock_bh(&ktn->conns_lock);

	tcp_sock_set_nodelay(sock->sk);
	c->c_data_ready = l->saved_data_ready;	/* the child inherited ours */
	kt_sk_hook(sock->sk, c, &c->c_data_ready, &c->c_write_space,
		   &c->c_state_change);
	kt_conn_start_request(c);
	if (svc->max_conns &&
	    atomic_read(&svc->st->active) > svc->max_conns) {
		kt_conn_fail(c, KT_E_LIMIT, 503,
			     "too many connections to this service");
	}
	queue_work(kt_wq, &c->work);
}

static void kt_accept_work(struct work_struct *w)
{
	struct kt_listener *l = container_of(w, struct kt_listener, accept_work);
	struct socket *sock;
	int budget = KT_BUDGET;

	while (budget--) {
		if (kernel_accept(l->sock, &sock, O_NONBLOCK))
			return;
		kt_conn_new(l, sock);
	}
	queue_work(kt_wq, &l->accept_work);
}

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

/* Ask every connection of @ktn (or only those reaching @la) to close. */
static void kt_conns_kill(struct kt_net *ktn, const struct sockaddr_storage *la)
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
